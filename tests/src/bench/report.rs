//! Turning the measurements into the table on stdout, docs/benchmarks.md
//! and docs/bench-policies.svg.

use std::fmt::Write as _;
use std::time::Duration;

use super::measure::{ProgTime, Results};
use super::memory::{MemoryRow, CPU_COUNTS};
use super::reaction::Reaction;
use super::scale::ScaleRow;
use super::stats::{percentile, sorted, Summary};
use super::testbed::{count_label, Variant};
use super::vpn::VpnReaction;
use super::worker::{Op, DATAGRAM, STREAM_WRITE};

/// What the benchmark ran on.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu: String,
    pub mem_gib: f64,
    pub date: String,
    pub loadavg: String,
    pub commit: String,
    pub nft: String,
}

impl Machine {
    pub fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let mem_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0);
        let run = |prog: &str, args: &[&str]| {
            std::process::Command::new(prog)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        let mut commit = run("git", &["rev-parse", "--short", "HEAD"]);
        if !run("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
            commit.push_str(" + uncommitted changes");
        }
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu,
            mem_gib: mem_kib / 1024.0 / 1024.0,
            date: today_utc(),
            loadavg: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            commit,
            nft: run("nft", &["--version"]),
        }
    }
}

/// `YYYY-MM-DD` (UTC) without a date crate: days since the epoch to the
/// civil calendar (H. Hinnant's algorithm).
fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub smoke: bool,
    pub machine: Machine,
    pub rounds: usize,
    pub warmup: usize,
    pub batches: usize,
    pub iters: Vec<(Op, u64)>,
    pub others: Vec<usize>,
    pub results: Results,
    pub prog_times: Vec<ProgTime>,
    pub cgroups_created: Vec<(usize, Duration)>,
    pub nft_load: Vec<(usize, Duration)>,
    pub reaction: Option<Reaction>,
    pub vpn: Option<VpnReaction>,
    /// Validation's reaction to a dead upstream, and its probe traffic.
    pub validation: Option<super::validation::ValidationBench>,
    pub dns: Option<super::dns::DnsBench>,
    /// mif_connect with the first PvD healthy and black-holed.
    pub api: Option<super::api::ApiBench>,
    /// Kernel memory of the maps, per instance ([`super::memory`]).
    pub memory: Vec<MemoryRow>,
    pub scale: Vec<ScaleRow>,
    pub big_lab: Option<(usize, Duration)>,
    pub total: Duration,
}

pub fn op_title(op: Op) -> &'static str {
    match op {
        Op::Socket => "socket()+close() (UDP)",
        Op::UdpConnect => "socket()+connect()+close() (UDP)",
        Op::UdpSendto => "sendto() unconnected UDP, 64 B",
        Op::TcpCrr => "TCP connect/request/response/close (TCP_CRR)",
        Op::TcpStream => "TCP stream, 64 KiB writes",
        Op::UdpStream => "UDP stream, 64 B datagrams (connected)",
    }
}

/// The strict egress guard, a `cgroup_skb/egress` program.
pub const GUARD_PROGRAM: &str = "mif_guard";
/// The packet guard (tc egress), attached to interfaces while strict
/// policies exist.
pub const PKT_GUARD_PROGRAM: &str = "mif_pkt_guard";

pub fn per_packet(op: Op) -> bool {
    op.is_stream()
}

/// A value in the row's natural unit (ns/op, or throughput for streams).
fn show(op: Op, ns: f64) -> String {
    match op {
        Op::TcpStream => format!("{:.2} Gbit/s", STREAM_WRITE as f64 * 8.0 / ns),
        Op::UdpStream => format!("{:.0} kpkt/s", 1e6 / ns),
        _ if ns >= 10_000.0 => format!("{:.1} µs", ns / 1000.0),
        _ => format!("{ns:.0} ns"),
    }
}

/// p25–p75 in the row's unit (low–high of the shown value).
fn show_spread(op: Op, s: &Summary) -> String {
    let (lo, hi) = if op.is_stream() {
        (s.p75, s.p25)
    } else {
        (s.p25, s.p75)
    };
    let strip = |v: String| v.split_whitespace().next().unwrap_or_default().to_owned();
    format!("{}–{}", strip(show(op, lo)), strip(show(op, hi)))
}

impl Report {
    pub fn summary(&self, op: Op, v: Variant) -> Option<Summary> {
        Summary::of(self.results.samples.get(&(op, v))?)
    }

    /// Cost ratio of `v` to `base` (ns/op over ns/op: for streams that is
    /// base throughput over this throughput): the median over rounds of
    /// each round's ratio, so that a slow stretch of the machine, which
    /// hits both in the same round, cancels out.
    pub fn ratio(&self, op: Op, v: Variant, base: Variant) -> Option<f64> {
        Some(self.ratio_summary(op, v, base)?.median)
    }

    /// Median and quartiles of the per-round ratios.
    pub fn ratio_summary(&self, op: Op, v: Variant, base: Variant) -> Option<Summary> {
        let xs = self.results.samples.get(&(op, v))?;
        let bs = self.results.samples.get(&(op, base))?;
        let ratios: Vec<f64> = xs.iter().zip(bs).map(|(x, b)| x / b).collect();
        Summary::of(&ratios)
    }

