//! Smoke tests of the lab itself, on the real kernel, without mif: the
//! topology routes as documented, and labs clean up and stay apart; the
//! scenarios (VPN, second router, DHCP) look to the host as they should.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mif_tests::lab::{
    lab_peer_path, Answer, Arrivals, ClientFailure, HttpFailure, HttpReply, HttpRequest, Lab,
    Proto, VpnShape, CONNECTIVITY_NAME, CONNECTIVITY_PATH, DHCP_DOMAIN, DHCP_ONLY_ANSWER,
    DHCP_ONLY_NAME, INTERNET_V4, INTERNET_V6, OUTPUT_TIMEOUT, SECOND_ROUTER_V6, VPN_NETWORK_NAME,
    VPN_SERVER_V4, WHOAMI_PATH,
};
use mif_tests::skip_unless_root;

const NETWORKS: &[&str] = &["wlan0", "wwan0"];

#[test]
fn finds_the_peer_binary_cargo_built() {
    let found = lab_peer_path().unwrap().canonicalize().unwrap();
    let built = Path::new(env!("CARGO_BIN_EXE_lab-peer"))
        .canonicalize()
        .unwrap();
    assert_eq!(found, built);
}

/// Without mif, everything leaves by the main table's default: network 0.
#[test]
fn unsteered_traffic_takes_network_zero() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    let app = lab.create_cgroup("apps/browser").unwrap();
    let wlan0 = lab.network(0);

    for (to, source) in [
        (IpAddr::V4(INTERNET_V4), IpAddr::V4(wlan0.host_v4)),
        (IpAddr::V6(INTERNET_V6), IpAddr::V6(wlan0.host_v6)),
    ] {
        for proto in Proto::ALL {
            let reply = lab
                .client(Some(&app), proto, to, None)
                .unwrap_or_else(|e| panic!("{proto} to {to}: {e:#}"));
            assert_eq!(reply.network, "wlan0", "{proto} to {to}");
            assert_eq!(reply.source, source, "{proto} to {to}");
        }
    }
}

/// The client really runs in the cgroup it was given, so programs attached
/// there will see its sockets.
#[test]
fn programs_start_in_their_cgroup() {
    skip_unless_root!();
    let lab = Lab::new(&["wlan0"]).unwrap();
    let app = lab.create_cgroup("apps/shell").unwrap();
    let out = lab
        .output_in(Some(&app), "cat", ["/proc/self/cgroup"])
        .unwrap();
    assert!(out.status.success());
    let expected = format!("0::{}/apps/shell", lab.cgroup_rel());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l == expected),
        "{text:?} lacks {expected:?}"
    );
}

/// A source address of network 1 does not, by itself, move a connection to
/// network 1: without rules the main table sends it out of wlan0, where
/// router 0 has no route back to 198.18.1.0/24, so no reply can arrive.
#[test]
fn binding_a_source_address_does_not_steer() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    let wwan0 = lab.network(1);
    for (to, bind) in [
        (IpAddr::V4(INTERNET_V4), IpAddr::V4(wwan0.host_v4)),
        (IpAddr::V6(INTERNET_V6), IpAddr::V6(wwan0.host_v6)),
    ] {
        let result = lab.client(None, Proto::Udp, to, Some(bind));
        let failure = match result {
            Ok(reply) => panic!("bound to {bind}, got {reply:?}"),
            Err(e) => e.downcast::<ClientFailure>().expect("lab-peer ran"),
        };
        assert!(
            failure.stderr.contains("timed out"),
            "bound to {bind}: {failure}"
        );
    }
}

/// A test's own failure must not be masked: a refused socket is reported
/// as such (this one fails at bind, for an address the host doesn't have).
#[test]
fn client_errors_name_the_failing_call() {
    skip_unless_root!();
    let lab = Lab::new(&["wlan0"]).unwrap();
    let bind: IpAddr = "198.18.99.2".parse().unwrap();
    let err = lab
        .client(None, Proto::Tcp, IpAddr::V4(INTERNET_V4), Some(bind))
        .unwrap_err();
    let failure = err.downcast::<ClientFailure>().unwrap();
    assert!(failure.stderr.starts_with("bind: "), "{:?}", failure.stderr);
}

