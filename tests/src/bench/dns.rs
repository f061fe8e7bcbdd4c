//! What per-domain DNS selection costs (RFC 6731): names of a PvD's
//! declared domains go to that PvD's resolvers through the daemon's
//! forwarder, whatever PvD the application uses. Measured with a real load
//! generator, Debian's `dnsperf`, against asking the same resolver
//! directly, in one run.
//!
//! The lab: wwan0's router runs dnsmasq (without query logging, which
//! would be most of its work at these rates), answering `corp.lab` from
//! its own configuration; wwan0 declares `domains = ["corp.lab"]`. Per
//! rate, two runs of `dnsperf` ask `host.corp.lab A` over UDP:
//!
//! - *direct*: from a cgroup without a policy, to wwan0's resolver;
//! - *forwarder*: from a cgroup whose policy prefers wlan0 with
//!   `dns = "pvd"`, to wlan0's resolver, as the application would: the
//!   kernel sends the query to the daemon's forwarder on loopback, which
//!   sends it to wwan0's resolver by the name's domain and the answer back.
//!
//! Every response's latency is taken from `dnsperf -v`, so percentiles are
//! exact; a rate of 0 lets dnsperf go as fast as it can (100 queries
//! outstanding), which measures throughput. What the forwarder adds is
//! the difference of the medians, within the same run.
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::daemon::BenchDaemon;
use crate::lab::{Lab, Resolver, CORP_DOMAIN};

/// The forwarder's port for this benchmark (the tests use 5400).
const FORWARDER_PORT: u16 = 5453;

/// Rates (queries per second, 0 for as fast as possible) and the length
/// of each run.
#[derive(Debug, Clone)]
pub struct DnsPlan {
    pub rates: Vec<u64>,
    pub seconds: u64,
}

/// Which way the queries went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsPath {
    Direct,
    Forwarder,
}

/// A rate as the report names it.
pub fn rate_label(rate: u64) -> String {
    if rate == 0 {
        "as fast as possible".to_string()
    } else {
        format!("{rate} queries/s")
    }
}

impl DnsPath {
    pub fn label(self) -> &'static str {
        match self {
            DnsPath::Direct => "direct to the resolver",
            DnsPath::Forwarder => "through mif's forwarder",
        }
    }
}

/// One dnsperf run.
#[derive(Debug, Clone)]
pub struct DnsRow {
    pub path: DnsPath,
    /// Asked rate, queries per second; 0: as fast as possible.
    pub rate: u64,
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    /// Responses per second, as dnsperf counted them.
    pub qps: f64,
    /// Response latencies, microseconds, sorted.
    pub latencies_us: Vec<f64>,
}

impl DnsRow {
    pub fn percentile_us(&self, p: f64) -> f64 {
        super::stats::percentile(&self.latencies_us, p)
    }
}

#[derive(Debug, Clone, Default)]
pub struct DnsBench {
    pub rows: Vec<DnsRow>,
}

impl DnsBench {
    pub fn row(&self, path: DnsPath, rate: u64) -> Option<&DnsRow> {
        self.rows.iter().find(|r| r.path == path && r.rate == rate)
    }

    /// Median latency through the forwarder minus direct, at `rate`, µs.
    pub fn added_p50_us(&self, rate: u64) -> Option<f64> {
        let direct = self.row(DnsPath::Direct, rate)?;
        let forwarded = self.row(DnsPath::Forwarder, rate)?;
        Some(forwarded.percentile_us(50.0) - direct.percentile_us(50.0))
    }
}

pub fn run(lab: &Lab, plan: &DnsPlan, start_timeout: Duration) -> Result<DnsBench> {
    let resolver = lab.start_resolver_unlogged(1)?;
    let (wlan, wwan) = (lab.network(0).clone(), lab.network(1).clone());
    let app = lab.create_cgroup("dns-app")?;
    let plain = lab.create_cgroup("dns-plain")?;
    let toml = format!(
        "[dns]\nforwarder_port = {FORWARDER_PORT}\n\
         [[pvd]]\nname = \"wlan0\"\ndns = [\"{}\"]\n\
         [[pvd]]\nname = \"wwan0\"\ndns = [\"{}\"]\ndomains = [\"{CORP_DOMAIN}\"]\n\
         [[policy]]\ncgroup = \"{}/dns-app\"\nprefer = [\"wlan0\"]\ndns = \"pvd\"\n",
        wlan.gateway_v4,
        wwan.gateway_v4,
        lab.cgroup_rel()
    );
    let daemon = BenchDaemon::start(lab, &toml, start_timeout)?;
    let name = format!("host.{CORP_DOMAIN}");
    // The forwarder's path really ends at wwan0's resolver.
    let out = lab.dig_name(Some(&app), wlan.gateway_v4.into(), false, &name, "A")?;
    if !Resolver::Network(1).answered(&String::from_utf8_lossy(&out.stdout)) {
        bail!(
            "{name} asked of wlan0's resolver from the policy's cgroup was not answered by \
             wwan0's: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    std::fs::create_dir_all(lab.scratch_root())?;
    let queries = lab.scratch_root().join("dns-queries.txt");
    std::fs::write(&queries, format!("{name} A\n"))?;
    let mut bench = DnsBench::default();
    for &rate in &plan.rates {
        for path in [DnsPath::Direct, DnsPath::Forwarder] {
            super::check_interrupted()?;
            eprintln!("mif-bench: dns, {}, {}", path.label(), rate_label(rate));
            let (cgroup, server) = match path {
                DnsPath::Direct => (&plain, wwan.gateway_v4),
                DnsPath::Forwarder => (&app, wlan.gateway_v4),
            };
            bench.rows.push(dnsperf(
                lab,
                cgroup,
                &server.to_string(),
                &queries,
                rate,
                plan.seconds,
                path,
            )?);
        }
    }
    daemon.stop()?;
    // The next part starts resolvers of its own on the same addresses.
    resolver.stop()?;
    Ok(bench)
}

fn dnsperf(
    lab: &Lab,
    cgroup: &Path,
    server: &str,
    queries: &Path,
    rate: u64,
    seconds: u64,
    path: DnsPath,
) -> Result<DnsRow> {
    let mut args = vec![
        "-s".to_string(),
        server.into(),
        "-d".into(),
        queries.display().to_string(),
        "-l".into(),
        seconds.to_string(),
        // One socket, one thread: the application's view, not a farm's.
        "-c".into(),
        "1".into(),
        "-T".into(),
        "1".into(),
        "-q".into(),
        "100".into(),
        "-t".into(),
        "1".into(),
        "-v".into(),
    ];
    if rate > 0 {
        args.extend(["-Q".into(), rate.to_string()]);
    }
    let cmd = lab.command_in(Some(cgroup), "dnsperf", &args)?;
    let out = lab.output(cmd, Duration::from_secs(seconds + 30))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "dnsperf failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |label: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no {label:?} in dnsperf's output"))
    };
    let mut latencies_us: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("> NOERROR "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| s * 1e6)
        .collect();
    latencies_us.sort_by(f64::total_cmp);
    Ok(DnsRow {
        path,
        rate,
        sent: field("Queries sent:")? as u64,
        completed: field("Queries completed:")? as u64,
        lost: field("Queries lost:")? as u64,
        qps: field("Queries per second:")?,
        latencies_us,
    })
}
