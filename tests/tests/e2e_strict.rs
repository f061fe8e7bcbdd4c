//! End-to-end: strict mode as a kill switch. An application in a strict
//! cgroup that may only use wwan0 tries, as root, every way it has to get a
//! packet out by wlan0 instead (binds, socket options, scoped and per-datagram
//! addresses, raw sockets); each must fail at the call that tried, and
//! router 0 (wlan0's network) must see none of its packets. Router 1 counts
//! the same way, to show the counting works.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::IpAddr,
    path::Path,
    process::Stdio,
};

use mif_tests::e2e::{internet, two_networks as lab};
use mif_tests::{
    lab::{ClientFailure, ClientReply, Family, Lab, Proto, INTERNET_V4, INTERNET_V6},
    mif::Daemon,
    skip_unless_root,
};

/// A strict policy for `<lab>/<rel>` preferring only wwan0, plus `extra`.
fn strict_config(lab: &Lab, rel: &str, extra: &str) -> String {
    format!(
        "[[policy]]\ncgroup = \"{}/{rel}\"\nprefer = [\"wwan0\"]\nstrict = true\n{extra}\n",
        lab.cgroup_rel()
    )
}

/// Counts, in router `i`'s namespace, the packets arriving from the host
/// that an application sent: TCP, UDP and ICMP echo requests, whatever
/// their addresses. Neighbour discovery, router solicitations and
/// multicast reports, which the host's kernel sends by itself, are not
/// counted.
struct PacketCounter<'lab> {
    lab: &'lab Lab,
    router: usize,
}

const COUNTER_RULES: &str = r#"
table inet mif_leak {
    counter app {}
    chain prerouting {
        type filter hook prerouting priority -300; policy accept;
        iifname "eth0" meta l4proto { tcp, udp } counter name app
        iifname "eth0" icmp type echo-request counter name app
        iifname "eth0" icmpv6 type echo-request counter name app
    }
}
"#;

impl<'lab> PacketCounter<'lab> {
    fn install(lab: &'lab Lab, router: usize) -> Self {
        let mut cmd = lab
            .command_in_router(router, "nft", ["-f", "-"])
            .expect("nft command");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("running nft");
        child
            .stdin
            .take()
            .expect("nft stdin")
            .write_all(COUNTER_RULES.as_bytes())
            .expect("writing nft rules");
        let out = child.wait_with_output().expect("waiting for nft");
        assert!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { lab, router }
    }

    /// The count once it reaches `expected`, or after two seconds: a
    /// packet may wait for neighbour discovery before it leaves.
    fn packets_reaching(&self, expected: u64) -> u64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let n = self.packets();
            if n >= expected || std::time::Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn packets(&self) -> u64 {
        let cmd = self
            .lab
            .command_in_router(
                self.router,
                "nft",
                ["list", "counter", "inet", "mif_leak", "app"],
            )
            .expect("nft command");
        let out = self
            .lab
            .output(cmd, std::time::Duration::from_secs(10))
            .expect("running nft");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packet count in {text:?}"))
    }
}

/// `lab-peer attack ARGS` in `cgroup`: the peer's reply, or what failed.
fn attack(lab: &Lab, cgroup: &Path, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["attack"];
    all.extend_from_slice(args);
    let out = lab
        .output_in(Some(cgroup), lab.peer_path(), &all)
        .expect("running lab-peer");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Asserts that `result` is a refusal (EPERM) by `operation`.
#[track_caller]
fn assert_refused_at(result: Result<String, String>, operation: &str, what: &str) {
    match result {
        Ok(reply) => panic!("{what}: not refused, the peer answered {reply:?}"),
        Err(e) => assert!(
            e.starts_with(&format!("{operation}: Operation not permitted")),
            "{what}: expected {operation} to fail with EPERM, got {e:?}"
        ),
    }
}

/// Asserts that a client failure is EPERM at `operation`.
#[track_caller]
fn assert_client_refused_at(result: anyhow::Result<ClientReply>, operation: &str, what: &str) {
    let err = match result {
        Ok(reply) => panic!("{what}: not refused, the peer answered {reply:?}"),
        Err(e) => e,
    };
    let failure = err
        .downcast_ref::<ClientFailure>()
        .unwrap_or_else(|| panic!("{what}: {err:#}"));
    assert!(
        failure
            .stderr
            .starts_with(&format!("{operation}: Operation not permitted")),
        "{what}: {failure}"
    );
}

/// The `denied` counters of policy 1, summed.
fn denied(daemon: &Daemon) -> u64 {
    let maps = daemon.maps_json().unwrap();
    maps["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["policy"] == 1)
        .map(|c| c["denied"].as_u64().unwrap())
        .sum()
}

#[test]
fn binds_to_another_networks_address_are_refused_and_its_own_work() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let daemon = Daemon::start(&lab, &strict_config(&lab, "app", "")).unwrap();
    let (wlan, wwan) = (lab.network(0), lab.network(1));
    let leaks = PacketCounter::install(&lab, 0);
    let allowed = PacketCounter::install(&lab, 1);

    for (family, foreign) in [
        (Family::V4, IpAddr::from(wlan.host_v4)),
        (Family::V6, wlan.host_v6.into()),
        // An IPv6 socket sends IPv4 from a v4-mapped address.
        (Family::V6, wlan.host_v4.to_ipv6_mapped().into()),
    ] {
        let to = match foreign {
            IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => {
                IpAddr::V6(INTERNET_V4.to_ipv6_mapped())
            }
            _ => internet(family),
        };
        for proto in [Proto::Tcp, Proto::Udp] {
            let result = lab.client(Some(&app), proto, to, Some(foreign));
            assert_client_refused_at(result, "bind", &format!("{proto} bound to {foreign}"));
        }
    }
    for (family, own) in [
        (Family::V4, IpAddr::from(wwan.host_v4)),
        (Family::V6, wwan.host_v6.into()),
    ] {
        for proto in Proto::ALL {
            let reply = lab
                .client(Some(&app), proto, internet(family), Some(own))
                .unwrap_or_else(|e| panic!("{proto} bound to {own}: {e:#}"));
            assert_eq!((reply.network.as_str(), reply.source), ("wwan0", own));
        }
    }
    // Wildcard and loopback binds are no escape and stay allowed.
    let reply = attack(
        &lab,
        &app,
        &["--to", &INTERNET_V4.to_string(), "--bind", "0.0.0.0"],
    )
    .unwrap();
    assert!(reply.starts_with("wwan0 "), "{reply}");

    assert_eq!(leaks.packets(), 0, "packets reached wlan0's network");
    assert!(allowed.packets() >= 6, "wwan0's router counted nothing");
    assert_eq!(denied(&daemon), 6);
}

#[test]
fn interface_and_mark_options_are_refused_even_to_root() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let daemon = Daemon::start(&lab, &strict_config(&lab, "app", "")).unwrap();
    let leaks = PacketCounter::install(&lab, 0);
    let (v4, v6) = (INTERNET_V4.to_string(), INTERNET_V6.to_string());
    // The lab runs everything as root, with CAP_NET_ADMIN and CAP_NET_RAW:
    // without mif each of these would send by wlan0.
    let attempts: &[(&str, &str)] = &[
        (&v4, "mark"),
        (&v4, "device"),
        (&v6, "device"),
        (&v4, "bindtoifindex"),
        (&v4, "unicast-if"),
        (&v6, "unicast-if"),
        (&v4, "multicast-if"),
        (&v6, "multicast-if"),
        (&v6, "pktinfo"),
        (&v4, "dontroute"),
        (&v4, "join"),
        (&v6, "join"),
    ];
    // A device named once the route is chosen is refused just the same:
    // the kernel would drop the connected socket's cached route and send
    // the next datagram or segment by wlan0. The TCP connections and the
    // UDP connect() themselves go by wwan0, as ever.
    let late: &[(&str, &str)] = &[
        (&v4, "device"),
        (&v4, "bindtoifindex"),
        (&v6, "device"),
        (&v6, "bindtoifindex"),
    ];
    let refused = |to: &str, option: &str, proto: &str, connected: bool| {
        let mut args = vec!["--to", to, "--proto", proto];
        if connected {
            args.push("--connected");
        }
        args.extend(["--setsockopt", option, "--dev", "wlan0"]);
        let socket = if connected { "a connected " } else { "" };
        assert_refused_at(
            attack(&lab, &app, &args),
            "setsockopt",
            &format!("{option} on {socket}{proto} to {to}"),
        );
    };
    for (list, connected) in [(attempts, false), (late, true)] {
        for (to, option) in list {
            for proto in ["udp", "tcp"] {
                refused(to, option, proto, connected);
            }
        }
    }
    // Other options are none of strict mode's business.
    for to in [&v4, &v6] {
        let reply = attack(&lab, &app, &["--to", to, "--setsockopt", "tos"]).unwrap();
        assert!(reply.starts_with("wwan0 "), "{reply}");
    }
    assert_eq!(leaks.packets(), 0, "packets reached wlan0's network");
    let refusals = attempts.len() + late.len();
    assert_eq!(denied(&daemon), 2 * refusals as u64);

    // Outside the strict cgroup the same options are the kernel's to judge.
    let other = lab.create_cgroup("other").unwrap();
    let reply = attack(
        &lab,
        &other,
        &["--to", &v4, "--setsockopt", "device", "--dev", "wlan0"],
    )
    .unwrap();
    assert!(reply.starts_with("wlan0 "), "{reply}");
    assert!(
        leaks.packets() > 0,
        "router 0 counted nothing of what did reach it"
    );
}

