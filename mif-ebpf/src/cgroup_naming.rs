//! Policies for cgroups the moment they are made, by their names.
//!
//! A `unit`, `app` or `user` selector names cgroups that may not exist yet:
//! a desktop starts each application in a new transient unit, systemd
//! starts a service in a new cgroup. The daemon's watcher sees such a
//! cgroup through inotify and writes its policy, but systemd moves the
//! first process in right after `mkdir`, and a process that opens a socket
//! as its very first act can beat the daemon. So the kernel gives the
//! cgroup its policy itself, inside `mkdir`, before the call returns and
//! before any process can be moved in: a raw tracepoint on `cgroup_mkdir`
//! reads the new cgroup's name, derives the keys it could be selected by
//! ([`SelectorKey`]: the name for `unit`, the name below `user.slice` for
//! `user`, the application id in it for `app`, exactly as the daemon's
//! `host::selector` reads names) and copies the policy of the first key
//! found in [`crate::maps::MIF_SELECTORS`] into the policy map.
//! The daemon then finds the same policy for that cgroup when its watcher
//! sees it, and stays the authority: what it writes replaces this.
//!
//! A second raw tracepoint, on `cgroup_rmdir`, drops a removed cgroup's
//! policy entry, so a cgroup made and removed before the daemon looked
//! (a short-lived application) leaves nothing behind.
//!
//! Only cgroup2 cgroups below the attach cgroup are matched: the kernel
//! also reports the cgroup v1 hierarchies of a hybrid mount, whose ids may
//! equal cgroup2 ones. These programs are built without the kernel's
//! headers, so where a `struct cgroup` keeps its id, name, hierarchy and
//! ancestors comes from the kernel's BTF, through the daemon
//! ([`CgroupNaming`]).
//!
//! The verifier: every loop here is short and keeps what it finds in
//! memory (see [`Scratch::found`]); names are read from the kernel's
//! structures, never by scanning a path (a first version scanned the
//! 1024-byte path the tracepoint gives and the verifier gave up on it).
//!
//! Cost: nothing on any socket path; one run per cgroup made or removed
//! on the host: a few reads of kernel memory and up to three lookups.
//!
//! Minimum kernel: 6.1 (`struct cgroup`'s `ancestors`, and
//! `BPF_F_NO_PREALLOC` maps in tracing programs); `cgroup_mkdir` is a
//! tracepoint since 4.13, raw tracepoints are 4.17.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
        generated::bpf_probe_read_kernel as probe_read_into,
    },
    programs::RawTracePointContext,
};
use core::ptr::{read_volatile, write_volatile};
use mif_common::{
    CgroupNaming, Policy, SelectorKey, SELECTOR_APP, SELECTOR_NAME_MAX, SELECTOR_UNIT,
    SELECTOR_USER,
};

use crate::maps::{CG_NAMING, CG_SCRATCH, POLICIES, SELECTORS};

/// A kernfs name is at most 255 bytes; the buffer is a power of two, so a
/// masked index is in bounds for the verifier.
const NAME_BUF: usize = 256;
const NAME_MASK: usize = NAME_BUF - 1;
/// The parent a `user` selector's cgroup has.
const USER_SLICE: &[u8] = b"user.slice";

/// The watchers' working memory (per CPU, see `maps::MIF_CG_SCRATCH`).
#[repr(C)]
pub struct Scratch {
    name: [u8; NAME_BUF],
    parent: [u8; NAME_BUF],
    key: SelectorKey,
    /// Lengths and what the app-id scan finds, in memory rather than in
    /// registers. A value in a register that a loop compares against
    /// comes out of the loop with a range that differs at each step it
    /// may leave by, and the verifier then walks the rest of the program
    /// once per step; read back from memory a value is just a number and
    /// every exit looks alike. Volatile, so the compiler keeps them there.
    found: [u32; FOUND],
}

/// Slots of [`Scratch::found`].
const LEN: usize = 0;
const DASHES: usize = 1;
const FIRST_DASH: usize = 2;
const SECOND_DASH: usize = 3;
const DOTTED: usize = 4;
const NAMED_END: usize = 5;
const BODY_END: usize = 6;
const COPY_LEN: usize = 7;
const FOUND: usize = 8;

impl Scratch {
    #[inline(always)]
    fn get(&self, slot: usize) -> usize {
        unsafe { read_volatile(&self.found[slot]) as usize }
    }
    #[inline(always)]
    fn set(&mut self, slot: usize, value: usize) {
        unsafe { write_volatile(&mut self.found[slot], value as u32) }
    }
    #[inline(always)]
    fn at(&self, i: usize) -> u8 {
        self.name[i & NAME_MASK]
    }
}

