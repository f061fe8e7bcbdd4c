//! What mif installs for one PvD, as plain values: the routes of its table and
//! the rules that lead to it. Turning a [`PvdRouting`] into these values, and
//! kernel dumps back into them, is pure so it can be tested without a kernel.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netlink_packet_route::{
    route::{RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType},
    rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage},
    AddressFamily,
};

use crate::host::netlink::{
    route_attrs::{ip_of, rule_table},
    HostRoute, NetlinkError, NextHop, MIF_PROTOCOL,
};
use crate::prefix::network;

/// Metric of the on-link prefix routes. IPv6 turns a metric of 0 into 1024,
/// so every metric is explicit to keep kernel dumps equal to what we asked.
const PREFIX_METRIC: u32 = 256;
/// Metric of the default route through the PvD's gateway.
const GATEWAY_METRIC: u32 = 1024;
/// Metric of the unreachable default: last resort, behind any gateway, so a
/// socket of this PvD gets an error (ENETUNREACH, or EHOSTUNREACH for IPv6)
/// instead of falling through to the next rule, and out of another network,
/// when the PvD lacks a gateway.
const UNREACHABLE_METRIC: u32 = u32::MAX;

/// Table ids the kernel itself uses (unspec, compat, default, main, local).
/// `remove` deletes every route of the table, so installing into one of them
/// would later wipe the host's routing.
const RESERVED_TABLES: [u32; 5] = [0, 252, 253, 254, 255];

/// Everything mif installs for one PvD in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvdRouting {
    /// The PvD's name, for error messages.
    pub name: String,
    /// Routing table id; ids above 255 work (carried in `RTA_TABLE`/`FRA_TABLE`).
    pub table: u32,
    /// The interface the PvD lives on.
    pub ifindex: u32,
    /// The IPv4 default route of the table, while the PvD is an IPv4 uplink.
    pub default4: Option<NextHop>,
    /// The IPv6 default route likewise.
    pub default6: Option<NextHop>,
    /// On-link prefixes of the interface's addresses, installed as
    /// link-scope routes.
    pub prefixes: Vec<(IpAddr, u8)>,
    /// The host's more-specific routes through the interface (on-link,
    /// router advertisement, DHCP and VPN routes), copied so the PvD's
    /// sockets reach what the host reaches through it. The table ends in an
    /// unreachable default, so anything else is refused, never leaked.
    pub routes: Vec<HostRoute>,
    /// The PvD's addresses; each gets a `from ADDR lookup table` rule so
    /// replies and sockets bound to them leave through the PvD (RFC 8028).
    pub sources: Vec<IpAddr>,
    /// The source every IPv4 route of the table names (`src`): the PvD's
    /// own IPv4 address, the one `sock_create`'s mark stands for. A marked
    /// socket's connect() finds its route in this table and takes the
    /// route's source, so the connect4 program needs no `bpf_bind` (280 of
    /// its 663 ns, see docs/benchmarks.md). IPv6 routes name none: the
    /// kernel refuses an IPv6 `src` while the address is tentative (DAD),
    /// which every link-up races, so connect6 still binds.
    pub route_source4: Option<Ipv4Addr>,
    pub mark: u32,
    pub mark_mask: u32,
    /// Priority of the `fwmark mark/mask lookup table` rules (both families).
    pub mark_priority: u32,
    /// Priority of the `from ADDR lookup table` rules.
    pub source_priority: u32,
}

impl PvdRouting {
    /// Rejects plans whose rules would hurt other traffic.
    pub(crate) fn validate(&self) -> Result<(), NetlinkError> {
        self.validate_removal()?;
        if self.ifindex == 0 {
            return Err(self.invalid("interface index 0".into()));
        }
        // With no mark bit under the mask the rule matches every socket,
        // unmarked ones included, and would capture the whole host.
        if self.mark & self.mark_mask == 0 {
            return Err(self.invalid(format!(
                "fwmark {:#x}/{:#x} matches unmarked traffic",
                self.mark, self.mark_mask
            )));
        }
        // Priority 0 would sit beside the local table rule and break local
        // delivery.
        if self.mark_priority == 0 || self.source_priority == 0 {
            return Err(self.invalid("rule priority 0 is the local table's".into()));
        }
        let routes = self.routes.iter().map(|r| (r.dst, r.prefix_len));
        if let Some((addr, len)) = self
            .prefixes
            .iter()
            .copied()
            .chain(routes)
            .find(|(addr, len)| *len > max_prefix_len(*addr))
        {
            return Err(self.invalid(format!("prefix {addr}/{len} is too long")));
        }
        Ok(())
    }

