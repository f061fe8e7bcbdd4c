//! The host's interfaces as mif sees them: link state and kind, addresses,
//! and how the host routes through each (see [`super::uplinks`]), assembled
//! from link, address, route and rule dumps.

use std::{collections::BTreeMap, net::IpAddr};

use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressMessage},
    link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage},
    route::RouteMessage,
    rule::RuleMessage,
};
use serde::Serialize;

use super::uplinks::{interface_routing, HostRoute, Uplink};

/// One network interface with its state, addresses and routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    /// Administratively up and with carrier (`IFF_UP` and `IFF_LOWER_UP` or
    /// `IFF_RUNNING`): only then can the PvD carry traffic.
    pub up: bool,
    pub loopback: bool,
    pub kind: LinkKind,
    pub addrs: Vec<InterfaceAddr>,
    /// How the host reaches the internet through this interface over IPv4,
    /// if it does (best route first: see [`Uplink`]).
    pub uplink4: Option<Uplink>,
    /// The same for IPv6.
    pub uplink6: Option<Uplink>,
    /// The host's more-specific routes through this interface.
    pub routes: Vec<HostRoute>,
    /// How many more there were than a PvD table copies.
    pub routes_left_out: usize,
}

/// What kind of link an interface is, as far as choosing a network goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkKind {
    /// Ethernet framing (wired, veth, bridges, most USB modems).
    #[default]
    Ethernet,
    /// An 802.11 interface (the kernel's sysfs says `wireless`).
    Wifi,
    /// No link-layer address: tun, ppp, WireGuard, raw-IP modems. The far
    /// end is the only neighbour, so no route is needed to use it.
    PointToPoint,
    Loopback,
    Other,
}

impl LinkKind {
    fn of(link: &LinkMessage) -> Self {
        let flags = link.header.flags;
        if flags.contains(LinkFlags::Loopback) {
            return Self::Loopback;
        }
        if flags.contains(LinkFlags::Pointopoint) {
            return Self::PointToPoint;
        }
        match link.header.link_layer_type {
            LinkLayerType::Ether => Self::Ethernet,
            LinkLayerType::None
            | LinkLayerType::Ppp
            | LinkLayerType::Rawip
            | LinkLayerType::Tunnel
            | LinkLayerType::Tunnel6 => Self::PointToPoint,
            _ => Self::Other,
        }
    }

    pub fn is_point_to_point(self) -> bool {
        self == Self::PointToPoint
    }
}

/// One address of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// `RT_SCOPE_*`: 0 global, 253 link, 254 host.
    pub scope: u8,
    /// `IFA_F_DEPRECATED`: preferred lifetime over, keep for existing flows.
    pub deprecated: bool,
    /// `IFA_F_TENTATIVE` or `IFA_F_DADFAILED`: not usable as a source.
    pub tentative: bool,
    /// `IFA_F_TEMPORARY`: an RFC 8981 privacy address (IPv6 only).
    pub temporary: bool,
    /// The far end of a point-to-point address (`inet A peer B`).
    pub peer: Option<IpAddr>,
}

/// Builds the interface list from link, address, route and rule dumps.
/// Addresses and routes of links missing from the link dump (they raced
/// with it) are dropped.
pub(crate) fn assemble(
    links: &[LinkMessage],
    addrs: &[AddressMessage],
    routes: &[RouteMessage],
    rules: &[RuleMessage],
) -> Vec<Interface> {
    let mut by_index: BTreeMap<u32, Interface> = links
        .iter()
        .map(|link| (link.header.index, interface_of(link)))
        .collect();
    for msg in addrs {
        if let (Some(iface), Some(addr)) = (by_index.get_mut(&msg.header.index), address_of(msg)) {
            iface.addrs.push(addr);
        }
    }
    for (index, routing) in interface_routing(routes, rules) {
        if let Some(iface) = by_index.get_mut(&index) {
            iface.uplink4 = routing.uplink4;
            iface.uplink6 = routing.uplink6;
            iface.routes = routing.routes;
            iface.routes_left_out = routing.routes_left_out;
        }
    }
    by_index.into_values().collect()
}

/// Tells Wi-Fi from other Ethernet-framed links by sysfs, which only
/// describes the namespace sysfs was mounted in: the entry counts only when
/// its ifindex is the interface's (a lab or container namespace may reuse a
/// name the host's sysfs knows).
pub(crate) fn refine_kinds(interfaces: &mut [Interface]) {
    for iface in interfaces
        .iter_mut()
        .filter(|i| i.kind == LinkKind::Ethernet)
    {
        let dir = std::path::Path::new("/sys/class/net").join(&iface.name);
        let same = std::fs::read_to_string(dir.join("ifindex"))
            .is_ok_and(|s| s.trim() == iface.index.to_string());
        if same && dir.join("wireless").exists() {
            iface.kind = LinkKind::Wifi;
        }
    }
}

/// What [`Interface::up`] means, for a link's `ifi_flags`; the event
/// stream judges link notifications by the same rule.
pub(super) fn carries_traffic(flags: LinkFlags) -> bool {
    flags.contains(LinkFlags::Up) && flags.intersects(LinkFlags::LowerUp | LinkFlags::Running)
}

