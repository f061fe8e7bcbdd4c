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
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use aya::Ebpf;
use mif_common::Settings;

use crate::{loader, pins::PinDir};

pub struct Steering {
    pub pins: PinDir,
    /// Held for the programs' lifetime in this process; links live on pins.
    ebpf: Option<Ebpf>,
    /// Whether a previous instance's state was taken over.
    pub adopted: bool,
    _lock: InstanceLock,
}

impl Steering {
    /// Loads the programs (reusing pinned maps), without attaching them yet:
    /// the caller fills the maps and routing first.
    pub fn load(pins: PinDir, settings: &Settings) -> anyhow::Result<Self> {
        let lock = InstanceLock::acquire(&pins)?;
        pins.prepare()?;
        let adopted = pins.has_links();
        if !adopted {
            // Map pins without links are leftovers of an instance that died
            // while starting or stopping: ours to discard.
            loader::unpin_maps(&pins);
        }
        let ebpf = loader::load(settings, &pins)?;
        Ok(Self {
            pins,
            ebpf: Some(ebpf),
            adopted,
            _lock: lock,
        })
    }

    /// Attaches the programs to `cgroup` and pins their links, replacing any
    /// adopted links atomically.
    pub fn attach(&mut self, cgroup: &Path) -> anyhow::Result<()> {
        let ebpf = self.ebpf.as_mut().context("programs not loaded")?;
        loader::attach(ebpf, cgroup, &self.pins)?;
        Ok(())
    }

    /// Removes programs and maps (routing is the caller's).
    pub fn detach_programs(&self) {
        loader::detach(&self.pins);
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
/// named after the pin directory (bpffs cannot hold regular files).
struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    fn acquire(pins: &PinDir) -> anyhow::Result<Self> {
        let path = lock_path(pins.root());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
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
                pins.root().display(),
                path.display()
            );
        }
        Ok(Self { _file: file })
    }
}

/// `/run/mif/<pin dir with / as ->.lock`.
fn lock_path(pin_dir: &Path) -> PathBuf {
    let flat = pin_dir
        .display()
        .to_string()
        .trim_matches('/')
        .replace('/', "-");
    PathBuf::from("/run/mif").join(format!("{flat}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_follow_the_pin_dir() {
        assert_eq!(
            lock_path(Path::new("/sys/fs/bpf/mif")),
            Path::new("/run/mif/sys-fs-bpf-mif.lock")
        );
    }
}
