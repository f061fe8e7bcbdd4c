//! The pass against fakes of the host's routing and of the maps: what a
//! user would see change in the kernel when a link goes down, an address
//! is renumbered, a PvD's interface is re-created, or someone else removes
//! mif's routing. No root needed.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
};

use mif_common::{Pvd, PvdMeta, Settings};

use super::*;
use crate::{
    apply::{guard_links::GuardError, kernel_maps::MapsError},
    host::{
        cgroup::Cgroup2,
        netlink::{HostDump, Interface, InterfaceAddr, NetlinkError, RoutingDump, Uplink},
    },
    model::{config, policies::PolicySet},
    plan::{Desired, GuardPlan},
};

/// The host as netlink would report it, and the routing "in the kernel".
#[derive(Clone, Default)]
struct FakeHost {
    interfaces: Arc<Mutex<Vec<Interface>>>,
    installed: Arc<Mutex<BTreeMap<u32, PvdRouting>>>,
    installs: Arc<Mutex<usize>>,
}

impl FakeHost {
    fn set(&self, interfaces: Vec<Interface>) {
        *self.interfaces.lock().unwrap() = interfaces;
    }

    fn table(&self, table: u32) -> Option<PvdRouting> {
        self.installed.lock().unwrap().get(&table).cloned()
    }

    fn installs(&self) -> usize {
        *self.installs.lock().unwrap()
    }
}

impl RoutingHost for FakeHost {
    async fn interfaces(&self) -> Result<Vec<Interface>, NetlinkError> {
        Ok(self.interfaces.lock().unwrap().clone())
    }

    async fn dump(&self) -> Result<HostDump, NetlinkError> {
        Ok(HostDump {
            interfaces: self.interfaces().await?,
            ..HostDump::default()
        })
    }

    fn is_installed(&self, routing: &PvdRouting, _: &RoutingDump) -> bool {
        self.table(routing.table).as_ref() == Some(routing)
    }

    async fn install(&self, routing: &PvdRouting, _: &RoutingDump) -> Result<(), NetlinkError> {
        *self.installs.lock().unwrap() += 1;
        self.installed
            .lock()
            .unwrap()
            .insert(routing.table, routing.clone());
        Ok(())
    }

    async fn remove(&self, routing: &PvdRouting, _: &RoutingDump) -> Result<(), NetlinkError> {
        self.installed.lock().unwrap().remove(&routing.table);
        Ok(())
    }

    async fn dump_routing(&self) -> Result<RoutingDump, NetlinkError> {
        Ok(RoutingDump::default())
    }
}

/// The PvD map as the kernel programs would read it.
#[derive(Clone, Default)]
struct FakeMaps {
    pvds: Arc<Mutex<BTreeMap<u32, (Pvd, PvdMeta)>>>,
    /// Per write: whether its policy entries were the previous pass's, and
    /// how many there were.
    writes: Arc<Mutex<Vec<(bool, usize)>>>,
}

impl FakeMaps {
    fn pvd(&self, index: u32) -> Option<Pvd> {
        self.pvds.lock().unwrap().get(&index).map(|(p, _)| *p)
    }
}

impl MapWriter for FakeMaps {
    fn begin_pass(&mut self) {}

    fn withdraw_lost(&mut self, desired: &Desired) -> Result<usize, MapsError> {
        let mut pvds = self.pvds.lock().unwrap();
        let mut changed = 0;
        for (index, wanted, _) in &desired.pvds {
            if let Some((pvd, _)) = pvds.get_mut(index) {
                let kept = pvd.flags & wanted.flags;
                changed += usize::from(kept != pvd.flags);
                pvd.flags = kept;
            }
        }
        Ok(changed)
    }

    fn write(&mut self, _: &Settings, desired: &Desired) -> Result<(), MapsError> {
        self.writes
            .lock()
            .unwrap()
            .push((desired.policies_unchanged, desired.policies.len()));
        *self.pvds.lock().unwrap() = desired
            .pvds
            .iter()
            .map(|(i, p, m)| (*i, (*p, *m)))
            .collect();
        Ok(())
    }

    fn forget_written(&mut self) {}

    fn pvds(&self) -> Vec<(u32, Pvd, Option<PvdMeta>)> {
        let pvds = self.pvds.lock().unwrap();
        pvds.iter().map(|(i, (p, m))| (*i, *p, Some(*m))).collect()
    }

    fn policy_capacity(&self) -> usize {
        crate::plan::POLICY_CAPACITY_MAX
    }
}

/// The guarded cgroups, as last asked for.
#[derive(Clone, Default)]
struct FakeGuards {
    guarded: Arc<Mutex<GuardPlan>>,
}

