//! The lab's private corner of the cgroup2 tree.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where cgroup2 is mounted, read from `/proc/self/mounts`.
///
/// Never assume `/sys/fs/cgroup`: on hybrid systems the v2 hierarchy lives
/// at `/sys/fs/cgroup/unified`, and a test that guesses wrong would silently
/// attach programs to nothing.
pub fn cgroup2_mount() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(target)))
        })
        .next()
        .context("no cgroup2 filesystem in /proc/self/mounts")
}

/// `/proc/self/mounts` writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(
                    d.iter()
                        .fold(0u8, |acc, c| acc.wrapping_mul(8) + (c - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cgroup directory the lab owns, with everything below it.
#[derive(Debug)]
pub(crate) struct CgroupTree {
    root: PathBuf,
    rel: String,
}

impl CgroupTree {
    /// Creates `<cgroup2>/<name>`; fails if it already exists, because then
    /// it belongs to someone else (or to a crashed run) and removing it on
    /// drop would be wrong.
    pub(crate) fn create(name: &str) -> Result<Self> {
        let mount = cgroup2_mount()?;
        let root = mount.join(name);
        fs::create_dir(&root).with_context(|| format!("creating cgroup {}", root.display()))?;
        Ok(Self {
            root,
            rel: format!("/{name}"),
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn rel(&self) -> &str {
        &self.rel
    }

    /// `mkdir -p` of `rel` below the lab's cgroup.
    pub(crate) fn create_child(&self, rel: &str) -> Result<PathBuf> {
        let rel = Path::new(rel);
        // Only plain names: anything else could escape the lab's subtree,
        // and drop would then leave it behind (or remove a stranger's).
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            bail!("cgroup path {} must be relative and plain", rel.display());
        }
        let path = self.root.join(rel);
        fs::create_dir_all(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(path)
    }

    /// Kills every process in the subtree (`cgroup.kill`, Linux 5.14+), so
    /// that nothing the lab started can keep a cgroup busy.
    pub(crate) fn kill_all(&self) -> io::Result<()> {
        let kill = self.root.join("cgroup.kill");
        if kill.exists() {
            fs::write(kill, "1")?;
        }
        Ok(())
    }

    /// Removes the subtree deepest-first. A cgroup whose processes are still
    /// exiting refuses `rmdir` with EBUSY for a few milliseconds, so each
    /// directory gets a short grace period.
    pub(crate) fn remove(&self) -> Result<()> {
        let mut dirs = Vec::new();
        collect_dirs(&self.root, &mut dirs)?;
        // Post-order from collect_dirs already lists children before parents.
        for dir in dirs {
            rmdir_patiently(&dir)?;
        }
        Ok(())
    }
}

/// Appends every directory below and including `dir`, children first.
fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_dirs(&entry.path(), out)?;
        }
    }
    out.push(dir.to_path_buf());
    Ok(())
}

fn rmdir_patiently(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).with_context(|| format!("removing cgroup {}", dir.display())),
        }
    }
}

/// The names of the programs that run for egress packets of sockets created
/// in `cgroup` (BPF_PROG_QUERY with BPF_F_QUERY_EFFECTIVE: those attached
/// to it and to its ancestors), as the kernel reports them.
pub fn effective_egress_programs(cgroup: &Path) -> Result<Vec<String>> {
    use std::os::fd::AsRawFd as _;
    /// uapi `BPF_PROG_QUERY`, `BPF_CGROUP_INET_EGRESS`, `BPF_F_QUERY_EFFECTIVE`.
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_CGROUP_INET_EGRESS: u32 = 1;
    const BPF_F_QUERY_EFFECTIVE: u32 = 1;
    /// The `query` part of `union bpf_attr` (what this command reads).
    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    let dir = fs::File::open(cgroup).with_context(|| format!("opening {}", cgroup.display()))?;
    let mut ids = [0u32; 64];
    let mut attr = QueryAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_INET_EGRESS,
        query_flags: BPF_F_QUERY_EFFECTIVE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    // SAFETY: attr and ids outlive the call; the kernel writes at most
    // prog_cnt ids and the count back into attr.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &raw mut attr,
            std::mem::size_of::<QueryAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error()).context("BPF_PROG_QUERY");
    }
    let ids = &ids[..(attr.prog_cnt as usize).min(ids.len())];
    Ok(aya::programs::loaded_programs()
        .filter_map(|info| info.ok())
        .filter(|info| ids.contains(&info.id()))
        .filter_map(|info| Some(info.name_as_str()?.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::unescape_mount_path;

    #[test]
    fn unescapes_octal_sequences() {
        assert_eq!(unescape_mount_path("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(
            unescape_mount_path("/sys/fs/cgroup/unified"),
            "/sys/fs/cgroup/unified"
        );
        assert_eq!(unescape_mount_path("/x\\04"), "/x\\04");
    }
}