#[test]
fn sockmark_reports_an_unmarked_socket() {
    skip_unless_root!();
    let lab = Lab::new(&["wlan0"]).unwrap();
    for family in [mif_tests::lab::Family::V4, mif_tests::lab::Family::V6] {
        let mark = lab.sockmark(None, family).unwrap();
        assert_eq!((mark.mark, mark.ifindex), (0, 0), "{family:?}");
    }
    assert!(lab.host_ifindex("wlan0").unwrap() > 1);
}

/// What a lab leaves behind after it is gone: nothing.
struct Footprint {
    namespaces: Vec<PathBuf>,
    cgroup: PathBuf,
}

impl Footprint {
    fn of(lab: &Lab) -> Self {
        let mut namespaces = vec![lab.host_ns_path()];
        namespaces.extend(
            lab.networks()
                .iter()
                .map(|n| Path::new("/run/netns").join(&n.router_ns)),
        );
        Self {
            namespaces,
            cgroup: lab.cgroup_root().to_path_buf(),
        }
    }

    fn assert_present(&self) {
        for path in self.namespaces.iter().chain([&self.cgroup]) {
            assert!(path.exists(), "{} missing", path.display());
        }
    }

    fn assert_gone(&self) {
        for path in self.namespaces.iter().chain([&self.cgroup]) {
            assert!(!path.exists(), "{} left behind", path.display());
        }
    }
}

#[test]
fn drop_removes_everything_even_with_processes_running() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    let deep = lab.create_cgroup("apps/browser/tabs").unwrap();
    lab.create_cgroup("apps/mail").unwrap();
    let sleeper = lab.spawn_in(Some(&deep), "sleep", ["600"]).unwrap();
    let footprint = Footprint::of(&lab);
    footprint.assert_present();

    drop(lab);

    footprint.assert_gone();
    assert!(
        sleeper.try_wait().unwrap().is_some(),
        "sleeper still running"
    );
}

#[test]
fn drop_cleans_up_when_a_test_panics() {
    skip_unless_root!();
    let footprint = Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::new(NETWORKS).unwrap();
        let app = lab.create_cgroup("apps/browser").unwrap();
        lab.spawn_in(Some(&app), "sleep", ["600"]).unwrap();
        *footprint.lock().unwrap() = Some(Footprint::of(&lab));
        panic!("test failure while the lab is up");
    });
    assert!(result.is_err());
    let footprint = footprint.into_inner().unwrap().unwrap();
    footprint.assert_gone();
}

#[test]
fn concurrent_labs_do_not_collide() {
    skip_unless_root!();
    let labs: Vec<Lab> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| Lab::new(NETWORKS).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut names: Vec<&str> = labs.iter().map(Lab::host_ns_name).collect();
    names.extend(
        labs.iter()
            .flat_map(|l| l.networks().iter().map(|n| n.router_ns.as_str())),
    );
    let cgroups: Vec<&Path> = labs.iter().map(Lab::cgroup_root).collect();
    let (n_names, n_cgroups) = (names.len(), cgroups.len());
    names.sort();
    names.dedup();
    let mut cgroups = cgroups;
    cgroups.sort();
    cgroups.dedup();
    assert_eq!((names.len(), cgroups.len()), (n_names, n_cgroups));

    // Each still works on its own, in parallel.
    std::thread::scope(|s| {
        for lab in &labs {
            s.spawn(move || {
                let app = lab.create_cgroup("app").unwrap();
                let reply = lab
                    .client(Some(&app), Proto::Tcp, IpAddr::V4(INTERNET_V4), None)
                    .unwrap();
                assert_eq!(reply.network, "wlan0");
                assert_eq!(reply.source, IpAddr::V4(lab.network(0).host_v4));
            });
        }
    });
}

// Scenarios: a VPN, a second router, a DHCP network. Each test checks what
// a user of the host would observe without mif.

/// Asserts that a TCP client on the host (no cgroup, no bind) to `to` is
/// answered by `network`, which saw it come from `source`.
fn assert_answered(lab: &Lab, to: IpAddr, network: &str, source: IpAddr) {
    let reply = lab
        .client(None, Proto::Tcp, to, None)
        .unwrap_or_else(|e| panic!("TCP to {to}: {e:#}"));
    assert_eq!(
        (reply.network.as_str(), reply.source),
        (network, source),
        "TCP to {to}"
    );
}

/// The host's main-table routes through `dev` (`ip route show dev`), both
/// families.
fn routes_via(lab: &Lab, dev: &str) -> String {
    let v4 = lab.ip_host(&["-4", "route", "show", "dev", dev]).unwrap();
    let v6 = lab.ip_host(&["-6", "route", "show", "dev", dev]).unwrap();
    v4 + &v6
}