/// The router's own link-local address on wlan0's link.
fn router_link_local(lab: &Lab, router: usize) -> String {
    let out = lab
        .ip_router(
            router,
            &["-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"],
        )
        .unwrap();
    out.split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no link-local address in {out:?}"))
        .to_owned()
}

/// Waits (up to five seconds) until the host's link-local address on
/// `dev` has passed duplicate address detection, so that packets can leave
/// from it.
fn wait_for_link_local(lab: &Lab, dev: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let args = [
        "-6",
        "addr",
        "show",
        "dev",
        dev,
        "scope",
        "link",
        "tentative",
    ];
    while !lab.ip_host(&args).unwrap().trim().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{dev}'s link-local address stays tentative"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn link_scoped_destinations_and_foreign_datagram_sources_are_refused() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let _daemon = Daemon::start(&lab, &strict_config(&lab, "app", "")).unwrap();
    let leaks = PacketCounter::install(&lab, 0);
    let wlan = lab.network(0);

    // A scope names the interface, whatever the route says.
    let router = format!("{}%wlan0", router_link_local(&lab, 0));
    assert_refused_at(
        attack(&lab, &app, &["--to", &router]),
        "send",
        "udp to fe80::%wlan0",
    );
    assert_refused_at(
        attack(&lab, &app, &["--to", &router, "--proto", "tcp"]),
        "connect",
        "tcp to fe80::%wlan0",
    );
    assert_refused_at(
        attack(&lab, &app, &["--to", "ff02::1%wlan0"]),
        "send",
        "udp to ff02::1%wlan0",
    );
    // A source chosen per datagram is a bind by another name.
    for (to, src) in [
        (INTERNET_V4.to_string(), wlan.host_v4.to_string()),
        (INTERNET_V6.to_string(), wlan.host_v6.to_string()),
    ] {
        assert_refused_at(
            attack(&lab, &app, &["--to", &to, "--pktinfo-src", &src]),
            "send",
            &format!("pktinfo source {src}"),
        );
    }
    let wwan = lab.network(1).host_v4.to_string();
    let reply = attack(
        &lab,
        &app,
        &["--to", &INTERNET_V4.to_string(), "--pktinfo-src", &wwan],
    )
    .unwrap();
    assert_eq!(reply, format!("wwan0 {wwan}"));
    assert_eq!(leaks.packets(), 0, "packets reached wlan0's network");
}

#[test]
fn ipv6_is_refused_when_the_only_network_has_no_ipv6() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    // wwan0 keeps its IPv6 address but loses its IPv6 default route: it is
    // not available for IPv6, while wlan0 still is.
    lab.ip_host(&["-6", "route", "del", "default", "dev", "wwan0"])
        .unwrap();
    let _daemon = Daemon::start(&lab, &strict_config(&lab, "app", "")).unwrap();
    let leaks = PacketCounter::install(&lab, 0);

    for proto in Proto::ALL {
        let result = lab.client(Some(&app), proto, INTERNET_V6.into(), None);
        assert_client_refused_at(result, "socket", &format!("{proto} over IPv6"));
        let reply = lab
            .client(Some(&app), proto, INTERNET_V4.into(), None)
            .unwrap();
        assert_eq!(reply.network, "wwan0", "{proto} over IPv4");
    }
    assert_refused_at(
        attack(
            &lab,
            &app,
            &["--to", &INTERNET_V6.to_string(), "--proto", "raw"],
        ),
        "socket",
        "a raw IPv6 socket",
    );
    assert_eq!(leaks.packets(), 0, "packets reached wlan0's network");
}