    fn ops(&self) -> Vec<Op> {
        let mut ops: Vec<Op> = self.iters.iter().map(|(op, _)| *op).collect();
        ops.dedup();
        ops
    }

    /// The per-connection and per-packet table, as markdown (also readable
    /// as plain text).
    pub fn cost_table(&self) -> String {
        let mut t = String::new();
        t += "| operation | variant | median | p25–p75 | cost ×(a) | (p25–p75) | ×(b) |\n";
        t += "| --- | --- | ---: | ---: | ---: | ---: | ---: |\n";
        for op in self.ops() {
            for &v in &self.results.variants {
                if matches!(v, Variant::Depth(_)) {
                    continue;
                }
                let Some(s) = self.summary(op, v) else {
                    continue;
                };
                let ra = self
                    .ratio(op, v, Variant::None)
                    .map_or("–".into(), |r| format!("{r:.3}"));
                let ra_spread = match v {
                    Variant::None => "".into(),
                    _ => self
                        .ratio_summary(op, v, Variant::None)
                        .map_or("".into(), |r| format!("{:.2}–{:.2}", r.p25, r.p75)),
                };
                let rb = match v {
                    Variant::Mif(_)
                    | Variant::Nft(_)
                    | Variant::SoMark
                    | Variant::Strict
                    | Variant::Chosen => self
                        .ratio(op, v, Variant::Mif(0))
                        .map_or("–".into(), |r| format!("{r:.3}")),
                    // (g) leaves by another network than (b), unsteered.
                    Variant::None | Variant::Depth(_) | Variant::Unsteered => "–".into(),
                };
                let _ = writeln!(
                    t,
                    "| {} | {v} | {} | {} | {ra} | {ra_spread} | {rb} |",
                    op_title(op),
                    show(op, s.median),
                    show_spread(op, &s),
                );
            }
        }
        t
    }

    /// The per-packet rows measured for the guard's variants, (f) and (g).
    pub fn guard_ops(&self) -> Vec<Op> {
        self.ops()
            .into_iter()
            .filter(|&op| per_packet(op))
            .filter(|&op| {
                [Variant::Strict, Variant::Unsteered]
                    .iter()
                    .any(|&v| self.summary(op, v).is_some())
            })
            .collect()
    }

    /// The strict egress guard's rows: (a)'s value, then the cost over (a)
    /// of (b), (f) and (g) side by side (median and p25–p75 of the
    /// per-round ratios, all from the same rounds), and (f) over (b).
    pub fn guard_table(&self) -> String {
        let ops = self.guard_ops();
        if ops.is_empty() {
            return String::new();
        }
        let cols = [Variant::Mif(0), Variant::Strict, Variant::Unsteered];
        let mut t = String::from("| per packet | (a) none |");
        for v in cols {
            let _ = write!(t, " {v} ×(a) |");
        }
        t += " (f) ×(b) |\n| --- | ---: |";
        t += &" ---: |".repeat(cols.len() + 1);
        t += "\n";
        let cell = |rs: Option<Summary>| {
            rs.map_or("–".into(), |r| {
                format!("{:.3} ({:.2}–{:.2})", r.median, r.p25, r.p75)
            })
        };
        for op in ops {
            let base = self
                .summary(op, Variant::None)
                .map_or("–".into(), |s| show(op, s.median));
            let _ = write!(t, "| {} | {base} |", op_title(op));
            for v in cols {
                let _ = write!(t, " {} |", cell(self.ratio_summary(op, v, Variant::None)));
            }
            let _ = writeln!(
                t,
                " {} |",
                cell(self.ratio_summary(op, Variant::Strict, Variant::Mif(0)))
            );
        }
        let runs: Vec<String> = [Variant::Mif(0), Variant::Strict, Variant::Unsteered]
            .into_iter()
            .flat_map(|v| self.guard_ops().into_iter().map(move |op| (v, op)))
            .filter_map(|(v, op)| {
                let what = match self.prog_run(v, op, GUARD_PROGRAM)? {
                    Some((per_op, ns)) => format!("{per_op:.2} × {ns:.0} ns"),
                    None => "not run".into(),
                };
                Some(format!("({}) {} {what}", v.letter(), op.name()))
            })
            .collect();
        if !runs.is_empty() {
            let _ = writeln!(
                t,
                "\n`{GUARD_PROGRAM}`'s own run time (BPF statistics, outside the timed rounds), runs per write or datagram (≈, from the stream's rate) × ns per run: {}.",
                runs.join(", ")
            );
        }
        t
    }

    /// `program`'s (runs per operation, ns per run) in `v`'s `op` from the
    /// BPF statistics: `None` if that was not measured, `Some(None)` if it
    /// was and `program` did not run for (nearly) every operation.
    pub fn prog_run(&self, v: Variant, op: Op, program: &str) -> Option<Option<(f64, f64)>> {
        let p = self
            .prog_times
            .iter()
            .find(|p| p.variant == v && p.op == op)?;
        Some(
            p.programs
                .iter()
                .find(|(n, _, _)| n == program)
                .map(|(_, per_op, ns)| (*per_op, *ns)),
        )
    }

