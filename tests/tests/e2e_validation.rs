//! End-to-end: networks that are up but do not work. Every network of the
//! lab serves `/generate_204` on the internet address; a network's upstream
//! dies (its router silently drops everything for the internet while link,
//! address and gateway stay) or turns into a captive portal (its
//! `/generate_204` redirects), and what a user observes follows: the
//! network a new connection of the app leaves by, `mif pvd list`, `mif
//! monitor`, the connections reset, and the probes each server saw.
use std::{
    io::{BufRead as _, BufReader},
    net::IpAddr,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use mif_tests::e2e::{
    echo_client, echo_server, host_addr, policy_toml, two_networks as lab, wait_until_leaves_by,
};
use mif_tests::{
    lab::{
        Answer, ConnectivityServers, Family, Lab, Proto, CONNECTIVITY_NAME, CONNECTIVITY_PATH,
        INTERNET_V4,
    },
    mif::Daemon,
    skip_unless_root,
};

/// The probe interval of these tests, in seconds: the fast case,
/// where a dead network must be noticed in 2–3 s.
const INTERVAL: u64 = 1;

/// `[validation]` probing the internet address of whichever network a
/// probe leaves by.
fn validation_toml() -> String {
    format!(
        "[validation]\nurl = \"http://{INTERNET_V4}{CONNECTIVITY_PATH}\"\ninterval = {INTERVAL}\n"
    )
}

/// The validation state of `pvd` for IPv4, as `mif pvd list --json` shows.
fn state(daemon: &Daemon, pvd: &str) -> (Option<String>, Option<String>) {
    state_of(daemon, pvd, Family::V4)
}

/// The validation state and portal of `pvd` for `family`.
fn state_of(daemon: &Daemon, pvd: &str, family: Family) -> (Option<String>, Option<String>) {
    let out = daemon.mif(&["pvd", "list", "--json"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pvds: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = pvds
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pvd)
        .unwrap_or_else(|| panic!("no PvD {pvd} in {pvds:#}"));
    let v = match family {
        Family::V4 => &p["validation_v4"],
        Family::V6 => &p["validation_v6"],
    };
    (
        v["state"].as_str().map(String::from),
        v["portal"].as_str().map(String::from),
    )
}

/// Polls until `pvd`'s IPv4 validation is `want`; returns how long it took.
fn wait_state(daemon: &Daemon, pvd: &str, want: &str, within: Duration) -> Duration {
    wait_state_of(daemon, pvd, Family::V4, want, within)
}

/// Polls until `pvd`'s validation for `family` is `want`.
fn wait_state_of(
    daemon: &Daemon,
    pvd: &str,
    family: Family,
    want: &str,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let (got, _) = state_of(daemon, pvd, family);
        if got.as_deref() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{pvd} {family:?}: still {got:?} after {within:?}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where a new TCP connection of `cgroup` (None: unsteered) leaves by.
fn network_of(lab: &Lab, cgroup: Option<&Path>) -> String {
    lab.client(cgroup, Proto::Tcp, INTERNET_V4.into(), None)
        .unwrap()
        .network
}

/// Starts the daemon with validation on, once the servers are up (they
/// must be, for the first probes to validate), and waits until both PvDs
/// validated.
fn start<'lab>(lab: &'lab Lab, _servers: &ConnectivityServers<'_>, policies: &str) -> Daemon<'lab> {
    let daemon = Daemon::start(lab, &format!("{}{policies}", validation_toml())).unwrap();
    for pvd in ["wlan0", "wwan0"] {
        wait_state(&daemon, pvd, "validated", Duration::from_secs(5));
    }
    daemon
}

#[test]
fn a_dead_upstream_moves_the_app_to_the_next_pvd_within_three_intervals_and_back() {
    skip_unless_root!();
    let lab = lab();
    let servers = lab.start_connectivity_servers().unwrap();
    let app = lab.create_cgroup("app").unwrap();
    let other = lab.create_cgroup("other").unwrap();
    let policy = policy_toml(
        &format!("{}/app", lab.cgroup_rel()),
        &["wwan0", "wlan0"],
        "",
    );
    let daemon = start(&lab, &servers, &policy);
    let (wlan, wwan) = (lab.network(0), lab.network(1));
    assert_eq!(network_of(&lab, Some(&app)), "wwan0");
    assert_eq!(network_of(&lab, Some(&other)), "wlan0");

    lab.cut_upstream(wwan.index).unwrap();
    let cut = Instant::now();
    wait_state(
        &daemon,
        "wwan0",
        "failing",
        Duration::from_secs(3 * INTERVAL),
    );
    // The next new connection takes wlan0, from wlan0's address.
    wait_until_leaves_by(&lab, &app, Family::V4, wlan, Duration::from_secs(1));
    let moved = cut.elapsed();
    assert!(
        moved <= Duration::from_secs(3 * INTERVAL),
        "moved after {moved:?}"
    );
    assert_eq!(
        network_of(&lab, Some(&other)),
        "wlan0",
        "unsteered: untouched"
    );
    let (link, addr) = (
        lab.ip_host(&["link", "show", "dev", "wwan0"]).unwrap(),
        lab.ip_host(&["-4", "addr", "show", "dev", "wwan0"])
            .unwrap(),
    );
    assert!(link.contains(",UP") && addr.contains(&wwan.host_v4.to_string()));

    lab.restore_upstream(wwan.index).unwrap();
    wait_state(&daemon, "wwan0", "validated", Duration::from_secs(5));
    wait_until_leaves_by(&lab, &app, Family::V4, wwan, Duration::from_secs(1));
    assert_eq!(
        network_of(&lab, Some(&other)),
        "wlan0",
        "unsteered: untouched"
    );
    let log = { daemon }.log();
    assert!(
        log.contains("PvD wwan0 (IPv4): validated -> failing"),
        "{log}"
    );
}

#[test]
fn a_captive_wifi_moves_the_app_to_cellular_and_is_shown_with_its_portal() {
    skip_unless_root!();
    let lab = lab();
    let servers = lab.start_connectivity_servers().unwrap();
    let app = lab.create_cgroup("app").unwrap();
    let policy = policy_toml(
        &format!("{}/app", lab.cgroup_rel()),
        &["wlan0", "wwan0"],
        "",
    );
    let daemon = start(&lab, &servers, &policy);
    let (wlan, wwan) = (lab.network(0), lab.network(1));
    wait_until_leaves_by(&lab, &app, Family::V4, wlan, Duration::from_secs(1));
    let mut monitor = Monitor::start(&lab, &daemon);

    let portal = "http://portal.lab/login?from=generate_204";
    servers
        .set_answer(wlan.index, Answer::Redirect(portal.into()))
        .unwrap();
    wait_state(
        &daemon,
        "wlan0",
        "captive",
        Duration::from_secs(3 * INTERVAL),
    );
    assert_eq!(state(&daemon, "wlan0").1.as_deref(), Some(portal));
    wait_until_leaves_by(&lab, &app, Family::V4, wwan, Duration::from_secs(1));
    // The table says so too, with the portal and the last probe.
    let out = daemon.mif(&["pvd", "list"]).unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("wlan0: IPv4 captive (portal {portal})")),
        "{table}"
    );
    let line = monitor.until(|e| e["event"] == "pvd" && e["validation_v4"]["state"] == "captive");
    assert_eq!(line["validation_v4"]["portal"], portal);
    // `mif pvd probe` answers with what it found.
    let out = daemon.mif(&["pvd", "probe", "wlan0"]).unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("IPv4: captive") && said.contains("HTTP 302"),
        "{said}"
    );

    // A portal that answers in place (200) is a portal as well.
    servers.set_answer(wlan.index, Answer::Page).unwrap();
    let out = daemon.mif(&["pvd", "probe", "wlan0", "--json"]).unwrap();
    let probed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(probed[0]["state"], "captive", "{probed}");
    assert_eq!(probed[0]["last_outcome"], "HTTP 200", "{probed}");

    servers.set_answer(wlan.index, Answer::NoContent).unwrap();
    wait_state(
        &daemon,
        "wlan0",
        "validated",
        Duration::from_secs(3 * INTERVAL),
    );
    wait_until_leaves_by(&lab, &app, Family::V4, wlan, Duration::from_secs(1));
    monitor.until(|e| e["event"] == "pvd" && e["validation_v4"]["state"] == "validated");
}

