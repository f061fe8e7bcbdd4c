//! Which programs are really attached to a cgroup, asked of the kernel
//! (BPF_PROG_QUERY), so `mif maps` can tell "attached where processes live"
//! from "pinned but attached to a dying cgroup" (Cilium issue 48420).
use std::{collections::BTreeMap, fs::File, os::fd::AsRawFd as _, path::Path};

use mif_common::names;

const BPF_PROG_QUERY: libc::c_long = 16;

/// Attach types of mif's programs (uapi `enum bpf_attach_type`, as in
/// aya-obj's bindings: BPF_CGROUP_INET_SOCK_CREATE = 2, ...).
const ATTACH_TYPES: [(&str, u32); 14] = [
    (names::PROG_SOCK_CREATE, 2),
    (names::PROG_CONNECT4, 10),
    (names::PROG_CONNECT6, 11),
    (names::PROG_SENDMSG4, 14),
    (names::PROG_SENDMSG6, 15),
    (names::PROG_BIND4, 8),
    (names::PROG_BIND6, 9),
    (names::PROG_SETSOCKOPT, 22),
    (names::PROG_GETSOCKOPT, 21),
    (names::PROG_RECVMSG4, 19),
    (names::PROG_RECVMSG6, 20),
    (names::PROG_GETPEER4, 29),
    (names::PROG_GETPEER6, 30),
    (names::PROG_TCP_HEALTH, 3),
];

/// The attach type of hook `program`.
pub fn attach_type(program: &str) -> Option<u32> {
    ATTACH_TYPES
        .iter()
        .find(|(name, _)| *name == program)
        .map(|(_, attach_type)| *attach_type)
}

/// The `query` part of `union bpf_attr`, zero-padded to what the kernel may
/// read for this command.
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

/// Ids of the programs attached directly to `cgroup` for `attach_type`.
fn query(cgroup: &File, attach_type: u32) -> std::io::Result<Vec<u32>> {
    let mut ids = [0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
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
        return Err(std::io::Error::last_os_error());
    }
    Ok(ids[..(attr.prog_cnt as usize).min(ids.len())].to_vec())
}

/// For each of mif's hooks, how many programs of that name are attached
/// directly to `cgroup` (1 when all is well; 0 means not steering; 2 only
/// for the instant an upgrade replaces a link).
pub fn mif_programs_at(cgroup: &Path) -> std::io::Result<BTreeMap<String, usize>> {
    let dir = File::open(cgroup)?;
    let names_by_id: BTreeMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|info| Some((info.id(), info.name_as_str()?.to_string())))
        .collect();
    let mut counts = BTreeMap::new();
    for (program, attach_type) in ATTACH_TYPES {
        let ids = query(&dir, attach_type)?;
        let n = ids
            .iter()
            .filter(|id| names_by_id.get(id).is_some_and(|n| n == program))
            .count();
        counts.insert(program.to_string(), n);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_has_its_attach_type() {
        let mut queried: Vec<&str> = ATTACH_TYPES.iter().map(|(name, _)| *name).collect();
        queried.sort_unstable();
        let mut programs = names::HOOKS.to_vec();
        programs.sort_unstable();
        assert_eq!(queried, programs);
    }
}