    /// (cgroup level, socket() extra ns over (a), connect extra ns over (a)),
    /// level 2 being (b).
    pub fn depth_points(&self) -> Vec<(usize, f64, f64)> {
        let base = |op| self.summary(op, Variant::None).map(|s| s.median);
        let mut out = Vec::new();
        let levels = std::iter::once((2, Variant::Mif(0))).chain(
            self.results.variants.iter().filter_map(|v| match v {
                Variant::Depth(l) => Some((*l, *v)),
                _ => None,
            }),
        );
        for (level, v) in levels {
            let extra = |op| Some(self.summary(op, v)?.median - base(op)?);
            if let (Some(s), Some(c)) = (extra(Op::Socket), extra(Op::UdpConnect)) {
                out.push((level, s, c));
            }
        }
        out
    }

    /// Least-squares line of socket()'s extra cost against the number of
    /// levels the walk visits (32 - level): (ns per level, ns at 0 levels).
    pub fn walk_fit(&self) -> Option<(f64, f64)> {
        let pts: Vec<(f64, f64)> = self
            .depth_points()
            .iter()
            .map(|&(level, s, _)| ((32 - level) as f64, s))
            .collect();
        fit(&pts)
    }

    /// The same line from a program's own run time (BPF statistics).
    pub fn prog_fit(&self, program: &str, op: Op) -> Option<(f64, f64)> {
        let pts: Vec<(f64, f64)> = self
            .prog_times
            .iter()
            .filter(|p| p.op == op)
            .filter_map(|p| {
                let level = match p.variant {
                    Variant::Mif(0) => 2,
                    Variant::Depth(l) => l,
                    _ => return None,
                };
                let (_, _, ns) = p.programs.iter().find(|(n, _, _)| n == program)?;
                Some(((32 - level) as f64, *ns))
            })
            .collect();
        fit(&pts)
    }
}

/// Least squares: (slope, intercept).
fn fit(pts: &[(f64, f64)]) -> Option<(f64, f64)> {
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| (sxy / sxx, my - sxy / sxx * mx))
}

impl Report {
    pub fn depth_table(&self) -> String {
        let pts = self.depth_points();
        if pts.is_empty() {
            return String::new();
        }
        let mut t = String::new();
        t += "| cgroup level of the process | 32 − level | socket()+close() over (a) | socket()+connect()+close() over (a) |\n";
        t += "| ---: | ---: | ---: | ---: |\n";
        for (level, s, c) in pts {
            let _ = writeln!(t, "| {level} | {} | {s:+.0} ns | {c:+.0} ns |", 32 - level);
        }
        if let Some((slope, fixed)) = self.walk_fit() {
            let _ = writeln!(
                t,
                "\nLeast-squares fit of socket()'s extra cost: {slope:.1} ns per step of (32 − level) {fixed:+.0} ns (end to end: noisy on this machine)."
            );
        }
        if let Some((slope, fixed)) = self.prog_fit("mif_sock_create", Op::Socket) {
            let _ = writeln!(
                t,
                "From mif_sock_create's own run time: {slope:.1} ns per step {fixed:+.0} ns."
            );
        }
        t
    }

    pub fn prog_table(&self) -> String {
        if self.prog_times.is_empty() {
            return String::new();
        }
        let mut t = String::new();
        t += "| variant | operation | program: runs per operation × ns per run |\n";
        t += "| --- | --- | --- |\n";
        for p in &self.prog_times {
            let mut progs: Vec<String> = p
                .programs
                .iter()
                .map(|(name, per_op, ns)| format!("{name}: {per_op:.2} × {ns:.0} ns"))
                .collect();
            if progs.is_empty() {
                progs.push("none".into());
            }
            let _ = writeln!(
                t,
                "| {} | {} | {} |",
                p.variant,
                op_title(p.op),
                progs.join(", ")
            );
        }
        t
    }

    pub fn reaction_table(&self) -> String {
        let Some(r) = &self.reaction else {
            return String::new();
        };
        latency_table(
            "link down →",
            "flaps",
            &[
                (
                    "the kernel is done (ioctl returns, notification sent)",
                    &r.kernel_ms,
                ),
                ("PvD flag cleared in MIF_PVDS", &r.flag_ms),
                (
                    "… of which after the notification (mif)",
                    &r.after_kernel_ms,
                ),
                ("first new connection leaves by wlan0", &r.conn_ms),
            ],
        )
    }

    /// The strict VPN app's table: from the kill of the VPN client.
    pub fn vpn_table(&self) -> String {
        let Some(r) = &self.vpn else {
            return String::new();
        };
        latency_table(
            &format!("VPN client killed ({}) →", r.signal),
            "rounds",
            &[
                (
                    "tun0 reported down (first link notification read)",
                    &r.notified_ms,
                ),
                ("vpn PvD flag cleared in MIF_PVDS", &r.flag_ms),
                (
                    "… of which after the notification (mif)",
                    &r.after_notified_ms,
                ),
                (
                    "first new socket() of the strict app refused (EPERM)",
                    &r.refused_ms,
                ),
            ],
        )
    }

