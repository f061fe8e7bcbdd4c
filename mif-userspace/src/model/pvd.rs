//! The PvD model: which provisioning domains exist, their addresses, routers
//! and availability, derived purely from the configuration and what netlink
//! reports about the interfaces.
//!
//! Every non-loopback interface forms an implicit PvD named after it
//! (RFC 7556 §2); `[[pvd]]` entries name PvDs explicitly, which also lets a
//! policy name an interface that does not exist yet.
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use mif_common::MAX_PVDS;

use crate::{
    host::netlink::{HostRoute, Interface, InterfaceAddr, LinkKind, Uplink, UplinkShape},
    model::config::Config,
    model::validation::PvdVerdicts,
    prefix::network,
};

/// Instance-wide routing numbers: how PvD indices become marks and tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbering {
    pub mark_mask: u32,
    pub table_base: u32,
}

impl Numbering {
    pub fn mark_shift(&self) -> u32 {
        self.mark_mask.trailing_zeros()
    }

    pub fn mark_of(&self, index: u32) -> u32 {
        mif_common::pvd_mark(index, self.mark_shift())
    }

    /// How many PvD indices the mask can carry: mark values 1..=n, the
    /// all-ones value being the excluded sockets' (`excluded_mark`).
    pub fn capacity(&self) -> u32 {
        ((self.mark_mask >> self.mark_shift()).saturating_sub(1)).min(MAX_PVDS)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NumberingError {
    #[error("mark mask {0:#x} must be one run of contiguous bits")]
    NotContiguous(u32),
    #[error("mark mask {0:#x} is too small: it must hold at least 3 bits (6 PvDs)")]
    TooSmall(u32),
}

/// Checks a mark mask: contiguous bits, room for a useful number of PvDs.
pub fn check_mark_mask(mask: u32) -> Result<(), NumberingError> {
    if mask == 0 {
        return Err(NumberingError::TooSmall(mask));
    }
    let shifted = mask >> mask.trailing_zeros();
    if shifted & (shifted + 1) != 0 {
        return Err(NumberingError::NotContiguous(mask));
    }
    if shifted.count_ones() < 3 {
        return Err(NumberingError::TooSmall(mask));
    }
    Ok(())
}

/// One PvD as mif sees it now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PvdState {
    pub index: u32,
    pub name: String,
    pub interface: String,
    /// None while the interface does not exist.
    pub ifindex: Option<u32>,
    pub up: bool,
    pub kind: LinkKind,
    pub addr4: Option<Ipv4Addr>,
    pub addr6: Option<Ipv6Addr>,
    /// How the host routes the internet through the interface, per family.
    pub uplink4: Option<Uplink>,
    pub uplink6: Option<Uplink>,
    /// On-link prefixes of the interface's global addresses.
    pub prefixes: Vec<(IpAddr, u8)>,
    /// The host's more-specific routes through the interface, which the
    /// PvD's table carries too.
    pub routes: Vec<HostRoute>,
    /// Routes of the interface beyond what a table copies (see
    /// [`crate::host::netlink::MAX_COPIED_ROUTES`]).
    pub routes_left_out: usize,
    pub mark: u32,
    pub table: u32,
    /// DNS servers: configured for the PvD, else learned from router
    /// advertisements (RDNSS) on its interface, else from the host's DHCP
    /// client's lease for it.
    pub dns: Vec<IpAddr>,
    pub dns_source: DnsSource,
    /// DNS domains whose names this PvD's resolvers answer (RFC 6731):
    /// configured `domains`, else the network's DNSSL, else its DHCP
    /// domain and search list. They steer `dns = "pvd"` queries of every
    /// application through the forwarder ([`crate::dns`]).
    pub domains: Vec<String>,
    pub domains_source: DnsSource,
    /// Whether the PvD reaches the internet, per family, as the daemon's
    /// probes last found (see [`crate::model::validation`]); `unknown`
    /// while validation is off or has not probed yet.
    pub validation: PvdVerdicts,
    /// The captive portal's API URI the network announced (RFC 8910: RA
    /// option 37 heard on the interface, else DHCPv4 option 114 in the
    /// host's DHCP client's lease), and where it came from.
    pub captive_portal_api: Option<String>,
    pub captive_portal_source: DnsSource,
}

/// Where a PvD's DNS servers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsSource {
    #[default]
    None,
    Config,
    Ra,
    Dhcp,
}

/// What was learned about one interface beyond what a dump shows: DNS
/// servers and search domains, each with where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    pub servers: Vec<IpAddr>,
    pub servers_from: DnsSource,
    pub domains: Vec<String>,
    pub domains_from: DnsSource,
    /// The captive portal's API URI, see [`learned_captive_portals`].
    pub captive_portal: Option<(String, DnsSource)>,
}

