//! A live stream of the kernel's routing-state notifications, for the
//! daemon to reconcile on.
//!
//! The stream reads its own netlink socket, bound to the groups below, and
//! not an rtnetlink `Connection`'s unsolicited-message channel. What
//! netlink-proto 0.14.1 does with a subscription, read from its source:
//!
//! * `ENOBUFS` from `recv` (the receive buffer overran, notifications were
//!   dropped) becomes a synthetic `NLMSG_OVERRUN` message on the unsolicited
//!   channel and the connection keeps going (`framed.rs`), so that much
//!   would be usable.
//! * Any other `recv` error ends the connection future, and with it the
//!   channel, after an `error!` log.
//! * A message netlink-packet-route cannot parse is logged at `error!` and
//!   dropped (`codecs.rs`). `RTM_NEWNDUSEROPT` is such a message: 0.34 has
//!   no type for it ("Unknown message type: 68"), so router advertisement
//!   options could not come through it at all. Any link, address, route or
//!   rule message that a newer kernel's attributes make unparsable would
//!   vanish the same way, and with it a reconcile.
//!
//! The daemon only needs to know *that* something changed, so this reads
//! each message's type from its `nlmsghdr`, parses only the ND user options
//! itself ([`super::ra`]), and sees every error `recv` reports.

use std::{
    collections::VecDeque,
    fmt,
    fs::File,
    io,
    net::Ipv6Addr,
    pin::Pin,
    task::{ready, Context, Poll},
};

use futures::Stream;
use log::{debug, error, warn};
use netlink_packet_core::NLMSG_OVERRUN;
use netlink_packet_route::link::LinkHeader;
use nix::sys::socket::{setsockopt, sockopt::RcvBufForce};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket};
use tokio::io::{unix::AsyncFd, Interest};

pub use super::ra::{Dnssl, Rdnss};
use super::{
    frames,
    interfaces::carries_traffic,
    ra::{parse_nduseropt, RaOptions},
    NetlinkError,
};

/// Every group whose notifications can change what the daemon computes.
const GROUPS: [u32; 8] = [
    libc::RTNLGRP_LINK,
    libc::RTNLGRP_IPV4_IFADDR,
    libc::RTNLGRP_IPV6_IFADDR,
    libc::RTNLGRP_IPV4_ROUTE,
    libc::RTNLGRP_IPV6_ROUTE,
    libc::RTNLGRP_IPV4_RULE,
    libc::RTNLGRP_IPV6_RULE,
    libc::RTNLGRP_ND_USEROPT,
];

/// Receive buffer asked for. The default (`rmem_default`, about 208 KiB)
/// overruns when an interface with many routes goes down or a routing
/// daemon loads a table; 4 MiB holds thousands of notifications.
const RECEIVE_BUFFER: usize = 4 << 20;

/// Read buffer: one datagram. The kernel sizes notifications to fit a page
/// or so; netlink-proto uses the same 64 KiB for whole dump batches.
pub const DATAGRAM_BUFFER: usize = 64 << 10;

/// Datagrams read in one poll at most, so a flood cannot starve the
/// runtime's other tasks.
const READ_BUDGET: usize = 64;

/// What the daemon must react to. Events are triggers: the daemon re-dumps
/// interfaces and reconciles, so no event carries content except router
/// advertisement options, which no dump returns, and the index of a link
/// that went down, which the daemon acts on before the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// A link, address, route or rule was added, changed or removed.
    Changed(ChangeKind),
    /// A link is down (administratively, or it lost its carrier) or was
    /// removed. Always followed by `Changed(Link)` for the full pass; this
    /// lets the daemon stop choosing the link's PvDs at once, without
    /// waiting for the dump (the "link down → flag cleared" time of
    /// docs/benchmarks.md).
    LinkDown { ifindex: u32 },
    /// DNS options of a router advertisement (`RTM_NEWNDUSEROPT`). The
    /// kernel sends each option of an advertisement in a message of its
    /// own, so usually one of the lists holds one entry and the other is
    /// empty; messages with neither (prefix information, captive portal,
    /// PREF64 options) are not reported.
    RaOptions {
        ifindex: u32,
        router: Option<Ipv6Addr>,
        rdnss: Vec<Rdnss>,
        dnssl: Vec<Dnssl>,
        /// The captive portal's API URI (RA option 37, RFC 8910).
        captive_portal: Option<String>,
    },
    /// Notifications may have been lost (the receive buffer overran, or the
    /// socket was replaced): dump everything and reconcile. Router
    /// advertisement options lost this way come back with the router's
    /// next advertisement.
    Resync,
}

