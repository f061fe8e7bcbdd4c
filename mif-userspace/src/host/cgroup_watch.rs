//! Noticing cgroups as they appear and vanish, so policies given as patterns
//! (or for cgroups that do not exist yet) follow containers and services
//! started after the daemon.
//!
//! cgroupfs delivers inotify `IN_CREATE` / `IN_DELETE` on its directories for
//! `mkdir` / `rmdir` (which is how every runtime and systemd make cgroups),
//! so one inotify instance watches each directory at or below the given
//! roots, adding watches as directories appear, and each directory on the
//! way from the hierarchy's root down to them: a root that does not exist
//! yet, or is removed and made again, is seen in its parent's events.
//!
//! cgroupfs (kernfs) differs from ordinary file systems: `rmdir` of a
//! watched cgroup sends IN_DELETE to the parent's watch but no IN_DELETE_SELF
//! or IN_IGNORED to the cgroup's own, whose watch then lingers (counting
//! against the user's limit) until removed by hand; the files of a new cgroup
//! appear without IN_CREATE; and cgroup2 refuses renames (EPERM).
//!
//! Contract with the caller: create the watcher *first*, then walk the tree
//! for what exists; every change after creation is then either in the walk
//! or reported. Reports may repeat what the walk saw, never miss it. On a
//! queue overflow the watcher re-arms itself and reports [`CgroupEvent::Rescan`]:
//! walk again.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    io,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor},
};
use tokio::io::{unix::AsyncFd, Interest};

use crate::host::{cgroup::normalize_cgroup, subdirs::Subdirs};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot create an inotify instance (limit: fs.inotify.max_user_instances)")]
    Init(#[source] io::Error),
    #[error("out of inotify watches at cgroup directory {}: raise fs.inotify.max_user_watches", path.display())]
    OutOfWatches { path: PathBuf },
    #[error("cannot watch cgroup directory {}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup watch root {rel:?} has a . or .. component; name cgroups from the root")]
    BadRoot { rel: String },
    #[error("the cgroup watcher needs a tokio runtime with I/O enabled")]
    Runtime(#[source] io::Error),
}

/// A change below the watched roots. Paths are relative to the cgroup2 root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupEvent {
    /// A cgroup at or below a root appeared (parents are reported before
    /// their children).
    Created(String),
    /// A cgroup vanished (children before their parents): one reported
    /// before, or an exact one (see [`CgroupWatcher::with_exact`]).
    Removed(String),
    /// Events were lost (the kernel's queue overflowed), or a directory on
    /// the way to exact cgroups went: walk the roots again.
    Rescan,
}

/// Where a directory stands relative to the roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// At or below a root: watched and reported.
    Within,
    /// Above a root that it leads to: watched, to see the way down appear.
    Above,
    /// An exact cgroup: reported, not watched.
    Exact,
    /// Neither: ignored.
    Outside,
}

/// What the watcher asks of inotify for each directory. `IN_IGNORED` comes
/// regardless, when a watched directory is gone.
fn watch_mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ONLYDIR
        | AddWatchFlags::IN_DONT_FOLLOW
}

/// Owns the inotify descriptor for the reactor.
#[derive(Debug)]
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub struct CgroupWatcher {
    mount: PathBuf,
    /// Normalized roots (relative paths).
    roots: Vec<String>,
    /// The same, for lookups by each ancestor of a path (there may be
    /// 100,000 roots: a scan of all of them per directory was quadratic).
    root_set: HashSet<String>,
    /// Cgroups reported when they appear or go, but not watched below
    /// (the cgroups of literal policies: what happens inside them needs no
    /// daemon; children inherit in the kernel), by [`path_key`]: with
    /// 100,000 literal policies the paths would be 10 MiB, their keys are
    /// 2. A key two paths share (one chance in 2^64 a pair) costs a report
    /// of the other's changes, which only makes the caller look again.
    /// With no record of which exist, their reports are not kept paired: an
    /// exact cgroup may be reported Created twice (by a listing and by its
    /// event), or Removed without a Created (made and gone before the
    /// events were read), which only makes the caller look again. Nothing
    /// below them is watched.
    exact: HashSet<u64>,
    /// Every proper ancestor of a root or an exact cgroup.
    above: HashSet<String>,
    /// Those of an exact cgroup.
    above_exact: HashSet<String>,
    fd: AsyncFd<InotifyFd>,
    by_wd: HashMap<WatchDescriptor, String>,
    /// Watched directories, ordered so a subtree is a contiguous range.
    by_rel: BTreeMap<String, WatchDescriptor>,
    /// Directories within the roots that exist as far as reports go: each
    /// was reported Created (or was there at the start) and not yet Removed.
    /// Keeps Created/Removed paired and unrepeated when an event and a scan
    /// see the same directory. Exact cgroups are not kept here, nor paired.
    known: BTreeSet<String>,
    pending: VecDeque<CgroupEvent>,
}

