//! The MIF API (RFC 7556 §6, draft-ietf-mif-api-extension) for hosts that
//! mif steers: applications see the provisioning domains (PvDs), choose one
//! for a socket or for the whole process, resolve names through a PvD's own
//! resolvers and connect with Happy Eyeballs across PvDs.
//!
//! - [`pvds`], [`pvd`]: the PvDs and their properties (the daemon's view,
//!   over its control socket, open to every local user).
//! - [`Watch`]: their changes as they happen, on a pollable fd.
//! - [`set_socket_pvd`], [`socket_pvd`]: one socket's PvD, in the kernel
//!   (the `SOL_MIF` socket option), without privileges or a daemon round
//!   trip; the caller's policy bounds the choice.
//! - [`set_process_pvd`]: every future socket of the process (Android's
//!   `setprocnetwork`), through the daemon.
//! - [`resolve`]: names through one PvD's resolvers.
//! - [`connect`]: Happy Eyeballs across the PvDs the caller may use.
//!
//! The C ABI over the same (`libmif.so.0`, `mif.h`) and the Python module
//! over that are the `mif-capi` crate; `docs/api.md` describes the
//! permission model and the mapping to the MIF API draft's abstract
//! functions.
mod daemon;
mod error;
mod happy_eyeballs;
mod resolve;
mod socket;

pub use daemon::{
    choices, pvd, pvds, set_process_pvd, socket_path, use_socket, Choices, Event, Pvd, Watch,
    DEFAULT_SOCKET,
};
pub use error::Error;
pub use happy_eyeballs::{connect, order, ConnectOptions, Connected, Resolved};
pub use mif_common::api::{MIF_PVD, SOL_MIF};
pub use resolve::{resolve, RESOLVER_TIMEOUT};
pub use socket::{set_socket_pvd, socket_pvd};
