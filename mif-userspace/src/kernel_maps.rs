//! Typed access to mif's pinned maps: writing the desired contents, and
//! reading everything back for `mif maps` (whether or not a daemon runs).
use std::collections::{HashMap as StdHashMap, HashSet};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuHashMap};
use mif_common::{names, CounterKey, Counters, Policy, Pvd, PvdMeta, Settings};

use crate::{pins::PinDir, plan::Desired};

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
    #[error("cannot {action} map {name}")]
    Update {
        name: &'static str,
        action: &'static str,
        #[source]
        source: Box<MapError>,
    },
}

pub struct KernelMaps {
    policies: HashMap<MapData, u64, Policy>,
    pvds: HashMap<MapData, u32, Pvd>,
    meta: HashMap<MapData, u32, PvdMeta>,
    counters: PerCpuHashMap<MapData, CounterKey, Counters>,
    instance: Array<MapData, Settings>,
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

impl KernelMaps {
    pub fn open(pins: &PinDir) -> Result<Self, MapsError> {
        Ok(Self {
            policies: typed!(pins, names::MAP_POLICIES),
            pvds: typed!(pins, names::MAP_PVDS),
            meta: typed!(pins, names::MAP_PVD_META),
            counters: typed!(pins, names::MAP_COUNTERS),
            instance: typed!(pins, names::MAP_INSTANCE),
        })
    }

    /// Makes the maps hold exactly `desired`. PvDs are written before the
    /// policies that point at them; stale entries are removed last, so a
    /// socket created meanwhile sees either the old or the new state.
    pub fn write(&mut self, settings: &Settings, desired: &Desired) -> Result<(), MapsError> {
        let fail = |name, action| {
            move |e| MapsError::Update {
                name,
                action,
                source: Box::new(e),
            }
        };
        self.instance
            .set(0, settings, 0)
            .map_err(fail(names::MAP_INSTANCE, "write"))?;
        for (index, pvd, meta) in &desired.pvds {
            self.meta
                .insert(index, meta, 0)
                .map_err(fail(names::MAP_PVD_META, "write"))?;
            self.pvds
                .insert(index, pvd, 0)
                .map_err(fail(names::MAP_PVDS, "write"))?;
        }
        for (cgroup_id, policy) in &desired.policies {
            self.policies
                .insert(cgroup_id, policy, 0)
                .map_err(fail(names::MAP_POLICIES, "write"))?;
        }
        let keep: HashSet<u64> = desired.policies.iter().map(|(k, _)| *k).collect();
        let stale: Vec<u64> = self
            .policies
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep.contains(k))
            .collect();
        for key in stale {
            self.policies
                .remove(&key)
                .map_err(fail(names::MAP_POLICIES, "remove from"))?;
        }
        let keep: HashSet<u32> = desired.pvds.iter().map(|(k, _, _)| *k).collect();
        let stale: Vec<u32> = self
            .pvds
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep.contains(k))
            .collect();
        for key in stale {
            self.pvds
                .remove(&key)
                .map_err(fail(names::MAP_PVDS, "remove from"))?;
            let _ = self.meta.remove(&key);
        }
        Ok(())
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
        let mut v: Vec<_> = self
            .pvds
            .iter()
            .filter_map(Result::ok)
            .map(|(i, p)| (i, p, self.meta.get(&i, 0).ok()))
            .collect();
        v.sort_by_key(|(i, _, _)| *i);
        v
    }

    /// Counters summed over CPUs.
    pub fn counters(&self) -> StdHashMap<CounterKey, Counters> {
        self.counters
            .iter()
            .filter_map(Result::ok)
            .map(|(key, per_cpu)| {
                let sum = per_cpu.iter().fold(Counters::default(), |acc, c| Counters {
                    steered: acc.steered + c.steered,
                    fallback: acc.fallback + c.fallback,
                    refused: acc.refused + c.refused,
                    unsteered: acc.unsteered + c.unsteered,
                    bound: acc.bound + c.bound,
                    src_set: acc.src_set + c.src_set,
                    denied: acc.denied + c.denied,
                });
                (key, sum)
            })
            .collect()
    }
}