    /// Removal only needs the table and priorities (the interface may be
    /// gone by then), but must never empty one of the kernel's own tables.
    pub(crate) fn validate_removal(&self) -> Result<(), NetlinkError> {
        if RESERVED_TABLES.contains(&self.table) {
            return Err(self.invalid(format!("table {} is reserved", self.table)));
        }
        Ok(())
    }

    fn invalid(&self, reason: String) -> NetlinkError {
        NetlinkError::InvalidPlan {
            pvd: self.name.clone(),
            reason,
        }
    }

    /// The routes the table must hold, in the order to add them: the
    /// unreachable safety net first (so the table never lets traffic through
    /// while filling up), then on-link routes, then routes through gateways
    /// (IPv4 gateways must be on-link), the defaults last.
    pub(crate) fn routes(&self) -> Vec<RouteSpec> {
        let oif = self.ifindex;
        let mut routes = vec![
            RouteSpec::unreachable(Ipv4Addr::UNSPECIFIED.into()),
            RouteSpec::unreachable(Ipv6Addr::UNSPECIFIED.into()),
        ];
        let src = |dst: IpAddr| match dst {
            IpAddr::V4(_) => self.route_source4.map(IpAddr::V4),
            IpAddr::V6(_) => None,
        };
        let prefixes = self.prefixes.iter().map(|&(addr, len)| RouteSpec {
            dst: network(addr, len),
            prefix_len: len,
            metric: PREFIX_METRIC,
            kind: RouteKind::OnLink { oif },
            src: src(addr),
        });
        let host = self.routes.iter().map(|r| RouteSpec {
            dst: network(r.dst, r.prefix_len),
            prefix_len: r.prefix_len,
            metric: r.metric,
            kind: match r.gateway {
                Some(via) => RouteKind::Gateway { via, oif },
                None => RouteKind::OnLink { oif },
            },
            src: src(r.dst),
        });
        let defaults = [
            (Ipv4Addr::UNSPECIFIED.into(), self.default4),
            (Ipv6Addr::UNSPECIFIED.into(), self.default6),
        ]
        .into_iter()
        .filter_map(|(dst, hop)| Some(RouteSpec::default_through(dst, hop?, oif, src(dst))));
        let (on_link, via): (Vec<RouteSpec>, Vec<RouteSpec>) = prefixes
            .chain(host)
            .partition(|r| matches!(r.kind, RouteKind::OnLink { .. }));
        for spec in on_link.into_iter().chain(via).chain(defaults) {
            // The kernel's own prefix route (metric 0 or 256) repeats an
            // address's prefix: one route per destination and next hop.
            let same = |r: &RouteSpec| {
                (r.dst, r.prefix_len, &r.kind) == (spec.dst, spec.prefix_len, &spec.kind)
            };
            if !routes.iter().any(same) {
                routes.push(spec);
            }
        }
        routes
    }

    /// The rules leading to the table: the mark rule for each family, then a
    /// source rule per address.
    pub(crate) fn rules(&self) -> Vec<RuleSpec> {
        let mark = |family| RuleSpec {
            family,
            priority: self.mark_priority,
            table: self.table,
            selector: RuleSelector::Mark {
                mark: self.mark,
                mask: self.mark_mask,
            },
        };
        let mut rules = vec![mark(Family::V4), mark(Family::V6)];
        for &src in &self.sources {
            let spec = RuleSpec {
                family: Family::of(src),
                priority: self.source_priority,
                table: self.table,
                selector: RuleSelector::Source(src),
            };
            if !rules.contains(&spec) {
                rules.push(spec);
            }
        }
        rules
    }

