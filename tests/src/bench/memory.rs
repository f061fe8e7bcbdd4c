//! Kernel memory of the daemon's maps (issue 18): the `memlock` the kernel
//! reports for each map (its own accounting, `map_mem_usage`, since Linux
//! 6.4), for the lab's instance and for one with many policies, and what
//! the same maps would take on machines with other CPU counts.
//!
//! The projection follows the kernel's accounting (kernel/bpf/hashtab.c
//! `htab_map_mem_usage`, arraymap.c): only some terms depend on the number
//! of *possible* CPUs `N`, and those are replaced:
//!
//! - every hash map: `N × 8 × 4` bytes of per-CPU lock counters (an upper
//!   bound: newer kernels dropped them);
//! - a preallocated hash: `N` spare elements (`elem_size` each: 48 bytes
//!   of header + key + value, each rounded up to 8) and `N` pointers to
//!   them;
//! - a per-CPU hash: `round_up(value, 8) × N` per entry (preallocated:
//!   per slot of `max_entries`); a per-CPU array likewise per slot.
//!
//! Everything else (buckets: 16 bytes per slot of `max_entries` rounded
//! up to a power of two; elements of maps without preallocation, as many
//! as are used; LRU and LPM entries) does not depend on `N`. Memory the
//! kernel does not charge to the map (allocator caches) is not in these
//! figures.

use std::time::Duration;

use anyhow::Result;

use super::daemon::{policy_toml, BenchDaemon};
use super::kmaps::{map_memory, MapMemory};
use crate::lab::{Family, Lab};

/// CPU counts the figures are projected to.
pub const CPU_COUNTS: [u64; 4] = [2, 16, 64, 256];

/// One instance measured.
#[derive(Debug, Clone, Default)]
pub struct MemoryRow {
    pub policies: usize,
    pub pvds: usize,
    /// Possible CPUs of this machine (what the kernel's accounting uses).
    pub possible_cpus: u64,
    pub maps: Vec<MapMemory>,
    pub error: Option<String>,
}

const BPF_MAP_TYPE_HASH: u64 = 1;
const BPF_MAP_TYPE_PERCPU_HASH: u64 = 5;
const BPF_MAP_TYPE_PERCPU_ARRAY: u64 = 6;
const BPF_MAP_TYPE_LRU_HASH: u64 = 9;
const BPF_MAP_TYPE_LRU_PERCPU_HASH: u64 = 10;
const BPF_F_NO_PREALLOC: u64 = 1;

fn round8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// The part of a map's memlock that grows with `cpus` possible CPUs, as
/// the module documentation lists it. Per-CPU maps without
/// preallocation would need their entry count, which fdinfo does not
/// give: mif has none.
pub fn per_cpu_bytes(m: &MapMemory, cpus: u64) -> u64 {
    let hash = matches!(
        m.map_type,
        BPF_MAP_TYPE_HASH
            | BPF_MAP_TYPE_PERCPU_HASH
            | BPF_MAP_TYPE_LRU_HASH
            | BPF_MAP_TYPE_LRU_PERCPU_HASH
    );
    let prealloc = m.map_flags & BPF_F_NO_PREALLOC == 0;
    let value = round8(m.value_size);
    let mut bytes = 0;
    if hash {
        bytes += cpus * 8 * 4;
    }
    match m.map_type {
        BPF_MAP_TYPE_HASH if prealloc => {
            let elem = 48 + round8(m.key_size) + value;
            bytes += cpus * (elem + 8);
        }
        BPF_MAP_TYPE_PERCPU_HASH | BPF_MAP_TYPE_LRU_PERCPU_HASH if prealloc => {
            bytes += value * cpus * m.max_entries;
        }
        BPF_MAP_TYPE_PERCPU_ARRAY => bytes += value * cpus * m.max_entries,
        _ => {}
    }
    bytes
}

impl MemoryRow {
    pub fn measured(&self) -> u64 {
        self.maps.iter().map(|m| m.bytes).sum()
    }

    /// The maps' memlock on a machine with `cpus` possible CPUs.
    pub fn projected(&self, cpus: u64) -> u64 {
        self.maps
            .iter()
            .map(|m| m.bytes - per_cpu_bytes(m, self.possible_cpus) + per_cpu_bytes(m, cpus))
            .sum()
    }
}

