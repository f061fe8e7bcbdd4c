//! Who a hook runs for: this instance's settings, whether the socket is in
//! its network namespace, and the policy of the current process, shared by
//! every program.
use aya_ebpf::{
    bindings::__sk_buff,
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_task_btf,
        bpf_get_netns_cookie, bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id,
    },
};
use mif_common::{Policy, Settings, TaskLayout, MAX_CGROUP_DEPTH};

use crate::maps::POLICIES;

/// Set by the loader before the programs are loaded (read-only data).
#[unsafe(no_mangle)]
static MIF_SETTINGS: Settings = Settings {
    netns_cookie: 0,
    mark_mask: 0,
    mark_shift: 0,
    attach_level: 0,
    _pad: 0,
    attach_cgroup_id: 0,
};

/// Set by the loader from the kernel's BTF (read-only data; see
/// [`TaskLayout`]).
#[unsafe(no_mangle)]
static MIF_TASK_LAYOUT: TaskLayout = TaskLayout {
    ready: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kn_id: 0,
    task_nsproxy: 0,
    nsproxy_net_ns: 0,
    net_cookie: 0,
};

#[inline(always)]
fn task_layout() -> TaskLayout {
    // Volatile as `settings`: the loader patches the real offsets in.
    unsafe { core::ptr::read_volatile(&MIF_TASK_LAYOUT) }
}

/// The word of type `T` at `offset` bytes into the kernel object at
/// `base`. For a pointer from `bpf_get_current_task_btf` and the pointers
/// read through it, the verifier checks each such read against the
/// kernel's BTF (an offset that is no field of the right size is refused
/// at load), and the JIT makes it a plain load that cannot fault.
#[inline(always)]
unsafe fn field<T: Copy>(base: *const u8, offset: u32) -> T {
    unsafe { *base.add(offset as usize).cast::<T>() }
}

/// The current task, read through the kernel's BTF where the loader found
/// the layout (`MIF_TASK_LAYOUT`), else through helpers. Fetched once per
/// program: `sock_create` reads both the namespace and the cgroup through
/// it, and on the kernels mif targets `bpf_get_current_task_btf` is a
/// helper call (x86-64 JITs inline it only in later kernels), dear where
/// every return is (docs/benchmarks.md).
#[derive(Clone, Copy)]
pub struct CurrentTask {
    layout: TaskLayout,
    /// Null when the layout is unknown.
    task: *const u8,
}

impl CurrentTask {
    #[inline(always)]
    pub fn get() -> Self {
        let layout = task_layout();
        let task = if layout.ready == 0 {
            core::ptr::null()
        } else {
            unsafe { bpf_get_current_task_btf() as *const u8 }
        };
        Self { layout, task }
    }

    /// The task's cgroup2 id, as `bpf_get_current_cgroup_id` gives it
    /// (`task->cgroups->dfl_cgrp->kn->id`), read with four loads where the
    /// kernel's BTF says where: the helper took 49 of `sock_create`'s 288
    /// ns on the bench machine (docs/benchmarks.md), its call and return
    /// dearer than the pointers it follows. The walk is what the helper
    /// does, under the same RCU protection (the hooks run in an RCU read
    /// section), and the verifier trusts `cgroups` and `dfl_cgrp` there.
    #[inline(always)]
    pub fn cgroup_id(&self) -> u64 {
        if self.task.is_null() {
            return unsafe { bpf_get_current_cgroup_id() };
        }
        let layout = &self.layout;
        unsafe {
            let css_set: *const u8 = field(self.task, layout.task_cgroups);
            let cgroup: *const u8 = field(css_set, layout.css_set_dfl_cgrp);
            let kn: *const u8 = field(cgroup, layout.cgroup_kn);
            field(kn, layout.kn_id)
        }
    }

    /// [`in_managed_netns`] for a socket being created: `socket()` makes it
    /// in the calling task's namespace (`current->nsproxy->net_ns`; sockets
    /// the kernel makes for itself never reach the hook), so its cookie is
    /// read from there with three loads where the kernel's BTF says where,
    /// instead of a `bpf_get_netns_cookie` call (29 ns on the bench
    /// machine).
    #[inline(always)]
    pub fn creates_in_managed_netns<C>(&self, ctx: *mut C, settings: &Settings) -> bool {
        if self.task.is_null() {
            return in_managed_netns(ctx, settings);
        }
        let layout = &self.layout;
        unsafe {
            let nsproxy: *const u8 = field(self.task, layout.task_nsproxy);
            let net: *const u8 = field(nsproxy, layout.nsproxy_net_ns);
            field::<u64>(net, layout.net_cookie) == settings.netns_cookie
        }
    }