/// [`Learned`] by interface name. See [`learned_dns`] for the precedence.
pub type LearnedDns = BTreeMap<String, Learned>;

/// Resolvers and domains per interface with the documented precedence: a
/// PvD's configured `dns` and `domains` (applied in [`build`]) over router
/// advertisements (RDNSS and DNSSL, RFC 8106: the network's own, current
/// announcement) over the DHCP lease the host's client holds (options 6,
/// 15 and 119), so an IPv4-only DHCP network gets resolvers at all.
/// Servers and domains are chosen apart: an RA may name servers only.
pub fn learned_dns(
    ra_servers: BTreeMap<String, Vec<IpAddr>>,
    ra_domains: BTreeMap<String, Vec<String>>,
    dhcp: BTreeMap<String, crate::host::dns_leases::LinkDns>,
) -> LearnedDns {
    let mut learned = LearnedDns::new();
    for (name, lease) in dhcp {
        let entry = learned.entry(name).or_default();
        if !lease.servers.is_empty() {
            (entry.servers, entry.servers_from) = (lease.servers, DnsSource::Dhcp);
        }
        if !lease.domains.is_empty() {
            (entry.domains, entry.domains_from) = (lease.domains, DnsSource::Dhcp);
        }
        if let Some(uri) = lease.captive_portal {
            entry.captive_portal = Some((uri, DnsSource::Dhcp));
        }
    }
    for (name, servers) in ra_servers.into_iter().filter(|(_, s)| !s.is_empty()) {
        let entry = learned.entry(name).or_default();
        (entry.servers, entry.servers_from) = (servers, DnsSource::Ra);
    }
    for (name, domains) in ra_domains.into_iter().filter(|(_, d)| !d.is_empty()) {
        let entry = learned.entry(name).or_default();
        (entry.domains, entry.domains_from) = (domains, DnsSource::Ra);
    }
    learned
}

/// Adds the captive-portal URIs that router advertisements announced
/// (option 37, by interface) to `learned`, over those of DHCP leases
/// (option 114, which [`learned_dns`] took). RFC 8910 section 2 calls
/// differing URIs a configuration error of the network without saying
/// which wins; the RA's is the one the network announces now, as for DNS.
pub fn learned_captive_portals(learned: &mut LearnedDns, ra: BTreeMap<String, Vec<String>>) {
    for (name, uris) in ra {
        if let Some(uri) = uris.into_iter().last() {
            learned.entry(name).or_default().captive_portal = Some((uri, DnsSource::Ra));
        }
    }
}

impl PvdState {
    /// Usable for IPv4: link up, an IPv4 source, and the host routes the
    /// internet through the interface (a default route with or without a
    /// gateway, a split default, in the main table or one another tool's
    /// rule leads to) or, for a wanted point-to-point link, nothing more.
    pub fn available4(&self) -> bool {
        self.up && self.addr4.is_some() && self.uplink4.is_some()
    }

    pub fn available6(&self) -> bool {
        self.up && self.addr6.is_some() && self.uplink6.is_some()
    }

    /// Why the PvD is not available for a family, in words for `mif pvd
    /// list` and the log; None when it is.
    pub fn unavailable_because(&self, v6: bool) -> Option<String> {
        let (family, has_addr, uplink) = if v6 {
            ("IPv6", self.addr6.is_some(), &self.uplink6)
        } else {
            ("IPv4", self.addr4.is_some(), &self.uplink4)
        };
        let interface = &self.interface;
        if self.ifindex.is_none() {
            Some(format!("interface {interface} does not exist"))
        } else if !self.up {
            Some(format!("link {interface} is down or has no carrier"))
        } else if !has_addr {
            Some(format!("no global {family} address on {interface}"))
        } else if uplink.is_none() {
            Some(format!(
                "no {family} route to the internet through {interface}"
            ))
        } else {
            None
        }
    }

    /// The IPv4 default router, where the uplink has one.
    pub fn gateway4(&self) -> Option<IpAddr> {
        self.uplink4.as_ref().and_then(|u| u.gateway)
    }

    pub fn gateway6(&self) -> Option<IpAddr> {
        self.uplink6.as_ref().and_then(|u| u.gateway)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PvdError {
    #[error("{file}:{line}: pvd.interface = {interface:?}: already claimed by PvD {other:?}")]
    InterfaceClaimed {
        file: String,
        line: usize,
        interface: String,
        other: String,
    },
    #[error("{file}:{line}: pvd.{field} = {value}: already used by PvD {other:?}")]
    Duplicate {
        file: String,
        line: usize,
        field: &'static str,
        value: String,
        other: String,
    },
    #[error(
        "too many PvDs: the mark mask holds {capacity}, the configuration declares {declared}"
    )]
    TooMany { capacity: u32, declared: usize },
}

