//! Finding the cgroup2 hierarchy and naming cgroups in it.
//!
//! Hosts may run cgroup v1 and v2 side by side (hybrid: v2 at
//! `/sys/fs/cgroup/unified`), so the mount is always read from
//! `/proc/self/mounts`, never assumed.
use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::host::subdirs::Subdirs;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup2 hierarchy is mounted (looked in /proc/self/mounts); \
         `ip netns exec` remounts /sys and hides it (and bpffs): to run mif in \
         another network namespace, switch only that namespace, e.g. \
         `nsenter --net=/run/netns/NAME mif ...`"
    )]
    NoCgroup2,
    #[error("cannot read /proc/self/mounts")]
    Mounts(#[source] std::io::Error),
    #[error("cgroup {rel} does not exist in the cgroup2 hierarchy at {}", mount.display())]
    Missing { rel: String, mount: PathBuf },
    #[error("cannot open cgroup {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// From this many cgroups asked for in one directory on,
/// [`Cgroup2::resolve_many`] reads the directory instead of looking each
/// cgroup up (below it, reading a big directory for a few would cost more).
pub const READ_DIR_FROM: usize = 16;

/// Up to this many ids, [`Cgroup2::paths_of`] opens each by its handle;
/// more are found by one walk of the tree.
const BY_HANDLE_UP_TO: usize = 16;

/// The mounted cgroup2 hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroup2 {
    mount: PathBuf,
}

/// One cgroup2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// Path relative to the cgroup2 root, starting with `/`.
    pub rel: String,
    pub path: PathBuf,
    /// The cgroup id, as `bpf_get_current_cgroup_id()` reports it: the inode.
    pub id: u64,
    /// Depth below the cgroup2 root (the root is level 0).
    pub level: u32,
}

/// The cgroup2 mount point named in mount table text (the format of
/// /proc/self/mounts).
pub fn cgroup2_mount_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(target)))
    })
}

