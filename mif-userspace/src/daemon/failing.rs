//! Connections left on a PvD that turned `failing`. New sockets of
//! non-strict policies already go to their next PvD; the connections they
//! opened before hang until TCP gives up (minutes). A policy with
//! `reset = true` has them reset at once, as on a lost link, so its
//! applications reconnect over the next PvD. Strict policies keep their
//! connections: their PvDs stay theirs whatever validation says.
//!
//! Which: TCP sockets with the PvD's mark and its source address of the
//! family, created in the policy's cgroup or below it (not below a cgroup
//! with a policy of its own, which decides there).
use std::collections::BTreeSet;

use log::{info, warn};

use super::predating::reset_in_subtree;
use crate::{
    apply::sockdiag, model::validation::Verdict, reconcile::Reconciler, validation::VerdictChange,
};

pub async fn reset_on_failing(reconciler: &Reconciler, changes: &[VerdictChange], mark_mask: u32) {
    let policies = reconciler.policies();
    let with_policy: BTreeSet<u64> = policies.iter().map(|p| p.cgroup_id).collect();
    let mount = reconciler.policy_state().cgroup2().mount().to_path_buf();
    for change in changes.iter().filter(|c| c.after == Verdict::Failing) {
        let Some(pvd) = reconciler.pvds().iter().find(|p| p.name == change.pvd) else {
            continue;
        };
        let source = match change.v6 {
            false => pvd.addr4.map(std::net::IpAddr::V4),
            true => pvd.addr6.map(std::net::IpAddr::V6),
        };
        let Some(source) = source else { continue };
        for policy in policies
            .iter()
            .filter(|p| p.terms.reset && !p.terms.strict && p.terms.prefer.contains(&pvd.name))
        {
            let on_pvd = sockdiag::DestroyFilter {
                source: Some(source),
                mark: Some((pvd.mark, mark_mask)),
                cgroup: None,
                spare_loopback: true,
            };
            let (name, cgroup) = (&pvd.name, &policy.cgroup);
            match reset_in_subtree(&mount, policy, &with_policy, on_pvd).await {
                Ok(0) => {}
                Ok(n) => info!("PvD {name} is failing: reset {n} TCP connections of {cgroup}"),
                Err(e) => warn!("PvD {name} is failing: resetting connections of {cgroup}: {e:#}"),
            }
        }
    }
}
