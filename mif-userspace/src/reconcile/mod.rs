//! Keeping the kernel in line with the networks: dump what netlink knows,
//! rebuild the PvD state, compute the desired maps and routing, and apply
//! only the difference.
//!
//! Events are only triggers: every pass starts from a fresh dump, so a lost
//! or reordered event can never leave stale state behind (systemd-networkd
//! issue 5398 is what happens otherwise).
use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use log::{debug, info, warn};
use mif_common::Settings;

use self::{
    changes::log_changes,
    foreign::{current_foreign, foreign_claims, scan_foreign_processes, steer_foreign_namespaces},
};
use crate::{
    apply::{guard_links::GuardLinks, kernel_maps::KernelMaps, on_demand::OnDemandHooks},
    host::{foreign_netns::ForeignProcess, netlink::Netlink},
    model::{
        config::Config,
        pvd::{self, Numbering, PvdState, Registry},
        ra_learned::{RaCaptivePortal, RaDns, RaLearned},
        validation::PvdVerdicts,
    },
    plan::{self, routing::PvdRouting, ResolvedPolicy, RuleOptions},
};

mod changes;
mod foreign;
mod policy_state;
mod seam;
#[cfg(test)]
mod tests;

pub use self::{
    changes::{transitions, Lost},
    policy_state::{PolicyState, WatchTargets},
    seam::{GuardWriter, MapWriter, RoutingHost},
};

/// One pass host → model → plan → apply, and the state kept between passes.
/// Generic over [`RoutingHost`], [`MapWriter`] and [`GuardWriter`] so the
/// pass is unit-tested with fakes; the daemon's is
/// `Reconciler<Netlink, KernelMaps, GuardLinks>`, the default.
pub struct Reconciler<H = Netlink, M = KernelMaps, G = GuardLinks> {
    netlink: H,
    maps: M,
    guards: G,
    config: Config,
    policy: PolicyState,
    numbers: InstanceNumbers,
    registry: Registry,
    /// Routing installed per table, as last applied.
    applied: BTreeMap<u32, PvdRouting>,
    pvds: Vec<PvdState>,
    ra_dns: RaDns,
    ra_domains: RaLearned<String>,
    ra_captive_portal: RaCaptivePortal,
    /// Unreadable or garbled lease files already logged, so each problem
    /// is logged once, not on every pass.
    lease_problems: std::collections::BTreeSet<String>,
    /// The validation verdicts by PvD name, as the daemon's probes last
    /// found them; copied into each pass's PvDs.
    verdicts: BTreeMap<String, PvdVerdicts>,
    /// The policy entries the last pass wrote, and what they were made of.
    policy_entries: Option<PolicyEntries>,
    /// The processes of other network namespaces (containers) as the last
    /// scan of /proc found them: scanned again by the daemon's poll, by a
    /// pass that resolves policies and whenever a claimed process left its
    /// namespace, not by every pass (with 64 routers' namespaces the scan
    /// was a third of a link change's pass). `None`: not scanned yet.
    foreign: Option<Vec<ForeignProcess>>,
    /// The hooks attached when a policy first needs them; `None` until the
    /// start-up pass has attached the others (and in unit tests).
    on_demand: Option<OnDemandHooks>,
}

/// A pass's policy map entries, kept for the next pass: one for a network
/// change (the same resolved policies, the same PvD indices, the same map)
/// takes them as they are, and the map writer, which wrote them, compares
/// none. With 100,000 policies making and comparing them was most of the
/// work of a pass that changes no policy.
struct PolicyEntries {
    resolution: u64,
    index_of: Vec<(String, u32)>,
    capacity: usize,
    entries: Vec<(u64, mif_common::Policy)>,
}

/// The numbers one instance steers by, fixed for its lifetime.
#[derive(Debug, Clone, Copy)]
pub struct InstanceNumbers {
    /// How PvD indices become marks and tables.
    pub numbering: Numbering,
    /// The priorities and mask of its ip rules.
    pub rules: RuleOptions,
    /// What the kernel programs were loaded with.
    pub settings: Settings,
}

impl<H: RoutingHost, M: MapWriter, G: GuardWriter> Reconciler<H, M, G> {
    pub fn new(
        netlink: H,
        maps: M,
        guards: G,
        config: Config,
        policy: PolicyState,
        numbers: InstanceNumbers,
    ) -> Self {
        Self {
            netlink,
            maps,
            guards,
            config,
            policy,
            numbers,
            registry: Registry::default(),
            applied: BTreeMap::new(),
            pvds: Vec::new(),
            ra_dns: RaDns::default(),
            ra_domains: RaLearned::default(),
            ra_captive_portal: RaCaptivePortal::default(),
            lease_problems: Default::default(),
            verdicts: BTreeMap::new(),
            policy_entries: None,
            foreign: None,
            on_demand: None,
        }
    }