impl std::fmt::Debug for CgroupWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgroupWatcher")
            .field("mount", &self.mount)
            .field("roots", &self.roots)
            .field("watches", &self.by_rel.len())
            .finish()
    }
}

impl CgroupWatcher {
    /// Watches the cgroups at and below each root (paths relative to the
    /// cgroup2 root at `cgroup2_mount`). Must be called within a tokio
    /// runtime. What exists now is not reported: the caller walks it.
    pub fn new<R: AsRef<str>>(
        cgroup2_mount: &Path,
        roots: impl IntoIterator<Item = R>,
    ) -> Result<Self, WatchError> {
        Self::with_exact(cgroup2_mount, roots, std::iter::empty::<&str>())
    }

    /// As [`CgroupWatcher::new`], and also reports the `exact` cgroups
    /// themselves appearing and going, without watching below them.
    pub fn with_exact<R: AsRef<str>, E: AsRef<str>>(
        cgroup2_mount: &Path,
        roots: impl IntoIterator<Item = R>,
        exact: impl IntoIterator<Item = E>,
    ) -> Result<Self, WatchError> {
        let normalize = |rel: &str| {
            if rel.split('/').any(|c| c == "." || c == "..") {
                return Err(WatchError::BadRoot { rel: rel.into() });
            }
            Ok(normalize_cgroup(rel))
        };
        let mut normalized = Vec::new();
        let mut root_set = HashSet::new();
        for rel in roots {
            let rel = normalize(rel.as_ref())?;
            if root_set.insert(rel.clone()) {
                normalized.push(rel);
            }
        }
        let mut above = HashSet::new();
        for rel in &normalized {
            above.extend(proper_ancestors(rel));
        }
        let mut exact_keys = HashSet::new();
        let mut above_exact = HashSet::new();
        for rel in exact {
            let rel = normalize(rel.as_ref())?;
            // Siblings share their ancestors: stop at the first one seen.
            for up in ancestors(&rel) {
                if !above_exact.insert(up.to_string()) {
                    break;
                }
            }
            exact_keys.insert(path_key(&rel));
        }
        above.extend(above_exact.iter().cloned());
        tokio::runtime::Handle::try_current()
            .map_err(|e| WatchError::Runtime(io::Error::other(e)))?;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| WatchError::Init(e.into()))?;
        // SAFETY: `InotifyFd` owns its descriptor (an OwnedFd inside
        // `Inotify`, closed on drop) and `as_raw_fd` always returns it; the
        // `AsyncFd` owns the `InotifyFd` and nothing takes the descriptor out.
        let fd = unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }
            .map_err(|e| WatchError::Runtime(e.into()))?;
        let mut watcher = Self {
            mount: cgroup2_mount.to_path_buf(),
            roots: normalized,
            root_set,
            exact: exact_keys,
            above,
            above_exact,
            fd,
            by_wd: HashMap::new(),
            by_rel: BTreeMap::new(),
            known: BTreeSet::new(),
            pending: VecDeque::new(),
        };
        if let Some(err) = watcher.visit("/".into(), false) {
            return Err(err);
        }
        Ok(watcher)
    }

    /// The normalized roots.
    pub fn roots(&self) -> &[String] {
        &self.roots
    }

    /// Whether this watcher watches exactly `roots` and `exact` (as
    /// [`CgroupWatcher::with_exact`] takes them, each list sorted and
    /// without repeats), so that a caller need not keep a copy of its own.
    pub fn watches(&self, roots: &[String], exact: &[&str]) -> bool {
        let mut want_roots: Vec<String> = roots.iter().map(|r| normalize_cgroup(r)).collect();
        want_roots.sort();
        want_roots.dedup();
        let mut have_roots = self.roots.clone();
        have_roots.sort();
        have_roots == want_roots
            && exact.len() == self.exact.len()
            && exact
                .iter()
                .all(|e| self.exact.contains(&path_key(&normalize_cgroup(e))))
    }

    /// How many directories are watched (each costs one of the user's
    /// `fs.inotify.max_user_watches`).
    pub fn watch_count(&self) -> usize {
        self.by_rel.len()
    }

    /// The next change. Cancel-safe: events are taken from the kernel only
    /// when they can be queued here at once, and the only wait is for
    /// readiness. `None` only if the inotify descriptor fails.
    pub async fn next(&mut self) -> Option<CgroupEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let events = {
                let mut guard = match self.fd.readable().await {
                    Ok(guard) => guard,
                    Err(e) => {
                        log::warn!("cgroup watcher: inotify descriptor failed: {e}");
                        return None;
                    }
                };
                match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from)) {
                    Ok(Ok(events)) => events,
                    Ok(Err(e)) => {
                        log::warn!("cgroup watcher: cannot read inotify events: {e}");
                        return None;
                    }
                    Err(_would_block) => continue,
                }
            };
            self.handle(events);
        }
    }

    fn handle(&mut self, events: Vec<InotifyEvent>) {
        let mut overflow = false;
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                overflow = true;
                continue;
            }
            let Some(rel) = self.by_wd.get(&event.wd).cloned() else {
                // A watch already forgotten (its directory was reported gone).
                continue;
            };
            if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                // The directory itself is gone (or was unmounted) and the
                // kernel dropped the watch. Ordinary file systems say so
                // before the parent's IN_DELETE; cgroupfs never does, and
                // its watches are forgotten on the parent's IN_DELETE.
                self.forget(&rel);
                self.rearm();
                continue;
            }
            if !event.mask.contains(AddWatchFlags::IN_ISDIR) {
                continue;
            }
            let Some(name) = event.name.as_ref().and_then(|n| n.to_str()) else {
                log::debug!("cgroup watcher: skipping a non-UTF-8 name under {rel}");
                continue;
            };
            let child = join(&rel, name);
            if event
                .mask
                .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
            {
                if !self.known.contains(&child) && !self.by_rel.contains_key(&child) {
                    if let Some(err) = self.visit(child, true) {
                        log::warn!("cgroup watcher: {err}; new cgroups below it go unnoticed");
                    }
                }
            } else if event
                .mask
                .intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM)
            {
                self.forget(&child);
            }
        }
        if overflow {
            self.rescan();
        }
    }

    fn place(&self, rel: &str) -> Place {
        // Without allocating: this runs for every entry of every listing.
        let within = !self.root_set.is_empty()
            && std::iter::once(rel)
                .chain(ancestors(rel))
                .any(|r| self.root_set.contains(r));
        if within {
            Place::Within
        } else if self.above.contains(rel) {
            // Above an exact cgroup too: its parent's watch sees it come and go.
            Place::Above
        } else if self.is_exact(rel) {
            Place::Exact
        } else {
            Place::Outside
        }
    }

    fn path_of(&self, rel: &str) -> PathBuf {
        self.mount.join(rel.trim_start_matches('/'))
    }

    fn is_exact(&self, rel: &str) -> bool {
        self.exact.contains(&path_key(rel))
    }

    /// Records that `rel` exists; whether that is news (always, for an
    /// exact cgroup: see [`Self::exact`]).
    fn now_known(&mut self, rel: &str) -> bool {
        self.is_exact(rel) || self.known.insert(rel.to_string())
    }

    /// Watches `start` and whatever below it is on the way to or within a
    /// root, reporting new directories within roots when `report`. The
    /// watch is added before the directory is listed, so a subdirectory
    /// made meanwhile is seen by the listing, by an event, or by both (the
    /// known set drops the second, but for exact cgroups), never by
    /// neither. Returns the first
    /// hard error (out of watches); directories that vanish are skipped.
    fn visit(&mut self, start: String, report: bool) -> Option<WatchError> {
        let mut first_error = None;
        let mut stack = vec![start];
        while let Some(rel) = stack.pop() {
            let place = self.place(&rel);
            if place == Place::Outside {
                continue;
            }
            if place == Place::Exact {
                if self.path_of(&rel).is_dir() && self.now_known(&rel) && report {
                    self.pending.push_back(CgroupEvent::Created(rel));
                }
                continue;
            }
            let path = self.path_of(&rel);
            match self.fd.get_ref().0.add_watch(&path, watch_mask()) {
                Ok(wd) => self.record_watch(wd, &rel),
                Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
                Err(Errno::ENOSPC) => {
                    first_error.get_or_insert(WatchError::OutOfWatches { path: path.clone() });
                }
                Err(e) => {
                    first_error.get_or_insert(WatchError::Watch {
                        path: path.clone(),
                        source: e.into(),
                    });
                }
            }
            let reported = place == Place::Within || self.is_exact(&rel);
            if reported && self.now_known(&rel) && report {
                self.pending.push_back(CgroupEvent::Created(rel.clone()));
            }
            // Pushed in reverse so they are visited (and reported) in
            // directory order; a stack keeps parents before children.
            // Exact cgroups and the rest are settled here, as listed (no
            // `stat` each, nor a copy of each on the stack: 100,000 of them
            // in one directory at start, with as many literal policies).
            let mut children = Vec::new();
            for (name, _) in listed_in_order(&path).iter() {
                let child = join(&rel, name);
                match self.place(&child) {
                    Place::Outside => {}
                    Place::Exact => {
                        if self.now_known(&child) && report {
                            self.pending.push_back(CgroupEvent::Created(child));
                        }
                    }
                    Place::Within | Place::Above => children.push(child),
                }
            }
            children.reverse();
            stack.extend(children);
        }
        first_error
    }

    fn record_watch(&mut self, wd: WatchDescriptor, rel: &str) {
        // The same directory under a new name (a rename seen late) keeps its
        // descriptor: drop the stale name.
        if let Some(old) = self.by_wd.insert(wd, rel.to_string()) {
            if old != rel && self.by_rel.get(&old) == Some(&wd) {
                self.by_rel.remove(&old);
            }
        }
        // A new descriptor for a watched name: a listing found the directory
        // made again before the event of its removal was read. The old watch
        // is dropped now, or its late IN_IGNORED would forget the new one.
        // (The removal event still to come reports it; the creation event
        // after it reports the new one.)
        if let Some(old_wd) = self.by_rel.insert(rel.to_string(), wd) {
            if old_wd != wd {
                self.by_wd.remove(&old_wd);
                let _ = self.fd.get_ref().0.rm_watch(old_wd);
            }
        }
    }

    /// `rel` and everything below it are gone: drop their watches and report
    /// the known ones removed, deepest first, and `rel` itself if exact.
    fn forget(&mut self, rel: &str) {
        let watched = subtree(rel, |r| self.by_rel.range(r..).map(|(k, _)| k));
        for k in watched {
            if let Some(wd) = self.by_rel.remove(&k) {
                self.by_wd.remove(&wd);
                // Needed on cgroupfs, where the kernel keeps the watch of a
                // removed cgroup; elsewhere the kernel dropped it already and
                // this fails with EINVAL.
                let _ = self.fd.get_ref().0.rm_watch(wd);
            }
        }
        let mut gone = subtree(rel, |r| self.known.range(r..));
        for k in &gone {
            self.known.remove(k);
        }
        if self.is_exact(rel) && !gone.iter().any(|k| k == rel) {
            gone.push(rel.to_string());
        }
        gone.sort_by_key(|k| std::cmp::Reverse(depth(k)));
        for k in gone {
            self.pending.push_back(CgroupEvent::Removed(k));
        }
        // On the way to exact cgroups, which are known by key only: those
        // below it cannot be named, so the caller looks at them all. Only
        // needed where a directory goes with its children (a rename, on a
        // plain file system); cgroupfs removes a cgroup only once its
        // children are gone, each with an event of its own, and renames
        // none that has any, so there it is one look more than needed (a
        // user's slice gone at logout with an exact policy below it).
        if self.above_exact.contains(rel) {
            self.pending.push_back(CgroupEvent::Rescan);
        }
    }

    /// After a watched directory vanished without its parent's watch saying
    /// so (only the hierarchy's root has no parent): watch again from the top.
    fn rearm(&mut self) {
        if !self.by_rel.contains_key("/") {
            if let Some(err) = self.visit("/".into(), true) {
                log::warn!("cgroup watcher: {err}");
            }
        }
    }

    /// Events were lost: forget what no longer exists (silently: the caller
    /// walks again), watch what is new, and tell the caller.
    fn rescan(&mut self) {
        let stale: Vec<String> = self
            .by_rel
            .keys()
            .chain(self.known.iter())
            .filter(|rel| !self.path_of(rel).is_dir())
            .cloned()
            .collect();
        for rel in stale {
            if let Some(wd) = self.by_rel.remove(&rel) {
                self.by_wd.remove(&wd);
                let _ = self.fd.get_ref().0.rm_watch(wd);
            }
            self.known.remove(&rel);
        }
        if let Some(err) = self.visit("/".into(), false) {
            log::warn!("cgroup watcher: {err}");
        }
        self.pending.push_back(CgroupEvent::Rescan);
    }
}

