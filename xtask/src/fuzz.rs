//! `cargo xtask fuzz`: time-boxed runs of the fuzz targets in `fuzz/`
//! (cargo-fuzz, libFuzzer, AddressSanitizer; nightly). Each run starts from
//! the committed seeds in `fuzz/corpus/<target>/` plus whatever earlier
//! runs on this machine found (`fuzz/target/corpus/<target>/`, where new
//! inputs go, so the committed seeds stay as they are). A crash stops the
//! run with the input saved under `fuzz/artifacts/<target>/`.
use std::{path::Path, process::Command};

use anyhow::{bail, Context as _};

use crate::run_command;

/// Every target, in the order they run.
pub const TARGETS: &[&str] = &[
    "config",
    "control",
    "netlink_events",
    "ra_options",
    "pvd_state",
];

pub fn run(seconds: u64, target: Option<&str>) -> anyhow::Result<()> {
    let targets: Vec<&str> = match target {
        None => TARGETS.to_vec(),
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!("no fuzz target {t:?}; there are: {}", TARGETS.join(", ")),
    };
    // One build of every target first, so the clock below is fuzzing only.
    run_command(fuzz_cmd().args(["build"]))?;
    for target in targets {
        let found = Path::new("fuzz/target/corpus").join(target);
        std::fs::create_dir_all(&found).with_context(|| format!("creating {}", found.display()))?;
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        run_command(
            fuzz_cmd()
                .args(["run", target])
                .arg(&found)
                .arg(Path::new("fuzz/corpus").join(target))
                .args([
                    "--".to_string(),
                    format!("-max_total_time={seconds}"),
                    // Any single input taking this long is a bug too.
                    "-timeout=10".into(),
                    "-rss_limit_mb=4096".into(),
                    "-print_final_stats=1".into(),
                ]),
        )?;
    }
    Ok(())
}

/// `cargo +nightly fuzz ...` from the workspace root (cargo-fuzz finds
/// `fuzz/` there): `-Z sanitizer` needs nightly.
fn fuzz_cmd() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz"]);
    cmd
}
