//! Containers with a network namespace of their own (Docker and Podman
//! bridge networks, Kubernetes pods). Their sockets are created in the
//! container's namespace, where mif's programs leave them alone (the marks
//! would not survive the veth into the host anyway). They are steered on
//! the host side instead: their traffic arrives from the container's
//! addresses and is routed (then masqueraded) by the host, so a rule
//! `from <container address> lookup <PvD table>` sends it out by the PvD,
//! and masquerading then gives it the PvD's source address.
//!
//! This module finds, for a cgroup, the addresses of the network
//! namespaces its processes live in, when those are not the daemon's.
use std::{
    collections::BTreeSet,
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// The network namespace inode of `pid`.
fn netns_of(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// The namespaces (by one member pid) that processes of `cgroup` (and its
/// descendants) live in, other than `ours`.
pub fn foreign_namespaces(cgroup: &Path, ours: u64) -> Vec<(u64, u32)> {
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    let mut dirs = vec![cgroup.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                if let Some(ns) = netns_of(pid) {
                    if ns != ours && seen.insert(ns) {
                        found.push((ns, pid));
                    }
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    found
}

/// This process's network namespace inode.
pub fn own_namespace() -> std::io::Result<u64> {
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

/// The global addresses of the network namespace of `pid`, read with
/// rtnetlink from a thread that enters it (the daemon's own threads stay).
pub fn addresses_in_namespace_of(pid: u32) -> anyhow::Result<Vec<IpAddr>> {
    let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
    std::thread::spawn(move || -> anyhow::Result<Vec<IpAddr>> {
        let ns =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("entering the container's namespace")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let netlink = crate::netlink::Netlink::connect()?;
            let interfaces = netlink.interfaces().await?;
            Ok(interfaces
                .into_iter()
                .filter(|i| !i.loopback)
                .flat_map(|i| i.addrs)
                .filter(|a| a.scope == 0 && !a.tentative)
                .map(|a| a.addr)
                .collect())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace reader panicked"))?
}
