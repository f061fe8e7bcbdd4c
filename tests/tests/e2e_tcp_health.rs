//! End-to-end: a network that silently stops carrying traffic is noticed
//! from the applications' own TCP connections. A router drops everything
//! to the internet address (an nftables rule in its namespace, nothing
//! on the host changes); connects steered to that network time out, the
//! kernel's `mif_tcp_health` program reports each retransmission timeout
//! and `mif pvd list` counts them under that PvD, and under no other.
//! Connections mif does not steer are not watched at all.
use std::{
    io::Write as _,
    net::IpAddr,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use mif_tests::e2e::{echo_client, echo_server, policy_toml, two_networks as lab};
use mif_tests::{
    lab::{Lab, LabChild, INTERNET_V4, INTERNET_V6, PEER_PORT},
    mif::Daemon,
    skip_unless_root,
};

/// How long the first SYN retransmission may take to be counted: the
/// initial RTO is 1 s, and the daemon reads the ring as it fills.
const FIRST_TIMEOUT_WITHIN: Duration = Duration::from_secs(10);

/// A TCP connect from `cgroup` to the internet address that waits up to a
/// minute for an answer (the SYN is retransmitted meanwhile); killed with
/// the returned child, or with the lab.
fn connect_and_wait(lab: &Lab, cgroup: &Path, to: IpAddr) -> LabChild {
    let target = match to {
        IpAddr::V4(a) => format!("TCP4:{a}:{PEER_PORT},connect-timeout=60"),
        IpAddr::V6(a) => format!("TCP6:[{a}]:{PEER_PORT},connect-timeout=60"),
    };
    let mut cmd = lab
        .command_in(Some(cgroup), "socat", ["-u", "OPEN:/dev/null", &target])
        .unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lab.spawn(cmd).unwrap()
}

/// Kills a connecting client and waits until it is gone, so its socket is
/// closed (a SYN_SENT socket is dropped at close: no more timeouts).
fn stop(client: LabChild) {
    client.kill().unwrap();
    client
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("the client outlived SIGKILL");
}

/// `tcp_timeouts` of every PvD in `mif pvd list --json`.
fn tcp_timeouts(daemon: &Daemon) -> std::collections::BTreeMap<String, u64> {
    let out = daemon.mif(&["pvd", "list", "--json"]).unwrap();
    assert!(
        out.status.success(),
        "mif pvd list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pvds: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    pvds.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let n = p["tcp_timeouts"]
                .as_u64()
                .unwrap_or_else(|| panic!("no tcp_timeouts in {p}"));
            (p["name"].as_str().unwrap().to_owned(), n)
        })
        .collect()
}

