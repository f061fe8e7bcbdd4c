//! The packet guard of strict policies: a tc egress program (tcx, Linux
//! 6.6) on every interface of the managed namespace except loopback, for
//! the frames that never pass the IP output path where the egress guard
//! ([`crate::guard`]) runs: those of packet sockets (`AF_PACKET`, and
//! `SOCK_PACKET`, which the kernel makes one), which hand a hand-built frame
//! to a device by its index. The `cgroup/sock_create` hook never sees such
//! sockets (only inet_create and inet6_create run it), so this is the
//! first place mif can hold them.
//!
//! A frame is dropped when its socket is of a family other than
//! `AF_INET`/`AF_INET6` (those the egress guard has judged already,
//! exclusions included), created in a strict policy's cgroup (found by the
//! same deepest-cgroup walk as everywhere, from `bpf_skb_cgroup_id`, the
//! socket's cgroup), in the managed namespace, and the interface is none of
//! the policy's PvDs'. There are no exclusions here: a packet socket writes
//! its own headers, so the destination in them says nothing about where
//! the frame goes on the link.
//!
//! Every other frame costs two loads (the socket, its family) and goes on to the next program (`TCX_NEXT`), so other tc users on the
//! same interface see it as if mif were not there. The daemon attaches
//! this only while some strict policy exists.
//!
//! What it cannot see: a frame sent past tc, by a packet socket with
//! `PACKET_QDISC_BYPASS` (`dev_direct_xmit`) or an `AF_XDP` socket. Strict
//! policies are refused the socket options those need (see
//! [`crate::strict`]).
use aya_ebpf::{
    bindings::__sk_buff, helpers::generated::bpf_get_netns_cookie, programs::TcContext,
};
use mif_common::Settings;

use crate::{
    addr::{AF_INET, AF_INET6},
    counters::{count, report_drop, Event},
    guard::{pvd_on, uses_interface},
    policy::socket_policy,
};

/// Let the next tc program (or the kernel's default) decide (`TCX_NEXT`,
/// `TC_ACT_UNSPEC`).
pub const NEXT: i32 = -1;
/// Drop the frame (`TCX_DROP`, `TC_ACT_SHOT`); the sender gets no error.
pub const DROP: i32 = 2;

/// The verdict on one frame leaving by the interface this is attached to.
#[inline(always)]
pub fn egress(ctx: &TcContext, settings: &Settings) -> i32 {
    let skb: *mut __sk_buff = ctx.skb.skb;
    // The family is in the part every socket has (sock_common, which a
    // request or time-wait socket is too): no helper call for the frames
    // of IP sockets, which are nearly all.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return NEXT;
    }
    let family = unsafe { (*sk).family };
    if family == AF_INET || family == AF_INET6 {
        return NEXT;
    }
    let Some(policy) = socket_policy(skb, settings.attach_level) else {
        return NEXT;
    };
    if !policy.is_strict() || unsafe { bpf_get_netns_cookie(skb.cast()) } != settings.netns_cookie {
        return NEXT;
    }
    let ifindex = unsafe { (*skb).ifindex };
    if uses_interface(policy, ifindex) {
        return NEXT;
    }
    count(policy.id, pvd_on(ifindex), Event::GuardDrop);
    report_drop(policy.id, ifindex, family);
    DROP
}