/// Which index each PvD name has. Indices are marks and tables, which live
/// on in sockets and rules, so a name keeps its index for as long as the
/// daemon runs (and across restarts: the daemon seeds this from the pinned
/// maps), even while its interface is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    by_name: BTreeMap<String, u32>,
}

impl Registry {
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, u32)>) -> Self {
        Self {
            by_name: pairs.into_iter().collect(),
        }
    }

    fn index_taken(&self, index: u32) -> bool {
        self.by_name.values().any(|&i| i == index)
    }

    fn first_free(&self, capacity: u32, also_taken: &BTreeMap<u32, Slot>) -> Option<u32> {
        (0..capacity).find(|i| !self.index_taken(*i) && !also_taken.contains_key(i))
    }
}

/// One PvD's identity before its interface is looked at.
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    interface: String,
    /// A `[[pvd]]` of the configuration.
    declared: bool,
    table: Option<u32>,
    dns: Vec<IpAddr>,
    domains: Vec<String>,
}

/// The PvDs of `config` over `interfaces`. Explicit PvDs with a mark get the
/// index their mark encodes; every other PvD keeps the index `registry` has
/// for its name, or gets the lowest free one (explicit PvDs in file order
/// first, then implicit PvDs by interface name).
///
/// Implicit PvDs are the uplinks: non-loopback interfaces with a default
/// route, plus any interface a policy prefers (`preferred`, the file's and
/// the CLI's policies), plus names seen before (kept,
/// possibly absent, so their index is not reused). Bridges and container
/// veths without a default route are not PvDs unless named.
/// Implicit PvDs beyond the capacity are left out (returned second).
pub fn build(
    config: &Config,
    preferred: &BTreeSet<String>,
    interfaces: &[Interface],
    learned: &LearnedDns,
    numbering: &Numbering,
    registry: &mut Registry,
) -> Result<(Vec<PvdState>, Vec<String>), PvdError> {
    let file = config.path.display().to_string();
    let capacity = numbering.capacity();
    if config.pvds.len() > capacity as usize {
        return Err(PvdError::TooMany {
            capacity,
            declared: config.pvds.len(),
        });
    }

    let mut by_index: BTreeMap<u32, Slot> = BTreeMap::new();
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    let mut tables: BTreeMap<u32, String> = BTreeMap::new();

    // Explicit PvDs with a fixed mark first: their index is not ours to pick.
    let shift = numbering.mark_shift();
    let (fixed, floating): (Vec<_>, Vec<_>) = config.pvds.iter().partition(|p| p.mark.is_some());
    for pvd in fixed.iter().chain(floating.iter()) {
        if let Some(other) = claimed.insert(pvd.interface.clone(), pvd.name.clone()) {
            return Err(PvdError::InterfaceClaimed {
                file: file.clone(),
                line: pvd.line,
                interface: pvd.interface.clone(),
                other,
            });
        }
        let index = match pvd.mark {
            Some(mark) => {
                // check_marks has vouched that it decodes.
                let index =
                    mif_common::pvd_from_mark(mark, numbering.mark_mask, shift).unwrap_or(0);
                if let Some(other) = by_index.get(&index) {
                    return Err(PvdError::Duplicate {
                        file: file.clone(),
                        line: pvd.line,
                        field: "mark",
                        value: format!("{mark:#x}"),
                        other: other.name.clone(),
                    });
                }
                index
            }
            None => match registry.by_name.get(&pvd.name) {
                Some(&i) if !by_index.contains_key(&i) => i,
                _ => registry.first_free(capacity, &by_index).unwrap_or(capacity),
            },
        };
        if let Some(table) = pvd.table {
            if let Some(other) = tables.insert(table, pvd.name.clone()) {
                return Err(PvdError::Duplicate {
                    file: file.clone(),
                    line: pvd.line,
                    field: "table",
                    value: table.to_string(),
                    other,
                });
            }
        }
        registry.by_name.insert(pvd.name.clone(), index);
        by_index.insert(
            index,
            Slot {
                name: pvd.name.clone(),
                interface: pvd.interface.clone(),
                declared: true,
                table: pvd.table,
                dns: pvd.dns.clone(),
                domains: pvd.domains.clone(),
            },
        );
    }

    let mut candidates: Vec<String> = interfaces
        .iter()
        .filter(|i| !i.loopback)
        .filter(|i| i.uplink4.is_some() || i.uplink6.is_some() || preferred.contains(&i.name))
        .map(|i| i.name.clone())
        .chain(registry.by_name.keys().cloned())
        .filter(|name| !claimed.contains_key(name) && !config.pvds.iter().any(|p| &p.name == name))
        .collect();
    candidates.sort();
    candidates.dedup();
    // Names that already have an index first, so newcomers never take theirs.
    candidates.sort_by_key(|name| !registry.by_name.contains_key(name));
    let mut skipped = Vec::new();
    for name in candidates {
        let index = match registry.by_name.get(&name) {
            Some(&i) if !by_index.contains_key(&i) => Some(i),
            _ => registry.first_free(capacity, &by_index),
        };
        match index {
            Some(index) => {
                registry.by_name.insert(name.clone(), index);
                by_index.insert(
                    index,
                    Slot {
                        name: name.clone(),
                        interface: name,
                        declared: false,
                        table: None,
                        dns: Vec::new(),
                        domains: Vec::new(),
                    },
                );
            }
            None => skipped.push(name),
        }
    }

    let pvds = by_index
        .into_iter()
        .map(|(index, slot)| {
            let table = slot.table.unwrap_or(numbering.table_base + index);
            let found = interfaces.iter().find(|i| i.name == slot.interface);
            let wanted = slot.declared || preferred.contains(&slot.name);
            let mut pvd = state(
                index,
                slot.name,
                slot.interface,
                found,
                wanted,
                numbering.mark_of(index),
                table,
            );
            let heard = learned.get(&pvd.interface).filter(|_| found.is_some());
            (pvd.dns, pvd.dns_source) = match heard {
                _ if !slot.dns.is_empty() => (slot.dns, DnsSource::Config),
                Some(h) if !h.servers.is_empty() => (h.servers.clone(), h.servers_from),
                _ => (Vec::new(), DnsSource::None),
            };
            (pvd.domains, pvd.domains_source) = match heard {
                _ if !slot.domains.is_empty() => (slot.domains, DnsSource::Config),
                Some(h) if !h.domains.is_empty() => (h.domains.clone(), h.domains_from),
                _ => (Vec::new(), DnsSource::None),
            };
            if let Some((uri, from)) = heard.and_then(|h| h.captive_portal.clone()) {
                (pvd.captive_portal_api, pvd.captive_portal_source) = (Some(uri), from);
            }
            pvd
        })
        .collect();
    Ok((pvds, skipped))
}

