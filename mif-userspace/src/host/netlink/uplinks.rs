//! Which interfaces the host routes the internet through, and the routes
//! each interface has beyond its default, read from route and rule dumps.
//!
//! Real uplinks come in more shapes than `default via GATEWAY`:
//! - `default dev ppp0` (ppp, raw-IP modems, `default dev tun0`): no gateway;
//! - OpenVPN's `redirect-gateway def1`: the split default `0.0.0.0/1` +
//!   `128.0.0.0/1` (`::/1` + `8000::/1`), which beats the main default
//!   without replacing it;
//! - wg-quick and Tailscale: `default dev wg0` in a table of their own
//!   (51820, 52) that an ip rule of theirs points at.
//!
//! Every one of them counts; a table only counts when somebody else's rule
//! leads to it (mif's own rules carry [`MIF_PROTOCOL`] and are skipped, so
//! mif never mistakes its own PvD tables for the host's routing).
//!
//! The more-specific routes of an interface (on-link prefixes, RFC 4191
//! route information options, DHCP classless static routes, VPN-pushed
//! prefixes) are read from the same tables so each PvD's table can carry
//! them: a socket steered to a PvD must reach what the host reaches through
//! that interface, not only the internet.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netlink_packet_route::{
    route::{RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteType},
    rule::{RuleAction, RuleAttribute, RuleMessage},
};
use serde::Serialize;

use super::route_attrs::{gateway_of, metric_of, oif_of, prefix_of, route_table, rule_table};
use super::MIF_PROTOCOL;
use crate::prefix::network;

/// Where a PvD table's default route leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// `default via GATEWAY dev IF`.
    Gateway(IpAddr),
    /// `default dev IF`: device-only uplinks (ppp, raw-IP modems, tun
    /// without a peer address).
    Device,
}

/// How the host reaches the internet through one interface, for one family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uplink {
    /// The next hop, when the route names one (`via`); device-only routes
    /// (`default dev tun0`) have none.
    pub gateway: Option<IpAddr>,
    pub shape: UplinkShape,
    /// The table the route was found in: 254 (main) or another one that a
    /// foreign ip rule leads to; none for [`UplinkShape::PointToPoint`].
    pub table: Option<u32>,
    pub metric: u32,
}

impl Uplink {
    /// An uplink by the main table's `default via GATEWAY`, the most common
    /// shape.
    pub fn main_default(gateway: IpAddr, metric: u32) -> Self {
        Self {
            gateway: Some(gateway),
            shape: UplinkShape::Default,
            table: Some(u32::from(RouteHeader::RT_TABLE_MAIN)),
            metric,
        }
    }

    /// Where a PvD table's default route through this uplink leads.
    pub fn next_hop(&self) -> NextHop {
        self.gateway.map_or(NextHop::Device, NextHop::Gateway)
    }
}

/// The shape of the route that makes an interface an uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UplinkShape {
    /// `default` (`0.0.0.0/0`, `::/0`).
    Default,
    /// `0.0.0.0/1` + `128.0.0.0/1` (or `::/1` + `8000::/1`) through the
    /// same interface, as OpenVPN's `redirect-gateway def1` installs.
    SplitDefault,
    /// No route at all: a declared PvD on a point-to-point link with an
    /// address (a split VPN), whose table gets `default dev IF`.
    PointToPoint,
}

/// A route of the host's, through one interface, more specific than a
/// default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRoute {
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub metric: u32,
    pub origin: RouteOrigin,
}

/// Who put a route in, from its routing protocol: what `mif pvd list`
/// shows as the route's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteOrigin {
    /// The kernel, for an address's prefix (`proto kernel`).
    Kernel,
    /// A router advertisement (`proto ra`: RFC 4191 route information).
    Ra,
    /// A DHCP client (`proto dhcp`: classless static routes, RFC 3442).
    Dhcp,
    /// An administrator or a tool with `ip route` (`proto boot`/`static`;
    /// OpenVPN's pushed routes are `proto boot`).
    Static,
    /// Any other routing daemon.
    Other,
}

impl From<RouteProtocol> for RouteOrigin {
    fn from(protocol: RouteProtocol) -> Self {
        match protocol {
            RouteProtocol::Kernel => Self::Kernel,
            RouteProtocol::Ra => Self::Ra,
            RouteProtocol::Dhcp => Self::Dhcp,
            RouteProtocol::Boot | RouteProtocol::Static => Self::Static,
            _ => Self::Other,
        }
    }
}

