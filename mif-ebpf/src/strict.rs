//! The guards of strict policies: whatever a process tries after
//! `socket()`, its sockets stay on the PvDs its policy lists.
//!
//! The mark chosen at `socket()` only decides routing while nothing more
//! specific does. These are more specific, and are refused to strict
//! processes:
//!
//! - binding the address of another PvD, which its `from <address>` rule
//!   routes by that PvD's table (and, for IPv6, a link-local address, whose
//!   scope pins an interface);
//! - naming an output interface or mark (`SO_BINDTODEVICE`, `IP_UNICAST_IF`,
//!   `SO_MARK`, ...): with an output interface the kernel sends even when
//!   the PvD's table has no route through it (IPv4 then assumes the
//!   destination is on-link);
//! - an IPv6 destination whose scope is one link (`fe80::%wlan0`,
//!   `ff02::1%wlan0`): the scope, which the hooks cannot see, names the
//!   interface;
//! - a source address chosen per datagram (`IP_PKTINFO`, `IPV6_PKTINFO`)
//!   that belongs to another PvD, like a bind.
//!
//! What no socket hook sees (an interface index or mark given per datagram
//! as ancillary data, `MSG_DONTROUTE`, sockets opened before the policy)
//! the egress guard holds at the packet ([`crate::guard`]).
//!
//! Checks cheap enough for every call come first; the cgroup walk runs only
//! for what only a strict policy would refuse.
use aya_ebpf::bindings::{bpf_sock_addr, bpf_sockopt};
use mif_common::{sockopt, Policy, Pvd, Settings, COUNTER_NO_PVD, MAX_PVDS, NO_OWNER};

use crate::{
    addr::{is_link_local6, is_loopback4, is_loopback6, is_v4_mapped},
    counters::{count, Event},
    maps::pvd,
    policy::{in_managed_netns, strict_policy},
};

/// The addresses the socket behind a sock_addr context is bound to (zero
/// when unbound).
#[inline(always)]
pub fn bound_source(sa: *mut bpf_sock_addr) -> (u32, [u32; 4]) {
    let sk = unsafe { (*sa).__bindgen_anon_1.sk };
    if sk.is_null() {
        return (0, [0; 4]);
    }
    unsafe { ((*sk).src_ip4, (*sk).src_ip6) }
}

/// Whether a strict policy refuses what the caller found suspicious: true
/// when the current process is in the managed namespace under a strict
/// policy for which `refused` holds (counted). Called only after the
/// caller's own cheap checks, so the cgroup walk is not paid by every
/// bind, connect, sendmsg or setsockopt.
#[inline(always)]
pub fn refuses<T>(ctx: *mut T, settings: &Settings, refused: impl FnOnce(&Policy) -> bool) -> bool {
    if !in_managed_netns(ctx, settings) {
        return false;
    }
    match strict_policy(settings) {
        Some(policy) if refused(policy) => {
            count(policy.id, COUNTER_NO_PVD, Event::Denied);
            true
        }
        _ => false,
    }
}

/// The PvD whose source address `owns` says an address is, and whether it
/// is available for the family (`v6`); [`NO_OWNER`] when none is.
#[inline(always)]
fn owner(owns: impl Fn(&Pvd) -> bool, v6: bool) -> (u32, bool) {
    let mut index = 0;
    while index < MAX_PVDS {
        if let Some(pvd) = pvd(index) {
            if owns(pvd) {
                return (index, pvd.available(v6));
            }
        }
        index += 1;
    }
    (NO_OWNER, false)
}

/// Whether a strict socket may bind the IPv4 address `addr` (network order).
/// The wildcard and loopback never leave the host or pick a network.
#[inline(always)]
pub fn may_bind4(policy: &Policy, addr: u32) -> bool {
    if addr == 0 || is_loopback4(addr) {
        return true;
    }
    let (index, available) = owner(|p| p.addr4 == addr, false);
    policy.may_bind(index, available)
}

/// Whether a strict socket may bind the IPv6 address `addr`. A v4-mapped
/// address binds the IPv4 one (the socket then sends IPv4 from it).
#[inline(always)]
pub fn may_bind6(policy: &Policy, addr: &[u32; 4]) -> bool {
    if *addr == [0; 4] || is_loopback6(addr) {
        return true;
    }
    if is_v4_mapped(addr) {
        return may_bind4(policy, addr[3]);
    }
    // The hook cannot see sin6_scope_id, and a scoped link-local bind sets
    // the socket's interface: refused, whichever interface it names.
    if is_link_local6(addr) {
        return false;
    }
    let (index, available) = owner(|p| p.addr6 == *addr, true);
    policy.may_bind(index, available)
}

/// Whether `addr` is only meaningful with an interface: link-local unicast,
/// and interface- or link-local multicast (`ff01::/16`, `ff02::/16`). The
/// kernel takes the interface from `sin6_scope_id` for exactly these.
#[inline(always)]
pub fn is_link_scoped6(addr: &[u32; 4]) -> bool {
    let first = addr[0].to_ne_bytes();
    is_link_local6(addr) || (first[0] == 0xff && matches!(first[1] & 0x0f, 1 | 2))
}

/// Whether the option is one a strict process may not set.
#[inline(always)]
pub fn refuses_sockopt(so: *const bpf_sockopt) -> bool {
    let (level, optname) = unsafe { ((*so).level, (*so).optname) };
    sockopt::moves_off_pvd(level, optname)
}
