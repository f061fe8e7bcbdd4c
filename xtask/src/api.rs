//! `cargo xtask api`: the MIF API's C library as a C program uses it, under
//! a prefix: `lib/libmif.so.0` (the SONAME) and its `libmif.so` link,
//! `include/mif.h`, `lib/pkgconfig/mif.pc`, and the Python module in
//! `share/mif/python/mif.py`.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// Builds mif-api (release) and installs it under `prefix`
/// (`target/api` by default); returns the prefix.
pub fn install(prefix: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    crate::cargo(&["build", "--release", "--package", "mif-api"])?;
    let prefix = match prefix {
        Some(p) => p,
        None => std::env::current_dir()?.join("target/api"),
    };
    let lib = prefix.join("lib");
    for dir in [
        lib.join("pkgconfig"),
        prefix.join("include"),
        prefix.join("share/mif/python"),
    ] {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    copy(
        Path::new("target/release/libmif_api.so"),
        &lib.join("libmif.so.0"),
    )?;
    let link = lib.join("libmif.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink("libmif.so.0", &link)
        .with_context(|| format!("linking {}", link.display()))?;
    copy(
        Path::new("mif-api/include/mif.h"),
        &prefix.join("include/mif.h"),
    )?;
    copy(
        Path::new("mif-api/python/mif.py"),
        &prefix.join("share/mif/python/mif.py"),
    )?;
    let template = fs::read_to_string("mif-api/mif.pc.in").context("reading mif-api/mif.pc.in")?;
    let pc = template
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    let pc_path = lib.join("pkgconfig/mif.pc");
    fs::write(&pc_path, pc).with_context(|| format!("writing {}", pc_path.display()))?;
    Ok(prefix)
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}
