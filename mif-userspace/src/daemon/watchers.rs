//! When the cgroup watchers (mif-ebpf's `cgroup_naming`) are attached: with
//! the first `unit`, `app` or `user` policy the kernel can match, not
//! before. Without selectors they have nothing to do, and what they need
//! costs start-up time and memory: the kernel's structure layouts come
//! from parsing its whole BTF (about 0.1 s of CPU and 40 MiB at the peak)
//! and the verifier spends some 40 ms on the two programs. An instance
//! whose config has selectors parses the BTF on a thread of its own at
//! start, while the hooks load; one that gains its first selector later
//! (`mif policy set --unit ...`, a reload, the policies directory) parses
//! it then, once.
use std::thread::JoinHandle;

use log::info;

use super::steering::Steering;
use crate::{
    apply::cgroup_layout::{KernelLayout, LayoutError},
    reconcile::Reconciler,
};

type Layout = Result<KernelLayout, LayoutError>;

/// Where the watchers stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatcherState {
    /// No policy needs them yet.
    NotNeeded,
    Attached,
    /// They cannot run here: why (shown by `mif status`).
    LeftOut(String),
}

pub struct CgroupWatchers {
    /// The layouts being read at start, when the config had selectors.
    early: Option<JoinHandle<Layout>>,
    pub state: WatcherState,
}

impl CgroupWatchers {
    /// Starts reading the kernel's layouts now when `selectors_expected`
    /// (the config names selectors), so that it overlaps the verifier.
    pub fn new(selectors_expected: bool) -> Self {
        Self {
            early: selectors_expected.then(|| std::thread::spawn(KernelLayout::of_running_kernel)),
            state: WatcherState::NotNeeded,
        }
    }

    /// Attaches the watchers if the policies in force have selectors the
    /// kernel can match and they are not attached (or left out) yet. Run
    /// after a pass, so the selector map is filled. At start, watchers a
    /// previous daemon left pinned are removed while no selector needs
    /// them (`first`), since they would run at every `mkdir` for nothing.
    pub fn follow(&mut self, reconciler: &Reconciler, steering: &mut Steering, first: bool) {
        if self.state != WatcherState::NotNeeded {
            return;
        }
        let state = reconciler.policy_state();
        if state.selectors().is_empty() {
            if first {
                steering.detach_watchers();
            }
            return;
        }
        let layout = match self.early.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(LayoutError::Parse("panicked".into()))),
            None => KernelLayout::of_running_kernel(),
        };
        let naming = layout.map(|layout| layout.naming(&state.attach));
        self.state = match steering.attach_watchers(naming) {
            None => {
                info!("cgroup watchers attached: new cgroups get their selector's policy as they are made");
                WatcherState::Attached
            }
            Some(why) => WatcherState::LeftOut(why),
        };
    }
}
