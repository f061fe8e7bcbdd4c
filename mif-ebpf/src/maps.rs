//! The maps the programs share with the daemon. Pinned by name so that the
//! daemon, `mif maps` and a restarted daemon all open the same ones.
//!
//! Memory: the maps that grow with the policies (`MIF_POLICIES`,
//! `MIF_COUNTERS`) are hash maps without preallocation, so an instance pays
//! for the entries it holds (and 16 bytes of bucket per slot of
//! `max_entries`, which the daemon sets at load from its policies; the
//! sizes here are the most it may ask for). Nothing is per CPU but the
//! cgroup watchers' scratch slot (under 0.7 KiB a CPU): memory barely
//! grows with the machine's CPU count.
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use mif_common::{
    CgroupNaming, CounterKey, Counters, ExcludeKey, Policy, Pvd, PvdMeta, SelectorKey, Settings,
    GUARD_LOG_BYTES, MAX_COUNTERS, MAX_EXCLUDES, MAX_POLICIES, MAX_PVDS, MAX_SELECTORS,
    PVD_NAME_LEN, TCP_TROUBLE_BYTES,
};

/// cgroup id → policy. Written by the daemon only, so not preallocating
/// costs nothing on the programs' path (a lookup is the same either way).
#[map]
pub static MIF_POLICIES: HashMap<u64, Policy> = HashMap::pinned(MAX_POLICIES, BPF_F_NO_PREALLOC);

/// Two copies of each PvD ([`mif_common::pvd_copy`]); read through [`pvd`].
#[map]
pub static MIF_PVDS: Array<Pvd> = Array::pinned(2 * MAX_PVDS, 0);

/// PvD index → which of its two copies in [`MIF_PVDS`] is the live one.
#[map]
pub static MIF_PVD_LIVE: Array<u32> = Array::pinned(MAX_PVDS, 0);

/// The PvD with `index`, `None` when there is none: its live copy, where
/// an unused index holds zeros (a PvD's mark is never 0). Two inlined
/// array lookups. The copy a program holds is not rewritten until the
/// daemon's next change to that PvD after the flip (milliseconds at the
/// least, against a program's few hundred nanoseconds): as safe as the
/// preallocated hash map it replaces, whose elements the kernel also
/// reuses at once.
#[inline(always)]
pub fn pvd(index: u32) -> Option<&'static Pvd> {
    let live = MIF_PVD_LIVE.get(index)?;
    let pvd = MIF_PVDS.get(mif_common::pvd_copy(index, *live))?;
    (pvd.mark != 0).then_some(pvd)
}

/// (policy, PvD) → counters, one copy shared by all CPUs and incremented
/// with atomic adds (see `counters::count`). Entries are created by the
/// programs at a pair's first event.
#[map]
pub static MIF_COUNTERS: HashMap<CounterKey, Counters> =
    HashMap::pinned(MAX_COUNTERS, BPF_F_NO_PREALLOC);

/// PvD index → name and table, for `mif maps`; the programs read the name
/// only to answer which PvD a socket uses (see `choice`).
#[map]
pub static MIF_PVD_META: HashMap<u32, PvdMeta> = HashMap::pinned(MAX_PVDS, 0);

/// PvD name → PvD index, for the PvD an application chooses by name (see
/// `choice`): one lookup, where a scan of [`MIF_PVD_META`] took the
/// verifier a third of a second. Written by the daemon beside each PvD.
#[map]
pub static MIF_PVD_NAMES: HashMap<[u8; PVD_NAME_LEN], u32> = HashMap::pinned(MAX_PVDS, 0);

/// One entry: the settings this instance was loaded with, for `mif maps`.
#[map]
pub static MIF_INSTANCE: Array<Settings> = Array::pinned(1, 0);

/// (policy id, destination prefix) → 1: what a policy's `exclude` leaves to
/// the main table. Looked up only for policies flagged `POLICY_EXCLUDES`.
#[map]
pub static MIF_EXCLUDE: LpmTrie<ExcludeKey, u8> = LpmTrie::pinned(MAX_EXCLUDES, 0);

/// The guards' drops, one record each, for the daemon's log. Pinned like
/// the others, so drops while the daemon restarts are read by the next.
#[map]
pub static MIF_GUARD_LOG: RingBuf = RingBuf::pinned(GUARD_LOG_BYTES, 0);

/// Retransmission timeouts of connections on PvDs, one record each, for
/// the daemon (see `tcp_health`). Pinned, so timeouts while the daemon
/// restarts reach the next one.
#[map]
pub static MIF_TCP_TROUBLE: RingBuf = RingBuf::pinned(TCP_TROUBLE_BYTES, 0);

/// One entry: how many records [`MIF_TCP_TROUBLE`] had no room for.
#[map]
pub static MIF_TCP_LOST: Array<u64> = Array::pinned(1, 0);

/// Selector → the policy a new cgroup it selects gets at once (see
/// `cgroup_naming`). Written by the daemon only.
#[map]
pub static MIF_SELECTORS: HashMap<SelectorKey, Policy> =
    HashMap::pinned(MAX_SELECTORS, BPF_F_NO_PREALLOC);

/// One entry: what the cgroup watchers need to read a new cgroup (see
/// [`CgroupNaming`]); all zero, so inert, until the daemon writes it.
#[map]
pub static MIF_CG_NAMING: Array<CgroupNaming> = Array::pinned(1, 0);

/// The cgroup watchers' working memory, one slot per CPU (a watcher runs
/// on one CPU from start to end). Nothing in it outlives a run; pinned
/// only so that the pin directory lists every map.
#[map]
pub static MIF_CG_SCRATCH: PerCpuArray<crate::cgroup_naming::Scratch> = PerCpuArray::pinned(1, 0);

pub use MIF_CG_NAMING as CG_NAMING;
pub use MIF_CG_SCRATCH as CG_SCRATCH;
pub use MIF_COUNTERS as COUNTERS;
pub use MIF_EXCLUDE as EXCLUDE;
pub use MIF_POLICIES as POLICIES;
pub use MIF_PVD_META as PVD_META;
pub use MIF_PVD_NAMES as PVD_NAMES;
pub use MIF_SELECTORS as SELECTORS;