#[test]
fn children_and_cgroups_created_later_are_held_the_same() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let _daemon = Daemon::start(&lab, &strict_config(&lab, "app", "")).unwrap();
    let leaks = PacketCounter::install(&lab, 0);
    let later = lab.create_cgroup("app/worker/deeper").unwrap();
    let v4 = INTERNET_V4.to_string();
    let wlan_v4 = lab.network(0).host_v4.to_string();

    // A shell forks the attacker: the child is in the cgroup too.
    let peer = lab.peer_path().display().to_string();
    let script = format!(
        "{peer} attack --to {v4} --setsockopt device --dev wlan0; \
         {peer} attack --to {v4} --bind {wlan_v4}; \
         {peer} client --proto tcp --to {INTERNET_V6} --port 7777"
    );
    for cgroup in [&app, &later] {
        let out = lab.output_in(Some(cgroup), "sh", ["-c", &script]).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.matches("Operation not permitted").count(),
            2,
            "in {}: {stderr}",
            cgroup.display()
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("wwan0 "), "{stdout}");
        assert_refused_at(
            attack(&lab, cgroup, &["--to", &v4, "--setsockopt", "mark"]),
            "setsockopt",
            "SO_MARK in a cgroup created later",
        );
    }
    assert_eq!(leaks.packets(), 0, "packets reached wlan0's network");
}

/// A `lab-peer attack --wait stdin` started in `cgroup` before whatever
/// the test does next: its socket exists from the start, its datagram
/// leaves when [`Early::go`] says so.
struct Early {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Early {
    fn open(lab: &Lab, cgroup: &Path, args: &[&str]) -> Self {
        let mut all = vec!["attack", "--wait", "stdin"];
        all.extend_from_slice(args);
        let mut cmd = lab.command_in(Some(cgroup), lab.peer_path(), &all).unwrap();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Not lab.spawn: the test writes to its stdin. If the test fails,
        // the lab's teardown kills it with the rest of its cgroup.
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        Self { child, lines }
    }

    /// Sends the datagram: the peer's reply, or what failed.
    fn go(mut self) -> Result<String, String> {
        self.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let reply = self.lines.next().and_then(Result::ok);
        let out = self.child.wait_with_output().unwrap();
        match reply {
            Some(line) if out.status.success() => Ok(line),
            _ => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        }
    }
}

/// The `guard_drops` counters of policy 1 in `mif maps --json` output,
/// summed, and those under `pvd` alone.
fn guard_drops(maps: &serde_json::Value, pvd: &str) -> (u64, u64) {
    let rows: Vec<&serde_json::Value> = maps["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["policy"] == 1)
        .collect();
    let drops = |c: &&serde_json::Value| c["guard_drops"].as_u64().unwrap();
    (
        rows.iter().map(drops).sum(),
        rows.iter().filter(|c| c["pvd"] == pvd).map(drops).sum(),
    )
}

/// The escapes no socket hook sees, each one packet that leaves by wlan0
/// without the egress guard (checked from an unsteered cgroup in
/// [`the_guard_leaves_unsteered_and_non_strict_traffic_alone`]), as
/// `lab-peer attack` arguments: an `SO_MARK` of 0 with one datagram of a
/// raw socket (the main table's route), wlan0 named as the interface of
/// one datagram (`IP_PKTINFO`/`IPV6_PKTINFO` `ipi_ifindex`),
/// `MSG_DONTROUTE` to a host on wlan0's link (a link-scope lookup that
/// wwan0's table cannot answer, so the main table's on-link route does),
/// and a raw socket bound to wlan0's address, whose `from` rule routes it
/// by wlan0: a raw socket's bind is its protocol's own (`raw_bind`,
/// `rawv6_bind`), which the kernel calls instead of running the cgroup
/// bind hook (`inet_bind`, `inet6_bind`).
fn escapes(lab: &Lab) -> Vec<Vec<String>> {
    let (v4, v6) = (INTERNET_V4.to_string(), INTERNET_V6.to_string());
    let wlan = lab.network(0);
    let neighbour = wlan.gateway_v4.to_string();
    let (own_v4, own_v6) = (wlan.host_v4.to_string(), wlan.host_v6.to_string());
    let attempts: [(&str, &str, &[&str]); 9] = [
        (&v4, "raw", &["--cmsg-mark", "0"]),
        (&v6, "raw", &["--cmsg-mark", "0"]),
        (&v4, "udp", &["--pktinfo-dev", "wlan0"]),
        (&v4, "raw", &["--pktinfo-dev", "wlan0"]),
        (&v6, "raw", &["--pktinfo-dev", "wlan0"]),
        (&neighbour, "udp", &["--dontroute-flag"]),
        (&neighbour, "raw", &["--dontroute-flag"]),
        (&v4, "raw", &["--bind", &own_v4]),
        (&v6, "raw", &["--bind", &own_v6]),
    ];
    attempts
        .iter()
        .map(|(to, proto, rest)| {
            let mut args = vec![
                "--to".to_owned(),
                to.to_string(),
                "--proto".into(),
                proto.to_string(),
            ];
            args.extend(rest.iter().map(|a| a.to_string()));
            args
        })
        .collect()
}

/// `lab-peer attack ARGS` in `cgroup`, ARGS one of [`escapes`].
fn escape(lab: &Lab, cgroup: &Path, args: &[String]) -> Result<String, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    attack(lab, cgroup, &args)
}

/// What no socket hook sees ([`escapes`]) fails at `send` with EPERM,
/// reaches router 0 not at all, and is counted as a guard drop under
/// wlan0's PvD; the socket hooks themselves refused none of it.
#[test]
fn what_no_socket_hook_sees_is_dropped_by_the_guard() {
    skip_unless_root!();
    let lab = lab();
    let escapes = escapes(&lab);
    let app = lab.create_cgroup("app").unwrap();
    let mut daemon = Daemon::start(&lab, &strict_config(&lab, "app", "")).unwrap();
    let leaks = PacketCounter::install(&lab, 0);
    let allowed = PacketCounter::install(&lab, 1);
    for attempt in &escapes {
        assert_refused_at(escape(&lab, &app, attempt), "send", &format!("{attempt:?}"));
    }
    // The admin hears of it: one line per family (rate-limited, so not
    // one per attempt), naming the policy's cgroup and the interface.
    let app_rel = format!("{}/app", lab.cgroup_rel());
    let mut log = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let notices = |log: &str, family: &str| {
        log.lines()
            .filter(|l| {
                l.contains(&format!("guard: strict policy 1 (cgroup {app_rel})"))
                    && l.contains("tried to leave by wlan0")
                    && l.contains(&format!("1 {family} packet dropped"))
            })
            .count()
    };
    while (notices(&log, "IPv4") == 0 || notices(&log, "IPv6") == 0)
        && std::time::Instant::now() < deadline
    {
        log += &daemon.log();
    }
    assert_eq!(notices(&log, "IPv4"), 1, "{log}");
    assert_eq!(notices(&log, "IPv6"), 1, "{log}");
    // Held by the socket hooks already: the source mif gives an unconnected
    // UDP datagram has its `from` rule, which routes it by wwan0 whatever
    // the datagram's mark, and an IPv6 datagram naming wlan0 keeps that
    // source too.
    let (v4, v6) = (INTERNET_V4.to_string(), INTERNET_V6.to_string());
    for args in [
        ["--to", &v4, "--cmsg-mark", "0"],
        ["--to", &v6, "--cmsg-mark", "0"],
        ["--to", &v6, "--pktinfo-dev", "wlan0"],
    ] {
        let reply = attack(&lab, &app, &args).unwrap();
        assert!(reply.starts_with("wwan0 "), "{args:?}: {reply}");
    }
    // The policy's own interface named per datagram is no escape.
    for to in [&v4, &v6] {
        let reply = attack(&lab, &app, &["--to", to, "--pktinfo-dev", "wwan0"]).unwrap();
        assert!(reply.starts_with("wwan0 "), "{reply}");
    }
    assert_eq!(leaks.packets(), 0, "packets reached wlan0's network");
    assert!(allowed.packets() >= 5, "wwan0's router counted nothing");
    let maps = daemon.maps_json().unwrap();
    // One packet per attempt, each counted under wlan0's PvD.
    let n = escapes.len() as u64;
    assert_eq!(guard_drops(&maps, "wlan0"), (n, n), "{maps:#}");
    // The socket hooks refused none of it: the guard alone held.
    assert_eq!(denied(&daemon), 0);
}

/// The guards run only where strict policies are: none while there is
/// none (no cgroup link, no interface link); then the egress guard on the
/// strict cgroup alone (a sibling without a policy has no mif program on
/// its egress path) and the packet guard on every interface but loopback;
/// none again once the policy is removed.
#[test]
fn the_guards_are_attached_only_where_strict_policies_are() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let plain = lab.create_cgroup("plain").unwrap();
    let daemon = Daemon::start(&lab, "").unwrap();
    let guarded = |daemon: &Daemon| {
        let maps = daemon.maps_json().unwrap();
        let instance = &maps["instance"];
        (
            instance["guarded_cgroups"].as_u64().unwrap(),
            instance["guarded_interfaces"].as_u64().unwrap(),
        )
    };
    let runs_guard = |cgroup: &std::path::Path| {
        mif_tests::lab::effective_egress_programs(cgroup)
            .unwrap()
            .iter()
            .any(|p| p == "mif_guard")
    };
    assert_eq!(guarded(&daemon), (0, 0));
    assert!(!runs_guard(&app) && !runs_guard(&plain));