    /// Whether a dumped rule is one that mif installed for this PvD: our
    /// protocol, our table, and one of our priorities. Only such rules are
    /// ever deleted.
    pub(crate) fn owns_rule(&self, rule: &RuleMessage) -> bool {
        let attrs = RuleAttrs::of(rule);
        attrs.protocol == Some(MIF_PROTOCOL)
            && rule_table(rule) == self.table
            && attrs
                .priority
                .is_some_and(|p| p == self.mark_priority || p == self.source_priority)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    fn address_family(self) -> AddressFamily {
        match self {
            Self::V4 => AddressFamily::Inet,
            Self::V6 => AddressFamily::Inet6,
        }
    }

    fn from_address_family(family: AddressFamily) -> Option<Self> {
        match family {
            AddressFamily::Inet => Some(Self::V4),
            AddressFamily::Inet6 => Some(Self::V6),
            _ => None,
        }
    }
}

/// One route of a PvD table (the table itself is the plan's).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RouteSpec {
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub metric: u32,
    pub kind: RouteKind,
    /// The preferred source (`RTA_PREFSRC`), see [`PvdRouting::route_source4`].
    pub src: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum RouteKind {
    Gateway { via: IpAddr, oif: u32 },
    OnLink { oif: u32 },
    Unreachable,
}

impl RouteSpec {
    fn unreachable(dst: IpAddr) -> Self {
        Self {
            dst,
            prefix_len: 0,
            metric: UNREACHABLE_METRIC,
            kind: RouteKind::Unreachable,
            src: None,
        }
    }

    /// The default route of family `dst` (`0.0.0.0` or `::`).
    fn default_through(dst: IpAddr, hop: NextHop, oif: u32, src: Option<IpAddr>) -> Self {
        Self {
            dst,
            prefix_len: 0,
            metric: GATEWAY_METRIC,
            kind: match hop {
                NextHop::Gateway(via) => RouteKind::Gateway { via, oif },
                NextHop::Device => RouteKind::OnLink { oif },
            },
            src,
        }
    }

    /// The `RTM_NEWROUTE` message for this route in `table`.
    pub(crate) fn to_message(&self, table: u32) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = Family::of(self.dst).address_family();
        msg.header.destination_prefix_length = self.prefix_len;
        msg.header.protocol = RouteProtocol::from(MIF_PROTOCOL);
        msg.header.table = header_table(table);
        msg.attributes.push(RouteAttribute::Table(table));
        msg.attributes.push(RouteAttribute::Priority(self.metric));
        if self.prefix_len > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(self.dst.into()));
        }
        let (kind, scope) = match self.kind {
            RouteKind::Gateway { via, oif } => {
                msg.attributes.push(RouteAttribute::Gateway(via.into()));
                msg.attributes.push(RouteAttribute::Oif(oif));
                (RouteType::Unicast, RouteScope::Universe)
            }
            RouteKind::OnLink { oif } => {
                msg.attributes.push(RouteAttribute::Oif(oif));
                (RouteType::Unicast, RouteScope::Link)
            }
            RouteKind::Unreachable => (RouteType::Unreachable, RouteScope::Universe),
        };
        if let Some(src) = self.src {
            msg.attributes.push(RouteAttribute::PrefSource(src.into()));
        }
        msg.header.kind = kind;
        msg.header.scope = scope;
        msg
    }

    /// Reads a dumped route back, if it has a shape mif installs. Anything
    /// else (multipath, blackhole, ...) yields `None`.
    pub(crate) fn from_message(msg: &RouteMessage) -> Option<Self> {
        let family = Family::from_address_family(msg.header.address_family)?;
        let attrs = RouteAttrs::of(msg);
        let dst = match attrs.dst {
            Some(dst) => dst,
            None if msg.header.destination_prefix_length == 0 => match family {
                Family::V4 => Ipv4Addr::UNSPECIFIED.into(),
                Family::V6 => Ipv6Addr::UNSPECIFIED.into(),
            },
            None => return None,
        };
        let kind = match (msg.header.kind, attrs.gateway, attrs.oif) {
            // IPv6 reports unreachable routes on `lo`: ignore the device.
            (RouteType::Unreachable, None, _) => RouteKind::Unreachable,
            (RouteType::Unicast, Some(via), Some(oif)) => RouteKind::Gateway { via, oif },
            (RouteType::Unicast, None, Some(oif)) => RouteKind::OnLink { oif },
            _ => return None,
        };
        if attrs.complex_nexthop || msg.header.source_prefix_length != 0 {
            return None;
        }
        Some(Self {
            dst,
            prefix_len: msg.header.destination_prefix_length,
            metric: attrs.metric,
            kind,
            src: attrs.src,
        })
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dst = format!("{}/{}", self.dst, self.prefix_len);
        match self.kind {
            RouteKind::Gateway { via, oif } => write!(f, "{dst} via {via} dev #{oif}")?,
            RouteKind::OnLink { oif } => write!(f, "{dst} dev #{oif} scope link")?,
            RouteKind::Unreachable => write!(f, "unreachable {dst}")?,
        }
        if let Some(src) = self.src {
            write!(f, " src {src}")?;
        }
        write!(f, " metric {}", self.metric)
    }
}

