//! Passive detection of a network that stopped working, from TCP itself:
//! a `sock_ops` program that reports every retransmission timeout of a
//! connection on a PvD, so the daemon can probe that PvD at once instead
//! of at its next scheduled validation.
//!
//! How it stays cheap: the kernel calls a `sock_ops` program at a handful
//! of points in a TCP connection's life (initial RTO and window, connect,
//! establishment, ...), never per packet. On every call but two this
//! program reads the op and returns. At `BPF_SOCK_OPS_TCP_CONNECT_CB`
//! (`tcp_connect`, as the SYN is built) it asks for the optional RTO
//! callback (`BPF_SOCK_OPS_RTO_CB_FLAG`) only when the socket carries a
//! PvD mark of this instance and lives in the managed namespace: other
//! sockets never pay for it. At `BPF_SOCK_OPS_RTO_CB` (which the kernel
//! only makes for sockets with that flag) it writes one [`TcpTrouble`]
//! record to the ring [`crate::maps::MIF_TCP_TROUBLE`]; when the ring is
//! full the record is only counted ([`crate::maps::MIF_TCP_LOST`]).
//!
//! What the RTO callback covers (net/ipv4/tcp_timer.c): `tcp_retransmit_timer`
//! calls `tcp_write_timeout` for every state, SYN_SENT included (only the
//! zero-window probe branch skips SYN_SENT/SYN_RECV, and that one
//! retransmits nothing), and `tcp_write_timeout` makes the callback with
//! the retransmissions so far, the RTO and whether the connection is given
//! up now, before it retransmits. So one record arrives per timeout: a
//! connect() to a dead network gives one after 1 s, 3 s, 7 s... (the SYN
//! backoff), an established connection whose data goes unacknowledged one
//! per backed-off RTO. Tail loss probes and fast retransmits are no
//! timeouts and give none; the zero-window probe timer gives none.
//!
//! Only connections this host opens are watched: a passive connection's
//! peer came to us, and its silence says more about the peer's network
//! (a client that left) than about ours. The flag is kept in the
//! `tcp_sock` and survives establishment, so nothing more is needed at
//! `ACTIVE_ESTABLISHED_CB`.
//!
//! Minimum kernel: 5.15 (the hook is 4.13, the RTO callback and
//! `bpf_sock_ops_cb_flags_set` 4.16, `bpf_sock_ops.sk` 5.3,
//! `bpf_get_netns_cookie` in sock_ops programs 5.15).
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{
        bpf_sock, bpf_sock_ops, BPF_SOCK_OPS_RTO_CB, BPF_SOCK_OPS_RTO_CB_FLAG,
        BPF_SOCK_OPS_TCP_CONNECT_CB,
    },
    helpers::generated::bpf_sock_ops_cb_flags_set,
    programs::SockOpsContext,
};
use mif_common::{pvd_from_mark, Settings, TcpTrouble, TCP_TROUBLE_EXPIRED, TCP_TROUBLE_V6};

use crate::{addr::AF_INET6, policy::in_managed_netns};

/// What every call of the program comes to.
#[inline(always)]
pub fn on_op(ctx: &SockOpsContext, settings: &Settings) {
    let ops = ctx.ops;
    match unsafe { (*ops).op } {
        BPF_SOCK_OPS_TCP_CONNECT_CB => watch(ops, settings),
        BPF_SOCK_OPS_RTO_CB => report(ops, settings),
        _ => {}
    }
}

/// The socket's mark, when it is a PvD mark of this instance.
#[inline(always)]
fn pvd_mark(ops: *mut bpf_sock_ops, settings: &Settings) -> Option<u32> {
    // Full sockets only (NULL for request and timewait sockets); the
    // connect and RTO callbacks always have one.
    let sk: *mut bpf_sock = unsafe { (*ops).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    let mark = unsafe { (*sk).mark };
    pvd_from_mark(mark, settings.mark_mask, settings.mark_shift).map(|_| mark)
}

/// Asks for the RTO callback on a connection that leaves by a PvD.
#[inline(always)]
fn watch(ops: *mut bpf_sock_ops, settings: &Settings) {
    if pvd_mark(ops, settings).is_none() || !in_managed_netns(ops, settings) {
        return;
    }
    // Other sock_ops programs (in this cgroup or its ancestors) may have
    // asked for callbacks of their own: add ours to theirs.
    let flags = unsafe { (*ops).bpf_sock_ops_cb_flags };
    if flags & BPF_SOCK_OPS_RTO_CB_FLAG == 0 {
        // A failure (a flag this kernel lacks) leaves the socket unwatched:
        // nothing to do about it here.
        let _ =
            unsafe { bpf_sock_ops_cb_flags_set(ops, (flags | BPF_SOCK_OPS_RTO_CB_FLAG) as i32) };
    }
}

/// Reports one retransmission timeout. The mark is read again: the
/// application may have changed it since (`SO_MARK`), and a socket no
/// longer on a PvD is no PvD's trouble.
#[inline(always)]
fn report(ops: *mut bpf_sock_ops, settings: &Settings) {
    let Some(mark) = pvd_mark(ops, settings) else {
        return;
    };
    // args: icsk_retransmits, icsk_rto, whether the connection is given
    // up now (tcp_write_timeout).
    let (state, family, retransmits, expired) = unsafe {
        let args = (*ops).__bindgen_anon_1.args;
        ((*ops).state, (*ops).family, args[0], args[2])
    };
    let mut flags = 0;
    if expired != 0 {
        flags |= TCP_TROUBLE_EXPIRED;
    }
    if family == AF_INET6 {
        flags |= TCP_TROUBLE_V6;
    }
    let record = TcpTrouble {
        mark,
        state,
        retransmits,
        flags,
    };
    if crate::maps::MIF_TCP_TROUBLE
        .output::<TcpTrouble>(&record, 0)
        .is_err()
    {
        count_lost();
    }
}

/// Counts a record the full ring could not take. One counter for all PvDs:
/// a full ring means a storm of timeouts, in which every PvD concerned is
/// reported many times over anyway.
#[inline(always)]
fn count_lost() {
    let Some(slot) = crate::maps::MIF_TCP_LOST.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `slot` points into a live array value, 8-byte aligned; the
    // add is atomic, as the counters' (see `counters::count`).
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1) };
}