    let app_rel = format!("{}/app", lab.cgroup_rel());
    let mif = |args: &[&str]| {
        let out = daemon.mif(args).unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    mif(&["policy", "set", &app_rel, "--prefer", "wwan0", "--strict"]);
    let links = lab.ip_host(&["-j", "link", "show"]).unwrap();
    let links: serde_json::Value = serde_json::from_str(&links).unwrap();
    let not_loopback = links
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["ifname"] != "lo")
        .count() as u64;
    assert_eq!(guarded(&daemon), (1, not_loopback));
    assert!(runs_guard(&app), "the strict cgroup has no guard");
    assert!(
        !runs_guard(&plain),
        "a cgroup without a policy runs the guard"
    );

    mif(&["policy", "del", &app_rel]);
    assert_eq!(guarded(&daemon), (0, 0));
    assert!(!runs_guard(&app));
}

/// A socket that existed before its cgroup had the strict policy carries
/// no mark and would leave by the main table's network (wlan0): the
/// guard drops its packets once the policy is there, whether it came with
/// the daemon's start or later from the CLI.
#[test]
fn a_socket_opened_before_the_policy_cannot_leave_by_another_network() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let later = lab.create_cgroup("later").unwrap();
    let v4 = INTERNET_V4.to_string();
    let v6 = INTERNET_V6.to_string();
    let early = [
        Early::open(&lab, &app, &["--to", &v4]),
        Early::open(&lab, &app, &["--to", &v6]),
    ];

    let daemon = Daemon::start(&lab, &strict_config(&lab, "app", "")).unwrap();
    let leaks = PacketCounter::install(&lab, 0);
    // New sockets of the same cgroup are held...
    assert_refused_at(
        attack(&lab, &app, &["--to", &v4, "--setsockopt", "mark"]),
        "setsockopt",
        "a new socket",
    );
    // ...and the old ones cannot leave by wlan0 either.
    for socket in early {
        assert_refused_at(socket.go(), "send", "a socket opened before the policy");
    }

    // A policy set from the CLI while the daemon runs: the same.
    let early = Early::open(&lab, &later, &["--to", &v4]);
    let later_rel = format!("{}/later", lab.cgroup_rel());
    let out = daemon
        .mif(&["policy", "set", &later_rel, "--prefer", "wwan0", "--strict"])
        .unwrap();
    assert!(
        out.status.success(),
        "policy set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_refused_at(
        early.go(),
        "send",
        "a socket opened before a CLI-set policy",
    );
    assert_eq!(leaks.packets(), 0, "packets reached wlan0's network");
    let maps = daemon.maps_json().unwrap();
    assert_eq!(guard_drops(&maps, "wlan0"), (2, 2), "{maps:#}");
    let all = mif_tests::e2e::counter_total(&maps, "guard_drops");
    assert_eq!(all, 3, "the CLI policy's drop is missing: {maps:#}");
}

/// The guard reads only pinned maps: after a SIGKILL of the daemon it
/// still drops, for sockets opened before and after the kill.
#[test]
fn the_guard_holds_while_the_daemon_is_killed() {
    skip_unless_root!();
    let lab = lab();
    let escapes = escapes(&lab);
    let app = lab.create_cgroup("app").unwrap();
    let daemon = Daemon::start(&lab, &strict_config(&lab, "app", "")).unwrap();
    let leaks = PacketCounter::install(&lab, 0);
    let v4 = INTERNET_V4.to_string();
    let instance = daemon.instance.clone();
    // Whatever happens, the killed daemon's pins go with the test.
    struct Cleanup<'a>(&'a Lab, mif_tests::mif::Instance);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let mut args = vec!["cleanup".to_string()];
            args.extend(self.1.args());
            let _ = mif_tests::mif::run_mif(self.0, &args);
        }
    }
    let _cleanup = Cleanup(&lab, instance.clone());

    let open = Early::open(
        &lab,
        &app,
        &["--to", &v4, "--proto", "raw", "--cmsg-mark", "0"],
    );
    assert_refused_at(
        attack(&lab, &app, &["--to", &v4, "--pktinfo-dev", "wlan0"]),
        "send",
        "an interface per datagram, daemon running",
    );
    daemon.kill_hard().unwrap();
    assert_refused_at(open.go(), "send", "a mark per datagram, daemon killed");
    for attempt in &escapes {
        assert_refused_at(
            escape(&lab, &app, attempt),
            "send",
            &format!("{attempt:?}, daemon killed"),
        );
    }
    // The packet guard's links are pinned too: a packet socket's frame
    // stays held, and so does the refusal to send past tc.
    let [plain, bypass] = &frames(&lab)[..] else {
        unreachable!("two frames")
    };
    let result = escape(&lab, &app, plain);
    let held = match &result {
        Ok(reply) => reply == "sent",
        Err(e) => e.starts_with("send: "),
    };
    assert!(held, "a packet socket's frame, daemon killed: {result:?}");
    assert_refused_at(
        escape(&lab, &app, bypass),
        "setsockopt",
        "PACKET_QDISC_BYPASS, daemon killed",
    );
    // Ordinary traffic still leaves by wwan0.
    let reply = attack(&lab, &app, &["--to", &v4]).unwrap();
    assert!(reply.starts_with("wwan0 "), "{reply}");
    assert_eq!(
        leaks.packets(),
        0,
        "packets or frames reached wlan0's network"
    );

    let pin_dir = instance.pin_dir.display().to_string();
    let out = mif_tests::mif::run_mif(&lab, &["maps", "--json", "--pin-dir", &pin_dir]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let maps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The two datagrams, the escapes, the frame.
    let n = 3 + escapes.len() as u64;
    assert_eq!(guard_drops(&maps, "wlan0"), (n, n), "{maps:#}");
}

