//! The daemon at scale: many policies (each on a real cgroup, as the config
//! requires) and many PvDs (one lab network each). Per configuration:
//!
//! - start time: spawning `mif daemon` until it prints `ready` (config
//!   parsed and checked, cgroups resolved, programs loaded, routing and maps
//!   written, programs attached);
//! - RSS (and its peak) once ready, and the kernel memory of its maps;
//! - reconcile time: a link goes down (ioctl, exact t0) until the daemon
//!   logs the PvD's new state, which it does at the end of the pass that
//!   saw it (routing installed and every map entry rewritten); and the same
//!   for the way back (from the start of the restoring `ip` commands, so
//!   that one includes them); plus the daemon's CPU time per flap.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use mif_common::PVD_AVAIL_V4;

use super::daemon::{policy_toml, BenchDaemon};
use super::kmaps::{map_memory, MapMemory, PinnedMaps};
use super::reaction::LinkCtl;
use super::testbed::count_label;
use crate::lab::Lab;

#[derive(Debug, Clone, Default)]
pub struct ScaleRow {
    pub pvds: usize,
    pub policies: usize,
    /// Why the daemon could not be measured (did not start in time, ...).
    pub error: Option<String>,
    pub config_bytes: usize,
    pub start: Duration,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    pub maps: Vec<MapMemory>,
    /// Entries in MIF_POLICIES once ready (should be `policies`).
    pub in_map: usize,
    /// Link down → the PvD's IPv4 flag cleared in MIF_PVDS.
    pub flag_ms: Vec<f64>,
    pub down_ms: Vec<f64>,
    pub up_ms: Vec<f64>,
    pub cpu_ms_per_flap: Vec<f64>,
    /// The daemon's CPU use with nothing happening, in % of one CPU.
    pub idle_cpu_pct: f64,
    /// How long each admin verb took against the ready daemon (see
    /// [`ADMIN_VERBS`]), the CLI's whole run.
    pub verbs: Vec<(&'static str, Result<Duration, String>)>,
    pub stop: Duration,
}

/// The admin verbs timed at each scale: what an operator of a host with
/// that many policies runs. `status` and `policy list` ask the daemon
/// (and `status` reads the pinned maps), `maps` reads the pinned maps and
/// names each policy's cgroup, `reload` has the daemon re-read the config,
/// resolve its policies and apply them.
pub const ADMIN_VERBS: [&str; 4] = ["status", "policy list", "maps", "reload"];

impl ScaleRow {
    pub fn map_bytes(&self) -> u64 {
        self.maps.iter().map(|m| m.bytes).sum()
    }
}

/// utime + stime of `pid`, in milliseconds.
fn cpu_ms(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at 3.
    let rest = stat.rsplit_once(')').context("bad stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks * 1000.0 / hz)
}

fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// Waits until the daemon has used no CPU for 300 ms (at most 10 s: a
/// daemon that polls something never gets there, which the idle-CPU column
/// shows).
fn wait_idle(pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = cpu_ms(pid)?;
    let mut quiet = 0;
    while quiet < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = cpu_ms(pid)?;
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    Ok(())
}

/// Creates cgroups `o0 .. o{n-1}` below the lab's (already existing ones
/// are kept); returns how long it took.
pub fn ensure_cgroups(lab: &Lab, n: usize) -> Result<Duration> {
    let started = Instant::now();
    for i in 0..n {
        if i % 1000 == 0 {
            super::check_interrupted()?;
        }
        let dir = lab.cgroup_root().join(format!("o{i}"));
        if !dir.exists() {
            lab.create_cgroup(&format!("o{i}"))?;
        }
    }
    Ok(started.elapsed())
}

/// Runs the daemon on `lab` once per entry of `counts` policies; `steered`
/// and `fallback` are the PvDs the policies prefer, the first is flapped.
/// Rows of `skip_after` that failed make the same and bigger counts here be
/// skipped (the 64-PvD lab after the 2-PvD one).
pub fn run(
    lab: &Lab,
    counts: &[usize],
    (steered, fallback): (&str, &str),
    flaps: usize,
    start_timeout: Duration,
    skip_after: &[ScaleRow],
    cgroups_created: &mut Vec<(usize, Duration)>,
) -> Result<Vec<ScaleRow>> {
    let link = LinkCtl::new(&lab.host_ns_path())?;
    let steered_index = lab
        .network_named(steered)
        .with_context(|| format!("no network {steered}"))?
        .index;
    let mut rows: Vec<ScaleRow> = Vec::new();
    for &n in counts {
        super::check_interrupted()?;
        if let Some(failed) = skip_after
            .iter()
            .find(|r| r.policies <= n && r.error.is_some())
        {
            eprintln!("mif-bench: scale: skipping {n} policies");
            rows.push(ScaleRow {
                pvds: lab.networks().len(),
                policies: n,
                error: Some(format!(
                    "skipped: with {} PvDs and {} policies the daemon already failed",
                    failed.pvds,
                    count_label(failed.policies)
                )),
                ..ScaleRow::default()
            });
            continue;
        }
        eprintln!(
            "mif-bench: scale: {} PvDs, {n} policies",
            lab.networks().len()
        );
        // Counts grow: each row adds what its policies name, no more.
        let made = ensure_cgroups(lab, n)?;
        if n >= 1000 {
            cgroups_created.push((n, made));
        }
        let toml: String = (0..n)
            .map(|i| policy_toml(&format!("{}/o{i}", lab.cgroup_rel()), &[steered, fallback]))
            .collect();
        let mut row = ScaleRow {
            pvds: lab.networks().len(),
            policies: n,
            config_bytes: toml.len(),
            ..ScaleRow::default()
        };
        match measure(
            lab,
            &link,
            &toml,
            steered,
            steered_index,
            flaps,
            start_timeout,
            &mut row,
        ) {
            Ok(()) => {}
            Err(e) => row.error = Some(format!("{e:#}")),
        }
        rows.push(row);
    }
    Ok(rows)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    lab: &Lab,
    link: &LinkCtl,
    toml: &str,
    steered: &str,
    steered_index: usize,
    flaps: usize,
    start_timeout: Duration,
    row: &mut ScaleRow,
) -> Result<()> {
    let daemon = BenchDaemon::start(lab, toml, start_timeout)?;
    row.start = daemon.start_time;
    let pid = daemon.pid()?;
    wait_idle(pid)?;
    daemon.drain();
    let (cpu0, t0) = (cpu_ms(pid)?, Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    row.idle_cpu_pct = (cpu_ms(pid)? - cpu0) / t0.elapsed().as_secs_f64() / 10.0;
    // A start of minutes means every pass takes long too: one flap will do.
    let flaps = if row.start > Duration::from_secs(60) {
        flaps.min(1)
    } else {
        flaps
    };
    row.rss_kib = status_kib(pid, "VmRSS:")?;
    row.peak_rss_kib = status_kib(pid, "VmHWM:")?;
    row.maps = map_memory(&daemon.instance.pin_dir)?;
    let maps = PinnedMaps::open(&daemon.instance.pin_dir)?;
    row.in_map = maps.policy_count();
    // The start-up's batch writes (and every policy's cgroup) checked.
    if row.in_map != row.policies {
        bail!(
            "{} policies, but the daemon's policy map holds {}",
            row.policies,
            row.in_map
        );
    }
    for verb in ADMIN_VERBS {
        super::check_interrupted()?;
        let mut args: Vec<String> = verb.split(' ').map(str::to_string).collect();
        args.extend([
            "--pin-dir".to_string(),
            daemon.instance.pin_dir.display().to_string(),
        ]);
        let t0 = Instant::now();
        // A verb that fails (or outlasts the lab's command timeout) is
        // reported in its cell; the row's other figures still count.
        let took = match crate::mif::run_mif(lab, &args) {
            Ok(out) if out.status.success() => Ok(t0.elapsed()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            Err(e) => Err(format!("{e:#}")),
        };
        row.verbs.push((verb, took));
    }
    wait_idle(pid)?;
    daemon.drain();
    let pvd = maps
        .pvd_index(steered)
        .with_context(|| format!("no PvD {steered}"))?;

    let tag = format!("PvD {steered} ");
    let line_timeout = Duration::from_secs(300);
    for flap in 0..flaps {
        super::check_interrupted()?;
        let cpu0 = cpu_ms(pid)?;
        let t0 = Instant::now();
        link.set_up(steered, false)?;
        let flag_deadline = t0 + line_timeout;
        while maps.pvd_flags(pvd).is_some_and(|f| f & PVD_AVAIL_V4 != 0) {
            if Instant::now() > flag_deadline {
                bail!("flap {flap}: {steered}'s flag never cleared");
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        row.flag_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let down = daemon
            .wait_line(
                |l| l.contains(&tag) && l.contains("IPv4 unavailable"),
                line_timeout,
            )?
            .with_context(|| format!("flap {flap}: the daemon never logged {steered} down"))?;
        row.down_ms.push((down - t0).as_secs_f64() * 1e3);
        wait_idle(pid)?;

        let t0 = Instant::now();
        lab.restore_uplink(steered_index)?;
        let up = daemon
            .wait_line(
                |l| l.contains(&tag) && l.contains("IPv4 available"),
                line_timeout,
            )?
            .with_context(|| format!("flap {flap}: the daemon never logged {steered} up"))?;
        row.up_ms.push((up - t0).as_secs_f64() * 1e3);
        wait_idle(pid)?;
        row.cpu_ms_per_flap.push(cpu_ms(pid)? - cpu0);
        daemon.drain();
    }
    let t0 = Instant::now();
    daemon.stop()?;
    row.stop = t0.elapsed();
    Ok(())
}

/// Names of a lab of `n` networks: `n0`, `n1`, ...
pub fn network_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i}")).collect()
}

/// A lab of `n` networks, timed.
pub fn big_lab(n: usize, peer: &Path) -> Result<(Lab, Duration)> {
    let names = network_names(n);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let started = Instant::now();
    let lab = Lab::with_peer(&refs, peer)?;
    Ok((lab, started.elapsed()))
}