/// `cgroup_mkdir(struct cgroup *cgrp, const char *path)`.
#[inline(always)]
pub fn on_mkdir(ctx: &RawTracePointContext) {
    let _ = try_mkdir(ctx);
}

/// `cgroup_rmdir(struct cgroup *cgrp, const char *path)`.
#[inline(always)]
pub fn on_rmdir(ctx: &RawTracePointContext) {
    let _ = try_rmdir(ctx);
}

/// The tracepoint's cgroup (`struct cgroup *`) and its kernfs node, when
/// the watchers are set up and it is a cgroup2 one.
#[inline(always)]
fn cgroup2_of(ctx: &RawTracePointContext) -> Option<(&'static CgroupNaming, u64, u64)> {
    let naming = CG_NAMING.get(0)?;
    if naming.ready == 0 {
        return None;
    }
    let cgrp: u64 = ctx.arg(0);
    let kn = cgroup2_kn(cgrp, naming)?;
    Some((naming, cgrp, kn))
}

fn try_mkdir(ctx: &RawTracePointContext) -> Option<()> {
    let (naming, cgrp, kn) = cgroup2_of(ctx)?;
    if !below_attach(cgrp, naming)? {
        return None;
    }
    let id: u64 = read(kn + naming.kn_id as u64)?;
    let scratch = unsafe { &mut *CG_SCRATCH.get_ptr_mut(0)? };
    let name: u64 = read(kn + naming.kn_name as u64)?;
    let len = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut scratch.name) }
        .ok()?
        .len();
    scratch.set(LEN, len);
    let policy = selected_policy(scratch, kn, naming)?;
    POLICIES.insert(id, policy, BPF_NOEXIST as u64).ok()
}

fn try_rmdir(ctx: &RawTracePointContext) -> Option<()> {
    let (naming, _, kn) = cgroup2_of(ctx)?;
    let id: u64 = read(kn + naming.kn_id as u64)?;
    POLICIES.remove(id).ok()
}

/// The kernfs node of the cgroup at `cgrp`, when it is a cgroup2 one.
#[inline(always)]
fn cgroup2_kn(cgrp: u64, naming: &CgroupNaming) -> Option<u64> {
    let root: u64 = read(cgrp + naming.cgroup_root as u64)?;
    let hierarchy: i32 = read(root + naming.root_hierarchy_id as u64)?;
    if hierarchy != 0 {
        return None;
    }
    read(cgrp + naming.cgroup_kn as u64)
}

/// Whether the cgroup at `cgrp` is strictly below the attach cgroup: its
/// ancestor at the attach level is the attach cgroup.
#[inline(always)]
fn below_attach(cgrp: u64, naming: &CgroupNaming) -> Option<bool> {
    let level: i32 = read(cgrp + naming.cgroup_level as u64)?;
    if level <= naming.attach_level as i32 {
        return Some(false);
    }
    let slot = naming.cgroup_ancestors as u64 + 8 * naming.attach_level as u64;
    let ancestor: u64 = read(cgrp + slot)?;
    let kn: u64 = read(ancestor + naming.cgroup_kn as u64)?;
    let id: u64 = read(kn + naming.kn_id as u64)?;
    Some(id == naming.attach_id)
}

#[inline(always)]
fn read<T>(address: u64) -> Option<T> {
    unsafe { bpf_probe_read_kernel(address as *const T) }.ok()
}

/// The policy of the first selector the new cgroup's name has: its unit
/// name, its user slice, its application id.
#[inline(always)]
fn selected_policy(scratch: &mut Scratch, kn: u64, naming: &CgroupNaming) -> Option<Policy> {
    if let Some(policy) = lookup(scratch, SELECTOR_UNIT, 0, scratch.get(LEN)) {
        return Some(policy);
    }
    if parent_is_user_slice(scratch, kn, naming) {
        if let Some(policy) = lookup(scratch, SELECTOR_USER, 0, scratch.get(LEN)) {
            return Some(policy);
        }
    }
    let (start, end) = app_id(scratch)?;
    lookup(scratch, SELECTOR_APP, start, end)
}