/// A split VPN adds tun0 and its addresses and nothing else: the server's
/// end of the tunnel answers through it, the "internet" still by wlan0, and
/// a source address of the tunnel does not by itself move a connection
/// into it. Only encrypted UDP/1194 crosses wlan0's network for it.
#[test]
fn split_vpn_reaches_only_the_tunnel_peer() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    let vpn = lab.start_vpn(VpnShape::Split).unwrap();
    let wlan0 = lab.network(0).clone();
    let (client_v4, client_v6) = (vpn.client_v4(), vpn.client_v6());

    let tunnel_only = lab.count_arrivals(0, Arrivals::ExceptVpn).unwrap();
    let everything = lab.count_arrivals(0, Arrivals::All).unwrap();
    for (to, source) in [
        (IpAddr::V4(vpn.server_tunnel_v4()), IpAddr::V4(client_v4)),
        (IpAddr::V6(vpn.server_tunnel_v6()), IpAddr::V6(client_v6)),
    ] {
        assert_answered(&lab, to, VPN_NETWORK_NAME, source);
    }
    assert_eq!(
        tunnel_only.packets().unwrap(),
        0,
        "non-VPN packets on wlan0"
    );
    assert!(
        everything.packets().unwrap() > 0,
        "the VPN's packets not seen"
    );

    assert_answered(&lab, INTERNET_V4.into(), "wlan0", wlan0.host_v4.into());
    assert_answered(&lab, INTERNET_V6.into(), "wlan0", wlan0.host_v6.into());
    let routes = routes_via(&lab, vpn.device());
    assert!(
        !routes.contains("default") && !routes.contains("/1 "),
        "{routes}"
    );
    let bound = lab.client(None, Proto::Tcp, INTERNET_V4.into(), Some(client_v4.into()));
    assert!(bound.is_err(), "bound to {client_v4}: {bound:?}");

    let before = lab.host_ifindex(vpn.device()).unwrap();
    vpn.stop_client().unwrap();
    assert!(lab.host_ifindex(vpn.device()).is_err(), "tun0 still there");
    let gone = lab.client(None, Proto::Tcp, vpn.server_tunnel_v4().into(), None);
    assert!(
        gone.is_err(),
        "tunnel peer reached without a tunnel: {gone:?}"
    );

    vpn.restart_client().unwrap();
    assert_ne!(lab.host_ifindex(vpn.device()).unwrap(), before);
    assert_answered(
        &lab,
        vpn.server_tunnel_v4().into(),
        VPN_NETWORK_NAME,
        client_v4.into(),
    );
}

/// Checks a VPN shape that takes the host's unsteered traffic (full tunnel,
/// default dev): it goes through the tunnel with the tunnel's addresses,
/// only the encrypted transport crosses wlan0's network, and after a
/// disconnect everything is back on wlan0 until a reconnect (with a new
/// tun0) takes it again.
fn check_routing_vpn(lab: &Lab, vpn: &mif_tests::lab::Vpn<'_>, expected_routes: &[&str]) {
    let wlan0 = lab.network(0).clone();
    let tunnel = [
        (IpAddr::V4(INTERNET_V4), IpAddr::V4(vpn.client_v4())),
        (IpAddr::V6(INTERNET_V6), IpAddr::V6(vpn.client_v6())),
    ];
    let direct = [
        (IpAddr::V4(INTERNET_V4), IpAddr::V4(wlan0.host_v4)),
        (IpAddr::V6(INTERNET_V6), IpAddr::V6(wlan0.host_v6)),
    ];
    let all_routes = || {
        let v4 = lab.ip_host(&["-4", "route", "show"]).unwrap();
        v4 + &lab.ip_host(&["-6", "route", "show"]).unwrap()
    };
    let routes = all_routes();
    for expected in expected_routes {
        assert!(routes.contains(expected), "no {expected:?} in\n{routes}");
    }

    let leaks = lab.count_arrivals(0, Arrivals::ExceptVpn).unwrap();
    for (to, source) in tunnel {
        for proto in Proto::ALL {
            let reply = lab
                .client(None, proto, to, None)
                .unwrap_or_else(|e| panic!("{proto} to {to}: {e:#}"));
            assert_eq!(reply.network, VPN_NETWORK_NAME, "{proto} to {to}");
            assert_eq!(reply.source, source, "{proto} to {to}");
        }
    }
    assert_eq!(leaks.packets().unwrap(), 0, "packets beside the tunnel");

    let before = lab.host_ifindex(vpn.device()).unwrap();
    vpn.stop_client().unwrap();
    assert!(lab.host_ifindex(vpn.device()).is_err(), "tun0 still there");
    let routes = all_routes();
    for expected in expected_routes {
        assert!(!routes.contains(expected), "{expected:?} left in\n{routes}");
    }
    for (to, source) in direct {
        assert_answered(lab, to, "wlan0", source);
    }

    vpn.restart_client().unwrap();
    assert_ne!(
        lab.host_ifindex(vpn.device()).unwrap(),
        before,
        "same ifindex"
    );
    for (to, source) in tunnel {
        assert_answered(lab, to, VPN_NETWORK_NAME, source);
    }
}

