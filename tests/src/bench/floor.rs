//! The floor of the kernel's BPF run-time statistics: empty programs
//! (`r0 = 1; exit`) on the hooks mif's per-socket programs use, attached
//! to the worker's cgroup beside mif's for a run of their own (right after
//! mif's, so that mif's figures come from runs without them). With
//! statistics on, the kernel reads its clock before and after every
//! program (`__bpf_prog_run`), and on a virtual machine those two reads
//! cost more than a short program: what an empty program reports is the
//! part of mif's figures that no change to mif can remove, measured on the
//! same machine in the same benchmark.
//!
//! Loaded with the raw `bpf(2)` calls: aya loads programs from an object
//! file only, and two instructions need none.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::Path;

use anyhow::{Context as _, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_CGROUP_SOCK: u32 = 9;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET_SOCK_CREATE: u32 = 2;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;

/// The hooks, as (program name, program type, attach type). The names
/// follow mif's own (`mif_sock_create` …) so the report lists them beside.
pub const EMPTY_PROGRAMS: [(&str, u32, u32); 3] = [
    (
        "empty_sock_crt",
        BPF_PROG_TYPE_CGROUP_SOCK,
        BPF_CGROUP_INET_SOCK_CREATE,
    ),
    (
        "empty_connect4",
        BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        BPF_CGROUP_INET4_CONNECT,
    ),
    (
        "empty_sendmsg4",
        BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        BPF_CGROUP_UDP4_SENDMSG,
    ),
];

/// The empty program reported beside `program` of mif, if any.
pub fn empty_beside(program: &str) -> Option<&'static str> {
    match program {
        "mif_sock_create" => Some(EMPTY_PROGRAMS[0].0),
        "mif_connect4" => Some(EMPTY_PROGRAMS[1].0),
        "mif_sendmsg4" => Some(EMPTY_PROGRAMS[2].0),
        _ => None,
    }
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`; the
/// kernel takes the size given and zero for the rest.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_LINK_CREATE of a cgroup program.
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a live, initialised bpf_attr prefix of its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The empty programs, attached to one cgroup for as long as this lives
/// (the links are not pinned: closing them detaches, and the programs go
/// with their last descriptor).
pub struct EmptyPrograms {
    _links: Vec<OwnedFd>,
    _programs: Vec<OwnedFd>,
}

impl EmptyPrograms {
    pub fn attach(cgroup: &Path) -> Result<Self> {
        // r0 = 1 (allow); exit.
        let insns: [u64; 2] = [0x0000_0001_0000_00b7, 0x0000_0000_0000_0095];
        let license = CString::new("GPL").expect("no NUL");
        let dir = std::fs::File::open(cgroup)
            .with_context(|| format!("opening the cgroup {}", cgroup.display()))?;
        let (mut links, mut programs) = (Vec::new(), Vec::new());
        for (name, prog_type, attach_type) in EMPTY_PROGRAMS {
            let mut prog_name = [0u8; 16];
            prog_name[..name.len()].copy_from_slice(name.as_bytes());
            let mut load = ProgLoad {
                prog_type,
                insn_cnt: insns.len() as u32,
                insns: insns.as_ptr() as u64,
                license: license.as_ptr() as u64,
                prog_name,
                expected_attach_type: attach_type,
                ..ProgLoad::default()
            };
            let program = bpf(BPF_PROG_LOAD, &mut load)
                .with_context(|| format!("loading the empty program {name}"))?;
            let mut link = LinkCreate {
                prog_fd: program.as_raw_fd() as u32,
                target_fd: dir.as_raw_fd() as u32,
                attach_type,
                flags: 0,
            };
            let link = bpf(BPF_LINK_CREATE, &mut link).with_context(|| {
                format!("attaching the empty program {name} to {}", cgroup.display())
            })?;
            links.push(link);
            programs.push(program);
        }
        Ok(Self {
            _links: links,
            _programs: programs,
        })
    }

    /// Run time and count of the empty programs by name, summed over every
    /// loaded program of that name (only these while the bench runs).
    pub fn stats() -> Vec<(String, std::time::Duration, u64)> {
        let mut out = Vec::new();
        for info in aya::programs::loaded_programs().filter_map(Result::ok) {
            let Some(name) = info.name_as_str() else {
                continue;
            };
            if !EMPTY_PROGRAMS.iter().any(|(n, _, _)| *n == name) {
                continue;
            }
            match out.iter_mut().find(|o: &&mut (String, _, _)| o.0 == name) {
                Some(o) => {
                    o.1 += info.run_time();
                    o.2 += info.run_count();
                }
                None => out.push((name.to_owned(), info.run_time(), info.run_count())),
            }
        }
        out
    }
}
