//! From PvD state and policies to what the kernel should hold: map entries
//! and per-PvD routing ([`routing`]). Pure, so every decision is
//! unit-testable.
pub mod routing;

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use mif_common::{
    ExcludeKey, Policy, Pvd, PvdMeta, SelectorKey, MAX_DNS, MAX_POLICIES, MAX_PREFER, NO_PVD,
    POLICY_BIND_DEVICE, POLICY_DENY_RAW, POLICY_DNS_PVD, POLICY_EXCLUDES, POLICY_STRICT,
    PVD_AVAIL_V4, PVD_AVAIL_V6, PVD_DEGRADED_V4, PVD_DEGRADED_V6, PVD_DNS_VIA_FORWARDER,
    PVD_NAME_LEN,
};

use crate::{
    host::netlink::{Interface, Uplink},
    model::config::{BindMode, DnsMode, Exclusion, PolicyTerms, ALLOW_ANY},
    model::pvd::PvdState,
    plan::routing::PvdRouting,
};

/// A policy bound to a real cgroup, its PvD names already resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPolicy {
    pub id: u32,
    pub cgroup_id: u64,
    /// A literal policy's own path, shared with the policy set and the ids
    /// (a copy each until 2026-12-04: with 100,000 policies the daemon
    /// held 61–66 MiB, 44–45 MiB since).
    pub cgroup: std::sync::Arc<str>,
    /// Shared with the policy it came from (and its other cgroups).
    pub terms: std::sync::Arc<PolicyTerms>,
}

/// A `unit`, `app` or `user` policy as the kernel matches it when a cgroup
/// is made (see mif-ebpf's `cgroup_naming`), under its pattern's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorPolicy {
    pub key: SelectorKey,
    pub id: u32,
    pub terms: std::sync::Arc<PolicyTerms>,
}

/// Rule priorities and the mark mask, shared by all PvDs of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleOptions {
    pub mark_mask: u32,
    pub mark_priority: u32,
    pub source_priority: u32,
}

/// The most cgroups the kernel's policy map can be sized for.
pub const POLICY_CAPACITY_MAX: usize = MAX_POLICIES as usize;

/// The smallest policy map a daemon loads: 256 KiB of hash buckets (16
/// bytes a slot; entries cost only once used, the map is not
/// preallocated), room for patterns and CLI policies that appear later.
pub const POLICY_CAPACITY_MIN: usize = 16_384;

/// The policy map's `max_entries` for an instance that starts with
/// `policies` resolved policies: twice that, as a power of two (the
/// kernel rounds the buckets up to one anyway), within
/// [`POLICY_CAPACITY_MIN`]..=[`POLICY_CAPACITY_MAX`]. The map keeps its
/// size while loaded: policies beyond it are reported
/// ([`over_capacity`]), and a restarted daemon that needs more replaces
/// the maps with larger ones (`apply::loader::grow_pinned`).
pub fn policy_capacity_for(policies: usize) -> usize {
    policies
        .saturating_mul(2)
        .checked_next_power_of_two()
        .unwrap_or(POLICY_CAPACITY_MAX)
        .clamp(POLICY_CAPACITY_MIN, POLICY_CAPACITY_MAX)
}

/// The counter map's `max_entries` for a policy map of `policy_capacity`:
/// two (policy, PvD) slots per policy, as when both were fixed.
pub fn counter_capacity_for(policy_capacity: usize) -> usize {
    policy_capacity
        .saturating_mul(2)
        .min(mif_common::MAX_COUNTERS as usize)
}

/// Everything mif wants in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub pvds: Vec<(u32, Pvd, PvdMeta)>,
    pub policies: Vec<(u64, Policy)>,
    /// Whether `policies` are those of the previous pass, reused (see
    /// [`desired_reusing`]): a writer that knows it wrote them has nothing
    /// to compare.
    pub policies_unchanged: bool,
    /// The selector map's entries: each selector's policy as a cgroup it
    /// selects gets it, the same entry the daemon writes once it sees the
    /// cgroup.
    pub selectors: Vec<(SelectorKey, Policy)>,
    pub routing: Vec<PvdRouting>,
    /// The exclusion trie's entries (see [`exclusions`]).
    pub excludes: Vec<ExcludeEntry>,
    /// Cgroups that have a policy but found no room in the policy map (more
    /// than its capacity): reported, never silently dropped.
    pub over_capacity: Vec<String>,
    /// Where the strict policies' guards go (see [`GuardPlan`]).
    pub guarded: GuardPlan,
}

