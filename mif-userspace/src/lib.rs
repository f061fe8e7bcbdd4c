//! mif: steer each application's traffic to a provisioning domain (PvD) on a
//! multi-homed Linux host, in the kernel, by cgroup.
//!
//! The tree is the pipeline, one direction only:
//!
//! - [`host`] observes, read-only: netlink dumps and events, RA options,
//!   DHCP leases, cgroups and their watcher, containers, other namespaces;
//! - [`model`] is pure state: the config, the policies in force, the PvDs
//!   derived from what the host reports;
//! - [`plan`] is pure desired kernel state: map entries, each PvD's routes
//!   and rules;
//! - [`apply`] holds the only writers: programs and pins, maps, routing,
//!   socket resets, the link-down fast path;
//! - [`reconcile`] runs one pass host → model → plan → apply;
//! - [`daemon`] is the lifecycle and event loop around the passes, with the
//!   [`dns`] forwarder, the [`validation`] probes and the [`control`]
//!   socket; [`cli`] the admin verbs and their rendering.
//!
//! In the kernel, the programs of `mif-ebpf` steer each new socket by what
//! [`apply`] wrote.
pub mod apply;
pub mod backoff;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod dns;
pub mod host;
pub mod instance;
pub mod memory;
pub mod model;
pub mod plan;
pub mod prefix;
pub mod reconcile;
#[doc(hidden)]
pub mod test_support;
pub mod validation;