/// What the dumps say about one interface's routing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InterfaceRouting {
    pub uplink4: Option<Uplink>,
    pub uplink6: Option<Uplink>,
    pub routes: Vec<HostRoute>,
    /// Routes beyond [`MAX_COPIED_ROUTES`], not copied.
    pub routes_left_out: usize,
}

/// Most routes of one interface a PvD table copies. A desktop's or a
/// container host's interface has a handful; a router with a full BGP
/// table has a million, which a per-PvD copy (and each pass's diff) must
/// not take on: beyond this the widest prefixes are kept and the rest
/// reported (`mif pvd list`, the log).
pub const MAX_COPIED_ROUTES: usize = 4096;

/// Tables that other tools' ip rules lead to (wg-quick's 51820,
/// Tailscale's 52, ...): not the kernel's own, not mif's.
pub(crate) fn foreign_tables(rules: &[RuleMessage]) -> BTreeSet<u32> {
    rules
        .iter()
        .filter(|rule| rule.header.action == RuleAction::ToTable)
        .filter(|rule| {
            !rule
                .attributes
                .iter()
                .any(|a| matches!(a, RuleAttribute::Protocol(p) if u8::from(*p) == MIF_PROTOCOL))
        })
        .map(rule_table)
        .filter(|table| !matches!(table, 0 | 253..=255))
        .collect()
}

/// One route's next hops through single interfaces: `(oif, gateway)`, one
/// per next hop of a multipath route.
fn next_hops(msg: &RouteMessage) -> Vec<(u32, Option<IpAddr>)> {
    let mut hops: Vec<(u32, Option<IpAddr>)> = oif_of(&msg.attributes)
        .map(|oif| (oif, gateway_of(&msg.attributes)))
        .into_iter()
        .collect();
    for attr in &msg.attributes {
        if let RouteAttribute::MultiPath(list) = attr {
            hops.extend(
                list.iter()
                    .map(|hop| (hop.interface_index, gateway_of(&hop.attributes))),
            );
        }
    }
    hops
}

/// A wide route (a candidate part of a split default), waiting for the
/// others.
struct Wide {
    dst: IpAddr,
    len: u8,
    gateway: Option<IpAddr>,
    metric: u32,
    origin: RouteOrigin,
}

/// The widest prefix a split default is made of: `/1` halves for IPv4;
/// down to `/4` for IPv6 (OpenVPN's `2000::/4` + `3000::/4`).
fn is_wide(dst: IpAddr, len: u8) -> bool {
    match dst {
        IpAddr::V4(_) => len == 1,
        IpAddr::V6(_) => (1..=4).contains(&len),
    }
}

/// What a split default must cover: all of IPv4, IPv6's global unicast
/// space.
fn internet(v6: bool) -> (IpAddr, u8) {
    if v6 {
        (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0).into(), 3)
    } else {
        (Ipv4Addr::UNSPECIFIED.into(), 0)
    }
}

/// Whether the union of `parts` covers `target`: one part contains it, or
/// (down to the widest parts' length) both of its halves are covered.
fn covers(parts: &[Wide], target: (IpAddr, u8)) -> bool {
    let (dst, len) = target;
    let contains = |w: &Wide| w.len <= len && network(dst, w.len) == network(w.dst, w.len);
    if parts.iter().any(contains) {
        return true;
    }
    if len >= 4 {
        return false;
    }
    let (low, high) = halves(dst, len);
    covers(parts, (low, len + 1)) && covers(parts, (high, len + 1))
}

/// The two halves of `dst/len`, as `/len+1` prefixes.
fn halves(dst: IpAddr, len: u8) -> (IpAddr, IpAddr) {
    match dst {
        IpAddr::V4(a) => {
            let bit = 1u32 << (31 - u32::from(len));
            (a.into(), Ipv4Addr::from(u32::from(a) | bit).into())
        }
        IpAddr::V6(a) => {
            let bit = 1u128 << (127 - u32::from(len));
            (a.into(), Ipv6Addr::from(u128::from(a) | bit).into())
        }
    }
}

