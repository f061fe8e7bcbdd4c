//! The MIF API as applications use it: `tests/python/mif_client.py`, over
//! the Python module over libmif, run as an unprivileged user in the lab.
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    lab::{Lab, LabChild},
    mif::Daemon,
};

/// The user the clients run as: `nobody`, no capability, no group.
pub const UNPRIVILEGED: u32 = 65534;

/// `$MIF_LIBRARY`, or libmif built (once per test process) from this
/// workspace, as [`crate::mif::mif_path`] builds mif.
pub fn libmif_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MIF_LIBRARY") {
        return Ok(path.into());
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_libmif().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_libmif() -> Result<PathBuf> {
    crate::mif::build_artifact(&["--package", "mif-capi"], "libmif_capi.so")
}

/// `mif-capi/examples/mif-pvd.c` built as a C program would be: against
/// libmif installed by `cargo xtask api` (into `target/api-e2e`), with the
/// flags its pkg-config file gives. Once per test process.
pub fn c_example() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_c_example().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_c_example() -> Result<PathBuf> {
    let prefix = workspace().join("target/api-e2e");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(workspace())
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "api",
            "--prefix",
        ])
        .arg(&prefix)
        .stdout(Stdio::null())
        .status()
        .context("running cargo xtask api")?;
    if !status.success() {
        bail!("cargo xtask api failed: {status}");
    }
    let pkg_config = std::process::Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .args(["--cflags", "--libs", "mif"])
        .output()
        .context("running pkg-config")?;
    if !pkg_config.status.success() {
        bail!(
            "pkg-config mif: {}",
            String::from_utf8_lossy(&pkg_config.stderr)
        );
    }
    let flags = String::from_utf8(pkg_config.stdout)?;
    let exe = prefix.join("mif-pvd");
    let out = std::process::Command::new("cc")
        .args(["-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(workspace().join("mif-capi/examples/mif-pvd.c"))
        .args(flags.split_whitespace())
        .output()
        .context("running cc")?;
    if !out.status.success() {
        bail!("cc mif-pvd.c: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(exe)
}

/// Runs the C example as the unprivileged user, in `cgroup`, against
/// `daemon`: its stdout, or its stderr as the error.
pub fn run_c_example(
    lab: &Lab,
    daemon: &Daemon<'_>,
    cgroup: Option<&Path>,
    args: &[&str],
) -> Result<String> {
    let exe = c_example()?;
    let lib = exe.parent().context("the example's prefix")?.join("lib");
    let mut cmd = lab.command_in_as(cgroup, UNPRIVILEGED, &exe, args)?;
    cmd.env("LD_LIBRARY_PATH", lib)
        .env("MIF_SOCKET", control_socket(daemon));
    let out = lab.output(cmd, std::time::Duration::from_secs(30))?;
    if !out.status.success() {
        bail!(
            "mif-pvd {args:?} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
}

/// The daemon's control socket (as `mif::control::socket_path` names it).
pub fn control_socket(daemon: &Daemon<'_>) -> PathBuf {
    crate::mif::control_socket_of(&daemon.instance.pin_dir)
}

/// The client's command line, environment set for `daemon`.
fn client_command(
    lab: &Lab,
    daemon: &Daemon<'_>,
    cgroup: Option<&Path>,
    args: &[&str],
) -> Result<std::process::Command> {
    let script = workspace().join("tests/python/mif_client.py");
    let mut all = vec![script.display().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    // Debian's interpreter: one under /root (pyenv) is not the
    // unprivileged user's to run.
    let mut cmd = lab.command_in_as(cgroup, UNPRIVILEGED, "/usr/bin/python3", all)?;
    cmd.env("PYTHONPATH", workspace().join("mif-capi/python"))
        .env("MIF_LIBRARY", libmif_path()?)
        .env("MIF_SOCKET", control_socket(daemon))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("PYTHONHOME");
    Ok(cmd)
}

/// Runs the client to completion; its one JSON line.
pub fn client(
    lab: &Lab,
    daemon: &Daemon<'_>,
    cgroup: Option<&Path>,
    args: &[&str],
) -> Result<Value> {
    let cmd = client_command(lab, daemon, cgroup, args)?;
    let out = lab.output(cmd, std::time::Duration::from_secs(30))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "mif_client.py {args:?} failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_str(stdout.trim())
        .with_context(|| format!("mif_client.py {args:?} printed {stdout:?}"))
}

/// Starts the client, its stdin and stdout piped (for `watch`, `process
/// --hold`).
pub fn spawn_client(
    lab: &Lab,
    daemon: &Daemon<'_>,
    cgroup: Option<&Path>,
    args: &[&str],
) -> Result<LabChild> {
    let mut cmd = client_command(lab, daemon, cgroup, args)?;
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    lab.spawn(cmd)
}
