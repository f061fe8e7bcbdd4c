//! DNS follows the socket's PvD: for processes whose policy says
//! `dns = "pvd"`, a query to port 53 (UDP or TCP, to a remote resolver or a
//! local stub such as 127.0.0.53 or ::1) is sent to the resolver of the PvD
//! whose mark the socket carries, and the connect/sendmsg programs then give
//! it that PvD's source address as for any other destination.
//!
//! Resolver libraries (glibc, musl, Go, c-ares) drop a reply that does not
//! come from the server they asked, so the redirection is remembered per
//! socket (by cookie) and undone where the application can see the peer:
//! `recvmsg` (UDP, connected or not) and `getpeername` (TCP and connected
//! UDP).
//!
//! When some PvD has DNS domains (declared, or learned from DNSSL or DHCP)
//! or only link-local resolvers, the daemon's forwarder reads query names
//! and reaches scoped resolvers: the queries then go to it on loopback, at
//! a port that names the socket's PvD (see `MIF_DNS_FWD` and the daemon's
//! `dns` module).
//!
//! The decision needs the destination port, the socket's PvD and the
//! process's policy (its `dns` flag), which the hook finds once for all it
//! does with a socket that carries a PvD's mark (see `Marked`).
//! Not redirected: DNS over TLS (853) or HTTPS (443), which cannot be told
//! from other traffic here; a socket bound to a loopback address (it could
//! not reach a remote resolver).
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::generated::bpf_get_socket_cookie,
    macros::map,
    maps::{Array, LruHashMap},
};
use mif_common::{
    v4_mapped_words, DnsForward, DnsNat, COUNTER_NO_PVD, DNS_PORT_BE, MAX_DNS_NAT,
    PVD_DNS_VIA_FORWARDER,
};

use crate::{
    addr::{is_loopback4, is_loopback6, is_v4_mapped, write_ip6, LOOPBACK6},
    counters::{count, Event},
    Marked,
};

/// Socket cookie → what the application asked and where it went instead.
/// An LRU: entries of closed sockets age out without any cleanup.
#[map]
pub static MIF_DNS_NAT: LruHashMap<u64, DnsNat> = LruHashMap::pinned(MAX_DNS_NAT, 0);

/// The daemon's forwarder for per-domain selection; written by the daemon.
#[map]
pub static MIF_DNS_FWD: Array<DnsForward> = Array::pinned(1, 0);

/// 127.0.0.1 in network byte order.
const LOOPBACK4: u32 = u32::from_ne_bytes([127, 0, 0, 1]);

/// The forwarder's port for PvD `index` (network byte order, as
/// `user_port` holds it), when the forwarder is on.
#[inline(always)]
fn forwarder_port(index: u32) -> Option<u32> {
    let base = MIF_DNS_FWD.get(0)?.port_base;
    if base == 0 {
        return None;
    }
    Some(u32::from(((base + index) as u16).to_be()))
}

/// What to do with a connect or sendmsg after the DNS check.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dns {
    /// Not a query of a `dns = "pvd"` socket, or its PvD has no resolver
    /// and the policy is not strict (the system resolver answers).
    Untouched,
    /// The destination now is the PvD's resolver.
    Redirected,
    /// Strict policy, and the PvD has no resolver of the family: refuse
    /// rather than ask another network's resolver.
    Refuse,
}

/// The socket's PvD index and its resolvers, when `sa` is a port-53
/// destination of a steered socket (`marked`, found by the hook) whose
/// process has a `dns = "pvd"` policy. Also the policy id and strictness,
/// for counting and refusing.
#[inline(always)]
fn dns_socket(sa: *mut bpf_sock_addr, marked: Option<&Marked>) -> Option<Target> {
    if unsafe { (*sa).user_port } != DNS_PORT_BE {
        return None;
    }
    let marked = marked?;
    let (src4, src6) = marked.bound_to();
    // Bound to loopback (a local server talking to a local stub): a remote
    // resolver could not answer it.
    if is_loopback4(src4) || is_loopback6(&src6) {
        return None;
    }
    let policy = marked.policy?;
    if !policy.dns_pvd() {
        return None;
    }
    let (index, pvd) = (marked.index, marked.pvd);
    Some(Target {
        index,
        policy: policy.id,
        strict: policy.is_strict(),
        dns4: pvd.dns4,
        dns6: pvd.dns6,
        via_forwarder: pvd.flags & PVD_DNS_VIA_FORWARDER != 0,
    })
}

struct Target {
    index: u32,
    policy: u32,
    strict: bool,
    dns4: u32,
    dns6: [u32; 4],
    /// Resolvers only the forwarder reaches (link-local).
    via_forwarder: bool,
}

impl Target {
    /// Whether the forwarder has a resolver of this PvD to ask.
    #[inline(always)]
    fn forwarder_has_resolver(&self) -> bool {
        self.dns4 != 0 || self.dns6 != [0; 4] || self.via_forwarder
    }

    #[inline(always)]
    fn missing(&self) -> Dns {
        if self.strict {
            count(self.policy, COUNTER_NO_PVD, Event::Denied);
            Dns::Refuse
        } else {
            Dns::Untouched
        }
    }
}

