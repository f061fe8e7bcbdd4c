//! Typed access to mif's pinned maps: writing the desired contents, and
//! reading everything back for `mif maps` (whether or not a daemon runs).
use std::{
    collections::{HashMap as StdHashMap, HashSet},
    os::fd::{AsFd as _, OwnedFd},
};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, Map, MapData, MapError,
};
use mif_common::{
    names, CounterKey, Counters, ExcludeKey, Policy, Pvd, PvdMeta, SelectorKey, Settings,
    PVD_NAME_LEN,
};

use log::{info, warn};

use crate::{
    apply::pvd_table::SharedPvdTable,
    apply::{loader::raw, pins::PinDir},
    plan::{Desired, ExcludeEntry},
};

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("no mif maps are pinned at {dir} (is the daemon running with this --pin-dir?)")]
    NotPinned { dir: String },
    #[error("cannot open pinned map {name}")]
    Open {
        name: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("cannot remove the pin of map {name}")]
    Unpin {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {action} map {name}")]
    Update {
        name: &'static str,
        action: &'static str,
        #[source]
        source: Box<MapError>,
    },
}

pub struct KernelMaps {
    /// Where they are pinned (with the links, which `mif maps` counts).
    pins: PinDir,
    policies: HashMap<MapData, u64, Policy>,
    /// The policy map's descriptor, for batch updates (aya has none).
    policies_fd: OwnedFd,
    /// The policy map's `max_entries` as the kernel has it (set at load from
    /// the policies, see [`crate::plan::policy_capacity_for`]).
    policy_capacity: usize,
    /// Shared with the link-down thread ([`crate::apply::link_watch`]).
    pvds: SharedPvdTable,
    /// The PvD table's generation when the current pass began: PvDs of
    /// links that went down after it are written unavailable.
    generation: u64,
    meta: HashMap<MapData, u32, PvdMeta>,
    /// PvD name → index, for the MIF API's choice by name.
    names: HashMap<MapData, [u8; PVD_NAME_LEN], u32>,
    counters: HashMap<MapData, CounterKey, Counters>,
    instance: Array<MapData, Settings>,
    excludes: LpmTrie<MapData, ExcludeKey, u8>,
    /// The exclusion entries this process last wrote (`None` until the
    /// first write, which lists the trie itself, like `written_policies`).
    written_excludes: Option<HashSet<ExcludeEntry>>,
    /// How many policies found no room in the policy map at the last write,
    /// so the warning is logged when that changes, not on every pass.
    over_capacity: usize,
    /// The policy entries this process last wrote, so that a pass rewrites
    /// only what changed (a link flap changes no policy; with 100,000
    /// policies, rewriting and listing them all took most of a pass).
    /// `None` until the first write: the map may hold a previous daemon's
    /// entries, so the first write lists the map itself.
    written_policies: Option<StdHashMap<u64, Policy>>,
    selectors: HashMap<MapData, SelectorKey, Policy>,
    /// The selector entries this process last wrote (`None` until the
    /// first write, which lists the map, like `written_policies`).
    written_selectors: Option<StdHashMap<SelectorKey, Policy>>,
}

/// How a failed `action` on the map `name` becomes a [`MapsError`].
fn update_failed(name: &'static str, action: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |e| MapsError::Update {
        name,
        action,
        source: Box::new(e),
    }
}

/// Whether a failed removal found no entry to remove: aya reports that
/// as the syscall's ENOENT (`KeyNotFound` is for lookups), which must not
/// fail a pass over an entry that is gone anyway.
fn already_gone(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// A removal's outcome, an entry that was already gone counted as removed.
fn removed(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(e) if already_gone(&e) => Ok(()),
        other => other,
    }
}

/// From this many changed policy entries on, they are written in batches.
const BATCH_FROM: usize = 64;
/// Entries per batch update.
const BATCH: usize = 4096;

/// A descriptor of its own for a pinned map.
fn own_fd(pins: &PinDir, name: &'static str) -> Result<OwnedFd, MapsError> {
    let data = MapData::from_pin(pins.map(name)).map_err(|e| MapsError::Open {
        name,
        source: Box::new(e),
    })?;
    data.fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| MapsError::Open {
            name,
            source: Box::new(MapError::SyscallError(aya::sys::SyscallError {
                call: "dup",
                io_error: e,
            })),
        })
}

