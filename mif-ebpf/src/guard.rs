//! The egress guard of strict policies: a `cgroup_skb/egress` program that
//! drops every packet of a strict policy's socket leaving by an interface
//! none of the policy's PvDs uses.
//!
//! The socket hooks ([`crate::strict`]) hold what a socket is set up to do;
//! this holds what actually leaves, whatever chose the route: an `SO_MARK`
//! or `IP_PKTINFO` interface given per datagram as ancillary data,
//! `MSG_DONTROUTE`, or a socket opened before its cgroup had the policy
//! (no mark at all). It runs where the kernel has picked the output device
//! (`ip_finish_output`, `ip6_finish_output`), so `__sk_buff.ifindex` is the
//! interface the packet would leave by.
//!
//! The policy is the one of the socket's cgroup (where the socket was
//! created), not of the task the packet is sent for: at egress the current
//! task can be anyone (a softirq, a TCP timer), so the walk uses
//! `bpf_skb_cgroup_id` and `bpf_skb_ancestor_cgroup_id`.
//!
//! Passed without a drop: loopback (ifindex 1 in every namespace), an
//! interface of one of the policy's PvDs (listed, whether available or
//! not: a packet on a listed PvD's link is on that network), and
//! destinations the policy excludes (the same trie as connect's, see
//! [`crate::exclude`]), which the main table may route elsewhere. Packets
//! of other network namespaces are left alone, as everywhere in mif.
//!
//! Cost: the daemon attaches this to strict policies' cgroups only (see
//! its `apply::guard_links`), so it runs for the packets of sockets
//! created there or below, never for other traffic. A packet by loopback
//! costs one context read; any other the policy walk (one helper call and
//! one lookup for the socket's own cgroup, then one of each per level
//! between the attach cgroup and it: a non-strict policy deeper down takes
//! precedence, as everywhere). Only strict packets pay for the namespace
//! check and the PvD lookups, and only drops for the counting.
//!
//! Packet sockets (`AF_PACKET`) never pass here: they hand frames to the
//! device directly, past the IP output path; the packet guard holds them
//! (see [`crate::packet_guard`]).
use aya_ebpf::{bindings::__sk_buff, programs::SkBuffContext};
use mif_common::{Policy, Settings, COUNTER_NO_PVD, MAX_PREFER, MAX_PVDS, NO_PVD};

use crate::{
    addr::{AF_INET, AF_INET6},
    counters::{count, report_drop, Event},
    exclude::{excludes, mapped4},
    maps::pvd,
    policy::{in_managed_netns, socket_policy},
};

/// Let the packet go.
pub const PASS: i32 = 1;
/// Drop it; a local sender (UDP `sendmsg`, raw sockets) gets EPERM.
pub const DROP: i32 = 0;

/// The loopback device's index, the same in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// `__sk_buff.protocol` holds the frame's ethertype in network byte order.
const ETH_P_IP: u32 = 0x0800u16.to_be() as u32;
const ETH_P_IPV6: u32 = 0x86ddu16.to_be() as u32;

/// Offsets of the destination address from the network header, where the
/// packet data starts in cgroup skb programs.
const IPV4_DADDR: usize = 16;
const IPV6_DADDR: usize = 24;

/// The verdict on one outgoing packet.
#[inline(always)]
pub fn egress(ctx: &SkBuffContext, settings: &Settings) -> i32 {
    let skb: *mut __sk_buff = ctx.skb.skb;
    let ifindex = unsafe { (*skb).ifindex };
    if ifindex == LOOPBACK_IFINDEX {
        return PASS;
    }
    let Some(policy) = socket_policy(skb, settings.attach_level) else {
        return PASS;
    };
    if !policy.is_strict() || !in_managed_netns(skb, settings) {
        return PASS;
    }
    if uses_interface(policy, ifindex) || excluded_destination(ctx, policy) {
        return PASS;
    }
    count(policy.id, pvd_on(ifindex), Event::GuardDrop);
    report_drop(policy.id, ifindex, family_of(ctx));
    DROP
}

/// The address family of the packet, from its ethertype (0 if neither).
#[inline(always)]
fn family_of(ctx: &SkBuffContext) -> u32 {
    match unsafe { (*ctx.skb.skb).protocol } {
        ETH_P_IP => AF_INET,
        ETH_P_IPV6 => AF_INET6,
        _ => 0,
    }
}

/// Whether one of the PvDs `policy` lists leaves by `ifindex`.
#[inline(always)]
pub fn uses_interface(policy: &Policy, ifindex: u32) -> bool {
    let mut rank = 0;
    while rank < MAX_PREFER {
        let index = policy.prefer[rank];
        if index == NO_PVD {
            return false;
        }
        if let Some(pvd) = pvd(u32::from(index)) {
            if pvd.ifindex == ifindex {
                return true;
            }
        }
        rank += 1;
    }
    false
}

/// Whether the packet's destination is one `policy` excludes. Decided from
/// the packet itself: IPv4 or IPv6 as its ethertype says.
#[inline(always)]
fn excluded_destination(ctx: &SkBuffContext, policy: &Policy) -> bool {
    if !policy.has_excludes() {
        return false;
    }
    let protocol = unsafe { (*ctx.skb.skb).protocol };
    let dst = if protocol == ETH_P_IP {
        match ctx.load::<u32>(IPV4_DADDR) {
            Ok(addr) => mapped4(addr),
            Err(_) => return false,
        }
    } else if protocol == ETH_P_IPV6 {
        match ctx.load::<[u32; 4]>(IPV6_DADDR) {
            Ok(addr) => addr,
            Err(_) => return false,
        }
    } else {
        return false;
    };
    excludes(policy, &dst)
}

/// The PvD whose interface `ifindex` is, for counting a drop;
/// [`COUNTER_NO_PVD`] for an interface that is no PvD's.
#[inline(always)]
pub fn pvd_on(ifindex: u32) -> u32 {
    let mut index = 0;
    while index < MAX_PVDS {
        if let Some(pvd) = pvd(index) {
            if pvd.ifindex == ifindex {
                return index;
            }
        }
        index += 1;
    }
    COUNTER_NO_PVD
}