fn interface_of(link: &LinkMessage) -> Interface {
    let flags = link.header.flags;
    let name = link
        .attributes
        .iter()
        .find_map(|attr| match attr {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_default();
    Interface {
        name,
        index: link.header.index,
        up: carries_traffic(flags),
        loopback: flags.contains(LinkFlags::Loopback),
        kind: LinkKind::of(link),
        addrs: Vec::new(),
        uplink4: None,
        uplink6: None,
        routes: Vec::new(),
        routes_left_out: 0,
    }
}

fn address_of(msg: &AddressMessage) -> Option<InterfaceAddr> {
    let mut local = None;
    let mut address = None;
    // IFA_FLAGS carries all 32 bits; the header byte only the low 8.
    let mut flags = AddressFlags::from_bits_retain(msg.header.flags.bits().into());
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(all) => flags = *all,
            _ => {}
        }
    }
    // On point-to-point links IFA_ADDRESS is the peer and IFA_LOCAL ours;
    // otherwise IPv4 sends both equal and IPv6 only IFA_ADDRESS.
    let addr = local.or(address)?;
    Some(InterfaceAddr {
        addr,
        prefix_len: msg.header.prefix_len,
        scope: msg.header.scope.into(),
        deprecated: flags.contains(AddressFlags::Deprecated),
        tentative: flags.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed),
        // IFA_F_TEMPORARY is IFA_F_SECONDARY's bit; IPv4 uses it for the
        // latter.
        temporary: addr.is_ipv6() && flags.contains(AddressFlags::Secondary),
        peer: address.filter(|peer| local.is_some() && *peer != addr),
    })
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::{address::AddressHeaderFlags, AddressFamily};

    use super::*;

    fn link(index: u32, name: &str, flags: LinkFlags) -> LinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = flags;
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        msg
    }

    fn address(index: u32, addr: &str, len: u8, attrs: Vec<AddressAttribute>) -> AddressMessage {
        let addr: IpAddr = addr.parse().unwrap();
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = len;
        msg.header.family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.attributes.push(AddressAttribute::Address(addr));
        msg.attributes.extend(attrs);
        msg
    }

    #[test]
    fn up_needs_carrier() {
        let links = [
            link(
                1,
                "lo",
                LinkFlags::Up | LinkFlags::Loopback | LinkFlags::Running,
            ),
            link(2, "eth0", LinkFlags::Up | LinkFlags::LowerUp),
            link(3, "eth1", LinkFlags::Up),
            link(4, "eth2", LinkFlags::LowerUp),
        ];
        let got: Vec<_> = assemble(&links, &[], &[], &[])
            .into_iter()
            .map(|i| (i.name, i.up, i.loopback))
            .collect();
        assert_eq!(
            got,
            [
                ("lo".into(), true, true),
                ("eth0".into(), true, false),
                ("eth1".into(), false, false),
                ("eth2".into(), false, false),
            ]
        );
    }

    #[test]
    fn address_flags_and_peers() {
        let links = [link(2, "eth0", LinkFlags::Up)];
        let addrs = [
            // Point-to-point: IFA_LOCAL is ours, IFA_ADDRESS the peer.
            address(
                2,
                "10.0.0.2",
                32,
                vec![AddressAttribute::Local("10.0.0.1".parse().unwrap())],
            ),
            // IPv4 secondary shares the bit of IPv6 temporary.
            address(
                2,
                "10.1.0.1",
                24,
                vec![AddressAttribute::Flags(AddressFlags::Secondary)],
            ),
            address(
                2,
                "2001:db8::1",
                64,
                vec![AddressAttribute::Flags(
                    AddressFlags::Secondary | AddressFlags::Deprecated,
                )],
            ),
            address(
                2,
                "2001:db8::2",
                64,
                vec![AddressAttribute::Flags(AddressFlags::Dadfailed)],
            ),
            // Addresses of unknown links are dropped.
            address(9, "192.0.2.1", 24, vec![]),
        ];
        let mut header_only = address(2, "fe80::1", 64, vec![]);
        header_only.header.flags = AddressHeaderFlags::Tentative;
        header_only.header.scope = 253.into();
        let addrs: Vec<_> = addrs.into_iter().chain([header_only]).collect();

        let iface = assemble(&links, &addrs, &[], &[]).remove(0);
        let got: Vec<_> = iface
            .addrs
            .iter()
            .map(|a| {
                (
                    a.addr.to_string(),
                    a.prefix_len,
                    a.scope,
                    a.deprecated,
                    a.tentative,
                    a.temporary,
                    a.peer.map(|p| p.to_string()),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "10.0.0.1".into(),
                    32,
                    0,
                    false,
                    false,
                    false,
                    Some("10.0.0.2".into())
                ),
                ("10.1.0.1".into(), 24, 0, false, false, false, None),
                ("2001:db8::1".into(), 64, 0, true, false, true, None),
                ("2001:db8::2".into(), 64, 0, false, true, false, None),
                ("fe80::1".into(), 64, 253, false, true, false, None),
            ]
        );
    }

    #[test]
    fn point_to_point_links_are_told_apart() {
        let mut tun = link(5, "tun0", LinkFlags::Up | LinkFlags::Pointopoint);
        tun.header.link_layer_type = LinkLayerType::None;
        let mut ppp = link(6, "ppp0", LinkFlags::Up);
        ppp.header.link_layer_type = LinkLayerType::Ppp;
        let mut eth = link(7, "eth0", LinkFlags::Up);
        eth.header.link_layer_type = LinkLayerType::Ether;
        let kinds: Vec<_> = assemble(&[tun, ppp, eth], &[], &[], &[])
            .into_iter()
            .map(|i| i.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                LinkKind::PointToPoint,
                LinkKind::PointToPoint,
                LinkKind::Ethernet
            ]
        );
    }
}