/// The maps of layout 4 (until d892164) on `cpus` CPUs, given their
/// memlock `measured` on `measured_cpus`: its per-CPU and preallocated
/// terms were MIF_COUNTERS (per-CPU hash, 262,144 slots of 72 bytes),
/// MIF_POLICIES (131,072 × (8 + 16)), MIF_PVDS and MIF_PVD_META (64 slots
/// each) and MIF_DNS_NAT (an LRU: locks only).
pub fn layout4(measured: u64, measured_cpus: u64) -> impl Fn(u64) -> u64 {
    let maps = [
        MapMemory {
            map_type: BPF_MAP_TYPE_PERCPU_HASH,
            key_size: 8,
            value_size: 72,
            max_entries: 262_144,
            ..MapMemory::default()
        },
        MapMemory {
            map_type: BPF_MAP_TYPE_HASH,
            key_size: 8,
            value_size: 16,
            max_entries: 131_072,
            ..MapMemory::default()
        },
        MapMemory {
            map_type: BPF_MAP_TYPE_HASH,
            key_size: 4,
            value_size: 52,
            max_entries: 64,
            ..MapMemory::default()
        },
        MapMemory {
            map_type: BPF_MAP_TYPE_HASH,
            key_size: 4,
            value_size: 88,
            max_entries: 64,
            ..MapMemory::default()
        },
        MapMemory {
            map_type: BPF_MAP_TYPE_LRU_HASH,
            key_size: 8,
            value_size: 40,
            max_entries: 65_536,
            ..MapMemory::default()
        },
    ];
    move |cpus| {
        maps.iter().fold(measured, |sum, m| {
            sum - per_cpu_bytes(m, measured_cpus) + per_cpu_bytes(m, cpus)
        })
    }
}

/// Possible CPUs, from `/sys/devices/system/cpu/possible` (`0-1`, `0-3,8-11`).
pub fn possible_cpus() -> u64 {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let n: u64 = text
        .trim()
        .split(',')
        .filter_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            Some(b.trim().parse::<u64>().ok()? - a.trim().parse::<u64>().ok()? + 1)
        })
        .sum();
    n.max(1)
}

/// Runs the daemon on `lab` with each of `counts` policies (cgroups
/// `o0..` of [`super::scale::ensure_cgroups`], preferring `steered` then
/// `fallback`); before reading the maps, one socket is created in each of
/// the first three policies' cgroups, so that their counters exist.
pub fn run(
    lab: &Lab,
    counts: &[usize],
    steered: &str,
    fallback: &str,
    timeout: Duration,
) -> Result<Vec<MemoryRow>> {
    let mut rows = Vec::new();
    for &n in counts {
        super::check_interrupted()?;
        eprintln!("mif-bench: map memory, {n} policies");
        super::scale::ensure_cgroups(lab, n)?;
        let toml: String = (0..n)
            .map(|i| policy_toml(&format!("{}/o{i}", lab.cgroup_rel()), &[steered, fallback]))
            .collect();
        let mut row = MemoryRow {
            policies: n,
            pvds: lab.networks().len(),
            possible_cpus: possible_cpus(),
            ..MemoryRow::default()
        };
        let measured = (|| -> Result<Vec<MapMemory>> {
            let daemon = BenchDaemon::start(lab, &toml, timeout)?;
            for i in 0..n.min(3) {
                let cgroup = lab.cgroup_root().join(format!("o{i}"));
                lab.sockmark(Some(&cgroup), Family::V4)?;
            }
            let maps = map_memory(&daemon.instance.pin_dir)?;
            daemon.stop()?;
            Ok(maps)
        })();
        match measured {
            Ok(maps) => row.maps = maps,
            Err(e) => row.error = Some(format!("{e:#}")),
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(map_type: u64, flags: u64, key: u64, value: u64, max: u64, bytes: u64) -> MapMemory {
        MapMemory {
            name: "m".into(),
            map_type,
            map_flags: flags,
            key_size: key,
            value_size: value,
            max_entries: max,
            bytes,
        }
    }

    #[test]
    fn a_preallocated_per_cpu_hash_grows_with_every_cpu_and_slot() {
        // The old MIF_COUNTERS: 262,144 slots of 72 bytes per CPU.
        let old = map(BPF_MAP_TYPE_PERCPU_HASH, 0, 8, 72, 262_144, 54_525_952);
        let row = MemoryRow {
            possible_cpus: 2,
            maps: vec![old],
            ..MemoryRow::default()
        };
        let grow = |cpus: u64| row.projected(cpus) - row.measured();
        assert_eq!(grow(2), 0);
        assert_eq!(grow(16), 14 * (72 * 262_144 + 32));
        assert!(row.projected(64) > 1_100 << 20, "{}", row.projected(64));
    }

    #[test]
    fn maps_without_preallocation_hardly_grow_with_cpus() {
        let policies = map(BPF_MAP_TYPE_HASH, BPF_F_NO_PREALLOC, 8, 16, 16_384, 300_000);
        let nat = map(BPF_MAP_TYPE_LRU_HASH, 0, 8, 40, 16_384, 1_900_000);
        let trie = map(11, BPF_F_NO_PREALLOC, 20, 1, 16_384, 1_000);
        let row = MemoryRow {
            possible_cpus: 2,
            maps: vec![policies, nat, trie],
            ..MemoryRow::default()
        };
        assert_eq!(row.projected(256) - row.measured(), 2 * 254 * 32);
    }

    #[test]
    fn layout_4_took_gibibytes_on_big_machines() {
        let old = layout4(70 << 20, 2);
        assert_eq!(old(2), 70 << 20);
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        assert!((0.30..0.33).contains(&gib(old(16))), "{}", gib(old(16)));
        assert!((1.1..1.2).contains(&gib(old(64))), "{}", gib(old(64)));
    }

    #[test]
    fn possible_cpus_counts_ranges() {
        assert!(possible_cpus() >= 1);
    }
}