fn open(pins: &PinDir, name: &'static str) -> Result<Map, MapsError> {
    let path = pins.map(name);
    if !path.exists() {
        return Err(MapsError::NotPinned {
            dir: pins.versioned().display().to_string(),
        });
    }
    let data = MapData::from_pin(&path).map_err(|e| MapsError::Open {
        name,
        source: Box::new(e),
    })?;
    Map::from_map_data(data).map_err(|e| MapsError::Open {
        name,
        source: Box::new(e),
    })
}

/// A pinned map's `max_entries` as the kernel has it.
pub fn max_entries(pins: &PinDir, name: &'static str) -> Result<u32, MapsError> {
    let path = pins.map(name);
    if !path.exists() {
        return Err(MapsError::NotPinned {
            dir: pins.versioned().display().to_string(),
        });
    }
    aya::maps::MapInfo::from_pin(&path)
        .map(|info| info.max_entries())
        .map_err(|e| MapsError::Open {
            name,
            source: Box::new(e),
        })
}

macro_rules! typed {
    ($pins:expr, $name:expr) => {
        open($pins, $name)?
            .try_into()
            .map_err(|e| MapsError::Open {
                name: $name,
                source: Box::new(e),
            })?
    };
}

/// What an adopted instance's counters held when its policy map was too
/// small for the policies a restarted daemon finds.
pub struct CarriedCounters(Vec<(CounterKey, Counters)>);

/// Before a load that adopts pinned maps: when the pinned policy map holds
/// fewer than `policies` entries, reads the counters and removes the pins
/// of the policy and counter maps, so that the load creates them anew at
/// the new size ([`put_back_counters`] then restores the counts). The
/// programs still attached keep the old maps until their links are
/// replaced; the policy map needs no copy, the first pass writes it in
/// full before the new programs are attached.
pub fn take_counters_if_smaller(
    pins: &PinDir,
    policies: u32,
) -> Result<Option<CarriedCounters>, MapsError> {
    match max_entries(pins, names::MAP_POLICIES) {
        Ok(have) if have < policies => {}
        _ => return Ok(None),
    }
    let counters: HashMap<MapData, CounterKey, Counters> = typed!(pins, names::MAP_COUNTERS);
    let carried = counters.iter().filter_map(Result::ok).collect();
    drop(counters);
    for name in [names::MAP_POLICIES, names::MAP_COUNTERS] {
        std::fs::remove_file(pins.map(name)).map_err(|source| MapsError::Unpin { name, source })?;
    }
    Ok(Some(CarriedCounters(carried)))
}

/// Writes counters taken by [`take_counters_if_smaller`] into the new map.
pub fn put_back_counters(pins: &PinDir, carried: &CarriedCounters) -> Result<usize, MapsError> {
    let mut counters: HashMap<MapData, CounterKey, Counters> = typed!(pins, names::MAP_COUNTERS);
    for (key, value) in &carried.0 {
        counters
            .insert(key, value, 0)
            .map_err(update_failed(names::MAP_COUNTERS, "write"))?;
    }
    Ok(carried.0.len())
}

impl KernelMaps {
    /// Where the maps are pinned.
    pub fn pins(&self) -> &PinDir {
        &self.pins
    }

    pub fn open(pins: &PinDir) -> Result<Self, MapsError> {
        Ok(Self {
            pins: pins.clone(),
            policy_capacity: max_entries(pins, names::MAP_POLICIES)? as usize,
            policies: typed!(pins, names::MAP_POLICIES),
            policies_fd: own_fd(pins, names::MAP_POLICIES)?,
            pvds: SharedPvdTable::new(
                typed!(pins, names::MAP_PVDS),
                typed!(pins, names::MAP_PVD_LIVE),
            ),
            generation: 0,
            meta: typed!(pins, names::MAP_PVD_META),
            names: typed!(pins, names::MAP_PVD_NAMES),
            counters: typed!(pins, names::MAP_COUNTERS),
            instance: typed!(pins, names::MAP_INSTANCE),
            excludes: typed!(pins, names::MAP_EXCLUDE),
            written_excludes: None,
            over_capacity: 0,
            written_policies: None,
            selectors: typed!(pins, names::MAP_SELECTORS),
            written_selectors: None,
        })
    }