#[test]
fn full_tunnel_vpn_takes_unsteered_traffic() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    let vpn = lab.start_vpn(VpnShape::FullTunnel).unwrap();
    let server = format!("{VPN_SERVER_V4} via 198.18.0.1 dev wlan0");
    check_routing_vpn(
        &lab,
        &vpn,
        &[
            "0.0.0.0/1 via 10.99.0.1 dev tun0",
            "128.0.0.0/1 via 10.99.0.1 dev tun0",
            "2000::/4 dev tun0",
            &server,
        ],
    );
}

#[test]
fn default_dev_vpn_wins_the_main_table() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    let vpn = lab.start_vpn(VpnShape::DefaultDev).unwrap();
    let server = format!("{VPN_SERVER_V4} via 198.18.0.1 dev wlan0");
    check_routing_vpn(&lab, &vpn, &["default dev tun0 metric 50", &server]);
}

/// A second router on wlan0's link announces 2001:db8:77::/64 by RIO: the
/// host routes it to that router's link-local address, and its peer answers;
/// router 0 knows nothing of the prefix, and still serves the "internet".
#[test]
fn second_router_serves_its_announced_prefix() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    let r2 = lab.add_second_router().unwrap();
    let wlan0 = lab.network(0).clone();
    assert_eq!(r2.name(), "wlan0-r2");

    let routes = lab
        .ip_host(&["-6", "route", "show", "2001:db8:77::/64"])
        .unwrap();
    let via = format!("via {} dev wlan0 proto ra", r2.link_local());
    assert!(routes.contains(&via), "{routes:?} lacks {via:?}");
    for proto in Proto::ALL {
        let reply = lab
            .client(None, proto, SECOND_ROUTER_V6.into(), None)
            .unwrap_or_else(|e| panic!("{proto} to {SECOND_ROUTER_V6}: {e:#}"));
        assert_eq!(reply.network, r2.name(), "{proto}");
        assert_eq!(reply.source, IpAddr::V6(wlan0.host_v6), "{proto}");
    }
    let router0 = lab.ip_router(0, &["-6", "route", "get", "2001:db8:77::1"]);
    assert!(router0.is_err(), "router 0 routes the prefix: {router0:?}");
    assert_answered(&lab, INTERNET_V6.into(), "wlan0", wlan0.host_v6.into());
}

/// A DHCP-only network: the host's address and default route come from
/// dnsmasq through dhclient, the lease file names the DNS server and the
/// domain, and that server answers the name only it knows.
#[test]
fn dhcp_network_leases_address_route_and_dns() {
    skip_unless_root!();
    let resolv_conf = std::fs::read("/etc/resolv.conf").ok();
    let lab = Lab::new(NETWORKS).unwrap();
    let lease = lab.use_dhcp(0).unwrap();
    let router = lab.network(0).gateway_v4;
    eprintln!("{}:\n{}", lease.lease_file().display(), lease.lease_text());

    let (first, last) = lease.pool();
    assert!((first..=last).contains(&lease.address()), "{lease:?}");
    let addrs = lab
        .ip_host(&["-4", "addr", "show", "dev", "wlan0"])
        .unwrap();
    assert_eq!(addrs.matches("inet ").count(), 1, "{addrs}");
    let default = lab.ip_host(&["-4", "route", "show", "default"]).unwrap();
    assert!(
        default
            .lines()
            .next()
            .is_some_and(|l| l.contains(&format!("via {router} dev wlan0 metric 100"))),
        "{default}"
    );
    assert_answered(&lab, INTERNET_V4.into(), "wlan0", lease.address().into());

    let text = lease.lease_text();
    for expected in [
        "interface \"wlan0\";".to_owned(),
        format!("fixed-address {};", lease.address()),
        format!("option routers {router};"),
        format!("option domain-name-servers {};", lease.dns_server()),
        format!("option domain-name \"{DHCP_DOMAIN}\";"),
    ] {
        assert!(text.contains(&expected), "no {expected:?} in\n{text}");
    }
    let dig = lab
        .dig_name(None, lease.dns_server().into(), false, DHCP_ONLY_NAME, "A")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&dig.stdout).trim(),
        DHCP_ONLY_ANSWER.to_string(),
        "{dig:?}"
    );
    assert_eq!(std::fs::read("/etc/resolv.conf").ok(), resolv_conf);
}

