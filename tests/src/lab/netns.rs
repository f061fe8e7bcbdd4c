//! Named network namespaces and the `ip` tool that configures them.
//!
//! Everything goes through `ip -n NS ...` rather than `ip netns exec`:
//! `-n` only switches the network namespace, while `exec` also remounts
//! /sys, which is irrelevant for configuration and confusing in logs.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Where `ip netns add` pins a namespace; opening this file gives an fd for
/// setns(2).
pub(crate) fn ns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Runs `ip [-n ns] args...` and returns its stdout; on failure the error
/// carries ip's stderr, which is what explains it.
pub(crate) fn ip<S: AsRef<OsStr>>(ns: Option<&str>, args: &[S]) -> Result<String> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.args(args);
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Gives namespace `ns` a service address of each family on its loopback
/// (where every lab peer lives) and brings `lo` up.
pub(crate) fn serve_on_loopback(ns: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<()> {
    let (v4, v6) = (format!("{v4}/32"), format!("{v6}/128"));
    ip(Some(ns), &["addr", "add", &v4, "dev", "lo"])?;
    ip(Some(ns), &["addr", "add", &v6, "dev", "lo", "nodad"])?;
    ip(Some(ns), &["link", "set", "lo", "up"])?;
    Ok(())
}

/// Creates a named namespace. Fails if the name is taken: it then belongs to
/// someone else and must not be reused (or later deleted) by this lab.
pub(crate) fn add(name: &str) -> Result<()> {
    if ns_path(name).exists() {
        bail!("network namespace {name} already exists");
    }
    ip(None, &["netns", "add", name])?;
    Ok(())
}

pub(crate) fn delete(name: &str) -> Result<()> {
    if !ns_path(name).exists() {
        return Ok(());
    }
    ip(None, &["netns", "del", name])?;
    Ok(())
}
