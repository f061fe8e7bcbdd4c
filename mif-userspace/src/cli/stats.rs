use std::{collections::HashMap, time::Duration};

use clap::Args;
use serde::Serialize;

use super::common::ClientArgs;
use crate::cli::report::{table, CounterReport, MapsReport};

/// Counters per policy × PvD, with rates over an interval. Read from the
/// pinned maps, so it works whether or not the daemon runs.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Seconds between the two readings the rates come from.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
}

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    counters: CounterReport,
    cgroup: Option<String>,
    steered_per_sec: f64,
    refused_per_sec: f64,
}

impl StatsArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        let maps = self.client.maps()?;
        let first = MapsReport::read(&maps);
        std::thread::sleep(Duration::from_secs_f64(self.interval.max(0.0)));
        let second = MapsReport::read(&maps);
        let before: HashMap<(u32, Option<String>), &CounterReport> = first
            .counters
            .iter()
            .map(|c| ((c.policy, c.pvd.clone()), c))
            .collect();
        let secs = self.interval.max(1e-3);
        let rows: Vec<Row> = second
            .counters
            .into_iter()
            .map(|c| {
                let old = before.get(&(c.policy, c.pvd.clone()));
                let rate = |now: u64, then: Option<u64>| {
                    (now - then.unwrap_or(now).min(now)) as f64 / secs
                };
                Row {
                    steered_per_sec: rate(c.counts.steered, old.map(|o| o.counts.steered)),
                    refused_per_sec: rate(c.counts.refused, old.map(|o| o.counts.refused)),
                    cgroup: second
                        .policies
                        .iter()
                        .find(|p| p.id == c.policy)
                        .and_then(|p| p.cgroup.clone()),
                    counters: c,
                }
            })
            .collect();
        self.client.print(&rows, || render(&rows))
    }
}

fn render(rows: &[Row]) -> String {
    let mut out = vec![[
        "POLICY",
        "CGROUP",
        "PVD",
        "STEERED",
        "/S",
        "FALLBACK",
        "REFUSED",
        "/S",
        "BOUND",
        "SRC SET",
        "DNS",
        "EXCLUDED",
        "GUARD DROPS",
        "CHOSEN",
    ]
    .map(String::from)
    .to_vec()];
    for r in rows {
        let c = &r.counters;
        out.push(vec![
            c.policy.to_string(),
            r.cgroup.clone().unwrap_or_else(|| "-".into()),
            c.pvd.clone().unwrap_or_else(|| "-".into()),
            c.counts.steered.to_string(),
            format!("{:.1}", r.steered_per_sec),
            c.counts.fallback.to_string(),
            c.counts.refused.to_string(),
            format!("{:.1}", r.refused_per_sec),
            c.counts.bound.to_string(),
            c.counts.src_set.to_string(),
            c.counts.dns.to_string(),
            c.counts.excluded.to_string(),
            c.counts.guard_drops.to_string(),
            c.counts.chosen.to_string(),
        ]);
    }
    table(&out)
}
