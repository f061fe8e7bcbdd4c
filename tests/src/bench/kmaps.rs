//! The benchmark's direct access to a daemon's pinned maps: synthetic
//! policies for cgroups that do not exist (lookup cost at 10,000 and
//! 100,000 entries without creating as many cgroups), the PvD flags the
//! reaction test polls, and what the maps cost in kernel memory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use aya::maps::{Array, HashMap, Map, MapData};
use mif_common::{names, pvd_copy, Policy, Pvd, PvdMeta, LAYOUT_VERSION, MAX_PREFER, NO_PVD};

/// First key of the synthetic policies. Real cgroup ids are kernfs inode
/// numbers (generation in the high half, inode in the low one), far below.
pub const SYNTHETIC_BASE: u64 = 0x5a5a_0000_0000_0000;
/// Policy ids of synthetic entries start here (counter keys only).
const SYNTHETIC_ID: u32 = 0x4000_0000;

/// `<pin dir>/v<N>/maps/<name>`: this build's layout version if the daemon
/// pinned that one, else the only version present (a `MIF_BIN` of another
/// version with, so far, the same map values).
pub fn map_path(pin_dir: &Path, name: &str) -> PathBuf {
    let ours = pin_dir.join(format!("v{LAYOUT_VERSION}"));
    let versioned = if ours.exists() {
        ours
    } else {
        std::fs::read_dir(pin_dir)
            .ok()
            .and_then(|d| {
                d.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('v'))
                })
            })
            .unwrap_or(ours)
    };
    versioned.join("maps").join(name)
}

fn open(pin_dir: &Path, name: &str) -> Result<Map> {
    let path = map_path(pin_dir, name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("typing {}", path.display()))
}

/// MIF_POLICIES, MIF_PVDS and MIF_PVD_META of one running daemon.
pub struct PinnedMaps {
    policies: HashMap<MapData, u64, Policy>,
    pvds: Array<MapData, Pvd>,
    pvd_live: Array<MapData, u32>,
    meta: HashMap<MapData, u32, PvdMeta>,
    /// How many synthetic policies are in the map (as far as we know).
    synthetic: usize,
}

impl PinnedMaps {
    pub fn open(pin_dir: &Path) -> Result<Self> {
        Ok(Self {
            policies: open(pin_dir, names::MAP_POLICIES)?.try_into()?,
            pvds: open(pin_dir, names::MAP_PVDS)?.try_into()?,
            pvd_live: open(pin_dir, names::MAP_PVD_LIVE)?.try_into()?,
            meta: open(pin_dir, names::MAP_PVD_META)?.try_into()?,
            synthetic: 0,
        })
    }

    /// The index of the PvD called `name`.
    pub fn pvd_index(&self, name: &str) -> Option<u32> {
        self.meta.iter().filter_map(Result::ok).find_map(|(i, m)| {
            let len = m.name.iter().position(|&b| b == 0).unwrap_or(m.name.len());
            (&m.name[..len] == name.as_bytes()).then_some(i)
        })
    }

    /// PvD `index`'s live copy (two map lookups, see `mif_common::pvd_copy`).
    fn pvd(&self, index: u32) -> Option<Pvd> {
        let live = self.pvd_live.get(&index, 0).ok()?;
        let pvd = self.pvds.get(&pvd_copy(index, live), 0).ok()?;
        (pvd.mark != 0).then_some(pvd)
    }

    /// The socket mark of PvD `index`.
    pub fn pvd_mark(&self, index: u32) -> Option<u32> {
        self.pvd(index).map(|p| p.mark)
    }

    /// The `PVD_AVAIL_*` flags of PvD `index`.
    pub fn pvd_flags(&self, index: u32) -> Option<u32> {
        self.pvd(index).map(|p| p.flags)
    }

    pub fn policy_count(&self) -> usize {
        self.policies.keys().filter_map(Result::ok).count()
    }

