//! Containers with a network namespace of their own, steered from the host
//! side: which policy claims each namespace, and the `from` rules their
//! addresses become (see [`crate::host::foreign_netns`]).
use std::collections::BTreeMap;

use log::warn;

use super::PolicyState;
use crate::{
    host::foreign_netns::{self, ForeignProcess},
    model::pvd::PvdState,
    plan::{self, ResolvedPolicy},
};

/// The processes in network namespaces other than the daemon's: one pass
/// over /proc (none when the daemon's own namespace is unreadable).
pub(super) fn scan_foreign_processes() -> Vec<ForeignProcess> {
    match foreign_netns::own_namespace() {
        Ok(ours) => foreign_netns::foreign_processes(ours),
        Err(_) => Vec::new(),
    }
}

/// The foreign processes to steer by: the cached scan while every process
/// a policy claims a namespace by is still in it (a pid can be up to a
/// poll old: its process may have exited, and the pid even gone to a
/// process elsewhere), else a new scan; a scan when there is none.
pub(super) fn current_foreign<'a>(
    cache: &'a mut Option<Vec<ForeignProcess>>,
    policy: &PolicyState,
) -> &'a [ForeignProcess] {
    let moved = cache.as_deref().is_some_and(|processes| {
        foreign_claims(policy, processes)
            .iter()
            .any(|claim| foreign_netns::netns_of(claim.pid) != Some(claim.netns))
    });
    if moved {
        *cache = None;
    }
    cache.get_or_insert_with(scan_foreign_processes)
}

/// A network namespace of its own (a container's) whose processes live in
/// a policy's cgroup, with one of those processes to read its addresses by.
pub(super) struct ForeignClaim<'a> {
    pub policy: &'a ResolvedPolicy,
    pub netns: u64,
    pub pid: u32,
}

/// Which policy claims each foreign network namespace: the deepest policy
/// over any of its processes' cgroups, as in the kernel's walk.
pub(super) fn foreign_claims<'a>(
    policy: &'a PolicyState,
    processes: &[ForeignProcess],
) -> Vec<ForeignClaim<'a>> {
    // Per namespace: (depth of the claiming policy's cgroup, claim).
    let mut claims: BTreeMap<u64, (usize, ForeignClaim<'a>)> = BTreeMap::new();
    for process in processes {
        let Some(claimant) = foreign_netns::cgroup_and_ancestors(&process.cgroup)
            .find_map(|cgroup| policy.policy_of_cgroup(cgroup))
        else {
            continue;
        };
        let depth = claimant.cgroup.matches('/').count();
        let deeper = claims
            .get(&process.netns)
            .is_none_or(|(known, _)| depth > *known);
        if deeper {
            let claim = ForeignClaim {
                policy: claimant,
                netns: process.netns,
                pid: process.pid,
            };
            claims.insert(process.netns, (depth, claim));
        }
    }
    claims.into_values().map(|(_, claim)| claim).collect()
}

/// Steers processes of policy cgroups that live in network namespaces of
/// their own (containers) from the host side: their addresses become
/// `from` rules of the PvD their policy picks (see [`crate::host::foreign_netns`]).
pub(super) fn steer_foreign_namespaces(
    desired: &mut plan::Desired,
    pvds: &[PvdState],
    policy: &PolicyState,
    processes: &[ForeignProcess],
) {
    for ForeignClaim { policy: p, pid, .. } in foreign_claims(policy, processes) {
        let addrs = match foreign_netns::addresses_in_namespace_of(pid) {
            Ok(addrs) => addrs,
            Err(e) => {
                warn!(
                    "reading the addresses of the namespace of pid {pid} ({}): {e:#}",
                    p.cgroup
                );
                continue;
            }
        };
        for addr in addrs {
            let v6 = addr.is_ipv6();
            let usable = |s: &&PvdState| {
                p.terms.prefer.contains(&s.name) && if v6 { s.available6() } else { s.available4() }
            };
            let chosen = p
                .terms
                .prefer
                .iter()
                .find_map(|name| pvds.iter().filter(usable).find(|s| &s.name == name))
                // Strict: the first PvD's table (unreachable default) blocks it.
                .or_else(|| {
                    if p.terms.strict {
                        pvds.iter()
                            .find(|s| Some(&s.name) == p.terms.prefer.first())
                    } else {
                        None
                    }
                });
            if let Some(pvd) = chosen {
                if let Some(routing) = desired.routing.iter_mut().find(|r| r.table == pvd.table) {
                    if !routing.sources.contains(&addr) {
                        routing.sources.push(addr);
                    }
                }
            }
        }
    }
}
