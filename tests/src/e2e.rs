//! Helpers shared by the end-to-end test files: the usual lab, policies as
//! TOML, and waiting until a cgroup's traffic leaves by a network.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
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