/// One rule leading to a PvD table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RuleSpec {
    pub family: Family,
    pub priority: u32,
    pub table: u32,
    pub selector: RuleSelector,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum RuleSelector {
    Mark {
        mark: u32,
        mask: u32,
    },
    /// A single address: /32 or /128.
    Source(IpAddr),
}

impl RuleSpec {
    /// The `RTM_NEWRULE` message. The action must be explicit: rtnetlink's
    /// `RuleAddRequest` starts from `FR_ACT_UNSPEC`, which is no lookup.
    pub(crate) fn to_message(&self) -> RuleMessage {
        let mut msg = RuleMessage::default();
        msg.header.family = self.family.address_family();
        msg.header.action = RuleAction::ToTable;
        msg.header.table = header_table(self.table);
        msg.attributes.push(RuleAttribute::Table(self.table));
        msg.attributes.push(RuleAttribute::Priority(self.priority));
        msg.attributes
            .push(RuleAttribute::Protocol(RouteProtocol::from(MIF_PROTOCOL)));
        match self.selector {
            RuleSelector::Mark { mark, mask } => {
                msg.attributes.push(RuleAttribute::FwMark(mark));
                msg.attributes.push(RuleAttribute::FwMask(mask));
            }
            RuleSelector::Source(src) => {
                msg.header.src_len = max_prefix_len(src);
                msg.attributes.push(RuleAttribute::Source(src));
            }
        }
        msg
    }

    /// Reads a dumped rule back, if it is exactly of a shape mif installs:
    /// our protocol, `lookup`, and only a mark or a full-length source as
    /// selector. Anything with more selectors yields `None`.
    pub(crate) fn from_message(msg: &RuleMessage) -> Option<Self> {
        let family = Family::from_address_family(msg.header.family)?;
        let attrs = RuleAttrs::of(msg);
        let plain = msg.header.action == RuleAction::ToTable
            && !msg.header.flags.contains(RuleFlags::Invert)
            && msg.header.dst_len == 0
            && msg.header.tos == 0
            && !attrs.other_selectors
            && attrs.protocol == Some(MIF_PROTOCOL);
        if !plain {
            return None;
        }
        let selector = match (attrs.mark, attrs.source) {
            (Some(mark), None) if msg.header.src_len == 0 => RuleSelector::Mark {
                mark,
                // The kernel defaults the mask to all ones when only a mark
                // is given, and always reports it.
                mask: attrs.mask.unwrap_or(u32::MAX),
            },
            (None, Some(src)) if msg.header.src_len == max_prefix_len(src) => {
                RuleSelector::Source(src)
            }
            _ => return None,
        };
        Some(Self {
            family,
            priority: attrs.priority?,
            table: rule_table(msg),
            selector,
        })
    }
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = match self.family {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        };
        write!(f, "{family} priority {} ", self.priority)?;
        match self.selector {
            RuleSelector::Mark { mark, mask } => write!(f, "fwmark {mark:#x}/{mask:#x}")?,
            RuleSelector::Source(src) => write!(f, "from {src}")?,
        }
        write!(f, " lookup {}", self.table)
    }
}

