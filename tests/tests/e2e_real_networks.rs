//! Real networks as they meet mif: a real OpenVPN tunnel in the three shapes
//! VPNs take (split, full tunnel with `redirect-gateway def1`, `default dev
//! tun0`), a second router announcing a Route Information Option, a
//! DHCP-only network whose resolver only the lease names, and destinations
//! a policy excludes.
//!
//! Each VPN test checks what a user would observe: the strict VPN app's
//! peer sees the tunnel address, nothing of it reaches another network
//! (router counters, the VPN's own UDP excepted), an unsteered app leaves
//! exactly as it did before mif started, an app steered to wlan0 bypasses
//! a full tunnel, and the VPN going and coming back (new ifindex) refuses
//! and then steers the strict app again.
use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use mif_tests::e2e::{internet, policy_toml, two_networks};
use mif_tests::{
    lab::{
        ArrivalCounter, Arrivals, ClientFailure, ClientReply, Family, Lab, Proto, Resolver, Vpn,
        VpnShape, CORP_DOMAIN, DHCP_ONLY_ANSWER, DHCP_ONLY_NAME, DNS_NAME, SECOND_ROUTER_V6,
        VPN_NETWORK_NAME,
    },
    mif::Daemon,
    skip_unless_root,
};

/// What an unsteered client sees, in a form two runs can be compared by
/// (an error's text carries timings and pids): a process in a cgroup of
/// the lab's that has no policy, so mif's programs run for its sockets and
/// mif's rules are in its routing, as for any application on the host.
fn unsteered(lab: &Lab, family: Family) -> Result<ClientReply, ()> {
    let plain = lab.cgroup_root().join("plain");
    if !plain.exists() {
        lab.create_cgroup("plain")
            .expect("creating the plain cgroup");
    }
    lab.client(Some(&plain), Proto::Tcp, internet(family), None)
        .map_err(|_| ())
}

