#![no_std]
// Intentionally empty: lets mif-userspace depend on this crate at build time.