    /// Makes exactly `n` synthetic policies present (each prefers PvDs 1
    /// then 0, like the benchmark's own), inserting or removing the
    /// difference.
    pub fn set_synthetic(&mut self, n: usize) -> Result<()> {
        if !self.synthetic_intact() {
            // The daemon reconciled and removed them (it owns the map).
            self.synthetic = 0;
        }
        let mut prefer = [NO_PVD; MAX_PREFER];
        prefer[0] = 1;
        prefer[1] = 0;
        for i in self.synthetic..n {
            let policy = Policy {
                id: SYNTHETIC_ID + i as u32,
                prefer,
                flags: 0,
                _pad: [0; 3],
                allow: 0,
            };
            self.policies
                .insert(SYNTHETIC_BASE + i as u64, policy, 0)
                .with_context(|| format!("inserting synthetic policy {i}"))?;
        }
        for i in n..self.synthetic {
            // Already gone is fine.
            let _ = self.policies.remove(&(SYNTHETIC_BASE + i as u64));
        }
        self.synthetic = n;
        Ok(())
    }

    pub fn synthetic(&self) -> usize {
        self.synthetic
    }

    /// Whether the synthetic entries we put are still there: the daemon
    /// removes entries it did not write whenever it reconciles.
    pub fn synthetic_intact(&self) -> bool {
        let has = |i: usize| self.policies.get(&(SYNTHETIC_BASE + i as u64), 0).is_ok();
        self.synthetic == 0 || (has(0) && has(self.synthetic - 1))
    }
}

/// Kernel memory of one map, from fdinfo.
#[derive(Debug, Clone, Default)]
pub struct MapMemory {
    pub name: String,
    /// uapi `enum bpf_map_type`.
    pub map_type: u64,
    pub map_flags: u64,
    pub key_size: u64,
    pub value_size: u64,
    pub max_entries: u64,
    /// `memlock` in /proc/self/fdinfo: what the map is charged (since Linux
    /// 6.4 its real memory usage, before that an estimate).
    pub bytes: u64,
}

/// Every map pinned by the daemon at `pin_dir`.
pub fn map_memory(pin_dir: &Path) -> Result<Vec<MapMemory>> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let mut out = Vec::new();
    for name in names::MAPS {
        let path = map_path(pin_dir, name);
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let fd = data.fd().as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
        let field = |key: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        // map_flags is hexadecimal.
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("map_flags:"))
            .and_then(|v| u64::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        out.push(MapMemory {
            name: name.to_string(),
            map_type: field("map_type:"),
            map_flags: flags,
            key_size: field("key_size:"),
            value_size: field("value_size:"),
            max_entries: field("max_entries:"),
            bytes: field("memlock:"),
        });
    }
    Ok(out)
}

/// Run time and count of each program a daemon attached (through its
/// pinned links). Only counted while [`StatsGuard`] is alive.
pub fn program_stats(pin_dir: &Path) -> Result<Vec<(String, Duration, u64)>> {
    use aya::programs::links::{FdLink, PinnedLink};
    let versioned = map_path(pin_dir, "x")
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("no versioned pin directory")?;
    // (link's file name, program id), subdirectories included; the hooks'
    // links, and the guards' (one per strict cgroup or interface, in
    // `guards`, which exists only once a daemon made it).
    let mut ids = Vec::new();
    let mut dirs = vec![versioned.join("links")];
    if versioned.join("guards").is_dir() {
        dirs.push(versioned.join("guards"));
    }
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let link = PinnedLink::from_pin(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let info = FdLink::from(link).info()?;
            ids.push((name, info.program_id()));
        }
    }
    // By the program's own name (the link's if it has none), summed over
    // programs of one name.
    let mut out: Vec<(String, Duration, u64)> = Vec::new();
    for info in aya::programs::loaded_programs().filter_map(Result::ok) {
        let Some((link_name, _)) = ids.iter().find(|(_, id)| *id == info.id()) else {
            continue;
        };
        let name = match info.name_as_str() {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => link_name.clone(),
        };
        match out.iter_mut().find(|o| o.0 == name) {
            Some(o) => {
                o.1 += info.run_time();
                o.2 += info.run_count();
            }
            None => out.push((name, info.run_time(), info.run_count())),
        }
    }
    out.sort();
    Ok(out)
}

/// BPF run-time statistics are on while this lives (BPF_ENABLE_STATS; the
/// kernel turns them off when the last such fd closes).
pub struct StatsGuard {
    _fd: std::os::fd::OwnedFd,
}

impl StatsGuard {
    pub fn enable() -> Result<Self> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
        Ok(Self { _fd: fd })
    }
}
