//! The daemon's control socket: a Unix socket under /run where the CLI asks
//! for state and changes policies, one JSON request per line.
//!
//! Any local user may read; changes need root or membership of the group
//! named in the config's `[control] group` (checked from the peer's
//! credentials, SO_PEERCRED). Each instance has its own socket, named after
//! its pin directory, like its lock.
pub mod client;
pub mod peer;
pub mod protocol;
pub mod server;

use std::path::{Path, PathBuf};

/// `/run/mif/<pin dir with / as ->.sock`.
pub fn socket_path(pin_dir: &Path) -> PathBuf {
    crate::apply::pins::runtime_path(pin_dir, "sock")
}
