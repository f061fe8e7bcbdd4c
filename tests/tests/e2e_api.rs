//! End-to-end: the MIF API as an unprivileged application uses it, through
//! the Python module over libmif (`tests/python/mif_client.py`), against
//! the real `mif daemon` and kernel programs in a lab of two networks. What
//! is asserted is what the application and the network's peer observe:
//! which network a socket left by, which source the peer saw, which errno
//! a refused choice gave, and which PvD `mif_connect` won by.
use std::{net::IpAddr, path::Path};

use mif_tests::api::{client, run_c_example, spawn_client, UNPRIVILEGED};
use mif_tests::e2e::{host_addr, internet, policy_toml as policy, two_networks as lab};
use mif_tests::{
    lab::{Family, Lab, Proto, Resolver, CONNECTIVITY_NAME, DNS_NAME, INTERNET_V4, PEER_PORT},
    mif::Daemon,
    skip_unless_root,
};
use serde_json::Value;

const ENOENT: i64 = 2;
const EPERM: i64 = 1;
const ENETUNREACH: i64 = 101;
const EINVAL: i64 = 22;

fn port() -> String {
    PEER_PORT.to_string()
}

/// The client's `choose` for `proto` to `to`, choosing `pvd` (None: no
/// choice), from `cgroup`.
fn choose(
    lab: &Lab,
    daemon: &Daemon<'_>,
    cgroup: &Path,
    proto: Proto,
    to: IpAddr,
    pvd: Option<&str>,
) -> Value {
    let (to, port) = (to.to_string(), port());
    let mut args = vec![
        "choose",
        "--to",
        &to,
        "--port",
        &port,
        "--proto",
        proto.arg(),
    ];
    if let Some(pvd) = pvd {
        args.extend(["--pvd", pvd]);
    }
    client(lab, daemon, Some(cgroup), &args).unwrap()
}

/// The network and source the peer reported in `out`'s reply.
fn reply(out: &Value) -> (String, IpAddr) {
    let line = out["reply"]
        .as_str()
        .unwrap_or_else(|| panic!("no reply: {out}"));
    let (network, source) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("odd reply {line:?}"));
    (network.to_owned(), source.parse().unwrap())
}

fn config(lab: &Lab, policies: &[(&str, &[&str], &str)]) -> String {
    let rel = lab.cgroup_rel();
    let mut toml = String::new();
    for n in 0..2 {
        let net = lab.network(n);
        toml += &format!(
            "[[pvd]]\nname = {:?}\ndns = [\"{}\"]\n",
            net.name, net.gateway_v4
        );
    }
    for (cgroup, prefer, extra) in policies {
        toml += &policy(&format!("{rel}/{cgroup}"), prefer, extra);
    }
    toml
}

#[test]
fn an_unprivileged_app_chooses_each_pvd_for_each_kind_of_socket() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    lab.create_cgroup("other").unwrap();
    let daemon = Daemon::start(&lab, &config(&lab, &[("other", &["wwan0"], "")])).unwrap();

    for n in 0..2 {
        let net = lab.network(n);
        for family in [Family::V4, Family::V6] {
            for proto in Proto::ALL {
                let out = choose(
                    &lab,
                    &daemon,
                    &app,
                    proto,
                    internet(family),
                    Some(&net.name),
                );
                let what = format!("{proto} {family:?} choosing {}: {out}", net.name);
                assert_eq!(out["before"], Value::Null, "{what}: no policy, no PvD");
                assert_eq!(out["after"], net.name.as_str(), "{what}: getsockopt");
                assert_eq!(out.get("choose_error"), None, "{what}");
                let (network, source) = reply(&out);
                assert_eq!(network, net.name, "{what}: left by the wrong network");
                assert_eq!(source, host_addr(net, family), "{what}: wrong source");
            }
        }
    }
    // Without a choice the app follows the main table (wlan0), so the
    // wwan0 answers above were the choice's doing.
    let out = choose(&lab, &daemon, &app, Proto::Tcp, INTERNET_V4.into(), None);
    assert_eq!(reply(&out).0, "wlan0", "{out}");
    // Every choice is counted: 2 PvDs × 2 families × 3 kinds of socket.
    let maps = daemon.maps_json().unwrap();
    assert_eq!(mif_tests::e2e::counter_total(&maps, "chosen"), 12, "{maps}");
}

