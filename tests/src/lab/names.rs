//! Names of the things a lab creates in shared, system-wide places
//! (`/run/netns`, the cgroup2 tree).
//!
//! Labs run in parallel, both as threads of one test binary and as separate
//! test binaries, so every name carries the pid (unique among live
//! processes) and a process-wide counter (unique within the process).

use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// The names of one lab's shared objects.
#[derive(Debug, Clone)]
pub(crate) struct LabNames {
    /// `mif{pid}x{n}`: short, because network namespace names show up in
    /// `ip netns` listings and error messages.
    stem: String,
}

impl LabNames {
    pub(crate) fn next() -> Self {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        Self {
            stem: format!("mif{}x{n}", std::process::id()),
        }
    }

    /// The namespace that plays the machine mif runs on.
    pub(crate) fn host_ns(&self) -> String {
        format!("{}h", self.stem)
    }

    /// The namespace that plays the router of network `i`.
    pub(crate) fn router_ns(&self, i: usize) -> String {
        format!("{}r{i}", self.stem)
    }

    /// An extra namespace of a scenario, told apart by `tag` (which must
    /// not look like `r<digits>`, the routers' names).
    pub(crate) fn extra_ns(&self, tag: &str) -> String {
        format!("{}{tag}", self.stem)
    }

    /// The lab's own cgroup, directly under the cgroup2 mount.
    pub(crate) fn cgroup(&self) -> String {
        format!("mif-test-{}", self.stem.trim_start_matches("mif"))
    }
}
