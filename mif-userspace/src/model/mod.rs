//! Pure state, testable without root: the config file, the policies a
//! running daemon enforces, and the PvDs derived from the config and what
//! [`crate::host`] observed, and whether each PvD validated.
pub mod config;
mod config_pieces;
pub mod policies;
pub mod pvd;
pub mod ra_learned;
pub mod validation;