#[test]
fn refused_choices_give_their_errno_and_leave_the_socket_as_it_was() {
    skip_unless_root!();
    let lab = lab();
    let tight = lab.create_cgroup("tight").unwrap();
    let loose = lab.create_cgroup("loose").unwrap();
    let toml = config(
        &lab,
        &[
            ("tight", &["wlan0"], ""),
            ("loose", &["wlan0"], "allow = [\"wwan0\"]"),
        ],
    );
    let daemon = Daemon::start(&lab, &toml).unwrap();
    let to: IpAddr = INTERNET_V4.into();

    for (cgroup, pvd, errno) in [(&tight, "nope0", ENOENT), (&tight, "wwan0", EPERM)] {
        for proto in Proto::ALL {
            let out = choose(&lab, &daemon, cgroup, proto, to, Some(pvd));
            assert_eq!(out["choose_error"], errno, "{proto} choosing {pvd}: {out}");
            assert_eq!(out["before"], "wlan0", "{out}");
            assert_eq!(out["after"], "wlan0", "unchanged: {out}");
            assert_eq!(reply(&out).0, "wlan0", "{out}");
        }
    }
    // The allow list lets the loose policy's processes choose wwan0.
    let out = choose(&lab, &daemon, &loose, Proto::Tcp, to, Some("wwan0"));
    assert_eq!(
        reply(&out),
        ("wwan0".into(), lab.network(1).host_v4.into()),
        "{out}"
    );
    // But not for a socket bound to wlan0's address, which would then
    // leave by wwan0 from wlan0's source.
    let (to_text, wlan_addr, port) = (to.to_string(), lab.network(0).host_v4.to_string(), port());
    let args = [
        "choose", "--to", &to_text, "--port", &port, "--bind", &wlan_addr, "--pvd", "wwan0",
    ];
    let out = client(&lab, &daemon, Some(&loose), &args).unwrap();
    assert_eq!(out["choose_error"], EINVAL, "{out}");
    assert_eq!(out["after"], "wlan0", "{out}");
    assert_eq!(
        reply(&out),
        ("wlan0".into(), lab.network(0).host_v4.into()),
        "{out}"
    );

    // Change notifications: a watcher hears of wwan0 going down.
    let watcher = spawn_client(&lab, &daemon, Some(&loose), &["watch", "--pvd", "wwan0"]).unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        watcher.take_stdout().expect("the watcher's stdout"),
    ));
    let first = lines.next().expect("the watcher's first line").unwrap();
    assert!(first.contains("subscribed"), "{first}");
    lab.ip_host(&["link", "set", "wwan0", "down"]).unwrap();
    let event: Value = serde_json::from_str(&lines.next().expect("an event").unwrap()).unwrap();
    assert_eq!(event["events"]["wwan0"]["available_v4"], false, "{event}");

    // An allowed PvD that is unavailable: ENETUNREACH, socket unchanged.
    let out = choose(&lab, &daemon, &loose, Proto::Tcp, to, Some("wwan0"));
    assert_eq!(out["choose_error"], ENETUNREACH, "{out}");
    assert_eq!(out["after"], "wlan0", "{out}");
    assert_eq!(reply(&out).0, "wlan0", "{out}");
}

#[test]
fn change_notifications_are_each_seen_by_a_poll_loop() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let daemon = Daemon::start(&lab, &config(&lab, &[("app", &["wlan0"], "")])).unwrap();
    let args = ["watch", "--pvd", "wlan0", "--pvd", "wwan0"];
    let watcher = spawn_client(&lab, &daemon, Some(&app), &args).unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        watcher.take_stdout().expect("the watcher's stdout"),
    ));
    let first = lines.next().expect("the watcher's first line").unwrap();
    assert!(first.contains("subscribed"), "{first}");
    // Both in one ip(8) call: the daemon sends both events at once, and
    // the second must not wait unseen behind the first.
    std::fs::create_dir_all(lab.scratch_root()).unwrap();
    let script = lab.scratch_root().join("both-down.ip");
    std::fs::write(&script, "link set wwan0 down\nlink set wlan0 down\n").unwrap();
    lab.ip_host(&["-batch", script.to_str().unwrap()]).unwrap();
    let events: Value = serde_json::from_str(&lines.next().expect("events").unwrap()).unwrap();
    for pvd in ["wlan0", "wwan0"] {
        assert_eq!(events["events"][pvd]["available_v4"], false, "{events}");
    }
}

