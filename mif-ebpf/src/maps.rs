//! The maps the programs share with the daemon. Pinned by name so that the
//! daemon, `mif maps` and a restarted daemon all open the same ones.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuHashMap},
};
use mif_common::{
    CounterKey, Counters, ExcludeKey, Policy, Pvd, PvdMeta, Settings, MAX_COUNTERS, MAX_EXCLUDES,
    MAX_POLICIES, MAX_PVDS,
};

/// cgroup id → policy.
#[map]
pub static MIF_POLICIES: HashMap<u64, Policy> = HashMap::pinned(MAX_POLICIES, 0);

/// PvD index → PvD. A hash map rather than an array: an update replaces the
/// whole value at once, so a program never reads a half-written PvD.
#[map]
pub static MIF_PVDS: HashMap<u32, Pvd> = HashMap::pinned(MAX_PVDS, 0);

/// (policy, PvD) → counters, per CPU so increments need no atomics.
#[map]
pub static MIF_COUNTERS: PerCpuHashMap<CounterKey, Counters> =
    PerCpuHashMap::pinned(MAX_COUNTERS, 0);

/// PvD index → name and table, for `mif maps`; the programs never read it.
#[map]
pub static MIF_PVD_META: HashMap<u32, PvdMeta> = HashMap::pinned(MAX_PVDS, 0);

/// One entry: the settings this instance was loaded with, for `mif maps`.
#[map]
pub static MIF_INSTANCE: Array<Settings> = Array::pinned(1, 0);

/// (policy id, destination prefix) → 1: what a policy's `exclude` leaves to
/// the main table. Looked up only for policies flagged `POLICY_EXCLUDES`.
#[map]
pub static MIF_EXCLUDE: LpmTrie<ExcludeKey, u8> = LpmTrie::pinned(MAX_EXCLUDES, 0);

pub use MIF_COUNTERS as COUNTERS;
pub use MIF_EXCLUDE as EXCLUDE;
pub use MIF_POLICIES as POLICIES;
pub use MIF_PVDS as PVDS;
