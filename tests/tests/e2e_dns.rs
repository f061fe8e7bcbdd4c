//! End-to-end: DNS follows the application's network. Every lab network
//! runs a real resolver (dnsmasq) answering the same name with addresses
//! of its own, and the lab's host runs a local stub on 127.0.0.53 and ::1
//! with answers of its own; `dig` and `getent hosts` (glibc) in steered
//! cgroups must get their own PvD's answer, and each resolver must see
//! queries only from its own network's source address.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::{Duration, Instant},
};

use mif_tests::e2e::{policy_toml as policy, two_networks as lab};
use mif_tests::{
    lab::{big_txt_chunk, Dnsmasq, Lab, Proto, Resolver, BIG_TXT, CORP_DOMAIN, INTERNET_V4},
    mif::Daemon,
    skip_unless_root,
};

const STUB_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53));
const STUB_V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// Each network's PvD with its own router as resolver.
fn pvds_with_resolvers(lab: &Lab) -> String {
    lab.networks()
        .iter()
        .map(|n| {
            format!(
                "[[pvd]]\nname = {:?}\ndns = [\"{}\", \"{}\"]\n",
                n.name, n.gateway_v4, n.gateway_v6
            )
        })
        .collect()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts `resolver` answered `out` (dig or getent) and no other did.
#[track_caller]
fn assert_answered_by(out: &std::process::Output, resolver: Resolver, what: &str) {
    let text = stdout(out);
    assert!(
        resolver.answered(&text),
        "{what}: expected {resolver:?}'s answer, got {text:?} (stderr {:?})",
        String::from_utf8_lossy(&out.stderr)
    );
    for other in [Resolver::Network(0), Resolver::Network(1), Resolver::Stub] {
        if other != resolver {
            assert!(!other.answered(&text), "{what}: {other:?} answered: {text}");
        }
    }
}

/// The sum of counter `field` over the policy of cgroup `rel`, in `mif maps
/// --json` output.
fn counter(maps: &serde_json::Value, rel: &str, field: &str) -> u64 {
    let id = maps["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["cgroup"] == rel)
        .unwrap_or_else(|| panic!("no policy for {rel}: {maps:#}"))["id"]
        .clone();
    maps["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["policy"] == id)
        .map(|c| c[field].as_u64().unwrap())
        .sum()
}

#[track_caller]
fn assert_sources(server: &Dnsmasq, allowed: &[IpAddr]) {
    let seen = server.query_sources();
    assert!(
        !seen.is_empty(),
        "{:?} saw no query: {}",
        server.resolver,
        server.log_text()
    );
    for source in &seen {
        assert!(
            allowed.contains(source),
            "{:?} saw a query from {source}, expected only {allowed:?}",
            server.resolver
        );
    }
}

#[test]
fn two_cgroups_resolve_through_their_own_networks_resolvers() {
    skip_unless_root!();
    let lab = lab();
    let wlan_app = lab.create_cgroup("wlan-app").unwrap();
    let wwan_app = lab.create_cgroup("wwan-app").unwrap();
    let (rel_wlan, rel_wwan) = (
        format!("{}/wlan-app", lab.cgroup_rel()),
        format!("{}/wwan-app", lab.cgroup_rel()),
    );
    let r0 = lab.start_resolver(0, &[]).unwrap();
    let r1 = lab.start_resolver(1, &[]).unwrap();
    let stub = lab.start_stub_resolver().unwrap();
    let config = pvds_with_resolvers(&lab)
        + &policy(&rel_wlan, &["wlan0"], "dns = \"pvd\"")
        + &policy(&rel_wwan, &["wwan0"], "dns = \"pvd\"");
    let daemon = Daemon::start(&lab, &config).unwrap();

    let (wlan, wwan) = (lab.network(0).clone(), lab.network(1).clone());
    for (cgroup, resolver) in [
        (&wlan_app, Resolver::Network(0)),
        (&wwan_app, Resolver::Network(1)),
    ] {
        let who = format!("{resolver:?}'s app");
        // The local stub, over UDP and TCP, IPv4 and IPv6 (the PvDs have
        // resolvers of both families).
        for (server, tcp) in [
            (STUB_V4, false),
            (STUB_V4, true),
            (STUB_V6, false),
            (STUB_V6, true),
        ] {
            let out = lab.dig(Some(cgroup), server, tcp, "A").unwrap();
            assert_answered_by(&out, resolver, &format!("{who}: dig @{server} tcp={tcp}"));
        }
        // The other network's resolver, asked by name: still its own.
        let other = if resolver == Resolver::Network(0) {
            &wwan
        } else {
            &wlan
        };
        let out = lab
            .dig(Some(cgroup), other.gateway_v4.into(), false, "A")
            .unwrap();
        assert_answered_by(&out, resolver, &format!("{who}: dig @other network"));
        // glibc, through resolv.conf: its reply check accepts only the
        // server it asked, so this fails unless replies are translated back.
        for nameserver in [STUB_V4, STUB_V6, other.gateway_v4.into()] {
            let out = lab.getent_hosts(Some(cgroup), nameserver).unwrap();
            assert!(
                out.status.success(),
                "{who}: getent via {nameserver}: {out:?}"
            );
            assert_answered_by(&out, resolver, &format!("{who}: getent via {nameserver}"));
        }
    }

    assert_sources(&r0, &[wlan.host_v4.into(), wlan.host_v6.into()]);
    assert_sources(&r1, &[wwan.host_v4.into(), wwan.host_v6.into()]);
    assert!(
        stub.query_sources().is_empty(),
        "the stub was asked: {}",
        stub.log_text()
    );
    // 5 digs and 3 lookups (one socket each) per app, at least.
    let maps = daemon.maps_json().unwrap();
    for rel in [&rel_wlan, &rel_wwan] {
        let redirected = counter(&maps, rel, "dns");
        assert!(redirected >= 8, "{rel}: {redirected} redirected");
    }
    let stats = daemon.mif(&["stats"]).unwrap();
    assert!(stdout(&stats).contains("DNS"), "{stats:?}");
}

#[test]
fn system_dns_is_left_alone_and_a_pvd_without_resolvers_falls_back_or_refuses() {
    skip_unless_root!();
    let lab = lab();
    let system = lab.create_cgroup("system").unwrap();
    let loose = lab.create_cgroup("loose").unwrap();
    let strict = lab.create_cgroup("strict").unwrap();
    let rel = |c: &str| format!("{}/{c}", lab.cgroup_rel());
    let r1 = lab.start_resolver(1, &[]).unwrap();
    let stub = lab.start_stub_resolver().unwrap();
    // wlan0 has a resolver, wwan0 none (configured or learned).
    let config = format!(
        "[[pvd]]\nname = \"wlan0\"\ndns = [\"{}\"]\n",
        lab.network(0).gateway_v4
    ) + &policy(&rel("system"), &["wlan0"], "")
        + &policy(&rel("loose"), &["wwan0"], "dns = \"pvd\"")
        + &policy(&rel("strict"), &["wwan0"], "dns = \"pvd\"\nstrict = true");
    let daemon = Daemon::start(&lab, &config).unwrap();

    let out = lab.dig(Some(&system), STUB_V4, false, "A").unwrap();
    assert_answered_by(&out, Resolver::Stub, "dns = system");
    let out = lab.getent_hosts(Some(&system), STUB_V4).unwrap();
    assert_answered_by(&out, Resolver::Stub, "dns = system, getent");
    assert_eq!(
        counter(&daemon.maps_json().unwrap(), &rel("system"), "dns"),
        0
    );

    // No resolver on the PvD: the system's answers.
    let out = lab.dig(Some(&loose), STUB_V4, false, "A").unwrap();
    assert_answered_by(&out, Resolver::Stub, "no PvD resolver, not strict");
    let asked = stub.query_sources().len();

    // Strict: refused rather than asked elsewhere, over UDP and TCP.
    for tcp in [false, true] {
        let out = lab.dig(Some(&strict), STUB_V4, tcp, "A").unwrap();
        assert!(
            !Resolver::Stub.answered(&stdout(&out))
                && !Resolver::Network(1).answered(&stdout(&out)),
            "strict, tcp={tcp}: {out:?}"
        );
    }
    let out = lab.getent_hosts(Some(&strict), STUB_V4).unwrap();
    assert!(!out.status.success(), "strict getent: {out:?}");
    assert_eq!(stub.query_sources().len(), asked, "{}", stub.log_text());
    assert!(r1.query_sources().is_empty(), "{}", r1.log_text());
    assert!(counter(&daemon.maps_json().unwrap(), &rel("strict"), "denied") >= 2);
}

/// The hooks of DNS redirection's replies and of strict binds are attached
/// only once a policy needs them: a daemon whose policies need neither
/// leaves them waiting (and `mif status` says steering is whole), and a
/// policy set later that needs both works from its first query and bind.
#[test]
fn the_dns_and_strict_hooks_wait_until_a_policy_needs_them() {
    skip_unless_root!();
    let lab = lab();
    let _plain = lab.create_cgroup("plain").unwrap();
    let later = lab.create_cgroup("later").unwrap();
    let rel = |c: &str| format!("{}/{c}", lab.cgroup_rel());
    let _r1 = lab.start_resolver(1, &[]).unwrap();
    let _stub = lab.start_stub_resolver().unwrap();
    let config = pvds_with_resolvers(&lab) + &policy(&rel("plain"), &["wlan0"], "");
    let daemon = Daemon::start(&lab, &config).unwrap();
    let status = || -> serde_json::Value {
        let out = daemon.mif(&["status", "--json"]).unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let on_demand = mif_common::names::ON_DEMAND_HOOKS;
    let before = status();
    let mut waiting: Vec<&str> = (before["hooks_waiting"].as_array().unwrap().iter())
        .map(|h| h.as_str().unwrap())
        .collect();
    waiting.sort_unstable();
    let mut expected = on_demand.to_vec();
    expected.sort_unstable();
    assert_eq!(waiting, expected, "{before:#}");
    for hook in on_demand {
        assert_eq!(before["attached"][hook], 0, "{hook}: {before:#}");
    }
    assert_eq!(before["steering"], true, "{before:#}");

    let set = daemon
        .mif(&[
            "policy",
            "set",
            &rel("later"),
            "--prefer",
            "wwan0",
            "--dns",
            "pvd",
            "--strict",
        ])
        .unwrap();
    assert!(set.status.success(), "{set:?}");
    let after = status();
    assert_eq!(after["hooks_waiting"], serde_json::json!([]), "{after:#}");
    for hook in on_demand {
        assert_eq!(after["attached"][hook], 1, "{hook}: {after:#}");
    }
    // glibc takes only a reply from the server it asked: the stub's
    // address, put back by the recvmsg hook on wwan0's resolver's reply.
    let out = lab.getent_hosts(Some(&later), STUB_V4).unwrap();
    assert!(out.status.success(), "getent via the stub: {out:?}");
    assert_answered_by(&out, Resolver::Network(1), "getent, dns = pvd set later");
    // The bind hook refuses wlan0's address to the strict policy.
    let foreign = IpAddr::from(lab.network(0).host_v4);
    let bound = lab.client(Some(&later), Proto::Udp, INTERNET_V4.into(), Some(foreign));
    let refused = format!(
        "{:#}",
        bound.expect_err("a bind to wlan0's address went through")
    );
    assert!(
        refused.contains("bind: Operation not permitted"),
        "{refused}"
    );
}

#[test]
fn dns_moves_with_the_traffic_on_failover() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let _r0 = lab.start_resolver(0, &[]).unwrap();
    let _r1 = lab.start_resolver(1, &[]).unwrap();
    let _stub = lab.start_stub_resolver().unwrap();
    let config = pvds_with_resolvers(&lab)
        + &policy(
            &format!("{}/app", lab.cgroup_rel()),
            &["wlan0", "wwan0"],
            "dns = \"pvd\"",
        );
    let _daemon = Daemon::start(&lab, &config).unwrap();

    let out = lab.dig(Some(&app), STUB_V4, false, "A").unwrap();
    assert_answered_by(&out, Resolver::Network(0), "before failover");
    lab.ip_host(&["link", "set", "wlan0", "down"]).unwrap();
    wait_for_answer(&lab, &app, Resolver::Network(1), "after wlan0 went down");
    lab.restore_uplink(0).unwrap();
    wait_for_answer(&lab, &app, Resolver::Network(0), "after wlan0 came back");
}

fn wait_for_answer(lab: &Lab, app: &Path, resolver: Resolver, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = lab.getent_hosts(Some(app), STUB_V4).unwrap();
        if resolver.answered(&stdout(&out)) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: last got {out:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_resolver_learned_from_a_router_advertisement_is_used() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let learned: IpAddr = "2001:db8:1::53".parse().unwrap();
    let r1 = lab.start_resolver(1, &[learned]).unwrap();
    let _stub = lab.start_stub_resolver().unwrap();
    let rel = format!("{}/app", lab.cgroup_rel());
    let daemon = Daemon::start(&lab, &policy(&rel, &["wwan0"], "dns = \"pvd\"")).unwrap();

    // Before any RA the PvD has no resolver: the stub answers.
    let out = lab.dig(Some(&app), STUB_V6, false, "A").unwrap();
    assert_answered_by(&out, Resolver::Stub, "before the RA");

    let _radvd = lab.advertise_rdnss(1, learned).unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = lab.dig(Some(&app), STUB_V6, false, "A").unwrap();
        if Resolver::Network(1).answered(&stdout(&out)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the RA's resolver is not used: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = lab.getent_hosts(Some(&app), STUB_V6).unwrap();
    assert_answered_by(&out, Resolver::Network(1), "getent via ::1 after the RA");
    assert_sources(&r1, &[lab.network(1).host_v6.into()]);
    // `mif pvd list` says where the resolver came from.
    let list = stdout(&daemon.mif(&["pvd", "list"]).unwrap());
    assert!(list.contains(&learned.to_string()), "{list}");
}

#[test]
fn names_in_a_pvds_declared_domains_go_to_its_resolvers_whatever_the_apps_pvd() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let system = lab.create_cgroup("system").unwrap();
    let r0 = lab.start_resolver(0, &[]).unwrap();
    let r1 = lab.start_resolver(1, &[]).unwrap();
    let stub = lab.start_stub_resolver().unwrap();
    let (wlan, wwan) = (lab.network(0).clone(), lab.network(1).clone());
    let config = format!(
        "[dns]\nforwarder_port = 5400\n\
         [[pvd]]\nname = \"wlan0\"\ndns = [\"{}\", \"{}\"]\n\
         [[pvd]]\nname = \"wwan0\"\ndns = [\"{}\"]\ndomains = [\"{CORP_DOMAIN}\"]\n",
        wlan.gateway_v4, wlan.gateway_v6, wwan.gateway_v4
    ) + &policy(
        &format!("{}/app", lab.cgroup_rel()),
        &["wlan0"],
        "dns = \"pvd\"",
    ) + &policy(&format!("{}/system", lab.cgroup_rel()), &["wlan0"], "");
    let daemon = Daemon::start(&lab, &config).unwrap();

    let corp = format!("host.{CORP_DOMAIN}");
    for (server, tcp) in [
        (STUB_V4, false),
        (STUB_V4, true),
        (STUB_V6, false),
        (STUB_V6, true),
    ] {
        let what = format!("@{server} tcp={tcp}");
        let out = lab.dig_name(Some(&app), server, tcp, &corp, "A").unwrap();
        assert_answered_by(&out, Resolver::Network(1), &format!("{corp} {what}"));
        let out = lab.dig(Some(&app), server, tcp, "A").unwrap();
        assert_answered_by(&out, Resolver::Network(0), &format!("whoami {what}"));
    }
    // Truncation passes through: without EDNS the UDP answer comes back
    // truncated (TC), dig retries over TCP, both through the forwarder.
    let out = lab
        .output_in(
            Some(&app),
            "dig",
            [
                "@127.0.0.53",
                BIG_TXT,
                "TXT",
                "+noedns",
                "+short",
                "+time=2",
                "+tries=1",
            ],
        )
        .unwrap();
    assert!(
        stdout(&out).contains(&big_txt_chunk(Resolver::Network(1))),
        "{out:?}"
    );
    let big_asked = r1.queries().iter().filter(|(n, _)| n == BIG_TXT).count();
    assert_eq!(big_asked, 2, "UDP, then TCP after TC: {}", r1.log_text());
    // glibc through the forwarder: replies must look like the stub's.
    let out = lab.getent_hosts(Some(&app), STUB_V4).unwrap();
    assert_answered_by(&out, Resolver::Network(0), "getent via the forwarder");
    // dns = "system" is not redirected at all, declared domains included.
    let out = lab
        .dig_name(Some(&system), STUB_V4, false, &corp, "A")
        .unwrap();
    assert_answered_by(&out, Resolver::Stub, "dns = system");

    // Each resolver saw only its own network's source, and the declared
    // domain went to wwan0's alone.
    assert_sources(&r0, &[wlan.host_v4.into(), wlan.host_v6.into()]);
    assert_sources(&r1, &[wwan.host_v4.into(), wwan.host_v6.into()]);
    assert!(
        r0.queries()
            .iter()
            .all(|(name, _)| !name.ends_with(CORP_DOMAIN)),
        "{}",
        r0.log_text()
    );
    assert!(
        r1.queries()
            .iter()
            .all(|(name, _)| name.ends_with(CORP_DOMAIN)),
        "{}",
        r1.log_text()
    );
    assert_eq!(stub.query_sources().len(), 1, "{}", stub.log_text());

    // Stopping the daemon turns the redirection to its forwarder off.
    daemon.stop().unwrap();
    let out = lab.dig(Some(&app), STUB_V4, false, "A").unwrap();
    assert_answered_by(&out, Resolver::Stub, "after the daemon stopped");
}
