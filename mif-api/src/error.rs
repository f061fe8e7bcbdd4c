//! What can go wrong, in the terms of the MIF API. Each error keeps the
//! errno a C caller sees ([`Error::errno`]).
use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no PvD is named {0:?}")]
    NoSuchPvd(String),
    #[error("PvD {0:?} is not one this process's policy allows it to choose")]
    NotAllowed(String),
    #[error("PvD {0:?} is not available for this socket's address family now")]
    Unavailable(String),
    #[error("{0:?} is no PvD name (1 to 15 bytes, no NUL)")]
    BadName(String),
    #[error("mif does not steer this socket (no mif in its network namespace)")]
    NotRunning,
    #[error("the mif daemon is not reachable at {}: {source}", path.display())]
    NoDaemon {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the mif daemon answered: {0}")]
    Daemon(String),
    #[error("the mif daemon's answer makes no sense here: {0}")]
    Protocol(String),
    #[error("{host}: no address through PvD {pvd}: {why}")]
    NoAddress {
        host: String,
        pvd: String,
        why: String,
    },
    #[error("{host} port {port}: no connection through any PvD ({attempts})")]
    ConnectFailed {
        host: String,
        port: u16,
        attempts: String,
    },
    #[error("{0}")]
    Socket(#[source] io::Error),
}

impl Error {
    /// Reads the errno of a failed `SOL_MIF` call for PvD `pvd`.
    pub(crate) fn from_choice(e: io::Error, pvd: &str) -> Self {
        let pvd = pvd.to_owned();
        match e.raw_os_error() {
            Some(libc::ENOENT) => Error::NoSuchPvd(pvd),
            Some(libc::EPERM) => Error::NotAllowed(pvd),
            Some(libc::ENETUNREACH) => Error::Unavailable(pvd),
            Some(libc::EINVAL) if !pvd.is_empty() => Error::BadName(pvd),
            Some(libc::ENOPROTOOPT) => Error::NotRunning,
            _ => Error::Socket(e),
        }
    }

    /// The errno a C caller sees for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NoSuchPvd(_) => libc::ENOENT,
            Error::NotAllowed(_) => libc::EPERM,
            Error::Unavailable(_) => libc::ENETUNREACH,
            Error::BadName(_) => libc::EINVAL,
            Error::NotRunning => libc::ENOPROTOOPT,
            Error::NoDaemon { source, .. } => source.raw_os_error().unwrap_or(libc::ECONNREFUSED),
            Error::Daemon(_) | Error::Protocol(_) => libc::EPROTO,
            Error::NoAddress { .. } => libc::EHOSTUNREACH,
            Error::ConnectFailed { .. } => libc::ECONNREFUSED,
            Error::Socket(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}