/// The guard is for strict policies only: the same packets from a cgroup
/// without a policy, or with a policy that is not strict, leave by wlan0
/// as the kernel routes them (one packet each reaches router 0), while the
/// strict cgroup's are dropped. So do their packet sockets' frames
/// ([`frames`]), which show that router 0 counts them.
#[test]
fn the_guard_leaves_unsteered_and_non_strict_traffic_alone() {
    skip_unless_root!();
    let lab = lab();
    let escapes = escapes(&lab);
    let app = lab.create_cgroup("app").unwrap();
    let plain = lab.create_cgroup("plain").unwrap();
    let loose = lab.create_cgroup("loose").unwrap();
    let config = strict_config(&lab, "app", "")
        + &format!(
            "[[policy]]\ncgroup = \"{}/loose\"\nprefer = [\"wwan0\"]\n",
            lab.cgroup_rel()
        );
    let daemon = Daemon::start(&lab, &config).unwrap();

    let leaks = PacketCounter::install(&lab, 0);
    let mut expected = 0;
    for attempt in &escapes {
        for cgroup in [&plain, &loose] {
            let result = escape(&lab, cgroup, attempt);
            // Sent; a non-strict socket's datagram has wwan0's source on
            // wlan0, which router 0 cannot answer.
            let sent = match &result {
                Ok(reply) => reply.starts_with("wlan0 ") || reply == "sent",
                Err(e) => e.starts_with("recv: "),
            };
            assert!(sent, "{attempt:?} from {}: {result:?}", cgroup.display());
            expected += 1;
            assert_eq!(
                leaks.packets(),
                expected,
                "{attempt:?} from {}",
                cgroup.display()
            );
        }
        assert_refused_at(
            escape(&lab, &app, attempt),
            "send",
            &format!("strict {attempt:?}"),
        );
        assert_eq!(
            leaks.packets(),
            expected,
            "strict {attempt:?} reached wlan0"
        );
    }
    // A frame of a packet socket reaches router 0 from either cgroup, with
    // or without the device's queueing layer.
    for frame in frames(&lab) {
        for cgroup in [&plain, &loose] {
            let args: Vec<&str> = frame.iter().map(String::as_str).collect();
            let result = attack(&lab, cgroup, &args);
            assert_eq!(result, Ok("sent".to_owned()), "{frame:?}");
            expected += 1;
            assert_eq!(leaks.packets(), expected, "{frame:?}");
        }
    }
    // Unsteered TCP and the strict cgroup's loopback traffic pass too.
    let reply = lab
        .client(Some(&plain), Proto::Tcp, INTERNET_V4.into(), None)
        .unwrap();
    assert_eq!(reply.network, "wlan0");
    let reply = attack(
        &lab,
        &app,
        &["--to", "127.0.0.1", "--proto", "raw", "--cmsg-mark", "0"],
    );
    assert_eq!(reply, Ok("sent".to_owned()), "loopback");
    let maps = daemon.maps_json().unwrap();
    let n = escapes.len() as u64;
    assert_eq!(
        mif_tests::e2e::counter_total(&maps, "guard_drops"),
        n,
        "{maps:#}"
    );
}

#[test]
fn raw_sockets_are_refused_with_deny_raw() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let plain = lab.create_cgroup("plain").unwrap();
    let config = strict_config(&lab, "app", "deny_raw = true")
        + &format!(
            "[[policy]]\ncgroup = \"{}/plain\"\nprefer = [\"wwan0\"]\nstrict = true\n",
            lab.cgroup_rel()
        );
    let daemon = Daemon::start(&lab, &config).unwrap();

    for to in [INTERNET_V4.to_string(), INTERNET_V6.to_string()] {
        assert_refused_at(
            attack(&lab, &app, &["--to", &to, "--proto", "raw"]),
            "socket",
            &format!("raw socket to {to}"),
        );
        // Ordinary sockets of the same policy are steered as ever.
        let reply = attack(&lab, &app, &["--to", &to]).unwrap();
        assert!(reply.starts_with("wwan0 "), "{reply}");
        // Without deny_raw a raw socket is made (and carries the mark).
        assert_eq!(
            attack(&lab, &plain, &["--to", &to, "--proto", "raw"]).unwrap(),
            "sent"
        );
    }
    assert_eq!(denied(&daemon), 2);
}

/// An exclusion is a hole to the excluded destinations and nothing else: a
/// socket taken off wwan0 by connecting to wlan0's (excluded) network first
/// cannot then be connected, or send, anywhere else.
#[test]
fn an_excluded_socket_cannot_be_reused_for_other_destinations() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let config = strict_config(&lab, "app", "exclude = [\"198.18.0.0/24\"]");
    let _daemon = Daemon::start(&lab, &config).unwrap();
    let (wlan, wwan) = (lab.network(0), lab.network(1));
    let within = std::time::Duration::from_secs(5);
    mif_tests::e2e::wait_until_leaves_by(&lab, &app, Family::V4, wwan, within);
    let lan = wlan.gateway_v4.to_string();
    let internet = INTERNET_V4.to_string();

    // The excluded destination itself: through wlan0, by the main table.
    let reply = attack(&lab, &app, &["--to", &lan, "--proto", "tcp"]).unwrap();
    assert_eq!(reply, format!("wlan0 {}", wlan.host_v4));

    // UDP: connect() to the excluded network sends nothing, so nothing may
    // reach wlan0's network at all.
    let leaks = PacketCounter::install(&lab, 0);
    let udp = attack(&lab, &app, &["--to", &internet, "--first-connect", &lan]);
    assert_refused_at(udp, "send", "UDP sendto after an excluded connect");
    assert_eq!(leaks.packets(), 0, "packets reached wlan0's network");
    // TCP: connected to the excluded router, disconnected (AF_UNSPEC),
    // then connected again elsewhere.
    let tcp = attack(
        &lab,
        &app,
        &["--to", &internet, "--proto", "tcp", "--first-connect", &lan],
    );
    assert_refused_at(tcp, "connect", "TCP reconnect after an excluded connect");
}

