//! One lab of two networks and the ways of (not) steering the benchmark's
//! load to wwan0, switched in place so that variants can be interleaved
//! round by round:
//!
//! - (a) nothing: no programs, no rules, no nftables;
//! - (b) the mif daemon with the benchmark's cgroup's policy (→ wwan0, and
//!   the policies of the [`Variant::Depth`] cgroups and of (f)'s cgroup),
//!   (c) the same with N synthetic policies of other cgroups in the map;
//! - (d) nftables: a `type route` output chain that sets the mark from a
//!   `socket cgroupv2` map (the benchmark's cgroup plus N others, each a real
//!   cgroup since nft resolves paths), masquerade on wwan0 (the socket's
//!   source was chosen by the main table before the mark re-routed it), and
//!   mif's tables and rules with the `fwmark` rules moved first (see
//!   [`Rules::FwmarkFirst`]);
//! - (e) the application sets SO_MARK itself, with mif's rules and tables;
//! - (f) the same daemon as (b), the load in a cgroup of its own (`strict`,
//!   the benchmark's level) whose policy is strict with (b)'s preferences:
//!   every packet passes the egress guard's whole check;
//! - (g) the same daemon, the load in a cgroup no policy covers (`plain`,
//!   the benchmark's level), while (f)'s strict policy exists on its
//!   sibling: what unsteered traffic pays for a strict policy elsewhere on
//!   the host. Its traffic leaves by wlan0, as (a)'s.
//!
//! (b), (c), (f) and (g) share one daemon and its config, so switching
//! among them restarts nothing.
//!
//! mif's routing is captured from a real daemon once at the start and
//! replayed for (d) and (e), so all three steer with exactly the same
//! rules. Each nftables size is loaded once as a *dormant* table (no hooks)
//! and woken only for its own runs; the NAT table, which would turn on
//! conntrack for the whole namespace, exists only during (d).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::daemon::{policy_toml, BenchDaemon};
use super::kmaps::PinnedMaps;
use crate::lab::{cgroup2_mount, Lab};

/// Interfaces of the benchmark's lab: unsteered traffic leaves by the
/// first, steered traffic by the second.
pub const NETWORKS: [&str; 2] = ["wlan0", "wwan0"];
const NFT_NAT_TABLE: &str = "mifbench_nat";
const DAEMON_TIMEOUT: Duration = Duration::from_secs(60);
const NFT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    None,
    /// mif with this many other (synthetic) policies.
    Mif(usize),
    /// nftables with this many other cgroups in its map.
    Nft(usize),
    SoMark,
    /// mif as in (b), the load in a cgroup of this level (the benchmark's
    /// own is level 2) with a policy of its own: the policy walk starts at
    /// level 31 and spends one helper call per level from there down to
    /// the process's, so its cost shows against the level.
    Depth(usize),
    /// mif as in (b), the load in a cgroup whose policy is strict: its
    /// packets pass the egress guard (the strict-pass cost).
    Strict,
    /// mif as in (b), the load in a cgroup without a policy while (f)'s
    /// strict policy exists on another cgroup.
    Unsteered,
    /// mif as in (b), the load in a cgroup without a policy choosing wwan0
    /// itself for every socket (the MIF API's `SOL_MIF`).
    Chosen,
}

/// Cgroup levels of the [`Variant::Depth`] experiment (the deepest the
/// walk looks at is `MAX_CGROUP_DEPTH - 1` = 31).
pub const DEPTHS: [usize; 3] = [12, 22, 31];

/// (f)'s cgroup below the lab's (level 2, as the benchmark's), under a
/// strict policy.
const STRICT_CGROUP: &str = "strict";
/// (g)'s cgroup below the lab's (level 2), under no policy.
const PLAIN_CGROUP: &str = "plain";