    /// The DNS forwarder's table: per rate and path, what dnsperf saw.
    /// mif_connect's table: call to first byte per state of the first PvD.
    pub fn api_table(&self) -> String {
        let Some(a) = &self.api else {
            return String::new();
        };
        let mut t = String::from(
            "| first PvD (wwan0) | connections | p50 | p90 | max | won by |\n\
             | --- | ---: | ---: | ---: | ---: | --- |\n",
        );
        for r in &a.rows {
            let won: Vec<String> = r.won.iter().map(|(p, n)| format!("{p} {n}")).collect();
            let _ = writeln!(
                t,
                "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
                r.label(),
                r.first_byte_ms.len(),
                r.percentile_ms(50.0),
                r.percentile_ms(90.0),
                r.first_byte_ms.last().copied().unwrap_or(0.0),
                won.join(", "),
            );
        }
        t
    }

    pub fn dns_table(&self) -> String {
        let Some(d) = &self.dns else {
            return String::new();
        };
        let mut t = String::from(
            "| rate asked | path | sent | lost | answered/s | p50 | p99 | max |\n\
             | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for r in &d.rows {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} ({:.2} %) | {:.0} | {:.0} µs | {:.0} µs | {:.0} µs |",
                super::dns::rate_label(r.rate),
                r.path.label(),
                r.sent,
                r.lost,
                100.0 * r.lost as f64 / r.sent.max(1) as f64,
                r.qps,
                r.percentile_us(50.0),
                r.percentile_us(99.0),
                r.latencies_us.last().copied().unwrap_or(0.0),
            );
        }
        t
    }

    /// Validation's table: from the upstream's death, per interval and
    /// passive detection; then the probes' traffic.
    pub fn validation_table(&self) -> String {
        let Some(v) = &self.validation else {
            return String::new();
        };
        let labels: Vec<(String, String)> = v
            .rows
            .iter()
            .map(|r| {
                let how = format!(
                    "interval {} s, passive detection {}",
                    r.interval,
                    if r.passive { "on" } else { "off" }
                );
                (
                    format!("{how}: wwan0 flagged degraded in MIF_PVDS"),
                    format!("{how}: first new socket on wlan0"),
                )
            })
            .collect();
        let mut rows: Vec<(&str, &Vec<f64>)> = Vec::new();
        for (r, (flag, moved)) in v.rows.iter().zip(&labels) {
            rows.push((flag, &r.flag_ms));
            rows.push((moved, &r.moved_ms));
        }
        let mut t = latency_table("upstream of wwan0 dies →", "outages", &rows);
        let tr = &v.traffic;
        t += "\n| probe traffic (one PvD, one family) | per probe | per hour at 1 s | at 10 s | at 300 s |\n";
        t += "| --- | ---: | ---: | ---: | ---: |\n";
        let hour = |per: f64, interval: f64| per * 3600.0 / interval;
        let _ = writeln!(
            t,
            "| packets (both ways, {} probes) | {:.1} | {:.0} | {:.0} | {:.0} |",
            tr.probes,
            tr.packets_per_probe(),
            hour(tr.packets_per_probe(), 1.0),
            hour(tr.packets_per_probe(), 10.0),
            hour(tr.packets_per_probe(), 300.0),
        );
        let kib = |b: f64| b / 1024.0;
        let _ = writeln!(
            t,
            "| bytes (IP, both ways) | {:.0} B | {:.0} KiB | {:.0} KiB | {:.1} KiB |",
            tr.bytes_per_probe(),
            kib(hour(tr.bytes_per_probe(), 1.0)),
            kib(hour(tr.bytes_per_probe(), 10.0)),
            kib(hour(tr.bytes_per_probe(), 300.0)),
        );
        t
    }

    /// The maps' memlock per instance, measured and projected to other
    /// CPU counts; then per map.
    pub fn memory_table(&self) -> String {
        let mib = |b: u64| format!("{:.2} MiB", b as f64 / 1048576.0);
        let mut t = String::new();
        if self.memory.is_empty() {
            return t;
        }
        t += "| policies | PvDs | measured |";
        for n in CPU_COUNTS {
            let _ = write!(t, " {n} CPUs |");
        }
        t += "\n| ---: | ---: | ---: |";
        t += &" ---: |".repeat(CPU_COUNTS.len());
        t += "\n";
        for r in &self.memory {
            if let Some(e) = &r.error {
                let _ = writeln!(t, "| {} | {} | failed: {e} |", r.policies, r.pvds);
                continue;
            }
            let _ = write!(
                t,
                "| {} | {} | {} ({} possible CPUs) |",
                r.policies,
                r.pvds,
                mib(r.measured()),
                r.possible_cpus
            );
            for n in CPU_COUNTS {
                let _ = write!(t, " {} |", mib(r.projected(n)));
            }
            t += "\n";
        }
        let ok: Vec<&MemoryRow> = self.memory.iter().filter(|r| r.error.is_none()).collect();
        if let Some(first) = ok.first() {
            t += "\n| map | type | flags | max_entries |";
            for r in &ok {
                let _ = write!(t, " {} policies |", r.policies);
            }
            t += "\n| --- | ---: | ---: | ---: |";
            t += &" ---: |".repeat(ok.len());
            t += "\n";
            for (i, m) in first.maps.iter().enumerate() {
                let _ = write!(
                    t,
                    "| {} | {} | {:#x} | {} |",
                    m.name, m.map_type, m.map_flags, m.max_entries
                );
                for r in &ok {
                    let _ = write!(
                        t,
                        " {} |",
                        r.maps.get(i).map_or("–".into(), |m| mib(m.bytes))
                    );
                }
                t += "\n";
            }
        }
        t
    }

    pub fn scale_table(&self) -> String {
        let mut t = String::new();
        t += "| PvDs | policies | config | start → ready | link down → flag cleared | reconcile (link down) | reconcile (link up, incl. `ip`) | daemon CPU per flap | CPU when idle | RSS (peak) | map memory | in map |\n";
        t += "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
        for r in &self.scale {
            if let Some(e) = &r.error {
                let e = e.replace('\n', " ").replace('|', "/");
                let e: String = e.chars().take(160).collect();
                let _ = writeln!(
                    t,
                    "| {} | {} | {:.1} MB | **failed**: {e} | | | | | | | | |",
                    r.pvds,
                    count_label(r.policies),
                    r.config_bytes as f64 / 1e6,
                );
                continue;
            }
            let med = |v: &[f64]| percentile(&sorted(v), 50.0);
            let max = |v: &[f64]| sorted(v).last().copied().unwrap_or(f64::NAN);
            let _ = writeln!(
                t,
                "| {} | {} | {:.1} MB | {} | {} | {} (max {}) | {} | {:.0} ms | {:.0} % | {:.1} MiB ({:.1}) | {:.1} MiB | {} |",
                r.pvds,
                count_label(r.policies),
                r.config_bytes as f64 / 1e6,
                ms(r.start.as_secs_f64() * 1e3),
                ms(med(&r.flag_ms)),
                ms(med(&r.down_ms)),
                ms(max(&r.down_ms)),
                ms(med(&r.up_ms)),
                med(&r.cpu_ms_per_flap),
                r.idle_cpu_pct,
                r.rss_kib as f64 / 1024.0,
                r.peak_rss_kib as f64 / 1024.0,
                r.map_bytes() as f64 / 1048576.0,
                r.in_map,
            );
        }
        t += "\nThe admin verbs against the same daemons, the CLI's whole run:\n\n";
        t += "| PvDs | policies |";
        for verb in super::scale::ADMIN_VERBS {
            let _ = write!(t, " `mif {verb}` |");
        }
        t += "\n| ---: | ---: |";
        t += &" ---: |".repeat(super::scale::ADMIN_VERBS.len());
        t += "\n";
        for r in self.scale.iter().filter(|r| r.error.is_none()) {
            let _ = write!(t, "| {} | {} |", r.pvds, count_label(r.policies));
            for verb in super::scale::ADMIN_VERBS {
                match r.verbs.iter().find(|(v, _)| *v == verb) {
                    Some((_, Ok(took))) => {
                        let _ = write!(t, " {} |", ms(took.as_secs_f64() * 1e3));
                    }
                    Some((_, Err(e))) => {
                        let e: String = e.replace(['\n', '|'], " ").chars().take(80).collect();
                        let _ = write!(t, " **failed**: {e} |");
                    }
                    None => t += " – |",
                }
            }
            t += "\n";
        }
        t
    }

    /// The whole text printed on stdout.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "mif-bench{}: {} rounds × {} batches, {} CPUs, kernel {}, load {}\n",
            if self.smoke { " --smoke" } else { "" },
            self.rounds,
            self.batches,
            self.machine.nproc,
            self.machine.kernel,
            self.machine.loadavg
        );
        out += &self.cost_table();
        out += "\n";
        out += &self.guard_table();
        out += "\n";
        out += &self.depth_table();
        out += "\n";
        out += &self.prog_table();
        out += "\n";
        out += &self.reaction_table();
        out += "\n";
        out += &self.vpn_table();
        out += &self.validation_table();
        out += "\n";
        out += &self.dns_table();
        out += "\n";
        out += &self.api_table();
        out += "\n";
        out += &self.memory_table();
        out += "\n";
        out += &self.scale_table();
        out += "\n";
        for line in self.targets() {
            let _ = writeln!(out, "{}", line.text());
        }
        out
    }
}

