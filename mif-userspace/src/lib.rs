//! mif: steer each application's traffic to a provisioning domain (PvD) on a
//! multi-homed Linux host, in the kernel, by cgroup.
//!
//! Data flow: netlink (interfaces, addresses, routes) → [`pvd`] state →
//! [`plan`] (desired maps and routing) → [`kernel_maps`] and [`netlink`] →
//! the kernel, where the programs of `mif-ebpf` steer each new socket.
pub mod attached;
pub mod backoff;
pub mod cgroup;
pub mod cgroup_pattern;
pub mod cgroup_watch;
pub mod cli;
pub mod config;
pub mod containers;
pub mod control;
pub mod daemon;
pub mod dns;
pub mod foreign_netns;
pub mod host_dns;
pub mod instance;
pub mod kernel_maps;
pub mod link_watch;
pub mod loader;
pub mod netlink;
pub mod netns;
pub mod pins;
pub mod plan;
pub mod policies;
pub mod prefix;
pub mod pvd;
pub mod pvd_table;
pub mod reconcile;
pub mod report;
pub mod sockdiag;
#[doc(hidden)]
pub mod test_support;
