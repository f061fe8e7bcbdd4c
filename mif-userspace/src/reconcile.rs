//! Keeping the kernel in line with the networks: dump what netlink knows,
//! rebuild the PvD state, compute the desired maps and routing, and apply
//! only the difference.
//!
//! Events are only triggers: every pass starts from a fresh dump, so a lost
//! or reordered event can never leave stale state behind (systemd-networkd
//! issue 5398 is what happens otherwise).
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use log::{info, warn};
use mif_common::Settings;

use crate::{
    apply::kernel_maps::KernelMaps,
    host::cgroup::{Cgroup, Cgroup2},
    host::netlink::Netlink,
    model::config::Config,
    model::policies::{self, Pending, PolicyIds, PolicySet},
    model::pvd::{self, Numbering, PvdState, Registry},
    plan::routing::PvdRouting,
    plan::{self, ResolvedPolicy, RuleOptions},
};

/// What router advertisements taught about one interface's DNS (RDNSS
/// servers, DNSSL domains; RFC 8106), each item until its lifetime runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaLearned<T> {
    by_ifindex: BTreeMap<u32, Vec<(T, Instant)>>,
}

impl<T> Default for RaLearned<T> {
    fn default() -> Self {
        Self {
            by_ifindex: BTreeMap::new(),
        }
    }
}

/// RDNSS servers by interface.
pub type RaDns = RaLearned<IpAddr>;

impl<T: Clone + PartialEq> RaLearned<T> {
    /// Records items announced now with `lifetime`; a zero lifetime
    /// withdraws them (RFC 8106 §5.1).
    pub fn learn(&mut self, ifindex: u32, items: &[T], lifetime: Duration, now: Instant) {
        let entry = self.by_ifindex.entry(ifindex).or_default();
        entry.retain(|(item, _)| !items.contains(item));
        if !lifetime.is_zero() {
            entry.extend(items.iter().map(|a| (a.clone(), now + lifetime)));
        }
    }

    /// Unexpired items by interface name, for the interfaces that exist.
    pub fn current(
        &mut self,
        interfaces: &[crate::host::netlink::Interface],
        now: Instant,
    ) -> BTreeMap<String, Vec<T>> {
        for items in self.by_ifindex.values_mut() {
            items.retain(|(_, until)| *until > now);
        }
        // An index that no longer exists was a removed interface: its RAs
        // belong to a network that is gone.
        self.by_ifindex.retain(|index, items| {
            !items.is_empty() && interfaces.iter().any(|i| i.index == *index)
        });
        interfaces
            .iter()
            .filter_map(|i| {
                let items = self.by_ifindex.get(&i.index)?;
                Some((
                    i.name.clone(),
                    items.iter().map(|(a, _)| a.clone()).collect(),
                ))
            })
            .collect()
    }
}

/// A PvD that stopped being usable for one family, with the source address
/// its sockets were bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub pvd: String,
    pub mark: u32,
    pub source: IpAddr,
}

/// The policies to enforce and what they resolve to right now.
pub struct PolicyState {
    pub set: PolicySet,
    ids: PolicyIds,
    cgroup2: Cgroup2,
    pub attach: Cgroup,
    resolved: Vec<ResolvedPolicy>,
    pending: Vec<Pending>,
    /// Whether policies or cgroups may have changed since the last resolve.
    /// Resolving looks up every policy's cgroup (a `stat` each: seconds for
    /// 100,000 policies), and a pass for a network change needs none of it.
    stale: bool,
}

impl PolicyState {
    pub fn new(set: PolicySet, cgroup2: Cgroup2, attach: Cgroup) -> Self {
        Self {
            set,
            ids: PolicyIds::default(),
            cgroup2,
            attach,
            resolved: Vec::new(),
            pending: Vec::new(),
            stale: true,
        }
    }

    /// Re-binds every policy to its cgroup (cgroups come and go).
    fn resolve(&mut self) {
        (self.resolved, self.pending) =
            policies::resolve(&self.set, &self.cgroup2, &self.attach, &mut self.ids);
        self.stale = false;
    }

    /// Cgroups appeared or went away: the next pass resolves every policy.
    pub fn cgroups_changed(&mut self) {
        self.stale = true;
    }

    pub fn resolved(&self) -> &[ResolvedPolicy] {
        &self.resolved
    }

    pub fn pending(&self) -> &[Pending] {
        &self.pending
    }

    pub fn cgroup2(&self) -> &Cgroup2 {
        &self.cgroup2
    }

    /// The cgroups a policy (literal or pattern) currently applies to.
    pub fn matches_of(&self, cgroup: &str) -> Vec<&ResolvedPolicy> {
        match self.ids.get(cgroup) {
            Some(id) => self.resolved.iter().filter(|r| r.id == id).collect(),
            None => Vec::new(),
        }
    }