/// The attributes of a route that matter to mif.
#[derive(Default)]
struct RouteAttrs {
    dst: Option<IpAddr>,
    gateway: Option<IpAddr>,
    oif: Option<u32>,
    src: Option<IpAddr>,
    /// The kernel leaves out `RTA_PRIORITY` for IPv4 metric 0.
    metric: u32,
    /// Next hops beyond a plain gateway and device (multipath, nexthop
    /// objects, IPv4 via IPv6): never installed by mif.
    complex_nexthop: bool,
}

impl RouteAttrs {
    fn of(msg: &RouteMessage) -> Self {
        let mut attrs = Self::default();
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(addr) => attrs.dst = ip_of(addr),
                RouteAttribute::Gateway(addr) => attrs.gateway = ip_of(addr),
                RouteAttribute::Oif(oif) => attrs.oif = Some(*oif),
                RouteAttribute::PrefSource(addr) => attrs.src = ip_of(addr),
                RouteAttribute::Priority(metric) => attrs.metric = *metric,
                RouteAttribute::MultiPath(_) | RouteAttribute::Via(_) | RouteAttribute::NhId(_) => {
                    attrs.complex_nexthop = true
                }
                _ => {}
            }
        }
        attrs
    }
}

/// The attributes of a rule that matter to mif.
#[derive(Default)]
struct RuleAttrs {
    priority: Option<u32>,
    protocol: Option<u8>,
    mark: Option<u32>,
    mask: Option<u32>,
    source: Option<IpAddr>,
    /// Any selector mif never sets (iif, oif, dst, uid range, ports, ...).
    other_selectors: bool,
}

impl RuleAttrs {
    fn of(msg: &RuleMessage) -> Self {
        let mut attrs = Self::default();
        for attr in &msg.attributes {
            match attr {
                RuleAttribute::Priority(p) => attrs.priority = Some(*p),
                RuleAttribute::Protocol(p) => attrs.protocol = Some(u8::from(*p)),
                RuleAttribute::FwMark(m) => attrs.mark = Some(*m),
                RuleAttribute::FwMask(m) => attrs.mask = Some(*m),
                RuleAttribute::Source(s) => attrs.source = Some(*s),
                RuleAttribute::Table(_) => {}
                // The kernel reports these in every dump, -1 meaning unset.
                RuleAttribute::SuppressPrefixLen(u32::MAX)
                | RuleAttribute::SuppressIfGroup(u32::MAX) => {}
                _ => attrs.other_selectors = true,
            }
        }
        attrs
    }
}

/// The header byte for a table id: ids above 255 don't fit, so like iproute2
/// we leave it unspecified and rely on the `*_TABLE` attribute.
fn header_table(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC)
}

fn max_prefix_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// A delete request for a dumped route: its header and the attributes that
/// identify it. Output-only ones (cache info, ...) stay out of the request.
pub(crate) fn delete_message(dumped: &RouteMessage) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header = dumped.header.clone();
    msg.attributes = dumped
        .attributes
        .iter()
        .filter(|attr| {
            matches!(
                attr,
                RouteAttribute::Table(_)
                    | RouteAttribute::Destination(_)
                    | RouteAttribute::Source(_)
                    | RouteAttribute::Gateway(_)
                    | RouteAttribute::Via(_)
                    | RouteAttribute::Oif(_)
                    | RouteAttribute::Priority(_)
                    | RouteAttribute::MultiPath(_)
                    | RouteAttribute::NhId(_)
            )
        })
        .cloned()
        .collect();
    msg
}

/// A dumped route for error messages, in mif's terms when it has a shape mif
/// installs.
pub(crate) fn describe_route(msg: &RouteMessage) -> String {
    match RouteSpec::from_message(msg) {
        Some(spec) => spec.to_string(),
        None => {
            let attrs = RouteAttrs::of(msg);
            let dst = attrs
                .dst
                .map_or("default".to_string(), |dst| format!("{dst}"));
            format!(
                "{:?} {dst}/{} metric {}",
                msg.header.kind, msg.header.destination_prefix_length, attrs.metric
            )
        }
    }
}