/// The policies [`desired`] leaves out for want of room in a map of
/// `capacity` entries: the last ones, so the order is stable (config file
/// before CLI, literal cgroups before patterns).
pub fn over_capacity(policies: &[ResolvedPolicy], capacity: usize) -> &[ResolvedPolicy] {
    &policies[policies.len().min(capacity)..]
}

/// What the kernel should hold, for a policy map of `capacity` entries.
pub fn desired(
    pvds: &[PvdState],
    policies: &[ResolvedPolicy],
    rules: &RuleOptions,
    capacity: usize,
) -> Desired {
    desired_reusing(pvds, policies, &[], rules, capacity, None)
}

/// [`desired`], with the selector policies, and with the policy entries a
/// previous call made for the same `policies`, PvD indices and `capacity`
/// (`entries`), which it then takes as they are instead of making them
/// again.
pub fn desired_reusing(
    pvds: &[PvdState],
    policies: &[ResolvedPolicy],
    selectors: &[SelectorPolicy],
    rules: &RuleOptions,
    capacity: usize,
    entries: Option<Vec<(u64, Policy)>>,
) -> Desired {
    let index_of: HashMap<&str, u32> = pvds.iter().map(|p| (p.name.as_str(), p.index)).collect();
    let fit = policies.len().min(capacity);
    let policies_unchanged = entries.is_some();
    Desired {
        pvds: pvds
            .iter()
            .map(|p| (p.index, kernel_pvd(p), meta(p)))
            .collect(),
        // One map too small must not fail the whole pass (and leave every
        // other change unapplied): what fits is written, the rest reported.
        policies: entries.unwrap_or_else(|| {
            policies[..fit]
                .iter()
                .map(|p| (p.cgroup_id, kernel_policy(p.id, &p.terms, &index_of)))
                .collect()
        }),
        policies_unchanged,
        selectors: selectors
            .iter()
            .map(|s| (s.key, kernel_policy(s.id, &s.terms, &index_of)))
            .collect(),
        routing: pvds.iter().filter_map(|p| routing(p, rules)).collect(),
        excludes: Vec::new(),
        over_capacity: over_capacity(policies, capacity)
            .iter()
            .map(|p| p.cgroup.to_string())
            .collect(),
        guarded: GuardPlan {
            cgroups: guarded_cgroups(&policies[..fit]),
            interfaces: Vec::new(),
        },
    }
}

/// Where the strict policies' guards go: the egress guard on their
/// cgroups, the packet guard on the namespace's interfaces (set by the pass
/// from its interface dump, see [`guarded_interfaces`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardPlan {
    pub cgroups: Vec<GuardedCgroup>,
    /// Interface indices.
    pub interfaces: Vec<u32>,
}

/// The interfaces the packet guard goes on: every one but loopback (a
/// packet socket may name any interface, one created later included, not
/// only the PvDs'), and none while no cgroup is guarded, so a host without
/// strict policies runs no tc program of mif's at all.
pub fn guarded_interfaces(plan: &GuardPlan, interfaces: &[Interface]) -> Vec<u32> {
    if plan.cgroups.is_empty() {
        return Vec::new();
    }
    let mut indices: Vec<u32> = interfaces
        .iter()
        .filter(|i| !i.loopback)
        .map(|i| i.index)
        .collect();
    indices.sort_unstable();
    indices
}

/// A cgroup the strict policies' guards are attached to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuardedCgroup {
    pub id: u64,
    /// Relative to the cgroup2 mount, as [`ResolvedPolicy::cgroup`].
    pub path: String,
}

