//! The PvD map, shared by the daemon's passes and its link-down thread
//! ([`crate::apply::link_watch`]).
//!
//! A pass dumps the interfaces, computes, installs routing and only then
//! writes the PvDs: milliseconds, and with 100,000 policies much more. A
//! link that goes down meanwhile must not wait for the pass, nor be made
//! available again by it: the pass writes what its dump saw, which may be
//! from before the link went down. So the thread clears the link's PvDs at
//! once and records the link as down since a numbered moment (its
//! *generation*); a pass that dumped before that moment writes those PvDs
//! unavailable, and the pass that dumps after it (one is always queued: the
//! same notification triggers it) decides from the dump alone.
use std::{
    collections::HashMap as StdHashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use aya::maps::{Array, MapData, MapError};
use mif_common::{pvd_copy, Pvd, MAX_PVDS};

/// Links that went down, by the generation in which they did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LinkDowns {
    generation: u64,
    down_since: StdHashMap<u32, u64>,
}

impl LinkDowns {
    /// The current generation: a pass takes it before its dump.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records that link `ifindex` went down, in a new generation.
    pub fn link_down(&mut self, ifindex: u32) {
        self.generation += 1;
        self.down_since.insert(ifindex, self.generation);
    }

    /// Whether link `ifindex` went down after a pass took `generation`, so
    /// that pass's dump may still show it up.
    pub fn down_after(&self, ifindex: u32, generation: u64) -> bool {
        self.down_since
            .get(&ifindex)
            .is_some_and(|&since| since > generation)
    }

    /// A pass that took `generation` has written everything: its dump saw
    /// the links that went down up to then.
    pub fn settle(&mut self, generation: u64) {
        self.down_since.retain(|_, since| *since > generation);
    }
}

/// The pinned PvD maps and the links that went down under them.
///
/// `MIF_PVDS` holds two copies of each PvD and `MIF_PVD_LIVE` which one the
/// programs read ([`mif_common::pvd_copy`]): a write fills the other copy,
/// then flips the index, so no program sees a half-written PvD. An index
/// without a PvD holds zeros in its live copy. Nothing is cached here: the
/// daemon's passes, its link-down thread, its DNS forwarder and `mif maps`
/// each read the kernel's maps, and only the daemon writes them (one
/// writer at a time, behind [`SharedPvdTable`]'s lock).
pub struct PvdTable {
    copies: Array<MapData, Pvd>,
    live: Array<MapData, u32>,
    downs: LinkDowns,
}

/// A [`PvdTable`] for several threads: locked for single writes only.
#[derive(Clone)]
pub struct SharedPvdTable(Arc<Mutex<PvdTable>>);

impl SharedPvdTable {
    pub fn new(copies: Array<MapData, Pvd>, live: Array<MapData, u32>) -> Self {
        Self(Arc::new(Mutex::new(PvdTable {
            copies,
            live,
            downs: LinkDowns::default(),
        })))
    }

    /// Only the map and the record of downs are behind the lock, and each
    /// holder leaves both consistent, so a holder that panicked does not
    /// make them unusable.
    pub fn lock(&self) -> MutexGuard<'_, PvdTable> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PvdTable {
    pub fn generation(&self) -> u64 {
        self.downs.generation()
    }

    /// Link `ifindex` went down: every PvD on it stops being available now.
    /// Returns the indices of the PvDs that were.
    pub fn link_down(&mut self, ifindex: u32) -> Result<Vec<u32>, MapError> {
        self.downs.link_down(ifindex);
        let available: Vec<(u32, Pvd)> = self
            .entries()
            .into_iter()
            .filter(|(_, pvd)| pvd.ifindex == ifindex && pvd.flags != 0)
            .collect();
        for (index, pvd) in &available {
            self.write(*index, &Pvd { flags: 0, ..*pvd })?;
        }
        Ok(available.into_iter().map(|(index, _)| index).collect())
    }

    /// Writes a PvD as a pass that took `generation` computed it; a PvD
    /// whose link went down since is written unavailable.
    pub fn insert(&mut self, index: u32, pvd: &Pvd, generation: u64) -> Result<(), MapError> {
        let mut pvd = *pvd;
        if self.downs.down_after(pvd.ifindex, generation) {
            pvd.flags = 0;
        }
        self.write(index, &pvd)
    }

    /// Makes `pvd` PvD `index`'s live copy: written into the spare copy,
    /// then made live. Nothing is written when it is already the live one
    /// (every pass writes every PvD).
    fn write(&mut self, index: u32, pvd: &Pvd) -> Result<(), MapError> {
        let live = self.live.get(&index, 0)?;
        if self.copies.get(&pvd_copy(index, live), 0)? == *pvd {
            return Ok(());
        }
        let spare = live ^ 1;
        self.copies.set(pvd_copy(index, spare), pvd, 0)?;
        self.live.set(index, spare, 0)
    }

    /// See [`LinkDowns::settle`].
    pub fn settle(&mut self, generation: u64) {
        self.downs.settle(generation);
    }

    /// PvD `index`; `KeyNotFound` when there is none (a zero mark).
    pub fn get(&self, index: u32) -> Result<Pvd, MapError> {
        let live = self.live.get(&index, 0)?;
        let pvd = self.copies.get(&pvd_copy(index, live), 0)?;
        if pvd.mark == 0 {
            return Err(MapError::KeyNotFound);
        }
        Ok(pvd)
    }

    /// Leaves index `index` without a PvD (zeros, as never written).
    pub fn remove(&mut self, index: u32) -> Result<(), MapError> {
        self.write(index, &Pvd::default())
    }

    /// Every PvD, by index.
    pub fn entries(&self) -> Vec<(u32, Pvd)> {
        (0..MAX_PVDS)
            .filter_map(|index| Some((index, self.get(index).ok()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_that_dumped_before_a_link_went_down_cannot_bring_it_back() {
        let mut downs = LinkDowns::default();
        let early_pass = downs.generation();
        downs.link_down(7);
        let late_pass = downs.generation();
        assert!(downs.down_after(7, early_pass));
        assert!(!downs.down_after(7, late_pass), "its dump saw the link");
        assert!(!downs.down_after(8, early_pass), "another link");
        // The early pass finishing forgets nothing it did not see.
        downs.settle(early_pass);
        assert!(downs.down_after(7, early_pass));
        downs.settle(late_pass);
        assert_eq!(downs.down_since, StdHashMap::new());
    }

    #[test]
    fn a_link_down_again_counts_from_its_latest_fall() {
        let mut downs = LinkDowns::default();
        downs.link_down(7);
        let between = downs.generation();
        downs.link_down(7);
        assert!(downs.down_after(7, between));
        downs.settle(between);
        assert!(
            downs.down_after(7, between),
            "the second fall is not seen yet"
        );
    }
}
