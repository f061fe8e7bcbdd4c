//! Loading mif's kernel programs, attaching them to a cgroup2 directory and
//! pinning their links, and taking them down again.
//!
//! Minimum kernel: 6.0. `SO_NETNS_COOKIE` for the namespace check needs
//! 5.14; the hooks themselves need 4.17 for `connect`/`bind`, 4.18 for
//! `sendmsg`, 5.3 for `setsockopt`, 5.7 for bpf_link; the `setsockopt`
//! program's cgroup walk needs 6.0 (see mif-ebpf's crate documentation).
//! The egress guard's namespace check needs 6.15; an older kernel runs
//! everything else, without the guard, and the daemon says so. The TCP
//! health watch (`sock_ops`, the RTO callback) needs 5.15. The cgroup
//! watchers (raw tracepoints) need 6.1 and the kernel's BTF; without them
//! selectors apply when the daemon sees a new cgroup, not at its creation.
use std::{
    fs::File,
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
};

use aya::{
    maps::{Array, MapError},
    programs::{
        links::FdLink, CgroupAttachMode, CgroupSkb, CgroupSock, CgroupSockAddr, CgroupSockopt,
        ProgramError, RawTracePoint, SchedClassifier, SockOps,
    },
    Ebpf, EbpfLoader,
};
use mif_common::{names, CgroupNaming, Settings};

use crate::apply::{
    on_demand::{HookNeeds, OnDemandHooks, Waiting},
    pins::PinDir,
    verify,
};