/// A strict app's PvD fails: it stays there (refused nowhere else, its
/// packets go nowhere else), and a non-strict app with `reset = true` has
/// its connection on the failing PvD reset. Every probe left by the network
/// it validated: each server saw only its own network's source address.
#[test]
fn strict_apps_stay_on_a_failing_pvd_reset_apps_are_reset_and_probes_stay_on_their_pvd() {
    skip_unless_root!();
    let lab = lab();
    let servers = lab.start_connectivity_servers().unwrap();
    let strict = lab.create_cgroup("strict").unwrap();
    let resets = lab.create_cgroup("resets").unwrap();
    let rel = lab.cgroup_rel();
    let policies = policy_toml(&format!("{rel}/strict"), &["wwan0"], "strict = true")
        + &policy_toml(
            &format!("{rel}/resets"),
            &["wwan0", "wlan0"],
            "reset = true",
        );
    let daemon = start(&lab, &servers, &policies);
    let (wlan, wwan) = (lab.network(0), lab.network(1));
    let wwan_mark = lab.sockmark(Some(&strict), Family::V4).unwrap().mark;
    echo_server(&lab, wwan.index);
    let (mut held, _held_in) = echo_client(&lab, &resets);

    lab.cut_upstream(wwan.index).unwrap();
    wait_state(
        &daemon,
        "wwan0",
        "failing",
        Duration::from_secs(3 * INTERVAL),
    );
    // The connection left on the failing PvD is reset at once.
    let deadline = Instant::now() + Duration::from_secs(2);
    while held.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = held.kill();
            panic!("the connection on the failing PvD was not reset");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until_leaves_by(&lab, &resets, Family::V4, wlan, Duration::from_secs(1));
    // The strict app's sockets keep wwan0's mark, and its connection gets
    // no answer rather than one from wlan0's network.
    assert_eq!(
        lab.sockmark(Some(&strict), Family::V4).unwrap().mark,
        wwan_mark
    );
    let tried = lab.client(Some(&strict), Proto::Tcp, INTERNET_V4.into(), None);
    assert!(
        tried.is_err(),
        "the strict app left by another network: {tried:?}"
    );

    for net in [wlan, wwan] {
        let seen = servers.requests(net.index).unwrap();
        assert!(!seen.is_empty(), "{}: no probe arrived", net.name);
        let own: IpAddr = host_addr(net, Family::V4);
        for r in &seen {
            assert_eq!(r.source, own, "{}: a probe from elsewhere: {r:?}", net.name);
            assert_eq!(r.path, CONNECTIVITY_PATH);
        }
    }
    drop(daemon);
}

