//! End-to-end: the real `mif daemon` in a lab of two networks, asserting what
//! a user would observe: which network a connection left by and which source
//! address the peer saw, for IPv4 and IPv6, TCP, connected and unconnected
//! UDP.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use mif_tests::e2e::{app_with_policy, internet, policy_toml as policy, two_networks as lab};
use mif_tests::{
    lab::{ClientFailure, ClientReply, Family, Lab, Network, Proto, INTERNET_V4},
    mif::Daemon,
    skip_unless_root,
};

fn host_addr(net: &Network, family: Family) -> IpAddr {
    match family {
        Family::V4 => net.host_v4.into(),
        Family::V6 => net.host_v6.into(),
    }
}

/// Asserts that a client in `cgroup` leaves by `net` with `net`'s source, for
/// every protocol and family.
fn assert_leaves_by(lab: &Lab, cgroup: Option<&Path>, net: &Network) {
    for family in [Family::V4, Family::V6] {
        for proto in Proto::ALL {
            let reply = lab
                .client(cgroup, proto, internet(family), None)
                .unwrap_or_else(|e| panic!("{proto} {family:?} from {cgroup:?}: {e:#}"));
            assert_eq!(
                reply.network, net.name,
                "{proto} {family:?} from {cgroup:?} left by the wrong network"
            );
            assert_eq!(
                reply.source,
                host_addr(net, family),
                "{proto} {family:?} from {cgroup:?}: wrong source"
            );
        }
    }
}

#[test]
fn two_cgroups_leave_by_two_networks_and_unsteered_apps_follow_main() {
    skip_unless_root!();
    let lab = lab();
    let browser = lab.create_cgroup("apps/browser").unwrap();
    let updater = lab.create_cgroup("apps/updater").unwrap();
    let other = lab.create_cgroup("apps/other").unwrap();
    let rel = lab.cgroup_rel();
    let config = policy(&format!("{rel}/apps/browser"), &["wlan0", "wwan0"], "")
        + &policy(&format!("{rel}/apps/updater"), &["wwan0", "wlan0"], "");
    let daemon = Daemon::start(&lab, &config).unwrap();

    // The updater leaves by the network the main table would not use.
    assert_leaves_by(&lab, Some(&updater), lab.network(1));
    assert_leaves_by(&lab, Some(&browser), lab.network(0));
    // An app without policy follows the main table and carries no mark.
    assert_leaves_by(&lab, Some(&other), lab.network(0));
    assert_eq!(lab.sockmark(Some(&other), Family::V4).unwrap().mark, 0);
    assert_ne!(lab.sockmark(Some(&updater), Family::V4).unwrap().mark, 0);

    daemon.stop().unwrap();
}

#[test]
fn a_child_cgroup_created_after_start_inherits_its_parents_policy() {
    skip_unless_root!();
    let lab = lab();
    lab.create_cgroup("svc").unwrap();
    let config = policy(&format!("{}/svc", lab.cgroup_rel()), &["wwan0"], "");
    let _daemon = Daemon::start(&lab, &config).unwrap();

    let child = lab.create_cgroup("svc/worker/deeper").unwrap();
    assert_leaves_by(&lab, Some(&child), lab.network(1));
}

#[test]
fn the_deepest_policy_wins() {
    skip_unless_root!();
    let lab = lab();
    lab.create_cgroup("outer").unwrap();
    let inner = lab.create_cgroup("outer/inner").unwrap();
    let rel = lab.cgroup_rel();
    let config = policy(&format!("{rel}/outer"), &["wwan0"], "")
        + &policy(&format!("{rel}/outer/inner"), &["wlan0"], "");
    let _daemon = Daemon::start(&lab, &config).unwrap();
    let outer = lab.cgroup_root().join("outer");
    assert_eq!(
        lab.client(Some(&outer), Proto::Tcp, INTERNET_V4.into(), None)
            .unwrap()
            .network,
        "wwan0"
    );
    // wlan0 is also the main table's way out, so check the mark as well.
    let reply = lab
        .client(Some(&inner), Proto::Tcp, INTERNET_V4.into(), None)
        .unwrap();
    assert_eq!(reply.network, "wlan0");
    let outer_mark = lab.sockmark(Some(&outer), Family::V4).unwrap().mark;
    let inner_mark = lab.sockmark(Some(&inner), Family::V4).unwrap().mark;
    assert!(
        inner_mark != 0 && inner_mark != outer_mark,
        "inner {inner_mark:#x} outer {outer_mark:#x}"
    );
    // Below both policies, without one of its own: the deeper one applies
    // (the kernel walks the ancestors; the own cgroup has no policy).
    let leaf = lab.create_cgroup("outer/inner/leaf/deeper").unwrap();
    let leaf_mark = lab.sockmark(Some(&leaf), Family::V4).unwrap().mark;
    assert_eq!(leaf_mark, inner_mark, "outer {outer_mark:#x}");
}

