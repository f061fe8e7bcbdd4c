//! How fast validation moves an app off a network whose upstream died (its
//! router silently drops everything for the internet while the host's link,
//! address and gateway stay), and what probing costs in traffic.
//!
//! Per (interval, passive detection on or off), the daemon validates both
//! networks through `http://203.0.113.1/generate_204` and the benchmark's
//! cgroup prefers wwan0, then wlan0. A trial waits until wwan0 is validated
//! and new sockets get its mark, lets a random part of the interval pass
//! (so the cut falls anywhere in the probe schedule, as an outage would),
//! cuts wwan0's upstream and times
//!
//! - until wwan0's `PVD_DEGRADED_V4` flag is set in the pinned `MIF_PVDS`;
//! - until the first new socket of the cgroup gets wlan0's mark (the
//!   socket is created by `lab-peer sockmark` in the cgroup, in a loop).
//!
//! With passive detection, an application in the cgroup makes a TCP
//! connection to the internet every 100 ms (as a browser with open tabs
//! would); its SYNs on the dead network time out and mif's sock_ops
//! program tells the daemon. Without, the cgroup makes only the sockets the
//! benchmark looks at, which send nothing.
//!
//! Probe traffic: an nftables counter in wwan0's router counts the probes'
//! packets and bytes both ways over a window at interval 1; divided by the
//! probes its server logged, per probe, then per hour for some intervals.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use mif_common::PVD_DEGRADED_V4;

use super::daemon::{policy_toml, BenchDaemon};
use super::kmaps::PinnedMaps;
use super::reaction::{ms_between, poll_flags};
use super::worker::now_ns;
use crate::lab::{nft, Family, Lab, LabChild, CONNECTIVITY_PATH, INTERNET_V4, PEER_PORT};

/// One row: an interval with or without passive detection.
#[derive(Debug, Clone, Default)]
pub struct ValidationRow {
    pub interval: u64,
    pub passive: bool,
    /// Cut → degraded flag set, ms.
    pub flag_ms: Vec<f64>,
    /// Cut → first new socket with wlan0's mark, ms.
    pub moved_ms: Vec<f64>,
}

/// What probing costs on one PvD and family.
#[derive(Debug, Clone, Default)]
pub struct ProbeTraffic {
    pub probes: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl ProbeTraffic {
    pub fn bytes_per_probe(&self) -> f64 {
        self.bytes as f64 / self.probes.max(1) as f64
    }
    pub fn packets_per_probe(&self) -> f64 {
        self.packets as f64 / self.probes.max(1) as f64
    }
}

#[derive(Debug, Clone, Default)]
pub struct ValidationBench {
    pub rows: Vec<ValidationRow>,
    pub traffic: ProbeTraffic,
}

/// The runs of one benchmark: trials per interval.
pub struct Trials {
    pub per_interval: Vec<(u64, usize)>,
    pub traffic_window: Duration,
}

pub fn run(lab: &Lab, trials: &Trials, start_timeout: Duration) -> Result<ValidationBench> {
    let servers = lab.start_connectivity_servers()?;
    let app = lab.create_cgroup("validation-app")?;
    let app_rel = format!("{}/validation-app", lab.cgroup_rel());
    let mut out = ValidationBench::default();
    for &(interval, n) in &trials.per_interval {
        for passive in [false, true] {
            eprintln!(
                "mif-bench: validation, interval {interval} s, passive detection {}, {n} outages",
                if passive { "on" } else { "off" }
            );
            let toml = format!(
                "[validation]\nurl = \"http://{INTERNET_V4}{CONNECTIVITY_PATH}\"\n\
                 interval = {interval}\n{}",
                policy_toml(&app_rel, &["wwan0", "wlan0"])
            );
            let daemon = BenchDaemon::start(lab, &toml, start_timeout)?;
            let validated = |l: &str| l.contains("PvD wwan0 (IPv4): unknown -> validated");
            if daemon
                .wait_line(validated, Duration::from_secs(10))?
                .is_none()
            {
                bail!("wwan0 never validated: {}", daemon.drain().join("\n"));
            }
            let maps = PinnedMaps::open(&daemon.instance.pin_dir)?;
            let index = |name: &str| maps.pvd_index(name).context("PvD not in MIF_PVDS");
            let (wwan, wlan) = (index("wwan0")?, index("wlan0")?);
            let wlan_mark = maps.pvd_mark(wlan).context("wlan0's mark")?;
            let wwan_mark = maps.pvd_mark(wwan).context("wwan0's mark")?;
            let load = passive.then(|| traffic_in(lab, &app)).transpose()?;
            let mut row = ValidationRow {
                interval,
                passive,
                ..Default::default()
            };
            for trial in 0..n {
                super::check_interrupted()?;
                lab.restore_upstream(1)?;
                // Healthy again: validated (flag clear) and new sockets on
                // wwan0, for a while longer than a probe (the phase below).
                poll_flags_for(&maps, wwan, |f| f & PVD_DEGRADED_V4 == 0, interval)?;
                wait_mark(lab, &app, wwan_mark, Duration::from_secs(3 * interval + 5))?;
                std::thread::sleep(phase(trial, n, interval));
                lab.cut_upstream(1)?;
                let t0 = now_ns();
                let flagged = poll_flags_for(&maps, wwan, |f| f & PVD_DEGRADED_V4 != 0, interval)?;
                let moved = wait_mark(lab, &app, wlan_mark, Duration::from_secs(3 * interval + 5))?;
                row.flag_ms.push(ms_between(t0, flagged));
                row.moved_ms.push(ms_between(t0, moved));
            }
            lab.restore_upstream(1)?;
            if let Some(load) = load {
                load.kill()?;
            }
            daemon.stop()?;
            out.rows.push(row);
        }
    }
    out.traffic = traffic(lab, &servers, trials.traffic_window, start_timeout)?;
    Ok(out)
}

/// The trial's phase: spread evenly over one interval (deterministic, so
/// two runs sample the schedule alike).
fn phase(trial: usize, trials: usize, interval: u64) -> Duration {
    Duration::from_secs(interval).mul_f64((trial as f64 + 0.5) / trials.max(1) as f64)
}

/// [`poll_flags`] with a deadline that suits the interval.
fn poll_flags_for(
    maps: &PinnedMaps,
    index: u32,
    pred: impl Fn(u32) -> bool,
    interval: u64,
) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(3 * interval + 10);
    loop {
        match poll_flags(maps, index, &pred) {
            Ok(at) => return Ok(at),
            Err(_) if Instant::now() < deadline => super::check_interrupted()?,
            Err(e) => return Err(e),
        }
    }
}

