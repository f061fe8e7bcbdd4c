//! Who a hook runs for: this instance's settings and the policy of the
//! current process, shared by every program.
use aya_ebpf::helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id};
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
///
/// This runs for every socket, so it spends as few helper calls as it can:
/// first the process's own cgroup (policies usually sit on a service's or a
/// container's own cgroup: one helper call and one lookup); then the depth
/// of the process's cgroup by a binary search (5 calls for 32 levels; the
/// ancestor helper returns 0 below the process's own level); then one call
/// and one lookup per level from there up to the attach level. Walking down
/// from `MAX_CGROUP_DEPTH` instead spent most of the program's time on
/// levels the process does not have (see docs/benchmarks.md).
#[inline(always)]
pub fn find_policy(attach_level: u32) -> Option<&'static Policy> {
    let own = unsafe { bpf_get_current_cgroup_id() };
    if let Some(policy) = unsafe { POLICIES.get(own) } {
        return Some(policy);
    }
    let depth = cgroup_depth();
    let mut i = 0;
    while i < MAX_CGROUP_DEPTH {
        if i > depth {
            break;
        }
        let level = depth - i;
        if level < attach_level {
            break;
        }
        let id = ancestor_at(level);
        // The own cgroup was looked up above.
        if id != 0 && id != own {
            if let Some(policy) = unsafe { POLICIES.get(id) } {
                return Some(policy);
            }
        }
        i += 1;
    }
    None
}

/// Id of the current process's ancestor at `level` (0: the cgroup2 root);
/// 0 when the process's cgroup is shallower than `level`.
#[inline(always)]
fn ancestor_at(level: u32) -> u64 {
    unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) }
}

/// Level of the current process's cgroup, capped at `MAX_CGROUP_DEPTH - 1`
/// (deeper cgroups are walked from there, as before).
#[inline(always)]
fn cgroup_depth() -> u32 {
    // Invariant: ancestor_at(low) != 0 (level 0 is the root), and
    // ancestor_at(high) == 0 or high is past the deepest level we walk.
    let mut low = 0;
    let mut high = MAX_CGROUP_DEPTH;
    // log2(MAX_CGROUP_DEPTH) + 1 rounds always suffice; the bound is for
    // the verifier.
    let mut round = 0;
    while round < 8 && high - low > 1 {
        let mid = (low + high) / 2;
        if ancestor_at(mid) != 0 {
            low = mid;
        } else {
            high = mid;
        }
        round += 1;
    }
    low
}

/// The current process's policy when it is strict.
#[inline(always)]
pub fn strict_policy(settings: &Settings) -> Option<&'static Policy> {
    find_policy(settings.attach_level).filter(|p| p.is_strict())
}
