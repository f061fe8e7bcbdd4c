//! Per-connection and per-packet costs of every variant, interleaved: each
//! round visits every variant once, so whatever the machine's neighbours do
//! hits all variants alike. The orders form a Williams design: over the
//! rounds every variant follows every other equally often, so what one
//! variant leaves behind (TIME_WAIT sockets, conntrack entries, a daemon's
//! freed maps) burdens no single other variant. A round gives one sample
//! per (operation, variant): the median of its batches.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::floor::EmptyPrograms;
use super::kmaps::{program_stats, StatsGuard};
use super::stats::median;
use super::testbed::{Testbed, Variant};
use super::worker::{Op, CRR_PORT, CRR_PORTS};
use crate::lab::INTERNET_V4;

#[derive(Debug, Clone)]
pub struct Params {
    /// Rounds whose samples are kept, after `warmup` discarded ones.
    pub rounds: usize,
    pub warmup: usize,
    pub batches: usize,
    /// Iterations per batch (milliseconds for streams).
    pub iters: Vec<(Op, u64)>,
    /// CPU for the load generator (the servers get another), if pinning.
    pub worker_cpu: Option<usize>,
}

impl Params {
    /// The iteration counts of `ops`.
    pub fn iter_of(&self, ops: &[Op]) -> Vec<(Op, u64)> {
        self.iters
            .iter()
            .copied()
            .filter(|(op, _)| ops.contains(op))
            .collect()
    }
}

#[derive(Debug, Default)]
pub struct Results {
    pub variants: Vec<Variant>,
    /// Samples in ns per operation, one per round.
    pub samples: BTreeMap<(Op, Variant), Vec<f64>>,
    /// Runs redone because the daemon had reconciled the synthetic
    /// policies away mid-run.
    pub redone: usize,
    pub elapsed: Duration,
}

pub fn run(tb: &mut Testbed<'_>, variants: &[Variant], p: &Params, exe: &Path) -> Result<Results> {
    let started = Instant::now();
    let mut results = Results {
        variants: variants.to_vec(),
        ..Results::default()
    };
    let total = p.warmup + p.rounds;
    if variants.len() > usize::from(CRR_PORTS) {
        bail!("more variants than CRR ports");
    }
    for round in 0..total {
        let warm = round < p.warmup;
        eprint!(
            "mif-bench: round {}/{}{}:",
            round + 1,
            total,
            if warm { " (warm-up)" } else { "" }
        );
        let order = williams_order(variants.len(), round).into_iter();
        for v in order.map(|i| variants[i]) {
            super::check_interrupted()?;
            eprint!(" {}", v.letter());
            let port = CRR_PORT + variants.iter().position(|x| *x == v).unwrap_or(0) as u16;
            let sample = sample(tb, v, port, p, exe, &mut results.redone)
                .with_context(|| format!("round {}, variant {v}", round + 1))?;
            if !warm {
                for (op, ns) in sample {
                    results.samples.entry((op, v)).or_default().push(ns);
                }
            }
        }
        eprintln!();
    }
    tb.enter(Variant::None)?;
    results.elapsed = started.elapsed();
    Ok(results)
}

/// Rounds of one whole Williams design of `n` variants: `n`, or `2n` when
/// `n` is odd (see [`williams_order`]).
pub fn design_rounds(n: usize) -> usize {
    if n % 2 == 1 {
        2 * n
    } else {
        n
    }
}

/// Round `round`'s order of `n` variants (indices) in a Williams design: a
/// Latin square whose rows, taken over `n` rounds (`2n` when `n` is odd,
/// the second `n` reversed), put every variant right after every other
/// equally often. A plain rotation would always put the same variant
/// before each one.
fn williams_order(n: usize, round: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    // 0, 1, n-1, 2, n-2, …: consecutive differences take every value once.
    let base = (0..n).map(|i| match i {
        0 => 0,
        _ if i % 2 == 1 => i.div_ceil(2),
        _ => n - i / 2,
    });
    let mut order: Vec<usize> = base.map(|b| (b + round) % n).collect();
    if n % 2 == 1 && (round / n) % 2 == 1 {
        order.reverse();
    }
    order
}

/// One worker run of every operation in `variant`'s state.
fn sample(
    tb: &mut Testbed<'_>,
    variant: Variant,
    crr_port: u16,
    p: &Params,
    exe: &Path,
    redone: &mut usize,
) -> Result<Vec<(Op, f64)>> {
    for _attempt in 0..3 {
        tb.enter(variant)?;
        let got = run_worker(tb, variant, crr_port, p, exe)?;
        let intact = match tb.daemon() {
            Some((_, maps)) => maps.synthetic_intact(),
            None => true,
        };
        if intact {
            return Ok(got);
        }
        *redone += 1;
    }
    bail!("the daemon kept removing the synthetic policies")
}