impl Variant {
    /// The letter of the list.
    pub fn letter(self) -> char {
        match self {
            Variant::None => 'a',
            Variant::Mif(0) => 'b',
            Variant::Mif(_) => 'c',
            Variant::Nft(_) => 'd',
            Variant::SoMark => 'e',
            Variant::Depth(_) => 'b',
            Variant::Strict => 'f',
            Variant::Unsteered => 'g',
            Variant::Chosen => 'h',
        }
    }

    /// Which network the benchmark's traffic must leave by.
    pub fn network(self) -> &'static str {
        match self {
            Variant::None | Variant::Unsteered => NETWORKS[0],
            _ => NETWORKS[1],
        }
    }
}

/// `10k`, `100k`, `1500`.
pub fn count_label(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.letter();
        match *self {
            Variant::None => write!(f, "({l}) none"),
            Variant::Mif(0) => write!(f, "({l}) mif"),
            Variant::Mif(n) => write!(f, "({l}) mif +{}", count_label(n)),
            Variant::Nft(0) => write!(f, "({l}) nftables"),
            Variant::Nft(n) => write!(f, "({l}) nftables +{}", count_label(n)),
            Variant::SoMark => write!(f, "({l}) SO_MARK"),
            Variant::Depth(level) => write!(f, "({l}) mif, cgroup level {level}"),
            Variant::Strict => write!(f, "({l}) mif strict"),
            Variant::Unsteered => write!(f, "({l}) mif, no policy"),
            Variant::Chosen => write!(f, "({l}) mif, chosen (SOL_MIF)"),
        }
    }
}

/// `w1/w2/.../w{level-1}` below the lab's cgroup: a cgroup of `level`.
fn depth_rel(level: usize) -> String {
    (1..level)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join("/")
}

/// Busy time of the whole machine (user, nice, system, irq, softirq), in
/// clock ticks, from /proc/stat.
fn busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum()
}

/// Waits (up to 2 s) until the machine is nearly idle: a switch leaves
/// work behind (a stopped daemon's maps and programs are freed by kernel
/// workers, nft and ip exit), which would land on the next measurement.
fn settle() {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    std::thread::sleep(Duration::from_millis(50));
    loop {
        let before = busy_ticks();
        std::thread::sleep(Duration::from_millis(100));
        // 100 ms is 10 ticks of one CPU: at most a third of one CPU busy.
        if busy_ticks() - before <= 3 || std::time::Instant::now() > deadline {
            return;
        }
    }
}

