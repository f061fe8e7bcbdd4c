//! Support code for mif's end-to-end tests.

pub mod api;
pub mod bench;
pub mod e2e;
pub mod lab;
pub mod mif;
