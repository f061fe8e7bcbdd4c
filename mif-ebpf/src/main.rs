//! mif's kernel programs, attached once to a cgroup2 directory (the root by
//! default) and so run for every socket of every process below it.
//!
//! - `sock_create` resolves the creating process's policy (deepest cgroup
//!   with one wins), picks the first PvD of the policy that is available for
//!   the socket's family and stamps the socket with that PvD's mark (and
//!   interface, for hard binds). Strict policies refuse the socket when no
//!   PvD is available. This is the only decision point: everything later
//!   follows the mark, so a socket never changes PvD halfway.
//! - `connect4/6` bind the marked socket to its PvD's source address, port 0,
//!   unless the application bound it itself.
//! - `sendmsg4/6` set the source of unconnected UDP datagrams the same way.
//!
//! No per-packet work: routing by mark is done by the kernel's policy rules
//! that the daemon installs per PvD.
#![no_std]
#![no_main]

mod addr;
mod counters;
mod maps;

use aya_ebpf::{
    bindings::{bpf_sock, bpf_sock_addr},
    helpers::generated::{bpf_bind, bpf_get_current_ancestor_cgroup_id, bpf_get_netns_cookie},
    macros::{cgroup_sock, cgroup_sock_addr},
    programs::{SockAddrContext, SockContext},
};
use mif_common::{pvd_from_mark, Policy, Pvd, Settings, MAX_CGROUP_DEPTH, NO_PVD};

use crate::{
    addr::{is_loopback4, is_loopback6, is_v4_mapped, SockaddrIn, SockaddrIn6, AF_INET, AF_INET6},
    counters::{count, Event},
    maps::{POLICIES, PVDS},
};

/// Let the operation go on.
const ALLOW: i32 = 1;
/// Refuse it: socket() / connect() / sendmsg() fail with EPERM.
const REFUSE: i32 = 0;

/// Set by the loader before the programs are loaded (read-only data).
#[unsafe(no_mangle)]
static MIF_SETTINGS: Settings = Settings {
    netns_cookie: 0,
    mark_mask: 0,
    mark_shift: 0,
    attach_level: 0,
    _pad: 0,
    attach_cgroup_id: 0,
};

#[inline(always)]
fn settings() -> Settings {
    // Volatile so the compiler does not fold the zero initialiser: the real
    // values are patched into .rodata at load time.
    unsafe { core::ptr::read_volatile(&MIF_SETTINGS) }
}

/// The policy of the deepest cgroup, from the process's own up to the cgroup
/// the programs are attached to, that has one. Walking ancestors (rather than
/// copying policies onto every descendant) covers cgroups created later with
/// no window.
#[inline(always)]
fn find_policy(attach_level: u32) -> Option<&'static Policy> {
    let mut i = 0;
    while i < MAX_CGROUP_DEPTH {
        let level = MAX_CGROUP_DEPTH - 1 - i;
        if level < attach_level {
            break;
        }
        // 0 when the process's cgroup is shallower than `level`.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id != 0 {
            if let Some(policy) = unsafe { POLICIES.get(id) } {
                return Some(policy);
            }
        }
        i += 1;
    }
    None
}

#[cgroup_sock(sock_create)]
pub fn mif_sock_create(ctx: SockContext) -> i32 {
    match try_sock_create(&ctx) {
        Ok(verdict) | Err(verdict) => verdict,
    }
}

fn try_sock_create(ctx: &SockContext) -> Result<i32, i32> {
    let settings = settings();
    if unsafe { bpf_get_netns_cookie(ctx.sock.cast()) } != settings.netns_cookie {
        return Ok(ALLOW);
    }
    let sk: *mut bpf_sock = ctx.sock;
    let family = unsafe { (*sk).family };
    if family != AF_INET && family != AF_INET6 {
        return Ok(ALLOW);
    }
    let Some(policy) = find_policy(settings.attach_level) else {
        return Ok(ALLOW);
    };
    let want_v6 = family == AF_INET6;

    let mut rank = 0;
    while rank < policy.prefer.len() {
        let index = policy.prefer[rank];
        if index == NO_PVD {
            break;
        }
        if let Some(pvd) = unsafe { PVDS.get(u32::from(index)) } {
            if pvd.available(want_v6) {
                unsafe {
                    (*sk).mark = pvd.mark;
                    if policy.binds_device() {
                        (*sk).bound_dev_if = pvd.ifindex;
                    }
                }
                count(policy.id, u32::from(index), Event::Steered);
                if rank > 0 {
                    count(policy.id, u32::from(index), Event::Fallback);
                }
                return Ok(ALLOW);
            }
        }
        rank += 1;
    }

    if policy.is_strict() {
        count(policy.id, mif_common::COUNTER_NO_PVD, Event::Refused);
        Ok(REFUSE)
    } else {
        count(policy.id, mif_common::COUNTER_NO_PVD, Event::Unsteered);
        Ok(ALLOW)
    }
}

