//! End-to-end: the captive portal's API URI a network announces (RFC 8910)
//! shows in `mif pvd list`, from either place a network can announce it:
//! a DHCPv4 lease (option 114, which dnsmasq in the router sends and the
//! host's dhclient writes to its lease file as `option default-url`), and a
//! router advertisement (option 37, which the kernel passes up as an ND
//! user option). Debian's radvd (2.19) cannot send option 37, so the
//! router's advertisement is `lab-peer ra`'s.
use std::time::{Duration, Instant};

use mif_tests::e2e::{policy_toml, two_networks as lab};
use mif_tests::{
    lab::{Lab, OUTPUT_TIMEOUT},
    mif::Daemon,
    skip_unless_root,
};

/// Within this long of being announced, a URI must show.
const SHOWN_WITHIN: Duration = Duration::from_secs(10);

/// `(captive_portal_api, captive_portal_source)` of PvD `pvd` in `mif pvd
/// list --json`.
fn portal(daemon: &Daemon, pvd: &str) -> (Option<String>, Option<String>) {
    let out = daemon.mif(&["pvd", "list", "--json"]).unwrap();
    let pvds: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = pvds
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pvd)
        .unwrap_or_else(|| panic!("no PvD {pvd} in {pvds:#}"));
    let text = |key: &str| p[key].as_str().map(str::to_owned);
    (text("captive_portal_api"), text("captive_portal_source"))
}

/// Polls until PvD `pvd` shows `uri` from `source`, doing `poke` (sending
/// the announcement again, say) before every look.
fn wait_for_portal(daemon: &mut Daemon, pvd: &str, uri: &str, source: &str, poke: impl Fn()) {
    let want = (Some(uri.to_owned()), Some(source.to_owned()));
    let deadline = Instant::now() + SHOWN_WITHIN;
    loop {
        poke();
        let got = portal(daemon, pvd);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pvd}: expected {want:?}, got {got:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_dhcp_lease_with_option_114_gives_the_pvd_its_captive_portal() {
    skip_unless_root!();
    let lab = lab();
    let uri = "https://portal.lab/capport/api?net=wwan0";
    let lease = lab
        .use_dhcp_forcing(1, &[&format!("114,{uri}")])
        .expect("DHCP on wwan0");
    // What the host's DHCP client made of it: option 114 is dhclient's
    // `default-url`, written although its request list did not ask for it.
    let text = lease.lease_text();
    assert!(
        text.contains(&format!("option default-url \"{uri}\";")),
        "{text}"
    );
    let config = format!(
        "[dns]\nleases = [{:?}]\n\n{}",
        lease.lease_file().display().to_string(),
        policy_toml(&format!("{}/app", lab.cgroup_rel()), &["wwan0"], ""),
    );
    lab.create_cgroup("app").unwrap();
    let mut daemon = Daemon::start(&lab, &config).unwrap();
    wait_for_portal(&mut daemon, "wwan0", uri, "dhcp", || {});
    assert_eq!(portal(&daemon, "wlan0"), (None, None));
    let out = daemon.mif(&["pvd", "list"]).unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("wwan0: captive portal API {uri} (dhcp)")),
        "{table}"
    );
}

/// `lab-peer ra` in router `i`: one RA with option 37 carrying `uri`.
fn advertise(lab: &Lab, i: usize, uri: &str) {
    // The router's end of the host's link (the lab's `ROUTER_IF`).
    let cmd = lab
        .command_in_router(
            i,
            lab.peer_path(),
            ["ra", "--dev", "eth0", "--captive-portal", uri],
        )
        .unwrap();
    let out = lab.output(cmd, OUTPUT_TIMEOUT).unwrap();
    assert!(
        out.status.success(),
        "lab-peer ra: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_router_advertisement_with_option_37_gives_the_pvd_its_captive_portal() {
    skip_unless_root!();
    let lab = lab();
    let config = policy_toml(&format!("{}/app", lab.cgroup_rel()), &["wwan0"], "");
    lab.create_cgroup("app").unwrap();
    let mut daemon = Daemon::start(&lab, &config).unwrap();

    let first = "https://portal.lab/api";
    wait_for_portal(&mut daemon, "wwan0", first, "ra", || {
        advertise(&lab, 1, first)
    });
    assert_eq!(
        portal(&daemon, "wlan0"),
        (None, None),
        "heard on wwan0 only"
    );

    // The next URI the network announces replaces it; a network without a
    // portal says so with the IANA URN, which is shown as it is.
    for next in [
        "https://portal.lab/api/v2",
        "urn:ietf:params:capport:unrestricted",
    ] {
        wait_for_portal(&mut daemon, "wwan0", next, "ra", || {
            advertise(&lab, 1, next)
        });
    }
    let log = daemon.log();
    assert!(
        log.contains(
            "PvD wwan0: captive portal API https://portal.lab/api (from a router advertisement)"
        ),
        "{log}"
    );
}