/// A markdown table of latencies in milliseconds: one row per series, with
/// its count, p50, p90, p99 and maximum.
fn latency_table(start: &str, count: &str, rows: &[(&str, &Vec<f64>)]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "| {start} | {count} | p50 | p90 | p99 | max |");
    t += "| --- | ---: | ---: | ---: | ---: | ---: |\n";
    for (what, v) in rows {
        let s = sorted(v);
        let _ = writeln!(
            t,
            "| {what} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            s.len(),
            percentile(&s, 50.0),
            percentile(&s, 90.0),
            percentile(&s, 99.0),
            s.last().copied().unwrap_or(f64::NAN),
        );
    }
    t
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.2} ms")
    }
}

/// One target of the issue, checked against the numbers.
pub struct Target {
    pub name: String,
    pub met: Option<bool>,
    pub detail: String,
}

/// A target judged on each of the scale rows `rows` by `judge` (whether
/// the row meets it, and what it measured; `None`: not measured): met when
/// every row meets it, not run without rows.
fn scale_target<'a>(
    name: &str,
    rows: impl Iterator<Item = &'a ScaleRow>,
    judge: impl Fn(&ScaleRow) -> Option<(bool, String)>,
) -> Target {
    let mut details = Vec::new();
    let mut met = None;
    for r in rows {
        let verdict = r.error.is_none().then(|| judge(r)).flatten();
        met = Some(met.unwrap_or(true) && verdict.as_ref().is_some_and(|(ok, _)| *ok));
        let detail = verdict.map_or("not measured".into(), |(_, detail)| detail);
        details.push(format!("{} PvDs: {detail}", r.pvds));
    }
    Target {
        name: name.into(),
        met,
        detail: if details.is_empty() {
            "not run (smoke)".into()
        } else {
            details.join(", ")
        },
    }
}