impl GuardWriter for FakeGuards {
    fn guard(&mut self, plan: &GuardPlan) -> Result<(), GuardError> {
        *self.guarded.lock().unwrap() = plan.clone();
        Ok(())
    }
}

const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const FIRST: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const RENUMBERED: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);

/// An ethernet uplink with one IPv4 address and `default via GATEWAY`.
fn uplink(name: &str, index: u32, up: bool, addr: Ipv4Addr) -> Interface {
    Interface {
        name: name.into(),
        index,
        up,
        loopback: false,
        kind: Default::default(),
        addrs: vec![InterfaceAddr {
            addr: addr.into(),
            prefix_len: 24,
            scope: 0,
            deprecated: false,
            tentative: false,
            temporary: false,
            peer: None,
        }],
        uplink4: up.then(|| Uplink::main_default(GATEWAY.into(), 100)),
        uplink6: None,
        routes: vec![],
        routes_left_out: 0,
    }
}

/// A reconciler over fakes, with no policies and no lease files (nothing
/// of the test host is read).
fn reconciler(host: &FakeHost, maps: &FakeMaps) -> Reconciler<FakeHost, FakeMaps, FakeGuards> {
    reconciler_with(host, maps, "")
}

/// Like [`reconciler`], with `policies` (TOML) in the config file.
fn reconciler_with(
    host: &FakeHost,
    maps: &FakeMaps,
    policies: &str,
) -> Reconciler<FakeHost, FakeMaps, FakeGuards> {
    reconciler_at(tempfile::tempdir().unwrap().path(), host, maps, policies)
}

/// Like [`reconciler_with`], with `cgroups` standing for the cgroup2 mount.
fn reconciler_at(
    cgroups: &std::path::Path,
    host: &FakeHost,
    maps: &FakeMaps,
    policies: &str,
) -> Reconciler<FakeHost, FakeMaps, FakeGuards> {
    let mut config = config::parse(
        &cgroups.join("mif.toml"),
        &format!("[dns]\nleases = []\n{policies}"),
    )
    .unwrap();
    let cgroup2 = Cgroup2::at(cgroups);
    let attach = cgroup2.resolve("/").unwrap();
    let (set, _) = PolicySet::new(&mut config, Vec::new());
    let rules = RuleOptions {
        mark_mask: 0xff00_0000,
        mark_priority: 9001,
        source_priority: 9000,
    };
    Reconciler::new(
        host.clone(),
        maps.clone(),
        FakeGuards::default(),
        config,
        PolicyState::new(set, cgroup2, attach),
        InstanceNumbers {
            numbering: Numbering {
                mark_mask: rules.mark_mask,
                table_base: 20000,
            },
            rules,
            settings: Settings::default(),
        },
    )
}

fn pass(r: &mut Reconciler<FakeHost, FakeMaps, FakeGuards>, verify: bool) -> Vec<Lost> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(r.reconcile(verify)).unwrap()
}

/// The one PvD of these tests.
fn only_pvd(r: &Reconciler<FakeHost, FakeMaps, FakeGuards>) -> &PvdState {
    match r.pvds() {
        [pvd] => pvd,
        other => panic!("expected one PvD, got {other:?}"),
    }
}

#[test]
fn a_network_change_reuses_the_policy_entries_and_other_changes_do_not() {
    let cgroups = tempfile::tempdir().unwrap();
    std::fs::create_dir(cgroups.path().join("app")).unwrap();
    let (host, maps) = (FakeHost::default(), FakeMaps::default());
    let policy = "[[policy]]\ncgroup = \"/app\"\nprefer = [\"wlan0\"]\n";
    let mut r = reconciler_at(cgroups.path(), &host, &maps, policy);
    host.set(vec![uplink("wlan0", 2, true, FIRST)]);
    pass(&mut r, false);
    // The link goes down and comes back: the same policies, the same PvD.
    host.set(vec![uplink("wlan0", 2, false, FIRST)]);
    pass(&mut r, false);
    host.set(vec![uplink("wlan0", 2, true, FIRST)]);
    pass(&mut r, false);
    // A new PvD: the indices by name change.
    host.set(vec![
        uplink("wlan0", 2, true, FIRST),
        uplink("wwan0", 3, true, RENUMBERED),
    ]);
    pass(&mut r, false);
    // Cgroups changed: the policies are resolved again.
    r.policy.cgroups_changed();
    pass(&mut r, false);
    pass(&mut r, false);
    assert_eq!(
        *maps.writes.lock().unwrap(),
        [
            (false, 1),
            (true, 1),
            (true, 1),
            (false, 1),
            (false, 1),
            (true, 1)
        ]
    );
}