/// Polls until `cgroup`'s TCP client gets `expected`; returns how long it
/// took, failing after `within` with the last answer.
fn wait_for(
    lab: &Lab,
    cgroup: &Path,
    family: Family,
    expected: &ClientReply,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = lab.client(Some(cgroup), Proto::Tcp, internet(family), None);
        match &got {
            Ok(reply) if reply == expected => return start.elapsed(),
            _ if start.elapsed() > within => {
                panic!("{family:?}: expected {expected:?} within {within:?}, last got {got:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Whether a client failed with EPERM at socket(): strict refusal.
fn refused_at_socket(err: &anyhow::Error) -> bool {
    err.downcast_ref::<ClientFailure>()
        .is_some_and(|f| f.stderr.starts_with("socket: Operation not permitted"))
}

fn through_tunnel(vpn: &Vpn, family: Family) -> ClientReply {
    ClientReply {
        network: VPN_NETWORK_NAME.into(),
        source: match family {
            Family::V4 => vpn.client_v4().into(),
            Family::V6 => vpn.client_v6().into(),
        },
    }
}

/// Counters of what arrives at wlan0's router (the VPN's own UDP excepted)
/// and at wwan0's: the networks a strict VPN app must never reach.
struct Leaks<'lab>(ArrivalCounter<'lab>, ArrivalCounter<'lab>);

impl<'lab> Leaks<'lab> {
    fn start(lab: &'lab Lab) -> Self {
        Self(
            lab.count_arrivals(0, Arrivals::ExceptVpn).unwrap(),
            lab.count_arrivals(1, Arrivals::All).unwrap(),
        )
    }

    #[track_caller]
    fn assert_none(&self, what: &str) {
        assert_eq!(self.0.packets().unwrap(), 0, "{what}: leaked to wlan0");
        assert_eq!(self.1.packets().unwrap(), 0, "{what}: leaked to wwan0");
    }
}

fn vpn_case(shape: VpnShape) {
    let lab = two_networks();
    let families = [Family::V4, Family::V6];
    // The host without mif, with the VPN down and up.
    let without_vpn: Vec<_> = families.iter().map(|f| unsteered(&lab, *f)).collect();
    let vpn = lab.start_vpn(shape).expect("starting the VPN");
    let without_mif: Vec<_> = families.iter().map(|f| unsteered(&lab, *f)).collect();

    let secure = lab.create_cgroup("secure").unwrap();
    let bypass = lab.create_cgroup("bypass").unwrap();
    let rel = lab.cgroup_rel();
    let config = format!(
        "[[pvd]]\nname = \"vpn\"\ninterface = \"tun0\"\n\n{}{}",
        policy_toml(&format!("{rel}/secure"), &["vpn"], "strict = true"),
        policy_toml(&format!("{rel}/bypass"), &["wlan0"], ""),
    );
    let mut daemon = Daemon::start(&lab, &config).unwrap();
    let ready = Duration::from_secs(5);
    for family in families {
        wait_for(&lab, &secure, family, &through_tunnel(&vpn, family), ready);
    }
    // The invariant: unsteered traffic leaves exactly as without mif.
    let with_mif: Vec<_> = families.iter().map(|f| unsteered(&lab, *f)).collect();
    assert_eq!(
        with_mif, without_mif,
        "{shape:?}: unsteered traffic changed"
    );

    // Nothing of the strict app reaches a network other than the tunnel.
    let leaks = Leaks::start(&lab);
    for family in families {
        for proto in [Proto::Tcp, Proto::Udp] {
            let reply = lab.client(Some(&secure), proto, internet(family), None);
            assert_eq!(reply.unwrap(), through_tunnel(&vpn, family), "{proto:?}");
        }
    }
    leaks.assert_none(&format!("{shape:?}"));

    // Split tunnelling the other way: wlan0 with its own source, whatever
    // the main table says.
    let wlan = lab.network(0);
    for family in families {
        let expected = ClientReply {
            network: wlan.name.clone(),
            source: mif_tests::e2e::host_addr(wlan, family),
        };
        let reply = lab.client(Some(&bypass), Proto::Tcp, internet(family), None);
        assert_eq!(reply.unwrap(), expected, "{shape:?}: bypass {family:?}");
    }

    // The VPN goes away: refused, with zero packets elsewhere; unsteered
    // traffic is as without the VPN.
    vpn.stop_client().unwrap();
    let leaks = Leaks::start(&lab);
    let deadline = Instant::now() + Duration::from_secs(2);
    for family in families {
        loop {
            let got = lab.client(Some(&secure), Proto::Tcp, internet(family), None);
            if got.as_ref().is_err_and(refused_at_socket) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{family:?}: not refused: {got:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Refused at socket(): no packet can have left, however long one waits.
    for family in families {
        let got = lab.client(Some(&secure), Proto::Udp, internet(family), None);
        assert!(got.as_ref().is_err_and(refused_at_socket), "{got:?}");
    }
    leaks.assert_none(&format!("{shape:?}, VPN down"));
    let vpn_down: Vec<_> = families.iter().map(|f| unsteered(&lab, *f)).collect();
    assert_eq!(vpn_down, without_vpn, "{shape:?}: unsteered, VPN down");

    // The VPN comes back on a new interface index: steered again at once.
    vpn.restart_client().unwrap();
    for family in families {
        let took = wait_for(
            &lab,
            &secure,
            family,
            &through_tunnel(&vpn, family),
            Duration::from_secs(2),
        );
        eprintln!("{shape:?} {family:?}: steered again {took:?} after the tunnel was back");
    }
    let again: Vec<_> = families.iter().map(|f| unsteered(&lab, *f)).collect();
    assert_eq!(
        again, without_mif,
        "{shape:?}: unsteered after the VPN came back"
    );
    let log = daemon.log();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn a_split_vpn_carries_only_its_apps() {
    skip_unless_root!();
    vpn_case(VpnShape::Split);
}

#[test]
fn a_full_tunnel_vpn_can_be_bypassed_and_never_blackholes_the_host() {
    skip_unless_root!();
    vpn_case(VpnShape::FullTunnel);
}

#[test]
fn a_device_default_vpn_is_an_uplink() {
    skip_unless_root!();
    vpn_case(VpnShape::DefaultDev);
}

/// A prefix only a second router on wlan0's link reaches (announced by an
/// RFC 4191 Route Information Option): sockets steered to wlan0 reach it
/// through that router, because wlan0's table carries the route.
#[test]
fn route_information_options_reach_steered_sockets() {
    skip_unless_root!();
    let lab = two_networks();
    let second = lab.add_second_router().expect("second router");
    let app = lab.create_cgroup("app").unwrap();
    let config = policy_toml(&format!("{}/app", lab.cgroup_rel()), &["wlan0"], "");
    let daemon = Daemon::start(&lab, &config).unwrap();
    let expected = ClientReply {
        network: second.name().into(),
        source: lab.network(0).host_v6.into(),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = lab.client(Some(&app), Proto::Tcp, SECOND_ROUTER_V6.into(), None);
        match got {
            Ok(reply) if reply == expected => break,
            _ if Instant::now() > deadline => panic!("expected {expected:?}, got {got:?}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let pvds = daemon.mif(&["pvd", "list", "--json"]).unwrap();
    let text = String::from_utf8_lossy(&pvds.stdout);
    assert!(text.contains("2001:db8:77::/64 via fe80::"), "{text}");
    assert!(text.contains("(ra)"), "{text}");
}

/// An IPv4 network that hands out its resolver by DHCP only: `dns = "pvd"`
/// queries of an app steered there go to the resolver the lease named.
#[test]
fn a_dhcp_only_network_resolves_through_the_leases_resolver() {
    skip_unless_root!();
    let lab = two_networks();
    let lease = lab.use_dhcp(1).expect("DHCP on wwan0");
    let app = lab.create_cgroup("app").unwrap();
    let config = format!(
        "[dns]\nleases = [{:?}]\n\n{}",
        lease.lease_file().display().to_string(),
        policy_toml(
            &format!("{}/app", lab.cgroup_rel()),
            &["wwan0"],
            "dns = \"pvd\""
        ),
    );
    let daemon = Daemon::start(&lab, &config).unwrap();
    // Asked of wlan0's router, which does not know the name: only the
    // lease's resolver answers it.
    let asked: IpAddr = lab.network(0).gateway_v4.into();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = lab
            .dig_name(Some(&app), asked, false, DHCP_ONLY_NAME, "A")
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(&DHCP_ONLY_ANSWER.to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no answer from the lease's resolver: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pvds = daemon.mif(&["pvd", "list"]).unwrap();
    let text = String::from_utf8_lossy(&pvds.stdout);
    assert!(
        text.contains(&format!("{} (dhcp)", lease.dns_server())),
        "{text}"
    );
    assert!(
        text.contains(&format!("domains {} (dhcp)", lease.domain())),
        "{text}"
    );
}

/// `exclude` keeps the main table's route for some destinations of a
/// strict app steered to wwan0: wlan0's on-link prefix (by prefix, and by
/// interface name) is reached through wlan0; everything else still leaves
/// by wwan0 only.
#[test]
fn excluded_destinations_keep_the_main_tables_route() {
    skip_unless_root!();
    for exclude in ["\"198.18.0.0/24\"", "\"wlan0\""] {
        let lab = two_networks();
        let app = lab.create_cgroup("app").unwrap();
        let config = policy_toml(
            &format!("{}/app", lab.cgroup_rel()),
            &["wwan0"],
            &format!("strict = true\nexclude = [{exclude}]"),
        );
        let daemon = Daemon::start(&lab, &config).unwrap();
        let (wlan, wwan) = (lab.network(0), lab.network(1));
        mif_tests::e2e::wait_until_leaves_by(&lab, &app, Family::V4, wwan, Duration::from_secs(5));
        // wlan0's router itself: on-link through wlan0 in the main table.
        let lan: IpAddr = wlan.gateway_v4.into();
        let reply = lab.client(Some(&app), Proto::Tcp, lan, None).unwrap();
        assert_eq!(
            reply,
            ClientReply {
                network: wlan.name.clone(),
                source: wlan.host_v4.into(),
            },
            "{exclude}"
        );
        // The internet still only by wwan0.
        let leaks = lab.count_arrivals(0, Arrivals::All).unwrap();
        let reply = lab.client(Some(&app), Proto::Tcp, internet(Family::V4), None);
        assert_eq!(reply.unwrap().network, wwan.name, "{exclude}");
        assert_eq!(
            leaks.packets().unwrap(),
            0,
            "{exclude}: internet leaked to wlan0"
        );
        let maps = daemon.maps_json().unwrap();
        let excluded = mif_tests::e2e::counter_total(&maps, "excluded");
        assert!(excluded >= 1, "{maps:#}");
    }
}

/// A router that announces only a link-local resolver (RDNSS `fe80::53`)
/// and a search list (DNSSL `corp.lab`), as many home routers do: an app on
/// that network resolves through the link-local resolver (by the
/// forwarder, which gives it the interface as scope), and an app on another
/// network asks that resolver for names of the announced domain (RFC 6731)
/// and its own for the rest.
#[test]
fn ra_link_local_resolvers_answer_and_dnssl_domains_steer_queries() {
    skip_unless_root!();
    let lab = two_networks();
    let link_local: IpAddr = "fe80::53".parse().unwrap();
    let _wlan_dns = lab.start_resolver(0, &[]).unwrap();
    let _wwan_dns = lab.start_resolver(1, &[link_local]).unwrap();
    let _ra = lab
        .advertise_dns(1, link_local, &[CORP_DOMAIN])
        .expect("radvd");
    let on_wwan = lab.create_cgroup("on-wwan").unwrap();
    let on_wlan = lab.create_cgroup("on-wlan").unwrap();
    let rel = lab.cgroup_rel();
    let config = format!(
        "[[pvd]]\nname = \"wlan0\"\ndns = [\"{}\"]\n\n{}{}",
        lab.network(0).gateway_v4,
        policy_toml(&format!("{rel}/on-wwan"), &["wwan0"], "dns = \"pvd\""),
        policy_toml(&format!("{rel}/on-wlan"), &["wlan0"], "dns = \"pvd\""),
    );
    let daemon = Daemon::start(&lab, &config).unwrap();
    let asked: IpAddr = lab.network(0).gateway_v4.into();
    let answered = |cgroup: &Path, name: &str, by: Resolver| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = lab.dig_name(Some(cgroup), asked, false, name, "A").unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if by.answered(&text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: not answered by {by:?}: {text:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The RA arrives within a few seconds (radvd sends every 3 to 4 s).
    answered(&on_wwan, DNS_NAME, Resolver::Network(1));
    let corp = format!("host.{CORP_DOMAIN}");
    answered(&on_wlan, &corp, Resolver::Network(1));
    answered(&on_wlan, DNS_NAME, Resolver::Network(0));
    let pvds = daemon.mif(&["pvd", "list"]).unwrap();
    let text = String::from_utf8_lossy(&pvds.stdout);
    assert!(text.contains("fe80::53 (ra)"), "{text}");
    assert!(
        text.contains(&format!("domains {CORP_DOMAIN} (ra)")),
        "{text}"
    );
}

/// Tailscale-style routing: the tunnel's default lives in a table of its
/// own (52) that a rule of someone else's leads to. The tunnel is then an
/// uplink (an implicit PvD, no declaration), an app steered to it leaves
/// through the tunnel, and the host's own routing is as before.
#[test]
fn a_default_in_another_tools_table_makes_an_uplink() {
    skip_unless_root!();
    let lab = two_networks();
    let vpn = lab.start_vpn(VpnShape::Split).expect("starting the VPN");
    lab.ip_host(&["route", "add", "default", "dev", "tun0", "table", "52"])
        .unwrap();
    let rule = [
        "rule",
        "add",
        "to",
        "100.64.0.0/10",
        "lookup",
        "52",
        "priority",
        "5270",
    ];
    lab.ip_host(&rule).unwrap();
    let before = unsteered(&lab, Family::V4);
    let app = lab.create_cgroup("app").unwrap();
    let config = policy_toml(&format!("{}/app", lab.cgroup_rel()), &["tun0"], "");
    let daemon = Daemon::start(&lab, &config).unwrap();
    wait_for(
        &lab,
        &app,
        Family::V4,
        &through_tunnel(&vpn, Family::V4),
        Duration::from_secs(5),
    );
    assert_eq!(unsteered(&lab, Family::V4), before);
    let out = daemon.mif(&["pvd", "list", "--json"]).unwrap();
    let pvds: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tun = pvds
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tun0")
        .unwrap_or_else(|| panic!("no tun0 PvD: {pvds:#}"));
    assert_eq!(tun["kind"], "point-to-point", "{tun:#}");
    assert_eq!(tun["uplink4"], "default dev tun0 (table 52)", "{tun:#}");
}
