//! `mif-bench`: what steering costs, side by side, in one run.
//!
//! On a [`Lab`] of two networks, the benchmark's cgroup is steered to wwan0
//! in five ways (see [`testbed`]): (a) not at all, (b) by mif, (c) by mif
//! with 10,000 and 100,000 other policies in its map, (d) by nftables (with
//! as many other cgroups in its map), (e) by the application's own SO_MARK;
//! and for the strict egress guard's per-packet cost, the same daemon with
//! the load (f) in a cgroup under a strict policy (→ wwan0) and (g) in a
//! cgroup under no policy while that strict policy exists. Load generators
//! run in those cgroups ([`worker`]), servers in the routers; variants are
//! interleaved round by round ([`measure`]). Then the reaction
//! to a lost link ([`reaction`]), that of a strict VPN app to its tunnel
//! going down ([`vpn`]: a real OpenVPN client killed), that of validation
//! to a dead upstream and its probe traffic ([`validation`]), what the
//! per-domain DNS forwarder adds under load ([`dns`]), what Happy Eyeballs
//! across PvDs takes with the first PvD healthy and dead ([`api`]), the kernel memory
//! of the daemon's maps ([`memory`]) and the daemon at scale ([`scale`]).
//!
//! `--smoke` runs every part with tiny counts in seconds and asserts
//! nothing about timings; the full run writes `docs/benchmarks.md` and
//! `docs/bench-policies.svg` when given `--docs DIR` (`cargo xtask bench`
//! does both). For working on it:
//!
//! - `--only costs|reaction|vpn|validation|dns|api|memory|scale` (repeatable) runs only those parts,
//!   `--rounds N` overrides the number of measured rounds and `--others
//!   N,N...` the other policies of (c) and cgroups of (d);
//! - `mif-bench hold a|b|c|d|e|f|g [OTHERS]` builds the lab, puts it in one
//!   variant and waits for Ctrl-C, printing the namespace and the
//!   variant's cgroup to poke at by hand;
//! - `MIF_BENCH_DEBUG=1` makes the workers report the TCP_CRR latency
//!   distribution of every batch (stalls show up there, not in medians).
//!
//! The mif binary is `$MIF_BIN` or built by [`crate::mif::mif_path`]; the
//! lab peer is found by [`lab_peer_path`]. SIGINT and SIGTERM stop the run
//! at the next step and still remove the labs.

mod api;
mod daemon;
mod dns;
mod doc;
mod floor;
mod kmaps;
mod measure;
mod memory;
mod reaction;
mod report;
mod scale;
mod stats;
mod testbed;
mod validation;
mod vpn;
pub mod worker;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::lab::{lab_peer_path, Lab};
use measure::Params;
use report::{Machine, Report};
use testbed::{Testbed, Variant, NETWORKS};
use worker::Op;

pub use report::Report as BenchReport;

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub smoke: bool,
    /// Where to write benchmarks.md and bench-policies.svg.
    pub docs: Option<PathBuf>,
    /// Parts to run (`costs`, `reaction`, `vpn`, `validation`, `memory`,
    /// `scale`); empty: all.
    pub only: Vec<String>,
    /// Overrides the number of measured rounds.
    pub rounds: Option<usize>,
    /// Overrides the other policies of (c) and cgroups of (d).
    pub others: Option<Vec<usize>>,
    /// Overrides the policy counts of the scale part.
    pub scale: Option<Vec<usize>>,
    /// Overrides the number of networks of the scale part's second lab.
    pub networks: Option<usize>,
}