#[test]
fn a_bind_device_policy_keeps_its_interface() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let terms = "allow = [\"wwan0\"]\nbind = \"device\"";
    let daemon = Daemon::start(&lab, &config(&lab, &[("app", &["wlan0"], terms)])).unwrap();
    let to: IpAddr = INTERNET_V4.into();
    // Bound to wlan0 at socket(); only CAP_NET_RAW may rebind it.
    let out = choose(&lab, &daemon, &app, Proto::Tcp, to, Some("wwan0"));
    assert_eq!(out["choose_error"], EPERM, "{out}");
    assert_eq!(out["after"], "wlan0", "{out}");
    assert_eq!(reply(&out).0, "wlan0", "{out}");
    let out = choose(&lab, &daemon, &app, Proto::Tcp, to, Some("wlan0"));
    assert_eq!(
        out.get("choose_error"),
        None,
        "its own interface's PvD: {out}"
    );
    assert_eq!(reply(&out).0, "wlan0", "{out}");
}

#[test]
fn a_strict_app_cannot_escape_its_pvds() {
    skip_unless_root!();
    let lab = lab();
    let strict = lab.create_cgroup("strict").unwrap();
    let toml = config(&lab, &[("strict", &["wwan0"], "strict = true")]);
    let daemon = Daemon::start(&lab, &toml).unwrap();
    for family in [Family::V4, Family::V6] {
        for proto in Proto::ALL {
            let out = choose(
                &lab,
                &daemon,
                &strict,
                proto,
                internet(family),
                Some("wlan0"),
            );
            assert_eq!(out["choose_error"], EPERM, "{proto} {family:?}: {out}");
            assert_eq!(out["after"], "wwan0", "{out}");
            assert_eq!(reply(&out).0, "wwan0", "{proto} {family:?}: {out}");
        }
    }
    let out = choose(
        &lab,
        &daemon,
        &strict,
        Proto::Tcp,
        INTERNET_V4.into(),
        Some("wwan0"),
    );
    assert_eq!(out.get("choose_error"), None, "its own PvD: {out}");
    assert_eq!(reply(&out).0, "wwan0");
    let maps = daemon.maps_json().unwrap();
    assert!(
        mif_tests::e2e::counter_total(&maps, "denied") >= 6,
        "the refusals are counted: {maps}"
    );
}

#[test]
fn a_chosen_socket_keeps_its_pvd_in_a_child_process() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let daemon = Daemon::start(
        &lab,
        &config(&lab, &[("app", &["wlan0"], "allow = [\"wwan0\"]")]),
    )
    .unwrap();
    let (to, port) = (INTERNET_V4.to_string(), port());
    let args = ["handoff", "--to", &to, "--port", &port, "--pvd", "wwan0"];
    let out = client(&lab, &daemon, Some(&app), &args).unwrap();
    assert_eq!(out["pvd"], "wwan0", "the child reads the choice: {out}");
    assert_eq!(
        reply(&out),
        ("wwan0".into(), lab.network(1).host_v4.into()),
        "{out}"
    );
}

