//! The MIF API in the kernel: an application chooses the PvD of one of its
//! sockets with `setsockopt(fd, SOL_MIF, MIF_PVD, "wwan0", 5)` and reads the
//! PvD a socket uses with `getsockopt(fd, SOL_MIF, MIF_PVD, ...)`, without
//! privileges and without asking the daemon (see `mif_common::api`).
//!
//! The kernel has no `SOL_MIF` level. The cgroup setsockopt hook runs before
//! the kernel's handler and may serve an option itself (`optlen` -1 skips
//! the handler, the kernel's own selftests serve a `SOL_CUSTOM` level so);
//! the getsockopt hook runs after the handler has answered `ENOPROTOOPT`
//! and may replace the answer. Where mif does not run (another network
//! namespace, no daemon ever), the kernel's `ENOPROTOOPT` stands.
//!
//! A choice is remembered in the socket's mark, the PvD's as `sock_create`
//! would have given it: the mark is what the PvD's rules route by and what
//! connect and sendmsg read to bind the PvD's source, so a chosen socket is
//! steered exactly as a policy's, by the same code. The mark is state of the
//! socket itself: it stays with the socket when its fd is passed to another
//! process or survives `exec`, and through a restart of the daemon (which
//! replaces these programs and any map they would have kept it in). Setting
//! it takes `bpf_setsockopt`: the kernel's capability check for `SO_MARK`
//! does not apply to a program (the application could not set it).
//!
//! Who may choose what ([`mif_common::Policy::may_choose`]): a process under
//! no policy, any PvD; under a policy, one of its `prefer` list, and unless
//! it is strict one of its `allow` list. Errors leave the socket as it was:
//! an unknown PvD is `ENOENT`, one the policy does not allow `EPERM`, one
//! not available for the socket's family `ENETUNREACH`, a socket already
//! connected `EISCONN` (its route and source are chosen: changing the mark
//! now would send its packets elsewhere from the old source), a name that
//! is empty or too long, or a socket bound to an address of another PvD,
//! `EINVAL`; a socket bound to another interface that the caller may not
//! rebind (CAP_NET_RAW) `EPERM`.
use aya_ebpf::{
    bindings::{bpf_sock, bpf_sockopt},
    helpers::generated::{bpf_set_retval, bpf_setsockopt},
};
use mif_common::{
    api::MIF_PVD,
    pvd_from_mark,
    sockopt::{SOL_SOCKET, SO_BINDTOIFINDEX, SO_MARK},
    Settings, COUNTER_NO_PVD, PVD_NAME_LEN,
};

use crate::{
    addr::{is_v4_mapped, AF_INET6},
    counters::{count, Event},
    maps::{pvd, PVD_META, PVD_NAMES},
    policy::{find_policy, in_managed_netns},
};

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EINVAL: i32 = 22;
const ENOPROTOOPT: i32 = 92;
const EISCONN: i32 = 106;
const ENETUNREACH: i32 = 101;

/// What the setsockopt program answers for a `SOL_MIF` option.
pub enum Verdict {
    /// Not mif's to serve (another namespace): the kernel answers as it
    /// would without mif (`ENOPROTOOPT`).
    PassThrough,
    /// Served: the kernel's handler is skipped, the call returns 0.
    Done,
    /// Refused with this errno; the socket is unchanged.
    Fail(i32),
}

/// Serves `setsockopt(fd, SOL_MIF, optname, optval, optlen)`.
#[inline(always)]
pub fn set(so: *mut bpf_sockopt, settings: &Settings) -> Verdict {
    if !in_managed_netns(so, settings) {
        return Verdict::PassThrough;
    }
    if unsafe { (*so).optname } != MIF_PVD {
        return Verdict::Fail(ENOPROTOOPT);
    }
    let Some(name) = read_name(so) else {
        return Verdict::Fail(EINVAL);
    };
    let Some(index) = index_of(&name) else {
        return Verdict::Fail(ENOENT);
    };
    let sk: *mut bpf_sock = unsafe { (*so).__bindgen_anon_1.sk };
    if sk.is_null() {
        return Verdict::Fail(EINVAL);
    }
    let (family, dst_port, old_mark, bound_dev) =
        unsafe { ((*sk).family, (*sk).dst_port, (*sk).mark, (*sk).bound_dev_if) };
    if dst_port != 0 {
        return Verdict::Fail(EISCONN);
    }
    let policy = find_policy(settings.attach_level);
    if let Some(p) = policy {
        if !p.may_choose(index) {
            count(p.id, COUNTER_NO_PVD, Event::Denied);
            return Verdict::Fail(EPERM);
        }
    }
    let Some(pvd) = pvd(index) else {
        return Verdict::Fail(ENETUNREACH);
    };
    let v6 = family == AF_INET6;
    if !pvd.available(v6) {
        return Verdict::Fail(ENETUNREACH);
    }
    // A socket bound to an address keeps it as its source: one of another
    // network would leave by the chosen one with the wrong source.
    let (src4, src6) = unsafe { ((*sk).src_ip4, (*sk).src_ip6) };
    let bound_elsewhere = if v6 {
        src6 != [0; 4] && src6 != pvd.addr6 && !(is_v4_mapped(&src6) && src6[3] == pvd.addr4)
    } else {
        src4 != 0 && src4 != pvd.addr4
    };
    if bound_elsewhere {
        return Verdict::Fail(EINVAL);
    }
    let len = core::mem::size_of::<i32>() as i32;
    let sk = sk.cast();
    // A socket bound to an interface (a `bind = "device"` policy's, bound
    // to its first PvD's at creation, or the application's own) must move
    // to the chosen PvD's first, or the mark would send it to a table
    // whose routes its interface cannot use. The kernel lets only
    // CAP_NET_RAW rebind a bound socket, also from a program (unlike
    // SO_MARK): without it the choice is refused, the socket untouched.
    if bound_dev != 0 && bound_dev != pvd.ifindex {
        let mut ifindex = pvd.ifindex as i32;
        let rebound = unsafe {
            bpf_setsockopt(
                sk,
                SOL_SOCKET,
                SO_BINDTOIFINDEX,
                (&raw mut ifindex).cast(),
                len,
            )
        };
        if rebound != 0 {
            return Verdict::Fail(EPERM);
        }
    }
    // The other bits of the mark are other programs' (VPN clients, routers
    // of containers): kept as they are.
    let mut mark = ((old_mark & !settings.mark_mask) | pvd.mark) as i32;
    if unsafe { bpf_setsockopt(sk, SOL_SOCKET, SO_MARK, (&raw mut mark).cast(), len) } != 0 {
        return Verdict::Fail(EINVAL);
    }
    count(policy.map_or(u32::MAX, |p| p.id), index, Event::Chosen);
    Verdict::Done
}