fn state(
    index: u32,
    name: String,
    interface: String,
    found: Option<&Interface>,
    wanted: bool,
    mark: u32,
    table: u32,
) -> PvdState {
    let mut pvd = PvdState {
        index,
        name,
        interface,
        ifindex: None,
        up: false,
        kind: LinkKind::default(),
        addr4: None,
        addr6: None,
        uplink4: None,
        uplink6: None,
        prefixes: Vec::new(),
        routes: Vec::new(),
        routes_left_out: 0,
        mark,
        table,
        dns: Vec::new(),
        dns_source: DnsSource::None,
        domains: Vec::new(),
        domains_source: DnsSource::None,
        validation: PvdVerdicts::default(),
        captive_portal_api: None,
        captive_portal_source: DnsSource::None,
    };
    let Some(link) = found else {
        return pvd;
    };
    let source = |v6| best_source(&link.addrs, v6);
    pvd.addr4 = source(false).and_then(|a| match a {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    });
    pvd.addr6 = source(true).and_then(|a| match a {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    });
    pvd.ifindex = Some(link.index);
    pvd.up = link.up;
    pvd.kind = link.kind;
    pvd.prefixes = on_link_prefixes(&link.addrs);
    pvd.routes = link.routes.clone();
    pvd.routes_left_out = link.routes_left_out;
    // A point-to-point link has one neighbour, so a network somebody asked
    // for (a split VPN installs only its own prefixes, or none) needs no
    // route to be usable: its table gets a default to the far end.
    let point_to_point = |v6: bool| {
        let addr = source(v6)?;
        (wanted && link.kind.is_point_to_point()).then(|| Uplink {
            gateway: link
                .addrs
                .iter()
                .find(|a| a.addr == addr)
                .and_then(|a| a.peer),
            shape: UplinkShape::PointToPoint,
            table: None,
            metric: 0,
        })
    };
    pvd.uplink4 = link.uplink4.clone().or_else(|| point_to_point(false));
    pvd.uplink6 = link.uplink6.clone().or_else(|| point_to_point(true));
    pvd
}

/// The source address a PvD binds for a family, chosen as RFC 6724 would
/// among the interface's own: global scope only (rule 2), usable (not
/// tentative), preferred over deprecated (rule 3); among equals, stable
/// addresses over temporary ones because the bound address must outlive
/// privacy rotation for long connections, then the first listed.
pub fn best_source(addrs: &[InterfaceAddr], v6: bool) -> Option<IpAddr> {
    addrs
        .iter()
        .filter(|a| a.addr.is_ipv6() == v6 && a.scope == 0 && !a.tentative)
        .filter(|a| !is_special(&a.addr))
        .min_by_key(|a| (a.deprecated, a.temporary))
        .map(|a| a.addr)
}