/// Polls until PvD `pvd` has counted more than `above` timeouts; returns
/// all counts then.
fn wait_for_timeouts(
    daemon: &mut Daemon,
    pvd: &str,
    above: u64,
) -> std::collections::BTreeMap<String, u64> {
    let deadline = Instant::now() + FIRST_TIMEOUT_WITHIN;
    loop {
        let counts = tcp_timeouts(daemon);
        if counts.get(pvd).copied().unwrap_or(0) > above {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "{pvd} counted no more than {above} TCP timeouts within {FIRST_TIMEOUT_WITHIN:?}: \
             {counts:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The host namespace's count of TCP retransmission timeouts of any socket
/// (`TcpExt: TCPTimeouts` in /proc/net/netstat), whatever mif saw.
fn kernel_tcp_timeouts(lab: &Lab) -> u64 {
    let out = lab
        .output_in(None, "cat", ["/proc/net/netstat"])
        .expect("reading /proc/net/netstat");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "TCPTimeouts")
        .and_then(|(_, value)| value.parse().ok())
        .expect("TCPTimeouts in /proc/net/netstat")
}

#[test]
fn timeouts_of_steered_connections_count_for_their_pvd_only() {
    skip_unless_root!();
    let lab = lab();
    let rel = lab.cgroup_rel();
    let to_wwan = lab.create_cgroup("to-wwan").unwrap();
    let to_wlan = lab.create_cgroup("to-wlan").unwrap();
    let unsteered = lab.create_cgroup("plain").unwrap();
    let config = policy_toml(&format!("{rel}/to-wwan"), &["wwan0"], "")
        + &policy_toml(&format!("{rel}/to-wlan"), &["wlan0"], "");
    let mut daemon = Daemon::start(&lab, &config).unwrap();
    mif_tests::e2e::wait_until_leaves_by(
        &lab,
        &to_wwan,
        mif_tests::lab::Family::V4,
        lab.network(1),
        Duration::from_secs(5),
    );
    let status = daemon.maps_json().unwrap();
    assert_eq!(
        status["instance"]["attached"]["mif_tcp_health"], 1,
        "{status:#}"
    );
    // Both networks go dark; the main table (unsteered traffic) leads to
    // wlan0's.
    lab.cut_upstream(0).unwrap();
    lab.cut_upstream(1).unwrap();

    // Unsteered: the kernel times the SYN out, mif is not told.
    let before = kernel_tcp_timeouts(&lab);
    let plain = connect_and_wait(&lab, &unsteered, INTERNET_V4.into());
    let deadline = Instant::now() + FIRST_TIMEOUT_WITHIN;
    while kernel_tcp_timeouts(&lab) <= before {
        assert!(
            Instant::now() < deadline,
            "the unsteered connect never timed out"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(plain);
    assert_eq!(
        tcp_timeouts(&daemon).values().sum::<u64>(),
        0,
        "an unsteered connection was counted"
    );

    // Steered to wwan0: counted there. The ring is read in order, so had
    // the unsteered timeout been reported, it would be counted by now.
    let client = connect_and_wait(&lab, &to_wwan, INTERNET_V4.into());
    let counts = wait_for_timeouts(&mut daemon, "wwan0", 0);
    stop(client);
    assert_eq!(counts["wlan0"], 0, "{counts:?}");
    // Nor was it reported and set aside as no PvD's: the program never
    // asked for the callback on a socket without a PvD mark.
    let status = daemon.mif(&["status", "--json"]).unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["daemon"]["tcp_timeouts_no_pvd"], 0,
        "an unsteered socket was watched: {status:#}"
    );

    // IPv6 sockets are watched too (steered to wlan0 this time, which
    // nothing has counted for so far).
    let client = connect_and_wait(&lab, &to_wlan, INTERNET_V6.into());
    wait_for_timeouts(&mut daemon, "wlan0", 0);
    stop(client);

    // The table of `mif pvd list` says it in words.
    let out = daemon.mif(&["pvd", "list"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("wwan0: ") && text.contains("TCP retransmission timeouts"),
        "{text}"
    );
}

/// The ring is pinned: a daemon that replaces a SIGKILLed one reads it
/// and counts on; and stopping removes the program and the ring.
#[test]
fn a_restarted_daemon_follows_timeouts_and_a_stopped_one_leaves_nothing() {
    skip_unless_root!();
    let lab = lab();
    let rel = lab.cgroup_rel();
    let app = lab.create_cgroup("app").unwrap();
    let config = policy_toml(&format!("{rel}/app"), &["wwan0"], "");
    let first = Daemon::start(&lab, &config).unwrap();
    let versioned = first
        .instance
        .pin_dir
        .join(format!("v{}", mif_common::LAYOUT_VERSION));
    first.kill_hard().unwrap();
    let mut second = Daemon::start(&lab, &config).unwrap();
    lab.cut_upstream(1).unwrap();
    let client = connect_and_wait(&lab, &app, INTERNET_V4.into());
    wait_for_timeouts(&mut second, "wwan0", 0);
    stop(client);
    for pin in [
        versioned.join("maps/MIF_TCP_TROUBLE"),
        versioned.join("maps/MIF_TCP_LOST"),
        versioned.join("links/mif_tcp_health"),
    ] {
        assert!(pin.exists(), "{} is not pinned", pin.display());
    }
    second.stop().unwrap();
    for pin in [
        "maps/MIF_TCP_TROUBLE",
        "maps/MIF_TCP_LOST",
        "links/mif_tcp_health",
    ] {
        assert!(
            !versioned.join(pin).exists(),
            "{pin} is still pinned after the daemon stopped"
        );
    }
}

/// A child process killed (and reaped) when this drops, also while a
/// failing test unwinds.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An established connection whose data stops being acknowledged (the
/// network went dark after the handshake) is counted too: the callback
/// asked for at connect stays with the connection.
#[test]
fn unacknowledged_data_of_an_established_connection_counts_too() {
    skip_unless_root!();
    let lab = lab();
    let rel = lab.cgroup_rel();
    let app = lab.create_cgroup("app").unwrap();
    let mut daemon =
        Daemon::start(&lab, &policy_toml(&format!("{rel}/app"), &["wwan0"], "")).unwrap();
    echo_server(&lab, 1);
    // Connected and carrying data.
    let (client, mut stdin) = echo_client(&lab, &app);
    let client = KillOnDrop(client);
    assert_eq!(tcp_timeouts(&daemon)["wwan0"], 0);

    lab.cut_upstream(1).unwrap();
    stdin.write_all(b"anyone?\n").unwrap();
    wait_for_timeouts(&mut daemon, "wwan0", 0);
    drop(client);
}

/// Passive detection: with probes only every 300 s, a network whose
/// upstream dies under an application's connects is declared failing
/// within seconds, by the probe its first SYN timeout brings forward, and
/// that probe's failure alone.
#[test]
fn a_timeout_brings_the_pvds_probe_forward_and_its_failure_is_final() {
    skip_unless_root!();
    let lab = lab();
    let _servers = lab.start_connectivity_servers().unwrap();
    let app = lab.create_cgroup("app").unwrap();
    let config = format!(
        "[validation]\nurl = \"http://{INTERNET_V4}{}\"\ninterval = 300\ntimeout = 2\n\n{}",
        mif_tests::lab::CONNECTIVITY_PATH,
        policy_toml(&format!("{}/app", lab.cgroup_rel()), &["wwan0"], "")
    );
    let daemon = Daemon::start(&lab, &config).unwrap();
    let validation = |pvd: &str| {
        let out = daemon.mif(&["pvd", "list", "--json"]).unwrap();
        let pvds: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        pvds.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == pvd)
            .and_then(|p| p["validation_v4"]["state"].as_str().map(str::to_owned))
    };
    let wait_for = |want: &str, within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            let got = validation("wwan0");
            if got.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "wwan0 still {got:?} after {within:?}, expected {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("validated", Duration::from_secs(10));

    lab.cut_upstream(1).unwrap();
    let client = connect_and_wait(&lab, &app, INTERNET_V4.into());
    // The first SYN timeout after 1 s, then one probe of at most 2 s:
    // without passive detection the next probe would be 300 s away.
    wait_for("failing", Duration::from_secs(10));
    stop(client);
    assert!(tcp_timeouts(&daemon)["wwan0"] >= 1);
}
