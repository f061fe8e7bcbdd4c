//! `cargo xtask api`: the MIF API's C library as a C program uses it, under
//! a prefix: `lib/libmif.so.0` (the SONAME) and its `libmif.so` link,
//! `include/mif.h`, `lib/pkgconfig/mif.pc`, and the Python module in
//! `share/mif/python/mif.py`. The Debian package ships the same files in
//! /usr (see `deb`).
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::{target_dir, workspace_root};

/// Builds mif-api (release) and installs it under `prefix`
/// (`target/api` by default); returns the prefix.
pub fn install(prefix: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    crate::cargo(&["build", "--release", "--package", "mif-capi", "--lib"])?;
    let root = workspace_root();
    let prefix = prefix.unwrap_or_else(|| root.join("target/api"));
    let lib = prefix.join("lib");
    for dir in [
        lib.join("pkgconfig"),
        prefix.join("include"),
        prefix.join("share/mif/python"),
    ] {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let built = target_dir().join("release/libmif_capi.so");
    copy(&built, &lib.join("libmif.so.0"))?;
    let link = lib.join("libmif.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink("libmif.so.0", &link)
        .with_context(|| format!("linking {}", link.display()))?;
    copy(
        &root.join("mif-capi/include/mif.h"),
        &prefix.join("include/mif.h"),
    )?;
    copy(
        &root.join("mif-capi/python/mif.py"),
        &prefix.join("share/mif/python/mif.py"),
    )?;
    write_pkg_config(&prefix, &lib.join("pkgconfig/mif.pc"))?;
    Ok(prefix)
}

/// Writes `mif.pc` for libmif installed under `prefix` to `path`. It links
/// `-l:libmif.so.0`, so no development link `libmif.so` is needed (the
/// Debian package ships none).
pub fn write_pkg_config(prefix: &Path, path: &Path) -> anyhow::Result<()> {
    let template = workspace_root().join("mif-capi/mif.pc.in");
    let pc = fs::read_to_string(&template)
        .with_context(|| format!("reading {}", template.display()))?
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    fs::write(path, pc).with_context(|| format!("writing {}", path.display()))
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}
