use clap::Args;
use serde::Serialize;

use super::common::ClientArgs;
use crate::{
    cli::report::{table, MapsReport},
    control::{
        client::ClientError,
        protocol::{Request, Response, StatusView},
    },
    host::cgroup::Cgroup2,
};

/// Is the daemon running, are the programs attached where processes live,
/// how many PvDs and policies. Exits 3 when the daemon is not running.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Serialize)]
struct Status {
    daemon: Option<StatusView>,
    /// The cgroup the programs are attached to, and the cgroup2 root the
    /// processes of this host live in: steering works only if the first
    /// contains the second's processes.
    attach_cgroup: Option<String>,
    init_cgroup: Option<String>,
    attached: std::collections::BTreeMap<String, usize>,
    /// On-demand hooks no policy needs yet: not attached, and rightly so.
    hooks_waiting: Vec<String>,
    steering: bool,
    problems: Vec<String>,
}

impl StatusArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        let daemon = match self.client.request(&Request::Status) {
            Ok(Response::Status(s)) => Some(*s),
            Ok(other) => return Err(super::common::unexpected(other)),
            Err(ClientError::NotRunning(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let maps = self.client.maps().ok();
        let kernel = maps.as_ref().map(MapsReport::instance);
        let instance = kernel.as_ref().and_then(Option::as_ref);
        let attach_cgroup = instance.and_then(|i| i.attach_cgroup.clone());
        let attached = instance.map(|i| i.attached.clone()).unwrap_or_default();
        let init_cgroup = init_cgroup();
        let mut problems = Vec::new();
        if daemon.is_none() {
            problems.push("the daemon is not running".to_string());
        }
        if kernel.is_none() {
            problems.push(format!(
                "nothing is pinned at {}",
                self.client.pin_dir.display()
            ));
        }
        if let Some(d) = daemon.as_ref().filter(|d| d.policies_over_capacity > 0) {
            problems.push(format!(
                "{} cgroups with a policy are not steered: the policy map {} is full ({} entries)",
                d.policies_over_capacity,
                mif_common::names::MAP_POLICIES,
                d.policy_capacity
            ));
        }
        // Without the daemon nobody can say an unattached on-demand hook
        // is needed: it counts as waiting.
        let waiting: Vec<String> = match &daemon {
            Some(d) => d.hooks_waiting.clone(),
            None => (mif_common::names::ON_DEMAND_HOOKS.iter())
                .filter(|h| attached.get(**h).is_some_and(|&n| n == 0))
                .map(|h| h.to_string())
                .collect(),
        };
        let expected = |program: &String| !waiting.contains(program);
        if (attached.iter()).any(|(program, &n)| expected(program) && n != 1) {
            problems.push(format!(
                "programs attached: {attached:?} (each should be 1, but for the ones \
                 attached on demand: {})",
                waiting.join(", ")
            ));
        }

        if instance.is_some() && attach_cgroup.is_none() {
            problems.push("the cgroup the programs are attached to no longer exists".into());
        }
        // A guard this kernel cannot run (the egress guard before 6.15,
        // the packet-socket refusal without the BPF LSM) leaves strict
        // policies enforced per socket only; steering is whole without it.
        if let Some(problem) = daemon.as_ref().and_then(|d| d.guard_problem.as_ref()) {
            problems.push(format!(
                "{problem}: a strict policy is enforced per socket only there"
            ));
        }
        for left in daemon.iter().flat_map(|d| &d.guards_left_out) {
            problems.push(format!(
                "program {left}; strict policies are enforced without it"
            ));
        }
        if let Some(why) = daemon
            .as_ref()
            .and_then(|d| d.cgroup_watchers_left_out.as_ref())
        {
            problems.push(format!(
                "new cgroups get their selector's policy when the daemon sees them, not as \
                 they are made: {why}"
            ));
        }
        let steering = kernel.is_some()
            && attached.len() == mif_common::names::HOOKS.len()
            && (attached.iter()).all(|(program, &n)| !expected(program) || n == 1)
            && attach_cgroup.is_some();
        let status = Status {
            daemon,
            attach_cgroup,
            init_cgroup,
            attached,
            hooks_waiting: waiting,
            steering,
            problems,
        };
        self.client.print(&status, || render(&status))?;
        if status.daemon.is_none() {
            std::process::exit(3);
        }
        Ok(())
    }
}

/// The cgroup2 path of PID 1: where the host's processes live.
fn init_cgroup() -> Option<String> {
    let _ = Cgroup2::find().ok()?;
    let text = std::fs::read_to_string("/proc/1/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(String::from)
}

fn render(s: &Status) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |k: &str, v: String| rows.push(vec![k.to_string(), v]);
    match &s.daemon {
        Some(d) => {
            row(
                "daemon",
                format!(
                    "running (pid {}, mif {}, layout v{}, up {} s)",
                    d.pid, d.version, d.layout_version, d.uptime_secs
                ),
            );
            row(
                "pvds",
                format!("{} ({} available)", d.pvds, d.pvds_available),
            );
            row(
                "policies",
                match d.policies_over_capacity {
                    0 => format!("{} active, {} pending", d.policies, d.policies_pending),
                    dropped => format!(
                        "{} active, {} pending, {dropped} dropped (policy map full)",
                        d.policies - dropped,
                        d.policies_pending
                    ),
                },
            );
            row(
                "strict guards",
                format!(
                    "on {} cgroups, {} interfaces",
                    d.guarded_cgroups, d.guarded_interfaces
                ),
            );
            if let Some(e) = &d.last_reload_error {
                row("last reload", e.clone());
            }
        }
        None => row("daemon", "not running".into()),
    }
    row(
        "attached to",
        s.attach_cgroup.clone().unwrap_or_else(|| "-".into()),
    );
    row(
        "init lives in",
        s.init_cgroup.clone().unwrap_or_else(|| "-".into()),
    );
    row(
        "programs",
        s.attached
            .iter()
            .map(|(p, n)| format!("{p}={n}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    if !s.hooks_waiting.is_empty() {
        row(
            "on demand",
            format!(
                "{} (attached when a policy needs them)",
                s.hooks_waiting.join(" ")
            ),
        );
    }
    row(
        "steering",
        if s.steering {
            "yes".into()
        } else {
            "NO".into()
        },
    );
    for p in &s.problems {
        row("problem", p.clone());
    }
    table(&rows)
}