/// Uplinks and more-specific routes per interface index, from a dump of
/// every table's routes and the rules that say which tables count.
pub(crate) fn interface_routing(
    routes: &[RouteMessage],
    rules: &[RuleMessage],
) -> BTreeMap<u32, InterfaceRouting> {
    let main = u32::from(RouteHeader::RT_TABLE_MAIN);
    let foreign = foreign_tables(rules);
    // Wide routes by (oif, IPv6, table), to see whether they add up.
    let mut wide: BTreeMap<(u32, bool, u32), Vec<Wide>> = BTreeMap::new();
    let mut found: BTreeMap<u32, InterfaceRouting> = BTreeMap::new();
    for msg in routes {
        let table = route_table(msg);
        let relevant = table == main || foreign.contains(&table);
        let plain = msg.header.kind == RouteType::Unicast
            && msg.header.source_prefix_length == 0
            && !msg.header.flags.contains(RouteFlags::Cloned);
        if !relevant || !plain {
            continue;
        }
        let Some((dst, len)) = prefix_of(msg) else {
            continue;
        };
        let metric = metric_of(&msg.attributes);
        let v6 = dst.is_ipv6();
        for (oif, gateway) in next_hops(msg) {
            if len == 0 {
                let uplink = Uplink {
                    gateway,
                    shape: UplinkShape::Default,
                    table: Some(table),
                    metric,
                };
                offer(found.entry(oif).or_default(), v6, uplink);
            } else if is_wide(dst, len) {
                wide.entry((oif, v6, table)).or_default().push(Wide {
                    dst,
                    len,
                    gateway,
                    metric,
                    origin: msg.header.protocol.into(),
                });
            } else {
                found.entry(oif).or_default().routes.push(HostRoute {
                    dst,
                    prefix_len: len,
                    gateway,
                    metric,
                    origin: msg.header.protocol.into(),
                });
            }
        }
    }
    for ((oif, v6, table), mut parts) in wide {
        if !covers(&parts, internet(v6)) {
            // Some wide prefixes, not the whole internet: routes like any.
            let entry = found.entry(oif).or_default();
            entry.routes.extend(parts.iter().map(|w| HostRoute {
                dst: w.dst,
                prefix_len: w.len,
                gateway: w.gateway,
                metric: w.metric,
                origin: w.origin,
            }));
            continue;
        }
        parts.sort_by_key(|w| w.metric);
        let uplink = Uplink {
            gateway: parts[0].gateway,
            shape: UplinkShape::SplitDefault,
            table: Some(table),
            metric: parts[0].metric,
        };
        offer(found.entry(oif).or_default(), v6, uplink);
    }
    // Widest first, so a cut keeps the prefixes that cover the most; one
    // copy of a route found in several tables (sort and dedup: a full table
    // has a million routes, so no pairwise comparison).
    for routing in found.values_mut() {
        let routes = &mut routing.routes;
        routes.sort_by_key(|r| (r.prefix_len, r.dst, r.metric, r.gateway));
        routes.dedup();
        routing.routes_left_out = routes.len().saturating_sub(MAX_COPIED_ROUTES);
        routes.truncate(MAX_COPIED_ROUTES);
    }
    found
}

