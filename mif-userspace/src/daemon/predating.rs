//! Connections older than their strict policy. A TCP socket opened before
//! its cgroup had a strict policy (or before the daemon started) carries no
//! mif mark: it follows the main table, and the egress guard drops what it
//! sends by another network, so it hangs until TCP gives up. When the policy
//! asks for it (`reset = true`), such connections are reset as soon as the
//! policy applies, as those on a lost network are, and their applications
//! reconnect with sockets the policy steers.
//!
//! Which: TCP sockets without mif's mark (mark & mask == 0: a socket made
//! under any policy has its PvD's mark, or the excluded mark) created in
//! the policy's cgroup or below it, except below a cgroup with a policy of
//! its own (that policy decides there), and except connections to a
//! loopback address, which never leave the host. Once per cgroup that
//! gets such a policy: a cgroup that keeps it is not looked at again, one
//! that loses it and gets it back is.
use std::{collections::BTreeSet, os::unix::fs::MetadataExt as _, path::Path};

use log::{info, warn};

use crate::{apply::sockdiag, plan::ResolvedPolicy, reconcile::Reconciler};

#[derive(Debug, Default)]
pub struct PredatingResets {
    /// Cgroups of strict `reset` policies whose older connections are
    /// already reset.
    done: BTreeSet<u64>,
}

impl PredatingResets {
    /// After a pass: resets the older connections of the cgroups whose
    /// strict `reset` policy is new since the last call.
    pub async fn after_pass(&mut self, reconciler: &Reconciler, mark_mask: u32) {
        let policies = reconciler.policies();
        let wanted: BTreeSet<u64> = policies
            .iter()
            .filter(|p| p.terms.strict && p.terms.reset)
            .map(|p| p.cgroup_id)
            .collect();
        self.done.retain(|id| wanted.contains(id));
        let with_policy: BTreeSet<u64> = policies.iter().map(|p| p.cgroup_id).collect();
        let mount = reconciler.policy_state().cgroup2().mount().to_path_buf();
        for policy in policies.iter().filter(|p| wanted.contains(&p.cgroup_id)) {
            if !self.done.insert(policy.cgroup_id) {
                continue;
            }
            let unmarked = sockdiag::DestroyFilter {
                mark: Some((0, mark_mask)),
                spare_loopback: true,
                ..Default::default()
            };
            let cgroup = &policy.cgroup;
            match reset_in_subtree(&mount, policy, &with_policy, unmarked).await {
                Ok(0) => {}
                Ok(n) => info!(
                    "strict policy of {cgroup}: reset {n} TCP connections opened before it \
                     applied"
                ),
                Err(e) => warn!("strict policy of {cgroup}: resetting older connections: {e:#}"),
            }
        }
    }
}

/// Resets the TCP connections `filter` matches in `policy`'s cgroup and the
/// cgroups below it, except below those in `with_policy` (their own policy
/// decides there): one sock_diag pass per cgroup, off the event loop.
/// Returns how many were reset.
pub(super) async fn reset_in_subtree(
    mount: &Path,
    policy: &ResolvedPolicy,
    with_policy: &BTreeSet<u64>,
    filter: sockdiag::DestroyFilter,
) -> anyhow::Result<usize> {
    let top = mount.join(policy.cgroup.trim_start_matches('/'));
    let cgroups = subtree(&top, policy.cgroup_id, with_policy);
    let reset = tokio::task::spawn_blocking(move || {
        cgroups.iter().try_fold(0, |n, &id| {
            let filter = sockdiag::DestroyFilter {
                cgroup: Some(id),
                ..filter
            };
            sockdiag::destroy_tcp(&filter).map(|m| n + m)
        })
    });
    Ok(reset.await??)
}

/// The ids of `top` (whose id is `top_id`) and of the cgroups below it,
/// leaving out the subtrees of cgroups in `own_policy` (other than `top`).
fn subtree(top: &Path, top_id: u64, own_policy: &BTreeSet<u64>) -> Vec<u64> {
    let mut ids = vec![top_id];
    let mut dirs = vec![top.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_dir() || own_policy.contains(&meta.ino()) {
                continue;
            }
            ids.push(meta.ino());
            dirs.push(entry.path());
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subtree_stops_at_cgroups_with_a_policy_of_their_own() {
        let root = tempfile::tempdir().unwrap();
        for dir in ["app/worker/tmp", "app/other", "app/web/inner"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let ino = |rel: &str| std::fs::metadata(root.path().join(rel)).unwrap().ino();
        let top = root.path().join("app");
        let own: BTreeSet<u64> = [ino("app"), ino("app/web")].into();
        let mut got = subtree(&top, ino("app"), &own);
        got.sort_unstable();
        let mut want = vec![
            ino("app"),
            ino("app/worker"),
            ino("app/worker/tmp"),
            ino("app/other"),
        ];
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