/// mif's routing as a daemon installed it, replayed with `ip -batch`.
#[derive(Debug, Clone, Default)]
struct Routing {
    /// (family flag, selector, priority)
    rules: Vec<(&'static str, String, u32)>,
    /// (family flag, route)
    routes: Vec<(&'static str, String)>,
}

/// Which of mif's rules are installed, and in which order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rules {
    Off,
    /// Exactly mif's: `from <PvD address>` first, then `fwmark`.
    Mif,
    /// The `fwmark` rules moved before the source rules. nftables marks a
    /// packet after the socket's source address was chosen by the main
    /// table; with mif's order the source rule would send the re-routed
    /// packet straight back to that network.
    FwmarkFirst,
}

impl Routing {
    fn rule_priority(&self, selector: &str, prio: u32, order: Rules) -> u32 {
        let first = self.rules.iter().map(|r| r.2).min().unwrap_or(prio);
        match order {
            Rules::FwmarkFirst if selector.contains("fwmark") => first - 1,
            _ => prio,
        }
    }
}

pub struct Testbed<'lab> {
    pub lab: &'lab Lab,
    pub bench_cgroup: PathBuf,
    bench_rel: String,
    /// (level, directory) of the depth experiment's cgroups.
    depth_cgroups: Vec<(usize, PathBuf)>,
    /// (f)'s cgroup, under a strict policy.
    strict_cgroup: PathBuf,
    /// (g)'s cgroup, under no policy.
    plain_cgroup: PathBuf,
    /// How many sibling cgroups `o<i>` exist (for nftables and the scale test).
    others_created: usize,
    daemon: Option<(BenchDaemon<'lab>, PinnedMaps)>,
    routing: Routing,
    rules: Rules,
    nft_loaded: Vec<usize>,
    nft_awake: Option<usize>,
    /// Whether (f)'s strict policy is set (see [`Testbed::set_strict`]).
    strict_on: bool,
    /// The mark mif gives wwan0's sockets (what SO_MARK and nft set).
    pub steer_mark: u32,
    pub other_mark: u32,
    work_dir: PathBuf,
}

impl<'lab> Testbed<'lab> {
    /// Creates the benchmark's cgroup, captures mif's routing and marks from
    /// one daemon run, and leaves the lab in state (a).
    pub fn new(lab: &'lab Lab) -> Result<Self> {
        let bench_cgroup = lab.create_cgroup("bench")?;
        let bench_rel = format!("{}/bench", lab.cgroup_rel());
        // The lab's cgroup is level 1: level L is L - 1 components below it.
        let depth_cgroups = DEPTHS
            .iter()
            .map(|&level| Ok((level, lab.create_cgroup(&depth_rel(level))?)))
            .collect::<Result<_>>()?;
        let strict_cgroup = lab.create_cgroup(STRICT_CGROUP)?;
        let plain_cgroup = lab.create_cgroup(PLAIN_CGROUP)?;
        let work_dir = std::env::temp_dir().join(format!("mif-bench-{}", lab.host_ns_name()));
        std::fs::create_dir_all(&work_dir)?;
        let mut tb = Self {
            lab,
            bench_cgroup,
            bench_rel,
            depth_cgroups,
            strict_cgroup,
            plain_cgroup,
            others_created: 0,
            daemon: None,
            routing: Routing::default(),
            rules: Rules::Off,
            nft_loaded: Vec::new(),
            nft_awake: None,
            strict_on: false,
            steer_mark: 0,
            other_mark: 0,
            work_dir,
        };
        tb.start_daemon()?;
        tb.capture_routing()?;
        tb.stop_daemon()?;
        Ok(tb)
    }

    /// The policies of the daemon's variants ((b), (c), (f), (g)): the
    /// benchmark's cgroup, those of the depth experiment and (f)'s strict
    /// one (the same preferences); (g)'s cgroup has none.
    /// (c) writes its synthetic policies straight into the daemon's
    /// policy map, which is sized at start for the policies found then:
    /// the config reserves the largest map for them.
    pub fn mif_config(&self) -> String {
        let prefer = [NETWORKS[1], NETWORKS[0]];
        let mut toml = "[limits]\npolicy_capacity = 131072\n\n".to_string();
        toml += &policy_toml(&self.bench_rel, &prefer);
        for &level in &DEPTHS {
            let rel = format!("{}/{}", self.lab.cgroup_rel(), depth_rel(level));
            toml += &policy_toml(&rel, &prefer);
        }
        toml
    }