/// Addresses that are never a PvD's source even when scoped global.
fn is_special(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_loopback() || a.is_unspecified() || a.is_link_local(),
        IpAddr::V6(a) => {
            a.is_loopback() || a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

fn on_link_prefixes(addrs: &[InterfaceAddr]) -> Vec<(IpAddr, u8)> {
    let mut seen = HashSet::new();
    addrs
        .iter()
        .filter(|a| a.scope == 0 && !is_special(&a.addr))
        .filter(|a| a.prefix_len < if a.addr.is_ipv6() { 128 } else { 32 })
        .map(|a| (network(a.addr, a.prefix_len), a.prefix_len))
        .filter(|p| seen.insert(*p))
        .collect()
}

/// Every prefix the host reaches through `interface`: its addresses'
/// on-link prefixes and its more-specific routes (what an `exclude =
/// ["docker0"]` stands for), each once.
pub fn interface_prefixes(interface: &Interface) -> Vec<(IpAddr, u8)> {
    let routes = interface
        .routes
        .iter()
        .map(|r| (network(r.dst, r.prefix_len), r.prefix_len));
    let mut prefixes: Vec<(IpAddr, u8)> = on_link_prefixes(&interface.addrs)
        .into_iter()
        .chain(routes)
        .collect();
    prefixes.sort();
    prefixes.dedup();
    prefixes
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::config::parse;

    fn addr(a: &str, len: u8) -> InterfaceAddr {
        InterfaceAddr {
            addr: a.parse().unwrap(),
            prefix_len: len,
            scope: 0,
            deprecated: false,
            tentative: false,
            temporary: false,
            peer: None,
        }
    }

    fn iface(
        name: &str,
        index: u32,
        addrs: Vec<InterfaceAddr>,
        gw4: Option<&str>,
        gw6: Option<&str>,
    ) -> Interface {
        Interface {
            name: name.into(),
            index,
            up: true,
            loopback: name == "lo",
            kind: LinkKind::Ethernet,
            addrs,
            uplink4: gw4.map(|g| Uplink::main_default(g.parse().unwrap(), 100)),
            uplink6: gw6.map(|g| Uplink::main_default(g.parse().unwrap(), 100)),
            routes: vec![],
            routes_left_out: 0,
        }
    }

    /// The PvDs of `config` over `interfaces`, from a fresh registry and
    /// nothing learned.
    fn pvds_of(config: &Config, interfaces: &[Interface]) -> Vec<PvdState> {
        built(
            config,
            interfaces,
            &LearnedDns::new(),
            &mut Registry::default(),
        )
    }

    /// The names `config`'s policies prefer, as the policy set gives them.
    fn preferred(config: &Config) -> BTreeSet<String> {
        config
            .policies
            .iter()
            .flat_map(|p| p.terms.prefer.iter().cloned())
            .collect()
    }

    /// The PvDs [`build`] makes, none skipped.
    fn built(
        config: &Config,
        interfaces: &[Interface],
        learned: &LearnedDns,
        registry: &mut Registry,
    ) -> Vec<PvdState> {
        let (pvds, skipped) = build(
            config,
            &preferred(config),
            interfaces,
            learned,
            &NUMBERING,
            registry,
        )
        .unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        pvds
    }

    const NUMBERING: Numbering = Numbering {
        mark_mask: 0x7f00_0000,
        table_base: 20_100,
    };

    #[test]
    fn implicit_pvds_per_interface_with_availability() {
        let config = parse(Path::new("c.toml"), "").unwrap();
        let interfaces = vec![
            iface("lo", 1, vec![addr("127.0.0.1", 8)], None, None),
            iface(
                "wwan0",
                3,
                vec![addr("198.18.1.2", 24)],
                Some("198.18.1.1"),
                None,
            ),
            iface(
                "wlan0",
                2,
                vec![addr("198.18.0.2", 24), addr("2001:db8::2", 64)],
                Some("198.18.0.1"),
                Some("2001:db8::1"),
            ),
        ];
        let (pvds, skipped) = build(
            &config,
            &preferred(&config),
            &interfaces,
            &LearnedDns::new(),
            &NUMBERING,
            &mut Registry::default(),
        )
        .unwrap();
        assert!(skipped.is_empty());
        let names: Vec<_> = pvds.iter().map(|p| (p.index, p.name.as_str())).collect();
        assert_eq!(names, [(0, "wlan0"), (1, "wwan0")]);
        assert!(pvds[0].available4() && pvds[0].available6());
        assert!(pvds[1].available4() && !pvds[1].available6());
        assert_eq!(pvds[1].mark, 0x0200_0000);
        assert_eq!(pvds[1].table, 20_101);
        assert_eq!(
            pvds[0].prefixes,
            [
                ("198.18.0.0".parse().unwrap(), 24),
                ("2001:db8::".parse().unwrap(), 64)
            ]
        );
    }

    #[test]
    fn explicit_pvds_keep_their_marks_and_may_be_absent() {
        let config = parse(
            Path::new("c.toml"),
            "[[pvd]]\nname = \"cell\"\ninterface = \"wwan0\"\nmark = 0x05000000\ntable = 77\n[[pvd]]\nname = \"vpn\"\ninterface = \"tun0\"\n",
        )
        .unwrap();
        let interfaces = vec![iface(
            "wwan0",
            3,
            vec![addr("198.18.1.2", 24)],
            Some("198.18.1.1"),
            None,
        )];
        let pvds = pvds_of(&config, &interfaces);
        let cell = pvds.iter().find(|p| p.name == "cell").unwrap();
        assert_eq!(
            (cell.index, cell.mark, cell.table, cell.ifindex),
            (4, 0x0500_0000, 77, Some(3))
        );
        let vpn = pvds.iter().find(|p| p.name == "vpn").unwrap();
        assert_eq!((vpn.index, vpn.ifindex, vpn.available4()), (0, None, false));
        // wwan0 is claimed by "cell": no implicit PvD for it.
        assert_eq!(pvds.len(), 2);
    }

    #[test]
    fn indices_are_stable_as_interfaces_come_and_go() {
        let config = parse(Path::new("c.toml"), "").unwrap();
        let gw = Some("198.18.0.1");
        let mut registry = Registry::default();
        let wlan = iface("wlan0", 2, vec![addr("198.18.0.2", 24)], gw, None);
        let pvds = built(
            &config,
            std::slice::from_ref(&wlan),
            &LearnedDns::new(),
            &mut registry,
        );
        assert_eq!(pvds[0].index, 0);
        // A new uplink whose name sorts first must not take wlan0's index.
        let eth = iface(
            "eth0",
            4,
            vec![addr("198.18.2.2", 24)],
            Some("198.18.2.1"),
            None,
        );
        let pvds = built(
            &config,
            &[eth.clone(), wlan.clone()],
            &LearnedDns::new(),
            &mut registry,
        );
        let index = |pvds: &[PvdState], n: &str| pvds.iter().find(|p| p.name == n).map(|p| p.index);
        assert_eq!(
            (index(&pvds, "wlan0"), index(&pvds, "eth0")),
            (Some(0), Some(1))
        );
        // wlan0 vanishes: it stays a PvD, absent and unavailable, index kept.
        let pvds = built(&config, &[eth], &LearnedDns::new(), &mut registry);
        let gone = pvds.iter().find(|p| p.name == "wlan0").unwrap();
        assert_eq!(
            (gone.index, gone.ifindex, gone.available4()),
            (0, None, false)
        );
    }

    #[test]
    fn interfaces_without_a_default_route_are_pvds_only_when_named() {
        let bridge = iface("docker0", 5, vec![addr("172.17.0.1", 16)], None, None);
        let config = parse(Path::new("c.toml"), "").unwrap();
        let pvds = pvds_of(&config, std::slice::from_ref(&bridge));
        assert!(pvds.is_empty());
        let config = parse(
            Path::new("c.toml"),
            "[[policy]]\ncgroup = \"/a\"\nprefer = [\"docker0\"]\n",
        )
        .unwrap();
        let pvds = pvds_of(&config, &[bridge]);
        assert_eq!(pvds[0].name, "docker0");
    }

    fn tun(addrs: Vec<InterfaceAddr>) -> Interface {
        let mut tun = iface("tun0", 9, addrs, None, None);
        tun.kind = LinkKind::PointToPoint;
        tun
    }

    fn p2p_addr(local: &str, peer: &str) -> InterfaceAddr {
        let mut a = addr(local, 32);
        a.peer = Some(peer.parse().unwrap());
        a
    }

    /// A split VPN installs no route: declared, it is usable all the same,
    /// towards its far end; not declared (and not named), it is no PvD.
    #[test]
    fn declared_point_to_point_links_need_no_route() {
        let declared = parse(
            Path::new("c.toml"),
            "[[pvd]]\nname = \"vpn\"\ninterface = \"tun0\"\n",
        )
        .unwrap();
        let link = tun(vec![p2p_addr("10.99.0.2", "10.99.0.1")]);
        let build_with = |config: &Config| pvds_of(config, std::slice::from_ref(&link));
        let pvds = build_with(&declared);
        let vpn = &pvds[0];
        assert!(vpn.available4() && !vpn.available6(), "{vpn:#?}");
        assert_eq!(vpn.addr4, Some("10.99.0.2".parse().unwrap()));
        let uplink = vpn.uplink4.as_ref().unwrap();
        assert_eq!(uplink.shape, UplinkShape::PointToPoint);
        assert_eq!(uplink.gateway, Some("10.99.0.1".parse().unwrap()));
        assert_eq!(
            vpn.unavailable_because(true).as_deref(),
            Some("no global IPv6 address on tun0")
        );

        let nobody = parse(Path::new("c.toml"), "").unwrap();
        assert!(build_with(&nobody).is_empty());
        let named = parse(
            Path::new("c.toml"),
            "[[policy]]\ncgroup = \"/a\"\nprefer = [\"tun0\"]\n",
        )
        .unwrap();
        assert!(build_with(&named)[0].available4());
    }

    #[test]
    fn unavailability_is_explained() {
        let config = parse(
            Path::new("c.toml"),
            "[[pvd]]\nname = \"cell\"\ninterface = \"wwan0\"\n",
        )
        .unwrap();
        let explain = |interfaces: &[Interface]| {
            let pvds = pvds_of(&config, interfaces);
            pvds[0].unavailable_because(false)
        };
        assert_eq!(
            explain(&[]).as_deref(),
            Some("interface wwan0 does not exist")
        );
        let mut down = iface(
            "wwan0",
            3,
            vec![addr("198.18.1.2", 24)],
            Some("198.18.1.1"),
            None,
        );
        down.up = false;
        assert_eq!(
            explain(&[down]).as_deref(),
            Some("link wwan0 is down or has no carrier")
        );
        let no_route = iface("wwan0", 3, vec![addr("198.18.1.2", 24)], None, None);
        assert_eq!(
            explain(&[no_route]).as_deref(),
            Some("no IPv4 route to the internet through wwan0")
        );
        let fine = iface(
            "wwan0",
            3,
            vec![addr("198.18.1.2", 24)],
            Some("198.18.1.1"),
            None,
        );
        assert_eq!(explain(&[fine]), None);
    }

    #[test]
    fn resolvers_come_from_config_then_ra_then_dhcp() {
        let a = |s: &str| -> IpAddr { s.parse().unwrap() };
        let lease = |server: &str, domain: &str| crate::host::dns_leases::LinkDns {
            servers: vec![a(server)],
            domains: vec![domain.to_string()],
            address: None,
            captive_portal: None,
            expires: crate::host::dns_leases::Expiry::Never,
            source: crate::host::dns_leases::LeaseSource {
                path: "/var/lib/dhcp/dhclient.leases".into(),
                format: crate::host::dns_leases::LeaseFormat::Dhclient,
            },
        };
        let ra = BTreeMap::from([("wlan0".to_string(), vec![a("2001:db8::53")])]);
        let dhcp = BTreeMap::from([
            ("wlan0".to_string(), lease("198.18.0.53", "home.lab")),
            ("eth0".to_string(), lease("198.18.2.1", "dhcp.lab")),
        ]);
        let ra_domains = BTreeMap::from([("eth0".to_string(), vec!["ra.lab".to_string()])]);
        let learned = learned_dns(ra, ra_domains, dhcp);
        let w = &learned["wlan0"];
        assert_eq!(
            (&w.servers, w.servers_from),
            (&vec![a("2001:db8::53")], DnsSource::Ra)
        );
        assert_eq!(
            (&w.domains[..], w.domains_from),
            (&["home.lab".to_string()][..], DnsSource::Dhcp)
        );
        let e = &learned["eth0"];
        assert_eq!(
            (&e.servers, e.servers_from),
            (&vec![a("198.18.2.1")], DnsSource::Dhcp)
        );
        assert_eq!(
            (&e.domains[..], e.domains_from),
            (&["ra.lab".to_string()][..], DnsSource::Ra)
        );
        let config = parse(
            Path::new("c.toml"),
            "[[pvd]]\nname = \"wlan0\"\ndns = [\"192.0.2.53\"]\n",
        )
        .unwrap();
        let gw = Some("198.18.0.1");
        let interfaces = [
            iface("wlan0", 2, vec![addr("198.18.0.2", 24)], gw, None),
            iface(
                "eth0",
                3,
                vec![addr("198.18.2.2", 24)],
                Some("198.18.2.1"),
                None,
            ),
        ];
        let pvds = built(&config, &interfaces, &learned, &mut Registry::default());
        let dns = |n: &str| {
            let p = pvds.iter().find(|p| p.name == n).unwrap();
            (p.dns.clone(), p.dns_source)
        };
        assert_eq!(dns("wlan0"), (vec![a("192.0.2.53")], DnsSource::Config));
        assert_eq!(dns("eth0"), (vec![a("198.18.2.1")], DnsSource::Dhcp));
    }

    #[test]
    fn captive_portals_come_from_ra_then_dhcp() {
        let lease = |portal: Option<&str>| crate::host::dns_leases::LinkDns {
            servers: vec![],
            domains: vec![],
            address: None,
            captive_portal: portal.map(str::to_owned),
            expires: crate::host::dns_leases::Expiry::Never,
            source: crate::host::dns_leases::LeaseSource {
                path: "/var/lib/dhcp/dhclient.leases".into(),
                format: crate::host::dns_leases::LeaseFormat::Dhclient,
            },
        };
        let dhcp = BTreeMap::from([
            ("wlan0".to_string(), lease(Some("https://dhcp.lab/a"))),
            ("eth0".to_string(), lease(Some("https://dhcp.lab/b"))),
        ]);
        let mut learned = learned_dns(BTreeMap::new(), BTreeMap::new(), dhcp);
        learned_captive_portals(
            &mut learned,
            BTreeMap::from([("wlan0".to_string(), vec!["https://ra.lab/".to_string()])]),
        );
        let config = parse(Path::new("c.toml"), "").unwrap();
        let interfaces = [
            iface(
                "wlan0",
                2,
                vec![addr("198.18.0.2", 24)],
                Some("198.18.0.1"),
                None,
            ),
            iface(
                "eth0",
                3,
                vec![addr("198.18.2.2", 24)],
                Some("198.18.2.1"),
                None,
            ),
            iface(
                "eth1",
                4,
                vec![addr("198.18.3.2", 24)],
                Some("198.18.3.1"),
                None,
            ),
        ];
        let pvds = built(&config, &interfaces, &learned, &mut Registry::default());
        let portal = |n: &str| {
            let p = pvds.iter().find(|p| p.name == n).unwrap();
            (p.captive_portal_api.as_deref(), p.captive_portal_source)
        };
        assert_eq!(portal("wlan0"), (Some("https://ra.lab/"), DnsSource::Ra));
        assert_eq!(
            portal("eth0"),
            (Some("https://dhcp.lab/b"), DnsSource::Dhcp)
        );
        assert_eq!(portal("eth1"), (None, DnsSource::None));
    }

    #[test]
    fn an_interface_claimed_twice_is_an_error() {
        let config = parse(
            Path::new("c.toml"),
            "[[pvd]]\nname = \"a\"\ninterface = \"x\"\n[[pvd]]\nname = \"b\"\ninterface = \"x\"\n",
        )
        .unwrap();
        let err = build(
            &config,
            &preferred(&config),
            &[],
            &LearnedDns::new(),
            &NUMBERING,
            &mut Registry::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, PvdError::InterfaceClaimed { line: 4, .. }),
            "{err}"
        );
    }

    #[test]
    fn source_choice_prefers_global_preferred_stable() {
        let mut deprecated = addr("2001:db8::10", 64);
        deprecated.deprecated = true;
        let mut temporary = addr("2001:db8::20", 64);
        temporary.temporary = true;
        let mut link_local = addr("fe80::1", 64);
        link_local.scope = 253;
        let stable = addr("2001:db8::30", 64);
        let addrs = vec![link_local, deprecated.clone(), temporary.clone(), stable];
        assert_eq!(
            best_source(&addrs, true),
            Some("2001:db8::30".parse().unwrap())
        );
        assert_eq!(
            best_source(&[deprecated.clone(), temporary], true),
            Some("2001:db8::20".parse().unwrap())
        );
        assert_eq!(
            best_source(&[deprecated], true),
            Some("2001:db8::10".parse().unwrap())
        );
        assert_eq!(best_source(&[addr("10.0.0.1", 8)], true), None);
    }

    #[test]
    fn mark_masks_are_checked() {
        assert_eq!(check_mark_mask(0x7f00_0000), Ok(()));
        assert_eq!(
            check_mark_mask(0x0500_0000),
            Err(NumberingError::NotContiguous(0x0500_0000))
        );
        assert_eq!(check_mark_mask(0x3), Err(NumberingError::TooSmall(0x3)));
        assert_eq!(
            Numbering {
                mark_mask: 0xff,
                table_base: 0
            }
            .capacity(),
            64
        );
        assert_eq!(
            Numbering {
                mark_mask: 0x70,
                table_base: 0
            }
            .capacity(),
            6,
            "0x70 is the excluded sockets' mark"
        );
    }
}
