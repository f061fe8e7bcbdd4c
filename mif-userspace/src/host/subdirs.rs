//! A cgroup's subdirectories: their names and inode numbers (on cgroupfs
//! the inode number is the cgroup's id), read in one go.
//!
//! A cgroup may have 100,000 children (one per container, or per literal
//! policy), and start-up lists their parent twice: the cgroup watcher to
//! watch it, the resolve to find each policy's id. `std::fs::read_dir`
//! allocates twice per entry (the entry's name, then the name it hands
//! out), and those 200,000 small allocations were most of the user time
//! of both listings (perf, 100,000 policies). Here the names are copied
//! into one buffer.
use std::{os::unix::ffi::OsStrExt as _, path::Path};

use nix::{
    dir::{Dir, Type},
    fcntl::OFlag,
    sys::stat::Mode,
};

/// The subdirectories of one directory whose names are UTF-8 (cgroup
/// names mif matches are strings; others are left out, as before).
#[derive(Debug, Default)]
pub struct Subdirs {
    names: String,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    start: usize,
    end: usize,
    ino: u64,
}

impl Subdirs {
    /// Lists `dir`, in the directory's order.
    pub fn read(dir: &Path) -> nix::Result<Self> {
        let mut handle = Dir::open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut listing = Self::default();
        for entry in handle.iter() {
            let entry = entry?;
            let raw = entry.file_name().to_bytes();
            if raw == b"." || raw == b".." {
                continue;
            }
            let Ok(name) = std::str::from_utf8(raw) else {
                continue;
            };
            let is_dir = match entry.file_type() {
                Some(kind) => kind == Type::Directory,
                // A file system that does not fill in the type (cgroupfs
                // does): asked of the entry itself.
                None => dir
                    .join(std::ffi::OsStr::from_bytes(raw))
                    .symlink_metadata()
                    .is_ok_and(|m| m.is_dir()),
            };
            if is_dir {
                let start = listing.names.len();
                listing.names.push_str(name);
                listing.entries.push(Entry {
                    start,
                    end: listing.names.len(),
                    ino: entry.ino(),
                });
            }
        }
        Ok(listing)
    }

    /// Puts the entries in name order.
    pub fn sort(&mut self) {
        let names = &self.names;
        self.entries
            .sort_unstable_by(|a, b| names[a.start..a.end].cmp(&names[b.start..b.end]));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each subdirectory's name and inode number.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        (self.entries.iter()).map(|e| (&self.names[e.start..e.end], e.ino))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn lists_subdirectories_with_their_inodes_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b", "a", "ç"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("file"), "").unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("link")).unwrap();
        let mut listing = Subdirs::read(dir.path()).unwrap();
        listing.sort();
        let found: Vec<(String, u64)> = listing.iter().map(|(n, i)| (n.to_string(), i)).collect();
        let want: Vec<(String, u64)> = ["a", "b", "ç"]
            .iter()
            .map(|n| {
                let ino = std::fs::metadata(dir.path().join(n)).unwrap().ino();
                (n.to_string(), ino)
            })
            .collect();
        assert_eq!(found, want);
        assert_eq!(listing.len(), 3);
        assert!(Subdirs::read(&dir.path().join("missing")).is_err());
        assert!(Subdirs::read(&dir.path().join("file")).is_err());
    }
}