/// A dumped rule for error messages, like [`describe_route`].
pub(crate) fn describe_rule(msg: &RuleMessage) -> String {
    match RuleSpec::from_message(msg) {
        Some(spec) => spec.to_string(),
        None => format!(
            "priority {} lookup {} (with other selectors)",
            RuleAttrs::of(msg).priority.unwrap_or(0),
            rule_table(msg)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> PvdRouting {
        PvdRouting {
            name: "wan".into(),
            table: 1234,
            ifindex: 7,
            default4: Some(NextHop::Gateway("198.18.5.1".parse().unwrap())),
            default6: Some(NextHop::Gateway("2001:db8:5::1".parse().unwrap())),
            prefixes: vec![
                ("198.18.5.2".parse().unwrap(), 24),
                ("2001:db8:5::2".parse().unwrap(), 64),
                ("198.18.5.0".parse().unwrap(), 24),
            ],
            routes: vec![],
            sources: vec![
                "198.18.5.2".parse().unwrap(),
                "2001:db8:5::2".parse().unwrap(),
            ],
            route_source4: Some("198.18.5.2".parse().unwrap()),
            mark: 0x0100_0000,
            mark_mask: 0x7f00_0000,
            mark_priority: 9000,
            source_priority: 9001,
        }
    }

    #[test]
    fn routes_start_with_unreachable_and_dedupe_prefixes() {
        let routes = plan().routes();
        assert_eq!(routes.len(), 6, "{routes:#?}");
        assert!(routes[..2]
            .iter()
            .all(|r| r.kind == RouteKind::Unreachable && r.metric == u32::MAX));
        let onlink: Vec<_> = routes
            .iter()
            .filter(|r| matches!(r.kind, RouteKind::OnLink { oif: 7 }))
            .map(|r| (r.dst.to_string(), r.prefix_len))
            .collect();
        assert_eq!(
            onlink,
            [
                ("198.18.5.0".to_string(), 24),
                ("2001:db8:5::".to_string(), 64)
            ]
        );
        // Gateways come after the prefixes they depend on.
        assert!(matches!(routes[4].kind, RouteKind::Gateway { oif: 7, .. }));
        assert!(matches!(routes[5].kind, RouteKind::Gateway { oif: 7, .. }));
    }

    #[test]
    fn host_routes_follow_on_link_routes_and_defaults_come_last() {
        use crate::host::netlink::RouteOrigin;
        let host = |dst: &str, len, gateway: Option<&str>, metric| HostRoute {
            dst: dst.parse().unwrap(),
            prefix_len: len,
            gateway: gateway.map(|g| g.parse().unwrap()),
            metric,
            origin: RouteOrigin::Kernel,
        };
        let mut plan = plan();
        plan.default4 = Some(NextHop::Device);
        plan.routes = vec![
            host("2001:db8:77::", 64, Some("fe80::2"), 1024),
            // The kernel's own prefix route: the same as the address's.
            host("198.18.5.0", 24, None, 0),
            host("10.99.0.1", 32, None, 0),
        ];
        let shown: Vec<String> = plan.routes().iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "unreachable 0.0.0.0/0 metric 4294967295",
                "unreachable ::/0 metric 4294967295",
                "198.18.5.0/24 dev #7 scope link src 198.18.5.2 metric 256",
                "2001:db8:5::/64 dev #7 scope link metric 256",
                "10.99.0.1/32 dev #7 scope link src 198.18.5.2 metric 0",
                "2001:db8:77::/64 via fe80::2 dev #7 metric 1024",
                "0.0.0.0/0 dev #7 scope link src 198.18.5.2 metric 1024",
                "::/0 via 2001:db8:5::1 dev #7 metric 1024",
            ]
        );
        for route in plan.routes() {
            assert_eq!(
                RouteSpec::from_message(&route.to_message(1234)),
                Some(route)
            );
        }
    }

    #[test]
    fn routes_round_trip_through_messages() {
        for route in plan().routes() {
            let msg = route.to_message(1234);
            assert_eq!(crate::host::netlink::route_attrs::route_table(&msg), 1234);
            assert_eq!(RouteSpec::from_message(&msg), Some(route));
        }
    }

    #[test]
    fn unreachable_ignores_device_in_dump() {
        let route = RouteSpec::unreachable(Ipv6Addr::UNSPECIFIED.into());
        let mut msg = route.to_message(1234);
        msg.attributes.push(RouteAttribute::Oif(1));
        assert_eq!(RouteSpec::from_message(&msg), Some(route));
    }

    #[test]
    fn ipv4_metric_zero_has_no_attribute() {
        let hop = NextHop::Gateway("10.0.0.1".parse().unwrap());
        let mut msg =
            RouteSpec::default_through(Ipv4Addr::UNSPECIFIED.into(), hop, 3, None).to_message(1234);
        msg.attributes
            .retain(|a| !matches!(a, RouteAttribute::Priority(_)));
        assert_eq!(RouteSpec::from_message(&msg).unwrap().metric, 0);
    }

    #[test]
    fn small_tables_go_in_the_header_too() {
        let msg = RouteSpec::unreachable(Ipv4Addr::UNSPECIFIED.into()).to_message(100);
        assert_eq!(msg.header.table, 100);
        let msg = RouteSpec::unreachable(Ipv4Addr::UNSPECIFIED.into()).to_message(1234);
        assert_eq!(msg.header.table, 0);
    }

    #[test]
    fn rules_cover_both_families_and_each_source() {
        let rules = plan().rules();
        let shown: Vec<_> = rules.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "ipv4 priority 9000 fwmark 0x1000000/0x7f000000 lookup 1234",
                "ipv6 priority 9000 fwmark 0x1000000/0x7f000000 lookup 1234",
                "ipv4 priority 9001 from 198.18.5.2 lookup 1234",
                "ipv6 priority 9001 from 2001:db8:5::2 lookup 1234",
            ]
        );
    }

    #[test]
    fn rules_round_trip_and_are_owned() {
        let plan = plan();
        for rule in plan.rules() {
            let msg = rule.to_message();
            assert_eq!(msg.header.action, RuleAction::ToTable);
            assert!(plan.owns_rule(&msg));
            assert_eq!(RuleSpec::from_message(&msg), Some(rule));
        }
    }

    #[test]
    fn foreign_rules_are_not_owned() {
        let plan = plan();
        let mut msg = plan.rules()[0].to_message();
        msg.attributes
            .retain(|a| !matches!(a, RuleAttribute::Protocol(_)));
        assert!(!plan.owns_rule(&msg), "no protocol");
        assert_eq!(RuleSpec::from_message(&msg), None);

        let mut other_table = plan.clone();
        other_table.table = 77;
        assert!(!other_table.owns_rule(&plan.rules()[0].to_message()));

        let mut other_priority = plan.clone();
        other_priority.mark_priority = 100;
        other_priority.source_priority = 101;
        assert!(!other_priority.owns_rule(&plan.rules()[0].to_message()));
    }

    #[test]
    fn unset_suppressors_in_dumps_are_ignored() {
        let rule = plan().rules()[0].clone();
        let mut msg = rule.to_message();
        msg.header.table = 252;
        msg.attributes
            .push(RuleAttribute::SuppressPrefixLen(u32::MAX));
        assert_eq!(RuleSpec::from_message(&msg), Some(rule));
        msg.attributes.push(RuleAttribute::SuppressPrefixLen(0));
        assert_eq!(RuleSpec::from_message(&msg), None);
    }

    #[test]
    fn extra_selectors_make_a_rule_foreign_in_shape() {
        let mut msg = plan().rules()[0].to_message();
        msg.attributes.push(RuleAttribute::Iifname("lo".into()));
        assert_eq!(RuleSpec::from_message(&msg), None);
    }

    #[test]
    fn validate_rejects_dangerous_plans() {
        assert!(plan().validate().is_ok());
        let check = |edit: fn(&mut PvdRouting)| {
            let mut plan = plan();
            edit(&mut plan);
            plan.validate().unwrap_err().to_string()
        };
        assert!(check(|p| p.table = 254).contains("table 254 is reserved"));
        assert!(check(|p| p.table = 0).contains("reserved"));
        assert!(check(|p| p.mark_mask = 0).contains("unmarked"));
        assert!(check(|p| p.mark = 0).contains("unmarked"));
        assert!(check(|p| p.ifindex = 0).contains("index 0"));
        assert!(check(|p| p.source_priority = 0).contains("priority 0"));
        assert!(
            check(|p| p.prefixes.push(("10.0.0.0".parse().unwrap(), 33))).contains("10.0.0.0/33")
        );
    }
}