/// Which kind of object a [`NetEvent::Changed`] was about (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Link,
    Address,
    Route,
    Rule,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Link => "link",
            Self::Address => "address",
            Self::Route => "route",
            Self::Rule => "rule",
        })
    }
}

impl From<RaOptions> for NetEvent {
    fn from(options: RaOptions) -> Self {
        Self::RaOptions {
            ifindex: options.ifindex,
            router: options.router,
            rdnss: options.rdnss,
            dnssl: options.dnssl,
            captive_portal: options.captive_portal,
        }
    }
}

/// Subscribes, in the calling thread's network namespace, to link,
/// IPv4/IPv6 address, route and rule changes and to router advertisement
/// options. Subscribe before the initial dump, so that no change can fall
/// between the two.
///
/// Must be called from within a tokio runtime, whose reactor then watches
/// the socket.
pub fn subscribe() -> Result<NetEvents, NetlinkError> {
    tokio::runtime::Handle::try_current().map_err(NetlinkError::NoRuntime)?;
    // Kept to re-subscribe in this namespace later, from whichever runtime
    // thread polls then: threads can be in different namespaces.
    let netns = File::open("/proc/thread-self/ns/net")
        .inspect_err(|err| {
            warn!("cannot open own network namespace ({err}); a re-subscription will use the polling thread's")
        })
        .ok();
    let socket =
        register(open_socket().map_err(NetlinkError::Connect)?).map_err(NetlinkError::Connect)?;
    Ok(NetEvents {
        socket,
        netns,
        buf: Vec::with_capacity(DATAGRAM_BUFFER),
        pending: VecDeque::new(),
        failed_last: false,
        closed: false,
    })
}

/// The stream of [`NetEvent`]s from [`subscribe`]. It ends only if the
/// socket broke and could not be replaced (logged).
pub struct NetEvents {
    socket: AsyncFd<Socket>,
    netns: Option<File>,
    buf: Vec<u8>,
    /// Events decoded from datagrams already read, not yet handed out.
    pending: VecDeque<NetEvent>,
    /// Whether the last `recv` failed: see [`NetEvents::poll_event`].
    failed_last: bool,
    closed: bool,
}

impl fmt::Debug for NetEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetEvents")
            .field("socket", self.socket.get_ref())
            .field("pending", &self.pending.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl NetEvents {
    /// The next event, or `None` once the stream has ended.
    ///
    /// Cancel-safe (fine in `tokio::select!`): a datagram is decoded into
    /// the queue in the same poll that reads it, so dropping the future
    /// loses nothing.
    pub async fn next(&mut self) -> Option<NetEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<NetEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Poll::Ready(Some(event));
            }
            if self.closed {
                return Poll::Ready(None);
            }
            ready!(self.poll_fill(cx));
        }
    }

    /// Reads what the socket holds into [`Self::pending`], so that
    /// notifications in a burst are coalesced ([`push`]). Ready once
    /// something is queued or the stream has ended.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..READ_BUDGET {
            let mut guard = match self.socket.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(err)) => {
                    // Only when the runtime's reactor is gone.
                    error!("netlink event socket unusable: {err}");
                    self.closed = true;
                    return Poll::Ready(());
                }
                Poll::Pending if self.pending.is_empty() => return Poll::Pending,
                Poll::Pending => return Poll::Ready(()),
            };
            self.buf.clear();
            let buf = &mut self.buf;
            // MSG_TRUNC makes recv return the datagram's full length, so a
            // datagram too big for the buffer is noticed, not cut short.
            let received =
                match guard.try_io(|socket| socket.get_ref().recv_from(buf, libc::MSG_TRUNC)) {
                    Ok(received) => received,
                    // Drained: readiness is cleared, the next poll waits.
                    Err(_would_block) => continue,
                };
            match received {
                Ok((len, from)) => {
                    self.failed_last = false;
                    // Only the kernel (port 0) may tell us about routing
                    // state; a forged RA option would inject DNS servers.
                    if from.port_number() != 0 {
                        debug!("ignoring netlink datagram from port {}", from.port_number());
                    } else if len > self.buf.len() {
                        warn!("netlink notification of {len} bytes truncated; resynchronising");
                        push(&mut self.pending, NetEvent::Resync);
                    } else {
                        decode_datagram(&self.buf, &mut self.pending);
                    }
                }
                // The kernel reports lost notifications through the
                // socket's pending error, which `recv` returns once and
                // clears: ENOBUFS when the receive buffer overran, or the
                // error a notification failed with (`netlink_set_err`,
                // e.g. EMSGSIZE). The socket itself is fine.
                Err(err) if !self.failed_last => {
                    warn!("netlink event socket: {err}; notifications lost, resynchronising");
                    self.failed_last = true;
                    push(&mut self.pending, NetEvent::Resync);
                }
                // A second error in a row is not that: an overrun leaves
                // the queue full, so the next `recv` has data. The socket
                // is broken; replace it.
                Err(err) => {
                    warn!("netlink event socket failing ({err}); subscribing again");
                    if let Err(err) = self.resubscribe() {
                        error!("cannot subscribe to netlink events again: {err}");
                        self.closed = true;
                        return Poll::Ready(());
                    }
                    push(&mut self.pending, NetEvent::Resync);
                    return Poll::Ready(());
                }
            }
        }
        // Budget spent: let other tasks run before reading on.
        if self.pending.is_empty() {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(())
    }

    /// Replaces the socket with a fresh subscription in the namespace of
    /// the original one. Notifications in between are lost, so callers
    /// must resync.
    fn resubscribe(&mut self) -> io::Result<()> {
        let socket = match &self.netns {
            // A short-lived thread enters the namespace, so no runtime
            // thread changes namespace; only socket creation needs it.
            Some(netns) => std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                        open_socket()
                    })
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("subscribing thread panicked")))
            })?,
            None => open_socket()?,
        };
        self.socket = register(socket)?;
        self.failed_last = false;
        Ok(())
    }
}