#[test]
fn a_process_chooses_the_pvd_of_all_its_future_sockets() {
    skip_unless_root!();
    let lab = lab();
    let loose = lab.create_cgroup("loose").unwrap();
    let strict = lab.create_cgroup("strict").unwrap();
    let toml = config(
        &lab,
        &[
            ("loose", &["wlan0"], "allow = [\"wwan0\"]"),
            ("strict", &["wwan0"], "strict = true"),
        ],
    );
    let daemon = Daemon::start(&lab, &toml).unwrap();
    let (to, port) = (INTERNET_V4.to_string(), port());
    let process = |cgroup: &Path, pvd: &str| {
        let args = ["process", "--pvd", pvd, "--to", &to, "--port", &port];
        client(&lab, &daemon, Some(cgroup), &args).unwrap()
    };

    let out = process(&loose, "wwan0");
    assert_eq!(out.get("process_error"), None, "{out}");
    assert_eq!(out["pvd"], "wwan0", "{out}");
    assert_eq!(
        reply(&out),
        ("wwan0".into(), lab.network(1).host_v4.into()),
        "{out}"
    );
    assert!(
        out["cgroup"]
            .as_str()
            .unwrap()
            .ends_with("/loose/mif-pvd-wwan0"),
        "{out}"
    );

    // Not allowed: refused, the process stays where it was, no cgroup made.
    let out = process(&strict, "wlan0");
    assert_eq!(out["process_error"], EPERM, "{out}");
    assert_eq!(reply(&out).0, "wwan0", "{out}");
    assert!(
        out["cgroup"].as_str().unwrap().ends_with("/strict"),
        "{out}"
    );
    assert!(!strict.join("mif-pvd-wlan0").exists());

    // The first caller has exited: the next request removes its cgroup
    // and policy.
    let out = process(&strict, "wwan0");
    assert_eq!(reply(&out).0, "wwan0", "{out}");
    assert!(
        !loose.join("mif-pvd-wwan0").exists(),
        "the empty cgroup was removed"
    );
    let policies = daemon.mif(&["policy", "list", "--json"]).unwrap();
    let policies = String::from_utf8_lossy(&policies.stdout);
    assert!(!policies.contains("loose/mif-pvd-wwan0"), "{policies}");
    assert!(policies.contains("strict/mif-pvd-wwan0"), "{policies}");
}

#[test]
fn a_process_choice_follows_its_policy_when_the_admin_tightens_it() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let loose = config(&lab, &[("app", &["wlan0"], "allow = [\"wwan0\"]")]);
    let daemon = Daemon::start(&lab, &loose).unwrap();
    let (to, port) = (INTERNET_V4.to_string(), port());
    let args = [
        "process", "--hold", "--pvd", "wwan0", "--to", &to, "--port", &port,
    ];
    let held = spawn_client(&lab, &daemon, Some(&app), &args).unwrap();
    let mut stdin = held.take_stdin().expect("the client's stdin");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        held.take_stdout().expect("the client's stdout"),
    ));
    let line = lines.next().expect("a first line").unwrap();
    let before: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(reply(&before).0, "wwan0", "{before}");

    // The admin takes wwan0 out of the policy's allow list and reloads.
    std::fs::write(&daemon.config, config(&lab, &[("app", &["wlan0"], "")])).unwrap();
    let reload = daemon.mif(&["reload"]).unwrap();
    let why = String::from_utf8_lossy(&reload.stderr);
    assert!(reload.status.success(), "{why}");
    std::io::Write::write_all(&mut stdin, b"go\n").unwrap();
    let line = lines.next().expect("a second line").unwrap();
    let after: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(after["pvd"], "wlan0", "the derived policy went: {after}");
    assert_eq!(reply(&after).0, "wlan0", "{after}");
    let policies = daemon.mif(&["policy", "list", "--json"]).unwrap();
    let policies = String::from_utf8_lossy(&policies.stdout);
    assert!(!policies.contains("mif-pvd-wwan0"), "{policies}");
}

#[test]
fn a_c_program_uses_the_api_through_libmif_and_pkg_config() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let daemon = Daemon::start(
        &lab,
        &config(&lab, &[("app", &["wlan0"], "allow = [\"wwan0\"]")]),
    )
    .unwrap();
    let list = run_c_example(&lab, &daemon, Some(&app), &["list"]).unwrap();
    let wwan = lab.network(1);
    assert!(list.contains("wwan0 interface=wwan0"), "{list}");
    assert!(
        list.contains(&wwan.host_v4.to_string()),
        "its address: {list}"
    );
    assert!(
        list.contains(&wwan.gateway_v4.to_string()),
        "its resolver: {list}"
    );

    let (to, port) = (INTERNET_V4.to_string(), port());
    let chosen =
        run_c_example(&lab, &daemon, Some(&app), &["choose", "wwan0", &to, &port]).unwrap();
    assert_eq!(
        chosen.trim(),
        format!("pvd=wwan0 reply=wwan0 {}", wwan.host_v4)
    );
    let refused = run_c_example(&lab, &daemon, Some(&app), &["choose", "nope0", &to, &port]);
    let refused = refused.unwrap_err().to_string();
    assert!(
        refused.contains("no PvD is named \"nope0\" (errno 2)"),
        "{refused}"
    );
    let raced = run_c_example(&lab, &daemon, Some(&app), &["connect", &to, &port]).unwrap();
    let expected = format!("won=wlan0 address={INTERNET_V4} attempts=1\npvd=wlan0 reply=wlan0 ");
    assert!(raced.starts_with(&expected), "{raced}");
}