/// A URL by name: each PvD resolves it through its own resolver (the
/// host's stub does not know the name), over either family, and validates
/// IPv4 and IPv6 apart; a dead upstream fails both and the app's IPv6
/// connections move as well.
#[test]
fn a_named_url_is_resolved_by_each_pvd_and_both_families_are_validated() {
    skip_unless_root!();
    let lab = lab();
    let servers = lab.start_connectivity_servers().unwrap();
    let _resolvers = [lab.start_resolver(0, &[]), lab.start_resolver(1, &[])];
    let app = lab.create_cgroup("app").unwrap();
    let (wlan, wwan) = (lab.network(0), lab.network(1));
    // wlan0's resolver is asked over IPv4, wwan0's over IPv6.
    let config = format!(
        "[validation]\nurl = \"http://{CONNECTIVITY_NAME}{CONNECTIVITY_PATH}\"\ninterval = {INTERVAL}\n\
         [[pvd]]\nname = \"wlan0\"\ndns = [\"{}\"]\n\
         [[pvd]]\nname = \"wwan0\"\ndns = [\"{}\"]\n{}",
        wlan.gateway_v4,
        wwan.gateway_v6,
        policy_toml(&format!("{}/app", lab.cgroup_rel()), &["wwan0", "wlan0"], ""),
    );
    let daemon = Daemon::start(&lab, &config).unwrap();
    for pvd in ["wlan0", "wwan0"] {
        for family in [Family::V4, Family::V6] {
            wait_state_of(&daemon, pvd, family, "validated", Duration::from_secs(5));
        }
    }
    for net in [wlan, wwan] {
        let sources: Vec<IpAddr> = servers
            .requests(net.index)
            .unwrap()
            .iter()
            .map(|r| r.source)
            .collect();
        for family in [Family::V4, Family::V6] {
            assert!(
                sources.contains(&host_addr(net, family)),
                "{}: no {family:?} probe in {sources:?}",
                net.name
            );
        }
        assert!(
            sources
                .iter()
                .all(|s| *s == net.host_v4 || *s == net.host_v6),
            "{}: {sources:?}",
            net.name
        );
    }
    let named = servers.requests(wwan.index).unwrap();
    assert!(named
        .iter()
        .all(|r| r.host.as_deref() == Some(CONNECTIVITY_NAME)));

    lab.cut_upstream(wwan.index).unwrap();
    for family in [Family::V4, Family::V6] {
        wait_state_of(
            &daemon,
            "wwan0",
            family,
            "failing",
            Duration::from_secs(3 * INTERVAL),
        );
        wait_until_leaves_by(&lab, &app, family, wlan, Duration::from_secs(1));
    }
}