    /// Where new cgroups must be watched for: below the literal prefixes
    /// of the pattern policies, and the cgroups of literal policies
    /// themselves, so that one deleted and made again (a restarted service)
    /// is steered again at once, not at the next periodic check.
    pub fn watch_targets(&self) -> WatchTargets {
        let mut targets = WatchTargets::default();
        for (spec, _) in self.set.all().iter() {
            if crate::host::cgroup_pattern::is_pattern(&spec.cgroup) {
                if let Ok(p) = crate::host::cgroup_pattern::CgroupPattern::parse(&spec.cgroup) {
                    targets.roots.push(p.literal_prefix().to_string());
                }
            } else {
                targets.exact.push(spec.cgroup.clone());
            }
        }
        for list in [&mut targets.roots, &mut targets.exact] {
            list.sort();
            list.dedup();
        }
        targets
    }
}

/// What the daemon's cgroup watcher watches: subtrees, and single cgroups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchTargets {
    pub roots: Vec<String>,
    pub exact: Vec<String>,
}

impl WatchTargets {
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty() && self.exact.is_empty()
    }
}

pub struct Reconciler {
    netlink: Netlink,
    config: Config,
    policy: PolicyState,
    numbering: Numbering,
    rules: RuleOptions,
    settings: Settings,
    maps: KernelMaps,
    registry: Registry,
    /// Routing installed per table, as last applied.
    applied: BTreeMap<u32, PvdRouting>,
    pvds: Vec<PvdState>,
    ra_dns: RaDns,
    ra_domains: RaLearned<String>,
    /// Unreadable or garbled lease files already logged, so each problem
    /// is logged once, not on every pass.
    lease_problems: std::collections::BTreeSet<String>,
}

impl Reconciler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        netlink: Netlink,
        config: Config,
        policy: PolicyState,
        numbering: Numbering,
        rules: RuleOptions,
        settings: Settings,
        maps: KernelMaps,
    ) -> Self {
        Self {
            netlink,
            config,
            policy,
            numbering,
            rules,
            settings,
            maps,
            registry: Registry::default(),
            applied: BTreeMap::new(),
            pvds: Vec::new(),
            ra_dns: RaDns::default(),
            ra_domains: RaLearned::default(),
            lease_problems: Default::default(),
        }
    }

    /// Takes over a previous instance's state from the pinned maps: PvD
    /// names keep their indices (sockets and rules carry them), and its
    /// routing is known so that what is no longer wanted gets removed.
    pub fn adopt_previous(&mut self) {
        let pvds = self.maps.pvds();
        let previous = plan::installed_routing(&pvds, &self.rules);
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
    /// daemon can poll it and reconcile when containers come or go.
    pub fn foreign_fingerprint(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = foreign_claims(&self.policy)
            .into_iter()
            .map(|c| (c.policy.cgroup.clone(), c.netns))
            .collect();
        all.sort();
        all
    }

    /// Takes a reloaded config: its PvDs and its policies.
    pub fn replace_config(&mut self, config: Config) -> Vec<crate::model::policies::PolicySpec> {
        let displaced = self.policy.set.replace_config(&config);
        self.policy.stale = true;
        self.config = config;
        displaced
    }

    /// One pass. With `verify`, routing that should already be in place is
    /// checked against the kernel and re-asserted if someone removed it.
    /// Returns the (PvD, family) pairs that stopped being available.
    pub async fn reconcile(&mut self, verify: bool) -> anyhow::Result<Vec<Lost>> {
        // Before the dump: links that go down from here on are the
        // link-down thread's to withdraw, and this pass must not undo that.
        self.maps.begin_pass();
        let interfaces = self
            .netlink
            .interfaces()
            .await
            .context("dumping interfaces")?;
        let now = Instant::now();
        let ra_servers = self.ra_dns.current(&interfaces, now);
        let ra_domains = self.ra_domains.current(&interfaces, now);
        let learned = pvd::learned_dns(ra_servers, ra_domains, self.dhcp_dns(&interfaces));
        let (pvds, skipped) = pvd::build(
            &self.config,
            &interfaces,
            &learned,
            &self.numbering,
            &mut self.registry,
        )?;
        if !skipped.is_empty() {
            warn!(
                "more uplinks than the mark mask holds PvDs for; no PvD for: {}",
                skipped.join(", ")
            );
        }
        if self.policy.stale {
            self.policy.resolve();
        }
        let mut desired = plan::desired(&pvds, self.policy.resolved(), &self.rules);
        // Only the interfaces some policy excludes are looked at.
        desired.excludes = plan::exclusions(self.policy.resolved(), |name| {
            interfaces
                .iter()
                .find(|i| i.name == name)
                .map(pvd::interface_prefixes)
                .unwrap_or_default()
        });
        // Losses first: stop choosing a PvD that went away before any slow
        // work (containers' addresses, routing dumps and installs).
        self.maps.withdraw_lost(&desired)?;
        steer_foreign_namespaces(&mut desired, &pvds, &self.policy);

        // Routing before maps: a PvD becomes selectable only once its table
        // and rules exist.
        for routing in &desired.routing {
            let changed = self.applied.get(&routing.table) != Some(routing);
            let missing = !changed && verify && !self.netlink.is_installed(routing).await?;
            if changed || missing {
                if missing {
                    info!(
                        "PvD {}: routing was changed by someone else; restoring it",
                        routing.name
                    );
                }
                self.netlink
                    .install(routing)
                    .await
                    .with_context(|| format!("installing the routing of PvD {}", routing.name))?;
                self.applied.insert(routing.table, routing.clone());
            }
        }
        self.maps.write(&self.settings, &desired)?;
        let wanted: Vec<u32> = desired.routing.iter().map(|r| r.table).collect();
        let stale: Vec<PvdRouting> = self
            .applied
            .values()
            .filter(|r| !wanted.contains(&r.table))
            .cloned()
            .collect();
        for routing in stale {
            self.netlink
                .remove(&routing)
                .await
                .with_context(|| format!("removing the routing of PvD {}", routing.name))?;
            self.applied.remove(&routing.table);
        }

        let lost = transitions(&self.pvds, &pvds);
        log_changes(&self.pvds, &pvds);
        self.pvds = pvds;
        Ok(lost)
    }

    /// Removes all routing this instance installed.
    pub async fn remove_routing(&mut self) {
        for routing in std::mem::take(&mut self.applied).into_values() {
            if let Err(e) = self.netlink.remove(&routing).await {
                warn!("removing the routing of PvD {}: {e:#}", routing.name);
            }
        }
    }
}

