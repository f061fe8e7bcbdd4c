//! Per (policy, PvD) counters.
use aya_ebpf::bindings::BPF_NOEXIST;
use mif_common::{CounterKey, Counters};

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
}

#[inline(always)]
pub fn count(policy: u32, pvd: u32, event: Event) {
    let key = CounterKey { policy, pvd };
    let slot = match COUNTERS.get_ptr_mut(key) {
        Some(slot) => slot,
        None => {
            let zero = Counters::default();
            // Another CPU may have created it meanwhile: NOEXIST then fails
            // harmlessly and the lookup below finds theirs. A full map loses
            // the count, never the verdict.
            let _ = COUNTERS.insert(key, zero, u64::from(BPF_NOEXIST));
            match COUNTERS.get_ptr_mut(key) {
                Some(slot) => slot,
                None => return,
            }
        }
    };
    let c = unsafe { &mut *slot };
    match event {
        Event::Steered => c.steered += 1,
        Event::Fallback => c.fallback += 1,
        Event::Refused => c.refused += 1,
        Event::Unsteered => c.unsteered += 1,
        Event::Bound => c.bound += 1,
        Event::SourceSet => c.src_set += 1,
        Event::Denied => c.denied += 1,
        Event::Dns => c.dns += 1,
        Event::Excluded => c.excluded += 1,
    }
}
