//! `mif exec`: run one command under a policy, in a transient cgroup.
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
        // SAFETY: only write(2) on an already open fd happens in the child.
        unsafe {
            cmd.pre_exec(move || {
                use std::io::Write as _;
                (&procs_file).write_all(b"0")
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
