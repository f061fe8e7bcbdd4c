//! The strict policies' guards on their cgroups: the egress guard
//! (`cgroup_skb/egress`), attached to each cgroup that
//! [`crate::plan::guarded_cgroups`] names and to nothing else, so traffic
//! of every other process never runs them. A program attached to a cgroup
//! runs for its descendants too, those created later included.
//!
//! Each link is pinned at `<pins>/v<N>/guards/<program>_<cgroup id>`, so the
//! guards hold while the daemon is down, killed or restarting, as the hooks
//! do. A new instance replaces every guard link it still wants the same way
//! the loader replaces the hooks' (a new link pinned under a staging name,
//! renamed over the old pin), and removes the pins of cgroups it does not
//! guard once its first pass has attached the rest. When a guarded cgroup
//! is removed the kernel detaches its links; the pins go with the pass
//! that no longer wants them.
use std::{
    collections::BTreeSet,
    fs::File,
    io,
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    path::PathBuf,
};

use log::debug;

use crate::{
    apply::{
        loader::{raw, LeftOut, LoadedGuard},
        pins::PinDir,
    },
    plan::GuardedCgroup,
};

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot attach {program} to cgroup {cgroup}")]
    Attach {
        program: &'static str,
        cgroup: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot pin the link of {program} at {}", path.display())]
    Pin {
        program: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The guards this instance loaded and the cgroups it attached them to.
#[derive(Debug)]
pub struct GuardLinks {
    pins: PinDir,
    /// The cgroup2 mount the guarded cgroups' paths are relative to.
    mount: PathBuf,
    guards: Vec<LoadedGuard>,
    left_out: Vec<LeftOut>,
    /// Cgroups whose guard links are this instance's.
    attached: BTreeSet<u64>,
    /// Whether a previous instance's pins that are not wanted were removed.
    swept: bool,
}

impl GuardLinks {
    pub fn new(
        pins: PinDir,
        mount: PathBuf,
        guards: Vec<LoadedGuard>,
        left_out: Vec<LeftOut>,
    ) -> Self {
        Self {
            pins,
            mount,
            guards,
            left_out,
            attached: BTreeSet::new(),
            swept: false,
        }
    }

    /// Makes exactly `wanted` guarded. A cgroup that is gone by now (or was
    /// re-created under its name, with a new id) is skipped: the next
    /// resolve of the policies drops or renames it.
    pub fn apply(&mut self, wanted: &[GuardedCgroup]) -> Result<(), GuardError> {
        for cgroup in wanted {
            if !self.attached.contains(&cgroup.id) && self.attach(cgroup)? {
                self.attached.insert(cgroup.id);
            }
        }
        let wanted: BTreeSet<u64> = wanted.iter().map(|c| c.id).collect();
        for id in self
            .attached
            .difference(&wanted)
            .copied()
            .collect::<Vec<_>>()
        {
            for guard in &self.guards {
                let _ = std::fs::remove_file(link_pin(&self.pins, guard.program, id));
            }
            self.attached.remove(&id);
        }
        if !self.swept {
            self.sweep();
            self.swept = true;
        }
        Ok(())
    }

    /// How many cgroups are guarded.
    pub fn guarded(&self) -> usize {
        self.attached.len()
    }

    /// The guards this kernel cannot run.
    pub fn left_out(&self) -> &[LeftOut] {
        &self.left_out
    }

    /// Attaches every guard to `cgroup`; false if the cgroup is gone.
    fn attach(&self, cgroup: &GuardedCgroup) -> Result<bool, GuardError> {
        let path = self.mount.join(cgroup.path.trim_start_matches('/'));
        let dir = match File::open(&path) {
            Ok(dir) => dir,
            Err(e) => {
                debug!("not guarding cgroup {}: {e}", cgroup.path);
                return Ok(false);
            }
        };
        if !dir.metadata().is_ok_and(|m| m.ino() == cgroup.id) {
            debug!(
                "not guarding cgroup {}: re-created since it was resolved",
                cgroup.path
            );
            return Ok(false);
        }
        for guard in &self.guards {
            let link = raw::link_create(guard.fd.as_fd(), dir.as_fd(), guard.attach_type).map_err(
                |source| GuardError::Attach {
                    program: guard.program,
                    cgroup: cgroup.path.clone(),
                    source,
                },
            )?;
            let staging = staging_pin(&self.pins, guard.program, cgroup.id);
            let _ = std::fs::remove_file(&staging);
            let pin_failed = |source| GuardError::Pin {
                program: guard.program,
                path: staging.clone(),
                source,
            };
            raw::obj_pin(link.as_fd(), &staging).map_err(pin_failed)?;
            std::fs::rename(&staging, link_pin(&self.pins, guard.program, cgroup.id))
                .map_err(pin_failed)?;
        }
        Ok(true)
    }

    /// Removes the pins no cgroup of this instance's owns: a previous
    /// instance's for cgroups no longer guarded, and staging leftovers.
    fn sweep(&self) {
        for path in pinned(&self.pins) {
            let ours = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(cgroup_of_pin)
                .is_some_and(|id| self.attached.contains(&id));
            if !ours {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Removes every guard link pinned in `pins`; returns how many.
pub fn remove_all(pins: &PinDir) -> usize {
    pinned(pins)
        .into_iter()
        .filter(|path| std::fs::remove_file(path).is_ok())
        .count()
}

/// How many cgroups have guard links pinned in `pins` (for `mif maps`,
/// which reads the kernel side without the daemon).
pub fn pinned_cgroups(pins: &PinDir) -> usize {
    pinned(pins)
        .iter()
        .filter_map(|p| p.file_name()?.to_str().and_then(cgroup_of_pin))
        .collect::<BTreeSet<u64>>()
        .len()
}

fn pinned(pins: &PinDir) -> Vec<PathBuf> {
    std::fs::read_dir(pins.guard_links())
        .map(|dir| dir.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default()
}

fn link_pin(pins: &PinDir, program: &str, cgroup: u64) -> PathBuf {
    pins.guard_links().join(format!("{program}_{cgroup}"))
}

/// bpffs refuses names with a dot.
fn staging_pin(pins: &PinDir, program: &str, cgroup: u64) -> PathBuf {
    pins.guard_links().join(format!("{program}_{cgroup}_new"))
}

/// The cgroup id of a link pin's name; `None` for anything else (a
/// staging name included).
fn cgroup_of_pin(name: &str) -> Option<u64> {
    let (program, id) = name.rsplit_once('_')?;
    mif_common::names::GUARDS.contains(&program).then_some(())?;
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_give_back_their_cgroup() {
        let pins = PinDir::new("/sys/fs/bpf/x");
        let pin = link_pin(&pins, mif_common::names::PROG_GUARD, 4242);
        let name = pin.file_name().unwrap().to_str().unwrap();
        assert!(!name.contains('.'), "bpffs refuses dots: {name}");
        assert_eq!(cgroup_of_pin(name), Some(4242));
        let staging = staging_pin(&pins, mif_common::names::PROG_GUARD, 4242);
        assert_eq!(
            cgroup_of_pin(staging.file_name().unwrap().to_str().unwrap()),
            None
        );
        assert_eq!(cgroup_of_pin("mif_connect4_12"), None, "not a guard");
    }
}
