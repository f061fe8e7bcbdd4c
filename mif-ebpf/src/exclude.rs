//! Destinations a policy leaves to the main table (`exclude = [...]`): the
//! printer on the LAN, a local container, for an application otherwise
//! steered to cellular or to a VPN.
//!
//! Decided at connect(): the socket gets the excluded mark (every bit of
//! mif's mask, which no rule of mif matches; `mif_common::excluded_mark`)
//! instead of its PvD's, loses the interface of `bind = "device"` and is
//! not bound to the PvD's source, so the kernel routes it as it would
//! without mif. The mark stays: a strict policy's excluded socket that
//! later connects (or sends) anywhere else is refused ([`escapes`]), so an
//! exclusion is a hole to the excluded destinations and nowhere else. An unconnected UDP datagram cannot be
//! excluded this way: the kernel takes the socket's mark for its route
//! before the sendmsg hook runs (`ipcm_init_sk` in `udp_sendmsg`), so a
//! mark changed there would only apply to the next datagram.
use aya_ebpf::{bindings::bpf_sock_addr, helpers::generated::bpf_setsockopt, maps::lpm_trie::Key};
use mif_common::{
    excluded_mark, is_excluded_mark,
    sockopt::{SOL_SOCKET, SO_BINDTOIFINDEX, SO_MARK},
    ExcludeKey, Policy, Settings,
};

use crate::{maps::EXCLUDE, strict};

/// Whether `policy` excludes `addr` (IPv6 form, IPv4 v4-mapped, words in
/// network byte order).
#[inline(always)]
pub fn excludes(policy: &Policy, addr: &[u32; 4]) -> bool {
    if !policy.has_excludes() {
        return false;
    }
    let mut bytes = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let word = addr[i].to_ne_bytes();
        bytes[4 * i] = word[0];
        bytes[4 * i + 1] = word[1];
        bytes[4 * i + 2] = word[2];
        bytes[4 * i + 3] = word[3];
        i += 1;
    }
    let key = Key::new(
        ExcludeKey::prefix_bits(128, false),
        ExcludeKey {
            policy: policy.id,
            addr: bytes,
        },
    );
    EXCLUDE.get(&key).is_some()
}

/// The v4-mapped form of an IPv4 address (network byte order).
#[inline(always)]
pub fn mapped4(addr: u32) -> [u32; 4] {
    [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), addr]
}

/// Takes the socket off its PvD: the excluded mark, no interface binding.
/// The socket is locked in connect hooks, as `bpf_setsockopt` requires; the
/// cgroup setsockopt hook does not run for it (the kernel calls the option
/// code directly), so strict mode's refusal of SO_MARK does not apply.
#[inline(always)]
pub fn unsteer(sa: *mut bpf_sock_addr, settings: &Settings, policy: &Policy) {
    let mut zero: i32 = 0;
    let mut mark = excluded_mark(settings.mark_mask) as i32;
    let len = core::mem::size_of::<i32>() as i32;
    unsafe {
        bpf_setsockopt(sa.cast(), SOL_SOCKET, SO_MARK, (&raw mut mark).cast(), len);
        if policy.binds_device() {
            bpf_setsockopt(
                sa.cast(),
                SOL_SOCKET,
                SO_BINDTOIFINDEX,
                (&raw mut zero).cast(),
                len,
            );
        }
    }
}

/// Whether a strict policy refuses this connect or datagram: the socket was
/// excluded before (its mark says so) and `dst` (IPv6 form) is not an
/// excluded destination of the policy. Cheap for every other socket: one
/// read of the mark.
#[inline(always)]
pub fn escapes(sa: *mut bpf_sock_addr, settings: &Settings, dst: &[u32; 4]) -> bool {
    let sk = unsafe { (*sa).__bindgen_anon_1.sk };
    if sk.is_null() || !is_excluded_mark(unsafe { (*sk).mark }, settings.mark_mask) {
        return false;
    }
    strict::refuses(sa, settings, |p| !excludes(p, dst))
}