impl Target {
    pub fn text(&self) -> String {
        let verdict = match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "n/a",
        };
        format!("[{verdict}] {}: {}", self.name, self.detail)
    }
}

impl Report {
    pub fn targets(&self) -> Vec<Target> {
        let (a, b) = (Variant::None, Variant::Mif(0));
        let mut out = Vec::new();

        let crr = self.ratio(Op::TcpCrr, b, a);
        out.push(Target {
            name: "(b)/(a) ≤ 1.05 on TCP_CRR".into(),
            met: crr.map(|r| r <= 1.05),
            detail: crr.map_or("not measured".into(), |r| format!("{r:.3}")),
        });

        // Issue 18: the programs' own run time per socket, (b), UDP.
        out.push(self.per_socket_target(b));

        // Issue 18: up to 1,000 policies in at most 8 MiB, whatever the CPUs.
        let memory = self
            .memory
            .iter()
            .filter(|r| r.error.is_none() && r.policies <= 1_000)
            .max_by_key(|r| r.policies);
        let most = CPU_COUNTS.iter().copied().max().unwrap_or(1);
        out.push(Target {
            name: format!("kernel map memory ≤ 8 MiB with ≤ 1,000 policies on {most} CPUs"),
            met: memory.map(|r| r.projected(most) <= 8 << 20),
            detail: memory.map_or("not measured".into(), |r| {
                format!(
                    "{} policies: {:.2} MiB ({:.2} MiB measured on {} CPUs)",
                    r.policies,
                    r.projected(most) as f64 / 1048576.0,
                    r.measured() as f64 / 1048576.0,
                    r.possible_cpus
                )
            }),
        });

        let mut details = Vec::new();
        let mut all = Some(true);
        for op in self.ops().into_iter().filter(|op| per_packet(*op)) {
            let Some(rs) = self.ratio_summary(op, b, a) else {
                all = None;
                continue;
            };
            let r = rs.median;
            // The spread of the per-round ratios is the noise.
            let noise = ((rs.p75 - rs.p25) / 2.0).max(0.02);
            let ok = (r - 1.0).abs() <= noise;
            all = all.map(|x| x && ok);
            details.push(format!("{}: {r:.3} (noise ±{noise:.3})", op.name()));
        }
        out.push(Target {
            name: "per-packet (b)/(a) = 1.00 ± noise".into(),
            met: all,
            detail: details.join(", "),
        });

        let mut details = Vec::new();
        let mut all = Some(true);
        for op in self.ops().into_iter().filter(|op| !per_packet(*op)) {
            for &n in &self.others {
                let Some(r) = self.ratio(op, Variant::Mif(n), b) else {
                    continue;
                };
                all = all.map(|x| x && r <= 1.05);
                details.push(format!("{} +{}: {r:.3}", op.name(), count_label(n)));
            }
        }
        out.push(Target {
            name: "(c)/(b) ≤ 1.05".into(),
            met: all,
            detail: details.join(", "),
        });

        let mut details = Vec::new();
        let mut all = Some(true);
        for op in self.ops() {
            let Some(r) = self.ratio(op, b, Variant::Nft(0)) else {
                continue;
            };
            all = all.map(|x| x && r < 1.0);
            details.push(format!("{}: {r:.3}", op.name()));
        }
        out.push(Target {
            name: "mif faster than nftables on every row ((b)/(d) < 1)".into(),
            met: all,
            detail: details.join(", "),
        });

        if let Some(r) = &self.reaction {
            for (what, v) in [("flag", &r.flag_ms), ("connection", &r.conn_ms)] {
                let p99 = percentile(&sorted(v), 99.0);
                let kernel = percentile(&sorted(&r.kernel_ms), 99.0);
                out.push(Target {
                    name: format!("reaction p99 < 5 ms ({what})"),
                    met: (!v.is_empty()).then_some(p99 < 5.0),
                    detail: format!(
                        "{p99:.2} ms over {} flaps (the kernel's own link down: p99 {kernel:.2} ms)",
                        v.len()
                    ),
                });
            }
        }

        if let Some(r) = &self.vpn {
            let p99 = |v: &[f64]| percentile(&sorted(v), 99.0);
            let flag = p99(&r.flag_ms);
            out.push(Target {
                name: "reaction p99 < 5 ms (VPN flag)".into(),
                met: (!r.flag_ms.is_empty()).then_some(flag < 5.0),
                detail: format!(
                    "{flag:.2} ms over {} tunnel losses (client killed with {}; tun0 reported down: p99 {:.2} ms; the strict app's first refused socket(): p99 {:.2} ms)",
                    r.flag_ms.len(),
                    r.signal,
                    p99(&r.notified_ms),
                    p99(&r.refused_ms),
                ),
            });
        }

        // Issue 18: the per-domain forwarder under load.
        if let Some(d) = &self.dns {
            let rate = 20_000;
            let added = d.added_p50_us(rate);
            out.push(Target {
                name: "DNS forwarder adds ≤ 50 µs at p50 (20k queries/s)".into(),
                met: added.map(|a| a <= 50.0),
                detail: match added {
                    Some(a) => format!("{a:+.0} µs"),
                    None => "not run at 20k queries/s (smoke)".into(),
                },
            });
            let lost = d.row(super::dns::DnsPath::Forwarder, rate).map(|r| r.lost);
            out.push(Target {
                name: "no DNS query lost through the forwarder at 20k queries/s".into(),
                met: lost.map(|n| n == 0),
                detail: match lost {
                    Some(n) => format!("{n} lost"),
                    None => "not run at 20k queries/s (smoke)".into(),
                },
            });
        }
        // Issue 15: Happy Eyeballs gets past a dead first PvD within the
        // attempt delay (the second attempt's round trip is in both).
        if let Some(a) = &self.api {
            if let (Some(ok), Some(dead)) = (a.row(false), a.row(true)) {
                let extra = dead.percentile_ms(50.0) - ok.percentile_ms(50.0);
                let delay = super::api::ATTEMPT_DELAY_MS as f64;
                out.push(Target {
                    name: format!(
                        "mif_connect past a black-holed first PvD within the attempt delay ({delay:.0} ms, p50)"
                    ),
                    met: Some(extra <= delay + 5.0),
                    detail: format!(
                        "{extra:+.1} ms against healthy ({:.1} → {:.1} ms)",
                        ok.percentile_ms(50.0),
                        dead.percentile_ms(50.0)
                    ),
                });
            }
        }
        let big = |r: &&ScaleRow| r.policies >= 100_000;
        out.push(scale_target(
            "100,000 policies reconciled in under 2 s",
            self.scale.iter().filter(big),
            |r| {
                let worst = *sorted(&r.down_ms).last()?;
                Some((
                    worst < 2000.0,
                    format!("{} (worst of {})", ms(worst), r.down_ms.len()),
                ))
            },
        ));
        // Issue 18: the daemon's own memory, once ready (its peak, reached
        // while the config is parsed, is shown alongside).
        out.push(scale_target(
            "daemon RSS ≤ 64 MiB with 100k policies",
            self.scale.iter().filter(big),
            |r| {
                let mib = |kib: u64| kib as f64 / 1024.0;
                Some((
                    r.rss_kib <= 64 * 1024,
                    format!(
                        "{:.1} MiB (peak {:.1} MiB)",
                        mib(r.rss_kib),
                        mib(r.peak_rss_kib)
                    ),
                ))
            },
        ));
        // Issue 18: a link change does work proportional to what changed.
        out.push(scale_target(
            "link change with 100k policies reconciled in ≤ 10 ms",
            self.scale.iter().filter(big),
            |r| {
                let median = *sorted(&r.down_ms).get(r.down_ms.len() / 2)?;
                Some((median <= 10.0, format!("{} (median)", ms(median))))
            },
        ));
        // Issue 18: start-up to `ready`.
        out.push(scale_target(
            "start-up ≤ 300 ms with 1 policy, ≤ 1.5 s with 100k",
            self.scale
                .iter()
                .filter(|r| r.policies == 1 || r.policies >= 100_000),
            |r| {
                let limit = if r.policies == 1 { 0.3 } else { 1.5 };
                let start = r.start.as_secs_f64();
                Some((
                    start <= limit,
                    format!("{} policies: {start:.2} s (≤ {limit} s)", r.policies),
                ))
            },
        ));
        out
    }

