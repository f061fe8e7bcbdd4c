//! The host's interfaces as mif sees them: link state, addresses and the
//! default gateways of the main table, assembled from three kernel dumps.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressMessage},
    link::{LinkAttribute, LinkFlags, LinkMessage},
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType},
};

use super::plan::route_table;

/// One network interface with its state, addresses and default gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    /// Administratively up and with carrier (`IFF_UP` and `IFF_LOWER_UP` or
    /// `IFF_RUNNING`): only then can the PvD carry traffic.
    pub up: bool,
    pub loopback: bool,
    pub addrs: Vec<InterfaceAddr>,
    /// Gateways of IPv4 default routes of the main table through this
    /// interface, best (lowest) metric first.
    pub gateways4: Vec<Ipv4Addr>,
    /// The same for IPv6 (`::/0`).
    pub gateways6: Vec<Ipv6Addr>,
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
}

/// Builds the interface list from link, address and route dumps. Addresses
/// and routes of links missing from the link dump (they raced with it) are
/// dropped.
pub(crate) fn assemble(
    links: &[LinkMessage],
    addrs: &[AddressMessage],
    routes: &[RouteMessage],
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
    let mut gateways = default_gateways(routes);
    gateways.sort_by_key(|&(metric, ..)| metric);
    for (_, oif, via) in gateways {
        let Some(iface) = by_index.get_mut(&oif) else {
            continue;
        };
        match via {
            IpAddr::V4(v4) if !iface.gateways4.contains(&v4) => iface.gateways4.push(v4),
            IpAddr::V6(v6) if !iface.gateways6.contains(&v6) => iface.gateways6.push(v6),
            _ => {}
        }
    }
    by_index.into_values().collect()
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
        up: flags.contains(LinkFlags::Up)
            && flags.intersects(LinkFlags::LowerUp | LinkFlags::Running),
        loopback: flags.contains(LinkFlags::Loopback),
        addrs: Vec::new(),
        gateways4: Vec::new(),
        gateways6: Vec::new(),
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
    })
}

/// `(metric, oif, gateway)` of every unicast default route of the main
/// table, one per next hop for multipath routes.
fn default_gateways(routes: &[RouteMessage]) -> Vec<(u32, u32, IpAddr)> {
    let mut found = Vec::new();
    for msg in routes.iter().filter(|msg| is_main_default(msg)) {
        let metric = metric_of(&msg.attributes);
        if let (Some(via), Some(oif)) = (gateway_of(&msg.attributes), oif_of(&msg.attributes)) {
            found.push((metric, oif, via));
        }
        for attr in &msg.attributes {
            if let RouteAttribute::MultiPath(hops) = attr {
                found.extend(hops.iter().filter_map(|hop| {
                    gateway_of(&hop.attributes).map(|via| (metric, hop.interface_index, via))
                }));
            }
        }
    }
    found
}

fn is_main_default(msg: &RouteMessage) -> bool {
    route_table(msg) == u32::from(RouteHeader::RT_TABLE_MAIN)
        && msg.header.destination_prefix_length == 0
        && msg.header.source_prefix_length == 0
        && msg.header.kind == RouteType::Unicast
}

fn metric_of(attrs: &[RouteAttribute]) -> u32 {
    attrs
        .iter()
        .find_map(|attr| match attr {
            RouteAttribute::Priority(metric) => Some(*metric),
            _ => None,
        })
        .unwrap_or(0)
}

fn oif_of(attrs: &[RouteAttribute]) -> Option<u32> {
    attrs.iter().find_map(|attr| match attr {
        RouteAttribute::Oif(oif) => Some(*oif),
        _ => None,
    })
}

fn gateway_of(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|attr| match attr {
        RouteAttribute::Gateway(RouteAddress::Inet(v4)) => Some((*v4).into()),
        RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => Some((*v6).into()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::{
        address::AddressHeaderFlags,
        route::{RouteNextHop, RouteProtocol},
        AddressFamily,
    };

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

    fn default_route(via: &str, oif: u32, metric: Option<u32>, table: u8) -> RouteMessage {
        let via: IpAddr = via.parse().unwrap();
        let mut msg = RouteMessage::default();
        msg.header.address_family = match via {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.table = table;
        msg.header.kind = RouteType::Unicast;
        msg.header.protocol = RouteProtocol::Dhcp;
        msg.attributes.push(RouteAttribute::Gateway(via.into()));
        msg.attributes.push(RouteAttribute::Oif(oif));
        msg.attributes.extend(metric.map(RouteAttribute::Priority));
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
        let got: Vec<_> = assemble(&links, &[], &[])
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

        let iface = assemble(&links, &addrs, &[]).remove(0);
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
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1".into(), 32, 0, false, false, false),
                ("10.1.0.1".into(), 24, 0, false, false, false),
                ("2001:db8::1".into(), 64, 0, true, false, true),
                ("2001:db8::2".into(), 64, 0, false, true, false),
                ("fe80::1".into(), 64, 253, false, true, false),
            ]
        );
    }

    #[test]
    fn gateways_come_from_main_defaults_best_metric_first() {
        let links = [
            link(2, "eth0", LinkFlags::Up),
            link(3, "eth1", LinkFlags::Up),
        ];
        let mut multipath = default_route("192.0.2.1", 0, Some(50), 254);
        multipath
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Gateway(_) | RouteAttribute::Oif(_)));
        let hop = |via: &str, oif| {
            let mut hop = RouteNextHop::default();
            hop.interface_index = oif;
            hop.attributes.push(RouteAttribute::Gateway(
                via.parse::<IpAddr>().unwrap().into(),
            ));
            hop
        };
        multipath.attributes.push(RouteAttribute::MultiPath(vec![
            hop("198.51.100.1", 2),
            hop("203.0.113.1", 3),
        ]));
        let mut not_default = default_route("192.0.2.9", 2, None, 254);
        not_default.header.destination_prefix_length = 8;
        let routes = [
            default_route("192.0.2.1", 2, Some(100), 254),
            default_route("192.0.2.2", 2, None, 254),
            default_route("192.0.2.3", 2, Some(10), 100),
            default_route("fe80::1", 2, Some(1024), 254),
            default_route("fe80::1", 2, Some(2048), 254),
            multipath,
            not_default,
        ];
        let ifaces = assemble(&links, &[], &routes);
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            ifaces[0].gateways4,
            [v4("192.0.2.2"), v4("198.51.100.1"), v4("192.0.2.1")]
        );
        assert_eq!(
            ifaces[0].gateways6,
            ["fe80::1".parse::<Ipv6Addr>().unwrap()]
        );
        assert_eq!(ifaces[1].gateways4, [v4("203.0.113.1")]);
    }
}