/// Applies a [`Verdict`] to the context; the program's return value.
#[inline(always)]
pub fn answer(so: *mut bpf_sockopt, verdict: Verdict) -> i32 {
    match verdict {
        Verdict::PassThrough => 1,
        Verdict::Done => {
            unsafe { (*so).optlen = -1 };
            1
        }
        Verdict::Fail(errno) => {
            unsafe { bpf_set_retval(-errno) };
            0
        }
    }
}

/// The PvD name in the option's value: up to the first NUL or the end,
/// 1 to `PVD_NAME_LEN - 1` bytes, NUL-padded as `PvdMeta::name` holds it.
#[inline(always)]
fn read_name(so: *mut bpf_sockopt) -> Option<[u8; PVD_NAME_LEN]> {
    let (start, end, optlen) = unsafe {
        (
            (*so).__bindgen_anon_2.optval as *const u8,
            (*so).__bindgen_anon_3.optval_end as *const u8,
            (*so).optlen,
        )
    };
    let mut name = [0u8; PVD_NAME_LEN];
    let mut i = 0;
    while i < PVD_NAME_LEN {
        if i as i32 >= optlen {
            break;
        }
        let at = unsafe { start.add(i) };
        if at.wrapping_add(1) > end {
            break;
        }
        let byte = unsafe { *at };
        if byte == 0 {
            break;
        }
        name[i] = byte;
        i += 1;
    }
    // The last byte stays a NUL: a name of `PVD_NAME_LEN` bytes or more is
    // no PvD's (the daemon keeps names shorter).
    if i == 0 || i == PVD_NAME_LEN {
        return None;
    }
    Some(name)
}

/// The index of the PvD named `name` (one lookup in the names the daemon
/// writes beside each PvD).
#[inline(always)]
fn index_of(name: &[u8; PVD_NAME_LEN]) -> Option<u32> {
    unsafe { PVD_NAMES.get(name) }.copied()
}

/// Answers `getsockopt(fd, SOL_MIF, MIF_PVD, buf, &len)` after the kernel
/// said `ENOPROTOOPT`: the name of the PvD whose mark the socket carries,
/// chosen or given by a policy, NUL-terminated (`len` = its length + 1),
/// or the empty name (one NUL, `len` 1) for a socket mif does not steer. A buffer too
/// short for the name is `EINVAL`, as for `SO_BINDTODEVICE`. Other
/// options and levels, and sockets of other namespaces, are left as the
/// kernel answered them.
#[inline(always)]
pub fn get(so: *mut bpf_sockopt, settings: &Settings) {
    if unsafe { (*so).optname } != MIF_PVD || !in_managed_netns(so, settings) {
        return;
    }
    let sk: *mut bpf_sock = unsafe { (*so).__bindgen_anon_1.sk };
    if sk.is_null() {
        return;
    }
    let mark = unsafe { (*sk).mark };
    // Unsteered: the empty name, one NUL. (An `optlen` of 0 would leave
    // the application's buffer and length as they were.)
    let name = pvd_from_mark(mark, settings.mark_mask, settings.mark_shift)
        .and_then(|index| unsafe { PVD_META.get(index) })
        .map_or([0; PVD_NAME_LEN], |meta| meta.name);
    let len = name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(PVD_NAME_LEN - 1);
    let (start, end) = unsafe {
        (
            (*so).__bindgen_anon_2.optval as *mut u8,
            (*so).__bindgen_anon_3.optval_end as *mut u8,
        )
    };
    if !copy_name(start, end, &name, len) {
        unsafe { core::ptr::write_volatile(&raw mut (*so).retval, -EINVAL) };
        return;
    }
    reply(so, len as i32 + 1, 0);
}

/// Sets the answer's length and errno. One volatile 4-byte store each: the
/// verifier refuses the 8-byte store the compiler would merge them into.
#[inline(always)]
fn reply(so: *mut bpf_sockopt, optlen: i32, retval: i32) {
    unsafe {
        core::ptr::write_volatile(&raw mut (*so).optlen, optlen);
        core::ptr::write_volatile(&raw mut (*so).retval, retval);
    }
}

/// Copies `name[..=len]` (the name and its NUL) into the buffer from
/// `start` to `end`, byte by byte (each store's bound proved to the
/// verifier), when it fits; whether it did.
#[inline(always)]
fn copy_name(start: *mut u8, end: *mut u8, name: &[u8; PVD_NAME_LEN], len: usize) -> bool {
    let mut i = 0;
    while i < PVD_NAME_LEN {
        if i > len {
            return true;
        }
        let at = start.wrapping_add(i);
        if at.wrapping_add(1) > end {
            return false;
        }
        unsafe { *at = name[i] };
        i += 1;
    }
    true
}