    /// The PvD map, for the link-down thread.
    pub fn pvd_table(&self) -> SharedPvdTable {
        self.pvds.clone()
    }

    /// Marks the start of a pass, before its dump (see [`crate::apply::pvd_table`]).
    pub fn begin_pass(&mut self) {
        self.generation = self.pvds.lock().generation();
    }

    /// Makes the maps hold exactly `desired`. PvDs are written before the
    /// policies that point at them; stale entries are removed last, so a
    /// socket created meanwhile sees either the old or the new state.
    pub fn write(&mut self, settings: &Settings, desired: &Desired) -> Result<(), MapsError> {
        self.instance
            .set(0, settings, 0)
            .map_err(update_failed(names::MAP_INSTANCE, "write"))?;
        for (index, pvd, meta) in &desired.pvds {
            self.meta
                .insert(index, meta, 0)
                .map_err(update_failed(names::MAP_PVD_META, "write"))?;
            self.pvds
                .lock()
                .insert(*index, pvd, self.generation)
                .map_err(update_failed(names::MAP_PVDS, "write"))?;
        }
        self.write_names(&desired.pvds)?;
        self.report_over_capacity(&desired.over_capacity);
        // A policy's exclusions before the policy: a socket that finds the
        // policy finds what it excludes (the programs may already run
        // while a fresh install's first pass writes).
        self.write_excludes(&desired.excludes)?;
        if !(desired.policies_unchanged && self.written_policies.is_some()) {
            self.write_policies(desired)?;
        }
        self.write_selectors(&desired.selectors)?;
        let keep: HashSet<u32> = desired.pvds.iter().map(|(k, _, _)| *k).collect();
        let mut pvds = self.pvds.lock();
        let stale: Vec<u32> = pvds
            .entries()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !keep.contains(k))
            .collect();
        for key in stale {
            pvds.remove(key)
                .map_err(update_failed(names::MAP_PVDS, "remove from"))?;
            let _ = self.meta.remove(&key);
        }
        pvds.settle(self.generation);
        Ok(())
    }

    /// Makes the name map hold exactly the names of `pvds`, each with its
    /// index (at most [`mif_common::MAX_PVDS`] entries: listed every pass).
    fn write_names(&mut self, pvds: &[(u32, Pvd, PvdMeta)]) -> Result<(), MapsError> {
        let wanted: StdHashMap<[u8; PVD_NAME_LEN], u32> = pvds
            .iter()
            .map(|(index, _, meta)| (meta.name, *index))
            .collect();
        let stale: Vec<[u8; PVD_NAME_LEN]> = (self.names.iter().filter_map(Result::ok))
            .filter(|(name, index)| wanted.get(name) != Some(index))
            .map(|(name, _)| name)
            .collect();
        for name in stale {
            removed(self.names.remove(&name))
                .map_err(update_failed(names::MAP_PVD_NAMES, "remove from"))?;
        }
        for (name, index) in &wanted {
            self.names
                .insert(name, index, 0)
                .map_err(update_failed(names::MAP_PVD_NAMES, "write"))?;
        }
        Ok(())
    }

    /// Makes the policy map hold exactly `desired.policies`, writing the
    /// entries that changed since the last write.
    fn write_policies(&mut self, desired: &Desired) -> Result<(), MapsError> {
        let keep: HashSet<u64> = desired.policies.iter().map(|(k, _)| *k).collect();
        // Until the new set is written in full, nothing is known to be there.
        let previous = self.written_policies.take();
        let current: HashSet<u64> = match &previous {
            Some(previous) => previous.keys().copied().collect(),
            None => self.policies.keys().filter_map(Result::ok).collect(),
        };
        let stale: Vec<u64> = current.difference(&keep).copied().collect();
        // Near capacity, new entries fit only once the stale ones are gone
        // (the kernel refuses an insert into a full map with E2BIG); those
        // cgroups lose their policy in this pass anyway.
        let early = current.len() + keep.difference(&current).count() > self.policy_capacity;
        let remove_stale = |policies: &mut HashMap<MapData, u64, Policy>| {
            // Gone already is fine: the kernel's cgroup watcher drops a
            // removed cgroup's entry, and so may someone else (`mif
            // cleanup`, a test).
            stale.iter().try_for_each(|key| {
                removed(policies.remove(key))
                    .map_err(update_failed(names::MAP_POLICIES, "remove from"))
            })
        };
        if early {
            remove_stale(&mut self.policies)?;
        }
        let changed: Vec<(u64, Policy)> = (desired.policies.iter())
            .filter(|(cgroup_id, policy)| {
                !previous
                    .as_ref()
                    .is_some_and(|p| p.get(cgroup_id) == Some(policy))
            })
            .copied()
            .collect();
        self.insert_policies(&changed)?;
        if !early {
            remove_stale(&mut self.policies)?;
        }
        self.written_policies = Some(desired.policies.iter().copied().collect());
        Ok(())
    }

    /// Writes `entries` into the policy map: from [`BATCH_FROM`] entries on
    /// in batches (one system call per [`BATCH`] entries: one by one,
    /// 100,000 entries took about 150 ms of a start-up's first pass),
    /// otherwise, and for whatever a batch did not write (a kernel without
    /// batch updates, before 5.6, or a refused entry), one by one, which
    /// also names the entry and the reason of an error.
    fn insert_policies(&mut self, entries: &[(u64, Policy)]) -> Result<(), MapsError> {
        let mut written = 0;
        if entries.len() >= BATCH_FROM {
            let keys: Vec<u64> = entries.iter().map(|(k, _)| *k).collect();
            let values: Vec<Policy> = entries.iter().map(|(_, v)| *v).collect();
            for (k, v) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
                match raw::map_update_batch(self.policies_fd.as_fd(), k, v) {
                    Ok(()) => written += k.len(),
                    Err((n, _)) => {
                        written += n;
                        break;
                    }
                }
            }
        }
        for (cgroup_id, policy) in &entries[written..] {
            self.policies
                .insert(cgroup_id, policy, 0)
                .map_err(update_failed(names::MAP_POLICIES, "write"))?;
        }
        Ok(())
    }

    /// Makes the selector map hold exactly `entries` (a few: one per
    /// selector policy), changed ones only.
    fn write_selectors(&mut self, entries: &[(SelectorKey, Policy)]) -> Result<(), MapsError> {
        let previous = match self.written_selectors.take() {
            Some(previous) => previous,
            None => self.selectors.iter().filter_map(Result::ok).collect(),
        };
        let keep: StdHashMap<SelectorKey, Policy> = entries.iter().copied().collect();
        for (key, policy) in &keep {
            if previous.get(key) != Some(policy) {
                self.selectors
                    .insert(key, policy, 0)
                    .map_err(update_failed(names::MAP_SELECTORS, "write"))?;
            }
        }
        for key in previous.keys().filter(|k| !keep.contains_key(k)) {
            removed(self.selectors.remove(key))
                .map_err(update_failed(names::MAP_SELECTORS, "remove from"))?;
        }
        self.written_selectors = Some(keep);
        Ok(())
    }

    /// Makes the trie hold exactly `entries`. New entries go in before stale
    /// ones go out: a connect meanwhile sees the old or the new exclusions,
    /// a policy flagged for them finds its entries.
    fn write_excludes(&mut self, entries: &[ExcludeEntry]) -> Result<(), MapsError> {
        let keep: HashSet<ExcludeEntry> = entries.iter().copied().collect();
        let previous = match self.written_excludes.take() {
            Some(previous) => previous,
            None => {
                // A previous daemon's entries: removed unless wanted.
                let wanted: HashSet<(u32, ExcludeKey)> = keep.iter().map(|e| e.key()).collect();
                let listed: Vec<Key<ExcludeKey>> =
                    self.excludes.keys().filter_map(Result::ok).collect();
                for key in listed {
                    if !wanted.contains(&(key.prefix_len(), key.data())) {
                        self.excludes
                            .remove(&key)
                            .map_err(update_failed(names::MAP_EXCLUDE, "remove from"))?;
                    }
                }
                HashSet::new()
            }
        };
        for entry in keep.difference(&previous) {
            let (bits, data) = entry.key();
            self.excludes
                .insert(&Key::new(bits, data), 1, 0)
                .map_err(update_failed(names::MAP_EXCLUDE, "write"))?;
        }
        for entry in previous.difference(&keep) {
            let (bits, data) = entry.key();
            removed(self.excludes.remove(&Key::new(bits, data)))
                .map_err(update_failed(names::MAP_EXCLUDE, "remove from"))?;
        }
        self.written_excludes = Some(keep);
        Ok(())
    }

    /// Makes the next write rewrite and list every policy entry, putting
    /// back whatever someone else changed or removed.
    pub fn forget_written(&mut self) {
        self.written_policies = None;
        self.written_excludes = None;
        self.written_selectors = None;
    }

    /// Clears, in the PvD map, the availability that `desired` takes away,
    /// and nothing else: a PvD that is lost must stop being chosen at once,
    /// while the routing work of a pass (dumps, installs) may take
    /// milliseconds. Returns how many entries changed.
    pub fn withdraw_lost(&mut self, desired: &Desired) -> Result<usize, MapsError> {
        let mut changed = 0;
        for (index, pvd, _) in &desired.pvds {
            changed += usize::from(self.keep_only(*index, pvd.flags)?);
        }
        Ok(changed)
    }

    /// Keeps only `flags` of a PvD's availability; whether that changed it.
    /// A PvD not in the map yet has nothing to take away.
    fn keep_only(&mut self, index: u32, flags: u32) -> Result<bool, MapsError> {
        let mut pvds = self.pvds.lock();
        let Ok(current) = pvds.get(index) else {
            return Ok(false);
        };
        let kept = current.flags & flags;
        if kept == current.flags {
            return Ok(false);
        }
        let withdrawn = Pvd {
            flags: kept,
            ..current
        };
        pvds.insert(index, &withdrawn, self.generation)
            .map_err(update_failed(names::MAP_PVDS, "write"))?;
        Ok(true)
    }

    /// Logs policies left out for want of room in the policy map, once per
    /// change of their number: an admin must learn that some cgroups are not
    /// steered (`mif status` and `mif policy list` show it too).
    fn report_over_capacity(&mut self, left_out: &[String]) {
        if left_out.len() == self.over_capacity {
            return;
        }
        self.over_capacity = left_out.len();
        if left_out.is_empty() {
            info!("every policy fits in the policy map again");
            return;
        }
        const SHOWN: usize = 5;
        let more = left_out.len().saturating_sub(SHOWN);
        warn!(
            "the policy map {} holds at most {} cgroups: {} policies are not enforced \
             (dropped: {}), e.g. {}{}; a restarted daemon sizes it for the policies it finds",
            names::MAP_POLICIES,
            self.policy_capacity,
            left_out.len(),
            left_out.len(),
            left_out[..left_out.len().min(SHOWN)].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }

    /// How many cgroups the policy map holds.
    pub fn policy_capacity(&self) -> usize {
        self.policy_capacity
    }

    pub fn settings(&self) -> Option<Settings> {
        self.instance.get(&0, 0).ok()
    }

    pub fn policies(&self) -> Vec<(u64, Policy)> {
        let mut v: Vec<_> = self.policies.iter().filter_map(Result::ok).collect();
        v.sort_by_key(|(_, p)| p.id);
        v
    }

    pub fn pvds(&self) -> Vec<(u32, Pvd, Option<PvdMeta>)> {
        let entries = self.pvds.lock().entries();
        let mut v: Vec<_> = entries
            .into_iter()
            .map(|(i, p)| (i, p, self.meta.get(&i, 0).ok()))
            .collect();
        v.sort_by_key(|(i, _, _)| *i);
        v
    }

    /// The counters (one copy for all CPUs, see mif-ebpf's `counters`).
    pub fn counters(&self) -> StdHashMap<CounterKey, Counters> {
        self.counters.iter().filter_map(Result::ok).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removal_that_finds_nothing_is_no_failure() {
        let syscall = |errno| {
            MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_delete_elem",
                io_error: std::io::Error::from_raw_os_error(errno),
            })
        };
        assert!(already_gone(&syscall(libc::ENOENT)));
        assert!(already_gone(&MapError::KeyNotFound));
        assert!(!already_gone(&syscall(libc::EPERM)));
    }
}