/// Whether `rel` is `ancestor` or below it (both normalized).
#[cfg(test)]
fn is_within(rel: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || rel == ancestor
        || (rel.starts_with(ancestor) && rel.as_bytes().get(ancestor.len()) == Some(&b'/'))
}

/// The key of a normalized path in [`CgroupWatcher::exact`] (SipHash with
/// fixed keys: the same path, the same key, in every watcher of this
/// process).
fn path_key(rel: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    rel.hash(&mut hasher);
    hasher.finish()
}

fn join(rel: &str, name: &str) -> String {
    if rel == "/" {
        format!("/{name}")
    } else {
        format!("{rel}/{name}")
    }
}

/// The keys of an ordered collection that are `rel` or below it, given its
/// iterator from a key on. Descendants sort together right after `rel/`, but
/// siblings like `rel-x` and `rel.x` sort between `rel` and `rel/`, hence two
/// lookups.
fn subtree<'a, I>(rel: &str, from: impl Fn(String) -> I) -> Vec<String>
where
    I: Iterator<Item = &'a String>,
{
    let below = if rel == "/" {
        "/".to_string()
    } else {
        format!("{rel}/")
    };
    let mut out: Vec<String> = from(rel.to_string())
        .take(1)
        .filter(|k| k.as_str() == rel && rel != "/")
        .cloned()
        .collect();
    out.extend(
        from(below.clone())
            .take_while(|k| k.starts_with(&below))
            .cloned(),
    );
    out
}