/// The cgroups of strict policies (those written to the map), without the
/// ones below another: a program attached to a cgroup runs for all its
/// descendants, those created later too, so one link per subtree is
/// enough, and a packet crosses the guard once. Non-strict policies deeper
/// down still let their sockets through: the guard finds their policy by
/// the same deepest-cgroup walk as the hooks.
pub fn guarded_cgroups(policies: &[ResolvedPolicy]) -> Vec<GuardedCgroup> {
    let strict: HashSet<&str> = policies
        .iter()
        .filter(|p| p.terms.strict)
        .map(|p| p.cgroup.trim_end_matches('/'))
        .collect();
    let mut topmost: Vec<GuardedCgroup> = policies
        .iter()
        .filter(|p| p.terms.strict && !ancestors(&p.cgroup).any(|a| strict.contains(a)))
        .map(|p| GuardedCgroup {
            id: p.cgroup_id,
            path: p.cgroup.to_string(),
        })
        .collect();
    topmost.sort();
    topmost.dedup_by_key(|g| g.id);
    topmost
}

/// The proper ancestors of cgroup path `path` ("/a/b/c": "/a/b", "/a"),
/// without the root, which no policy names (the attach cgroup's own
/// policy would be "/" and covers everything anyway).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let path = path.trim_end_matches('/');
    path.match_indices('/')
        .map(move |(i, _)| &path[..i])
        .filter(|a| !a.is_empty())
}

fn kernel_pvd(p: &PvdState) -> Pvd {
    let mut flags = 0;
    if p.available4() {
        flags |= PVD_AVAIL_V4;
    }
    if p.available6() {
        flags |= PVD_AVAIL_V6;
    }
    if only_via_forwarder(&p.dns) {
        flags |= PVD_DNS_VIA_FORWARDER;
    }
    if p.validation.v4.degraded() {
        flags |= PVD_DEGRADED_V4;
    }
    if p.validation.v6.degraded() {
        flags |= PVD_DEGRADED_V6;
    }
    Pvd {
        mark: p.mark,
        ifindex: p.ifindex.unwrap_or(0),
        flags,
        addr4: p.addr4.map_or(0, ipv4_word),
        addr6: p.addr6.map_or([0; 4], ipv6_words),
        dns4: dns4(&p.dns).map_or(0, ipv4_word),
        dns6: dns6(&p.dns).map_or([0; 4], ipv6_words),
    }
}

/// The IPv4 resolver `dns = "pvd"` sockets of the family are sent to: the
/// PvD's first (configured ones first, else RA-learned; see `model::pvd`).
/// One per family because the kernel program rewrites one destination;
/// resolver libraries retry on their own.
pub fn dns4(servers: &[IpAddr]) -> Option<Ipv4Addr> {
    servers.iter().find_map(|s| match s {
        IpAddr::V4(a) if !a.is_unspecified() && !a.is_loopback() => Some(*a),
        _ => None,
    })
}

/// The IPv6 resolver likewise. Link-local servers (RAs often advertise the
/// router's) need an interface scope that a sock_addr program cannot set,
/// and loopback ones cannot be reached from the PvD's source: both skipped.
pub fn dns6(servers: &[IpAddr]) -> Option<Ipv6Addr> {
    servers.iter().find_map(|s| match s {
        IpAddr::V6(a)
            if !a.is_unspecified()
                && !a.is_loopback()
                && !a.is_unicast_link_local()
                && a.to_ipv4_mapped().is_none() =>
        {
            Some(*a)
        }
        _ => None,
    })
}

/// Whether a PvD's resolvers are all of a kind only the daemon's forwarder
/// can reach: link-local ones (RAs often advertise the router's own
/// `fe80::`), which need the interface as scope.
pub fn only_via_forwarder(servers: &[IpAddr]) -> bool {
    dns4(servers).is_none()
        && dns6(servers).is_none()
        && servers
            .iter()
            .any(|s| matches!(s, IpAddr::V6(a) if a.is_unicast_link_local()))
}

