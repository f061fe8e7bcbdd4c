//! The kernel side of a running instance: programs, links and maps, whether
//! freshly installed or adopted from a previous daemon's pins.
//!
//! Adoption: maps are pinned by name, so loading reuses them (policies and
//! counters survive). New links are attached *before* the old ones are
//! unpinned — each new link is pinned under a temporary name and renamed
//! over the old pin, which drops the old link — so there is no moment
//! without steering. Both versions running for an instant is harmless: they
//! decide alike from the same maps, and the second `connect` hook sees the
//! socket already bound and leaves it.
use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use aya::Ebpf;
use mif_common::Settings;

use log::{info, warn};

use crate::{
    apply::guard_links::GuardLinks,
    apply::kernel_maps,
    apply::loader::{self, Capacity, LeftOut, LoadedGuard},
    apply::on_demand::{HookNeeds, OnDemandHooks},
    apply::pins::PinDir,
};

/// A fresh install's hooks being attached on a thread of its own while
/// start-up goes on; an adopted instance's, waiting for its first pass.
pub enum Attaching {
    Running(tokio::task::JoinHandle<(Steering, anyhow::Result<OnDemandHooks>)>),
    AfterPass(Box<Steering>, PathBuf, HookNeeds),
}

impl Attaching {
    /// Starts attaching the hooks `needs` wants to `cgroup`, now if nothing
    /// was adopted. An adopted instance attaches now only the on-demand
    /// hooks it newly needs (its first pass may write the policy that
    /// needs them), the rest after the pass.
    pub fn start(mut steering: Steering, cgroup: &Path, needs: HookNeeds) -> anyhow::Result<Self> {
        let cgroup = cgroup.to_path_buf();
        if steering.adopted {
            let ebpf = steering.ebpf.as_mut().context("programs not loaded")?;
            loader::attach_new_on_demand(ebpf, &cgroup, &steering.pins, needs)?;
            return Ok(Self::AfterPass(Box::new(steering), cgroup, needs));
        }
        Ok(Self::Running(tokio::task::spawn_blocking(move || {
            let attached = steering.attach(&cgroup, needs);
            (steering, attached)
        })))
    }

    /// Waits for the attach, or (adopted) attaches now if `pass_ok`.
    pub async fn finish(self, pass_ok: bool) -> (Steering, anyhow::Result<OnDemandHooks>) {
        match self {
            Self::Running(handle) => handle
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
            Self::AfterPass(mut steering, cgroup, needs) => {
                let attached = if pass_ok {
                    steering.attach(&cgroup, needs)
                } else {
                    Err(anyhow::anyhow!("the first pass failed: nothing attached"))
                };
                (*steering, attached)
            }
        }
    }
}

pub struct Steering {
    pub pins: PinDir,
    /// Held for the programs' lifetime in this process; links live on pins.
    ebpf: Option<Ebpf>,
    /// The strict policies' guards, loaded: for [`Steering::guard_links`].
    guards: Option<(Vec<LoadedGuard>, Vec<LeftOut>)>,
    /// Whether a previous instance's state was taken over.
    pub adopted: bool,
    _lock: InstanceLock,
}

impl Steering {
    /// Loads the programs (reusing pinned maps), without attaching them yet:
    /// the caller fills the maps and routing first. `capacity` sizes the
    /// maps that grow with the policies; adopted ones that are smaller are
    /// replaced (their counters carried over), larger ones kept.
    pub fn load(pins: PinDir, settings: &Settings, capacity: Capacity) -> anyhow::Result<Self> {
        let lock = InstanceLock::acquire(&pins)?;
        pins.prepare()?;
        let adopted = pins.has_links();
        if !adopted {
            // Map pins without links are leftovers of an instance that died
            // while starting or stopping: ours to discard.
            loader::unpin_maps(&pins);
        }
        let carried = if adopted {
            kernel_maps::take_counters_if_smaller(&pins, capacity.policies)?
        } else {
            None
        };
        let mut ebpf = loader::load(settings, &pins, capacity)?;
        let (guards, left_out) = match loader::load_guards(&mut ebpf) {
            Ok(loaded) => loaded,
            Err(e) => {
                // Nothing is attached yet: a fresh install leaves nothing
                // behind; adopted maps stay for the previous links.
                drop(ebpf);
                if !adopted {
                    loader::unpin_maps(&pins);
                    pins.remove_dirs();
                }
                return Err(e.into());
            }
        };
        for left in &left_out {
            warn!(
                "program {} is not attached: {}; strict policies are enforced per socket \
                 only, without it (docs/security.md)",
                left.program, left.why
            );
        }
        if let Some(carried) = carried {
            let n = kernel_maps::put_back_counters(&pins, &carried)?;
            info!(
                "the pinned policy map was too small: replaced by one of {} entries \
                 ({n} counters carried over)",
                capacity.policies
            );
        }
        Ok(Self {
            pins,
            ebpf: Some(ebpf),
            guards: Some((guards, left_out)),
            adopted,
            _lock: lock,
        })
    }

    /// Attaches the hooks to `cgroup` and pins their links, replacing any
    /// adopted links atomically; returns the on-demand hooks `needs` does
    /// not want yet, for the passes to attach.
    pub fn attach(&mut self, cgroup: &Path, needs: HookNeeds) -> anyhow::Result<OnDemandHooks> {
        let ebpf = self.ebpf.as_mut().context("programs not loaded")?;
        Ok(loader::attach(ebpf, cgroup, &self.pins, needs)?)
    }

