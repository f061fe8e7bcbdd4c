//! Per (policy, PvD) counters.
//!
//! One copy per pair for all CPUs (a per-CPU map costs its value × the
//! possible CPUs per entry: 1.7 GiB on 64 CPUs at the old size), so the
//! increment is an atomic add (`lock xadd` on x86): a few nanoseconds
//! uncontended, more only while several CPUs count for the same pair at
//! the same moment.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::bindings::BPF_NOEXIST;
use mif_common::{CounterKey, Counters, GuardDrop};

use crate::maps::COUNTERS;

#[derive(Clone, Copy)]
pub enum Event {
    Steered,
    Fallback,
    Refused,
    Unsteered,
    Bound,
    SourceSet,
    Denied,
    Dns,
    Excluded,
    GuardDrop,
    Chosen,
}

#[inline(always)]
pub fn count(policy: u32, pvd: u32, event: Event) {
    if let Some(slot) = slot(policy, pvd) {
        bump(slot, event);
    }
}

/// The counters of (policy, PvD), made at the pair's first event. One hash
/// lookup: a hook that counts two events of one pair (a steer that is also
/// a fallback) takes the slot once and [`bump`]s it twice.
#[inline(always)]
pub fn slot(policy: u32, pvd: u32) -> Option<*mut Counters> {
    let key = CounterKey { policy, pvd };
    if let Some(slot) = COUNTERS.get_ptr_mut(key) {
        return Some(slot);
    }
    let zero = Counters::default();
    // Another CPU may have created it meanwhile: NOEXIST then fails
    // harmlessly and the lookup below finds theirs. A full map loses the
    // count, never the verdict.
    let _ = COUNTERS.insert(key, zero, u64::from(BPF_NOEXIST));
    COUNTERS.get_ptr_mut(key)
}

/// Adds one `event` to the counters at `slot` (from [`slot`]).
#[inline(always)]
pub fn bump(slot: *mut Counters, event: Event) {
    let field = unsafe {
        match event {
            Event::Steered => &raw mut (*slot).steered,
            Event::Fallback => &raw mut (*slot).fallback,
            Event::Refused => &raw mut (*slot).refused,
            Event::Unsteered => &raw mut (*slot).unsteered,
            Event::Bound => &raw mut (*slot).bound,
            Event::SourceSet => &raw mut (*slot).src_set,
            Event::Denied => &raw mut (*slot).denied,
            Event::Dns => &raw mut (*slot).dns,
            Event::Excluded => &raw mut (*slot).excluded,
            Event::GuardDrop => &raw mut (*slot).guard_drops,
            Event::Chosen => &raw mut (*slot).chosen,
        }
    };
    // SAFETY: `field` points into a live map value, 8-byte aligned (the
    // kernel aligns values to 8 and every field is a u64). The BPF target
    // has no `AtomicU64::fetch_add` (it declares no compare-and-swap), so
    // the intrinsic; its result is unused, which the BPF backend emits as
    // a plain atomic add (BPF_ATOMIC | BPF_ADD, any kernel mif supports).
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, 1) };
}

/// Reports one packet a guard dropped to the daemon's log; when the ring
/// is full the drop is only counted (the daemon's log is rate-limited
/// anyway).
#[inline(always)]
pub fn report_drop(policy: u32, ifindex: u32, family: u32) {
    let drop = GuardDrop {
        policy,
        ifindex,
        family,
        _pad: 0,
    };
    let _ = crate::maps::MIF_GUARD_LOG.output::<GuardDrop>(&drop, 0);
}