    /// Sets (f)'s strict policy from the CLI, or removes it: it exists only
    /// while (f) or (g) runs, so that (b) and (c) measure a host without
    /// strict policies (whose guards then are nowhere).
    fn set_strict(&mut self, on: bool) -> Result<()> {
        if self.strict_on == on {
            return Ok(());
        }
        let Some((daemon, _)) = &self.daemon else {
            return Ok(());
        };
        let cgroup = format!("{}/{STRICT_CGROUP}", self.lab.cgroup_rel());
        let pin_dir = daemon.instance.pin_dir.display().to_string();
        let [first, second] = [NETWORKS[1], NETWORKS[0]];
        let prefer = format!("{first},{second}");
        let args: Vec<&str> = if on {
            vec![
                "policy",
                "set",
                &cgroup,
                "--prefer",
                &prefer,
                "--strict",
                "--pin-dir",
                &pin_dir,
            ]
        } else {
            vec!["policy", "del", &cgroup, "--pin-dir", &pin_dir]
        };
        let out = crate::mif::run_mif(self.lab, &args)?;
        if !out.status.success() {
            bail!(
                "mif {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        self.strict_on = on;
        Ok(())
    }

    /// The cgroup `variant`'s load runs in.
    pub fn worker_cgroup(&self, variant: Variant) -> &Path {
        match variant {
            Variant::Depth(level) => self
                .depth_cgroups
                .iter()
                .find(|(l, _)| *l == level)
                .map_or(&self.bench_cgroup, |(_, p)| p),
            Variant::Strict => &self.strict_cgroup,
            Variant::Unsteered | Variant::Chosen => &self.plain_cgroup,
            _ => &self.bench_cgroup,
        }
    }

    fn start_daemon(&mut self) -> Result<()> {
        let daemon = BenchDaemon::start(self.lab, &self.mif_config(), DAEMON_TIMEOUT)?;
        let maps = PinnedMaps::open(&daemon.instance.pin_dir)?;
        self.daemon = Some((daemon, maps));
        Ok(())
    }

    fn stop_daemon(&mut self) -> Result<()> {
        // A CLI policy outlives the daemon (its state file): gone with it.
        self.set_strict(false)?;
        match self.daemon.take() {
            Some((daemon, _)) => daemon.stop(),
            None => Ok(()),
        }
    }

    /// The running daemon and its maps (variants (b) and (c)).
    pub fn daemon(&mut self) -> Option<(&BenchDaemon<'lab>, &mut PinnedMaps)> {
        self.daemon.as_mut().map(|(d, m)| (&*d, m))
    }

    fn capture_routing(&mut self) -> Result<()> {
        let (_, maps) = self.daemon.as_ref().context("no daemon")?;
        let mark_of = |name: &str| -> Result<u32> {
            let index = maps
                .pvd_index(name)
                .with_context(|| format!("no PvD {name} in the maps"))?;
            maps.pvd_mark(index)
                .with_context(|| format!("PvD {name} has no entry"))
        };
        self.steer_mark = mark_of(NETWORKS[1])?;
        self.other_mark = mark_of(NETWORKS[0])?;
        let mut routing = Routing::default();
        for family in ["-4", "-6"] {
            for line in self.lab.ip_host(&[family, "rule", "show"])?.lines() {
                let Some((prio, spec)) = line.split_once(':') else {
                    continue;
                };
                let prio = prio.trim();
                if matches!(prio, "0" | "32766" | "32767") {
                    continue;
                }
                let prio: u32 = prio.parse().with_context(|| format!("rule {line:?}"))?;
                routing.rules.push((family, spec.trim().to_owned(), prio));
            }
            let routes = self
                .lab
                .ip_host(&[family, "route", "show", "table", "all", "proto", "241"])?;
            for line in routes.lines().map(str::trim).filter(|l| !l.is_empty()) {
                // The filter hides the protocol from the listing.
                routing.routes.push((family, format!("{line} proto 241")));
            }
        }
        if routing.rules.is_empty() || routing.routes.is_empty() {
            bail!("the daemon installed no rules or routes: {routing:?}");
        }
        self.routing = routing;
        Ok(())
    }

    fn ip_batch(&self, family: &str, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let path = self.work_dir.join(format!("ip{family}.batch"));
        std::fs::write(&path, lines.join("\n") + "\n")?;
        let path = path.display().to_string();
        self.lab
            .ip_host(&[family, "-batch", &path])
            .with_context(|| format!("ip {family} -batch of:\n{}", lines.join("\n")))?;
        Ok(())
    }

    fn set_rules(&mut self, want: Rules) -> Result<()> {
        if want == self.rules {
            return Ok(());
        }
        for family in ["-4", "-6"] {
            let rules: Vec<_> = self
                .routing
                .rules
                .iter()
                .filter(|r| r.0 == family)
                .collect();
            let mut lines = Vec::new();
            if self.rules != Rules::Off {
                for (_, sel, prio) in &rules {
                    let prio = self.routing.rule_priority(sel, *prio, self.rules);
                    lines.push(format!("rule del {sel} priority {prio}"));
                }
                if want == Rules::Off {
                    // Route by route: `ip -6 route flush` skips an
                    // `unreachable default` of metric 2^32-1 (it takes it
                    // for the kernel's null entry), and mif's tables end in
                    // one.
                    let routes = self.routing.routes.iter().filter(|r| r.0 == family);
                    lines.extend(routes.map(|(_, r)| format!("route del {r}")));
                }
            }
            if self.rules == Rules::Off {
                let routes = self.routing.routes.iter().filter(|r| r.0 == family);
                lines.extend(routes.map(|(_, r)| format!("route add {r}")));
            }
            if want != Rules::Off {
                for (_, sel, prio) in &rules {
                    let prio = self.routing.rule_priority(sel, *prio, want);
                    lines.push(format!("rule add {sel} priority {prio}"));
                }
            }
            self.ip_batch(family, &lines)?;
        }
        self.rules = want;
        Ok(())
    }

    /// Makes sure cgroups `o0 .. o{n-1}` exist next to the benchmark's.
    pub fn ensure_others(&mut self, n: usize) -> Result<()> {
        for i in self.others_created..n {
            self.lab.create_cgroup(&format!("o{i}"))?;
        }
        self.others_created = self.others_created.max(n);
        Ok(())
    }

    pub fn other_rel(&self, i: usize) -> String {
        format!("{}/o{i}", self.lab.cgroup_rel())
    }

    /// Runs `nft -f` on `text` in the lab's host namespace.
    fn nft(&self, text: &str) -> Result<()> {
        let path = self.work_dir.join("rules.nft");
        std::fs::write(&path, text)?;
        let cmd = self
            .lab
            .command_in(None, "nft", ["-f", &path.display().to_string()])?;
        let out = self.lab.output(cmd, NFT_TIMEOUT)?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let err: String = err.lines().take(5).collect::<Vec<_>>().join("\n");
            bail!("nft -f failed ({}): {err}", out.status);
        }
        Ok(())
    }

    /// Loads the dormant nftables table for `others` other cgroups; returns
    /// how long `nft -f` took (nft resolves every cgroup path).
    pub fn load_nft(&mut self, others: usize) -> Result<Duration> {
        if self.nft_loaded.contains(&others) {
            return Ok(Duration::ZERO);
        }
        self.ensure_others(others)?;
        // nft looks cgroup paths up below /sys/fs/cgroup itself.
        let mount = cgroup2_mount()?;
        let Ok(below) = mount.strip_prefix("/sys/fs/cgroup") else {
            bail!(
                "cgroup2 is mounted at {}, outside /sys/fs/cgroup where nft looks",
                mount.display()
            );
        };
        let nft_path = |rel: &str| {
            Path::new(below)
                .join(rel.trim_start_matches('/'))
                .display()
                .to_string()
        };
        let level = self.bench_rel.matches('/').count();
        let mut elements = vec![format!(
            "\"{}\" : {:#x}",
            nft_path(&self.bench_rel),
            self.steer_mark
        )];
        elements.extend((0..others).map(|i| {
            format!(
                "\"{}\" : {:#x}",
                nft_path(&self.other_rel(i)),
                self.other_mark
            )
        }));
        let text = format!(
            "table inet mifbench{others} {{\n  flags dormant;\n  map cg2mark {{\n    \
             typeof socket cgroupv2 level {level} : meta mark\n    elements = {{\n      {}\n    }}\n  }}\n  \
             chain out {{\n    type route hook output priority mangle; policy accept;\n    \
             meta mark set socket cgroupv2 level {level} map @cg2mark\n  }}\n}}\n",
            elements.join(",\n      ")
        );
        let started = std::time::Instant::now();
        self.nft(&text)?;
        self.nft_loaded.push(others);
        Ok(started.elapsed())
    }

    fn set_nft(&mut self, awake: Option<usize>) -> Result<()> {
        if awake == self.nft_awake {
            return Ok(());
        }
        let mut text = String::new();
        if let Some(old) = self.nft_awake {
            text += &format!(
                "add table inet mifbench{old} {{ flags dormant; }}\ndelete table ip {NFT_NAT_TABLE}\n"
            );
        }
        if let Some(new) = awake {
            self.load_nft(new)?;
            text += &format!(
                "add table inet mifbench{new}\ntable ip {NFT_NAT_TABLE} {{\n  chain post {{\n    \
                 type nat hook postrouting priority srcnat; policy accept;\n    \
                 oifname \"{}\" masquerade\n  }}\n}}\n",
                NETWORKS[1]
            );
        }
        self.nft(&text)?;
        self.nft_awake = awake;
        Ok(())
    }

    /// Puts the lab in `variant`'s state, changing only what differs.
    pub fn enter(&mut self, variant: Variant) -> Result<()> {
        let (daemon, rules, nft, synthetic) = match variant {
            Variant::None => (false, Rules::Off, None, 0),
            Variant::Mif(n) => (true, Rules::Off, None, n),
            Variant::Depth(_) | Variant::Strict | Variant::Unsteered | Variant::Chosen => {
                (true, Rules::Off, None, 0)
            }
            Variant::Nft(n) => (false, Rules::FwmarkFirst, Some(n), 0),
            Variant::SoMark => (false, Rules::Mif, None, 0),
        };
        let before = (
            self.daemon.is_some(),
            self.rules,
            self.nft_awake,
            self.daemon.as_ref().map(|(_, m)| m.synthetic()),
            self.strict_on,
        );
        if nft != self.nft_awake {
            self.set_nft(None)?;
        }
        if !daemon {
            self.stop_daemon()?;
        }
        self.set_rules(rules)?;
        if daemon && self.daemon.is_none() {
            self.start_daemon()?;
        }
        if let Some((_, maps)) = self.daemon.as_mut() {
            maps.set_synthetic(synthetic)?;
        }
        self.set_strict(matches!(variant, Variant::Strict | Variant::Unsteered))?;
        self.set_nft(nft)?;
        let after = (
            self.daemon.is_some(),
            self.rules,
            self.nft_awake,
            self.daemon.as_ref().map(|(_, m)| m.synthetic()),
            self.strict_on,
        );
        if before != after {
            settle();
        }
        Ok(())
    }

    /// The host namespace's rules, mif's tables and nftables ruleset, for
    /// error messages.
    pub fn diagnose(&self) -> String {
        let mut out = format!("captured routing: {:#?}\n", self.routing);
        for args in [
            &["-4", "rule", "show"][..],
            &["-4", "route", "show", "table", "20101"][..],
            &["-4", "route", "get", "203.0.113.1", "mark", "0x2000000"][..],
        ] {
            out += &format!("ip {}:\n", args.join(" "));
            out += &self
                .lab
                .ip_host(args)
                .unwrap_or_else(|e| format!("{e:#}\n"));
        }
        let nft = self
            .lab
            .command_in(None, "nft", ["list", "ruleset"])
            .and_then(|cmd| self.lab.output(cmd, Duration::from_secs(30)));
        match nft {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout);
                // Not the thousands of map elements.
                let short: Vec<&str> = text.lines().filter(|l| !l.contains(" : 0x")).collect();
                out += &format!("nft list ruleset:\n{}\n", short.join("\n"));
            }
            Err(e) => out += &format!("nft list ruleset: {e:#}\n"),
        }
        out
    }

    /// Back to (a), removing everything the testbed installed.
    pub fn reset(&mut self) -> Result<()> {
        self.enter(Variant::None)?;
        let tables: String = self
            .nft_loaded
            .drain(..)
            .map(|n| format!("delete table inet mifbench{n}\n"))
            .collect();
        if !tables.is_empty() {
            self.nft(&tables)?;
        }
        Ok(())
    }
}

impl Drop for Testbed<'_> {
    fn drop(&mut self) {
        // The namespace goes with the lab; only the daemon (pins, bpffs) and
        // the scratch directory outlive it.
        let _ = self.stop_daemon();
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}