/// Processes whose command line mentions `needle` (every program a
/// scenario starts has the lab's scratch directory in its arguments).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

/// Every scenario at once, then a panic: the namespaces, processes
/// (openvpn, radvd, dnsmasq, dhclient, the HTTP servers) and files they
/// made are all gone.
#[test]
fn scenarios_leave_nothing_behind_when_a_test_panics() {
    skip_unless_root!();
    let footprint = Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::new(NETWORKS).unwrap();
        let vpn = lab.start_vpn(VpnShape::FullTunnel).unwrap();
        let r2 = lab.add_second_router().unwrap();
        let lease = lab.use_dhcp(1).unwrap();
        let _http = lab.start_connectivity_servers().unwrap();
        lab.cut_upstream(1).unwrap();
        let mut fp = Footprint::of(&lab);
        fp.namespaces.extend(
            [vpn.server_ns_name(), r2.ns_name()].map(|ns| Path::new("/run/netns").join(ns)),
        );
        let scratch = lab.scratch_root().to_path_buf();
        let pids = [vpn.client_pid().unwrap(), lease.client_pid()];
        let needle = lab.host_ns_name().to_owned();
        assert!(scratch.is_dir());
        assert!(
            processes_mentioning(&needle).len() >= 4,
            "scenario processes"
        );
        *footprint.lock().unwrap() = Some((fp, scratch, pids, needle));
        panic!("test failure while the scenarios are up");
    });
    assert!(result.is_err());
    let (fp, scratch, pids, needle) = footprint.into_inner().unwrap().unwrap();
    fp.assert_gone();
    assert!(!scratch.exists(), "{} left behind", scratch.display());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} left"
        );
    }
    let left = processes_mentioning(&needle);
    assert!(left.is_empty(), "left running: {left:?}");
}

// Connectivity checks: every network's HTTP server on the internet
// addresses, and networks whose upstream dies.

/// The connectivity-check URLs of both families.
fn check_urls() -> [(String, &'static str); 2] {
    [
        (format!("http://{INTERNET_V4}{CONNECTIVITY_PATH}"), "v4"),
        (format!("http://[{INTERNET_V6}]{CONNECTIVITY_PATH}"), "v6"),
    ]
}

/// `GET url` from the host, leaving by network `i` (bound to its
/// interface); panics if curl fails.
fn get_via(lab: &Lab, i: usize, url: &str) -> HttpReply {
    let dev = &lab.network(i).name;
    lab.http_get(None, Some(dev), url)
        .unwrap_or_else(|e| panic!("GET {url} via {dev}: {e:#}"))
}

/// A request leaving by network `i` gets 204 from network `i`'s server
/// alone, which logs it with the source, method, path and Host it had;
/// `/whoami` names the network and the source.
#[test]
fn connectivity_servers_answer_each_network_on_its_own() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    let servers = lab.start_connectivity_servers().unwrap();

    // Network 1 first: network 0 is where unsteered traffic would go, so
    // its server staying silent shows the requests really left by wwan0.
    for i in [1, 0] {
        let net = lab.network(i).clone();
        let sources = [IpAddr::V4(net.host_v4), IpAddr::V6(net.host_v6)];
        let hosts = [INTERNET_V4.to_string(), format!("[{INTERNET_V6}]")];
        for ((url, family), source) in check_urls().iter().zip(sources) {
            let reply = get_via(&lab, i, url);
            assert_eq!((reply.status, reply.body.as_str()), (204, ""), "{family}");
            assert_eq!(reply.location, None, "{family}");
            let whoami = url.replace(CONNECTIVITY_PATH, WHOAMI_PATH);
            let reply = get_via(&lab, i, &whoami);
            assert_eq!(reply.status, 200, "{family}");
            assert_eq!(reply.body, format!("{} {source}\n", net.name), "{family}");
        }
        let seen = servers.requests(i).unwrap();
        let expected: Vec<_> = sources
            .iter()
            .zip(&hosts)
            .flat_map(|(source, host)| {
                [CONNECTIVITY_PATH, WHOAMI_PATH].map(|path| HttpRequest {
                    source: *source,
                    method: "GET".into(),
                    path: path.into(),
                    host: Some(host.clone()),
                })
            })
            .collect();
        assert_eq!(seen, expected, "{}'s server", net.name);
        if i == 1 {
            let other = servers.requests(0).unwrap();
            assert!(other.is_empty(), "wlan0's server saw {other:?}");
        }
    }
}