#[inline(always)]
fn remember(sa: *mut bpf_sock_addr, orig: [u32; 4], resolver: [u32; 4], port: u32) {
    let cookie = unsafe { bpf_get_socket_cookie(sa.cast()) };
    let nat = DnsNat {
        orig,
        resolver,
        orig_port: DNS_PORT_BE,
        resolver_port: port,
    };
    // A full map forgets its oldest entry; failing here only means a reply
    // shows the resolver's address, never a lost query.
    let _ = MIF_DNS_NAT.insert(cookie, nat, 0);
}

/// For connect4 and sendmsg4 (which also sees v4-mapped destinations of
/// IPv6 sockets: the kernel hands those to the IPv4 path first).
#[inline(always)]
pub fn redirect4(sa: *mut bpf_sock_addr, marked: Option<&Marked>) -> Dns {
    let Some(target) = dns_socket(sa, marked) else {
        return Dns::Untouched;
    };
    let orig = unsafe { (*sa).user_ip4 };
    // The forwarder speaks both families upstream: any resolver will do.
    if let Some(port) = forwarder_port(target.index) {
        if !target.forwarder_has_resolver() {
            return target.missing();
        }
        unsafe {
            (*sa).user_ip4 = LOOPBACK4;
            (*sa).user_port = port;
        }
        remember(sa, v4_mapped_words(orig), v4_mapped_words(LOOPBACK4), port);
        count(target.policy, target.index, Event::Dns);
        return Dns::Redirected;
    }
    if target.dns4 == 0 {
        return target.missing();
    }
    if orig == target.dns4 {
        return Dns::Untouched;
    }
    unsafe { (*sa).user_ip4 = target.dns4 };
    remember(
        sa,
        v4_mapped_words(orig),
        v4_mapped_words(target.dns4),
        DNS_PORT_BE,
    );
    count(target.policy, target.index, Event::Dns);
    Dns::Redirected
}

/// For connect6 and sendmsg6. A v4-mapped destination (connect6 of a
/// dual-stack socket) goes to the IPv4 resolver, v4-mapped.
#[inline(always)]
pub fn redirect6(sa: *mut bpf_sock_addr, marked: Option<&Marked>) -> Dns {
    let Some(target) = dns_socket(sa, marked) else {
        return Dns::Untouched;
    };
    let orig = unsafe { (*sa).user_ip6 };
    if let Some(port) = forwarder_port(target.index) {
        if !target.forwarder_has_resolver() {
            return target.missing();
        }
        let forwarder = if is_v4_mapped(&orig) {
            v4_mapped_words(LOOPBACK4)
        } else {
            LOOPBACK6
        };
        set_user_ip6(sa, &forwarder);
        unsafe { (*sa).user_port = port };
        remember(sa, orig, forwarder, port);
        count(target.policy, target.index, Event::Dns);
        return Dns::Redirected;
    }
    let resolver = if is_v4_mapped(&orig) {
        if target.dns4 == 0 {
            return target.missing();
        }
        v4_mapped_words(target.dns4)
    } else {
        if target.dns6 == [0; 4] {
            return target.missing();
        }
        target.dns6
    };
    if orig == resolver {
        return Dns::Untouched;
    }
    set_user_ip6(sa, &resolver);
    remember(sa, orig, resolver, DNS_PORT_BE);
    count(target.policy, target.index, Event::Dns);
    Dns::Redirected
}

/// The destination of a sock_addr context.
#[inline(always)]
fn set_user_ip6(sa: *mut bpf_sock_addr, words: &[u32; 4]) {
    write_ip6(unsafe { &raw mut (*sa).user_ip6 }, words);
}

/// The redirection of this socket, if any, when the peer the kernel is
/// about to report is the resolver it was redirected to.
#[inline(always)]
fn nat_for(sa: *mut bpf_sock_addr, peer: &[u32; 4]) -> Option<DnsNat> {
    let port = unsafe { (*sa).user_port };
    // Only a resolver's port or the loopback forwarder can be a redirected
    // peer: everything else is decided without a lookup.
    if port != DNS_PORT_BE && *peer != v4_mapped_words(LOOPBACK4) && *peer != LOOPBACK6 {
        return None;
    }
    let cookie = unsafe { bpf_get_socket_cookie(sa.cast()) };
    let nat = unsafe { *MIF_DNS_NAT.get(cookie)? };
    if nat.resolver != *peer || nat.resolver_port != port {
        return None;
    }
    Some(nat)
}

/// recvmsg4 and getpeername4: show the address the application asked.
#[inline(always)]
pub fn unredirect4(sa: *mut bpf_sock_addr) {
    let peer = v4_mapped_words(unsafe { (*sa).user_ip4 });
    if let Some(nat) = nat_for(sa, &peer) {
        if is_v4_mapped(&nat.orig) {
            unsafe {
                (*sa).user_ip4 = nat.orig[3];
                (*sa).user_port = nat.orig_port;
            }
        }
    }
}

/// recvmsg6 and getpeername6 (v4-mapped peers of dual-stack sockets too).
#[inline(always)]
pub fn unredirect6(sa: *mut bpf_sock_addr) {
    let peer = unsafe { (*sa).user_ip6 };
    if let Some(nat) = nat_for(sa, &peer) {
        set_user_ip6(sa, &nat.orig);
        unsafe { (*sa).user_port = nat.orig_port };
    }
}