impl Options {
    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // A second signal means "now": skip the cleanup.
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// SIGINT and SIGTERM (CI timeouts) end the run at the next step, through
/// the labs' cleanup, instead of leaving namespaces and cgroups behind.
fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic (and _exit).
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Fails once SIGINT or SIGTERM arrived.
pub(crate) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Everything that differs between the full run and the smoke run.
struct Plan {
    params: Params,
    /// Other policies for (c) and other cgroups for (d).
    others: Vec<usize>,
    flaps: usize,
    /// Losses of the VPN tunnel (client killed, then restarted).
    vpn_rounds: usize,
    /// Policies of the map-memory instances.
    memory_counts: Vec<usize>,
    scale_counts: Vec<usize>,
    scale_flaps: usize,
    /// Networks of the second scale lab.
    big_lab: usize,
    /// Passes of the program-time measurement.
    prog_repeats: usize,
    start_timeout: Duration,
    /// Outages per validation interval, and the traffic window.
    validation: validation::Trials,
    /// The DNS forwarder's load runs.
    dns: dns::DnsPlan,
    /// mif_connect's rounds.
    api: api::ApiPlan,
}

/// The variants of the cost measurement, in the table's order.
fn cost_variants(others: &[usize]) -> Vec<Variant> {
    let mut variants = vec![Variant::None, Variant::Mif(0), Variant::Chosen];
    variants.extend(others.iter().map(|&n| Variant::Mif(n)));
    variants.push(Variant::Nft(0));
    variants.extend(others.iter().map(|&n| Variant::Nft(n)));
    variants.push(Variant::SoMark);
    variants.extend([Variant::Strict, Variant::Unsteered]);
    variants.extend(testbed::DEPTHS.iter().map(|&d| Variant::Depth(d)));
    variants
}

impl Plan {
    fn new(smoke: bool, cpus: usize) -> Self {
        let worker_cpu = (cpus >= 2).then_some(0);
        if smoke {
            return Self {
                params: Params {
                    rounds: 2,
                    warmup: 0,
                    batches: 2,
                    iters: vec![
                        (Op::Socket, 1000),
                        (Op::UdpConnect, 500),
                        (Op::UdpSendto, 1000),
                        (Op::TcpCrr, 50),
                        (Op::TcpStream, 10),
                        (Op::UdpStream, 10),
                    ],
                    worker_cpu,
                },
                others: vec![1_000, 5_000],
                flaps: 5,
                vpn_rounds: 2,
                memory_counts: vec![3, 1_000],
                scale_counts: vec![1, 1_000],
                scale_flaps: 1,
                big_lab: 4,
                prog_repeats: 1,
                start_timeout: Duration::from_secs(60),
                validation: validation::Trials {
                    per_interval: vec![(1, 2)],
                    traffic_window: Duration::from_secs(3),
                },
                dns: dns::DnsPlan {
                    rates: vec![2_000],
                    seconds: 1,
                },
                api: api::ApiPlan {
                    rounds: 1,
                    tries: 2,
                },
            };
        }
        let others = vec![10_000, 100_000];
        Self {
            params: Params {
                // One whole Williams design for the variants (13: an odd
                // number, so 2 × 13 orders, see `measure::williams_order`).
                rounds: measure::design_rounds(cost_variants(&others).len()),
                warmup: 1,
                batches: 3,
                iters: vec![
                    (Op::Socket, 20_000),
                    (Op::UdpConnect, 10_000),
                    (Op::UdpSendto, 20_000),
                    (Op::TcpCrr, 600),
                    (Op::TcpStream, 60),
                    (Op::UdpStream, 60),
                ],
                worker_cpu,
            },
            others,
            flaps: 200,
            // A round (kill, restart of server and client, back through
            // the tunnel) takes about 0.25 s here.
            vpn_rounds: 100,
            memory_counts: vec![3, 1_000],
            scale_counts: vec![1, 10_000, 100_000],
            scale_flaps: 3,
            big_lab: 64,
            prog_repeats: 7,
            start_timeout: Duration::from_secs(1200),
            // An outage at interval 10 takes up to half a minute.
            validation: validation::Trials {
                per_interval: vec![(1, 20), (10, 6)],
                traffic_window: Duration::from_secs(30),
            },
            // Issue 18's rate, then as fast as dnsperf goes.
            dns: dns::DnsPlan {
                rates: vec![20_000, 0],
                seconds: 10,
            },
            // A black-holed try takes about 0.25 s.
            api: api::ApiPlan {
                rounds: 10,
                tries: 10,
            },
        }
    }
}

/// Starts `mif-bench server` in every router of `lab` and waits until
/// each is bound. The lab keeps them (and their stdin) until it drops.
fn start_servers(lab: &Lab, exe: &Path, cpu: Option<usize>) -> Result<()> {
    for i in 0..lab.networks().len() {
        let mut args = vec!["server".to_string()];
        if let Some(cpu) = cpu {
            args.extend(["--cpu".into(), cpu.to_string()]);
        }
        let mut cmd = lab.command_in_router(i, exe, &args)?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let child = lab.spawn(cmd)?;
        let stdout = child.take_stdout().context("server stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.trim() == "ready" => {}
            other => bail!("server in router {i} did not start: {other:?}"),
        }
    }
    Ok(())
}

pub fn run(opts: &Options) -> Result<Report> {
    if !crate::lab::running_as_root() {
        bail!("mif-bench builds network namespaces and cgroups: run it as root");
    }
    catch_signals();
    let started = Instant::now();
    let exe = std::env::current_exe().context("locating mif-bench")?;
    let peer = lab_peer_path()?;
    let machine = Machine::probe();
    let mut plan = Plan::new(opts.smoke, machine.nproc);
    if let Some(others) = &opts.others {
        plan.others = others.clone();
        if !opts.smoke {
            // Still one whole design, of the variants there now are.
            plan.params.rounds = measure::design_rounds(cost_variants(others).len());
        }
    }
    if let Some(rounds) = opts.rounds {
        plan.params.rounds = rounds;
    }
    if let Some(counts) = &opts.scale {
        plan.scale_counts = counts.clone();
    }
    if let Some(networks) = opts.networks {
        plan.big_lab = networks;
    }
    let server_cpu = plan.params.worker_cpu.map(|c| (c + 1) % machine.nproc);
    let mut report = Report {
        smoke: opts.smoke,
        machine,
        rounds: plan.params.rounds,
        warmup: plan.params.warmup,
        batches: plan.params.batches,
        iters: plan.params.iters.clone(),
        others: plan.others.clone(),
        ..Report::default()
    };

    eprintln!("mif-bench: building the lab");
    let lab = Lab::with_peer(&NETWORKS, &peer)?;
    start_servers(&lab, &exe, server_cpu)?;
    let mut tb = Testbed::new(&lab)?;
    if opts.wants("costs") {
        let most = plan.others.iter().copied().max().unwrap_or(0);
        let t = Instant::now();
        tb.ensure_others(most)?;
        report.cgroups_created.push((most, t.elapsed()));
        for n in std::iter::once(0).chain(plan.others.iter().copied()) {
            eprintln!("mif-bench: loading the nftables map with {n} other cgroups");
            let took = tb.load_nft(n)?;
            report.nft_load.push((n, took));
        }
        let variants = cost_variants(&plan.others);
        check_interrupted()?;
        report.results = measure::run(&mut tb, &variants, &plan.params, &exe)?;
        eprintln!("mif-bench: program run times (BPF statistics)");
        let mut traced = vec![Variant::Mif(0)];
        traced.extend(plan.others.iter().map(|&n| Variant::Mif(n)));
        traced.extend(testbed::DEPTHS.iter().map(|&d| Variant::Depth(d)));
        // The guard's run time per packet, with and without a strict policy.
        traced.extend([Variant::Strict, Variant::Unsteered]);
        // The MIF API's setsockopt, per chosen socket.
        traced.push(Variant::Chosen);
        // TCP_CRR for the TCP health watch (`mif_tcp_health`), which runs
        // at a connection's setup and nowhere else.
        let ops: Vec<(Op, u64)> = plan.params.iter_of(&[
            Op::Socket,
            Op::UdpConnect,
            Op::UdpSendto,
            Op::TcpCrr,
            Op::TcpStream,
            Op::UdpStream,
        ]);
        report.prog_times =
            measure::program_times(&mut tb, &traced, &ops, plan.prog_repeats, &exe)?;
    }
    if opts.wants("reaction") {
        eprintln!("mif-bench: reaction, {} link flaps", plan.flaps);
        report.reaction = Some(reaction::run(
            &mut tb,
            plan.flaps,
            &exe,
            plan.params.worker_cpu,
        )?);
    }
    tb.reset()?;
    drop(tb);
    check_interrupted()?;

    if opts.wants("vpn") {
        eprintln!(
            "mif-bench: strict VPN app, {} tunnel losses",
            plan.vpn_rounds
        );
        report.vpn = Some(vpn::run(
            &lab,
            plan.vpn_rounds,
            &exe,
            plan.params.worker_cpu,
        )?);
    }
    check_interrupted()?;

    if opts.wants("validation") {
        report.validation = Some(validation::run(&lab, &plan.validation, plan.start_timeout)?);
    }
    check_interrupted()?;

    if opts.wants("dns") {
        report.dns = Some(dns::run(&lab, &plan.dns, plan.start_timeout)?);
    }
    check_interrupted()?;

    if opts.wants("api") {
        eprintln!("mif-bench: mif_connect, first PvD healthy and black-holed");
        report.api = Some(api::run(&lab, &plan.api, plan.start_timeout, &exe)?);
    }
    check_interrupted()?;

    if opts.wants("memory") {
        report.memory = memory::run(
            &lab,
            &plan.memory_counts,
            NETWORKS[1],
            NETWORKS[0],
            plan.start_timeout,
        )?;
    }
    check_interrupted()?;

    drop(lab);
    check_interrupted()?;

    // Labs of their own: the cost part's 100,000 other cgroups would sit
    // below the attach cgroup, and attaching a program costs the kernel a
    // walk over every cgroup below it (a 1-policy start took 1.2 s instead
    // of 0.3 s). Each row's lab holds the cgroups its policies name.
    if opts.wants("scale") {
        let mut rows = Vec::new();
        for networks in [2, plan.big_lab] {
            eprintln!("mif-bench: building a lab of {networks} networks");
            let (lab, took) = scale::big_lab(networks, &peer)?;
            if networks > 2 {
                report.big_lab = Some((networks, took));
            }
            let names = scale::network_names(networks);
            let more = scale::run(
                &lab,
                &plan.scale_counts,
                (&names[1], &names[0]),
                plan.scale_flaps,
                plan.start_timeout,
                &rows,
                &mut report.cgroups_created,
            )?;
            rows.extend(more);
        }
        report.scale = rows;
    }

    report.total = started.elapsed();
    if let Some(dir) = &opts.docs {
        std::fs::write(dir.join("benchmarks.md"), doc::markdown(&report))
            .with_context(|| format!("writing {}", dir.display()))?;
        std::fs::write(dir.join("bench-policies.svg"), report::svg(&report))?;
    }
    Ok(report)
}

/// `mif-bench hold VARIANT [OTHERS]`: builds the lab, puts it in one
/// variant (`a` to `g`; OTHERS for c and d) and waits for
/// SIGINT, printing how to reach it: for looking at a variant by hand.
fn hold(argv: &[String]) -> Result<()> {
    catch_signals();
    let others: usize = argv.get(1).map_or(Ok(0), |n| n.parse())?;
    let variant = match argv.first().map(String::as_str) {
        Some("a") => Variant::None,
        Some("b") => Variant::Mif(0),
        Some("c") => Variant::Mif(others),
        Some("d") => Variant::Nft(others),
        Some("e") => Variant::SoMark,
        Some("f") => Variant::Strict,
        Some("g") => Variant::Unsteered,
        other => bail!("usage: mif-bench hold a|b|c|d|e|f|g [OTHERS] (got {other:?})"),
    };
    let exe = std::env::current_exe()?;
    let lab = Lab::with_peer(&NETWORKS, lab_peer_path()?)?;
    start_servers(&lab, &exe, None)?;
    let mut tb = Testbed::new(&lab)?;
    tb.ensure_others(others)?;
    tb.enter(variant)?;
    println!(
        "{variant}: host namespace {} (ip -n {0} ...; nsenter --net={}), cgroup {}; SO_MARK {:#x}; Ctrl-C ends",
        lab.host_ns_name(),
        lab.host_ns_path().display(),
        tb.worker_cgroup(variant).display(),
        tb.steer_mark
    );
    while check_interrupted().is_ok() {
        std::thread::sleep(Duration::from_millis(200));
    }
    tb.reset()
}

/// A list of counts, `N[,N...]`, the value of option `option`.
fn counts(option: &str, list: Option<&String>) -> Result<Vec<usize>> {
    let list = list.ok_or_else(|| anyhow!("{option} needs N[,N...]"))?;
    list.split(',')
        .filter(|n| !n.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<usize>, _>>()
        .with_context(|| format!("{option} {list:?}"))
}

/// `mif-bench [--smoke] [--docs DIR]`, `mif-bench worker|watch|server ...`.
pub fn main_with_args(argv: &[String]) -> Result<()> {
    match argv.first().map(String::as_str) {
        Some("worker") => return worker::worker_main(&argv[1..]),
        Some("watch") => return worker::watch_main(&argv[1..]),
        Some("server") => return worker::server_main(&argv[1..]),
        Some("api-connect") => return api::connect_main(&argv[1..]),
        Some("hold") => return hold(&argv[1..]),
        _ => {}
    }
    let mut opts = Options::default();
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smoke" => opts.smoke = true,
            "--rounds" => {
                let n = it
                    .next()
                    .ok_or_else(|| anyhow!("--rounds needs a number"))?;
                opts.rounds = Some(n.parse().with_context(|| format!("--rounds {n:?}"))?);
            }
            "--others" => opts.others = Some(counts(arg, it.next())?),
            "--scale" => opts.scale = Some(counts(arg, it.next())?),
            "--networks" => {
                let n = it
                    .next()
                    .ok_or_else(|| anyhow!("--networks needs a number"))?;
                opts.networks = Some(n.parse().with_context(|| format!("--networks {n:?}"))?);
            }
            "--only" => {
                let part = it.next().ok_or_else(|| anyhow!("--only needs a part"))?;
                if ![
                    "costs",
                    "reaction",
                    "vpn",
                    "validation",
                    "dns",
                    "api",
                    "memory",
                    "scale",
                ]
                .contains(&part.as_str())
                {
                    bail!(
                        "--only takes costs, reaction, vpn, validation, dns, api, memory or scale, not {part:?}"
                    );
                }
                opts.only.push(part.clone());
            }
            "--docs" => {
                opts.docs = Some(
                    it.next()
                        .ok_or_else(|| anyhow!("--docs needs a directory"))?
                        .into(),
                );
            }
            "-h" | "--help" => {
                println!("usage: mif-bench [--smoke] [--only costs|reaction|vpn|validation|dns|api|memory|scale]... [--rounds N] [--others N,N...] [--scale N,N...] [--networks N] [--docs DIR] | hold a|b|c|d|e|f|g [OTHERS]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (usage: mif-bench [--smoke] [--docs DIR])"),
        }
    }
    let report = run(&opts)?;
    print!("{}", report.text());
    Ok(())
}
