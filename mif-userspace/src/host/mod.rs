//! Observing the host, read-only: what the kernel and the system say about
//! interfaces, routes, router advertisements, DHCP leases, cgroups (by
//! path, pattern or selector), containers and other network namespaces. Nothing here writes kernel
//! state; [`crate::apply`] does.
pub mod attached;
pub mod captive_portal;
pub mod cgroup;
pub mod cgroup_pattern;
pub mod cgroup_watch;
pub mod containers;
pub mod dir_watch;
pub mod dns_leases;
pub mod foreign_netns;
pub mod netlink;
pub mod netns;
pub mod selector;
pub mod subdirs;