    /// [`find_policy`] for this task.
    #[inline(always)]
    pub fn policy(&self, attach_level: u32) -> Option<&'static Policy> {
        find_policy_of(
            self.cgroup_id(),
            |level| unsafe { bpf_get_current_ancestor_cgroup_id(level) },
            attach_level,
        )
    }
}

#[inline(always)]
pub fn settings() -> Settings {
    // Volatile so the compiler does not fold the zero initialiser: the real
    // values are patched into .rodata at load time.
    unsafe { core::ptr::read_volatile(&MIF_SETTINGS) }
}

/// Whether the hook runs for a socket of the network namespace this
/// instance manages. Policies apply only there: a process of a steered
/// cgroup inside a container with a namespace of its own is left alone,
/// since the marks, rules and addresses mif set up belong to this one.
/// `ctx` is the program's context (`bpf_sock`, `bpf_sock_addr` or
/// `bpf_sockopt`), for each of which the kernel reports the socket's
/// namespace.
#[inline(always)]
pub fn in_managed_netns<C>(ctx: *mut C, settings: &Settings) -> bool {
    unsafe { bpf_get_netns_cookie(ctx.cast()) == settings.netns_cookie }
}

/// The policy of the deepest cgroup, from the process's own up to the cgroup
/// the programs are attached to, that has one. Walking ancestors (rather than
/// copying policies onto every descendant) covers cgroups created later with
/// no window.
///
/// This runs for every socket, so it spends few helper calls: first the
/// process's own cgroup (policies usually sit on a service's or a
/// container's own cgroup: one helper call and one lookup); otherwise the
/// ancestors from the attach level down to the process's own level (the
/// helper returns 0 below it), keeping the deepest policy found. At 568bf58
/// the walk went the other way, from `MAX_CGROUP_DEPTH` up, and spent most
/// of its calls on levels the process does not have; a binary search for
/// the process's level (f760c14) made the verifier explore every depth
/// separately and tripled the programs' load time (see docs/benchmarks.md).
#[inline(always)]
pub fn find_policy(attach_level: u32) -> Option<&'static Policy> {
    CurrentTask::get().policy(attach_level)
}

/// [`find_policy`] for the cgroup `own` whose ancestor at each level
/// `ancestor` gives (0 below `own`'s level): the calling process's in the
/// socket hooks, the socket's in the packet guard (see [`crate::guard`]),
/// which does not run for the socket's owner.
#[inline(always)]
pub fn find_policy_of(
    own: u64,
    ancestor: impl Fn(i32) -> u64,
    attach_level: u32,
) -> Option<&'static Policy> {
    if let Some(policy) = unsafe { POLICIES.get(own) } {
        return Some(policy);
    }
    let mut deepest = None;
    let mut level = attach_level;
    while level < MAX_CGROUP_DEPTH {
        // 0 below the cgroup's own level: nothing deeper to find.
        let id = ancestor(level as i32);
        if id == 0 || id == own {
            break;
        }
        if let Some(policy) = unsafe { POLICIES.get(id) } {
            deepest = Some(policy);
        }
        level += 1;
    }
    deepest
}

/// The policy of the socket a packet belongs to (where the socket was
/// created; at egress the running task may be anyone), for the guards.
#[inline(always)]
pub fn socket_policy(skb: *mut __sk_buff, attach_level: u32) -> Option<&'static Policy> {
    find_policy_of(
        unsafe { bpf_skb_cgroup_id(skb) },
        |level| unsafe { bpf_skb_ancestor_cgroup_id(skb, level) },
        attach_level,
    )
}

/// The current process's policy when it is strict.
#[inline(always)]
pub fn strict_policy(settings: &Settings) -> Option<&'static Policy> {
    find_policy(settings.attach_level).filter(|p| p.is_strict())
}
