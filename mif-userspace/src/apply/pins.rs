//! Where mif pins its maps and links on bpffs, and making sure bpffs is there.
//!
//! Layout: `<pin dir>/v<LAYOUT_VERSION>/maps/<MAP>` and `.../links/<program>`.
//! The version in the path means a daemon with another map layout never
//! reopens these pins as if they were its own.
use std::os::unix::fs::DirBuilderExt;
use std::{
    fs,
    path::{Path, PathBuf},
};

use mif_common::LAYOUT_VERSION;

/// Where bpffs is conventionally mounted, and where mif mounts it if absent.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

/// Where an instance keeps what bpffs cannot hold (its lock, its control
/// socket), one file each named after the pin directory.
pub const RUNTIME_DIR: &str = "/run/mif";

/// `/run/mif/<pin dir with / as ->.<ext>`: the instance's file of kind
/// `ext` (`lock`, `sock`).
pub fn runtime_path(pin_dir: &Path, ext: &str) -> PathBuf {
    let flat = pin_dir
        .display()
        .to_string()
        .trim_matches('/')
        .replace('/', "-");
    Path::new(RUNTIME_DIR).join(format!("{flat}.{ext}"))
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("pin directory {} is not on bpffs; mount one there (mount -t bpf bpf DIR) or choose a directory below {DEFAULT_BPFFS}", .0.display())]
    NotBpffs(PathBuf),
    #[error("cannot mount bpffs at {DEFAULT_BPFFS}")]
    Mount(#[source] nix::Error),
    #[error("cannot prepare pin directory {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory the user named.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The versioned directory holding this layout's pins.
    pub fn versioned(&self) -> PathBuf {
        self.root.join(format!("v{LAYOUT_VERSION}"))
    }

    pub fn maps(&self) -> PathBuf {
        self.versioned().join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    pub fn links(&self) -> PathBuf {
        self.versioned().join("links")
    }

    pub fn link(&self, program: &str) -> PathBuf {
        self.links().join(program)
    }

    /// Where a new link waits before it is renamed over the old one.
    pub fn link_staging(&self, program: &str) -> PathBuf {
        // bpffs refuses names with a dot (EPERM).
        self.links().join(format!("{program}_new"))
    }

    /// The links of the strict policies' guards, one per program and
    /// guarded cgroup (see [`crate::apply::guard_links`]).
    pub fn guard_links(&self) -> PathBuf {
        self.versioned().join("guards")
    }

    /// Whether programs of this layout are pinned here (a daemon runs, or one
    /// died without cleaning up).
    pub fn has_links(&self) -> bool {
        fs::read_dir(self.links()).is_ok_and(|mut d| d.next().is_some())
    }

    /// Makes sure the pin directory is on bpffs (mounting bpffs at
    /// /sys/fs/bpf when the directory is below it and nothing is mounted
    /// there yet) and creates the versioned directories.
    pub fn prepare(&self) -> Result<(), PinError> {
        if !self.on_bpffs() {
            if self.root.starts_with(DEFAULT_BPFFS) && !is_bpffs(Path::new(DEFAULT_BPFFS)) {
                fs::create_dir_all(DEFAULT_BPFFS).map_err(|source| PinError::Io {
                    path: DEFAULT_BPFFS.into(),
                    source,
                })?;
                nix::mount::mount(
                    Some("bpf"),
                    DEFAULT_BPFFS,
                    Some("bpf"),
                    nix::mount::MsFlags::empty(),
                    Some("mode=0700"),
                )
                .map_err(PinError::Mount)?;
            }
            if !self.on_bpffs() {
                return Err(PinError::NotBpffs(self.root.clone()));
            }
        }
        // 0700: the names of our pins are nobody else's business, even when
        // bpffs is mounted elsewhere with a wider mode.
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for dir in [self.maps(), self.links(), self.guard_links()] {
            builder.create(&dir).map_err(|source| PinError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Whether the nearest existing ancestor of the pin directory is bpffs.
    fn on_bpffs(&self) -> bool {
        let mut dir = self.root.as_path();
        loop {
            if dir.exists() {
                return is_bpffs(dir);
            }
            match dir.parent() {
                Some(parent) => dir = parent,
                None => return false,
            }
        }
    }

    /// Removes the pin directories mif created, if they are empty. Pins of
    /// another layout version (another daemon) are left alone.
    pub fn remove_dirs(&self) {
        for dir in [
            self.maps(),
            self.links(),
            self.guard_links(),
            self.versioned(),
            self.root.clone(),
        ] {
            let _ = fs::remove_dir(dir);
        }
    }
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}
