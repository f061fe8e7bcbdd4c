//! `cargo xtask bench [--smoke]`: builds mif and the benchmark, then runs
//! `mif-bench` (see tests/src/bench and docs/benchmarks.md).
//!
//! The full run uses release builds and rewrites docs/benchmarks.md and
//! docs/bench-policies.svg. The smoke run (for CI) uses the dev profile,
//! which `cargo xtask test` has already built, takes seconds, checks that
//! every part runs and prints the table, and asserts nothing about timings.
use std::path::PathBuf;
use std::process::Command;

use crate::run_command;

pub fn run(smoke: bool) -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let (profile_flag, profile_dir) = if smoke {
        (None, "debug")
    } else {
        (Some("--release"), "release")
    };
    let mut build = Command::new(env!("CARGO"));
    build.current_dir(&root).args([
        "build",
        "--package",
        "mif-userspace",
        "--package",
        "mif-tests",
        "--bins",
    ]);
    build.args(profile_flag);
    run_command(&mut build)?;

    // Run copies: a build in the same target directory while the benchmark
    // runs (it takes minutes) must not swap binaries under it.
    let built = target.join(profile_dir);
    let bins = target.join("bench-bin");
    std::fs::create_dir_all(&bins)?;
    for bin in ["mif", "mif-bench", "lab-peer"] {
        let dest = bins.join(bin);
        let _ = std::fs::remove_file(&dest);
        std::fs::copy(built.join(bin), &dest)?;
    }
    let mut bench = Command::new(bins.join("mif-bench"));
    bench
        .current_dir(&root)
        .env("MIF_BIN", bins.join("mif"))
        .env("MIF_LAB_PEER", bins.join("lab-peer"));
    if smoke {
        bench.arg("--smoke");
    } else {
        bench.arg("--docs").arg(root.join("docs"));
    }
    run_command(&mut bench)
}