/// A network namespace of its own (a container's) whose processes live in
/// a policy's cgroup, with one of those processes to read its addresses by.
struct ForeignClaim<'a> {
    policy: &'a ResolvedPolicy,
    netns: u64,
    pid: u32,
}

/// Which policy claims each foreign network namespace: the deepest policy
/// over any of its processes' cgroups, as in the kernel's walk.
fn foreign_claims(policy: &PolicyState) -> Vec<ForeignClaim<'_>> {
    let Ok(ours) = crate::host::foreign_netns::own_namespace() else {
        return Vec::new();
    };
    let processes = crate::host::foreign_netns::foreign_processes(ours);
    if processes.is_empty() {
        return Vec::new();
    }
    let by_cgroup: HashMap<&str, &ResolvedPolicy> = policy
        .resolved()
        .iter()
        .map(|p| (p.cgroup.as_str(), p))
        .collect();
    // Per namespace: (depth of the claiming policy's cgroup, claim).
    let mut claims: BTreeMap<u64, (usize, ForeignClaim<'_>)> = BTreeMap::new();
    for process in &processes {
        let Some(claimant) = crate::host::foreign_netns::cgroup_and_ancestors(&process.cgroup)
            .find_map(|cgroup| by_cgroup.get(cgroup).copied())
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
fn steer_foreign_namespaces(desired: &mut plan::Desired, pvds: &[PvdState], policy: &PolicyState) {
    for ForeignClaim { policy: p, pid, .. } in foreign_claims(policy) {
        let addrs = match crate::host::foreign_netns::addresses_in_namespace_of(pid) {
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
                p.prefer.contains(&s.name) && if v6 { s.available6() } else { s.available4() }
            };
            let chosen = p
                .prefer
                .iter()
                .find_map(|name| pvds.iter().filter(usable).find(|s| &s.name == name))
                // Strict: the first PvD's table (unreachable default) blocks it.
                .or_else(|| {
                    if p.strict {
                        pvds.iter().find(|s| Some(&s.name) == p.prefer.first())
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

/// The (PvD, family) pairs available in `old` and not in `new` with the
/// same source address.
pub fn transitions(old: &[PvdState], new: &[PvdState]) -> Vec<Lost> {
    let mut lost = Vec::new();
    for before in old {
        let after = new.iter().find(|p| p.name == before.name);
        if before.available4() {
            let kept = after.is_some_and(|a| a.available4() && a.addr4 == before.addr4);
            if let (false, Some(addr)) = (kept, before.addr4) {
                lost.push(Lost {
                    pvd: before.name.clone(),
                    mark: before.mark,
                    source: addr.into(),
                });
            }
        }
        if before.available6() {
            let kept = after.is_some_and(|a| a.available6() && a.addr6 == before.addr6);
            if let (false, Some(addr)) = (kept, before.addr6) {
                lost.push(Lost {
                    pvd: before.name.clone(),
                    mark: before.mark,
                    source: addr.into(),
                });
            }
        }
    }
    lost
}

fn log_changes(old: &[PvdState], new: &[PvdState]) {
    for p in new {
        let before = old.iter().find(|o| o.name == p.name);
        let state = |p: &PvdState| {
            (
                p.available4(),
                p.available6(),
                p.addr4,
                p.addr6,
                p.uplink4.clone(),
                p.uplink6.clone(),
            )
        };
        let cut = before.map_or(0, |b| b.routes_left_out);
        if p.routes_left_out > 0 && p.routes_left_out != cut {
            warn!(
                "PvD {}: {} has {} routes beyond the {} its table copies; the widest are copied",
                p.name,
                p.interface,
                p.routes_left_out,
                crate::host::netlink::MAX_COPIED_ROUTES
            );
        }
        if before.map(state) != Some(state(p)) {
            info!(
                "PvD {} (interface {}, mark {:#x}, table {}): IPv4 {}, IPv6 {}",
                p.name,
                p.interface,
                p.mark,
                p.table,
                availability(p, false),
                availability(p, true),
            );
        }
    }
}

fn availability(p: &PvdState, v6: bool) -> String {
    let addr = if v6 {
        p.addr6.map(IpAddr::V6)
    } else {
        p.addr4.map(IpAddr::V4)
    };
    match (p.unavailable_because(v6), addr) {
        (None, Some(a)) => format!("available from {a}"),
        (Some(why), _) => format!("unavailable ({why})"),
        (None, None) => "unavailable".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn pvd(name: &str, up: bool, addr: [u8; 4]) -> PvdState {
        PvdState {
            index: 0,
            name: name.into(),
            interface: name.into(),
            ifindex: Some(2),
            up,
            addr4: Some(Ipv4Addr::from(addr)),
            addr6: None,
            kind: Default::default(),
            uplink4: Some(crate::host::netlink::Uplink::main_default(
                Ipv4Addr::new(198, 18, 0, 1).into(),
                100,
            )),
            uplink6: None,
            prefixes: vec![],
            routes: vec![],
            routes_left_out: 0,
            mark: 0x100_0000,
            table: 100,
            dns: vec![],
            dns_source: Default::default(),
            domains: vec![],
            domains_source: Default::default(),
        }
    }

    #[test]
    fn ra_dns_expires_and_can_be_withdrawn() {
        let iface = crate::host::netlink::Interface {
            name: "wwan0".into(),
            index: 3,
            up: true,
            loopback: false,
            kind: Default::default(),
            addrs: vec![],
            uplink4: None,
            uplink6: None,
            routes: vec![],
            routes_left_out: 0,
        };
        let t0 = Instant::now();
        let server: IpAddr = "2001:db8:1::53".parse().unwrap();
        let mut dns = RaDns::default();
        dns.learn(3, &[server], Duration::from_secs(10), t0);
        assert_eq!(
            dns.current(std::slice::from_ref(&iface), t0)["wwan0"],
            [server]
        );
        assert!(dns
            .current(std::slice::from_ref(&iface), t0 + Duration::from_secs(11))
            .is_empty());
        dns.learn(3, &[server], Duration::from_secs(10), t0);
        dns.learn(3, &[server], Duration::ZERO, t0);
        assert!(dns.current(std::slice::from_ref(&iface), t0).is_empty());
        // Learned on an interface that is gone: dropped.
        dns.learn(9, &[server], Duration::from_secs(10), t0);
        assert!(dns.current(&[iface], t0).is_empty());
    }

    #[test]
    fn a_link_going_down_loses_its_address() {
        let lost = transitions(
            &[pvd("wlan0", true, [198, 18, 0, 2])],
            &[pvd("wlan0", false, [198, 18, 0, 2])],
        );
        assert_eq!(
            lost,
            [Lost {
                pvd: "wlan0".into(),
                mark: 0x100_0000,
                source: "198.18.0.2".parse().unwrap()
            }]
        );
    }

    #[test]
    fn renumbering_loses_the_old_address_only() {
        let lost = transitions(
            &[pvd("wlan0", true, [198, 18, 0, 2])],
            &[pvd("wlan0", true, [198, 18, 0, 3])],
        );
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].source, "198.18.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn nothing_is_lost_when_nothing_changes_or_a_pvd_returns() {
        let up = pvd("wlan0", true, [198, 18, 0, 2]);
        let same = std::slice::from_ref(&up);
        assert!(transitions(same, same).is_empty());
        assert!(transitions(&[pvd("wlan0", false, [198, 18, 0, 2])], &[up]).is_empty());
    }
}
