//! Choosing the PvD of one socket: the `SOL_MIF` option that mif's kernel
//! programs serve (see `mif_common::api`). No daemon round trip, no
//! privilege: the kernel checks the caller's policy.
use std::{io, os::fd::RawFd};

use mif_common::{
    api::{MIF_PVD, SOL_MIF},
    PVD_NAME_LEN,
};

use crate::Error;

/// Makes the socket `fd` leave by the PvD `pvd`, with its source, as a
/// policy naming it would: call it before `connect`, `sendto` or `bind`.
///
/// Errors, with the socket left as it was:
/// - [`Error::NoSuchPvd`] (`ENOENT`): no PvD has that name;
/// - [`Error::NotAllowed`] (`EPERM`): the caller's policy does not allow it;
/// - [`Error::Unavailable`] (`ENETUNREACH`): not available for the
///   socket's family now;
/// - [`Error::NotRunning`] (`ENOPROTOOPT`): mif does not steer this socket's
///   network namespace;
/// - `EISCONN` (as [`Error::Socket`]): the socket is already connected.
pub fn set_socket_pvd(fd: RawFd, pvd: &str) -> Result<(), Error> {
    if pvd.is_empty() || pvd.len() >= PVD_NAME_LEN || pvd.contains('\0') {
        return Err(Error::BadName(pvd.to_owned()));
    }
    // SAFETY: the pointer and length describe `pvd`'s bytes, alive for the
    // call; the kernel only reads them.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            SOL_MIF,
            MIF_PVD,
            pvd.as_ptr().cast(),
            pvd.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    Err(Error::from_choice(io::Error::last_os_error(), pvd))
}

/// The PvD the socket `fd` uses, chosen by [`set_socket_pvd`] or given by
/// the caller's policy; `None` for a socket mif does not steer.
pub fn socket_pvd(fd: RawFd) -> Result<Option<String>, Error> {
    let mut buf = [0u8; PVD_NAME_LEN];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf and len are live and len is buf's size.
    let rc = unsafe { libc::getsockopt(fd, SOL_MIF, MIF_PVD, buf.as_mut_ptr().cast(), &mut len) };
    if rc != 0 {
        return Err(Error::from_choice(io::Error::last_os_error(), ""));
    }
    let name = &buf[..(len as usize).min(buf.len())];
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    if name.is_empty() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(name).into_owned()))
}
