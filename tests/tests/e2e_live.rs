//! End-to-end: mif follows the networks live. Links go down and up, an
//! address is renumbered, a default route is removed, a router advertises
//! DNS servers, the daemon is SIGKILLed and restarted — and what a user
//! observes (the network a new connection leaves by, the source the peer
//! sees) follows at once.
use std::{
    net::IpAddr,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use mif_tests::e2e::{app_with_policy, echo_client, echo_server, two_networks as lab};
use mif_tests::{
    lab::{Family, Lab, Network, Proto, INTERNET_V4},
    mif::Daemon,
    skip_unless_root,
};

/// Within 5 s: what "at once" means for a daemon following netlink.
fn wait_until_leaves_by(lab: &Lab, cgroup: &Path, family: Family, net: &Network) {
    mif_tests::e2e::wait_until_leaves_by(lab, cgroup, family, net, Duration::from_secs(5));
}

fn bring_back(lab: &Lab, net: &Network) {
    lab.restore_uplink(net.index).unwrap();
}

#[test]
fn link_down_fails_over_and_link_up_returns_for_both_families() {
    skip_unless_root!();
    let lab = lab();
    let (app, config) = app_with_policy(&lab, &["wwan0", "wlan0"], "");
    let daemon = Daemon::start(&lab, &config).unwrap();
    let (wlan, wwan) = (lab.network(0), lab.network(1));

    for family in [Family::V4, Family::V6] {
        wait_until_leaves_by(&lab, &app, family, wwan);
    }
    lab.ip_host(&["link", "set", "wwan0", "down"]).unwrap();
    for family in [Family::V4, Family::V6] {
        wait_until_leaves_by(&lab, &app, family, wlan);
    }
    bring_back(&lab, wwan);
    for family in [Family::V4, Family::V6] {
        wait_until_leaves_by(&lab, &app, family, wwan);
    }
    let maps = daemon.maps_json().unwrap();
    let fallbacks = mif_tests::e2e::counter_total(&maps, "fallback");
    assert!(fallbacks >= 2, "{maps:#}");
}

#[test]
fn carrier_loss_fails_over_and_carrier_return_steers_back() {
    skip_unless_root!();
    let lab = lab();
    let (app, config) = app_with_policy(&lab, &["wwan0", "wlan0"], "");
    let _daemon = Daemon::start(&lab, &config).unwrap();
    let (wlan, wwan) = (lab.network(0), lab.network(1));

    wait_until_leaves_by(&lab, &app, Family::V4, wwan);
    // wwan0 stays up, without a carrier: a link-down event nonetheless.
    lab.set_carrier(wwan.index, false).unwrap();
    let state = lab.ip_host(&["link", "show", "dev", "wwan0"]).unwrap();
    assert!(
        state.contains("NO-CARRIER") && state.contains(",UP"),
        "{state}"
    );
    for family in [Family::V4, Family::V6] {
        wait_until_leaves_by(&lab, &app, family, wlan);
    }
    lab.set_carrier(wwan.index, true).unwrap();
    bring_back(&lab, wwan);
    for family in [Family::V4, Family::V6] {
        wait_until_leaves_by(&lab, &app, family, wwan);
    }
}

#[test]
fn strict_policies_refuse_while_their_pvd_is_down_and_resume_after() {
    skip_unless_root!();
    let lab = lab();
    let (app, config) = app_with_policy(&lab, &["wwan0"], "strict = true");
    let _daemon = Daemon::start(&lab, &config).unwrap();
    let wwan = lab.network(1);
    wait_until_leaves_by(&lab, &app, Family::V4, wwan);
    lab.ip_host(&["link", "set", "wwan0", "down"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match lab.client(Some(&app), Proto::Tcp, INTERNET_V4.into(), None) {
            Err(e) if format!("{e:#}").contains("socket: Operation not permitted") => break,
            Ok(reply) => assert_eq!(
                reply.network, "wwan0",
                "a strict app leaked onto {}",
                reply.network
            ),
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "strict sockets were never refused"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    bring_back(&lab, wwan);
    wait_until_leaves_by(&lab, &app, Family::V4, wwan);
}

#[test]
fn renumbering_and_default_route_removal_are_followed() {
    skip_unless_root!();
    let lab = lab();
    let (app, config) = app_with_policy(&lab, &["wwan0", "wlan0"], "");
    let _daemon = Daemon::start(&lab, &config).unwrap();
    let (wlan, wwan) = (lab.network(0), lab.network(1));
    wait_until_leaves_by(&lab, &app, Family::V4, wwan);

    // Renumber wwan0 to .3 within the same prefix: new connections use it.
    lab.ip_host(&[
        "addr",
        "del",
        &format!("{}/24", wwan.host_v4),
        "dev",
        "wwan0",
    ])
    .unwrap();
    lab.ip_host(&["addr", "add", "198.18.1.3/24", "dev", "wwan0"])
        .unwrap();
    lab.ip_host(&[
        "route",
        "replace",
        "default",
        "via",
        &wwan.gateway_v4.to_string(),
        "dev",
        "wwan0",
        "metric",
        "200",
    ])
    .unwrap();
    let renumbered = Network {
        host_v4: "198.18.1.3".parse().unwrap(),
        ..wwan.clone()
    };
    wait_until_leaves_by(&lab, &app, Family::V4, &renumbered);

    // Without an IPv4 default route wwan0 is unavailable for IPv4 only.
    lab.ip_host(&[
        "-4",
        "route",
        "del",
        "default",
        "via",
        &wwan.gateway_v4.to_string(),
        "dev",
        "wwan0",
    ])
    .unwrap();
    wait_until_leaves_by(&lab, &app, Family::V4, wlan);
    wait_until_leaves_by(&lab, &app, Family::V6, wwan);
}

#[test]
fn a_router_advertisement_with_rdnss_becomes_the_pvds_dns_servers() {
    skip_unless_root!();
    let lab = lab();
    let (_app, config) = app_with_policy(&lab, &["wwan0"], "");
    let daemon = Daemon::start(&lab, &config).unwrap();

    let _radvd = lab
        .advertise_rdnss(1, "2001:db8:1::53".parse().unwrap())
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let maps = daemon.maps_json().unwrap();
        let wwan = maps["pvds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "wwan0")
            .unwrap()
            .clone();
        if wwan["dns"] == serde_json::json!(["2001:db8:1::53"]) {
            let wlan = maps["pvds"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "wlan0")
                .unwrap()
                .clone();
            assert_eq!(
                wlan["dns"],
                serde_json::json!([]),
                "the RA was heard on wwan0 only"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no RDNSS learned: {wwan:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sigkill_and_restart_never_misroute_a_connection_and_never_duplicate_programs() {
    skip_unless_root!();
    let lab = lab();
    let (app, config) = app_with_policy(&lab, &["wwan0"], "strict = true");
    let first = Daemon::start(&lab, &config).unwrap();
    let wwan = lab.network(1).clone();

    // A client connecting in a loop for the whole test.
    let stop = AtomicBool::new(false);
    let (results, restarted) = std::thread::scope(|scope| {
        let looper = scope.spawn(|| {
            let mut results = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let result = lab.client(Some(&app), Proto::Tcp, INTERNET_V4.into(), None);
                results.push(result.map_err(|e| format!("{e:#}")));
            }
            results
        });
        std::thread::sleep(Duration::from_millis(300));
        let restarted = first.kill_hard().and_then(|()| {
            std::thread::sleep(Duration::from_millis(300));
            let second = Daemon::start(&lab, &config)?;
            std::thread::sleep(Duration::from_millis(300));
            Ok(second)
        });
        // Stop the loop whatever happened, or the scope never ends.
        stop.store(true, Ordering::Relaxed);
        (looper.join().unwrap(), restarted)
    });
    let second = restarted.unwrap();
    let maps = second.maps_json().unwrap();
    let attached = &maps["instance"]["attached"];
    for program in [
        "mif_sock_create",
        "mif_connect4",
        "mif_connect6",
        "mif_sendmsg4",
        "mif_sendmsg6",
    ] {
        assert_eq!(
            attached[program], 1,
            "{program} attached {} times: {maps:#}",
            attached[program]
        );
    }
    second.stop().unwrap();
    assert!(
        results.len() >= 10,
        "only {} connections tried",
        results.len()
    );
    for r in &results {
        let reply = r
            .as_ref()
            .unwrap_or_else(|e| panic!("a connection failed: {e}"));
        assert_eq!(
            (reply.network.as_str(), reply.source),
            ("wwan0", IpAddr::from(wwan.host_v4))
        );
    }
}

/// An idle TCP connection of `app` to an echo service on wwan0's router,
/// proven up by one echoed line: the client, its stdin (dropping it ends
/// the client) and the echo server.
fn echo_connection(lab: &Lab, app: &Path) -> (std::process::Child, std::process::ChildStdin) {
    echo_server(lab, 1);
    echo_client(lab, app)
}

#[test]
fn tcp_connections_on_a_lost_pvd_are_reset_when_the_policy_asks() {
    skip_unless_root!();
    let lab = lab();
    let (app, config) = app_with_policy(&lab, &["wwan0", "wlan0"], "reset = true");
    let _daemon = Daemon::start(&lab, &config).unwrap();
    let (mut child, stdin) = echo_connection(&lab, &app);

    lab.ip_host(&["link", "set", "wwan0", "down"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the idle connection on the lost PvD was not reset");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
}

/// A connection opened before its cgroup had a strict policy carries no
/// mark: it follows the main table, here to wlan0's network, and the
/// egress guard drops whatever it sends there once the policy is strict
/// to wwan0. With `reset = true` it is reset when the policy arrives (here
/// from the CLI); without `reset` it stays (and hangs), and a connection
/// the policy steers (to the server behind wwan0) is not reset.
#[test]
fn connections_older_than_a_strict_reset_policy_are_reset_when_it_arrives() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let calm = lab.create_cgroup("calm").unwrap();
    let daemon = Daemon::start(&lab, "").unwrap();
    echo_server(&lab, 0);
    echo_server(&lab, 1);
    let (mut older, _older_in) = echo_client(&lab, &app);
    let (mut kept, _kept_in) = echo_client(&lab, &calm);
    let set = |rel: &str, extra: &[&str]| {
        let cgroup = format!("{}/{rel}", lab.cgroup_rel());
        let mut args = vec!["policy", "set", &cgroup, "--prefer", "wwan0", "--strict"];
        args.extend_from_slice(extra);
        let out = daemon.mif(&args).unwrap();
        assert!(
            out.status.success(),
            "policy set: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    set("calm", &[]);
    set("app", &["--reset"]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while older.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = older.kill();
            panic!("the connection older than the policy was not reset");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Steered ones, opened under the policy, stay.
    let (mut steered, _steered_in) = echo_client(&lab, &app);
    let out = daemon.mif(&["policy", "list"]).unwrap();
    assert!(out.status.success());
    assert!(
        kept.try_wait().unwrap().is_none(),
        "reset although its policy does not ask for it"
    );
    assert!(
        steered.try_wait().unwrap().is_none(),
        "a connection the policy steers was reset"
    );
    let _ = kept.kill();
    let _ = steered.kill();
}

/// The negative control: without `reset`, the same connection outlives
/// the pass that handled the loss (new sockets already leave by wlan0).
#[test]
fn tcp_connections_on_a_lost_pvd_stay_without_reset() {
    skip_unless_root!();
    let lab = lab();
    let (app, config) = app_with_policy(&lab, &["wwan0", "wlan0"], "");
    let _daemon = Daemon::start(&lab, &config).unwrap();
    let (mut child, stdin) = echo_connection(&lab, &app);

    lab.ip_host(&["link", "set", "wwan0", "down"]).unwrap();
    wait_until_leaves_by(&lab, &app, Family::V4, lab.network(0));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the connection was closed although the policy does not ask for resets"
    );
    drop(stdin);
    let _ = child.kill();
}

#[test]
fn a_thousand_link_flaps_leak_nothing() {
    skip_unless_root!();
    let lab = lab();
    let (app, config) = app_with_policy(&lab, &["wwan0", "wlan0"], "");
    let daemon = Daemon::start(&lab, &config).unwrap();
    let wwan = lab.network(1);
    wait_until_leaves_by(&lab, &app, Family::V4, wwan);

    let snapshot = |lab: &Lab| {
        let rules = lab.ip_host(&["rule"]).unwrap() + &lab.ip_host(&["-6", "rule"]).unwrap();
        let routes = lab
            .ip_host(&["route", "show", "table", "all", "proto", "241"])
            .unwrap()
            + &lab
                .ip_host(&["-6", "route", "show", "table", "all", "proto", "241"])
                .unwrap();
        let maps = daemon.maps_json().unwrap();
        (
            rules,
            routes,
            maps["pvds"].as_array().unwrap().len(),
            maps["policies"].as_array().unwrap().len(),
        )
    };
    let before = snapshot(&lab);
    let fds_before = daemon.open_fds().unwrap();

    // One `ip -batch` for all flaps: 2,000 link changes in a burst.
    let batch = std::env::temp_dir().join(format!("mif-flaps-{}", lab.host_ns_name()));
    let lines: String = (0..1000)
        .map(|_| "link set wwan0 down\nlink set wwan0 up\n".to_string())
        .collect();
    std::fs::write(&batch, lines).unwrap();
    lab.ip_host(&["-batch", batch.to_str().unwrap()]).unwrap();
    let _ = std::fs::remove_file(&batch);
    bring_back(&lab, wwan);
    wait_until_leaves_by(&lab, &app, Family::V4, wwan);
    wait_until_leaves_by(&lab, &app, Family::V6, wwan);

    assert_eq!(snapshot(&lab), before);
    let fds_after = daemon.open_fds().unwrap();
    assert!(
        fds_after <= fds_before + 2,
        "fds grew from {fds_before} to {fds_after}"
    );
}

#[test]
fn a_re_created_interface_with_a_new_index_is_steered_again() {
    skip_unless_root!();
    let lab = lab();
    let (app, config) = app_with_policy(&lab, &["wwan0", "wlan0"], "");
    let daemon = Daemon::start(&lab, &config).unwrap();
    let (wlan, wwan) = (lab.network(0), lab.network(1));
    wait_until_leaves_by(&lab, &app, Family::V4, wwan);
    let old_index = lab.host_ifindex("wwan0").unwrap();

    // The modem goes away (the veth's peer in the router goes with it)...
    lab.ip_host(&["link", "del", "wwan0"]).unwrap();
    wait_until_leaves_by(&lab, &app, Family::V4, wlan);
    // ...and comes back as a new interface of the same name.
    lab.ip_host(&[
        "link",
        "add",
        "wwan0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &wwan.router_ns,
    ])
    .unwrap();
    lab.ip_host(&[
        "addr",
        "add",
        &format!("{}/24", wwan.host_v4),
        "dev",
        "wwan0",
    ])
    .unwrap();
    lab.ip_router(
        1,
        &[
            "addr",
            "add",
            &format!("{}/24", wwan.gateway_v4),
            "dev",
            "eth0",
        ],
    )
    .unwrap();
    lab.ip_router(
        1,
        &[
            "-6",
            "addr",
            "add",
            &format!("{}/64", wwan.gateway_v6),
            "dev",
            "eth0",
            "nodad",
        ],
    )
    .unwrap();
    lab.ip_router(1, &["link", "set", "eth0", "up"]).unwrap();
    bring_back(&lab, wwan);
    let new_index = lab.host_ifindex("wwan0").unwrap();
    assert_ne!(old_index, new_index);

    wait_until_leaves_by(&lab, &app, Family::V4, wwan);
    wait_until_leaves_by(&lab, &app, Family::V6, wwan);
    let maps = daemon.maps_json().unwrap();
    let pvd = maps["pvds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "wwan0")
        .unwrap()
        .clone();
    assert_eq!(pvd["ifindex"], new_index, "{maps:#}");
}

#[test]
fn keep_steering_hands_over_to_the_next_daemon_and_cleanup_removes_everything() {
    skip_unless_root!();
    let lab = lab();
    let (app, config) = app_with_policy(&lab, &["wwan0"], "");
    let wwan = lab.network(1);
    let rules_before = lab.ip_host(&["rule"]).unwrap();

    // A daemon stopped with --keep-steering leaves steering in place.
    let first = Daemon::start_with(&lab, &config, &["--keep-steering"]).unwrap();
    let pin_dir = first.instance.pin_dir.clone();
    let instance = first.instance.clone();
    first.stop().unwrap();
    wait_until_leaves_by(&lab, &app, Family::V4, wwan);
    assert!(pin_dir.exists());

    // The next one adopts it, and a plain stop removes everything.
    let second = Daemon::start(&lab, &config).unwrap();
    wait_until_leaves_by(&lab, &app, Family::V6, wwan);
    second.kill_hard().unwrap();
    // After a crash, `mif cleanup` is the way back to a clean host.
    let mut args = vec!["cleanup".to_string()];
    args.extend(instance.args());
    let out = mif_tests::mif::run_mif(&lab, &args).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!pin_dir.exists(), "pins left after cleanup");
    assert_eq!(lab.ip_host(&["rule"]).unwrap(), rules_before);
    assert_eq!(
        lab.ip_host(&["route", "show", "table", "all", "proto", "241"])
            .unwrap(),
        ""
    );
    assert_eq!(
        lab.sockmark(Some(&app), Family::V4).unwrap().mark,
        0,
        "still steering after cleanup"
    );
}
