//! The narrow seam under a pass: what it reads of the host's routing and
//! writes of routing, maps and guard links, as three traits. The daemon uses rtnetlink
//! and the pinned maps; the unit tests use fakes, so a pass (a link going
//! down, an address renumbered, a PvD re-created, routing removed by
//! someone else) is tested without root, the way aya tests its loader
//! against fake syscalls.
use std::future::Future;

use mif_common::{Pvd, PvdMeta, Settings};

use crate::{
    apply::{
        guard_links::{GuardError, GuardLinks},
        kernel_maps::{KernelMaps, MapsError},
    },
    host::netlink::{HostDump, Interface, Netlink, NetlinkError, RoutingDump},
    plan::{routing::PvdRouting, Desired, GuardPlan},
};

/// The interfaces as the host reports them, and each PvD's routing.
/// `Send` futures, so a pass can run on any tokio worker.
pub trait RoutingHost {
    /// Every interface with its state, addresses and routing.
    fn interfaces(&self) -> impl Future<Output = Result<Vec<Interface>, NetlinkError>> + Send;
    /// The interfaces and the routing they came from, in one dump.
    fn dump(&self) -> impl Future<Output = Result<HostDump, NetlinkError>> + Send;
    /// Whether the kernel held exactly what `routing` says when `dump` was
    /// taken.
    fn is_installed(&self, routing: &PvdRouting, dump: &RoutingDump) -> bool;
    /// Makes the kernel hold exactly `routing` for its PvD; `dump` is what
    /// it held before.
    fn install(
        &self,
        routing: &PvdRouting,
        dump: &RoutingDump,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// Removes all of `routing`'s table and rules, as `dump` lists them.
    fn remove(
        &self,
        routing: &PvdRouting,
        dump: &RoutingDump,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// The routes and rules, for a removal outside a pass.
    fn dump_routing(&self) -> impl Future<Output = Result<RoutingDump, NetlinkError>> + Send;
}

/// The maps a pass writes (see [`KernelMaps`] for what each step means).
pub trait MapWriter {
    /// Marks the start of a pass, before its dump.
    fn begin_pass(&mut self);
    /// Clears the availability `desired` takes away, and nothing else.
    fn withdraw_lost(&mut self, desired: &Desired) -> Result<usize, MapsError>;
    /// Makes the maps hold exactly `desired`.
    fn write(&mut self, settings: &Settings, desired: &Desired) -> Result<(), MapsError>;
    /// Makes the next write rewrite every entry.
    fn forget_written(&mut self);
    /// The PvD entries a previous instance left, to adopt.
    fn pvds(&self) -> Vec<(u32, Pvd, Option<PvdMeta>)>;
    /// How many cgroups the policy map holds (its `max_entries`).
    fn policy_capacity(&self) -> usize;
}

/// Where the strict policies' guards are attached.
pub trait GuardWriter {
    /// Makes the guards' links exactly `plan`.
    fn guard(&mut self, plan: &GuardPlan) -> Result<(), GuardError>;
}

impl GuardWriter for GuardLinks {
    fn guard(&mut self, plan: &GuardPlan) -> Result<(), GuardError> {
        self.apply(plan)
    }
}

impl RoutingHost for Netlink {
    async fn interfaces(&self) -> Result<Vec<Interface>, NetlinkError> {
        Netlink::interfaces(self).await
    }

    async fn dump(&self) -> Result<HostDump, NetlinkError> {
        Netlink::dump(self).await
    }

    fn is_installed(&self, routing: &PvdRouting, dump: &RoutingDump) -> bool {
        dump.holds(routing)
    }

    async fn install(&self, routing: &PvdRouting, dump: &RoutingDump) -> Result<(), NetlinkError> {
        Netlink::install(self, routing, dump).await
    }

    async fn remove(&self, routing: &PvdRouting, dump: &RoutingDump) -> Result<(), NetlinkError> {
        Netlink::remove(self, routing, dump).await
    }

    async fn dump_routing(&self) -> Result<RoutingDump, NetlinkError> {
        self.routing().await
    }
}

impl MapWriter for KernelMaps {
    fn begin_pass(&mut self) {
        KernelMaps::begin_pass(self);
    }

    fn withdraw_lost(&mut self, desired: &Desired) -> Result<usize, MapsError> {
        KernelMaps::withdraw_lost(self, desired)
    }

    fn write(&mut self, settings: &Settings, desired: &Desired) -> Result<(), MapsError> {
        KernelMaps::write(self, settings, desired)
    }

    fn forget_written(&mut self) {
        KernelMaps::forget_written(self);
    }

    fn pvds(&self) -> Vec<(u32, Pvd, Option<PvdMeta>)> {
        KernelMaps::pvds(self)
    }

    fn policy_capacity(&self) -> usize {
        KernelMaps::policy_capacity(self)
    }
}
