use clap::Args;

use super::common::ClientArgs;
use crate::control::protocol::MonitorEvent;

/// Stream PvD and policy changes as they happen (JSON lines with --json).
#[derive(Debug, Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

impl MonitorArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        let json = self.client.json;
        self.client.connect()?.monitor(|event| {
            if json {
                println!("{}", serde_json::to_string(&event).unwrap_or_default());
            } else {
                println!("{}", describe(&event));
            }
            true
        })?;
        Ok(())
    }
}

fn describe(event: &MonitorEvent) -> String {
    match event {
        MonitorEvent::Subscribed => "following PvD and policy changes".into(),
        MonitorEvent::Pvd(p) => format!(
            "pvd {}: link {}, IPv4 {}, IPv6 {}{}",
            p.name,
            if p.link_up { "up" } else { "down" },
            if p.available_v4 {
                p.addr4.as_deref().unwrap_or("-")
            } else {
                "unavailable"
            },
            if p.available_v6 {
                p.addr6.as_deref().unwrap_or("-")
            } else {
                "unavailable"
            },
            validation(p),
        ),
        MonitorEvent::PolicySet(s) => format!(
            "policy set {}: prefer {}{}",
            s.cgroup,
            s.terms.prefer.join(","),
            if s.terms.strict { ", strict" } else { "" }
        ),
        MonitorEvent::PolicyDel { cgroup } => format!("policy del {cgroup}"),
        MonitorEvent::Reload { ok: true, .. } => "config reloaded".into(),
        MonitorEvent::Reload { error, .. } => {
            format!("config reload refused: {}", error.as_deref().unwrap_or("?"))
        }
    }
}

/// `; validation IPv4 captive (portal http://...)` for the families probed.
fn validation(p: &crate::control::protocol::PvdView) -> String {
    [("IPv4", &p.validation_v4), ("IPv6", &p.validation_v6)]
        .iter()
        .filter_map(|(family, v)| Some(format!("; validation {family} {}", v.as_ref()?.words())))
        .collect()
}
