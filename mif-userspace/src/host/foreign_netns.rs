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
use std::{net::IpAddr, os::unix::fs::MetadataExt as _, path::PathBuf};

use anyhow::Context as _;

/// The network namespace inode of `pid`.
pub fn netns_of(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// A process that lives in a network namespace other than the daemon's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignProcess {
    pub pid: u32,
    /// Inode of its network namespace.
    pub netns: u64,
    /// Its cgroup2 path, relative to the cgroup2 root (`/a/b`).
    pub cgroup: String,
}

/// Every process in a network namespace other than `ours`, with its cgroup.
///
/// One pass over /proc: the cost follows the number of processes on the
/// host, not the number of policies (walking every policy's cgroup subtree
/// each second kept the daemon busy with 100,000 policies, most of them on
/// empty cgroups; see docs/benchmarks.md).
pub fn foreign_processes(ours: u64) -> Vec<ForeignProcess> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let netns = netns_of(pid)?;
            if netns == ours {
                return None;
            }
            // The process may exit between the two reads: then it is skipped.
            let cgroup = cgroup2_path_of(pid)?;
            Some(ForeignProcess { pid, netns, cgroup })
        })
        .collect()
}

/// The cgroup2 path of `pid`, from the `0::` line of /proc/PID/cgroup
/// (relative to the daemon's cgroup namespace, which is the host's).
pub fn cgroup2_path_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_cgroup2_line(&text)
}

fn parse_cgroup2_line(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim_end_matches(" (deleted)").to_string())
}

/// `cgroup` and its ancestors, deepest first: `/a/b` → `/a/b`, `/a`, `/`.
pub fn cgroup_and_ancestors(cgroup: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(cgroup);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.rfind('/') {
            _ if current == "/" => None,
            Some(0) => Some("/"),
            Some(i) => Some(&current[..i]),
            None => None,
        };
        Some(current)
    })
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
            let netlink = crate::host::netlink::Netlink::connect()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_line_is_found_among_v1_lines() {
        let text = "12:pids:/user.slice\n1:name=systemd:/x\n0::/system.slice/docker-ab.scope\n";
        assert_eq!(
            parse_cgroup2_line(text).as_deref(),
            Some("/system.slice/docker-ab.scope")
        );
        assert_eq!(parse_cgroup2_line("3:cpu:/\n"), None);
    }

    #[test]
    fn ancestors_come_deepest_first_down_to_the_root() {
        let all: Vec<&str> = cgroup_and_ancestors("/a/b/c").collect();
        assert_eq!(all, ["/a/b/c", "/a/b", "/a", "/"]);
        assert_eq!(cgroup_and_ancestors("/").collect::<Vec<_>>(), ["/"]);
    }

    #[test]
    fn our_own_process_is_not_foreign() {
        let ours = own_namespace().unwrap();
        let me = std::process::id();
        assert!(foreign_processes(ours).iter().all(|p| p.pid != me));
    }
}