/// The kernel programs, built by build.rs and embedded so `mif` is one file.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mif-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load mif's eBPF object")]
    Object(#[source] Box<aya::EbpfError>),
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("the kernel refused program {program}:\n{log}")]
    Verifier { program: &'static str, log: String },
    #[error("cannot {action} program {program}")]
    Program {
        program: &'static str,
        action: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("cannot write map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("cannot open cgroup {}", path.display())]
    Cgroup {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot pin the link of {program} at {}", path.display())]
    Pin {
        program: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Loads (verifies) `$prog` unless [`verify::in_parallel`] did already.
macro_rules! load_once {
    ($prog:expr, $program:expr) => {
        if $prog.fd().is_err() {
            $prog.load().map_err(failed($program, "load"))?;
        }
    };
}

/// The sizes of the maps that grow with the policies, set at load (the
/// object's are the largest allowed). A map already pinned keeps its size:
/// see [`crate::apply::kernel_maps::take_counters_if_smaller`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub policies: u32,
    pub counters: u32,
}

impl Capacity {
    /// For an instance starting with `policies` resolved policies, with
    /// room for at least `reserve` (`[limits] policy_capacity`).
    pub fn for_policies(policies: usize, reserve: Option<usize>) -> Self {
        let p = crate::plan::policy_capacity_for(policies.max(reserve.unwrap_or(0).div_ceil(2)));
        Self {
            policies: p as u32,
            counters: crate::plan::counter_capacity_for(p) as u32,
        }
    }
}

/// Loads the programs with this instance's settings. Maps are pinned by name
/// in the pin directory (reused if already there, whatever their size).
pub fn load(settings: &Settings, pins: &PinDir, capacity: Capacity) -> Result<Ebpf, LoadError> {
    let started = std::time::Instant::now();
    let task_layout = crate::apply::kernel_btf::task_layout();
    log::debug!(
        "the kernel's task layout read in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    EbpfLoader::new()
        .override_global(names::GLOBAL_SETTINGS, settings, true)
        .override_global(names::GLOBAL_TASK_LAYOUT, &task_layout, true)
        .map_max_entries(names::MAP_POLICIES, capacity.policies)
        .map_max_entries(names::MAP_COUNTERS, capacity.counters)
        .default_map_pin_directory(pins.maps())
        .load(EBPF_OBJECT)
        .map_err(|e| LoadError::Object(Box::new(e)))
}

/// Verifies and attaches the hooks to `cgroup` and pins each link, so
/// steering outlives this process until the pins are removed. A link pinned
/// by an earlier instance is replaced atomically: the new link is pinned
/// under a staging name and renamed over the old pin, whose link then goes.
/// The guards are not attached here but to strict cgroups, by
/// [`crate::apply::guard_links`]; a guard link an older mif pinned with the
/// hooks is removed once they are in place.
///
/// An on-demand hook ([`names::ON_DEMAND_HOOKS`]) that `needs` does not
/// want is verified but not attached, unless an earlier instance attached
/// it (its link is replaced, as the others'): it is returned, waiting, for
/// the passes to attach when a policy needs it.
pub fn attach(
    ebpf: &mut Ebpf,
    cgroup: &Path,
    pins: &PinDir,
    needs: HookNeeds,
) -> Result<OnDemandHooks, LoadError> {
    let cgroup_fd = open_cgroup(cgroup)?;
    verify::in_parallel(ebpf, &HOOKS_LARGEST_FIRST);
    let mut waiting = Vec::new();
    for program in names::HOOKS {
        let started = std::time::Instant::now();
        if !needs.wants(program) && !pins.link(program).exists() {
            waiting.push(load_waiting(ebpf, program)?);
            continue;
        }
        let link = attach_one(ebpf, program, &cgroup_fd)?;
        pin_in_place(link, program, pins)?;
        // The kernel's walk over every cgroup below the attach point.
        log::debug!(
            "{program}: attached in {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_file(pins.link(names::PROG_GUARD));
    Ok(OnDemandHooks::new(pins.clone(), cgroup_fd, waiting))
}

/// The hooks in the order [`verify::in_parallel`] takes them: by the
/// verifier's time on each (the daemon's debug log), so that no large one
/// starts last while the other threads idle. Only an ordering: a hook
/// missing here is still loaded, by its attach step.
const HOOKS_LARGEST_FIRST: [&str; names::HOOKS.len()] = [
    names::PROG_CONNECT6,
    names::PROG_SENDMSG6,
    names::PROG_SENDMSG4,
    names::PROG_CONNECT4,
    names::PROG_SETSOCKOPT,
    names::PROG_BIND6,
    names::PROG_SOCK_CREATE,
    names::PROG_BIND4,
    names::PROG_GETSOCKOPT,
    names::PROG_TCP_HEALTH,
    names::PROG_RECVMSG4,
    names::PROG_RECVMSG6,
    names::PROG_GETPEER4,
    names::PROG_GETPEER6,
];

/// Attaches (and pins) the on-demand hooks `needs` wants that no earlier
/// instance attached: an adopted instance's first pass may write the first
/// policy that needs them, and runs before [`attach`] replaces the rest.
pub fn attach_new_on_demand(
    ebpf: &mut Ebpf,
    cgroup: &Path,
    pins: &PinDir,
    needs: HookNeeds,
) -> Result<(), LoadError> {
    let new: Vec<&'static str> = (names::ON_DEMAND_HOOKS.into_iter())
        .filter(|program| needs.wants(program) && !pins.link(program).exists())
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let cgroup_fd = open_cgroup(cgroup)?;
    for program in new {
        let link = attach_one(ebpf, program, &cgroup_fd)?;
        pin_in_place(link, program, pins)?;
    }
    Ok(())
}

/// The attach cgroup's directory, to attach hooks to.
fn open_cgroup(cgroup: &Path) -> Result<File, LoadError> {
    File::open(cgroup).map_err(|source| LoadError::Cgroup {
        path: cgroup.to_path_buf(),
        source,
    })
}

/// Verifies an on-demand hook (a `cgroup/sock_addr` program) and keeps its
/// descriptor, to attach later.
fn load_waiting(ebpf: &mut Ebpf, program: &'static str) -> Result<Waiting, LoadError> {
    let attach_type =
        crate::host::attached::attach_type(program).ok_or(LoadError::MissingProgram(program))?;
    let prog: &mut CgroupSockAddr = ebpf
        .program_mut(program)
        .ok_or(LoadError::MissingProgram(program))?
        .try_into()
        .map_err(failed(program, "type-check"))?;
    load_once!(prog, program);
    let fd = (prog.fd().map_err(failed(program, "load"))?.try_clone()).map_err(|e| {
        LoadError::Program {
            program,
            action: "duplicate the descriptor of",
            source: Box::new(ProgramError::IOError(e)),
        }
    })?;
    Ok(Waiting {
        program,
        fd,
        attach_type,
    })
}

/// Pins a link made by [`raw::link_create`] as [`attach`] pins its own.
pub(crate) fn pin_link(
    link: OwnedFd,
    program: &'static str,
    pins: &PinDir,
) -> Result<(), LoadError> {
    pin_in_place(NewLink::Raw(link), program, pins)
}

/// Pins a new link of `program` under a staging name and renames it over
/// the pin of the link it replaces (if any), whose link then goes.
fn pin_in_place(link: NewLink, program: &'static str, pins: &PinDir) -> Result<(), LoadError> {
    let staging = pins.link_staging(program);
    let _ = std::fs::remove_file(&staging);
    link.pin(&staging).map_err(|source| LoadError::Pin {
        program,
        path: staging.clone(),
        source,
    })?;
    let path = pins.link(program);
    std::fs::rename(&staging, &path).map_err(|e| LoadError::Pin {
        program,
        path: path.clone(),
        source: Box::new(e),
    })
}

/// Tells the cgroup watchers what they need to read new cgroups
/// (`naming`), then verifies them, attaches each to its tracepoint and
/// pins its link like the hooks' (replacing an adopted one). Run after the
/// hooks and the first pass: the selector map is filled by then.
pub fn attach_watchers(
    ebpf: &mut Ebpf,
    naming: &CgroupNaming,
    pins: &PinDir,
) -> Result<(), LoadError> {
    let map_failed = |source| LoadError::Map {
        name: names::MAP_CG_NAMING,
        source: Box::new(source),
    };
    let map = ebpf
        .map_mut(names::MAP_CG_NAMING)
        .ok_or(LoadError::MissingMap(names::MAP_CG_NAMING))?;
    let mut map: Array<_, CgroupNaming> = Array::try_from(map).map_err(map_failed)?;
    map.set(0, naming, 0).map_err(map_failed)?;
    for (program, tracepoint) in WATCHED_TRACEPOINTS {
        let prog: &mut RawTracePoint = ebpf
            .program_mut(program)
            .ok_or(LoadError::MissingProgram(program))?
            .try_into()
            .map_err(failed(program, "type-check"))?;
        prog.load().map_err(failed(program, "load"))?;
        let id = prog.attach(tracepoint).map_err(failed(program, "attach"))?;
        let link = prog
            .take_link(id)
            .map_err(failed(program, "take the link of"))?;
        pin_in_place(NewLink::Aya(fd_link(program, link)?), program, pins)?;
    }
    Ok(())
}

/// Each cgroup watcher with the raw tracepoint it is attached to.
const WATCHED_TRACEPOINTS: [(&str, &str); names::CGROUP_WATCHERS.len()] = [
    (names::PROG_CG_MKDIR, "cgroup_mkdir"),
    (names::PROG_CG_RMDIR, "cgroup_rmdir"),
];

/// Removes the cgroup watchers' pins (detaching them), when this daemon
/// cannot run them: an adopted pair must not go on with another
/// instance's settings.
pub fn detach_watchers(pins: &PinDir) {
    for program in names::CGROUP_WATCHERS {
        unpin_link(pins, program);
    }
}

/// Removes `program`'s link pin (and a staging one left by a crash):
/// the program is detached as its last reference goes. Whether a pin was
/// there.
fn unpin_link(pins: &PinDir, program: &str) -> bool {
    let _ = std::fs::remove_file(pins.link_staging(program));
    std::fs::remove_file(pins.link(program)).is_ok()
}

/// A guard program, verified and loaded, ready to be attached to cgroups.
#[derive(Debug)]
pub struct LoadedGuard {
    pub program: &'static str,
    pub fd: aya::programs::ProgramFd,
    /// uapi `enum bpf_attach_type` of its links.
    pub attach_type: u32,
    pub target: GuardTarget,
}

/// uapi `enum bpf_attach_type`.
const BPF_CGROUP_INET_EGRESS: u32 = 1;
pub const BPF_TCX_EGRESS: u32 = 47;

/// What a guard is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardTarget {
    /// Each strict policy's cgroup.
    Cgroups,
    /// Each interface of the namespace but loopback, while strict
    /// policies exist.
    Interfaces,
}

/// Verifies and loads the guards ([`names::GUARDS`]); returns those this
/// kernel runs and, apart, those it cannot (see [`LeftOut`]).
pub fn load_guards(ebpf: &mut Ebpf) -> Result<(Vec<LoadedGuard>, Vec<LeftOut>), LoadError> {
    verify::in_parallel(ebpf, &names::GUARDS);
    let mut loaded = Vec::new();
    let mut left_out = Vec::new();
    for program in names::GUARDS {
        match load_guard(ebpf, program) {
            Ok(guard) => loaded.push(guard),
            Err(LoadError::Verifier { log, .. }) if guard_needs_newer_kernel(&log) => left_out
                .push(LeftOut {
                    program,
                    why: "it needs Linux 6.15 (bpf_get_netns_cookie in packet programs)",
                }),
            Err(e) => return Err(e),
        }
    }
    Ok((loaded, left_out))
}

fn load_guard(ebpf: &mut Ebpf, program: &'static str) -> Result<LoadedGuard, LoadError> {
    let prog = ebpf
        .program_mut(program)
        .ok_or(LoadError::MissingProgram(program))?;
    let (fd, attach_type, target) = if program == names::PROG_PKT_GUARD {
        let prog: &mut SchedClassifier = prog.try_into().map_err(failed(program, "type-check"))?;
        load_once!(prog, program);
        let fd = prog.fd().map_err(failed(program, "load"))?.try_clone();
        (fd, BPF_TCX_EGRESS, GuardTarget::Interfaces)
    } else {
        let prog: &mut CgroupSkb = prog.try_into().map_err(failed(program, "type-check"))?;
        load_once!(prog, program);
        let fd = prog.fd().map_err(failed(program, "load"))?.try_clone();
        (fd, BPF_CGROUP_INET_EGRESS, GuardTarget::Cgroups)
    };
    let fd = fd.map_err(|e| LoadError::Program {
        program,
        action: "duplicate the descriptor of",
        source: Box::new(ProgramError::IOError(e)),
    })?;
    Ok(LoadedGuard {
        program,
        fd,
        attach_type,
        target,
    })
}

/// A program this kernel cannot run, left out by [`load_guards`]. Only the
/// guards may be: without them strict policies are still enforced per
/// socket, as before the guards existed, and steering is whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    pub program: &'static str,
    pub why: &'static str,
}

/// Whether the verifier refused the guard only because this kernel does
/// not offer `cgroup_skb` programs the netns cookie (before 6.15). Any
/// other refusal is a bug and must stop the start, not hide the guard.
fn guard_needs_newer_kernel(verifier_log: &str) -> bool {
    verifier_log.contains("cannot use helper bpf_get_netns_cookie")
}

/// How a failure of `program` at `action` becomes a [`LoadError`]: the
/// verifier's log when it refused, the step that failed otherwise.
fn failed(program: &'static str, action: &'static str) -> impl FnOnce(ProgramError) -> LoadError {
    move |e| match e {
        ProgramError::LoadError { verifier_log, .. } => LoadError::Verifier {
            program,
            log: verifier_log.to_string(),
        },
        e => LoadError::Program {
            program,
            action,
            source: Box::new(e),
        },
    }
}

/// Loads a cgroup program of aya type `$ty`, attaches it to `$cgroup` and
/// takes its link: the aya program types have these methods alike, with
/// no trait to be generic over.
macro_rules! attach_by_aya {
    ($prog:expr, $ty:ty, $program:expr, $cgroup:expr, $mode:expr) => {{
        let prog: &mut $ty = $prog.try_into().map_err(failed($program, "type-check"))?;
        load_once!(prog, $program);
        let id = prog
            .attach($cgroup, $mode)
            .map_err(failed($program, "attach"))?;
        let link = prog
            .take_link(id)
            .map_err(failed($program, "take the link of"))?;
        fd_link($program, link).map(NewLink::Aya)
    }};
}

fn attach_one(ebpf: &mut Ebpf, program: &'static str, cgroup: &File) -> Result<NewLink, LoadError> {
    let prog = ebpf
        .program_mut(program)
        .ok_or(LoadError::MissingProgram(program))?;
    // Single: with bpf_link the other modes are refused (EINVAL), and links
    // stack with other programs on the same cgroup anyway.
    let mode = CgroupAttachMode::Single;
    match kind_of(program) {
        Kind::Sock => attach_by_aya!(prog, CgroupSock, program, cgroup, mode),
        Kind::SockAddr => attach_by_aya!(prog, CgroupSockAddr, program, cgroup, mode),
        Kind::SockOps => attach_by_aya!(prog, SockOps, program, cgroup, mode),
        Kind::Sockopt(attach_type) => {
            // aya 0.14 cannot turn a sockopt program's link into an FdLink
            // (no pinning): aya loads it, the link is made here.
            let prog: &mut CgroupSockopt =
                prog.try_into().map_err(failed(program, "type-check"))?;
            load_once!(prog, program);
            let prog_fd = prog.fd().map_err(failed(program, "attach"))?.as_fd();
            let link = raw::link_create(prog_fd, cgroup.as_fd(), attach_type).map_err(|e| {
                LoadError::Program {
                    program,
                    action: "attach",
                    source: Box::new(ProgramError::IOError(e)),
                }
            })?;
            Ok(NewLink::Raw(link))
        }
    }
}

/// A new link, attached, not pinned yet.
enum NewLink {
    Aya(FdLink),
    Raw(OwnedFd),
}

impl NewLink {
    /// Pins the link at `path`; the pin then keeps it attached.
    fn pin(self, path: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match self {
            NewLink::Aya(link) => link.pin(path).map(drop).map_err(Into::into),
            NewLink::Raw(fd) => raw::obj_pin(fd.as_fd(), path).map_err(Into::into),
        }
    }
}

/// The bpf(2) commands aya does not offer: links of sockopt programs and
/// pins of them (the guards' links use them too, created per cgroup from a
/// program fd), and batch updates of maps.
pub(crate) mod raw {
    use std::{
        ffi::CString,
        io,
        os::{
            fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
            unix::ffi::OsStrExt as _,
        },
        path::Path,
    };

    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    const BPF_LINK_CREATE: libc::c_long = 28;
    /// uapi `enum bpf_attach_type`.
    pub const BPF_CGROUP_GETSOCKOPT: u32 = 21;
    pub const BPF_CGROUP_SETSOCKOPT: u32 = 22;

    /// The `link_create` part of `union bpf_attr`; the zeroed tail stands
    /// for the fields mif does not use (the kernel wants them zero).
    #[repr(C)]
    #[derive(Default)]
    struct LinkCreateAttr {
        prog_fd: u32,
        target_fd: u32,
        attach_type: u32,
        flags: u32,
        _rest: [u64; 4],
    }

    /// The `batch` part of `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }

    /// Writes `keys[i]` → `values[i]` into `map` in one call (Linux 5.6;
    /// hash maps). `K` and `V` must be the map's key and value types,
    /// `repr(C)` without padding the kernel would read. On failure, how
    /// many entries were written (in order) and why the next was not.
    pub fn map_update_batch<K: Copy, V: Copy>(
        map: BorrowedFd<'_>,
        keys: &[K],
        values: &[V],
    ) -> Result<(), (usize, io::Error)> {
        assert_eq!(keys.len(), values.len(), "a value per key");
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: keys.len() as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        match bpf(BPF_MAP_UPDATE_BATCH, &mut attr) {
            Ok(_) => Ok(()),
            // The kernel reports how many it wrote in `count`, but only
            // once it got to the entries: errors before them (a kernel
            // without the command, a refused attribute, no memory) leave
            // the count asked for, and then nothing was written.
            Err(e) => {
                let written = attr.count as usize;
                Err((if written < keys.len() { written } else { 0 }, e))
            }
        }
    }

    /// The `obj_pin` part of `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct ObjPinAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }

    fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
        // SAFETY: attr is a live, fully initialised bpf_attr prefix of the
        // size given; pointers inside it outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                std::ptr::from_mut(attr),
                std::mem::size_of::<T>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc)
    }

    /// Attaches `prog` to the cgroup `target` with a bpf_link (Linux 5.7).
    pub fn link_create(
        prog: BorrowedFd<'_>,
        target: BorrowedFd<'_>,
        attach_type: u32,
    ) -> io::Result<OwnedFd> {
        link_create_raw(prog, target.as_raw_fd() as u32, attach_type)
    }

    /// Attaches `prog` to the interface `ifindex` with a tcx link (Linux
    /// 6.6), after the programs already there (no ordering asked).
    pub fn link_create_tcx(
        prog: BorrowedFd<'_>,
        ifindex: u32,
        attach_type: u32,
    ) -> io::Result<OwnedFd> {
        link_create_raw(prog, ifindex, attach_type)
    }

    /// `target` is a cgroup fd or an ifindex: the same field of the union.
    fn link_create_raw(prog: BorrowedFd<'_>, target: u32, attach_type: u32) -> io::Result<OwnedFd> {
        let mut attr = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_fd: target,
            attach_type,
            ..Default::default()
        };
        let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Pins the bpf object `fd` at `path` on bpffs.
    pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut attr = ObjPinAttr {
            pathname: path.as_ptr() as u64,
            bpf_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        bpf(BPF_OBJ_PIN, &mut attr).map(drop)
    }
}

/// The kinds of program mif loads; the object's section names give each
/// its attach type.
enum Kind {
    /// `cgroup/sock_create`.
    Sock,
    /// `cgroup/connect4|6`, `sendmsg4|6`, `bind4|6`, `recvmsg4|6`,
    /// `getpeername4|6`.
    SockAddr,
    /// `cgroup/setsockopt` or `cgroup/getsockopt`, with its attach type.
    Sockopt(u32),
    /// `sockops`: the TCP health watch.
    SockOps,
}

fn kind_of(program: &str) -> Kind {
    match program {
        names::PROG_SOCK_CREATE => Kind::Sock,
        names::PROG_SETSOCKOPT => Kind::Sockopt(raw::BPF_CGROUP_SETSOCKOPT),
        names::PROG_GETSOCKOPT => Kind::Sockopt(raw::BPF_CGROUP_GETSOCKOPT),
        names::PROG_TCP_HEALTH => Kind::SockOps,
        _ => Kind::SockAddr,
    }
}

/// A program's link as an fd link, the kind that can be pinned (every
/// cgroup link is one on kernels with bpf_link, 5.7).
fn fd_link<L>(program: &'static str, link: L) -> Result<FdLink, LoadError>
where
    FdLink: TryFrom<L>,
    <FdLink as TryFrom<L>>::Error: std::error::Error + Send + Sync + 'static,
{
    FdLink::try_from(link).map_err(|e| LoadError::Pin {
        program,
        path: Default::default(),
        source: Box::new(e),
    })
}

/// Removes the link pins, the guards' too: each program is detached as its
/// last reference goes. Missing pins are fine (already gone). Returns how
/// many were removed.
pub fn detach(pins: &PinDir) -> usize {
    let hooks = names::PROGRAMS
        .iter()
        .filter(|program| unpin_link(pins, program))
        .count();
    hooks + crate::apply::guard_links::remove_all(pins)
}

/// Removes the map pins; the maps are freed once no program uses them.
pub fn unpin_maps(pins: &PinDir) -> usize {
    names::MAPS
        .iter()
        .filter(|map| std::fs::remove_file(pins.map(map)).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cgroup_watcher_has_its_tracepoint() {
        assert_eq!(
            WATCHED_TRACEPOINTS.map(|(program, _)| program),
            names::CGROUP_WATCHERS
        );
    }

    #[test]
    fn the_verification_order_has_every_hook_once() {
        let mut ordered = HOOKS_LARGEST_FIRST.to_vec();
        let mut hooks = names::HOOKS.to_vec();
        ordered.sort_unstable();
        hooks.sort_unstable();
        assert_eq!(ordered, hooks);
    }

    #[test]
    fn only_the_missing_netns_cookie_leaves_the_guard_out() {
        // What a 6.1 to 6.14 kernel's verifier says (check_helper_call).
        let old_kernel = "0: R1=ctx() R10=fp0\n; ...\n7: (85) call bpf_get_netns_cookie#122\n\
                          program of this type cannot use helper bpf_get_netns_cookie#122\n";
        assert!(guard_needs_newer_kernel(old_kernel));
        let bug = "R2 invalid mem access 'scalar'\nprocessed 812 insns";
        assert!(!guard_needs_newer_kernel(bug));
    }
}