    /// Takes the on-demand hooks the start-up left waiting: from now on a
    /// pass attaches those its policies need before it writes the maps.
    pub fn set_on_demand_hooks(&mut self, hooks: OnDemandHooks) {
        self.on_demand = Some(hooks);
    }

    /// The on-demand hooks no policy needs yet. One a policy needs that
    /// could not be attached is not among them: `mif status` then counts
    /// it missing (and every pass fails until it is attached, writing no
    /// policy whose hook is missing).
    pub fn waiting_hooks(&self) -> Vec<&'static str> {
        let needs = self.policy.hook_needs();
        (self.on_demand.as_ref().map(OnDemandHooks::waiting))
            .unwrap_or_default()
            .into_iter()
            .filter(|hook| !needs.wants(hook))
            .collect()
    }

    /// Takes over a previous instance's state from the pinned maps: PvD
    /// names keep their indices (sockets and rules carry them), and its
    /// routing is known so that what is no longer wanted gets removed.
    pub fn adopt_previous(&mut self) {
        let pvds = self.maps.pvds();
        let previous = plan::installed_routing(&pvds, &self.numbers.rules);
        let names = pvds
            .iter()
            .filter_map(|(index, _, meta)| meta.as_ref().map(|m| (plan::pvd_name(m), *index)));
        self.registry = Registry::from_pairs(names);
        self.applied = previous.into_iter().map(|r| (r.table, r)).collect();
    }

    /// Resolvers of the leases the host's DHCP clients hold, by interface:
    /// read-only, from `[dns] leases` (see [`crate::host::dns_leases`]). A lease
    /// counts only while its interface still holds the leased address
    /// (dhclient keeps expired clients' leases in its file).
    fn dhcp_dns(
        &mut self,
        interfaces: &[crate::host::netlink::Interface],
    ) -> BTreeMap<String, crate::host::dns_leases::LinkDns> {
        let ifnames: BTreeMap<u32, String> = interfaces
            .iter()
            .map(|i| (i.index, i.name.clone()))
            .collect();
        let found = crate::host::dns_leases::learn(
            &self.config.dns_leases,
            &ifnames,
            std::time::SystemTime::now(),
        );
        for problem in found.problems {
            let text = problem.to_string();
            if self.lease_problems.insert(text.clone()) {
                warn!("DHCP lease: {text}");
            }
        }
        found
            .links
            .into_iter()
            .filter(|(name, link)| {
                let holds = |a: std::net::Ipv4Addr| {
                    interfaces
                        .iter()
                        .any(|i| &i.name == name && i.addrs.iter().any(|x| x.addr == IpAddr::V4(a)))
                };
                link.address.is_none_or(holds)
            })
            .collect()
    }

    /// Records RDNSS servers from a router advertisement on `ifindex`.
    pub fn learn_ra_dns(&mut self, ifindex: u32, servers: &[IpAddr], lifetime: Duration) {
        self.ra_dns
            .learn(ifindex, servers, lifetime, Instant::now());
    }

    /// Records a DNSSL search list from a router advertisement on
    /// `ifindex` (its domains feed per-domain selection, RFC 6731).
    pub fn learn_ra_domains(&mut self, ifindex: u32, domains: &[String], lifetime: Duration) {
        self.ra_domains
            .learn(ifindex, domains, lifetime, Instant::now());
    }

    /// Takes the verdicts of validation (all of them: a PvD left out is
    /// `unknown`); they reach the kernel with the next pass.
    pub fn set_verdicts(&mut self, verdicts: BTreeMap<String, PvdVerdicts>) {
        self.verdicts = verdicts;
    }

    /// Records the captive portal's API URI a router advertisement on
    /// `ifindex` announced (RFC 8910 option 37).
    pub fn learn_ra_captive_portal(&mut self, ifindex: u32, uri: &str) {
        self.ra_captive_portal
            .announce(ifindex, uri, Instant::now());
    }

    pub fn pvds(&self) -> &[PvdState] {
        &self.pvds
    }

    /// The policies as last resolved.
    pub fn policies(&self) -> &[ResolvedPolicy] {
        self.policy.resolved()
    }

    pub fn policy_state(&self) -> &PolicyState {
        &self.policy
    }

    /// How many cgroups the kernel's policy map holds.
    /// Where the strict policies' guards are.
    pub fn guards(&self) -> &G {
        &self.guards
    }

    pub fn policy_capacity(&self) -> usize {
        self.maps.policy_capacity()
    }

    /// Makes the next pass resolve every policy and rewrite every map entry
    /// (the periodic check: it catches cgroups that came and went unwatched
    /// and entries someone else changed).
    pub fn recheck_everything(&mut self) {
        self.policy.stale = true;
        self.maps.forget_written();
    }

    /// For changes to the policy set (the next pass resolves them).
    pub fn policy_state_mut(&mut self) -> &mut PolicyState {
        self.policy.stale = true;
        &mut self.policy
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Names a policy may prefer: the config's PvDs, the current PvDs and
    /// every interface that exists now (an implicit PvD once named).
    pub async fn known_pvd_names(&self) -> anyhow::Result<std::collections::BTreeSet<String>> {
        let interfaces = self
            .netlink
            .interfaces()
            .await
            .context("dumping interfaces")?;
        Ok(self
            .config
            .pvds
            .iter()
            .map(|p| p.name.clone())
            .chain(self.pvds.iter().map(|p| p.name.clone()))
            .chain(
                interfaces
                    .into_iter()
                    .filter(|i| !i.loopback)
                    .map(|i| i.name),
            )
            .collect())
    }

    /// Which foreign network namespaces (containers) live in policy cgroups
    /// now, and under which policy; cheap (one pass over /proc), so the
    /// daemon can poll it and reconcile when containers come or go. The
    /// next pass uses this scan.
    pub fn foreign_fingerprint(&mut self) -> Vec<(std::sync::Arc<str>, u64)> {
        let foreign = self.foreign.insert(scan_foreign_processes());
        let mut all: Vec<(std::sync::Arc<str>, u64)> = foreign_claims(&self.policy, foreign)
            .into_iter()
            .map(|c| (c.policy.cgroup.clone(), c.netns))
            .collect();
        all.sort();
        all
    }

    /// Takes a reloaded config, its PvDs and its policies, and resolves
    /// the policies at once for `check` to judge (that each of the file's
    /// policies names a cgroup that exists, say). When it refuses, the
    /// previous config and policies are back, resolved again, and nothing
    /// reached the kernel; the refused file's policies keep the ids they
    /// were given (as any policy's id stays its own), and the next pass
    /// rebuilds the policy entries it would otherwise have reused. A
    /// reload that succeeds so resolves once, where checking the cgroups
    /// first and resolving in the pass took two (0.3 s each with 100,000
    /// policies); one that is refused resolves twice. Returns the CLI
    /// policies that gave way to the file's.
    pub fn replace_config_checked<E>(
        &mut self,
        mut config: Config,
        check: impl FnOnce(&PolicyState) -> Result<(), E>,
    ) -> Result<Vec<crate::model::policies::PolicySpec>, E> {
        let (next, displaced) = self.policy.set.with_config(&mut config);
        let previous_set = std::mem::replace(&mut self.policy.set, next);
        let previous_config = std::mem::replace(&mut self.config, config);
        self.policy.resolve();
        if let Err(e) = check(&self.policy) {
            self.policy.set = previous_set;
            self.config = previous_config;
            self.policy.resolve();
            return Err(e);
        }
        // The policies changed: which containers they hold too (as after
        // the pass's own resolve).
        self.foreign = None;
        Ok(displaced)
    }

    /// One pass. With `verify`, routing that should already be in place is
    /// checked against the kernel and re-asserted if someone removed it.
    /// Returns the (PvD, family) pairs that stopped being available.
    pub async fn reconcile(&mut self, verify: bool) -> anyhow::Result<Vec<Lost>> {
        // Before the dump: links that go down from here on are the
        // link-down thread's to withdraw, and this pass must not undo that.
        self.maps.begin_pass();
        let started = Instant::now();
        let dump = self.netlink.dump().await.context("dumping interfaces")?;
        let dumped = started.elapsed();
        let interfaces = &dump.interfaces;
        let now = Instant::now();
        let ra_servers = self.ra_dns.current(interfaces, now);
        let ra_domains = self.ra_domains.current(interfaces, now);
        let mut learned = pvd::learned_dns(ra_servers, ra_domains, self.dhcp_dns(interfaces));
        pvd::learned_captive_portals(
            &mut learned,
            self.ra_captive_portal.current(interfaces, now),
        );
        // Policies first: the PvDs include every interface a policy prefers.
        if self.policy.stale {
            self.policy.resolve();
            // Cgroups or policies changed: which containers they hold too.
            self.foreign = None;
        }
        let (mut pvds, skipped) = pvd::build(
            &self.config,
            self.policy.preferred_names(),
            interfaces,
            &learned,
            &self.numbers.numbering,
            &mut self.registry,
        )?;
        for p in &mut pvds {
            if let Some(v) = self.verdicts.get(&p.name) {
                p.validation = v.clone();
            }
        }
        if !skipped.is_empty() {
            warn!(
                "more uplinks than the mark mask holds PvDs for; no PvD for: {}",
                skipped.join(", ")
            );
        }
        let capacity = self.maps.policy_capacity();
        let mut index_of: Vec<(String, u32)> =
            pvds.iter().map(|p| (p.name.clone(), p.index)).collect();
        index_of.sort();
        let resolution = self.policy.resolution();
        let reused = self
            .policy_entries
            .take()
            .filter(|e| {
                e.resolution == resolution && e.capacity == capacity && e.index_of == index_of
            })
            .map(|e| e.entries);
        let mut desired = plan::desired_reusing(
            &pvds,
            self.policy.resolved(),
            self.policy.selectors(),
            &self.numbers.rules,
            capacity,
            reused,
        );
        // Only the interfaces some policy excludes are looked at.
        desired.excludes = plan::exclusions(self.policy.resolved(), capacity, |name| {
            interfaces
                .iter()
                .find(|i| i.name == name)
                .map(pvd::interface_prefixes)
                .unwrap_or_default()
        });
        desired.guarded.interfaces = plan::guarded_interfaces(&desired.guarded, interfaces);
        // Losses first: stop choosing a PvD that went away before any slow
        // work (containers' addresses, routing dumps and installs).
        self.maps.withdraw_lost(&desired)?;
        let foreign = current_foreign(&mut self.foreign, &self.policy);
        steer_foreign_namespaces(&mut desired, &pvds, &self.policy, foreign);

        let planned = started.elapsed();
        let mut installs = 0;
        // Routing before maps: a PvD becomes selectable only once its table
        // and rules exist.
        for routing in &desired.routing {
            let changed = self.applied.get(&routing.table) != Some(routing);
            let missing = !changed && verify && !self.netlink.is_installed(routing, &dump.routing);
            if changed || missing {
                if missing {
                    info!(
                        "PvD {}: routing was changed by someone else; restoring it",
                        routing.name
                    );
                }
                self.netlink
                    .install(routing, &dump.routing)
                    .await
                    .with_context(|| format!("installing the routing of PvD {}", routing.name))?;
                self.applied.insert(routing.table, routing.clone());
                installs += 1;
            }
        }
        let routed = started.elapsed();
        // Before the maps: a policy's DNS redirection or strict binds work
        // from its first socket on.
        if let Some(hooks) = &mut self.on_demand {
            hooks
                .attach_needed(self.policy.hook_needs())
                .context("attaching the hooks the policies need")?;
        }
        self.maps.write(&self.numbers.settings, &desired)?;
        let written = started.elapsed();
        self.policy_entries = Some(PolicyEntries {
            resolution,
            index_of,
            capacity,
            entries: std::mem::take(&mut desired.policies),
        });
        // After the maps: a guard decides by the policy map, and one whose
        // policy is not there yet lets everything pass.
        // A guard that cannot be attached somewhere is logged and shown by
        // `mif status`; the rest of the pass (and the other guards) goes on.
        if let Err(e) = self.guards.guard(&desired.guarded) {
            warn!("attaching the strict policies' guards: {e}");
        }
        let wanted: Vec<u32> = desired.routing.iter().map(|r| r.table).collect();
        let stale: Vec<PvdRouting> = self
            .applied
            .values()
            .filter(|r| !wanted.contains(&r.table))
            .cloned()
            .collect();
        for routing in stale {
            self.netlink
                .remove(&routing, &dump.routing)
                .await
                .with_context(|| format!("removing the routing of PvD {}", routing.name))?;
            self.applied.remove(&routing.table);
        }

        debug!(
            "pass: dump {:.2} ms, plan {:.2} ms, routing {:.2} ms ({installs} of {} PvDs \
             installed), maps {:.2} ms, the rest {:.2} ms",
            ms(dumped),
            ms(planned - dumped),
            ms(routed - planned),
            desired.routing.len(),
            ms(written - routed),
            ms(started.elapsed() - written),
        );
        let lost = transitions(&self.pvds, &pvds);
        log_changes(&self.pvds, &pvds);
        self.pvds = pvds;
        Ok(lost)
    }

    /// Removes all routing this instance installed.
    pub async fn remove_routing(&mut self) {
        let applied = std::mem::take(&mut self.applied);
        if applied.is_empty() {
            return;
        }
        let dump = match self.netlink.dump_routing().await {
            Ok(dump) => dump,
            Err(e) => {
                warn!("removing mif's routing: {e:#}");
                return;
            }
        };
        for routing in applied.into_values() {
            if let Err(e) = self.netlink.remove(&routing, &dump).await {
                warn!("removing the routing of PvD {}: {e:#}", routing.name);
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