impl Stream for NetEvents {
    type Item = NetEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<NetEvent>> {
        self.get_mut().poll_event(cx)
    }
}

/// A non-blocking `NETLINK_ROUTE` socket in the calling thread's namespace,
/// member of [`GROUPS`], with a large receive buffer.
fn open_socket() -> io::Result<Socket> {
    let socket = socket_for(&GROUPS)?;
    socket.set_non_blocking(true)?;
    Ok(socket)
}

/// A blocking `NETLINK_ROUTE` socket in the calling thread's namespace that
/// receives link notifications only, for a thread of its own
/// ([`crate::apply::link_watch`]); [`decode`] reads its datagrams.
pub fn link_socket() -> io::Result<Socket> {
    socket_for(&[libc::RTNLGRP_LINK])
}

/// A blocking socket bound to `groups`, with a large receive buffer.
fn socket_for(groups: &[u32]) -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    // SO_RCVBUFFORCE goes past `net.core.rmem_max` but needs CAP_NET_ADMIN;
    // without it, SO_RCVBUF gives as much as rmem_max allows.
    if let Err(err) = setsockopt(&socket, RcvBufForce, &RECEIVE_BUFFER) {
        debug!("SO_RCVBUFFORCE refused ({err}); falling back to SO_RCVBUF");
        socket.set_rx_buf_sz(RECEIVE_BUFFER as libc::c_int)?;
    }
    socket.bind_auto()?;
    for &group in groups {
        socket.add_membership(group)?;
    }
    Ok(socket)
}

