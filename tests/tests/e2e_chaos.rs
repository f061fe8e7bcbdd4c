//! End-to-end chaos: the real daemon in the lab while the host misbehaves.
//! A netlink storm of thousands of address and route changes, cgroups
//! deleted under policies that name them, and more cgroups with a policy
//! than the kernel's policy map holds. Afterwards the daemon is alive,
//! steering is right, nothing leaked, and what could not be done was said.
//!
//! (SIGKILL under load and interfaces re-created with a new index are in
//! e2e_live.rs.)
use std::{
    path::Path,
    process::Output,
    sync::RwLock,
    time::{Duration, Instant},
};

use mif_tests::e2e::{two_networks as lab, wait_until_leaves_by};
use mif_tests::{
    lab::{Family, Lab},
    mif::{mif_path, Daemon},
    skip_unless_root,
};

/// Entries the kernel's policy map holds (its max_entries).
const POLICY_CAPACITY: usize = mif_common::MAX_POLICIES as usize;

/// The map-capacity test makes 131,000 cgroups, and cgroupfs serialises
/// mkdir with everything else that touches cgroups (attaching programs,
/// querying them): it runs alone, the others share.
static HEAVY: RwLock<()> = RwLock::new(());

fn policy(cgroup: &str, prefer: &[&str]) -> String {
    let prefer: Vec<String> = prefer.iter().map(|p| format!("{p:?}")).collect();
    format!(
        "[[policy]]\ncgroup = {cgroup:?}\nprefer = [{}]\n",
        prefer.join(", ")
    )
}

/// Polls `check` every 100 ms until it holds or `within` passes.
fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "mif failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `mif ARGS --pin-dir <the daemon's>` with a generous timeout: with
/// 131,072 policies, reading them all back takes seconds in a debug build.
fn mif(lab: &Lab, daemon: &Daemon, args: &[&str]) -> Output {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend([
        "--pin-dir".into(),
        daemon.instance.pin_dir.display().to_string(),
    ]);
    let cmd = lab.command_in(None, mif_path().unwrap(), &all).unwrap();
    lab.output(cmd, Duration::from_secs(120)).unwrap()
}

fn json(lab: &Lab, daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&ok(&mif(lab, daemon, &all))).unwrap()
}