    /// Attaches the cgroup watchers, which give a new cgroup its selector's
    /// policy inside `mkdir`, once the hooks are attached and the selector
    /// map filled. Returns why they are not attached when they cannot be:
    /// selectors then apply when the daemon's watcher sees a new cgroup,
    /// a little after a first process may have opened a socket (`mif
    /// status` says so). Any adopted watchers go then too.
    pub fn attach_watchers(
        &mut self,
        naming: Result<mif_common::CgroupNaming, crate::apply::cgroup_layout::LayoutError>,
    ) -> Option<String> {
        let attached = match (naming, self.ebpf.as_mut()) {
            (Ok(naming), Some(ebpf)) => {
                loader::attach_watchers(ebpf, &naming, &self.pins).map_err(|e| match e {
                    // The log's end says why; all of it would fill `mif status`.
                    loader::LoadError::Verifier { program, log } => {
                        let lines: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
                        let tail = lines[lines.len().saturating_sub(3)..].join("; ");
                        format!("the kernel refused program {program}: {tail}")
                    }
                    e => format!("{:#}", anyhow::Error::from(e)),
                })
            }
            (Err(e), _) => Err(format!("{:#}", anyhow::Error::from(e))),
            (_, None) => Err("programs not loaded".into()),
        };
        let why = attached.err()?;
        loader::detach_watchers(&self.pins);
        warn!(
            "new cgroups get their selector's policy when the daemon sees them, not as they \
             are made (the cgroup watchers are not attached: {why})"
        );
        Some(why)
    }

    /// Removes the cgroup watchers' pins (a previous daemon's, unneeded now).
    pub fn detach_watchers(&self) {
        loader::detach_watchers(&self.pins);
    }

    /// The guards, to attach to strict cgroups below `cgroup2` (once).
    pub fn guard_links(&mut self, cgroup2: &Path) -> anyhow::Result<GuardLinks> {
        let (guards, left_out) = self.guards.take().context("guards already handed out")?;
        Ok(GuardLinks::new(
            self.pins.clone(),
            cgroup2.to_path_buf(),
            guards,
            left_out,
        ))
    }

    /// Removes programs and maps (routing is the caller's).
    pub fn detach_programs(&self) {
        loader::detach(&self.pins);
    }

    /// What a fresh install that failed before its first pass leaves
    /// behind: its programs and maps (no routing yet); an adopted one's
    /// stays, still steering.
    pub fn remove_all(self) {
        if !self.adopted {
            self.detach_programs();
            self.remove_maps();
        }
    }

    pub fn remove_maps(mut self) {
        drop(self.ebpf.take());
        loader::unpin_maps(&self.pins);
        self.pins.remove_dirs();
    }

    /// Leaves everything in place (the links and maps stay pinned) and lets
    /// go of this process's handles.
    pub fn release(mut self) {
        drop(self.ebpf.take());
    }
}

/// One daemon per pin directory: an exclusive flock on a file under /run
/// named after the pin directory (bpffs cannot hold regular files). The
/// file goes when the lock does, so stopped instances leave nothing behind.
#[derive(Debug)]
struct InstanceLock {
    /// Holds the flock for as long as it lives.
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    fn acquire(pins: &PinDir) -> anyhow::Result<Self> {
        Self::acquire_at(
            crate::apply::pins::runtime_path(pins.root(), "lock"),
            pins.root(),
        )
    }

    fn acquire_at(path: PathBuf, pin_dir: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // A holder unlinks the file before it lets go: a lock won on a file
        // no longer at `path` was won on a dead name, and must be taken again
        // on the file there now (or two daemons could each hold "the" lock).
        loop {
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening lock {}", path.display()))?;
            // SAFETY: plain flock on an fd we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                bail!(
                    "another mif daemon is running with pin directory {} (lock {})",
                    pin_dir.display(),
                    path.display()
                );
            }
            let same = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(ours), Ok(there)) => ours.ino() == there.ino() && ours.dev() == there.dev(),
                _ => false,
            };
            if same {
                return Ok(Self { _file: file, path });
            }
        }
    }
}

/// Removes the lock file a killed daemon left, unless a daemon holds it
/// (then it is that daemon's, and its name is returned as an error).
pub fn remove_stale_lock(pins: &PinDir) -> anyhow::Result<()> {
    // Taken and dropped at once: the drop removes the file.
    InstanceLock::acquire(pins).map(drop)
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Unlinked while still held: the descriptor closes after this.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_follow_the_pin_dir() {
        assert_eq!(
            crate::apply::pins::runtime_path(Path::new("/sys/fs/bpf/mif"), "lock"),
            Path::new("/run/mif/sys-fs-bpf-mif.lock")
        );
    }

    #[test]
    fn one_holder_at_a_time_and_no_file_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let pins = Path::new("/sys/fs/bpf/x");
        let first = InstanceLock::acquire_at(path.clone(), pins).unwrap();
        let err = InstanceLock::acquire_at(path.clone(), pins).unwrap_err();
        assert!(err.to_string().contains("another mif daemon"), "{err}");
        drop(first);
        assert!(!path.exists(), "the lock file outlived its lock");
        let again = InstanceLock::acquire_at(path.clone(), pins).unwrap();
        assert!(path.exists());
        drop(again);
    }
}