/// Hands the socket to the current runtime's reactor (read interest only:
/// nothing is ever sent).
fn register(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor (closes it on drop, and
    // `as_raw_fd` always returns it); the `AsyncFd` owns the `Socket` and
    // nothing here takes the descriptor out.
    Ok(unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?)
}

/// The events one datagram stands for, as the daemon would queue them.
/// Public for the fuzz targets (`fuzz/`): the kernel frames the datagrams,
/// but the router advertisement options inside come from any host on a
/// link, so no input may make this panic.
pub fn decode(datagram: &[u8]) -> Vec<NetEvent> {
    let mut events = VecDeque::new();
    decode_datagram(datagram, &mut events);
    events.into()
}

/// Decodes the netlink messages of one datagram into events.
fn decode_datagram(datagram: &[u8], events: &mut VecDeque<NetEvent>) {
    for message in frames::messages(datagram) {
        let message = match message {
            Ok(message) => message,
            // The kernel never sends this; what follows cannot be framed,
            // so whatever it said is lost. The messages before it stand.
            Err(err) => {
                warn!("malformed netlink datagram ({err}); resynchronising");
                push(events, NetEvent::Resync);
                return;
            }
        };
        if let Some(ifindex) = link_down(message.kind, message.payload) {
            push(events, NetEvent::LinkDown { ifindex });
        }
        if let Some(event) = event_of(message.kind, message.payload) {
            push(events, event);
        }
    }
}

/// The trigger one message stands for, if any.
fn event_of(kind: u16, payload: &[u8]) -> Option<NetEvent> {
    let changed = |kind| Some(NetEvent::Changed(kind));
    match kind {
        libc::RTM_NEWLINK | libc::RTM_DELLINK => changed(ChangeKind::Link),
        libc::RTM_NEWADDR | libc::RTM_DELADDR => changed(ChangeKind::Address),
        libc::RTM_NEWROUTE | libc::RTM_DELROUTE => changed(ChangeKind::Route),
        libc::RTM_NEWRULE | libc::RTM_DELRULE => changed(ChangeKind::Rule),
        libc::RTM_NEWNDUSEROPT => match parse_nduseropt(payload) {
            Ok(options) if options.is_empty() => None,
            Ok(options) => Some(options.into()),
            Err(err) => {
                // RFC 4861/8106: ignore a malformed option.
                warn!("ignoring router advertisement option: {err}");
                None
            }
        },
        NLMSG_OVERRUN => Some(NetEvent::Resync),
        _ => None,
    }
}

/// The index of the link a link message reports removed, or down in the
/// sense of [`super::Interface::up`] (no `IFF_UP`, or no carrier): a link
/// that cannot carry traffic.
fn link_down(kind: u16, payload: &[u8]) -> Option<u32> {
    if kind != libc::RTM_NEWLINK && kind != libc::RTM_DELLINK {
        return None;
    }
    // Only the fixed `ifinfomsg` is read, not the attributes: a link whose
    // attributes a newer kernel made unparsable must still go down.
    let header = LinkHeader::parse(payload).ok()?;
    // Index 0 names no link, and the kernel's indexes are positive ints.
    let ifindex = Some(header.index).filter(|&i| i != 0 && i32::try_from(i).is_ok())?;
    (kind == libc::RTM_DELLINK || !carries_traffic(header.flags)).then_some(ifindex)
}

/// Queues an event, dropping triggers that one already queued covers: the
/// daemon's reconcile for that one will see this change too, since it
/// happens after this was read. One `ip link set down` sends a dozen
/// notifications; one reconcile is enough. A resync covers every change.
fn push(events: &mut VecDeque<NetEvent>, event: NetEvent) {
    match event {
        NetEvent::Changed(_) | NetEvent::Resync if events.contains(&NetEvent::Resync) => {}
        NetEvent::Changed(_) | NetEvent::LinkDown { .. } if events.contains(&event) => {}
        NetEvent::Resync => {
            events.retain(|queued| !matches!(queued, NetEvent::Changed(_)));
            events.push_back(event);
        }
        _ => events.push_back(event),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        future::Future,
        io::Write,
        os::unix::fs::PermissionsExt,
        process::{Child, Command, Stdio},
        time::Duration,
    };

    use nix::sched::{setns, CloneFlags};

    use super::*;

    /// An `RTM_NEWNDUSEROPT` payload on ifindex 3, without the router.
    fn nduseropt(opts: &[u8]) -> Vec<u8> {
        super::super::ra::test_payload(3, opts, None)
    }

    /// A netlink message as the kernel sends it: header and payload,
    /// padded.
    fn nlmsg(kind: u16, payload: &[u8]) -> Vec<u8> {
        frames::test_message(kind, 0, payload)
    }

    fn decode(datagram: &[u8]) -> Vec<NetEvent> {
        let mut events = VecDeque::new();
        decode_datagram(datagram, &mut events);
        events.into()
    }

    #[test]
    fn messages_become_triggers() {
        let datagram = [
            nlmsg(libc::RTM_NEWLINK, &[0; 16]),
            nlmsg(libc::RTM_DELADDR, &[0; 8]),
            nlmsg(libc::RTM_NEWNEIGH, &[0; 12]),
            nlmsg(libc::RTM_DELROUTE, &[0; 12]),
            nlmsg(libc::RTM_NEWRULE, &[0; 12]),
            nlmsg(libc::RTM_NEWLINK, &[0; 16]),
        ]
        .concat();
        use ChangeKind::*;
        assert_eq!(
            decode(&datagram),
            [Link, Address, Route, Rule].map(NetEvent::Changed)
        );
    }

    /// An `ifinfomsg` for link `index` with `flags`.
    fn ifinfo(index: i32, flags: i32) -> Vec<u8> {
        let mut msg = vec![0; 4];
        msg.extend_from_slice(&index.to_ne_bytes());
        msg.extend_from_slice(&(flags as u32).to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg
    }

    #[test]
    fn links_down_or_removed_are_named() {
        use libc::{IFF_LOWER_UP, IFF_RUNNING, IFF_UP};
        let datagram = [
            // Up with carrier: only the trigger.
            nlmsg(libc::RTM_NEWLINK, &ifinfo(3, IFF_UP | IFF_LOWER_UP)),
            // Up without carrier, administratively down, removed.
            nlmsg(libc::RTM_NEWLINK, &ifinfo(4, IFF_UP)),
            nlmsg(libc::RTM_NEWLINK, &ifinfo(5, IFF_LOWER_UP | IFF_RUNNING)),
            nlmsg(libc::RTM_DELLINK, &ifinfo(6, IFF_UP | IFF_LOWER_UP)),
            // The same link twice, a header too short to say: one event.
            nlmsg(libc::RTM_NEWLINK, &ifinfo(4, 0)),
            nlmsg(libc::RTM_NEWLINK, &ifinfo(7, 0)[..8]),
            // Addresses are not links.
            nlmsg(libc::RTM_DELADDR, &ifinfo(8, 0)),
        ]
        .concat();
        let down = |ifindex| NetEvent::LinkDown { ifindex };
        assert_eq!(
            decode(&datagram),
            [
                NetEvent::Changed(ChangeKind::Link),
                down(4),
                down(5),
                down(6),
                NetEvent::Changed(ChangeKind::Address),
            ]
        );
        // A resync drops the triggers it covers, not what to withdraw now.
        let mut events = VecDeque::new();
        push(&mut events, down(4));
        push(&mut events, NetEvent::Changed(ChangeKind::Link));
        push(&mut events, NetEvent::Resync);
        push(&mut events, down(5));
        assert_eq!(Vec::from(events), [down(4), NetEvent::Resync, down(5)]);
    }

    #[test]
    fn ra_options_are_decoded() {
        let mut rdnss = vec![25, 3, 0, 0, 0, 0, 1, 0];
        rdnss.extend_from_slice(&"2001:db8::53".parse::<Ipv6Addr>().unwrap().octets());
        let mut prefix = vec![3, 4, 64, 0xc0];
        prefix.resize(32, 0);
        let datagram = [
            nlmsg(libc::RTM_NEWNDUSEROPT, &nduseropt(&prefix)),
            nlmsg(libc::RTM_NEWNDUSEROPT, &nduseropt(&rdnss)),
            // Truncated: skipped with a warning.
            nlmsg(libc::RTM_NEWNDUSEROPT, &nduseropt(&rdnss[..16])[..30]),
        ]
        .concat();
        assert_eq!(
            decode(&datagram),
            [NetEvent::RaOptions {
                ifindex: 3,
                router: None,
                rdnss: vec![Rdnss {
                    servers: vec!["2001:db8::53".parse().unwrap()],
                    lifetime: Duration::from_secs(256),
                }],
                dnssl: vec![],
                captive_portal: None,
            }]
        );
    }

    #[test]
    fn malformed_datagrams_resync() {
        let link = nlmsg(libc::RTM_NEWLINK, &[0; 16]);
        // A length past the end, a length shorter than the header, a
        // leftover shorter than a header.
        let mut long = link.clone();
        long[0..4].copy_from_slice(&64u32.to_ne_bytes());
        let mut short = link.clone();
        short[0..4].copy_from_slice(&8u32.to_ne_bytes());
        let leftover = [link.clone(), vec![0; 6]].concat();
        for datagram in [long, short] {
            assert_eq!(decode(&datagram), [NetEvent::Resync]);
        }
        assert_eq!(decode(&leftover), [NetEvent::Resync]);
        assert_eq!(decode(&nlmsg(NLMSG_OVERRUN, &[])), [NetEvent::Resync]);
    }

    #[test]
    fn bursts_are_coalesced() {
        use ChangeKind::*;
        let ra = NetEvent::RaOptions {
            ifindex: 1,
            router: None,
            rdnss: vec![],
            dnssl: vec![],
            captive_portal: None,
        };
        let mut events = VecDeque::new();
        for event in [Link, Address, Link, Route, Address].map(NetEvent::Changed) {
            push(&mut events, event);
        }
        push(&mut events, ra.clone());
        push(&mut events, ra.clone());
        assert_eq!(
            Vec::from(events.clone()),
            [
                NetEvent::Changed(Link),
                NetEvent::Changed(Address),
                NetEvent::Changed(Route),
                ra.clone(),
                ra.clone(),
            ]
        );
        // A resync covers every queued change, and every later one.
        push(&mut events, NetEvent::Resync);
        push(&mut events, NetEvent::Changed(Rule));
        push(&mut events, NetEvent::Resync);
        assert_eq!(Vec::from(events), [ra.clone(), ra, NetEvent::Resync]);
    }

    #[test]
    fn subscribe_needs_a_runtime() {
        let err = subscribe().unwrap_err();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }

    // From here on, tests against the real kernel, in throwaway namespaces
    // (root only; skipped otherwise). The root namespace is never touched.

    /// The veth end in the subscribing namespace, and in the peer one.
    const DEV: &str = "mif0";
    const PEER_DEV: &str = "mif0p";

    /// A namespace with a veth into a peer namespace, both ends up without
    /// duplicate address detection (so link-local addresses are usable at
    /// once), deleted on drop.
    struct TestNetns {
        ns: crate::test_support::TestNetns,
        peer_ns: crate::test_support::TestNetns,
        name: String,
        peer: String,
    }

    impl TestNetns {
        fn create() -> Self {
            let ns = crate::test_support::TestNetns::new("mifev");
            let peer_ns = crate::test_support::TestNetns::new("mifev-peer");
            ns.ip(&[
                "link",
                "add",
                DEV,
                "type",
                "veth",
                "peer",
                "name",
                PEER_DEV,
                "netns",
                peer_ns.name(),
            ]);
            // Per namespace, and before the links go up (DAD starts then).
            ns.sysctl(&format!("net.ipv6.conf.{DEV}.accept_dad=0"));
            ns.sysctl(&format!("net.ipv6.conf.{DEV}.accept_ra=1"));
            peer_ns.sysctl(&format!("net.ipv6.conf.{PEER_DEV}.accept_dad=0"));
            ns.ip(&["link", "set", DEV, "up"]);
            peer_ns.ip(&["link", "set", PEER_DEV, "up"]);
            Self {
                name: ns.name().to_owned(),
                peer: peer_ns.name().to_owned(),
                ns,
                peer_ns,
            }
        }

        fn ip(&self, args: &[&str]) -> String {
            self.ns.ip(args)
        }

        fn ifindex(&self) -> u32 {
            let out = self.ip(&["-o", "link", "show", "dev", DEV]);
            let index = out.split(':').next().unwrap_or_default().trim();
            index
                .parse()
                .unwrap_or_else(|_| panic!("ifindex in {out:?}"))
        }

        /// The link-local address of the peer's veth end, once it has one.
        fn peer_link_local(&self) -> Ipv6Addr {
            for _ in 0..50 {
                let out = self
                    .peer_ns
                    .ip(&["-6", "-o", "addr", "show", "dev", PEER_DEV, "scope", "link"]);
                let mut words = out.split_whitespace();
                if words.any(|word| word == "inet6") {
                    let addr = words.next().unwrap().split('/').next().unwrap();
                    return addr.parse().unwrap();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("no link-local address on the peer's veth");
        }

        /// Runs `body` in the namespace, so `subscribe` opens its socket
        /// there.
        fn run<F, Fut>(&self, body: F)
        where
            F: FnOnce() -> Fut + Send + 'static,
            Fut: Future<Output = ()>,
        {
            self.ns.block_on(body);
        }
    }

    /// Moves the calling thread into the named namespace.
    fn enter(name: &str) {
        let file = File::open(format!("/run/netns/{name}")).expect("open namespace");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("enter namespace");
    }

    fn run(program: &str, args: &[&str]) -> String {
        let out = Command::new(program).args(args).output().expect("run");
        assert!(
            out.status.success(),
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    fn is_root() -> bool {
        crate::test_support::root_or_skip("netlink event tests in a network namespace")
    }

    /// Waits up to `within` for an event `wanted` accepts, skipping others.
    async fn expect(
        events: &mut NetEvents,
        within: Duration,
        wanted: impl Fn(&NetEvent) -> bool,
    ) -> NetEvent {
        let mut skipped = Vec::new();
        let found = tokio::time::timeout(within, async {
            loop {
                let event = events.next().await.expect("stream ended");
                if wanted(&event) {
                    return event;
                }
                skipped.push(event);
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("nothing expected within {within:?}; got {skipped:?}"))
    }

    /// The index of a link in the calling thread's namespace.
    fn link_index(name: &str) -> u32 {
        let name = std::ffi::CString::new(name).unwrap();
        // SAFETY: a NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(index, 0, "no link {name:?}");
        index
    }

    async fn expect_change(events: &mut NetEvents, kind: ChangeKind) {
        let changed = NetEvent::Changed(kind);
        expect(events, Duration::from_secs(1), |event| *event == changed).await;
    }

    /// Reads events until none has come for a while, so the next
    /// expectation only sees what the next command causes.
    async fn drain(events: &mut NetEvents) -> Vec<NetEvent> {
        let mut drained = Vec::new();
        while let Ok(event) = tokio::time::timeout(Duration::from_millis(200), events.next()).await
        {
            drained.push(event.expect("stream ended"));
        }
        drained
    }

    #[test]
    fn changes_are_reported() {
        if !is_root() {
            return;
        }
        let ns = TestNetns::create();
        let name = ns.name.clone();
        ns.run(move || async move {
            let ip = |args: &[&str]| {
                let mut full = vec!["-n", &name];
                full.extend_from_slice(args);
                run("ip", &full);
            };
            let mut events = subscribe().expect("subscribe");
            use ChangeKind::*;
            let steps: [(&[&str], ChangeKind); 7] = [
                (&["link", "set", DEV, "down"], Link),
                (&["addr", "add", "198.18.7.2/24", "dev", DEV], Address),
                (
                    &["-6", "addr", "add", "2001:db8:7::2/64", "dev", DEV],
                    Address,
                ),
                (&["route", "add", "blackhole", "203.0.113.0/24"], Route),
                (
                    &["-6", "route", "add", "blackhole", "2001:db8:99::/64"],
                    Route,
                ),
                (
                    &["rule", "add", "from", "198.18.7.2", "lookup", "100"],
                    Rule,
                ),
                (
                    &[
                        "-6",
                        "rule",
                        "add",
                        "from",
                        "2001:db8:7::2",
                        "lookup",
                        "100",
                    ],
                    Rule,
                ),
            ];
            let dev_index = link_index(DEV);
            for (command, kind) in steps {
                drain(&mut events).await;
                ip(command);
                if command[..3] == ["link", "set", DEV] {
                    // Before the full pass's trigger: which link went down.
                    let down = NetEvent::LinkDown { ifindex: dev_index };
                    expect(&mut events, Duration::from_secs(1), |e| *e == down).await;
                }
                expect_change(&mut events, kind).await;
            }
        });
    }

    #[test]
    fn overruns_resync_and_the_stream_goes_on() {
        if !is_root() {
            return;
        }
        let ns = TestNetns::create();
        let name = ns.name.clone();
        ns.run(move || async move {
            let mut events = subscribe().expect("subscribe");
            // The smallest buffer the kernel allows (a few KiB), then a
            // burst of notifications while nothing reads.
            let socket = events.socket.get_ref();
            socket.set_rx_buf_sz(0 as libc::c_int).unwrap();
            let mut batch = Command::new("ip")
                .args(["-n", &name, "-batch", "-"])
                .stdin(Stdio::piped())
                .spawn()
                .expect("run ip -batch");
            let mut stdin = batch.stdin.take().unwrap();
            for i in 0..500 {
                let (hi, lo) = (i / 250, i % 250 + 1);
                writeln!(stdin, "addr add 198.18.{hi}.{lo}/32 dev {DEV}").unwrap();
            }
            drop(stdin);
            assert!(batch.wait().unwrap().success());

            expect(&mut events, Duration::from_secs(2), |event| {
                *event == NetEvent::Resync
            })
            .await;
            socket_buffer(&events, RECEIVE_BUFFER);
            drain(&mut events).await;
            run("ip", &["-n", &name, "link", "set", DEV, "down"]);
            expect_change(&mut events, ChangeKind::Link).await;
        });
    }

    fn socket_buffer(events: &NetEvents, bytes: usize) {
        setsockopt(events.socket.get_ref(), RcvBufForce, &bytes).unwrap();
    }

    #[test]
    fn resubscribing_stays_in_the_original_namespace() {
        if !is_root() {
            return;
        }
        let ns = TestNetns::create();
        let (name, peer) = (ns.name.clone(), ns.peer.clone());
        ns.run(move || async move {
            let mut events = subscribe().expect("subscribe");
            // This thread moves on to the peer namespace; the stream must
            // still watch the one it was subscribed in.
            enter(&peer);
            events.resubscribe().expect("resubscribe");
            run("ip", &["-n", &name, "rule", "add", "lookup", "100"]);
            expect_change(&mut events, ChangeKind::Rule).await;
            drain(&mut events).await;
            run("ip", &["-n", &peer, "rule", "add", "lookup", "100"]);
            assert_eq!(drain(&mut events).await, []);
        });
    }

    /// radvd in the peer namespace, killed on drop.
    struct Radvd {
        child: Child,
        dir: tempfile::TempDir,
    }

    impl Radvd {
        fn start(peer: &str, config: &str) -> Self {
            // radvd refuses a configuration that others could write, in a
            // directory others could write to: the temp dir is 0700.
            let dir = tempfile::tempdir().expect("temp dir");
            let conf = dir.path().join("radvd.conf");
            std::fs::write(&conf, config).unwrap();
            std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
            let log = File::create(dir.path().join("radvd.log")).unwrap();
            let child = Command::new("ip")
                .args(["netns", "exec", peer, "radvd", "-n", "-m", "stderr", "-C"])
                .arg(&conf)
                .arg("-p")
                .arg(dir.path().join("radvd.pid"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("run radvd");
            Self { child, dir }
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("radvd.log")).unwrap_or_default()
        }
    }

    impl Drop for Radvd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if std::thread::panicking() {
                eprintln!("radvd log:\n{}", self.log());
            }
        }
    }

    #[test]
    fn router_advertisement_dns_options_are_reported() {
        if !is_root() {
            return;
        }
        if Command::new("radvd").arg("--version").output().is_err() {
            eprintln!("skipped: radvd not installed");
            return;
        }
        let ns = TestNetns::create();
        // radvd only advertises where forwarding is on; it is per
        // namespace, so this is the peer's alone.
        ns.peer_ns.sysctl("net.ipv6.conf.all.forwarding=1");
        let ifindex = ns.ifindex();
        let router = ns.peer_link_local();
        let peer = ns.peer.clone();
        ns.run(move || async move {
            let mut events = subscribe().expect("subscribe");
            let config = format!(
                "interface {PEER_DEV} {{
                    AdvSendAdvert on;
                    MinRtrAdvInterval 3;
                    MaxRtrAdvInterval 4;
                    prefix 2001:db8:7::/64 {{ }};
                    RDNSS 2001:db8:7::53 {{ AdvRDNSSLifetime 8; }};
                    DNSSL example.test corp.example {{ }};
                }};"
            );
            let _radvd = Radvd::start(&peer, &config);
            // Each option comes in a message of its own.
            let (mut rdnss, mut dnssl) = (None, None);
            tokio::time::timeout(Duration::from_secs(10), async {
                while rdnss.is_none() || dnssl.is_none() {
                    let event = events.next().await.expect("stream ended");
                    let NetEvent::RaOptions {
                        ifindex: index,
                        router: from,
                        rdnss: r,
                        dnssl: d,
                        ..
                    } = event
                    else {
                        continue;
                    };
                    assert_eq!((index, from), (ifindex, Some(router)));
                    if !r.is_empty() {
                        rdnss = Some(r);
                    }
                    if !d.is_empty() {
                        dnssl = Some(d);
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no RDNSS and DNSSL within 10 s: {rdnss:?} {dnssl:?}"));
            assert_eq!(
                rdnss.unwrap(),
                [Rdnss {
                    servers: vec!["2001:db8:7::53".parse().unwrap()],
                    lifetime: Duration::from_secs(8),
                }]
            );
            let dnssl = dnssl.unwrap();
            assert_eq!(dnssl.len(), 1);
            assert_eq!(dnssl[0].domains, ["example.test", "corp.example"]);
        });
    }
}
