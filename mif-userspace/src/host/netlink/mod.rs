//! rtnetlink for mif: the connection, the dumps of interfaces, addresses,
//! routes and rules, and the event stream. This module only reads; the
//! writes that use the same connection (a PvD's table and rules) are in
//! [`crate::apply::routing`].
//!
//! Everything mif installs carries the routing protocol [`MIF_PROTOCOL`]
//! (`proto 241` in `ip route`/`ip rule`), so it can be told apart from, and
//! never disturbs, what other tools put in the same namespace.

pub(crate) mod error;
mod events;
pub(crate) mod frames;
mod interfaces;
mod ra;
pub(crate) mod route_attrs;
mod uplinks;

use std::net::{Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::{
    link::LinkExtentMask, route::RouteMessage, rule::RuleMessage, AddressFamily,
};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

pub use self::{
    error::NetlinkError,
    events::{
        decode as decode_events, link_socket, subscribe, ChangeKind, Dnssl, NetEvent, NetEvents,
        Rdnss, DATAGRAM_BUFFER,
    },
    interfaces::{Interface, InterfaceAddr, LinkKind},
    ra::{parse_nduseropt, RaOptions, RaParseError},
    uplinks::{HostRoute, NextHop, RouteOrigin, Uplink, UplinkShape, MAX_COPIED_ROUTES},
};

/// The routing protocol id mif stamps on its routes (`rtm_protocol`) and
/// rules (`FRA_PROTOCOL`). 0–4 are the kernel's own, and the values
/// routing daemons register (/etc/iproute2/rt_protos: 8–18, 42, 99, 186–192)
/// are all below it, so `proto 241` marks exactly what mif put in: removal
/// only ever deletes rules that carry it, and the kernel's rule lookup for a
/// delete honours it too.
pub const MIF_PROTOCOL: u8 = 0xf1;

/// What one pass reads of the host.
#[derive(Debug, Default)]
pub struct HostDump {
    /// Every interface with its state, addresses and routing.
    pub interfaces: Vec<Interface>,
    /// The routes and rules the interfaces were assembled from.
    pub routing: RoutingDump,
}

/// The routes of every table and the rules of both families, as one dump
/// returned them. [`RoutingDump::holds`] tells whether a PvD's routing is in
/// place.
#[derive(Debug, Default)]
pub struct RoutingDump {
    pub(crate) routes: Vec<RouteMessage>,
    pub(crate) rules: Vec<RuleMessage>,
}

/// An rtnetlink connection to one network namespace.
#[derive(Debug, Clone)]
pub struct Netlink {
    pub(crate) handle: Handle,
}

impl Netlink {
    /// Opens an rtnetlink socket in the calling thread's network namespace
    /// (a socket stays in the namespace it was created in, whatever thread
    /// later uses it), spawning the connection task on the current tokio
    /// runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(NetlinkError::NoRuntime)?;
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        // The task ends once every clone of the handle is dropped.
        runtime.spawn(connection);
        Ok(Self { handle })
    }

    /// Every interface with its state, addresses and routing: uplinks and
    /// more-specific routes from the main table and from the tables other
    /// tools' rules lead to.
    pub async fn interfaces(&self) -> Result<Vec<Interface>, NetlinkError> {
        Ok(self.dump().await?.interfaces)
    }

    /// The interfaces, and the routes and rules they were assembled from:
    /// one dump of each, which a pass also checks every PvD's routing
    /// against (instead of dumping everything again per PvD).
    pub async fn dump(&self) -> Result<HostDump, NetlinkError> {
        let links: Vec<_> = self
            .handle
            .link()
            .get()
            // mif reads no counters: without them the dump is about half
            // the size (64 PvDs' links: 1.8 of a pass's 4.7 ms of dumps).
            .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats])
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Dump {
                what: "links",
                source,
            })?;
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Dump {
                what: "addresses",
                source,
            })?;
        let routing = self.routing().await?;
        let mut found = interfaces::assemble(&links, &addrs, &routing.routes, &routing.rules);
        interfaces::refine_kinds(&mut found);
        Ok(HostDump {
            interfaces: found,
            routing,
        })
    }

    /// The routes of every table and the rules of both families.
    pub async fn routing(&self) -> Result<RoutingDump, NetlinkError> {
        let routes = self.routes().await?;
        let rules = self.rules().await?;
        Ok(RoutingDump { routes, rules })
    }

    /// The routes of every table, both families.
    pub(crate) async fn routes(&self) -> Result<Vec<RouteMessage>, NetlinkError> {
        let mut routes = self.routes_v4().await?;
        routes.extend(self.routes_v6().await?);
        Ok(routes)
    }

    /// The ip rules of both families.
    pub(crate) async fn rules(&self) -> Result<Vec<RuleMessage>, NetlinkError> {
        let mut rules = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let dumped: Vec<RuleMessage> = self
                .handle
                .rule()
                .get(version)
                .execute()
                .try_collect()
                .await
                .map_err(|source| NetlinkError::Dump {
                    what: "rules",
                    source,
                })?;
            rules.extend(dumped);
        }
        Ok(rules)
    }

    /// All IPv4 routes of all tables. Without `NETLINK_GET_STRICT_CHK` the
    /// kernel ignores any filter in the request, so callers filter.
    pub(crate) async fn routes_v4(&self) -> Result<Vec<RouteMessage>, NetlinkError> {
        self.dump_routes(
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            "ipv4 routes",
        )
        .await
    }

    /// All IPv6 routes of all tables, like [`Self::routes_v4`].
    pub(crate) async fn routes_v6(&self) -> Result<Vec<RouteMessage>, NetlinkError> {
        self.dump_routes(
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
            "ipv6 routes",
        )
        .await
    }

    async fn dump_routes(
        &self,
        request: RouteMessage,
        what: &'static str,
    ) -> Result<Vec<RouteMessage>, NetlinkError> {
        self.handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Dump { what, source })
    }
}
