//! Loading mif's kernel programs, attaching them to a cgroup2 directory and
//! pinning their links, and taking them down again.
//!
//! Minimum kernel: 5.14 (`SO_NETNS_COOKIE` for the namespace check; the
//! hooks themselves need 4.17 for `connect`/`sendmsg`, 5.7 for bpf_link).
use std::{fs::File, path::Path};

use aya::{
    programs::{links::FdLink, CgroupAttachMode, CgroupSock, CgroupSockAddr, ProgramError},
    Ebpf, EbpfLoader,
};
use mif_common::{names, Settings};

use crate::pins::PinDir;

/// The kernel programs, built by build.rs and embedded so `mif` is one file.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mif-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load mif's eBPF object")]
    Object(#[source] Box<aya::EbpfError>),
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("the kernel refused program {program}:\n{log}")]
    Verifier { program: &'static str, log: String },
    #[error("cannot {action} program {program}")]
    Program {
        program: &'static str,
        action: &'static str,
        #[source]
        source: Box<ProgramError>,
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

/// Loads the programs with this instance's settings. Maps are pinned by name
/// in the pin directory (reused if already there).
pub fn load(settings: &Settings, pins: &PinDir) -> Result<Ebpf, LoadError> {
    EbpfLoader::new()
        .override_global(names::GLOBAL_SETTINGS, settings, true)
        .default_map_pin_directory(pins.maps())
        .load(EBPF_OBJECT)
        .map_err(|e| LoadError::Object(Box::new(e)))
}

/// Verifies and attaches every program to `cgroup` and pins each link, so
/// steering outlives this process until the pins are removed. A link pinned
/// by an earlier instance is replaced atomically: the new link is pinned
/// under a staging name and renamed over the old pin, whose link then goes.
pub fn attach(ebpf: &mut Ebpf, cgroup: &Path, pins: &PinDir) -> Result<(), LoadError> {
    let cgroup_fd = File::open(cgroup).map_err(|source| LoadError::Cgroup {
        path: cgroup.to_path_buf(),
        source,
    })?;
    for program in names::PROGRAMS {
        let link = attach_one(ebpf, program, &cgroup_fd)?;
        let staging = pins.link_staging(program);
        let _ = std::fs::remove_file(&staging);
        link.pin(&staging).map_err(|e| LoadError::Pin {
            program,
            path: staging.clone(),
            source: Box::new(e),
        })?;
        let path = pins.link(program);
        std::fs::rename(&staging, &path).map_err(|e| LoadError::Pin {
            program,
            path: path.clone(),
            source: Box::new(e),
        })?;
    }
    Ok(())
}

fn attach_one(ebpf: &mut Ebpf, program: &'static str, cgroup: &File) -> Result<FdLink, LoadError> {
    let prog = ebpf
        .program_mut(program)
        .ok_or(LoadError::MissingProgram(program))?;
    let fail = |action: &'static str| {
        move |e: ProgramError| match e {
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
    };
    // Single: with bpf_link the other modes are refused (EINVAL), and links
    // stack with other programs on the same cgroup anyway.
    let link: FdLink = if program == names::PROG_SOCK_CREATE {
        let prog: &mut CgroupSock = prog.try_into().map_err(fail("type-check"))?;
        prog.load().map_err(fail("load"))?;
        let id = prog
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(fail("attach"))?;
        let link = prog.take_link(id).map_err(fail("take the link of"))?;
        link.try_into().map_err(|e| LoadError::Pin {
            program,
            path: Default::default(),
            source: Box::new(e),
        })?
    } else {
        let prog: &mut CgroupSockAddr = prog.try_into().map_err(fail("type-check"))?;
        prog.load().map_err(fail("load"))?;
        let id = prog
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(fail("attach"))?;
        let link = prog.take_link(id).map_err(fail("take the link of"))?;
        link.try_into().map_err(|e| LoadError::Pin {
            program,
            path: Default::default(),
            source: Box::new(e),
        })?
    };
    Ok(link)
}

/// Removes the link pins: each program is detached as its last reference
/// goes. Missing pins are fine (already gone). Returns how many were removed.
pub fn detach(pins: &PinDir) -> usize {
    names::PROGRAMS
        .iter()
        .filter(|program| {
            let _ = std::fs::remove_file(pins.link_staging(program));
            std::fs::remove_file(pins.link(program)).is_ok()
        })
        .count()
}

/// Removes the map pins; the maps are freed once no program uses them.
pub fn unpin_maps(pins: &PinDir) -> usize {
    names::MAPS
        .iter()
        .filter(|map| std::fs::remove_file(pins.map(map)).is_ok())
        .count()
}
