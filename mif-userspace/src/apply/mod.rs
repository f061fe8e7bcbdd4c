//! The only writers of kernel state: loading and pinning the programs
//! (the strict policies' guards on their cgroups, [`guard_links`]),
//! writing the maps, installing each PvD's routes and rules, resetting
//! sockets of a lost network, and the link-down fast path. What to write
//! comes from [`crate::plan`].
pub mod cgroup_layout;
pub mod guard_links;
pub mod kernel_btf;
pub mod kernel_maps;
pub mod link_watch;
pub mod loader;
pub mod on_demand;
pub mod pins;
pub mod pvd_table;
pub mod routing;
pub mod sockdiag;
pub mod verify;