#[test]
fn a_link_going_down_withdraws_its_pvd_and_its_source_rule() {
    let (host, maps) = (FakeHost::default(), FakeMaps::default());
    let mut r = reconciler(&host, &maps);
    host.set(vec![uplink("wlan0", 2, true, FIRST)]);
    assert_eq!(pass(&mut r, false), vec![]);
    let pvd = only_pvd(&r).clone();
    assert!(maps.pvd(pvd.index).unwrap().available(false));
    let routing = host.table(pvd.table).expect("routing installed");
    assert_eq!(routing.sources, vec![IpAddr::from(FIRST)]);

    host.set(vec![uplink("wlan0", 2, false, FIRST)]);
    let lost = pass(&mut r, false);
    assert_eq!(
        lost,
        vec![Lost {
            pvd: "wlan0".into(),
            mark: pvd.mark,
            source: FIRST.into()
        }]
    );
    assert!(!maps.pvd(pvd.index).unwrap().available(false));
    // No `from` rule may lead to a table that cannot carry the traffic.
    let routing = host.table(pvd.table);
    assert!(
        routing
            .as_ref()
            .is_none_or(|r| r.sources.is_empty() && r.default4.is_none()),
        "{routing:?}"
    );
}

#[test]
fn a_renumbered_address_moves_the_source_rule_and_loses_the_old_address_only() {
    let (host, maps) = (FakeHost::default(), FakeMaps::default());
    let mut r = reconciler(&host, &maps);
    host.set(vec![uplink("wwan0", 3, true, FIRST)]);
    pass(&mut r, false);
    let pvd = only_pvd(&r).clone();

    host.set(vec![uplink("wwan0", 3, true, RENUMBERED)]);
    let lost = pass(&mut r, false);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].source, IpAddr::from(FIRST));
    let kernel = maps.pvd(pvd.index).unwrap();
    assert_eq!(kernel.addr4, u32::from(RENUMBERED).to_be());
    assert!(kernel.available(false));
    let routing = host.table(pvd.table).unwrap();
    assert_eq!(routing.sources, vec![IpAddr::from(RENUMBERED)]);
}

#[test]
fn a_re_created_interface_keeps_its_pvd_index_and_gets_routing_on_the_new_ifindex() {
    let (host, maps) = (FakeHost::default(), FakeMaps::default());
    let mut r = reconciler(&host, &maps);
    host.set(vec![uplink("tun0", 7, true, FIRST)]);
    pass(&mut r, false);
    let before = only_pvd(&r).clone();

    host.set(vec![]);
    let lost = pass(&mut r, false);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(
        host.table(before.table).is_none(),
        "routing of a gone PvD stays"
    );

    host.set(vec![uplink("tun0", 9, true, FIRST)]);
    pass(&mut r, false);
    let after = only_pvd(&r).clone();
    assert_eq!(
        (after.index, after.mark, after.table),
        (before.index, before.mark, before.table)
    );
    assert_eq!(host.table(after.table).unwrap().ifindex, 9);
    assert!(maps.pvd(after.index).unwrap().available(false));
}

#[test]
fn routing_removed_by_someone_else_is_restored_by_a_verifying_pass_only() {
    let (host, maps) = (FakeHost::default(), FakeMaps::default());
    let mut r = reconciler(&host, &maps);
    host.set(vec![uplink("wlan0", 2, true, FIRST)]);
    pass(&mut r, false);
    let table = only_pvd(&r).table;
    let installed = host.table(table).unwrap();
    assert_eq!(host.installs(), 1);

    host.installed.lock().unwrap().clear();
    // A pass for an event trusts what it applied (its own writes echo back
    // as events, which must not loop)...
    pass(&mut r, false);
    assert!(host.table(table).is_none());
    // ...the periodic verifying pass notices and puts it back.
    pass(&mut r, true);
    assert_eq!(host.table(table), Some(installed));
    assert_eq!(host.installs(), 2);
    // And a verifying pass with everything in place writes nothing.
    pass(&mut r, true);
    assert_eq!(host.installs(), 2);
}

#[test]
fn an_interface_a_policy_prefers_is_a_pvd_without_a_default_route() {
    let (host, maps) = (FakeHost::default(), FakeMaps::default());
    // The cgroup does not exist: the policy waits, its preference counts.
    let policy = "[[policy]]\ncgroup = \"/app\"\nprefer = [\"wwan0\", \"wlan0\"]\n";
    let mut r = reconciler_with(&host, &maps, policy);
    host.set(vec![
        uplink("wlan0", 2, true, FIRST),
        uplink("wwan0", 3, false, RENUMBERED),
    ]);
    pass(&mut r, false);
    let names: Vec<&str> = r.pvds().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["wlan0", "wwan0"]);
    assert!(!r.pvds()[1].available4());
}
