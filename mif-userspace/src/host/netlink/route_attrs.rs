//! Reading the attributes of dumped routes that mif needs, in one place for
//! every reader of route dumps.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_route::{
    route::{RouteAddress, RouteAttribute, RouteMessage},
    rule::{RuleAttribute, RuleMessage},
    AddressFamily,
};

/// The route's metric; the kernel leaves `RTA_PRIORITY` out for IPv4
/// metric 0.
pub(crate) fn metric_of(attrs: &[RouteAttribute]) -> u32 {
    attrs
        .iter()
        .find_map(|attr| match attr {
            RouteAttribute::Priority(metric) => Some(*metric),
            _ => None,
        })
        .unwrap_or(0)
}

pub(crate) fn oif_of(attrs: &[RouteAttribute]) -> Option<u32> {
    attrs.iter().find_map(|attr| match attr {
        RouteAttribute::Oif(oif) => Some(*oif),
        _ => None,
    })
}

pub(crate) fn gateway_of(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|attr| match attr {
        RouteAttribute::Gateway(addr) => ip_of(addr),
        _ => None,
    })
}

pub(crate) fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some((*v4).into()),
        RouteAddress::Inet6(v6) => Some((*v6).into()),
        _ => None,
    }
}

/// The destination prefix: `RTA_DST` and the header's length; a default
/// route has no `RTA_DST`.
pub(crate) fn prefix_of(msg: &RouteMessage) -> Option<(IpAddr, u8)> {
    let len = msg.header.destination_prefix_length;
    let dst = msg.attributes.iter().find_map(|attr| match attr {
        RouteAttribute::Destination(addr) => ip_of(addr),
        _ => None,
    });
    match (dst, msg.header.address_family) {
        (Some(dst), _) => Some((dst, len)),
        (None, AddressFamily::Inet) if len == 0 => Some((Ipv4Addr::UNSPECIFIED.into(), 0)),
        (None, AddressFamily::Inet6) if len == 0 => Some((Ipv6Addr::UNSPECIFIED.into(), 0)),
        _ => None,
    }
}

/// The table of a dumped route: `RTA_TABLE` when present (it is the only
/// place for ids above 255), the header byte otherwise.
pub(crate) fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|attr| match attr {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(msg.header.table.into())
}

/// The table of a dumped rule, `FRA_TABLE` first like [`route_table`].
pub(crate) fn rule_table(msg: &RuleMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|attr| match attr {
            RuleAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(msg.header.table.into())
}
