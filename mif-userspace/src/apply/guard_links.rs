//! The strict policies' guards where they are needed, and nowhere else:
//! the egress guard (`cgroup_skb/egress`) on each cgroup that
//! [`crate::plan::guarded_cgroups`] names (a program attached to a cgroup
//! runs for its descendants too, those created later included), the packet
//! guard (tcx egress) on each interface [`crate::plan::guarded_interfaces`]
//! names, which is none while no strict policy exists. Traffic of every
//! other process never runs the first; the second costs other frames two
//! loads, and only on hosts with strict policies.
//!
//! Each link is pinned at `<pins>/v<N>/guards/<program>_<cgroup id or
//! ifindex>`, so the guards hold while the daemon is down, killed or
//! restarting, as the hooks do. A new instance replaces every guard link it
//! still wants the same way the loader replaces the hooks' (a new link
//! pinned under a staging name, renamed over the old pin), and removes the
//! pins it does not want; one it cannot replace keeps guarding meanwhile. When a
//! guarded cgroup or interface is removed the kernel detaches its links;
//! the pins go with the pass that no longer wants them. Interfaces are
//! known by index, which the kernel does not hand out twice while it has
//! indices left (it counts up).
use std::{
    collections::BTreeSet,
    fs::File,
    io,
    os::{
        fd::{AsFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::PathBuf,
};

use log::debug;

use crate::{
    apply::{
        loader::{raw, GuardTarget, LeftOut, LoadedGuard},
        pins::PinDir,
    },
    plan::{GuardPlan, GuardedCgroup},
};

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot attach {program} to {target}")]
    Attach {
        program: &'static str,
        target: String,
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

/// The guards this instance loaded and where it attached them.
#[derive(Debug)]
pub struct GuardLinks {
    pins: PinDir,
    /// The cgroup2 mount the guarded cgroups' paths are relative to.
    mount: PathBuf,
    guards: Vec<LoadedGuard>,
    left_out: Vec<LeftOut>,
    /// (program, cgroup id or ifindex) of every link pinned: this
    /// instance's and, until replaced or removed, a previous instance's.
    pinned: BTreeSet<Key>,
    /// Those of them this instance made.
    ours: BTreeSet<Key>,
    /// See [`GuardLinks::problem`].
    problem: Option<String>,
}

/// A link's (program, cgroup id or ifindex).
type Key = (&'static str, u64);

/// What one guard is attached to.
enum Target<'a> {
    Cgroup(&'a GuardedCgroup),
    Interface(u32),
}

impl GuardLinks {
    /// Takes over the links a previous instance pinned (staging leftovers
    /// go): each is replaced when this instance attaches its own, and
    /// removed once not wanted, so a target this instance fails to attach
    /// keeps the previous guard meanwhile.
    pub fn new(
        pins: PinDir,
        mount: PathBuf,
        guards: Vec<LoadedGuard>,
        left_out: Vec<LeftOut>,
    ) -> Self {
        Self {
            mount,
            guards,
            left_out,
            pinned: adopt(&pins),
            ours: BTreeSet::new(),
            pins,
            problem: None,
        }
    }

    /// Makes the links exactly `plan`. A cgroup that is gone by now (or was
    /// re-created under its name, with a new id), or an interface that is
    /// gone, is skipped: the next pass no longer names it.
    /// A target that cannot be attached does not stop the others (nor the
    /// pass): the first such error is returned, and kept for `mif status`
    /// until a pass attaches everything.
    pub fn apply(&mut self, plan: &GuardPlan) -> Result<(), GuardError> {
        let mut wanted = BTreeSet::new();
        let mut first_error = None;
        for guard in &self.guards {
            let targets: Vec<(u64, Target)> = match guard.target {
                GuardTarget::Cgroups => plan
                    .cgroups
                    .iter()
                    .map(|c| (c.id, Target::Cgroup(c)))
                    .collect(),
                GuardTarget::Interfaces => plan
                    .interfaces
                    .iter()
                    .map(|&i| (u64::from(i), Target::Interface(i)))
                    .collect(),
            };
            for (id, target) in targets {
                let key = (guard.program, id);
                wanted.insert(key);
                if self.ours.contains(&key) {
                    continue;
                }
                let attached = match target {
                    Target::Cgroup(cgroup) => self.attach_cgroup(guard, cgroup),
                    Target::Interface(ifindex) => self.attach_interface(guard, ifindex),
                };
                match attached {
                    Ok(true) => {
                        self.ours.insert(key);
                        self.pinned.insert(key);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        for key in self.pinned.difference(&wanted).copied().collect::<Vec<_>>() {
            let _ = std::fs::remove_file(link_pin(&self.pins, key.0, key.1));
            self.pinned.remove(&key);
            self.ours.remove(&key);
        }
        self.problem = first_error.as_ref().map(|e| e.to_string());
        first_error.map_or(Ok(()), Err)
    }

    /// Why the last pass could not attach a guard somewhere, if it could not.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// How many cgroups, or interfaces, have guard links of this instance.
    pub fn guarded(&self, target: GuardTarget) -> usize {
        let programs: Vec<&str> = self
            .guards
            .iter()
            .filter(|g| g.target == target)
            .map(|g| g.program)
            .collect();
        self.ours
            .iter()
            .filter(|(program, _)| programs.contains(program))
            .count()
    }

    /// The guards this kernel cannot run.
    pub fn left_out(&self) -> &[LeftOut] {
        &self.left_out
    }

    /// Attaches `guard` to `cgroup`; false if the cgroup is gone.
    fn attach_cgroup(
        &self,
        guard: &LoadedGuard,
        cgroup: &GuardedCgroup,
    ) -> Result<bool, GuardError> {
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
        let link = raw::link_create(guard.fd.as_fd(), dir.as_fd(), guard.attach_type).map_err(
            |source| GuardError::Attach {
                program: guard.program,
                target: format!("cgroup {}", cgroup.path),
                source,
            },
        )?;
        self.pin(guard.program, cgroup.id, &link)?;
        Ok(true)
    }

    /// Attaches `guard` to interface `ifindex`; false if it is gone.
    fn attach_interface(&self, guard: &LoadedGuard, ifindex: u32) -> Result<bool, GuardError> {
        let link = match raw::link_create_tcx(guard.fd.as_fd(), ifindex, guard.attach_type) {
            Ok(link) => link,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                debug!("not guarding interface {ifindex}: {e}");
                return Ok(false);
            }
            Err(source) => {
                return Err(GuardError::Attach {
                    program: guard.program,
                    target: format!("interface {ifindex}"),
                    source,
                })
            }
        };
        self.pin(guard.program, u64::from(ifindex), &link)?;
        Ok(true)
    }

    /// Pins `link` over whatever link was pinned for (`program`, `target`).
    fn pin(&self, program: &'static str, target: u64, link: &OwnedFd) -> Result<(), GuardError> {
        let staging = staging_pin(&self.pins, program, target);
        let _ = std::fs::remove_file(&staging);
        let pin_failed = |source| GuardError::Pin {
            program,
            path: staging.clone(),
            source,
        };
        raw::obj_pin(link.as_fd(), &staging).map_err(pin_failed)?;
        std::fs::rename(&staging, link_pin(&self.pins, program, target)).map_err(pin_failed)
    }
}

/// The links pinned in `pins`, by key; anything else there (a staging pin
/// left by a crash) is removed.
fn adopt(pins: &PinDir) -> BTreeSet<Key> {
    let mut keys = BTreeSet::new();
    for path in pinned(pins) {
        match path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(target_of_pin)
        {
            Some(key) => {
                keys.insert(key);
            }
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    keys
}

/// Removes every guard link pinned in `pins`; returns how many.
pub fn remove_all(pins: &PinDir) -> usize {
    pinned(pins)
        .into_iter()
        .filter(|path| std::fs::remove_file(path).is_ok())
        .count()
}

/// How many links of `program` are pinned in `pins` (for `mif maps`, which
/// reads the kernel side without the daemon).
pub fn pinned_links(pins: &PinDir, program: &str) -> usize {
    pinned(pins)
        .iter()
        .filter_map(|p| p.file_name()?.to_str().and_then(target_of_pin))
        .filter(|(p, _)| *p == program)
        .count()
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

/// The (program, target) of a link pin's name; `None` for anything else
/// (a staging name included).
fn target_of_pin(name: &str) -> Option<(&'static str, u64)> {
    let (program, id) = name.rsplit_once('_')?;
    let program = mif_common::names::GUARDS
        .into_iter()
        .find(|g| *g == program)?;
    Some((program, id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_give_back_their_target() {
        use mif_common::names::{PROG_GUARD, PROG_PKT_GUARD};
        let pins = PinDir::new("/sys/fs/bpf/x");
        let name_of = |path: PathBuf| path.file_name().unwrap().to_str().unwrap().to_string();
        let name = name_of(link_pin(&pins, PROG_GUARD, 4242));
        assert!(!name.contains('.'), "bpffs refuses dots: {name}");
        assert_eq!(target_of_pin(&name), Some((PROG_GUARD, 4242)));
        assert_eq!(
            target_of_pin(&name_of(link_pin(&pins, PROG_PKT_GUARD, 3))),
            Some((PROG_PKT_GUARD, 3)),
            "program names with underscores parse whole"
        );
        assert_eq!(
            target_of_pin(&name_of(staging_pin(&pins, PROG_GUARD, 4242))),
            None
        );
        assert_eq!(target_of_pin("mif_connect4_12"), None, "not a guard");
    }
}
