//! `mif exec`: run one command under a policy, in a transient cgroup, as
//! an unprivileged user when asked (or when invoked through sudo).
use std::{
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::PathBuf,
    process::Command,
};

use anyhow::Context as _;
use clap::Args;

use super::{
    common::ClientArgs,
    policy::{expect_ok, PolicyOptions},
};
use crate::{
    control::protocol::{Request, Response, StatusView},
    host::cgroup::Cgroup2,
};

/// Run a command under a policy, in a transient cgroup of its own below the
/// daemon's attach cgroup; exit with the command's status and remove the
/// cgroup and policy afterwards.
#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub policy: PolicyOptions,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Run the command as this user (a name or a uid), with its groups,
    /// HOME, USER and LOGNAME; through sudo the default is the invoking
    /// user (`SUDO_USER`), otherwise the caller. `--user root` keeps root.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// The transient cgroup, removed (with its policy) however exec ends.
struct Transient<'a> {
    client: &'a ClientArgs,
    rel: String,
    path: PathBuf,
    policy_set: bool,
}

impl Drop for Transient<'_> {
    fn drop(&mut self) {
        if self.policy_set {
            let _ = self.client.request(&Request::PolicyDel {
                cgroup: self.rel.clone(),
            });
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

impl ExecArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        let status: StatusView = match self.client.request(&Request::Status)? {
            Response::Status(s) => *s,
            other => return Err(super::common::unexpected(other)),
        };
        let cgroup2 = Cgroup2::find()?;
        let parent = status.attach_cgroup.trim_end_matches('/');
        let rel = format!("{parent}/mif-exec-{}", std::process::id());
        let path = cgroup2.mount().join(rel.trim_start_matches('/'));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating cgroup {}", path.display()))?;
        let mut transient = Transient {
            client: &self.client,
            rel: rel.clone(),
            path: path.clone(),
            policy_set: false,
        };
        expect_ok(
            self.client
                .request(&Request::PolicySet(self.policy.spec(rel))),
        )?;
        transient.policy_set = true;

        let procs = path.join("cgroup.procs");
        let procs_file = std::fs::OpenOptions::new().write(true).open(&procs)?;
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..]);
        let drop_to = match self.user.clone().or_else(invoking_user) {
            Some(user) => Some(RunAs::find(&user)?),
            None => None,
        };
        if let Some(run_as) = &drop_to {
            cmd.env("HOME", &run_as.home)
                .env("USER", &run_as.name)
                .env("LOGNAME", &run_as.name);
        }
        // SAFETY: only async-signal-safe calls happen in the child: write(2)
        // on an already open fd, then setgroups/setgid/setuid with values
        // computed before the fork.
        unsafe {
            cmd.pre_exec(move || {
                use std::io::Write as _;
                // Into the cgroup first, as root: the process is steered
                // from its first instruction as the user.
                (&procs_file).write_all(b"0")?;
                if let Some(run_as) = &drop_to {
                    run_as.become_user()?;
                }
                Ok(())
            });
        }
        let exit = cmd
            .status()
            .with_context(|| format!("running {}", self.command[0]))?;
        drop(transient);
        std::process::exit(
            exit.code()
                .unwrap_or_else(|| 128 + exit.signal().unwrap_or(0)),
        );
    }
}

/// Through sudo, the user who ran sudo (root running sudo stays root).
fn invoking_user() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    std::env::var("SUDO_USER")
        .ok()
        .filter(|u| !u.is_empty() && u != "root")
}

/// Who `mif exec` runs the command as, looked up before the fork.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    home: PathBuf,
}

impl RunAs {
    /// A user by name or uid, with its supplementary groups.
    fn find(user: &str) -> anyhow::Result<Self> {
        use nix::unistd::{getgrouplist, Uid, User};
        let found = match user.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid))?,
            Err(_) => User::from_name(user)?,
        };
        let found = found.with_context(|| format!("--user {user:?}: no such user"))?;
        if !nix::unistd::geteuid().is_root() && found.uid != nix::unistd::geteuid() {
            anyhow::bail!("--user {user:?}: only root can run a command as another user");
        }
        let name = std::ffi::CString::new(found.name.clone())?;
        let groups = getgrouplist(&name, found.gid)
            .with_context(|| format!("--user {user:?}: reading its groups"))?;
        Ok(Self {
            name: found.name,
            uid: found.uid.as_raw(),
            gid: found.gid.as_raw(),
            groups: groups.into_iter().map(|g| g.as_raw()).collect(),
            home: found.dir,
        })
    }

    /// Drops root for good: groups, then gid, then uid (the order that
    /// leaves no privilege behind).
    fn become_user(&self) -> std::io::Result<()> {
        let check = |rc: libc::c_int| match rc {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        };
        // SAFETY: plain syscalls with values owned by `self`.
        unsafe {
            check(libc::setgroups(self.groups.len(), self.groups.as_ptr()))?;
            check(libc::setgid(self.gid))?;
            check(libc::setuid(self.uid))?;
        }
        Ok(())
    }
}