/// Keeps the better uplink of a family: the main table's before another
/// table's (it is what unsteered traffic uses), then a split default
/// before a default (it wins the lookup), then the lower metric.
fn offer(routing: &mut InterfaceRouting, v6: bool, uplink: Uplink) {
    let slot = if v6 {
        &mut routing.uplink6
    } else {
        &mut routing.uplink4
    };
    let rank = |u: &Uplink| {
        (
            u.table != Some(u32::from(RouteHeader::RT_TABLE_MAIN)),
            u.shape != UplinkShape::SplitDefault,
            u.metric,
        )
    };
    if slot
        .as_ref()
        .is_none_or(|known| rank(&uplink) < rank(known))
    {
        *slot = Some(uplink);
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::{
        route::{RouteNextHop, RouteProtocol},
        AddressFamily,
    };

    use super::*;

    fn route(dst: &str, via: Option<&str>, oif: u32, table: u32) -> RouteMessage {
        let (dst, len) = dst.split_once('/').unwrap();
        let dst: IpAddr = dst.parse().unwrap();
        let mut msg = RouteMessage::default();
        msg.header.address_family = match dst {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.destination_prefix_length = len.parse().unwrap();
        msg.header.kind = RouteType::Unicast;
        msg.header.protocol = RouteProtocol::Boot;
        msg.attributes.push(RouteAttribute::Table(table));
        if msg.header.destination_prefix_length > 0 {
            msg.attributes.push(RouteAttribute::Destination(dst.into()));
        }
        if let Some(via) = via {
            let via: IpAddr = via.parse().unwrap();
            msg.attributes.push(RouteAttribute::Gateway(via.into()));
        }
        msg.attributes.push(RouteAttribute::Oif(oif));
        msg
    }

    fn rule_to(table: u32, protocol: u8) -> RuleMessage {
        let mut rule = RuleMessage::default();
        rule.header.action = RuleAction::ToTable;
        rule.attributes.push(RuleAttribute::Table(table));
        rule.attributes
            .push(RuleAttribute::Protocol(RouteProtocol::from(protocol)));
        rule
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_with_and_without_gateway_are_uplinks() {
        let routes = [
            route("0.0.0.0/0", Some("198.18.0.1"), 2, 254),
            route("0.0.0.0/0", None, 3, 254),
            route("::/0", Some("fe80::1"), 2, 254),
        ];
        let found = interface_routing(&routes, &[]);
        let wlan = &found[&2];
        assert_eq!(
            wlan.uplink4.as_ref().unwrap().gateway,
            Some(ip("198.18.0.1"))
        );
        assert_eq!(wlan.uplink6.as_ref().unwrap().gateway, Some(ip("fe80::1")));
        let ppp = found[&3].uplink4.as_ref().unwrap();
        assert_eq!((ppp.gateway, ppp.shape), (None, UplinkShape::Default));
        assert!(found[&3].uplink6.is_none());
    }

    #[test]
    fn a_split_default_needs_both_halves_on_one_interface() {
        let full = [
            route("0.0.0.0/1", Some("10.99.0.1"), 5, 254),
            route("128.0.0.0/1", Some("10.99.0.1"), 5, 254),
            route("::/1", None, 5, 254),
            route("8000::/1", None, 6, 254),
        ];
        let found = interface_routing(&full, &[]);
        let tun = found[&5].uplink4.as_ref().unwrap();
        assert_eq!(
            (tun.gateway, tun.shape, tun.table),
            (Some(ip("10.99.0.1")), UplinkShape::SplitDefault, Some(254))
        );
        // `::/1` holds all of 2000::/3, today's internet: an uplink alone;
        // `8000::/1` holds none of it.
        assert!(found[&5].uplink6.is_some());
        assert!(found.get(&6).is_none_or(|r| r.uplink6.is_none()));
        // The halves are the default, not routes beyond it; a wide route
        // that covers no internet is a route like any.
        assert!(found[&5].routes.is_empty());
        assert_eq!(found[&6].routes[0].dst, ip("8000::"));
        // OpenVPN's `redirect-gateway def1 ipv6`: the global unicast space
        // in wide pieces (and fc00::/7, a route beyond it).
        let v6 = [
            route("::/3", None, 5, 254),
            route("2000::/4", None, 5, 254),
            route("3000::/4", None, 5, 254),
            route("fc00::/7", None, 5, 254),
        ];
        let found = interface_routing(&v6, &[]);
        let tun = found[&5].uplink6.as_ref().unwrap();
        assert_eq!(tun.shape, UplinkShape::SplitDefault);
        let only_2000 = interface_routing(&v6[1..2], &[]);
        assert!(only_2000[&5].uplink6.is_none(), "half of 2000::/3");
    }

    #[test]
    fn other_tables_count_only_behind_someone_elses_rule() {
        let routes = [
            route("0.0.0.0/0", None, 7, 51820),
            route("0.0.0.0/0", None, 8, 52),
            route("0.0.0.0/0", Some("198.18.9.1"), 9, 20_100),
            route("100.64.0.7/32", None, 8, 52),
        ];
        // wg-quick's rule (no protocol of ours), Tailscale's, and mif's own
        // rule to its PvD table 20100.
        let rules = [
            rule_to(51820, 4),
            rule_to(52, 4),
            rule_to(20_100, MIF_PROTOCOL),
        ];
        let found = interface_routing(&routes, &rules);
        assert_eq!(found[&7].uplink4.as_ref().unwrap().table, Some(51820));
        assert_eq!(found[&8].uplink4.as_ref().unwrap().table, Some(52));
        assert_eq!(found[&8].routes[0].dst, ip("100.64.0.7"));
        assert!(found.get(&9).is_none_or(|r| r.uplink4.is_none()));
        let without_rules = interface_routing(&routes, &[]);
        assert!(without_rules.values().all(|r| r.uplink4.is_none()));
    }

    #[test]
    fn the_main_table_wins_then_the_lower_metric() {
        let mut low = route("0.0.0.0/0", Some("198.18.0.254"), 2, 254);
        low.attributes.push(RouteAttribute::Priority(50));
        let mut high = route("0.0.0.0/0", Some("198.18.0.1"), 2, 254);
        high.attributes.push(RouteAttribute::Priority(600));
        let other = route("0.0.0.0/0", Some("198.18.0.9"), 2, 77);
        let found = interface_routing(&[high, other, low], &[rule_to(77, 4)]);
        let uplink = found[&2].uplink4.as_ref().unwrap();
        assert_eq!(
            (uplink.gateway, uplink.metric),
            (Some(ip("198.18.0.254")), 50)
        );
    }

    #[test]
    fn more_specific_routes_keep_their_origin() {
        let mut onlink = route("198.18.0.0/24", None, 2, 254);
        onlink.header.protocol = RouteProtocol::Kernel;
        let mut rio = route("2001:db8:77::/64", Some("fe80::2"), 2, 254);
        rio.header.protocol = RouteProtocol::Ra;
        let mut classless = route("10.20.0.0/16", Some("198.18.0.3"), 2, 254);
        classless.header.protocol = RouteProtocol::Dhcp;
        let mut cloned = route("203.0.113.9/32", Some("198.18.0.1"), 2, 254);
        cloned.header.flags = RouteFlags::Cloned;
        let mut blackhole = route("192.0.2.0/24", None, 2, 254);
        blackhole.header.kind = RouteType::BlackHole;
        let local = route("198.18.0.2/32", None, 2, 255);
        let found = interface_routing(&[onlink, rio, classless, cloned, blackhole, local], &[]);
        let got: Vec<_> = found[&2]
            .routes
            .iter()
            .map(|r| (r.dst.to_string(), r.prefix_len, r.gateway, r.origin))
            .collect();
        // Widest first.
        let kernel = ("198.18.0.0".to_string(), 24, None, RouteOrigin::Kernel);
        let rio = (
            "2001:db8:77::".to_string(),
            64,
            Some(ip("fe80::2")),
            RouteOrigin::Ra,
        );
        let dhcp = (
            "10.20.0.0".to_string(),
            16,
            Some(ip("198.18.0.3")),
            RouteOrigin::Dhcp,
        );
        assert_eq!(got, [dhcp, kernel, rio]);
    }

    #[test]
    fn a_full_table_is_cut_to_its_widest_routes() {
        let routes: Vec<RouteMessage> = (0..MAX_COPIED_ROUTES as u32 + 10)
            .map(|i| {
                let len = if i < 5 { 8 } else { 24 };
                let dst = std::net::Ipv4Addr::from((10 << 24) | (i << 8));
                route(&format!("{dst}/{len}"), Some("198.18.0.1"), 2, 254)
            })
            .collect();
        let found = interface_routing(&routes, &[]);
        assert_eq!(found[&2].routes.len(), MAX_COPIED_ROUTES);
        assert_eq!(found[&2].routes_left_out, 10);
        assert!(found[&2].routes[..5].iter().all(|r| r.prefix_len == 8));
    }

    #[test]
    fn multipath_defaults_make_every_hop_an_uplink() {
        let mut msg = route("0.0.0.0/0", None, 0, 254);
        msg.attributes
            .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        let hop = |via: &str, oif| {
            let mut hop = RouteNextHop::default();
            hop.interface_index = oif;
            hop.attributes.push(RouteAttribute::Gateway(ip(via).into()));
            hop
        };
        msg.attributes.push(RouteAttribute::MultiPath(vec![
            hop("198.51.100.1", 2),
            hop("203.0.113.1", 3),
        ]));
        let found = interface_routing(&[msg], &[]);
        assert_eq!(
            found[&2].uplink4.as_ref().unwrap().gateway,
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            found[&3].uplink4.as_ref().unwrap().gateway,
            Some(ip("203.0.113.1"))
        );
    }
}
