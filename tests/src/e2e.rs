//! Helpers shared by the end-to-end test files: the usual lab, policies as
//! TOML, waiting until a cgroup's traffic leaves by a network, and a TCP
//! echo connection that stays open (for resets).
use std::{
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use crate::lab::{ClientReply, Family, Lab, Network, Proto, INTERNET_V4, INTERNET_V6};

/// The lab most tests use: Wi-Fi (`wlan0`, the main table's default) and
/// cellular (`wwan0`).
pub fn two_networks() -> Lab {
    Lab::new(&["wlan0", "wwan0"]).expect("building the lab")
}

/// One `[[policy]]` entry as TOML, with `extra` lines (`strict = true`…).
pub fn policy_toml(cgroup: &str, prefer: &[&str], extra: &str) -> String {
    let prefer: Vec<String> = prefer.iter().map(|p| format!("{p:?}")).collect();
    format!(
        "[[policy]]\ncgroup = {cgroup:?}\nprefer = [{}]\n{extra}\n",
        prefer.join(", ")
    )
}

/// Creates the lab's cgroup `app` and a config with one policy for it
/// (`prefer`, `extra` as in [`policy_toml`]); returns the cgroup's path and
/// the config.
pub fn app_with_policy(lab: &Lab, prefer: &[&str], extra: &str) -> (PathBuf, String) {
    let app = lab.create_cgroup("app").expect("creating the app's cgroup");
    let config = policy_toml(&format!("{}/app", lab.cgroup_rel()), prefer, extra);
    (app, config)
}

/// The "internet" address every router serves, of `family`.
pub fn internet(family: Family) -> IpAddr {
    match family {
        Family::V4 => INTERNET_V4.into(),
        Family::V6 => INTERNET_V6.into(),
    }
}

/// The host's own address on `net`, of `family`.
pub fn host_addr(net: &Network, family: Family) -> IpAddr {
    match family {
        Family::V4 => net.host_v4.into(),
        Family::V6 => net.host_v6.into(),
    }
}

/// Polls until a TCP client in `cgroup` leaves by `net` with `net`'s own
/// address as source, failing after `within` with the last answer.
pub fn wait_until_leaves_by(
    lab: &Lab,
    cgroup: &Path,
    family: Family,
    net: &Network,
    within: Duration,
) {
    let expected = ClientReply {
        network: net.name.clone(),
        source: host_addr(net, family),
    };
    let deadline = Instant::now() + within;
    loop {
        let got = lab.client(Some(cgroup), Proto::Tcp, internet(family), None);
        match &got {
            Ok(reply) if *reply == expected => return,
            _ if Instant::now() > deadline => {
                panic!("{family:?}: expected {expected:?}, last got {got:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Counter `field` summed over every (policy, PvD) row of `mif maps
/// --json` output.
pub fn counter_total(maps: &serde_json::Value, field: &str) -> u64 {
    maps["counters"]
        .as_array()
        .expect("counters in mif maps --json")
        .iter()
        .map(|c| {
            c[field]
                .as_u64()
                .unwrap_or_else(|| panic!("no counter {field} in {c}"))
        })
        .sum()
}

/// The routing table of PvD `pvd` in `mif maps --json` output: the daemon's
/// own numbering (`--table-base` plus the PvD's index, or the configured
/// table), so a test never spells a table number.
pub fn pvd_table(maps: &serde_json::Value, pvd: &str) -> u64 {
    maps["pvds"]
        .as_array()
        .expect("pvds in mif maps --json")
        .iter()
        .find(|p| p["name"] == pvd)
        .unwrap_or_else(|| panic!("no PvD {pvd} in {maps}"))["table"]
        .as_u64()
        .unwrap_or_else(|| panic!("PvD {pvd} has no table in {maps}"))
}

/// An echo server on router `i` (1: wwan0's network, 0: wlan0's, where the
/// main table's default leads), 203.0.113.1:9000, one process per
/// connection.
pub fn echo_server(lab: &Lab, i: usize) {
    // In a cgroup of the lab's, so that the per-connection processes go
    // with the lab even when a connection never saw its end.
    let servers = lab
        .create_cgroup(&format!("echo{i}"))
        .expect("creating the echo server's cgroup");
    let echo = lab
        .command_in_router_within(
            i,
            &servers,
            "socat",
            [
                "TCP-LISTEN:9000,fork,reuseaddr,bind=203.0.113.1",
                "EXEC:cat",
            ],
        )
        .unwrap();
    lab.spawn(echo).unwrap();
    // Listening once the router's socket table shows it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !router_listens(lab, i, 9000) {
        assert!(Instant::now() < deadline, "socat never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A connection from `app` to [`echo_server`], checked to carry data; it
/// stays open until its stdin is dropped (or it is reset).
pub fn echo_client(lab: &Lab, app: &Path) -> (std::process::Child, std::process::ChildStdin) {
    let mut client = lab
        .command_in(Some(app), "socat", ["-", "TCP:203.0.113.1:9000"])
        .unwrap();
    client
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = client.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    let mut echoed = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut echoed,
    )
    .unwrap();
    assert_eq!(echoed, "hello\n", "the connection does not carry data");
    (child, stdin)
}

/// Whether router `i` has a TCP socket listening on `port`.
pub fn router_listens(lab: &Lab, i: usize, port: u16) -> bool {
    let ns = &lab.network(i).router_ns;
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-Hltn"])
        .output()
        .expect("running ss");
    String::from_utf8_lossy(&out.stdout).contains(&format!(":{port} "))
}
