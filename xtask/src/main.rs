//! Project chores: `cargo xtask setup | demo | test | fuzz | bench`.
//!
//! Everything the project needs on a fresh Debian machine (as root) is
//! installed here, idempotently: a second run only checks and takes seconds.
mod bench;
mod fuzz;
mod setup;

use std::process::Command;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "mif's chores")]
struct Xtask {
    #[command(subcommand)]
    command: Chore,
}

#[derive(Subcommand)]
enum Chore {
    /// Install what is missing: Debian packages, nightly rust-src,
    /// bpf-linker, cargo-fuzz.
    Setup,
    /// Set up, then run the demo: a throwaway lab of two networks, the daemon
    /// with the bundled example policy, two apps leaving by different networks.
    Demo,
    /// Set up, then check formatting and lints, run every test (unit and
    /// end-to-end in the real kernel; needs root), a short run of every
    /// fuzz target and a smoke run of the benchmark.
    Test,
    /// Set up, then run the fuzz targets in fuzz/ (cargo-fuzz, nightly):
    /// the config parser, the control socket, netlink events, router
    /// advertisement options and the PvD state reducer.
    Fuzz {
        /// How long to fuzz each target.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// One target only (default: all of them).
        target: Option<String>,
    },
    /// Set up, build, and measure what steering costs (needs root): mif
    /// against no steering, nftables and SO_MARK, reaction to a lost link,
    /// the daemon at scale. Rewrites docs/benchmarks.md and
    /// docs/bench-policies.svg; --smoke only checks that it all runs.
    Bench {
        /// Seconds-long run with tiny counts (for CI); no timing assertions.
        #[arg(long)]
        smoke: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Xtask::parse().command {
        Chore::Setup => setup::run(),
        Chore::Demo => {
            setup::run()?;
            cargo(&[
                "build",
                "--package",
                "mif-userspace",
                "--package",
                "mif-tests",
                "--bins",
            ])?;
            cargo(&[
                "run",
                "--quiet",
                "--package",
                "mif-tests",
                "--bin",
                "mif-demo",
            ])
        }
        Chore::Test => {
            setup::run()?;
            cargo(&["fmt", "--all", "--check"])?;
            cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
            // The kernel programs build only for the BPF target; lint them there.
            run_command(Command::new("cargo").current_dir("mif-ebpf").args([
                "+nightly",
                "clippy",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ]))?;
            cargo(&["test", "--", "--test-threads=4"])?;
            // Untrusted inputs must never panic the daemon: a short run of
            // each fuzz target (longer runs: docs/security.md, Fuzzing).
            fuzz::run(CI_FUZZ_SECONDS, None)?;
            // The benchmark is no test, but it must not rot: run every part
            // of it with tiny counts (about a minute, no timing asserted).
            bench::run(true)
        }
        Chore::Fuzz { seconds, target } => {
            setup::run()?;
            fuzz::run(seconds, target.as_deref())
        }
        Chore::Bench { smoke } => {
            setup::run()?;
            bench::run(smoke)
        }
    }
}

/// Seconds per fuzz target in `cargo xtask test`.
const CI_FUZZ_SECONDS: u64 = 20;

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run_command(Command::new(env!("CARGO")).args(args))
}

pub fn run_command(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