/// The policy-list entry of `cgroup`.
fn listed(lab: &Lab, daemon: &Daemon, cgroup: &str) -> Option<serde_json::Value> {
    json(lab, daemon, &["policy", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["cgroup"] == cgroup)
        .cloned()
}

/// What mif installed in the host namespace (rules and its routes), the
/// number of map entries, and the daemon's open file descriptors.
fn snapshot(lab: &Lab, daemon: &Daemon) -> (String, String, usize, usize) {
    let rules = lab.ip_host(&["rule"]).unwrap() + &lab.ip_host(&["-6", "rule"]).unwrap();
    let routes = lab
        .ip_host(&["route", "show", "table", "all", "proto", "241"])
        .unwrap()
        + &lab
            .ip_host(&["-6", "route", "show", "table", "all", "proto", "241"])
            .unwrap();
    let maps = json(lab, daemon, &["maps"]);
    (
        rules,
        routes,
        maps["pvds"].as_array().unwrap().len(),
        maps["policies"].as_array().unwrap().len(),
    )
}

#[test]
fn a_storm_of_address_and_route_changes_leaves_steering_right_and_nothing_leaked() {
    skip_unless_root!();
    let _shared = HEAVY.read().unwrap_or_else(|e| e.into_inner());
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let mut daemon = Daemon::start(
        &lab,
        &policy(&format!("{}/app", lab.cgroup_rel()), &["wwan0", "wlan0"]),
    )
    .unwrap();
    let wwan = lab.network(1);
    for family in [Family::V4, Family::V6] {
        wait_until_leaves_by(&lab, &app, family, wwan, Duration::from_secs(5));
    }
    let before = snapshot(&lab, &daemon);
    let fds_before = daemon.open_fds().unwrap();

    // 6,000 changes in one burst on the uplink the policy prefers: extra
    // addresses of its own subnets (v4 /32, v6 /128 without DAD) come and
    // go, routes to a documentation prefix through its gateway come and
    // go. Nothing is sent to any of them.
    const ROUNDS: usize = 1000;
    let mut batch = String::new();
    for i in 0..ROUNDS {
        let (a, b) = (10 + i % 200, i % 250);
        batch += &format!(
            "address add 198.18.1.{a}/32 dev wwan0\n\
             address add 2001:db8:1::1:{i:x}/128 dev wwan0 nodad\n\
             route add 198.51.100.{b}/32 via 198.18.1.1 dev wwan0\n\
             route del 198.51.100.{b}/32 via 198.18.1.1 dev wwan0\n\
             address del 2001:db8:1::1:{i:x}/128 dev wwan0\n\
             address del 198.18.1.{a}/32 dev wwan0\n"
        );
    }
    let file = std::env::temp_dir().join(format!("mif-storm-{}", lab.host_ns_name()));
    std::fs::write(&file, batch).unwrap();
    let started = Instant::now();
    let storm = lab.ip_host(&["-batch", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    storm.unwrap();
    eprintln!("{} changes in {:?}", ROUNDS * 6, started.elapsed());

    // Alive, answering, and steering by the right network and source.
    ok(&mif(&lab, &daemon, &["status"]));
    for family in [Family::V4, Family::V6] {
        wait_until_leaves_by(&lab, &app, family, wwan, Duration::from_secs(10));
    }
    // Nothing left over: the `from <address>` rules of the extra addresses
    // are gone again, no stray route, no stray map entry, no fd.
    let mut after = snapshot(&lab, &daemon);
    let deadline = Instant::now() + Duration::from_secs(10);
    while after != before {
        assert!(
            Instant::now() < deadline,
            "not the state before the storm:\nbefore: {before:#?}\nafter: {after:#?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
        after = snapshot(&lab, &daemon);
    }
    let fds_after = daemon.open_fds().unwrap();
    assert!(
        fds_after <= fds_before + 2,
        "fds grew from {fds_before} to {fds_after}"
    );
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn policies_of_deleted_cgroups_wait_pending_and_apply_when_the_cgroup_returns() {
    skip_unless_root!();
    let _shared = HEAVY.read().unwrap_or_else(|e| e.into_inner());
    let lab = lab();
    let from_file = lab.create_cgroup("file").unwrap();
    let from_cli = lab.create_cgroup("cli").unwrap();
    let (file_rel, cli_rel) = (
        format!("{}/file", lab.cgroup_rel()),
        format!("{}/cli", lab.cgroup_rel()),
    );
    let daemon = Daemon::start(&lab, &policy(&file_rel, &["wwan0"])).unwrap();
    ok(&mif(
        &lab,
        &daemon,
        &["policy", "set", &cli_rel, "--prefer", "wwan0"],
    ));
    let wwan = lab.network(1);
    for cgroup in [&from_file, &from_cli] {
        wait_until_leaves_by(&lab, cgroup, Family::V4, wwan, Duration::from_secs(5));
    }

    // Both cgroups vanish (their processes have exited).
    for cgroup in [&from_file, &from_cli] {
        std::fs::remove_dir(cgroup).unwrap();
    }
    eventually(Duration::from_secs(5), "both policies pending", || {
        [&file_rel, &cli_rel]
            .iter()
            .all(|cg| listed(&lab, &daemon, cg).is_some_and(|p| p["state"] == "pending"))
    });
    let status = json(&lab, &daemon, &["status"]);
    assert_eq!(status["daemon"]["policies_pending"], 2, "{status:#}");
    // The map holds no entry for a cgroup that is gone.
    eventually(Duration::from_secs(5), "no policy entries left", || {
        json(&lab, &daemon, &["maps"])["policies"]
            .as_array()
            .unwrap()
            .is_empty()
    });

    // They come back (a service restarted): a new cgroup id each, and the
    // policies apply again without any other event.
    for rel in ["file", "cli"] {
        lab.create_cgroup(rel).unwrap();
    }
    for cgroup in [&from_file, &from_cli] {
        wait_until_leaves_by(&lab, cgroup, Family::V4, wwan, Duration::from_secs(5));
    }
    for cg in [&file_rel, &cli_rel] {
        assert_eq!(listed(&lab, &daemon, cg).unwrap()["state"], "active");
    }
    ok(&mif(&lab, &daemon, &["status"]));
}

/// Creates `n` sibling cgroups `c0..` under `parent`.
fn make_cgroups(parent: &Path, n: usize) {
    let started = Instant::now();
    for i in 0..n {
        std::fs::create_dir(parent.join(format!("c{i}"))).unwrap();
    }
    eprintln!("{n} cgroups created in {:?}", started.elapsed());
}

// Ignored by default: about 3 minutes alone on 2 cores (131,074 cgroups made
// in 12 s, the daemon ready in 14 s, then every reconcile pass re-resolves
// them all, so the debug daemon answers the control socket in tens of
// seconds), and far longer on a busy machine. Run it with `-- --ignored`.
#[test]
#[ignore = "131,074 cgroups: about 3 minutes alone; run with --ignored"]
fn more_policies_than_the_map_holds_are_reported_and_a_cli_set_beyond_it_is_refused() {
    skip_unless_root!();
    let _alone = HEAVY.write().unwrap_or_else(|e| e.into_inner());
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let many = lab.create_cgroup("many").unwrap();
    let extra = lab.create_cgroup("extra").unwrap();
    // The literal policy, then a pattern matching 3 cgroups too many.
    let over = 3;
    make_cgroups(&many, POLICY_CAPACITY - 1 + over);
    let rel = lab.cgroup_rel();
    let config =
        policy(&format!("{rel}/app"), &["wwan0"]) + &policy(&format!("{rel}/many/*"), &["wwan0"]);
    let started = Instant::now();
    let mut daemon = Daemon::start_within(&lab, &config, &[], Duration::from_secs(180)).unwrap();
    eprintln!("ready in {:?}", started.elapsed());

    // Clear, visible, counted: a log line naming the map and its limit,
    // the count in `mif status` and the state in `mif policy list`.
    let log = daemon.log();
    assert!(
        log.contains("MIF_POLICIES holds at most 131072") && log.contains("dropped: 3"),
        "{log}"
    );
    let status = json(&lab, &daemon, &["status"]);
    assert_eq!(
        status["daemon"]["policies_over_capacity"], over,
        "{status:#}"
    );
    assert!(
        status["problems"].to_string().contains("policy map"),
        "{status:#}"
    );
    let pattern = listed(&lab, &daemon, &format!("{rel}/many/*")).unwrap();
    assert!(
        pattern["state"]
            .as_str()
            .unwrap()
            .contains("3 not enforced: policy map full"),
        "{pattern:#}"
    );
    // The literal policy came first and is enforced.
    wait_until_leaves_by(
        &lab,
        &app,
        Family::V4,
        lab.network(1),
        Duration::from_secs(5),
    );

    // A CLI policy that needs one more entry: refused, nothing changed.
    let extra_rel = format!("{rel}/extra");
    let out = mif(
        &lab,
        &daemon,
        &["policy", "set", &extra_rel, "--prefer", "wwan0"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted beyond capacity");
    assert!(
        err.contains("MIF_POLICIES") && err.contains("131072") && err.contains("nothing changed"),
        "{err}"
    );
    assert!(listed(&lab, &daemon, &extra_rel).is_none());
    assert_eq!(lab.sockmark(Some(&extra), Family::V4).unwrap().mark, 0);

    // Room again once cgroups go: the count returns to 0 and the CLI
    // policy is accepted.
    let started = Instant::now();
    for i in 0..10 {
        std::fs::remove_dir(many.join(format!("c{i}"))).unwrap();
    }
    eventually(Duration::from_secs(40), "every policy fits again", || {
        json(&lab, &daemon, &["status"])["daemon"]["policies_over_capacity"] == 0
    });
    eprintln!("noticed the room in {:?}", started.elapsed());
    ok(&mif(
        &lab,
        &daemon,
        &["policy", "set", &extra_rel, "--prefer", "wwan0"],
    ));
    wait_until_leaves_by(
        &lab,
        &extra,
        Family::V4,
        lab.network(1),
        Duration::from_secs(5),
    );
    daemon.stop().unwrap();
}

/// Out of file descriptors (EMFILE), the control socket cannot accept: the
/// daemon must neither spin a core meanwhile (it used to: the accept loop
/// gave up, and the main loop then polled a closed channel forever) nor lose
/// the socket, and a client waiting meanwhile is served once descriptors
/// are back.
#[test]
fn the_control_socket_survives_running_out_of_descriptors() {
    skip_unless_root!();
    let lab = mif_tests::e2e::two_networks();
    let (_app, config) = mif_tests::e2e::app_with_policy(&lab, &["wwan0"], "");
    let mut daemon = Daemon::start(&lab, &config).unwrap();
    let pid = daemon.pid().unwrap().to_string();
    // Only the soft limit moves: raising a hard limit again would need
    // CAP_SYS_RESOURCE, which a container may not have.
    let soft = |n: &str| {
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={n}:")])
            .status()
            .expect("running prlimit");
        assert!(status.success(), "prlimit --nofile={n}:");
    };
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .expect("Max open files in /proc/PID/limits")
        .to_string();
    // Below what it holds: the descriptors it has stay open, and no new
    // one can be had (counting what it holds raced with the daemon's own
    // short-lived descriptors, which left a slot free now and then).
    soft("3");
    let mif = mif_tests::mif::mif_path().unwrap();
    let pin_dir = daemon.instance.pin_dir.display().to_string();
    let mut cmd = lab
        .command_in(None, &mif, ["status", "--pin-dir", &pin_dir])
        .unwrap();
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let waiting = cmd.spawn().expect("starting mif status");
    // While its connection waits in the backlog: how busy is the daemon?
    let before = daemon.cpu_ticks().unwrap();
    let window = Duration::from_secs(1);
    std::thread::sleep(window);
    let busy = daemon.cpu_ticks().unwrap() - before;
    soft(&hard);
    let out = waiting.wait_with_output().unwrap();
    assert!(
        busy < 30,
        "the daemon used {busy} ticks of CPU in {window:?} while out of descriptors"
    );
    assert!(
        out.status.success(),
        "mif status after descriptors came back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = daemon.log();
    let warnings = log.matches("control socket: Too many open files").count();
    assert_eq!(warnings, 1, "one warning for the whole run:\n{log}");
    assert!(log.contains("control socket: working again"), "{log}");
}

/// Sockets the kernel counted as steered, over every policy and PvD.
fn steered_total(lab: &Lab, daemon: &Daemon) -> u64 {
    json(lab, daemon, &["maps"])["counters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["steered"].as_u64().unwrap())
        .sum()
}

/// The policy map is sized at load for the policies found (twice as many,
/// at least 16,384): a daemon that adopts a smaller map than it needs
/// replaces it (and the counter map) by a larger one, keeping the counts,
/// and steers as before.
#[test]
fn a_restart_with_more_policies_than_the_adopted_map_holds_grows_it_and_keeps_the_counters() {
    skip_unless_root!();
    let _shared = HEAVY.read().unwrap_or_else(|e| e.into_inner());
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let many = lab.create_cgroup("many").unwrap();
    let rel = lab.cgroup_rel();
    let small = policy(&format!("{rel}/app"), &["wwan0"]);
    let first = Daemon::start_with(&lab, &small, &["--keep-steering"]).unwrap();
    let status = json(&lab, &first, &["status"]);
    assert_eq!(status["daemon"]["policy_capacity"], 16_384, "{status:#}");
    wait_until_leaves_by(
        &lab,
        &app,
        Family::V4,
        lab.network(1),
        Duration::from_secs(5),
    );
    let counted = steered_total(&lab, &first);
    assert!(counted > 0);
    first.stop().unwrap();

    // 8,200 more cgroups with a policy: 8,201 × 2 needs a map of 32,768.
    make_cgroups(&many, 8_200);
    let big = small + &policy(&format!("{rel}/many/*"), &["wwan0"]);
    let mut second = Daemon::start_within(&lab, &big, &[], Duration::from_secs(120)).unwrap();
    let log = second.log();
    assert!(log.contains("replaced by one of 32768 entries"), "{log}");
    let status = json(&lab, &second, &["status"]);
    assert_eq!(status["daemon"]["policy_capacity"], 32_768, "{status:#}");
    assert_eq!(status["daemon"]["policies"], 8_201, "{status:#}");
    assert_eq!(status["daemon"]["policies_over_capacity"], 0, "{status:#}");
    assert!(
        steered_total(&lab, &second) >= counted,
        "the counters were not carried over"
    );
    wait_until_leaves_by(
        &lab,
        &app,
        Family::V4,
        lab.network(1),
        Duration::from_secs(5),
    );
    // Every hook once, but for those no policy needs (on demand: none of
    // these policies asks for DNS or is strict), which wait unattached.
    let status = json(&lab, &second, &["status"]);
    let waiting = status["hooks_waiting"].as_array().unwrap();
    assert_eq!(
        waiting.len(),
        mif_common::names::ON_DEMAND_HOOKS.len(),
        "{status:#}"
    );
    for (program, n) in status["attached"].as_object().unwrap() {
        let expected = if waiting.iter().any(|w| w == program) {
            0
        } else {
            1
        };
        assert_eq!(n, expected, "{program}: {status:#}");
    }
    assert_eq!(status["steering"], true, "{status:#}");
    second.stop().unwrap();
}
