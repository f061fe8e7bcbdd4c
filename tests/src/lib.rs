//! Support code for mif's end-to-end tests.

pub mod bench;
pub mod lab;
pub mod mif;