/// The PvD whose mark the socket behind `ctx` carries, when the socket is one
/// mif steered, lives in the managed namespace and is not bound yet.
#[inline(always)]
fn steered_unbound_pvd(ctx: &SockAddrContext, settings: &Settings) -> Option<(u32, &'static Pvd)> {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    if unsafe { bpf_get_netns_cookie(sa.cast()) } != settings.netns_cookie {
        return None;
    }
    let sk = unsafe { (*sa).__bindgen_anon_1.sk };
    if sk.is_null() {
        return None;
    }
    let (mark, port, src4, src6) =
        unsafe { ((*sk).mark, (*sk).src_port, (*sk).src_ip4, (*sk).src_ip6) };
    // An application that bound its own address or port keeps it.
    if port != 0 || src4 != 0 || src6 != [0; 4] {
        return None;
    }
    let index = pvd_from_mark(mark, settings.mark_mask, settings.mark_shift)?;
    let pvd = unsafe { PVDS.get(index)? };
    Some((index, pvd))
}

/// Policy id of the current process, for counters only.
#[inline(always)]
fn policy_id(settings: &Settings) -> u32 {
    find_policy(settings.attach_level).map_or(u32::MAX, |p| p.id)
}

#[cgroup_sock_addr(connect4)]
pub fn mif_connect4(ctx: SockAddrContext) -> i32 {
    let settings = settings();
    let Some((index, pvd)) = steered_unbound_pvd(&ctx, &settings) else {
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    if pvd.addr4 == 0 || is_loopback4(unsafe { (*sa).user_ip4 }) {
        return ALLOW;
    }
    let mut bind_addr = SockaddrIn::new(pvd.addr4);
    let rc = unsafe {
        bpf_bind(
            sa,
            (&raw mut bind_addr).cast(),
            core::mem::size_of::<SockaddrIn>() as i32,
        )
    };
    if rc == 0 {
        count(policy_id(&settings), index, Event::Bound);
    }
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn mif_connect6(ctx: SockAddrContext) -> i32 {
    let settings = settings();
    let Some((index, pvd)) = steered_unbound_pvd(&ctx, &settings) else {
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    let dst = unsafe { (*sa).user_ip6 };
    // v4-mapped destinations leave by IPv4; an IPv6 source cannot be bound for them.
    if pvd.addr6 == [0; 4] || is_loopback6(&dst) || is_v4_mapped(&dst) {
        return ALLOW;
    }
    let mut bind_addr = SockaddrIn6::new(pvd.addr6);
    let rc = unsafe {
        bpf_bind(
            sa,
            (&raw mut bind_addr).cast(),
            core::mem::size_of::<SockaddrIn6>() as i32,
        )
    };
    if rc == 0 {
        count(policy_id(&settings), index, Event::Bound);
    }
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn mif_sendmsg4(ctx: SockAddrContext) -> i32 {
    let settings = settings();
    let Some((index, pvd)) = steered_unbound_pvd(&ctx, &settings) else {
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    unsafe {
        // A source the application chose (IP_PKTINFO) stays.
        if pvd.addr4 == 0 || (*sa).msg_src_ip4 != 0 || is_loopback4((*sa).user_ip4) {
            return ALLOW;
        }
        (*sa).msg_src_ip4 = pvd.addr4;
    }
    count(policy_id(&settings), index, Event::SourceSet);
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn mif_sendmsg6(ctx: SockAddrContext) -> i32 {
    let settings = settings();
    let Some((index, pvd)) = steered_unbound_pvd(&ctx, &settings) else {
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    unsafe {
        let dst = (*sa).user_ip6;
        if pvd.addr6 == [0; 4]
            || (*sa).msg_src_ip6 != [0; 4]
            || is_loopback6(&dst)
            || is_v4_mapped(&dst)
        {
            return ALLOW;
        }
        // msg_src_ip6 is only 4-byte aligned: the verifier wants one 32-bit
        // store per word, so write them one at a time.
        let src = &raw mut (*sa).msg_src_ip6;
        core::ptr::write_volatile(&raw mut (*src)[0], pvd.addr6[0]);
        core::ptr::write_volatile(&raw mut (*src)[1], pvd.addr6[1]);
        core::ptr::write_volatile(&raw mut (*src)[2], pvd.addr6[2]);
        core::ptr::write_volatile(&raw mut (*src)[3], pvd.addr6[3]);
    }
    count(policy_id(&settings), index, Event::SourceSet);
    ALLOW
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