/// The answer file switches a network's server between a working network,
/// a captive portal's redirect and a page answered in place, request by
/// request, without touching the other networks; `/whoami` answers in
/// every mode.
#[test]
fn connectivity_answers_switch_to_captive_and_back() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    let servers = lab.start_connectivity_servers().unwrap();
    let portal = "http://198.18.1.1/login?from=probe";
    let wwan0 = lab.network(1).clone();

    servers
        .set_answer(1, Answer::Redirect(portal.to_owned()))
        .unwrap();
    for (url, family) in check_urls() {
        let reply = get_via(&lab, 1, &url);
        assert_eq!(reply.status, 302, "{family}: {reply:?}");
        assert_eq!(reply.location.as_deref(), Some(portal), "{family}");
        assert_eq!(get_via(&lab, 0, &url).status, 204, "{family} via wlan0");
    }
    let whoami = format!("http://{INTERNET_V4}{WHOAMI_PATH}");
    let reply = get_via(&lab, 1, &whoami);
    assert_eq!(
        (reply.status, reply.body),
        (200, format!("wwan0 {}\n", wwan0.host_v4))
    );

    servers.set_answer(1, Answer::Page).unwrap();
    for (url, family) in check_urls() {
        let reply = get_via(&lab, 1, &url);
        assert_eq!((reply.status, &reply.location), (200, &None), "{family}");
        assert!(reply.body.contains("<html>"), "{family}: {reply:?}");
    }

    servers.set_answer(1, Answer::NoContent).unwrap();
    for (url, family) in check_urls() {
        assert_eq!(get_via(&lab, 1, &url).status, 204, "{family}");
    }
}