/// /proc/self/mounts escapes spaces and friends as octal (`\040`).
fn unescape_mount_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if digits.len() == 3 {
                if let Ok(v) = u8::from_str_radix(&digits, 8) {
                    out.push(v as char);
                    chars.nth(2);
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

impl Cgroup2 {
    pub fn find() -> Result<Self, CgroupError> {
        let mounts = fs::read_to_string("/proc/self/mounts").map_err(CgroupError::Mounts)?;
        let mount = cgroup2_mount_in(&mounts).ok_or(CgroupError::NoCgroup2)?;
        Ok(Self { mount })
    }

    /// A hierarchy known to be mounted at `mount` (tests give a directory of
    /// their own; [`Self::find`] reads the mount table).
    pub fn at(mount: impl Into<PathBuf>) -> Self {
        Self {
            mount: mount.into(),
        }
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The cgroup at `rel` (relative to the cgroup2 root), which must exist.
    pub fn resolve(&self, rel: &str) -> Result<Cgroup, CgroupError> {
        let rel = normalize_cgroup(rel);
        let path = self.mount.join(rel.trim_start_matches('/'));
        let meta = fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CgroupError::Missing {
                rel: rel.clone(),
                mount: self.mount.clone(),
            },
            _ => CgroupError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        if !meta.is_dir() {
            return Err(CgroupError::Missing {
                rel,
                mount: self.mount.clone(),
            });
        }
        Ok(self.cgroup_at(rel, meta.ino()))
    }

    /// The cgroup at `rel` (normalized), whose id is `id`.
    fn cgroup_at(&self, rel: String, id: u64) -> Cgroup {
        let path = self.mount.join(rel.trim_start_matches('/'));
        let level = rel.split('/').filter(|c| !c.is_empty()).count() as u32;
        Cgroup {
            rel,
            path,
            id,
            level,
        }
    }

    /// The cgroups at `rels`, in order, as [`Self::resolve`] finds each.
    ///
    /// Siblings asked for together (from [`READ_DIR_FROM`] on) are found by
    /// reading their directory once: its entries carry each cgroup's inode
    /// number, which is its id, without a path lookup per cgroup. Looking
    /// up 100,000 new cgroups by path took 1.2 s of system time here (each
    /// lookup makes the cgroup's dentry and inode); reading their directory
    /// takes milliseconds.
    pub fn resolve_many<'a>(
        &self,
        rels: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Result<Cgroup, CgroupError>> {
        let rels: Vec<String> = rels.into_iter().map(normalize_cgroup).collect();
        let mut by_parent: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, rel) in rels.iter().enumerate() {
            // The root ("/") has no name in a parent: looked up alone.
            match rel.rsplit_once('/') {
                Some((parent, name)) if !name.is_empty() => {
                    by_parent.entry(parent).or_default().push(i)
                }
                _ => {}
            }
        }
        let mut found: Vec<Option<Result<Cgroup, CgroupError>>> =
            std::iter::repeat_with(|| None).take(rels.len()).collect();
        for (parent, children) in by_parent {
            if children.len() < READ_DIR_FROM {
                continue;
            }
            let dir = self.mount.join(parent.trim_start_matches('/'));
            let Ok(listing) = Subdirs::read(&dir) else {
                continue; // resolved one by one below, with their errors
            };
            let entries: HashMap<&str, u64> = listing.iter().collect();
            for i in children {
                let rel = &rels[i];
                let name = &rel[parent.len() + 1..];
                found[i] = Some(match entries.get(name) {
                    Some(&id) => Ok(self.cgroup_at(rel.clone(), id)),
                    None => Err(CgroupError::Missing {
                        rel: rel.clone(),
                        mount: self.mount.clone(),
                    }),
                });
            }
        }
        found
            .into_iter()
            .zip(&rels)
            .map(|(found, rel)| found.unwrap_or_else(|| self.resolve(rel)))
            .collect()
    }

    /// Paths (relative to the root) of the cgroups with the given ids. Ids
    /// not found are left out.
    ///
    /// A few ids (up to [`BY_HANDLE_UP_TO`]) are each opened as a file
    /// handle (cgroup2 exports its ids as kernfs handles; needs
    /// CAP_DAC_READ_SEARCH): one system call per id. More are found by one
    /// walk of the tree below `under`: a handle's directory is often not in
    /// the dentry cache, and the kernel then finds its name by reading the
    /// whole parent directory (`reconnect_path` → `get_name`), so many
    /// handles cost the product of the siblings and the ids: 25 ms per id
    /// with 100,000 sibling cgroups, where the walk reads that directory
    /// once. Ids a handle cannot open are looked for by the walk too.
    pub fn paths_of(&self, under: &str, ids: &HashSet<u64>) -> HashMap<u64, String> {
        let mut found: HashMap<u64, String> = HashMap::new();
        if ids.len() <= BY_HANDLE_UP_TO {
            found.extend(
                ids.iter()
                    .filter_map(|&id| Some((id, self.path_by_handle(id)?))),
            );
        }
        if found.len() < ids.len() {
            let missing: HashSet<u64> = ids
                .iter()
                .filter(|id| !found.contains_key(id))
                .copied()
                .collect();
            found.extend(self.paths_by_walk(under, &missing));
        }
        found
    }

    /// The path of cgroup `id` by `open_by_handle_at`, relative to the root.
    fn path_by_handle(&self, id: u64) -> Option<String> {
        use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
        /// `FILEID_KERNFS` (include/linux/exportfs.h): a kernfs node id.
        const FILEID_KERNFS: i32 = 0xfe;
        #[repr(C)]
        struct KernfsHandle {
            handle_bytes: u32,
            handle_type: i32,
            id: u64,
        }
        let mount = fs::File::open(&self.mount).ok()?;
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id,
        };
        // SAFETY: `handle` has the layout of `struct file_handle` with an
        // 8-byte `f_handle`, as `handle_bytes` says; the kernel only reads it.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount.as_raw_fd(),
                (&mut handle as *mut KernfsHandle).cast(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let rel = path.strip_prefix(&self.mount).ok()?;
        Some(format!("/{}", rel.display()))
    }

    /// Paths of the cgroups with the given ids, by walking the tree below
    /// `under` (and `under` itself). A cgroup's id is its directory's
    /// inode number, which the parent's entries give: one read of each
    /// directory and no lookup per cgroup, and the walk ends as soon as
    /// every id is found.
    fn paths_by_walk(&self, under: &str, ids: &HashSet<u64>) -> HashMap<u64, String> {
        let mut found = HashMap::new();
        let under = normalize_cgroup(under);
        let start = self.mount.join(under.trim_start_matches('/'));
        if let Ok(meta) = fs::metadata(&start) {
            if ids.contains(&meta.ino()) {
                found.insert(meta.ino(), under.clone());
            }
        }
        let mut stack = vec![under];
        while let Some(rel) = stack.pop() {
            if found.len() == ids.len() {
                break;
            }
            let dir = self.mount.join(rel.trim_start_matches('/'));
            let Ok(listing) = Subdirs::read(&dir) else {
                continue;
            };
            for (name, ino) in listing.iter() {
                let child = match rel.as_str() {
                    "/" => format!("/{name}"),
                    _ => format!("{rel}/{name}"),
                };
                if ids.contains(&ino) {
                    found.insert(ino, child.clone());
                }
                stack.push(child);
            }
        }
        found
    }
}

impl Cgroup {
    /// Whether `self` is `ancestor` or lies below it.
    pub fn is_within(&self, ancestor: &Cgroup) -> bool {
        ancestor.rel == "/"
            || self.rel == ancestor.rel
            || self.rel.starts_with(&format!("{}/", ancestor.rel))
    }
}

/// A cgroup path as written in policies: absolute within cgroup2, no `..`.
pub fn check_cgroup_path(path: &str) -> Result<(), String> {
    // A selector (`unit:`, `app:`, `user:`) stands for the cgroups it
    // matches, like a pattern.
    if crate::host::selector::is_selector(path) {
        return crate::host::selector::Selector::parse(path).map(|_| ());
    }
    if !path.starts_with('/') {
        return Err("must start with '/' (paths are relative to the cgroup2 root)".into());
    }
    if path.split('/').any(|c| c == ".." || c == ".") {
        return Err("must not contain '.' or '..' components".into());
    }
    // A glob pattern (`/system.slice/docker-*.scope`, `/kubepods.slice/**`)
    // applies to every matching cgroup, including ones created later.
    if crate::host::cgroup_pattern::is_pattern(path) {
        crate::host::cgroup_pattern::CgroupPattern::parse(path).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `/a//b/` → `/a/b`; `/` stays `/`; a selector's key stays as it is.
pub fn normalize_cgroup(path: &str) -> String {
    // Paths are nearly always written normalized already: a copy, without
    // splitting and joining (a sixth of resolving 100,000 policies did that).
    let normalized =
        path.starts_with('/') && (path == "/" || !path.ends_with('/')) && !path.contains("//");
    if normalized || crate::host::selector::is_selector(path) {
        return path.to_string();
    }
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {

    #[test]
    fn ids_are_named_by_handle_and_by_walk_alike() {
        let Ok(cgroup2) = Cgroup2::find() else {
            return; // no cgroup2 here: nothing to name
        };
        let rel = format!("/mif-unit-{}", std::process::id());
        if fs::create_dir(cgroup2.mount().join(&rel[1..])).is_err() {
            return; // not root: cannot make a cgroup
        }
        let child = cgroup2.resolve(&rel).unwrap();
        let root = cgroup2.resolve("/").unwrap();
        let ids: HashSet<u64> = [root.id, child.id].into();
        let direct = cgroup2.path_by_handle(child.id);
        let by_handle = cgroup2.paths_of("/", &ids);
        let by_walk = cgroup2.paths_by_walk("/", &ids);
        fs::remove_dir(cgroup2.mount().join(&rel[1..])).unwrap();
        assert_eq!(direct, Some(rel.clone()));
        assert_eq!(by_handle.get(&child.id), Some(&rel));
        assert_eq!(by_handle.get(&root.id).map(String::as_str), Some("/"));
        assert_eq!(by_handle, by_walk);
    }

    use super::*;

    /// A directory tree standing in for cgroup2 (inode numbers and entries
    /// work alike on any file system): siblings found by reading their
    /// directory and cgroups looked up one by one give the same answers,
    /// missing ones and files included.
    #[test]
    fn many_cgroups_resolve_as_each_alone() {
        let root = std::env::temp_dir().join(format!("mif-cgroups-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for i in 0..READ_DIR_FROM * 2 {
            fs::create_dir_all(root.join(format!("many/c{i}"))).unwrap();
            fs::create_dir_all(root.join(format!("top{i}"))).unwrap();
        }
        fs::create_dir_all(root.join("few/one")).unwrap();
        fs::write(root.join("many/a-file"), "").unwrap();
        let cgroup2 = Cgroup2::at(&root);
        let mut rels: Vec<String> = (0..READ_DIR_FROM * 2)
            .map(|i| format!("/many/c{i}/"))
            .collect();
        rels.extend(
            [
                "/many/missing",
                "/many/a-file",
                "/few/one",
                "/few/two",
                "/",
                "/gone/x",
            ]
            .map(String::from),
        );
        // The root among enough top-level cgroups for the root's directory
        // to be read for them.
        rels.extend((0..READ_DIR_FROM * 2).map(|i| format!("/top{i}")));
        let many = cgroup2.resolve_many(rels.iter().map(String::as_str));
        let each: Vec<_> = rels.iter().map(|rel| cgroup2.resolve(rel)).collect();
        fs::remove_dir_all(&root).unwrap();
        let shown = |all: &[Result<Cgroup, CgroupError>]| -> Vec<String> {
            all.iter()
                .map(|r| match r {
                    Ok(cg) => format!("{} {} {} {}", cg.rel, cg.path.display(), cg.id, cg.level),
                    Err(e) => e.to_string(),
                })
                .collect()
        };
        assert_eq!(shown(&many), shown(&each));
        assert!(many[..READ_DIR_FROM * 2].iter().all(Result::is_ok));
        assert!(many[READ_DIR_FROM * 2..][..2].iter().all(Result::is_err));
        assert!(many[READ_DIR_FROM * 2 + 4]
            .as_ref()
            .is_ok_and(|cg| cg.rel == "/"));
    }

    /// More ids than are opened by handle: one walk names each, at any
    /// depth, the tree's top included, and leaves out ids it does not hold.
    #[test]
    fn many_ids_are_named_by_one_walk() {
        let root = std::env::temp_dir().join(format!("mif-paths-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let rels: Vec<String> = (0..BY_HANDLE_UP_TO * 2)
            .map(|i| match i % 3 {
                0 => format!("/flat{i}"),
                1 => format!("/a/deep{i}"),
                _ => format!("/a/b/c/deeper{i}"),
            })
            .collect();
        for rel in &rels {
            fs::create_dir_all(root.join(&rel[1..])).unwrap();
        }
        fs::write(root.join("a/a-file"), "").unwrap();
        let cgroup2 = Cgroup2::at(&root);
        let ino = |rel: &str| {
            fs::metadata(root.join(rel.trim_start_matches('/')))
                .unwrap()
                .ino()
        };
        let mut want: HashMap<u64, String> = rels.iter().map(|r| (ino(r), r.clone())).collect();
        want.insert(ino("/"), "/".into());
        want.insert(ino("/a/b"), "/a/b".into());
        let mut ids: HashSet<u64> = want.keys().copied().collect();
        let file = ino("/a/a-file");
        ids.extend([file, u64::MAX]);
        let named = cgroup2.paths_of("/", &ids);
        let below_a = cgroup2.paths_of("/a/", &ids);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(named, want);
        assert!(below_a.values().all(|p| p.starts_with("/a/")));
        assert_eq!(
            below_a.len(),
            want.values().filter(|p| p.starts_with("/a/")).count()
        );
    }

    /// The copy for paths already normalized gives what splitting does.
    #[test]
    fn normalized_paths_stay_and_others_are_normalized() {
        for (given, want) in [
            ("/", "/"),
            ("/a", "/a"),
            ("/a/b.scope", "/a/b.scope"),
            ("", "/"),
            ("//", "/"),
            ("/a/", "/a"),
            ("a/b", "/a/b"),
            ("/a//b/", "/a/b"),
            ("unit:foo.service", "unit:foo.service"),
        ] {
            assert_eq!(normalize_cgroup(given), want, "{given:?}");
        }
    }

    #[test]
    fn finds_cgroup2_on_hybrid_hosts() {
        let mounts = "cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            cgroup2_mount_in(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount_in("proc /proc proc rw 0 0\n"), None);
        assert_eq!(
            cgroup2_mount_in("none /mnt/my\\040cg cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/mnt/my cg"))
        );
    }

    #[test]
    fn within_is_by_path_component() {
        let cg = |rel: &str| Cgroup {
            rel: rel.into(),
            path: PathBuf::new(),
            id: 0,
            level: 0,
        };
        assert!(cg("/a/b").is_within(&cg("/a")));
        assert!(cg("/a").is_within(&cg("/a")));
        assert!(cg("/a").is_within(&cg("/")));
        assert!(!cg("/ab").is_within(&cg("/a")));
    }
}