/// Polls new sockets of `cgroup` until one gets `mark`; returns the
/// CLOCK_MONOTONIC time just before the socket of the first that did.
fn wait_mark(lab: &Lab, cgroup: &Path, mark: u32, within: Duration) -> Result<u64> {
    let deadline = Instant::now() + within;
    loop {
        let before = now_ns();
        if lab.sockmark(Some(cgroup), Family::V4)?.mark == mark {
            return Ok(before);
        }
        if Instant::now() > deadline {
            bail!("new sockets never got mark {mark:#x}");
        }
    }
}

/// An application in `cgroup` connecting to the internet every 100 ms,
/// until killed (or the lab drops).
fn traffic_in(lab: &Lab, cgroup: &Path) -> Result<LabChild> {
    let peer = lab.peer_path().display().to_string();
    let script = format!(
        "while :; do {peer} client --proto tcp --to {INTERNET_V4} --port {PEER_PORT} \
         >/dev/null 2>&1 & sleep 0.1; done"
    );
    let cmd = lab.command_in(Some(cgroup), "sh", ["-c", &script])?;
    lab.spawn(cmd)
}

/// Probe traffic over `window` at interval 1, counted in wwan0's router.
fn traffic(
    lab: &Lab,
    servers: &crate::lab::ConnectivityServers<'_>,
    window: Duration,
    start_timeout: Duration,
) -> Result<ProbeTraffic> {
    let toml =
        format!("[validation]\nurl = \"http://{INTERNET_V4}{CONNECTIVITY_PATH}\"\ninterval = 1\n");
    let daemon = BenchDaemon::start(lab, &toml, start_timeout)?;
    let table = "mif_bench_probes";
    let rules = format!(
        "table inet {table} {{\n counter probes {{}}\n\
         chain pre {{ type filter hook prerouting priority -300; policy accept;\n\
           iifname \"eth0\" ip daddr {INTERNET_V4} tcp dport 80 counter name probes\n }}\n\
         chain post {{ type filter hook postrouting priority 300; policy accept;\n\
           oifname \"eth0\" ip saddr {INTERNET_V4} tcp sport 80 counter name probes\n }}\n}}\n"
    );
    let file = lab.scratch_root().join("probe-counter.nft");
    std::fs::write(&file, rules)?;
    nft(lab, 1, &["-f", &file.display().to_string()])?;
    let before = servers.requests(1)?.len() as u64;
    std::thread::sleep(window);
    let json = nft(lab, 1, &["-j", "list", "counter", "inet", table, "probes"])?;
    let after = servers.requests(1)?.len() as u64;
    let _ = nft(lab, 1, &["delete", "table", "inet", table]);
    daemon.stop()?;
    let parsed: serde_json::Value = serde_json::from_str(&json)?;
    let counter = parsed["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|i| i.get("counter").cloned())
        .context("no counter in nft's answer")?;
    // A probe in flight at either end of the window is counted in part:
    // over a window of many probes that is noise.
    Ok(ProbeTraffic {
        probes: after - before,
        packets: counter["packets"].as_u64().unwrap_or(0),
        bytes: counter["bytes"].as_u64().unwrap_or(0),
    })
}