/// A cut upstream: packets to the internet addresses reach network 1's
/// router and vanish there, so connections time out (not refused) and the
/// server logs nothing, while the gateway itself still answers, after a
/// fresh ARP/ND resolution, and network 0 is untouched. Cutting twice and
/// restoring twice are harmless; after restoring, the server answers again.
#[test]
fn cut_upstream_silences_the_internet_but_not_the_gateway() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    let servers = lab.start_connectivity_servers().unwrap();
    let wwan0 = lab.network(1).clone();

    lab.cut_upstream(1).unwrap();
    lab.cut_upstream(1).unwrap();
    let nft = lab.command_in_router(1, "nft", ["list", "tables"]).unwrap();
    let out = lab.output(nft, OUTPUT_TIMEOUT).unwrap();
    let tables = String::from_utf8_lossy(&out.stdout);
    assert_eq!(tables.matches("mif_cut_upstream").count(), 1, "{tables}");

    let arrivals = lab.count_arrivals(1, Arrivals::All).unwrap();
    for (url, family) in check_urls() {
        let err = lab
            .http_get(None, Some(&wwan0.name), &url)
            .expect_err(&format!("{family} through a cut upstream"));
        let failure = err.downcast::<HttpFailure>().expect("curl ran");
        assert!(failure.timed_out(), "{family}: {failure}");
        assert_eq!(get_via(&lab, 0, &url).status, 204, "{family} via wlan0");
    }
    assert!(arrivals.packets().unwrap() > 0, "no SYN reached router 1");
    let seen = servers.requests(1).unwrap();
    assert!(seen.is_empty(), "wwan0's server saw {seen:?}");

    // The gateway is still there, also for a neighbour resolution made
    // now, with the upstream cut.
    lab.ip_host(&["neigh", "flush", "dev", &wwan0.name])
        .unwrap();
    for gateway in [IpAddr::V4(wwan0.gateway_v4), IpAddr::V6(wwan0.gateway_v6)] {
        let reply = lab
            .client(None, Proto::Tcp, gateway, None)
            .unwrap_or_else(|e| panic!("TCP to gateway {gateway}: {e:#}"));
        assert_eq!(reply.network, "wwan0", "{gateway}");
        let neigh = lab
            .ip_host(&[
                "-j",
                "neigh",
                "show",
                &gateway.to_string(),
                "dev",
                &wwan0.name,
            ])
            .unwrap();
        let entries: serde_json::Value = serde_json::from_str(&neigh).unwrap();
        assert!(entries[0]["lladdr"].is_string(), "{gateway}: {neigh}");
        let state = entries[0]["state"].to_string();
        assert!(
            !state.contains("FAILED") && !state.contains("INCOMPLETE"),
            "{gateway}: {neigh}"
        );
    }

    // The peer on PEER_PORT is cut off too: unsteered traffic leaves by
    // wlan0, so cut network 0 to see it.
    lab.cut_upstream(0).unwrap();
    for proto in [Proto::Tcp, Proto::Udp] {
        let err = lab
            .client(None, proto, INTERNET_V4.into(), None)
            .expect_err("peer through a cut upstream");
        let failure = err.downcast::<ClientFailure>().expect("lab-peer ran");
        assert!(failure.stderr.contains("timed out"), "{proto}: {failure}");
    }

    for i in [0, 1] {
        lab.restore_upstream(i).unwrap();
        lab.restore_upstream(i).unwrap();
    }
    for (url, family) in check_urls() {
        assert_eq!(get_via(&lab, 1, &url).status, 204, "{family} restored");
    }
    assert_answered(
        &lab,
        INTERNET_V4.into(),
        "wlan0",
        lab.network(0).host_v4.into(),
    );
    assert_eq!(servers.requests(1).unwrap().len(), 2);
}

/// Every network's resolver gives the connectivity name the internet
/// addresses; the host's stub does not know it.
#[test]
fn connectivity_name_resolves_through_each_network() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    let _resolvers: Vec<_> = (0..NETWORKS.len())
        .map(|i| lab.start_resolver(i, &[]).unwrap())
        .collect();
    let stub = lab.start_stub_resolver().unwrap();
    for i in 0..NETWORKS.len() {
        let server = IpAddr::V4(lab.network(i).gateway_v4);
        for (rtype, expected) in [
            ("A", INTERNET_V4.to_string()),
            ("AAAA", INTERNET_V6.to_string()),
        ] {
            let out = lab
                .dig_name(None, server, false, CONNECTIVITY_NAME, rtype)
                .unwrap();
            let answer = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                answer.trim(),
                expected,
                "{rtype} from resolver {i}: {out:?}"
            );
        }
    }
    let out = lab
        .dig_name(
            None,
            "127.0.0.53".parse().unwrap(),
            false,
            CONNECTIVITY_NAME,
            "A",
        )
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the stub answered: {out:?}"
    );
    assert!(stub
        .queries()
        .iter()
        .any(|(name, _)| name == CONNECTIVITY_NAME));
}

/// Dropping the servers' handle stops them: port 80 is free again for a
/// second set (its bind would fail otherwise), and no process of the first
/// set is left.
#[test]
fn connectivity_servers_stop_when_dropped() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    // Their state directories, in their arguments, are in the scratch dir.
    let scratch = lab.scratch_root().display().to_string();
    let servers_running = || {
        processes_mentioning(&scratch)
            .into_iter()
            .filter(|p| p.contains(" http "))
            .collect::<Vec<_>>()
    };
    let first = lab.start_connectivity_servers().unwrap();
    let before = servers_running();
    assert_eq!(before.len(), NETWORKS.len(), "{before:?}");
    drop(first);
    assert!(servers_running().is_empty(), "{:?}", servers_running());

    let second = lab.start_connectivity_servers().unwrap();
    for (url, family) in check_urls() {
        assert_eq!(get_via(&lab, 1, &url).status, 204, "{family}");
    }
    assert_eq!(second.requests(1).unwrap().len(), 2);
    let after = servers_running();
    assert_eq!(after.len(), NETWORKS.len(), "{after:?}");
    assert!(after.iter().all(|p| !before.contains(p)), "{after:?}");
}