/// Counter `field` of policy 1 in `mif maps --json` output, summed over
/// its PvDs.
fn counted(maps: &serde_json::Value, field: &str) -> u64 {
    maps["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["policy"] == 1)
        .map(|c| c[field].as_u64().unwrap())
        .sum()
}

/// Lets root open ICMP "ping" sockets in the lab's host namespace
/// (`net.ipv4.ping_group_range`, which IPv6 ping sockets obey too; a new
/// namespace allows no group). The setting belongs to the network
/// namespace that writes it, the lab's: the machine's stays as it was.
fn allow_ping_sockets(lab: &Lab) {
    let cmd = lab
        .command_in(None, "sysctl", ["-qw", "net.ipv4.ping_group_range=0 0"])
        .unwrap();
    let out = lab.output(cmd, std::time::Duration::from_secs(10)).unwrap();
    assert!(
        out.status.success(),
        "sysctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ICMP "ping" sockets pass two fewer socket hooks than UDP: the kernel
/// calls their own bind (`ping_bind`) instead of running the cgroup bind
/// hook, and their sendmsg (`ping_v4_sendmsg`, `ping_v6_sendmsg`) runs no
/// cgroup sendmsg hook at all. A strict ping socket bound to wlan0's
/// address, or sending with wlan0's address or interface in
/// `IP_PKTINFO`/`IPV6_PKTINFO`, a mark of 0, `MSG_DONTROUTE` or a
/// link-scoped destination, is held by the guard alone: router 0 counts
/// none of it and each is a guard drop under wlan0, while the same echo
/// requests from an unsteered cgroup all reach router 0. IPv4 sends fail
/// with EPERM; IPv6 ones report success, since `ping_v6_sendmsg` ignores
/// what `icmpv6_push_pending_frames` returns, so the application never
/// learns of the drop. (An `IPV6_PKTINFO` source is no escape: the kernel
/// overwrites it with the socket's own.)
#[test]
fn ping_sockets_cannot_leave_by_another_network() {
    skip_unless_root!();
    let lab = lab();
    allow_ping_sockets(&lab);
    let app = lab.create_cgroup("app").unwrap();
    let plain = lab.create_cgroup("plain").unwrap();
    let daemon = Daemon::start(&lab, &strict_config(&lab, "app", "")).unwrap();
    let leaks = PacketCounter::install(&lab, 0);
    let allowed = PacketCounter::install(&lab, 1);
    let wlan = lab.network(0);
    let (v4, v6) = (INTERNET_V4.to_string(), INTERNET_V6.to_string());
    let (own_v4, own_v6) = (wlan.host_v4.to_string(), wlan.host_v6.to_string());
    let neighbour = wlan.gateway_v4.to_string();
    let scoped = format!("{}%wlan0", router_link_local(&lab, 0));
    // A tentative source would hold back the unsteered echo to it.
    wait_for_link_local(&lab, "wlan0");

    // The policy's own network works.
    for to in [&v4, &v6] {
        let reply = attack(&lab, &app, &["--to", to, "--proto", "ping"]);
        assert_eq!(reply, Ok("sent".to_owned()), "ping {to}");
    }
    assert_eq!(
        allowed.packets(),
        2,
        "wwan0's router missed an echo request"
    );

    let attempts: [(&str, &[&str]); 9] = [
        (&v4, &["--pktinfo-dev", "wlan0"]),
        (&v4, &["--pktinfo-src", &own_v4]),
        (&v4, &["--bind", &own_v4]),
        (&v4, &["--cmsg-mark", "0"]),
        (&neighbour, &["--dontroute-flag"]),
        (&v6, &["--pktinfo-dev", "wlan0"]),
        (&v6, &["--bind", &own_v6]),
        (&v6, &["--cmsg-mark", "0"]),
        (&scoped, &[]),
    ];
    let args = |to: &str, rest: &[&str]| {
        let mut args = vec![
            "--to".to_owned(),
            to.to_owned(),
            "--proto".into(),
            "ping".into(),
        ];
        args.extend(rest.iter().map(|a| a.to_string()));
        args
    };
    for (to, rest) in attempts {
        let args = args(to, rest);
        let result = escape(&lab, &app, &args);
        if to.contains(':') {
            assert_eq!(result, Ok("sent".to_owned()), "{args:?}");
        } else {
            assert_refused_at(result, "send", &format!("{args:?}"));
        }
    }
    assert_eq!(leaks.packets(), 0, "echo requests reached wlan0's network");
    let maps = daemon.maps_json().unwrap();
    let n = attempts.len() as u64;
    assert_eq!(guard_drops(&maps, "wlan0"), (n, n), "{maps:#}");
    // No socket hook saw any of it.
    assert_eq!(counted(&maps, "denied"), 0, "{maps:#}");
    assert_eq!(counted(&maps, "src_set"), 0, "{maps:#}");

    // Without a policy each leaves by wlan0.
    for (i, (to, rest)) in attempts.iter().enumerate() {
        let args = args(to, rest);
        assert_eq!(escape(&lab, &plain, &args), Ok("sent".to_owned()));
        let n = i as u64 + 1;
        assert_eq!(leaks.packets_reaching(n), n, "{args:?} from no policy");
    }
}

/// io_uring requests are no way around the hooks: a socket made by
/// `IORING_OP_SOCKET` is marked like any, `IORING_OP_BIND`, the
/// setsockopt of `IORING_OP_URING_CMD`, `IORING_OP_CONNECT` and
/// `IORING_OP_SENDMSG`/`IORING_OP_SEND` reach the same protocol code as
/// the syscalls (`inet_bind`, `do_sock_setsockopt`, `tcp_v4_pre_connect`,
/// `udp_sendmsg`) and so the same cgroup hooks, whose counters show it,
/// and the guard drops a datagram naming wlan0 (the EPERM arrives in the
/// completion). The same holds when the ring's kernel thread submits the
/// requests (`IORING_SETUP_SQPOLL`): that thread is in the attacker's
/// cgroup. A TCP connection to router 0's own address goes by wwan0 (and
/// gets no answer there); router 0 counts nothing of any of it.
#[test]
fn io_uring_requests_are_held_like_syscalls() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let daemon = Daemon::start(&lab, &strict_config(&lab, "app", "")).unwrap();
    let leaks = PacketCounter::install(&lab, 0);
    let allowed = PacketCounter::install(&lab, 1);
    let (wlan, wwan) = (lab.network(0), lab.network(1));
    let (v4, v6) = (INTERNET_V4.to_string(), INTERNET_V6.to_string());
    let own_v4 = wlan.host_v4.to_string();
    let router = wlan.gateway_v4.to_string();
    let vias = ["io_uring", "sqpoll"];
    for via in vias {
        let run = |args: &[&str]| {
            let mut all = vec!["--via", via];
            all.extend_from_slice(args);
            attack(&lab, &app, &all)
        };
        // Steered: the sendmsg hook gives the datagrams their source
        // (SENDMSG), the connect hook binds (CONNECT; SEND after it).
        for (to, own) in [
            (&v4, wwan.host_v4.to_string()),
            (&v6, wwan.host_v6.to_string()),
        ] {
            assert_eq!(run(&["--to", to]), Ok(format!("wwan0 {own}")), "{via}");
        }
        let reply = run(&["--to", &v4, "--connected"]);
        assert_eq!(reply, Ok(format!("wwan0 {}", wwan.host_v4)), "{via}");
        let reply = run(&["--to", &v4, "--proto", "tcp"]);
        assert_eq!(reply, Ok(format!("wwan0 {}", wwan.host_v4)), "{via}");
        let before = allowed.packets();
        match run(&["--to", &router, "--proto", "tcp"]) {
            Err(e) if e.starts_with("connect: timed out") => {}
            other => panic!("{via}: TCP to router 0's address: {other:?}"),
        }
        assert!(
            allowed.packets() > before,
            "{via}: no SYN reached wwan0's router"
        );
        // Refused by the socket hooks.
        let refused: [(&[&str], &str); 4] = [
            (&["--to", &v4, "--bind", &own_v4], "bind"),
            (
                &["--to", &v4, "--setsockopt", "device", "--dev", "wlan0"],
                "setsockopt",
            ),
            (
                &[
                    "--to",
                    &v4,
                    "--connected",
                    "--setsockopt",
                    "device",
                    "--dev",
                    "wlan0",
                ],
                "setsockopt",
            ),
            (&["--to", &v4, "--pktinfo-src", &own_v4], "send"),
        ];
        for (args, operation) in refused {
            assert_refused_at(run(args), operation, &format!("{via} {args:?}"));
        }
        // Dropped by the guard.
        let result = run(&["--to", &v4, "--pktinfo-dev", "wlan0"]);
        assert_refused_at(result, "send", &format!("{via}: IP_PKTINFO naming wlan0"));
    }
    assert_eq!(leaks.packets(), 0, "packets reached wlan0's network");
    let maps = daemon.maps_json().unwrap();
    let n = vias.len() as u64;
    assert_eq!(guard_drops(&maps, "wlan0"), (n, n), "{maps:#}");
    assert_eq!(counted(&maps, "denied"), 4 * n, "{maps:#}");
    // Three unconnected datagrams per ring got wwan0's source (the one the
    // guard dropped too), four connects were bound to it.
    assert_eq!(counted(&maps, "src_set"), 3 * n, "{maps:#}");
    assert_eq!(counted(&maps, "bound"), 4 * n, "{maps:#}");
}

/// `IP_TRANSPARENT` (`IPV6_TRANSPARENT`), root's with `CAP_NET_ADMIN`, lets
/// a socket bind an address the host does not have. Not one of another
/// network: wlan0's own address is refused at bind as without it. A
/// foreign source, even one in wlan0's prefix, is no way onto wlan0's
/// network: no `from` rule matches it, so the socket's mark routes it by
/// wwan0, with a source whose replies cannot come back (spoofing, as with
/// a raw socket's `IP_HDRINCL`, not another network). Router 1 counts each
/// attempt, router 0 none, and the guard has nothing to drop.
#[test]
fn transparent_sockets_bind_foreign_addresses_but_leave_by_their_network() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let daemon = Daemon::start(&lab, &strict_config(&lab, "app", "")).unwrap();
    let leaks = PacketCounter::install(&lab, 0);
    let allowed = PacketCounter::install(&lab, 1);
    let wlan = lab.network(0);
    let (v4, v6) = (INTERNET_V4.to_string(), INTERNET_V6.to_string());
    let router = wlan.gateway_v4.to_string();

    let refused = attack(
        &lab,
        &app,
        &[
            "--to",
            &v4,
            "--transparent",
            "--bind",
            &wlan.host_v4.to_string(),
        ],
    );
    assert_refused_at(refused, "bind", "IP_TRANSPARENT bound to wlan0's address");
    // wlan0's prefix, TEST-NET-1 and a prefix of wlan0's /48 the host has
    // no address in.
    let attempts = [
        (&v4, "udp", "198.18.0.99"),
        (&router, "udp", "198.18.0.99"),
        (&v4, "udp", "192.0.2.99"),
        (&router, "tcp", "198.18.0.99"),
        (&v4, "tcp", "192.0.2.99"),
        (&v6, "udp", "2001:db8::99"),
        (&v6, "tcp", "2001:db8::99"),
    ];
    for (to, proto, source) in attempts {
        let before = allowed.packets();
        let args = [
            "--to",
            to,
            "--proto",
            proto,
            "--transparent",
            "--bind",
            source,
        ];
        let failed = match attack(&lab, &app, &args) {
            Err(e) => e.starts_with("recv: timed out") || e.starts_with("connect: timed out"),
            Ok(_) => false,
        };
        assert!(failed, "{args:?}: answered, or failed before sending");
        assert!(
            allowed.packets() > before,
            "{args:?}: nothing reached wwan0's router"
        );
        assert_eq!(leaks.packets(), 0, "{args:?} reached wlan0's network");
    }
    let maps = daemon.maps_json().unwrap();
    assert_eq!(counted(&maps, "denied"), 1, "{maps:#}");
    assert_eq!(counted(&maps, "guard_drops"), 0, "{maps:#}");
}

/// Where router 1 serves MPTCP (`lab-peer serve --mptcp`).
const MPTCP_PORT: &str = "7778";

/// Starts an MPTCP peer in router 1, and has the host's in-kernel path
/// manager add a subflow from wlan0's addresses (`ip mptcp endpoint ...
/// subflow`, in the lab's host namespace: path manager settings are per
/// namespace) to every MPTCP connection once it is established.
fn mptcp_over_both_networks(lab: &Lab) {
    let args = ["serve", "--name", "wwan0", "--port", MPTCP_PORT, "--mptcp"];
    let mut cmd = lab.command_in_router(1, lab.peer_path(), args).unwrap();
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let peer = lab.spawn(cmd).unwrap();
    let mut stdout = BufReader::new(peer.take_stdout().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let limits = [
        "mptcp",
        "limits",
        "set",
        "subflow",
        "2",
        "add_addr_accepted",
        "2",
    ];
    lab.ip_host(&limits).unwrap();
    let wlan = lab.network(0);
    for own in [wlan.host_v4.to_string(), wlan.host_v6.to_string()] {
        let endpoint = ["mptcp", "endpoint", "add", &own, "dev", "wlan0", "subflow"];
        lab.ip_host(&endpoint).unwrap();
    }
}

/// MPTCP adds subflows of its own accord: with an endpoint on wlan0, the
/// host's path manager opens one from wlan0's address once a connection
/// is up, from a kernel worker, on a kernel socket: `sock_create` does not
/// run for it, and the bind and connect hooks that do run judge the
/// calling task, the worker, which has no policy. The kernel puts such a
/// subflow in its connection's cgroup (`mptcp_attach_cgroup`), so the
/// guard sees a strict application's and drops it: a strict connection
/// over wwan0 still gets its answer, router 0 counts no packet of either
/// family, and every try of the join is a guard drop under wlan0. The
/// same connection from a policy that is not strict does reach router 0
/// with that join (which it resets: it has no such connection).
///
/// The connections bind wwan0's address: an MPTCP socket's first subflow
/// is a kernel socket too, and does not carry the mark `sock_create` gave
/// the application's socket (the kernel copies a connection's options to
/// its subflows only after a setsockopt() on it: `mptcp_sockopt_sync_locked`
/// compares `setsockopt_seq`, which a mark written by a program never
/// bumps), so an unbound one leaves by the main table's route, wlan0,
/// where the guard drops it. Router 0 must see nothing of that either,
/// whatever the application gets.
#[test]
fn mptcp_subflows_cannot_leave_by_another_network() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let loose = lab.create_cgroup("loose").unwrap();
    let config = strict_config(&lab, "app", "")
        + &format!(
            "[[policy]]\ncgroup = \"{}/loose\"\nprefer = [\"wwan0\"]\n",
            lab.cgroup_rel()
        );
    let daemon = Daemon::start(&lab, &config).unwrap();
    mptcp_over_both_networks(&lab);
    let leaks = PacketCounter::install(&lab, 0);
    let wwan = lab.network(1);
    let (v4, v6) = (INTERNET_V4.to_string(), INTERNET_V6.to_string());
    let connect = |cgroup: &Path, to: &str, bind: Option<&str>| {
        let mut args = vec![
            "--to", to, "--port", MPTCP_PORT, "--proto", "mptcp", "--hold", "3",
        ];
        if let Some(bind) = bind {
            args.extend(["--bind", bind]);
        }
        attack(&lab, cgroup, &args)
    };

    for (to, own) in [
        (&v4, wwan.host_v4.to_string()),
        (&v6, wwan.host_v6.to_string()),
    ] {
        let reply = connect(&app, to, Some(&own)).unwrap();
        assert!(reply.starts_with(&format!("wwan0 {own} ")), "{reply}");
    }
    assert_eq!(leaks.packets(), 0, "a subflow reached wlan0's network");
    let maps = daemon.maps_json().unwrap();
    let (_, joins) = guard_drops(&maps, "wlan0");
    assert!(
        joins >= 2,
        "no join of either connection was dropped: {maps:#}"
    );

    let result = connect(&app, &v4, None);
    assert!(
        !result.as_ref().is_ok_and(|r| r.starts_with("wlan0 ")),
        "{result:?}"
    );
    assert_eq!(
        leaks.packets(),
        0,
        "an unbound MPTCP connection reached wlan0's network"
    );

    let own = wwan.host_v4.to_string();
    let reply = connect(&loose, &v4, Some(&own)).unwrap();
    assert!(reply.starts_with(&format!("wwan0 {own} ")), "{reply}");
    assert!(leaks.packets() > 0, "no join reached wlan0's network");
}

/// The frames [`packet_sockets_cannot_send_by_another_network`] sends, as
/// `lab-peer attack` arguments: one UDP datagram to the internet address
/// from wlan0's address, to router 0's MAC address on wlan0's link, out of
/// a packet socket bound to wlan0; once through the device's queueing
/// layer (`dev_queue_xmit`, where tc's egress hook runs) and once past it
/// (`PACKET_QDISC_BYPASS`: `dev_direct_xmit`, which runs no tc hook; in the
/// lab a tc egress drop on wlan0 held the first frame and not the second).
fn frames(lab: &Lab) -> Vec<Vec<String>> {
    let json = lab
        .ip_router(0, &["-j", "link", "show", "dev", "eth0"])
        .unwrap();
    let links: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mac = links[0]["address"].as_str().unwrap().to_owned();
    let base = [
        "--to".to_owned(),
        INTERNET_V4.to_string(),
        "--proto".into(),
        "packet".into(),
        "--dev".into(),
        "wlan0".into(),
        "--src".into(),
        lab.network(0).host_v4.to_string(),
        "--dst-mac".into(),
        mac,
    ];
    let mut bypass = base.to_vec();
    bypass.push("--qdisc-bypass".into());
    vec![base.to_vec(), bypass]
}

/// A packet socket (`AF_PACKET`, root's with `CAP_NET_RAW`) writes whole
/// frames to a device: no socket address hook and no IP output path, so
/// no `cgroup_skb` guard, sees them. A strict application gets none to
/// router 0 all the same: the packet guard (tc egress on every interface)
/// drops the plain frame, counted as a guard drop under wlan0, and
/// `PACKET_QDISC_BYPASS`, which would send past tc (a tc egress drop on
/// wlan0 held the first frame and not the second before it was refused),
/// is refused at `setsockopt` and counted as denied. Without the packet
/// guard router 0 counted both frames (an unsteered cgroup's frames still
/// reach it, see [`the_guard_leaves_unsteered_and_non_strict_traffic_alone`]).
#[test]
fn packet_sockets_cannot_send_by_another_network() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let daemon = Daemon::start(&lab, &strict_config(&lab, "app", "")).unwrap();
    let leaks = PacketCounter::install(&lab, 0);
    let [plain, bypass] = &frames(&lab)[..] else {
        unreachable!("two frames")
    };
    // Dropped on its way out: the sender may or may not hear of it.
    let result = escape(&lab, &app, plain);
    let held = match &result {
        Ok(reply) => reply == "sent",
        Err(e) => e.starts_with("send: "),
    };
    assert!(held, "{plain:?}: {result:?}");
    assert_refused_at(
        escape(&lab, &app, bypass),
        "setsockopt",
        "PACKET_QDISC_BYPASS",
    );
    assert_eq!(leaks.packets(), 0, "frames reached wlan0's network");
    let maps = daemon.maps_json().unwrap();
    assert_eq!(guard_drops(&maps, "wlan0").1, 1, "{maps:#}");
    assert_eq!(denied(&daemon), 1, "{maps:#}");
}