/// Whether the kernfs node `kn`'s parent is named `user.slice`.
#[inline(always)]
fn parent_is_user_slice(scratch: &mut Scratch, kn: u64, naming: &CgroupNaming) -> bool {
    let Some(parent) = read::<u64>(kn + naming.kn_parent as u64) else {
        return false;
    };
    let Some(name) = read::<u64>(parent + naming.kn_name as u64) else {
        return false;
    };
    let read = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut scratch.parent) };
    read.is_ok_and(|name| name == USER_SLICE)
}

/// The selector's policy for `kind` and the name's bytes `start..end`.
#[inline(always)]
fn lookup(scratch: &mut Scratch, kind: u8, start: usize, end: usize) -> Option<Policy> {
    if end <= start || end - start > SELECTOR_NAME_MAX || start > NAME_MASK {
        return None;
    }
    scratch.set(COPY_LEN, end - start);
    scratch.key.kind = kind;
    scratch.key.name = [0; SELECTOR_NAME_MAX];
    // A copy of bounded length, not a loop: nothing for the verifier to
    // walk through byte by byte. The length is read back and checked just
    // before the call, so the verifier sees the bound on the very value
    // passed (the compiler had it spilled without it).
    let n = scratch.get(COPY_LEN);
    if n > SELECTOR_NAME_MAX {
        return None;
    }
    let from = scratch.name.as_ptr().wrapping_add(start);
    let copied =
        unsafe { probe_read_into(scratch.key.name.as_mut_ptr().cast(), n as u32, from.cast()) };
    if copied != 0 {
        return None;
    }
    let key: &SelectorKey = &scratch.key;
    unsafe { SELECTORS.get(key) }.copied()
}

/// Whether the name's bytes `start..end` end with `suffix`.
#[inline(always)]
fn ends_with(scratch: &Scratch, start: usize, end: usize, suffix: &[u8]) -> bool {
    if end < start + suffix.len() {
        return false;
    }
    let from = end - suffix.len();
    let mut i = 0;
    while i < suffix.len() {
        if scratch.at(from + i) != suffix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Where the application id is in the name, by systemd's desktop naming,
/// as `host::selector::app_id_of` reads it:
/// `app[-<launcher>]-<id>-<random>.scope` (a random part is never dotted,
/// as an id is) or `app[-<launcher>]-<id>[@<random>].service`; neither the
/// launcher nor the id has a `-` (systemd escapes it).
#[inline(always)]
fn app_id(scratch: &mut Scratch) -> Option<(usize, usize)> {
    const BODY: usize = 4;
    let end = scratch.get(LEN);
    if !ends_with(scratch, 0, BODY, b"app-") || end >= NAME_BUF {
        return None;
    }
    let scope = ends_with(scratch, BODY, end, b".scope");
    let body_end = if scope {
        end - 6
    } else if ends_with(scratch, BODY, end, b".service") {
        end - 8
    } else {
        return None;
    };
    // One pass: the dashes (the first two), a dot after the last one, the
    // first `@` (services only).
    scratch.set(DASHES, 0);
    scratch.set(FIRST_DASH, 0);
    scratch.set(SECOND_DASH, 0);
    scratch.set(DOTTED, 0);
    scratch.set(NAMED_END, body_end);
    scratch.set(BODY_END, body_end);
    let mut p = BODY;
    while p < NAME_BUF {
        if p >= body_end {
            break;
        }
        let c = scratch.at(p);
        if !scope && c == b'@' {
            scratch.set(NAMED_END, p);
            break;
        }
        if c == b'-' {
            let dashes = scratch.get(DASHES) + 1;
            scratch.set(DASHES, dashes);
            if dashes == 1 {
                scratch.set(FIRST_DASH, p);
            } else if dashes == 2 {
                scratch.set(SECOND_DASH, p);
            }
            scratch.set(DOTTED, 0);
        } else if c == b'.' {
            scratch.set(DOTTED, 1);
        }
        p += 1;
    }
    let first = scratch.get(FIRST_DASH);
    let second = scratch.get(SECOND_DASH);
    let named_end = scratch.get(NAMED_END);
    let body_end = scratch.get(BODY_END);
    let (id_start, id_end) = if scope {
        let (id, last_dash) = match scratch.get(DASHES) {
            1 => ((BODY, first), first),
            2 => ((first + 1, second), second),
            _ => return None,
        };
        // The random part: not empty, not dotted.
        if scratch.get(DOTTED) != 0 || last_dash + 1 >= body_end {
            return None;
        }
        id
    } else {
        match scratch.get(DASHES) {
            0 => (BODY, named_end),
            1 => (first + 1, named_end),
            _ => return None,
        }
    };
    (id_end > id_start).then_some((id_start, id_end))
}