/// The depth experiment only needs the hooks' own costs; the guard's
/// variants, (f) and (g), only the per-packet rows: their other rows would
/// be (b)'s per-socket work again (plus, in (f), strict's checks at
/// socket() and connect(), which are not the guard's), at two worker runs'
/// worth of time per round.
pub fn ops_of(variant: Variant, p: &Params) -> Vec<(Op, u64)> {
    let wanted = |op: &Op| match variant {
        Variant::Depth(_) => matches!(op, Op::Socket | Op::UdpConnect),
        Variant::Strict | Variant::Unsteered => op.is_stream(),
        // (h) differs from (b) per socket (its setsockopt), not per packet.
        Variant::Chosen => !op.is_stream(),
        _ => true,
    };
    p.iters
        .iter()
        .copied()
        .filter(|(op, _)| wanted(op))
        .collect()
}

fn run_worker(
    tb: &Testbed<'_>,
    variant: Variant,
    crr_port: u16,
    p: &Params,
    exe: &Path,
) -> Result<Vec<(Op, f64)>> {
    let mut args: Vec<String> = vec![
        "worker".into(),
        "--crr-port".into(),
        crr_port.to_string(),
        "--to".into(),
        INTERNET_V4.to_string(),
        "--expect".into(),
        variant.network().into(),
        "--batches".into(),
        p.batches.to_string(),
    ];
    if let Some(cpu) = p.worker_cpu {
        args.extend(["--cpu".into(), cpu.to_string()]);
    }
    if variant == Variant::SoMark {
        args.extend(["--mark".into(), format!("{:#x}", tb.steer_mark)]);
    }
    if variant == Variant::Chosen {
        args.extend(["--pvd".into(), variant.network().into()]);
    }
    let ops = ops_of(variant, p);
    for (op, n) in &ops {
        args.extend(["--op".into(), format!("{}={n}", op.name())]);
    }
    let cmd = tb
        .lab
        .command_in(Some(tb.worker_cgroup(variant)), exe, &args)?;
    let out = tb.lab.output(cmd, Duration::from_secs(300))?;
    if !out.status.success() {
        bail!(
            "worker failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            tb.diagnose()
        );
    }
    if std::env::var_os("MIF_BENCH_DEBUG").is_some() {
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            eprintln!("  {variant}: {line}");
        }
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut got = Vec::new();
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        let Some(op) = words.next().and_then(Op::parse) else {
            bail!("bad worker line {line:?}");
        };
        let batches: Vec<f64> = words.filter_map(|w| w.parse().ok()).collect();
        got.push((op, median(&batches)));
    }
    if got.len() != ops.len() {
        bail!(
            "worker reported {} of {} ops: {stdout}",
            got.len(),
            ops.len()
        );
    }
    Ok(got)
}

/// In-kernel run time of mif's programs for one operation in one variant.
#[derive(Debug, Clone)]
pub struct ProgTime {
    pub variant: Variant,
    pub op: Op,
    /// (program, runs per operation, ns per run); for a stream the
    /// operation is one write or datagram. Empty: measured, and no program
    /// ran for every other operation (the guard, say, not attached where
    /// the load runs).
    pub programs: Vec<(String, f64, f64)>,
}