#[test]
fn names_resolve_through_the_chosen_pvds_resolvers() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    lab.create_cgroup("other").unwrap();
    let _dns: Vec<_> = (0..2)
        .map(|i| lab.start_resolver(i, &[]).unwrap())
        .collect();
    let daemon = Daemon::start(&lab, &config(&lab, &[("other", &["wlan0"], "")])).unwrap();
    for i in 0..2 {
        let pvd = &lab.network(i).name;
        let out = client(
            &lab,
            &daemon,
            Some(&app),
            &["resolve", "--pvd", pvd, "--host", DNS_NAME],
        )
        .unwrap();
        let text = out["addresses"].to_string();
        assert!(Resolver::Network(i).answered(&text), "{pvd}: {out}");
        assert!(!Resolver::Network(1 - i).answered(&text), "{pvd}: {out}");
    }
}

#[test]
fn mif_connect_wins_over_the_next_pvd_when_the_first_is_black_holed() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let _dns: Vec<_> = (0..2)
        .map(|i| lab.start_resolver(i, &[]).unwrap())
        .collect();
    let toml = config(&lab, &[("app", &["wwan0", "wlan0"], "")]);
    let daemon = Daemon::start(&lab, &toml).unwrap();
    let port = port();
    let connect = |host: &str| {
        let args = ["connect", "--host", host, "--port", &port, "--delay", "250"];
        client(&lab, &daemon, Some(&app), &args).unwrap()
    };

    // Healthy: the policy's first PvD wins, at the first attempt.
    let healthy = connect(CONNECTIVITY_NAME);
    assert_eq!(healthy["pvd"], "wwan0", "{healthy}");
    assert_eq!(healthy["attempts"], 1, "{healthy}");
    assert_eq!(reply(&healthy).0, "wwan0", "{healthy}");

    // wwan0's upstream silently drops everything: a plain connect (the
    // policy gives wwan0) hangs until it gives up ...
    lab.cut_upstream(1).unwrap();
    let plain = lab.client(Some(&app), Proto::Tcp, INTERNET_V4.into(), None);
    assert!(plain.is_err(), "a plain connect got through: {plain:?}");
    // ... while mif_connect starts wlan0's attempt 250 ms later and wins.
    for host in [CONNECTIVITY_NAME.to_owned(), INTERNET_V4.to_string()] {
        let raced = connect(&host);
        assert_eq!(raced["pvd"], "wlan0", "{host}: {raced}");
        assert_eq!(reply(&raced).0, "wlan0", "{host}: {raced}");
        assert_eq!(raced["socket_pvd"], "wlan0", "{raced}");
        let ms = raced["connected_ms"].as_f64().unwrap();
        // Waiting is waiting: the race sleeps in poll(2), it does not spin.
        let cpu = raced["cpu_ms"].as_f64().unwrap();
        assert!(
            cpu < 100.0,
            "{host}: {cpu:.0} ms of CPU in {ms:.0} ms: {raced}"
        );
        // The attempt delay plus one round trip, with room for a loaded
        // machine (the lab's round trip is well under a millisecond).
        assert!(
            (250.0..250.0 + 250.0).contains(&ms),
            "{host}: connected after {ms:.0} ms: {raced}"
        );
        eprintln!("{host}: black-holed first PvD, connected over wlan0 in {ms:.1} ms");
    }

    // `mif connect`, the same for scripts: the peer's line on stdout, the
    // winner on stderr.
    let mif = mif_tests::mif::mif_path().unwrap();
    let pin_dir = daemon.instance.pin_dir.display().to_string();
    let args = ["connect", "--pin-dir", &pin_dir, CONNECTIVITY_NAME, &port];
    let cmd = lab
        .command_in_as(Some(&app), UNPRIVILEGED, &mif, args)
        .unwrap();
    let out = lab.output(cmd, std::time::Duration::from_secs(20)).unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "mif connect: {stderr}");
    assert!(stdout.starts_with("wlan0 "), "{stdout}");
    assert!(stderr.contains("over wlan0 (2 attempts)"), "{stderr}");
}
