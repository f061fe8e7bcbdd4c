//! Who a hook runs for: this instance's settings and the policy of the
//! current process, shared by every program.
use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use mif_common::{Policy, Settings, MAX_CGROUP_DEPTH};

use crate::maps::POLICIES;

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
pub fn settings() -> Settings {
    // Volatile so the compiler does not fold the zero initialiser: the real
    // values are patched into .rodata at load time.
    unsafe { core::ptr::read_volatile(&MIF_SETTINGS) }
}

/// The policy of the deepest cgroup, from the process's own up to the cgroup
/// the programs are attached to, that has one. Walking ancestors (rather than
/// copying policies onto every descendant) covers cgroups created later with
/// no window.
#[inline(always)]
pub fn find_policy(attach_level: u32) -> Option<&'static Policy> {
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

/// The current process's policy when it is strict.
#[inline(always)]
pub fn strict_policy(settings: &Settings) -> Option<&'static Policy> {
    find_policy(settings.attach_level).filter(|p| p.is_strict())
}