#[test]
fn an_application_that_binds_its_own_source_is_respected() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let config = policy(&format!("{}/app", lab.cgroup_rel()), &["wwan0"], "");
    let _daemon = Daemon::start(&lab, &config).unwrap();

    let wlan = lab.network(0);
    for (family, bind) in [
        (Family::V4, IpAddr::from(wlan.host_v4)),
        (Family::V6, wlan.host_v6.into()),
    ] {
        for proto in Proto::ALL {
            let reply = lab
                .client(Some(&app), proto, internet(family), Some(bind))
                .unwrap();
            assert_eq!(
                reply.source, bind,
                "{proto} {family:?}: mif replaced the app's own source"
            );
        }
    }
}

#[test]
fn strict_refuses_sockets_when_its_pvd_is_down_at_start_and_loose_falls_back() {
    skip_unless_root!();
    let lab = lab();
    let strict = lab.create_cgroup("strict").unwrap();
    let loose = lab.create_cgroup("loose").unwrap();
    lab.ip_host(&["link", "set", "wwan0", "down"]).unwrap();
    let rel = lab.cgroup_rel();
    let config = policy(&format!("{rel}/strict"), &["wwan0"], "strict = true")
        + &policy(&format!("{rel}/loose"), &["wwan0", "wlan0"], "");
    let daemon = Daemon::start(&lab, &config).unwrap();

    for family in [Family::V4, Family::V6] {
        let err = lab
            .client(Some(&strict), Proto::Tcp, internet(family), None)
            .unwrap_err();
        let failure = err
            .downcast_ref::<ClientFailure>()
            .unwrap_or_else(|| panic!("{err:#}"));
        assert!(
            failure.stderr.contains("Operation not permitted"),
            "{failure}"
        );
    }
    assert_leaves_by(&lab, Some(&loose), lab.network(0));
    // ...and the fallback is to wlan0 by mif's choice, not by accident.
    let mark = lab.sockmark(Some(&loose), Family::V4).unwrap().mark;
    assert_eq!(mark, pvd_mark(&daemon, "wlan0"));

    let maps = daemon.maps_json().unwrap();
    let count = |policy: u64, pvd: Option<&str>, field: &str| -> u64 {
        maps["counters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["policy"] == policy && c["pvd"].as_str() == pvd)
            .map(|c| c[field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(count(1, None, "refused"), 2, "{maps:#}");
    assert!(count(2, Some("wlan0"), "fallback") >= 6, "{maps:#}");
    assert!(count(2, Some("wlan0"), "steered") >= 6, "{maps:#}");
}

fn pvd_mark(daemon: &Daemon, name: &str) -> u32 {
    let maps = daemon.maps_json().unwrap();
    let pvd = maps["pvds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap();
    u32::from_str_radix(pvd["mark"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn hard_bind_sets_the_device() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let config = policy(
        &format!("{}/app", lab.cgroup_rel()),
        &["wwan0"],
        "bind = \"device\"",
    );
    let _daemon = Daemon::start(&lab, &config).unwrap();
    let stamped = lab.sockmark(Some(&app), Family::V6).unwrap();
    assert_eq!(stamped.ifindex, lab.host_ifindex("wwan0").unwrap());
    assert_leaves_by(&lab, Some(&app), lab.network(1));
}

#[test]
fn sockets_of_a_steered_cgroup_in_another_namespace_are_left_alone() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let config = policy(&format!("{}/app", lab.cgroup_rel()), &["wwan0"], "");
    let _daemon = Daemon::start(&lab, &config).unwrap();

    // The same cgroup, but a process in router 0's namespace.
    let mut cmd = lab
        .command_in_router(0, lab.peer_path(), ["sockmark", "--family", "4"])
        .unwrap();
    let procs = app.join("cgroup.procs");
    // SAFETY: only async-signal-safe calls (open/write) happen in pre_exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || std::fs::write(&procs, "0"));
    }
    let out = lab.output(cmd, std::time::Duration::from_secs(10)).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("mark=0x0 ") || line.contains("mark=0x00000000"),
        "{line}"
    );
    // In the managed namespace the same cgroup is steered.
    assert_ne!(lab.sockmark(Some(&app), Family::V4).unwrap().mark, 0);
}

/// Issue 16: `sendmsg4/6` give unconnected datagrams their PvD's source
/// (counted as "src set"), rather than leaving it to routing and counting
/// nothing. On wwan0 the two disagree: the primary IPv4 address is
/// deprecated and a secondary one sits in the same subnet. mif prefers the
/// address that is not deprecated (RFC 6724 rule 3, `best_source`); the
/// kernel's IPv4 source selection (`inet_select_addr`) takes the primary,
/// deprecated or not, so only mif can give a datagram its choice: the
/// programs for unconnected datagrams, the `src` of the PvD table's routes
/// for connected IPv4 sockets.
/// IPv6 source selection follows RFC 6724 itself, so there only the counter
/// shows that the programs did it.
#[test]
fn unconnected_udp_gets_the_pvd_source_where_routing_would_pick_another() {
    skip_unless_root!();
    let lab = lab();
    let (app, config) = app_with_policy(&lab, &["wwan0"], "");
    let wwan = lab.network(1);
    let [a, b, c, _] = wwan.host_v4.octets();
    let preferred = Ipv4Addr::new(a, b, c, 3);
    lab.deprecate_host_address(1, Family::V4).unwrap();
    lab.add_host_address(1, preferred.into()).unwrap();
    let daemon = Daemon::start(&lab, &config).unwrap();

    let maps = daemon.maps_json().unwrap();
    let pvd = maps["pvds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "wwan0")
        .unwrap();
    assert_eq!(
        pvd["addr4"],
        preferred.to_string(),
        "mif's choice: {maps:#}"
    );
    // The kernel's own choice, as its prefix route for wwan0's subnet in
    // the main table names it: the primary, deprecated or not.
    let gateway_v4 = Ipv4Addr::new(a, b, c, 1).to_string();
    let own = lab
        .ip_host(&["-j", "-4", "route", "get", &gateway_v4])
        .unwrap();
    let own: serde_json::Value = serde_json::from_str(&own).unwrap();
    assert_eq!(
        own[0]["prefsrc"],
        wwan.host_v4.to_string(),
        "the kernel's own choice must differ from mif's, or this proves nothing: {own}"
    );
    // What routing gives a socket with wwan0's mark: mif's choice, from
    // the `src` of every IPv4 route of wwan0's table. connect4 binds
    // nothing: the connected rows below leave by that route's source.
    let mark = pvd_mark(&daemon, "wwan0").to_string();
    let internet_v4 = INTERNET_V4.to_string();
    let route = lab
        .ip_host(&["-j", "-4", "route", "get", &internet_v4, "mark", &mark])
        .unwrap();
    let route: serde_json::Value = serde_json::from_str(&route).unwrap();
    assert_eq!(route[0]["dev"], "wwan0", "{route}");
    assert_eq!(route[0]["prefsrc"], preferred.to_string(), "{route}");

    for (family, source) in [
        (Family::V4, IpAddr::from(preferred)),
        (Family::V6, wwan.host_v6.into()),
    ] {
        for proto in Proto::ALL {
            let before = stats_count(&daemon, "wwan0", "src_set");
            let bound_before = stats_count(&daemon, "wwan0", "bound");
            let reply = lab
                .client(Some(&app), proto, internet(family), None)
                .unwrap_or_else(|e| panic!("{proto} {family:?}: {e:#}"));
            let expected = ClientReply {
                network: wwan.name.clone(),
                source,
            };
            assert_eq!(reply, expected, "{proto} {family:?}");
            let after = stats_count(&daemon, "wwan0", "src_set");
            let bound_after = stats_count(&daemon, "wwan0", "bound");
            if proto == Proto::UdpUnconnected {
                assert!(
                    after > before,
                    "{proto} {family:?}: src set stayed {before}"
                );
            } else {
                // Given its source at connect() (IPv4 by the route, IPv6
                // by a bind), as "bound" counts: no datagram of its own
                // goes through sendmsg's rewrite.
                assert_eq!(after, before, "{proto} {family:?}: src set");
                assert_eq!(bound_after, bound_before + 1, "{proto} {family:?}: bound");
            }
        }
    }
    // A port the application bound itself, with the wildcard address, is
    // no choice of source either: its datagrams get the PvD's as well.
    let wildcard = IpAddr::from(Ipv4Addr::UNSPECIFIED);
    let reply = lab
        .client(
            Some(&app),
            Proto::UdpUnconnected,
            INTERNET_V4.into(),
            Some(wildcard),
        )
        .unwrap();
    assert_eq!(reply.source, IpAddr::from(preferred), "bound to {wildcard}");
}

/// The count `field` ("src_set", "bound", ...) of `pvd` over every policy,
/// as `mif stats --json` shows it.
fn stats_count(daemon: &Daemon, pvd: &str, field: &str) -> u64 {
    let out = daemon.mif(&["stats", "--json", "--interval", "0"]).unwrap();
    assert!(
        out.status.success(),
        "mif stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array()
        .unwrap_or_else(|| panic!("mif stats --json: {rows}"))
        .iter()
        .filter(|row| row["pvd"] == pvd)
        .map(|row| row[field].as_u64().unwrap())
        .sum()
}