/// The ancestors of `rel` up to the root, nearest first: `/a/b` → `/a`, `/`.
fn proper_ancestors(rel: &str) -> Vec<String> {
    ancestors(rel).map(str::to_string).collect()
}

/// [`proper_ancestors`], borrowed.
fn ancestors(rel: &str) -> impl Iterator<Item = &str> {
    let mut current = rel;
    std::iter::from_fn(move || {
        if current == "/" {
            return None;
        }
        current = match current.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &current[..i],
        };
        Some(current)
    })
}

fn depth(rel: &str) -> usize {
    rel.split('/').filter(|c| !c.is_empty()).count()
}

/// The subdirectories of `path`, in name order; none if it vanished.
fn listed_in_order(path: &Path) -> Subdirs {
    let mut listing = Subdirs::read(path).unwrap_or_default();
    listing.sort();
    listing
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;
    use crate::host::cgroup::Cgroup2;

    #[test]
    fn path_helpers() {
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(is_within("/a", "/"));
        assert!(!is_within("/ab", "/a"));
        assert!(!is_within("/a", "/a/b"));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert_eq!(depth("/"), 0);
        assert_eq!(depth("/a/b"), 2);
        assert_eq!(ancestors("/").count(), 0);
        assert_eq!(ancestors("/a").collect::<Vec<_>>(), ["/"]);
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), ["/a/b", "/a", "/"]);
        assert_eq!(proper_ancestors("/a/b"), ["/a", "/"]);
        assert_eq!(path_key("/a/b"), path_key("/a/b"));
        assert_ne!(path_key("/a/b"), path_key("/a/c"));
    }

    /// A directory to play in: a tempdir standing in for cgroupfs, or a
    /// unique cgroup on the real hierarchy, removed deepest-first on drop
    /// (even when the test panics: cgroups outlive processes).
    struct Playground {
        mount: PathBuf,
        /// Relative to `mount`.
        base: String,
        _tempdir: Option<tempfile::TempDir>,
    }

    static NEXT: AtomicUsize = AtomicUsize::new(0);

    impl Playground {
        fn tempdir() -> Self {
            Self::in_tempdir(tempfile::tempdir().unwrap())
        }

        /// In memory when possible: the flood of the overflow test takes
        /// seconds on a disk file system.
        fn in_memory() -> Self {
            let shm = Path::new("/dev/shm");
            let dir = if shm.is_dir() {
                tempfile::tempdir_in(shm)
            } else {
                tempfile::tempdir()
            };
            Self::in_tempdir(dir.unwrap())
        }

        fn in_tempdir(dir: tempfile::TempDir) -> Self {
            let base = "/base".to_string();
            fs::create_dir(dir.path().join("base")).unwrap();
            Self {
                mount: dir.path().to_path_buf(),
                base,
                _tempdir: Some(dir),
            }
        }

        /// `None` (with a note) when not root or without cgroup2.
        fn cgroupfs(test: &str) -> Option<Self> {
            if !crate::test_support::root_or_skip(&format!("{test} on cgroupfs")) {
                return None;
            }
            let Ok(cgroup2) = Cgroup2::find() else {
                eprintln!("skipping {test} on cgroupfs: no cgroup2 mounted");
                return None;
            };
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let base = format!("/mif-watch-{}-{n}", std::process::id());
            let mount = cgroup2.mount().to_path_buf();
            fs::create_dir(mount.join(&base[1..])).unwrap();
            Some(Self {
                mount,
                base,
                _tempdir: None,
            })
        }

        fn rel(&self, sub: &str) -> String {
            if sub.is_empty() {
                self.base.clone()
            } else {
                format!("{}/{sub}", self.base)
            }
        }

        fn path(&self, sub: &str) -> PathBuf {
            self.mount.join(&self.rel(sub)[1..])
        }

        fn mkdir(&self, sub: &str) {
            fs::create_dir_all(self.path(sub)).unwrap();
        }

        fn rmdir(&self, sub: &str) {
            fs::remove_dir(self.path(sub)).unwrap();
        }
    }

    impl Drop for Playground {
        fn drop(&mut self) {
            // cgroupfs refuses to remove a cgroup with children (and its
            // files cannot be removed at all), so deepest first, dirs only.
            let mut dirs = Vec::new();
            let mut stack = vec![self.path("")];
            while let Some(dir) = stack.pop() {
                for (name, _) in listed_in_order(&dir).iter() {
                    stack.push(dir.join(name));
                }
                dirs.push(dir);
            }
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for dir in dirs {
                if let Err(e) = fs::remove_dir(&dir) {
                    if self._tempdir.is_none() {
                        eprintln!("cannot remove test cgroup {}: {e}", dir.display());
                    }
                }
            }
        }
    }

    /// Collects events until `want` have all been seen (in that order among
    /// themselves), or panics after a second without progress.
    async fn expect(w: &mut CgroupWatcher, want: &[CgroupEvent]) -> Vec<CgroupEvent> {
        let mut seen = Vec::new();
        let mut next_wanted = 0;
        while next_wanted < want.len() {
            let event = tokio::time::timeout(Duration::from_secs(1), w.next())
                .await
                .unwrap_or_else(|_| panic!("timed out; wanted {want:?}, saw {seen:?}"))
                .expect("watcher ended");
            if event == want[next_wanted] {
                next_wanted += 1;
            }
            seen.push(event);
        }
        seen
    }

    /// Asserts nothing more comes for a short while.
    async fn quiet(w: &mut CgroupWatcher) {
        if let Ok(event) = tokio::time::timeout(Duration::from_millis(200), w.next()).await {
            panic!("unexpected event {event:?}");
        }
    }

    fn created(s: String) -> CgroupEvent {
        CgroupEvent::Created(s)
    }

    fn removed(s: String) -> CgroupEvent {
        CgroupEvent::Removed(s)
    }

    /// Nested directories made faster than the watcher adds watches are all
    /// reported, once each, parents first; removals children first.
    async fn nested(pg: Playground) {
        let mut w = CgroupWatcher::new(&pg.mount, [&pg.base]).unwrap();
        pg.mkdir("a/b/c");
        let want = [
            created(pg.rel("a")),
            created(pg.rel("a/b")),
            created(pg.rel("a/b/c")),
        ];
        assert_eq!(expect(&mut w, &want).await, want);
        quiet(&mut w).await;
        pg.rmdir("a/b/c");
        assert_eq!(
            expect(&mut w, &[removed(pg.rel("a/b/c"))]).await,
            [removed(pg.rel("a/b/c"))]
        );
        pg.rmdir("a/b");
        pg.rmdir("a");
        let want = [removed(pg.rel("a/b")), removed(pg.rel("a"))];
        assert_eq!(expect(&mut w, &want).await, want);
        quiet(&mut w).await;
        // 3 watches at most while they lived; back to the root and its parent.
        assert_eq!(w.watch_count(), 2, "{w:?}");
    }

    /// A root that does not exist yet is noticed when it appears; its
    /// ancestors and siblings are not reported.
    async fn pending_root(pg: Playground) {
        let root = pg.rel("x/y");
        let mut w = CgroupWatcher::new(&pg.mount, [&root]).unwrap();
        pg.mkdir("other/deeper");
        pg.mkdir("x/sibling");
        pg.mkdir("x/y/z");
        let want = [created(root.clone()), created(pg.rel("x/y/z"))];
        assert_eq!(expect(&mut w, &want).await, want);
        quiet(&mut w).await;
        // The root goes and comes back.
        pg.rmdir("x/y/z");
        pg.rmdir("x/y");
        let want = [removed(pg.rel("x/y/z")), removed(root.clone())];
        assert_eq!(expect(&mut w, &want).await, want);
        pg.mkdir("x/y");
        assert_eq!(
            expect(&mut w, &[created(root.clone())]).await,
            [created(root.clone())]
        );
        // The way down goes and comes back.
        pg.rmdir("x/y");
        pg.rmdir("x/sibling");
        pg.rmdir("x");
        assert_eq!(
            expect(&mut w, &[removed(root.clone())]).await,
            [removed(root.clone())]
        );
        pg.mkdir("x/y");
        assert_eq!(
            expect(&mut w, &[created(root.clone())]).await,
            [created(root)]
        );
        quiet(&mut w).await;
    }

    /// What existed at creation is the caller's to walk; only changes come.
    async fn existing_not_reported(pg: Playground) {
        pg.mkdir("old/older");
        let mut w = CgroupWatcher::new(&pg.mount, [&pg.base]).unwrap();
        quiet(&mut w).await;
        pg.rmdir("old/older");
        assert_eq!(
            expect(&mut w, &[removed(pg.rel("old/older"))]).await,
            [removed(pg.rel("old/older"))]
        );
        pg.mkdir("old/newer");
        assert_eq!(
            expect(&mut w, &[created(pg.rel("old/newer"))]).await,
            [created(pg.rel("old/newer"))]
        );
    }

    /// A rename is a removal of the old subtree and a creation of the new.
    /// cgroup2 refuses renames (see `cgroupfs_refuses_renames`); a directory
    /// tree can do it.
    async fn renamed(pg: Playground) {
        pg.mkdir("old/child");
        let mut w = CgroupWatcher::new(&pg.mount, [&pg.base]).unwrap();
        fs::rename(pg.path("old"), pg.path("new")).unwrap();
        let want = [
            removed(pg.rel("old/child")),
            removed(pg.rel("old")),
            created(pg.rel("new")),
            created(pg.rel("new/child")),
        ];
        assert_eq!(expect(&mut w, &want).await, want);
        // The moved directories are watched under their new names.
        pg.mkdir("new/child/grandchild");
        let want = [created(pg.rel("new/child/grandchild"))];
        assert_eq!(expect(&mut w, &want).await, want);
        quiet(&mut w).await;
    }

    /// An exact cgroup is reported when it comes and goes (also when its
    /// parents come later), and nothing below it is watched or reported.
    async fn exact_cgroup(pg: Playground) {
        let exact = pg.rel("svc/app");
        let mut w =
            CgroupWatcher::with_exact(&pg.mount, std::iter::empty::<&str>(), [&exact]).unwrap();
        pg.mkdir("svc/app/child");
        pg.mkdir("svc/other");
        assert_eq!(
            expect(&mut w, &[created(exact.clone())]).await,
            [created(exact.clone())]
        );
        quiet(&mut w).await;
        let watches = w.watch_count();
        pg.mkdir("svc/app/child/deeper");
        quiet(&mut w).await;
        assert_eq!(w.watch_count(), watches, "nothing below an exact cgroup");
        pg.rmdir("svc/app/child/deeper");
        pg.rmdir("svc/app/child");
        pg.rmdir("svc/app");
        assert_eq!(
            expect(&mut w, &[removed(exact.clone())]).await,
            [removed(exact.clone())]
        );
        pg.mkdir("svc/app");
        assert_eq!(
            expect(&mut w, &[created(exact.clone())]).await,
            [created(exact)]
        );
        quiet(&mut w).await;
    }

    /// A directory on the way to an exact cgroup renamed away takes the
    /// exact cgroup with it, without an event of the cgroup's own: the
    /// watcher, which knows exact cgroups by key only, asks for a rescan;
    /// the name made again is reported again. (Not on cgroupfs, which
    /// refuses to rename a cgroup with children: EPERM.)
    async fn exact_cgroup_moved_away(pg: Playground) {
        let exact = pg.rel("svc/app");
        pg.mkdir("svc/app");
        let mut w =
            CgroupWatcher::with_exact(&pg.mount, std::iter::empty::<&str>(), [&exact]).unwrap();
        fs::rename(pg.path("svc"), pg.path("gone")).unwrap();
        assert_eq!(
            expect(&mut w, &[CgroupEvent::Rescan]).await,
            [CgroupEvent::Rescan]
        );
        pg.mkdir("svc/app");
        assert_eq!(
            expect(&mut w, &[created(exact.clone())]).await,
            [created(exact)]
        );
        quiet(&mut w).await;
    }

    #[tokio::test]
    async fn exact_cgroup_moved_away_on_a_plain_directory() {
        exact_cgroup_moved_away(Playground::tempdir()).await;
    }

    #[tokio::test]
    async fn exact_cgroup_on_a_plain_directory() {
        exact_cgroup(Playground::tempdir()).await;
    }

    #[tokio::test]
    async fn exact_cgroup_on_cgroupfs() {
        if let Some(pg) = Playground::cgroupfs("exact_cgroup_on_cgroupfs") {
            exact_cgroup(pg).await;
        }
    }

    #[tokio::test]
    async fn nested_on_a_plain_directory() {
        nested(Playground::tempdir()).await;
    }

    #[tokio::test]
    async fn pending_root_on_a_plain_directory() {
        pending_root(Playground::tempdir()).await;
    }

    #[tokio::test]
    async fn existing_not_reported_on_a_plain_directory() {
        existing_not_reported(Playground::tempdir()).await;
    }

    #[tokio::test]
    async fn renamed_on_a_plain_directory() {
        renamed(Playground::tempdir()).await;
    }

    #[tokio::test]
    async fn nested_on_cgroupfs() {
        if let Some(pg) = Playground::cgroupfs("nested_on_cgroupfs") {
            nested(pg).await;
        }
    }

    #[tokio::test]
    async fn pending_root_on_cgroupfs() {
        if let Some(pg) = Playground::cgroupfs("pending_root_on_cgroupfs") {
            pending_root(pg).await;
        }
    }

    #[tokio::test]
    async fn existing_not_reported_on_cgroupfs() {
        if let Some(pg) = Playground::cgroupfs("existing_not_reported_on_cgroupfs") {
            existing_not_reported(pg).await;
        }
    }

    /// Why the watcher needs no rename handling on the real hierarchy: the
    /// kernel allows renames only on cgroup v1 (cgroup_rename: EPERM on the
    /// default hierarchy).
    #[test]
    fn cgroupfs_refuses_renames() {
        let Some(pg) = Playground::cgroupfs("cgroupfs_refuses_renames") else {
            return;
        };
        pg.mkdir("old");
        let err = fs::rename(pg.path("old"), pg.path("new")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    }

    /// More events than the kernel queues (fs.inotify.max_queued_events)
    /// give one Rescan, after which the watches still work. Plain files make
    /// the events: cgroupfs allows no files, and they cost no watches.
    #[tokio::test]
    async fn overflow_asks_for_a_rescan() {
        let pg = Playground::in_memory();
        let mut w = CgroupWatcher::new(&pg.mount, [&pg.base]).unwrap();
        let max: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(16384);
        if max > 200_000 {
            eprintln!("skipping overflow test: max_queued_events is {max}");
            return;
        }
        // Create and delete alternate, so the kernel cannot merge them.
        let file = pg.path("f");
        for _ in 0..=max / 2 {
            fs::write(&file, "").unwrap();
            fs::remove_file(&file).unwrap();
        }
        pg.mkdir("lost/in/the/flood");
        let mut saw_rescan = false;
        loop {
            match tokio::time::timeout(Duration::from_millis(300), w.next()).await {
                Ok(Some(CgroupEvent::Rescan)) => saw_rescan = true,
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        assert!(saw_rescan);
        // The rescan watched what the flood hid.
        pg.mkdir("lost/in/the/flood/after");
        let want = [created(pg.rel("lost/in/the/flood/after"))];
        assert_eq!(expect(&mut w, &want).await, want);
    }

    #[tokio::test]
    async fn roots_are_checked_and_normalized() {
        let pg = Playground::tempdir();
        let err = CgroupWatcher::new(&pg.mount, ["/a/../b"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cgroup watch root \"/a/../b\" has a . or .. component; name cgroups from the root"
        );
        let w = CgroupWatcher::new(&pg.mount, ["base//", "/base"]).unwrap();
        assert_eq!(w.roots(), ["/base"]);
    }

    #[test]
    fn needs_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            CgroupWatcher::new(dir.path(), ["/"]),
            Err(WatchError::Runtime(_))
        ));
    }
}