/// With BPF run-time statistics on (outside the timed rounds: they cost a
/// little themselves), runs `n` of each operation and reads how long each
/// program ran per invocation; `repeats` times over all variants in turn
/// (switching among them needs no daemon restart), keeping the median.
pub fn program_times(
    tb: &mut Testbed<'_>,
    variants: &[Variant],
    ops: &[(Op, u64)],
    repeats: usize,
    exe: &Path,
) -> Result<Vec<ProgTime>> {
    // (variant, op, program) -> (runs per op, ns per run) per repeat.
    let mut seen: BTreeMap<(Variant, Op, String), Vec<(f64, f64)>> = BTreeMap::new();
    let mut measured: BTreeSet<(Variant, Op)> = BTreeSet::new();
    for _ in 0..repeats {
        for &variant in variants {
            let wanted = ops_of(
                variant,
                &Params {
                    rounds: 1,
                    warmup: 0,
                    batches: 1,
                    iters: ops.to_vec(),
                    worker_cpu: None,
                },
            );
            for (op, n) in wanted {
                super::check_interrupted()?;
                tb.enter(variant)?;
                let pin_dir = tb.daemon().context("no daemon")?.0.instance.pin_dir.clone();
                let params = Params {
                    rounds: 1,
                    warmup: 0,
                    batches: 1,
                    iters: vec![(op, n)],
                    worker_cpu: None,
                };
                // For (b), a second run with empty programs beside mif's
                // (see `floor`): a run of its own, so that mif's figures
                // are those of a run without them.
                let floor_runs: &[bool] = if variant == Variant::Mif(0) {
                    &[false, true]
                } else {
                    &[false]
                };
                for &floor in floor_runs {
                    let empty = floor
                        .then(|| EmptyPrograms::attach(tb.worker_cgroup(variant)))
                        .transpose()?;
                    let read = || -> Result<_> {
                        Ok(if floor {
                            EmptyPrograms::stats()
                        } else {
                            program_stats(&pin_dir)?
                        })
                    };
                    let stats = StatsGuard::enable()?;
                    let before = read()?;
                    let got = run_worker(tb, variant, CRR_PORT, &params, exe)?;
                    let after = read()?;
                    drop(stats);
                    drop(empty);
                    measured.insert((variant, op));
                    let ops_run = if op.is_stream() {
                        // n ms and a warm-up of n/4 + 1 ms, at the measured
                        // time per write or datagram.
                        let ns = got.first().map_or(f64::NAN, |g| g.1);
                        (n + n / 4 + 1) as f64 * 1e6 / ns
                    } else {
                        // The warm-up runs the operation too (a tenth more).
                        n as f64 * 1.1
                    };
                    for (name, time, count) in &after {
                        // A program loaded during the run started at zero.
                        let (t0, c0) = before
                            .iter()
                            .find(|b| &b.0 == name)
                            .map_or((Duration::ZERO, 0), |b| (b.1, b.2));
                        let runs = count.saturating_sub(c0);
                        // Not the route check's one socket and connect (nor,
                        // for a stream, its socket's).
                        if ops_run.is_nan() || (runs as f64) < ops_run / 2.0 {
                            continue;
                        }
                        let ns = time.saturating_sub(t0).as_nanos() as f64 / runs as f64;
                        seen.entry((variant, op, name.clone()))
                            .or_default()
                            .push((runs as f64 / ops_run, ns));
                    }
                }
            }
        }
    }
    let mut out: Vec<ProgTime> = Vec::new();
    for &variant in variants {
        for &(op, _) in ops {
            let programs: Vec<(String, f64, f64)> = seen
                .iter()
                .filter(|((v, o, _), _)| *v == variant && *o == op)
                .map(|((_, _, name), xs)| {
                    let per_op: Vec<f64> = xs.iter().map(|x| x.0).collect();
                    let ns: Vec<f64> = xs.iter().map(|x| x.1).collect();
                    (name.clone(), median(&per_op), median(&ns))
                })
                .collect();
            if measured.contains(&(variant, op)) {
                out.push(ProgTime {
                    variant,
                    op,
                    programs,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::williams_order;
    use std::collections::BTreeMap;

    /// How often each ordered pair (before, after) is adjacent in rounds
    /// `0..rounds`.
    fn adjacent_pairs(n: usize, rounds: usize) -> BTreeMap<(usize, usize), usize> {
        let mut pairs = BTreeMap::new();
        for round in 0..rounds {
            let order = williams_order(n, round);
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                (0..n).collect::<Vec<_>>(),
                "round {round}: {order:?}"
            );
            for w in order.windows(2) {
                *pairs.entry((w[0], w[1])).or_default() += 1;
            }
        }
        pairs
    }

    #[test]
    fn every_variant_follows_every_other_equally_often() {
        for n in 2..=12 {
            let rounds = if n % 2 == 0 { n } else { 2 * n };
            let pairs = adjacent_pairs(n, rounds);
            assert_eq!(pairs.len(), n * (n - 1), "n = {n}: {pairs:?}");
            let counts: Vec<usize> = pairs.values().copied().collect();
            assert!(counts.iter().all(|&c| c == counts[0]), "n = {n}: {pairs:?}");
        }
        assert_eq!(williams_order(1, 5), [0]);
        assert_eq!(super::design_rounds(13), 26);
        assert_eq!(super::design_rounds(12), 12);
        assert_eq!(williams_order(0, 0), Vec::<usize>::new());
    }
}