fn meta(p: &PvdState) -> PvdMeta {
    let mut name = [0u8; PVD_NAME_LEN];
    let bytes = p.name.as_bytes();
    let n = bytes.len().min(PVD_NAME_LEN - 1);
    name[..n].copy_from_slice(&bytes[..n]);
    let mut dns = [[0u8; 16]; MAX_DNS];
    for (slot, server) in dns.iter_mut().zip(&p.dns) {
        *slot = match server {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
    }
    PvdMeta {
        name,
        table: p.table,
        dns_count: p.dns.len().min(MAX_DNS) as u32,
        dns,
    }
}

fn kernel_policy(id: u32, terms: &PolicyTerms, index_of: &HashMap<&str, u32>) -> Policy {
    let mut prefer = [NO_PVD; MAX_PREFER];
    let indices = terms
        .prefer
        .iter()
        .filter_map(|name| index_of.get(name.as_str()));
    for (slot, index) in prefer.iter_mut().zip(indices) {
        *slot = *index as u8;
    }
    let mut flags = 0;
    if terms.strict {
        flags |= POLICY_STRICT;
    }
    if terms.bind == BindMode::Device {
        flags |= POLICY_BIND_DEVICE;
    }
    if terms.deny_raw {
        flags |= POLICY_DENY_RAW;
    }
    if terms.dns == DnsMode::Pvd {
        flags |= POLICY_DNS_PVD;
    }
    if !terms.exclude.is_empty() {
        flags |= POLICY_EXCLUDES;
    }
    let allow = if terms.allow.iter().any(|n| n == ALLOW_ANY) {
        u64::MAX
    } else {
        (terms.allow.iter())
            .filter_map(|name| index_of.get(name.as_str()))
            .fold(0u64, |mask, index| mask | 1u64 << index)
    };
    Policy {
        id,
        prefer,
        flags,
        _pad: [0; 3],
        allow,
    }
}

/// The routing of a PvD whose interface exists: its table (a default route
/// while the PvD is an uplink, the host's routes through the interface, and
/// an unreachable default so marked traffic never falls through to another
/// network) and rules for its mark and sources.
fn routing(p: &PvdState, rules: &RuleOptions) -> Option<PvdRouting> {
    let ifindex = p.ifindex?;
    let default = |uplink: &Option<Uplink>, available: bool| {
        Some(uplink.as_ref().filter(|_| available)?.next_hop())
    };
    // The kernel refuses routes over a link that is down (ENETDOWN); such a
    // PvD's table holds only the unreachable default until it comes up.
    let (prefixes, routes) = if p.up {
        (p.prefixes.clone(), p.routes.clone())
    } else {
        (Vec::new(), Vec::new())
    };
    // A `from ADDR` rule sends everything from that address to the PvD's
    // table, unsteered traffic included: only while the table can carry it
    // (an available PvD), so mif never blackholes what the main table
    // routes (a VPN's address while its table is still empty, say).
    let sources: Vec<IpAddr> = p
        .addr4
        .filter(|_| p.available4())
        .map(IpAddr::V4)
        .into_iter()
        .chain(p.addr6.filter(|_| p.available6()).map(IpAddr::V6))
        .collect();
    Some(PvdRouting {
        name: p.name.clone(),
        table: p.table,
        ifindex,
        default4: default(&p.uplink4, p.available4()),
        default6: default(&p.uplink6, p.available6()),
        prefixes,
        routes,
        sources,
        route_source4: p.addr4,
        mark: p.mark,
        mark_mask: rules.mark_mask,
        mark_priority: rules.mark_priority,
        source_priority: rules.source_priority,
    })
}

/// One entry of the exclusion trie: a destination prefix of a policy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExcludeEntry {
    pub policy: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl ExcludeEntry {
    /// The trie's key: prefix length in bits over (policy id, address in
    /// IPv6 form).
    pub fn key(&self) -> (u32, ExcludeKey) {
        let (addr, v4) = match self.addr {
            IpAddr::V4(a) => (a.to_ipv6_mapped(), true),
            IpAddr::V6(a) => (a, false),
        };
        let bits = ExcludeKey::prefix_bits(self.prefix_len.into(), v4);
        let key = ExcludeKey {
            policy: self.policy,
            addr: addr.octets(),
        };
        (bits, key)
    }
}

/// The exclusion trie's entries for the policies [`desired`] writes: each
/// prefix as given, each interface as the prefixes the host routes through
/// it now (`prefixes_of` an interface name; one that does not exist
/// excludes nothing until it does). Sorted, without repeats (policies of
/// one pattern share an id).
pub fn exclusions(
    policies: &[ResolvedPolicy],
    capacity: usize,
    prefixes_of: impl Fn(&str) -> Vec<(IpAddr, u8)>,
) -> Vec<ExcludeEntry> {
    let fit = &policies[..policies.len().min(capacity)];
    let mut entries: Vec<ExcludeEntry> = fit
        .iter()
        .flat_map(|p| p.terms.exclude.iter().map(move |e| (p.id, e)))
        .flat_map(|(policy, exclusion)| {
            let prefixes = match exclusion {
                Exclusion::Prefix(addr, len) => vec![(*addr, *len)],
                Exclusion::Interface(name) => prefixes_of(name),
            };
            prefixes
                .into_iter()
                .map(move |(addr, prefix_len)| ExcludeEntry {
                    policy,
                    addr,
                    prefix_len,
                })
        })
        .collect();
    entries.sort();
    entries.dedup();
    entries
}

/// The routing a previous instance installed, as far as its pinned PvD map
/// tells (`pvds` as [`crate::apply::kernel_maps::KernelMaps::pvds`] lists it):
/// tables, marks and source addresses, what its rules were made of. Enough
/// to remove them (`mif cleanup`) or to know what to prune (adoption).
pub fn installed_routing(
    pvds: &[(u32, Pvd, Option<PvdMeta>)],
    rules: &RuleOptions,
) -> Vec<PvdRouting> {
    pvds.iter()
        .filter_map(|(index, pvd, meta)| {
            let meta = meta.as_ref()?;
            let mut sources = Vec::new();
            if pvd.addr4 != 0 {
                sources.push(ipv4_from_word(pvd.addr4).into());
            }
            if pvd.addr6 != [0; 4] {
                sources.push(ipv6_from_words(pvd.addr6).into());
            }
            Some(PvdRouting {
                name: format!("#{index}"),
                table: meta.table,
                ifindex: pvd.ifindex,
                default4: None,
                default6: None,
                prefixes: Vec::new(),
                routes: Vec::new(),
                sources,
                // Removal needs no routes, only the table.
                route_source4: None,
                mark: pvd.mark,
                mark_mask: rules.mark_mask,
                mark_priority: rules.mark_priority,
                source_priority: rules.source_priority,
            })
        })
        .collect()
}

/// The PvD name a [`PvdMeta`] carries (NUL-padded bytes), the inverse of
/// what [`desired`] writes.
pub fn pvd_name(meta: &PvdMeta) -> String {
    let bytes = &meta.name;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// An IPv4 address as the kernel keeps it in socket contexts: network order.
pub fn ipv4_word(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

pub fn ipv4_from_word(w: u32) -> Ipv4Addr {
    Ipv4Addr::from(w.to_ne_bytes())
}

pub fn ipv6_words(a: Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    [0, 1, 2, 3].map(|i| u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]))
}

pub fn ipv6_from_words(w: [u32; 4]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    for (i, word) in w.iter().enumerate() {
        o[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
    }
    Ipv6Addr::from(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvd(index: u32, name: &str, up: bool) -> PvdState {
        PvdState {
            index,
            name: name.into(),
            interface: name.into(),
            ifindex: Some(10 + index),
            up,
            addr4: Some(Ipv4Addr::new(198, 18, index as u8, 2)),
            addr6: None,
            kind: Default::default(),
            uplink4: Some(Uplink::main_default(
                Ipv4Addr::new(198, 18, index as u8, 1).into(),
                100,
            )),
            uplink6: None,
            prefixes: vec![],
            routes: vec![],
            routes_left_out: 0,
            mark: (index + 1) << 24,
            table: 100 + index,
            dns: vec![],
            dns_source: Default::default(),
            domains: vec![],
            domains_source: Default::default(),
            validation: Default::default(),
            captive_portal_api: None,
            captive_portal_source: Default::default(),
        }
    }

    const RULES: RuleOptions = RuleOptions {
        mark_mask: 0x7f00_0000,
        mark_priority: 9000,
        source_priority: 9001,
    };

    #[test]
    fn policies_become_index_lists_with_flags() {
        let pvds = [pvd(0, "wlan0", true), pvd(1, "wwan0", false)];
        let policy = ResolvedPolicy {
            id: 7,
            cgroup_id: 4242,
            cgroup: "/a".into(),
            terms: PolicyTerms {
                prefer: vec!["wwan0".into(), "wlan0".into()],
                strict: true,
                bind: BindMode::Device,
                ..Default::default()
            }
            .into(),
        };
        let d = desired(
            &pvds,
            std::slice::from_ref(&policy),
            &RULES,
            POLICY_CAPACITY_MAX,
        );
        let (cg, p) = d.policies[0];
        assert_eq!(cg, 4242);
        assert_eq!(p.id, 7);
        assert_eq!(&p.prefer[..3], &[1, 0, NO_PVD]);
        assert!(p.is_strict() && p.binds_device() && !p.denies_raw());

        let loose_raw = ResolvedPolicy {
            terms: PolicyTerms {
                strict: false,
                bind: BindMode::Mark,
                deny_raw: true,
                ..(*policy.terms).clone()
            }
            .into(),
            ..policy
        };
        let (_, p) = desired(&pvds, &[loose_raw], &RULES, POLICY_CAPACITY_MAX).policies[0];
        assert_eq!(p.flags, POLICY_DENY_RAW);
    }

    #[test]
    fn availability_and_addresses_reach_the_kernel_form() {
        let pvds = [pvd(0, "wlan0", true), pvd(1, "wwan0", false)];
        let d = desired(&pvds, &[], &RULES, POLICY_CAPACITY_MAX);
        let (_, up, meta) = d.pvds[0];
        assert_eq!(up.flags, PVD_AVAIL_V4);
        assert_eq!(ipv4_from_word(up.addr4), Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(&meta.name[..6], b"wlan0\0");
        assert_eq!(pvd_name(&meta), "wlan0", "names stop at the NUL");
        assert_eq!(d.pvds[1].1.flags, 0, "a down link is not available");
        assert_eq!(d.routing.len(), 2);
        assert_eq!(
            d.routing[0].sources,
            [IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2))]
        );
        assert!(
            d.routing[1].sources.is_empty(),
            "no `from` rule to the table of a PvD that cannot carry the traffic"
        );
    }

    #[test]
    fn dns_policies_and_one_resolver_per_family() {
        let mut p = pvd(0, "wlan0", true);
        p.dns = [
            "fe80::1",
            "::1",
            "2001:db8::53",
            "192.0.2.53",
            "2001:db8::54",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let policy = ResolvedPolicy {
            id: 1,
            cgroup_id: 1,
            cgroup: "/a".into(),
            terms: PolicyTerms {
                prefer: vec!["wlan0".into()],
                dns: DnsMode::Pvd,
                ..Default::default()
            }
            .into(),
        };
        let d = desired(
            std::slice::from_ref(&p),
            &[policy],
            &RULES,
            POLICY_CAPACITY_MAX,
        );
        assert_eq!(d.policies[0].1.flags, POLICY_DNS_PVD);
        let k = d.pvds[0].1;
        assert_eq!(ipv4_from_word(k.dns4), Ipv4Addr::new(192, 0, 2, 53));
        assert_eq!(
            ipv6_from_words(k.dns6),
            "2001:db8::53".parse::<Ipv6Addr>().unwrap(),
            "link-local and loopback resolvers are skipped"
        );
        p.dns.clear();
        let k = desired(&[p], &[], &RULES, POLICY_CAPACITY_MAX).pvds[0].1;
        assert_eq!((k.dns4, k.dns6), (0, [0; 4]), "no resolver: left alone");
    }

    #[test]
    fn policies_beyond_the_map_capacity_are_reported_not_dropped_silently() {
        let capacity = 100;
        let policies: Vec<ResolvedPolicy> = (0..capacity as u64 + 3)
            .map(|i| ResolvedPolicy {
                id: 1,
                cgroup_id: 1000 + i,
                cgroup: format!("/c{i}").into(),
                terms: PolicyTerms {
                    prefer: vec!["wlan0".into()],
                    ..Default::default()
                }
                .into(),
            })
            .collect();
        let d = desired(&[pvd(0, "wlan0", true)], &policies, &RULES, capacity);
        assert_eq!(d.policies.len(), capacity);
        let last = capacity;
        assert_eq!(
            d.over_capacity,
            [last, last + 1, last + 2].map(|i| format!("/c{i}"))
        );
        assert!(over_capacity(&policies[..10], capacity).is_empty());
        assert!(desired(
            &[pvd(0, "wlan0", true)],
            &policies,
            &RULES,
            POLICY_CAPACITY_MAX
        )
        .over_capacity
        .is_empty());
    }

    #[test]
    fn the_policy_map_is_sized_for_twice_the_policies_within_bounds() {
        assert_eq!(policy_capacity_for(0), POLICY_CAPACITY_MIN);
        assert_eq!(policy_capacity_for(3), POLICY_CAPACITY_MIN);
        assert_eq!(policy_capacity_for(1_000), POLICY_CAPACITY_MIN);
        assert_eq!(policy_capacity_for(10_000), 32_768);
        assert_eq!(policy_capacity_for(16_385), 65_536);
        assert_eq!(policy_capacity_for(100_000), POLICY_CAPACITY_MAX);
        assert_eq!(policy_capacity_for(usize::MAX), POLICY_CAPACITY_MAX);
        assert_eq!(counter_capacity_for(POLICY_CAPACITY_MIN), 32_768);
        assert_eq!(
            counter_capacity_for(POLICY_CAPACITY_MAX),
            mif_common::MAX_COUNTERS as usize
        );
    }

    #[test]
    fn guards_go_to_the_topmost_strict_cgroups_only() {
        let policy = |id: u64, cgroup: &str, strict: bool| ResolvedPolicy {
            id: id as u32,
            cgroup_id: id,
            cgroup: cgroup.into(),
            terms: PolicyTerms {
                prefer: vec!["wwan0".into()],
                strict,
                ..Default::default()
            }
            .into(),
        };
        let policies = [
            policy(1, "/apps/vpn", true),
            // Below a strict one: its link would run the guard twice.
            policy(2, "/apps/vpn/helper", true),
            // A sibling whose name merely starts like it is not below it.
            policy(3, "/apps/vpn-client", true),
            // Not strict: nothing to guard, at any depth.
            policy(4, "/apps", false),
            policy(5, "/web", false),
            // Strict below a non-strict one: guarded.
            policy(6, "/web/kiosk", true),
        ];
        let guarded = guarded_cgroups(&policies);
        let guarded: Vec<(u64, &str)> = guarded.iter().map(|g| (g.id, g.path.as_str())).collect();
        assert_eq!(
            guarded,
            [(1, "/apps/vpn"), (3, "/apps/vpn-client"), (6, "/web/kiosk")]
        );
        // Only what fits in the map is guarded: the kernel would not find
        // the rest strict anyway.
        let d = desired(&[], &policies, &RULES, 2);
        assert_eq!(d.guarded.cgroups.len(), 1);
        assert!(guarded_cgroups(&policies[3..5]).is_empty());
    }

    #[test]
    fn absent_interfaces_get_no_routing() {
        let mut absent = pvd(0, "tun0", false);
        absent.ifindex = None;
        assert!(desired(&[absent], &[], &RULES, POLICY_CAPACITY_MAX)
            .routing
            .is_empty());
    }

    /// The bug of a declared VPN: its address's `from` rule pointed at a
    /// table with nothing but `unreachable default` while the main table
    /// sent unsteered traffic through the VPN from that address.
    #[test]
    fn source_rules_exist_only_per_available_family() {
        let mut vpn = pvd(0, "vpn", true);
        vpn.addr6 = Some("2001:db8:99::2".parse().unwrap());
        vpn.uplink4 = None;
        vpn.uplink6 = Some(Uplink::main_default("2001:db8:99::1".parse().unwrap(), 1));
        let routing = &desired(&[vpn.clone()], &[], &RULES, POLICY_CAPACITY_MAX).routing[0];
        assert_eq!(
            routing.sources,
            ["2001:db8:99::2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(routing.default4, None);
        vpn.uplink6 = None;
        assert!(desired(&[vpn], &[], &RULES, POLICY_CAPACITY_MAX).routing[0]
            .sources
            .is_empty());
    }

    #[test]
    fn device_only_uplinks_get_a_device_default_and_host_routes() {
        use crate::host::netlink::{HostRoute, NextHop, RouteOrigin, UplinkShape};
        let mut ppp = pvd(0, "ppp0", true);
        ppp.uplink4 = Some(Uplink {
            gateway: None,
            shape: UplinkShape::Default,
            table: Some(254),
            metric: 0,
        });
        ppp.routes = vec![HostRoute {
            dst: "10.8.0.0".parse().unwrap(),
            prefix_len: 16,
            gateway: None,
            metric: 0,
            origin: RouteOrigin::Static,
        }];
        let routing =
            &desired(std::slice::from_ref(&ppp), &[], &RULES, POLICY_CAPACITY_MAX).routing[0];
        assert_eq!(routing.default4, Some(NextHop::Device));
        assert_eq!(routing.routes, ppp.routes);
        // A link that is down gets none of them (the kernel refuses routes
        // over it), and no default.
        ppp.up = false;
        let routing = &desired(&[ppp], &[], &RULES, POLICY_CAPACITY_MAX).routing[0];
        assert!(routing.routes.is_empty() && routing.default4.is_none());
    }

    #[test]
    fn exclusions_resolve_interfaces_and_flag_their_policies() {
        let policy = |id, exclude: &[&str]| ResolvedPolicy {
            id,
            cgroup_id: u64::from(id),
            cgroup: format!("/p{id}").into(),
            terms: PolicyTerms {
                prefer: vec!["wlan0".into()],
                strict: true,
                exclude: exclude.iter().map(|e| e.parse().unwrap()).collect(),
                ..Default::default()
            }
            .into(),
        };
        // Two cgroups of one pattern policy share its id.
        let policies = [
            policy(1, &["192.168.1.7", "docker0", "podman9"]),
            policy(1, &["192.168.1.7"]),
            policy(2, &[]),
        ];
        let by_interface = std::collections::BTreeMap::from([(
            "docker0".to_string(),
            vec![("172.17.0.0".parse().unwrap(), 16)],
        )]);
        let entries = exclusions(&policies, POLICY_CAPACITY_MAX, |name| {
            by_interface.get(name).cloned().unwrap_or_default()
        });
        let shown: Vec<String> = entries
            .iter()
            .map(|e| format!("{} {}/{}", e.policy, e.addr, e.prefix_len))
            .collect();
        assert_eq!(shown, ["1 172.17.0.0/16", "1 192.168.1.7/32"]);
        let d = desired(
            &[pvd(0, "wlan0", true)],
            &policies,
            &RULES,
            POLICY_CAPACITY_MAX,
        );
        assert_eq!(d.policies[0].1.flags & POLICY_EXCLUDES, POLICY_EXCLUDES);
        assert_eq!(d.policies[2].1.flags & POLICY_EXCLUDES, 0);
        // IPv4 prefixes sit in the trie v4-mapped, behind the policy id.
        let (bits, key) = entries[0].key();
        assert_eq!(bits, 32 + 96 + 16);
        assert_eq!(key.policy, 1);
        assert_eq!(&key.addr[10..14], &[0xff, 0xff, 172, 17]);
    }

    #[test]
    fn address_words_round_trip() {
        let a: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
        assert_eq!(ipv6_from_words(ipv6_words(a)), a);
        assert_eq!(ipv4_word(Ipv4Addr::new(127, 0, 0, 1)).to_ne_bytes()[0], 127);
    }
}