#[test]
fn without_a_validation_section_nothing_is_probed() {
    skip_unless_root!();
    let lab = lab();
    let servers = lab.start_connectivity_servers().unwrap();
    let app = lab.create_cgroup("app").unwrap();
    let policy = policy_toml(
        &format!("{}/app", lab.cgroup_rel()),
        &["wwan0", "wlan0"],
        "",
    );
    let daemon = Daemon::start(&lab, &policy).unwrap();
    assert_eq!(network_of(&lab, Some(&app)), "wwan0");
    assert_eq!(state(&daemon, "wwan0"), (None, None));
    let out = daemon.mif(&["pvd", "probe", "wwan0"]).unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("validation is off for PvD wwan0"), "{said}");
    for net in lab.networks() {
        assert!(servers.requests(net.index).unwrap().is_empty());
    }
}

/// `mif monitor --json` in the background, read line by line; the lab
/// stops it with its other processes.
struct Monitor {
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Monitor {
    fn start(lab: &Lab, daemon: &Daemon) -> Self {
        let pins = daemon.instance.pin_dir.display().to_string();
        let args = ["monitor", "--json", "--pin-dir", &pins];
        let mut cmd = lab
            .command_in(None, mif_tests::mif::mif_path().unwrap(), args)
            .unwrap();
        cmd.stdout(Stdio::piped());
        let child = lab.spawn(cmd).unwrap();
        let stdout = child.take_stdout().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let mut monitor = Self { lines };
        monitor.until(|e| e["event"] == "subscribed");
        monitor
    }

    /// The first event from now on that `want` accepts (within 5 s).
    fn until(&mut self, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(event) if want(&event) => return event,
                Ok(_) => {}
                Err(e) => panic!("mif monitor: no such event ({e})"),
            }
        }
    }
}