    /// `mif_sock_create` ≤ 150 ns per socket() and `mif_connect4` ≤ 250 ns
    /// per connect() of variant `b`, from the kernel's BPF statistics.
    fn per_socket_target(&self, b: Variant) -> Target {
        let ns = |op: Op, program: &str| {
            (self.prog_times.iter())
                .find(|p| p.variant == b && p.op == op)?
                .programs
                .iter()
                .find(|(name, _, _)| name == program)
                .map(|(_, _, ns)| *ns)
        };
        // Beside each, the empty program on its hook (see `floor`),
        // measured for the same operation in runs of its own.
        let measured = [
            (Op::Socket, "mif_sock_create", 150.0),
            (Op::UdpConnect, "mif_connect4", 250.0),
        ]
        .map(|(op, program, limit)| {
            let empty = super::floor::empty_beside(program).and_then(|e| ns(op, e));
            (program, ns(op, program), limit, empty)
        });
        let met = measured
            .iter()
            .map(|(_, ns, limit, _)| ns.map(|ns| ns <= *limit))
            .try_fold(true, |all, m| m.map(|m| all && m));
        let detail = measured
            .iter()
            .map(|(program, ns, limit, empty)| match ns {
                Some(ns) => {
                    let empty = empty
                        .map(|e| format!("; an empty program beside it {e:.0} ns"))
                        .unwrap_or_default();
                    format!("{program}: {ns:.0} ns (≤ {limit:.0}{empty})")
                }
                None => format!("{program}: not measured"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        Target {
            name: "per socket, the programs' own run time: mif_sock_create ≤ 150 ns, \
                   mif_connect4 ≤ 250 ns"
                .into(),
            met,
            detail,
        }
    }
}

/// docs/bench-policies.svg: cost per operation against the number of other
/// policies, mif against nftables, baseline and SO_MARK as flat lines. Two
/// panels: socket()+close() and TCP_CRR.
pub fn svg(report: &Report) -> String {
    let (w, h) = (860.0, 380.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r##"<rect width="{w}" height="{h}" fill="#fff"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">Cost per operation vs. number of other policies (median, p25–p75 bars)</text>"#,
        w / 2.0
    );
    for (i, op) in [Op::Socket, Op::TcpCrr].into_iter().enumerate() {
        panel(
            &mut s,
            report,
            op,
            60.0 + i as f64 * 420.0,
            50.0,
            340.0,
            260.0,
        );
    }
    // Legend.
    let legend = [
        ("#1f77b4", "", "mif: (b), (c)"),
        ("#d62728", "", "nftables: (d)"),
        ("#555", "6 4", "(a) no steering"),
        ("#2ca02c", "2 3", "(e) SO_MARK"),
    ];
    for (i, (color, dash, label)) in legend.iter().enumerate() {
        let x = 80.0 + i as f64 * 190.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{x2}" y2="{y}" stroke="{color}" stroke-width="2.5" stroke-dasharray="{dash}"/><text x="{tx}" y="{ty}">{label}</text>"#,
            y = h - 22.0,
            x2 = x + 30.0,
            tx = x + 36.0,
            ty = h - 18.0
        );
    }
    s += "</svg>\n";
    s
}

fn panel(s: &mut String, report: &Report, op: Op, x0: f64, y0: f64, pw: f64, ph: f64) {
    let xs: Vec<usize> = std::iter::once(0)
        .chain(report.others.iter().copied())
        .collect();
    let series = |mk: fn(usize) -> Variant| -> Vec<Option<Summary>> {
        xs.iter().map(|&n| report.summary(op, mk(n))).collect()
    };
    let mif = series(Variant::Mif);
    let nft = series(Variant::Nft);
    let base = report.summary(op, Variant::None);
    let somark = report.summary(op, Variant::SoMark);
    // The axis follows the medians; a wide quartile bar is cut at the frame.
    let all: Vec<f64> = mif
        .iter()
        .chain(nft.iter())
        .chain([&base, &somark])
        .flatten()
        .map(|s| s.median)
        .collect();
    let top = all.iter().copied().fold(0.0, f64::max) * 1.3;
    let top = if top > 0.0 { nice_ceiling(top) } else { 1.0 };
    let scale = if top >= 10_000.0 { 1000.0 } else { 1.0 };
    let unit = if scale > 1.0 { "µs" } else { "ns" };
    let y = |v: f64| y0 + ph - v.clamp(0.0, top) / top * ph;
    let x = |i: usize| x0 + 30.0 + i as f64 * (pw - 60.0) / (xs.len().max(2) - 1) as f64;

    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{}</text>"#,
        x0 + pw / 2.0,
        y0 - 8.0,
        op_title(op)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
    );
    for k in 0..=4 {
        let v = top * k as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{yy:.1}" x2="{x1}" y2="{yy:.1}" stroke="#eee"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{label}</text>"##,
            yy = y(v),
            x1 = x0 + pw,
            tx = x0 - 6.0,
            ty = y(v) + 4.0,
            label = format_tick(v / scale),
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{tx}" y="{ty}" text-anchor="middle" transform="rotate(-90 {tx} {ty})">{unit} per operation</text>"#,
        tx = x0 - 44.0,
        ty = y0 + ph / 2.0
    );
    for (i, &n) in xs.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x(i),
            y0 + ph + 16.0,
            if n == 0 { "0".into() } else { count_label(n) }
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">other policies in the map / nft set</text>"#,
        x0 + pw / 2.0,
        y0 + ph + 32.0
    );
    for (flat, color, dash) in [(base, "#555", "6 4"), (somark, "#2ca02c", "2 3")] {
        if let Some(f) = flat {
            let _ = writeln!(
                s,
                r#"<line x1="{x0}" y1="{yy:.1}" x2="{x1}" y2="{yy:.1}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>"#,
                yy = y(f.median),
                x1 = x0 + pw
            );
        }
    }
    for (pts, color) in [(&mif, "#1f77b4"), (&nft, "#d62728")] {
        let line: Vec<String> = pts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|p| format!("{:.1},{:.1}", x(i), y(p.median))))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5"/>"#,
            line.join(" ")
        );
        for (i, p) in pts.iter().enumerate() {
            if let Some(p) = p {
                let _ = writeln!(
                    s,
                    r#"<line x1="{cx}" y1="{y1:.1}" x2="{cx}" y2="{y2:.1}" stroke="{color}"/><circle cx="{cx}" cy="{cy:.1}" r="3.5" fill="{color}"/>"#,
                    cx = x(i),
                    y1 = y(p.p25),
                    y2 = y(p.p75),
                    cy = y(p.median)
                );
            }
        }
    }
}

fn nice_ceiling(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn format_tick(v: f64) -> String {
    if v >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// `DATAGRAM` is in a title above; keep the constant and the text together.
const _: () = assert!(DATAGRAM == 64);
