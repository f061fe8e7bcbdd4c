//! End-to-end: bad configuration is refused with a message naming file,
//! line, field and value, and leaves nothing attached, pinned or routed;
//! a good one shows up in `mif maps --json` and is removed on stop.
use std::time::Duration;

use mif_tests::{
    lab::{Family, Lab},
    mif::{run_mif, write_config, Daemon, Instance},
    skip_unless_root,
};

/// What mif could have left in the host namespace: any rule, and any route
/// of mif's protocol (241) in any table. Other routes are left out: the
/// kernel adds IPv6 link-local ones on its own schedule.
fn routing_state(lab: &Lab) -> (String, String) {
    let rules =
        lab.ip_host(&["rule", "show"]).unwrap() + &lab.ip_host(&["-6", "rule", "show"]).unwrap();
    let routes = lab
        .ip_host(&["route", "show", "table", "all", "proto", "241"])
        .unwrap()
        + &lab
            .ip_host(&["-6", "route", "show", "table", "all", "proto", "241"])
            .unwrap();
    (rules, routes)
}

#[test]
fn bad_configuration_is_refused_clearly_and_changes_nothing() {
    skip_unless_root!();
    let lab = Lab::new(&["wlan0", "wwan0"]).unwrap();
    let app = lab.create_cgroup("app").unwrap();
    let rel = lab.cgroup_rel();
    let instance = Instance::for_lab(&lab);
    let before = routing_state(&lab);

    let cases: Vec<(String, Vec<String>, &str)> = vec![
        ("[[policy]]\ncgroup = \"/x\"\nprefer = [\"wlan0\"\n".into(), vec![], ":3: unclosed array"),
        (
            format!("[[policy]]\ncgroup = \"{rel}/app\"\nprefer = [\"wlan0\", \"wwan9\"]\n"),
            vec![],
            ":1: policy.prefer = \"wwan9\": unknown PvD",
        ),
        (
            format!("[[policy]]\ncgroup = \"{rel}/nope\"\nprefer = [\"wlan0\"]\n"),
            vec![],
            ":1: policy.cgroup = ",
        ),
        (
            format!("\n[[policy]]\ncgroup = \"{rel}/app\"\nprefer = [\"wlan0\"]\n[[policy]]\ncgroup = \"{rel}/app\"\nprefer = [\"wwan0\"]\n"),
            vec![],
            ":6: policy.cgroup = ",
        ),
        (
            "[[pvd]]\nname = \"cell\"\ninterface = \"wwan0\"\nmark = 0x10\n".into(),
            vec![],
            ":1: pvd.mark = 0x10: outside the mark mask",
        ),
        (
            // A cgroup outside the subtree mif attaches to.
            "[[policy]]\ncgroup = \"/\"\nprefer = [\"wlan0\"]\n".into(),
            vec![],
            "outside the cgroup mif attaches to",
        ),
        (String::new(), vec!["--mark-mask".into(), "0x5".into()], "mark mask 0x5"),
    ];
    for (toml, extra, expected) in cases {
        let path = write_config(&lab, &toml).unwrap();
        let mut args = vec![
            "daemon".to_string(),
            "--config".into(),
            path.display().to_string(),
        ];
        args.extend(instance.args());
        args.push("--no-policies-dir".into());
        args.extend(extra);
        let out = run_mif(&lab, &args).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{toml}");
        assert!(
            stderr.contains(expected),
            "for\n{toml}\nexpected {expected:?} in: {stderr}"
        );
        if expected.starts_with(':') {
            assert!(
                stderr.contains(&path.display().to_string()),
                "no file name in: {stderr}"
            );
        }
        assert!(!instance.pin_dir.exists(), "pins left behind for\n{toml}");
        assert_eq!(routing_state(&lab), before, "routing changed for\n{toml}");
        assert_eq!(
            lab.sockmark(Some(&app), Family::V4).unwrap().mark,
            0,
            "a program stayed attached"
        );
    }
}

#[test]
fn maps_shows_the_policy_and_stop_removes_everything() {
    skip_unless_root!();
    let lab = Lab::new(&["wlan0", "wwan0"]).unwrap();
    lab.create_cgroup("apps/browser").unwrap();
    let before = routing_state(&lab);
    let cgroup = format!("{}/apps/browser", lab.cgroup_rel());
    let config = format!(
        "[[policy]]\ncgroup = {cgroup:?}\nprefer = [\"wwan0\", \"wlan0\"]\nstrict = true\n"
    );
    let daemon = Daemon::start(&lab, &config).unwrap();

    let maps = daemon.maps_json().unwrap();
    let policies = maps["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "{maps:#}");
    assert_eq!(policies[0]["cgroup"], cgroup.as_str());
    assert_eq!(policies[0]["prefer"], serde_json::json!(["wwan0", "wlan0"]));
    assert_eq!(policies[0]["strict"], true);
    let wwan = maps["pvds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "wwan0")
        .unwrap()
        .clone();
    assert_eq!(wwan["addr4"], lab.network(1).host_v4.to_string());
    assert_eq!(wwan["available_v6"], true);

    // The human view names the same things.
    let table = daemon.mif(&["maps"]).unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains(&cgroup) && text.contains("wwan0,wlan0"),
        "{text}"
    );

    // While running, mif's rules are in place...
    let (rules, routes) = routing_state(&lab);
    assert!(rules.contains("fwmark"), "{rules}");
    assert!(routes.contains("unreachable default"), "{routes}");
    let pin_dir = daemon.instance.pin_dir.clone();
    daemon.stop().unwrap();
    // ...and after a clean stop nothing of it is left.
    assert_eq!(routing_state(&lab), before);
    assert!(!pin_dir.exists());
    let out = run_mif(&lab, &["maps", "--pin-dir", &pin_dir.display().to_string()]).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no mif maps are pinned"));
}

/// A start says what it steers and nothing alarming: no warning (the
/// kernel used to reject the object's BTF at every start, dumping some 60
/// lines and dropping the verifier's line info).
#[test]
fn the_daemon_starts_without_a_warning() {
    skip_unless_root!();
    let lab = mif_tests::e2e::two_networks();
    let (_app, config) = mif_tests::e2e::app_with_policy(&lab, &["wwan0"], "");
    let mut daemon = Daemon::start(&lab, &config).unwrap();
    let log = daemon.log();
    assert!(log.contains("steering 1 policies"), "{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(warnings.is_empty(), "warnings at start:\n{log}");
}

/// `ip netns exec` remounts /sys, which hides cgroup2 and bpffs from mif:
/// the error says so and how to run it in a namespace instead.
#[test]
fn under_ip_netns_exec_the_error_says_how_to_enter_a_namespace() {
    skip_unless_root!();
    let lab = Lab::new(&["wlan0"]).unwrap();
    let config = write_config(&lab, "").unwrap();
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", lab.host_ns_name()])
        .arg(mif_tests::mif::mif_path().unwrap())
        .arg("daemon")
        .arg("--config")
        .arg(&config)
        .args(Instance::for_lab(&lab).args());
    let out = lab.output(cmd, Duration::from_secs(10)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("nsenter --net=/run/netns/"), "{stderr}");
}

/// An instance's files under /run/mif (its lock, its control socket) go
/// when it stops, and `mif cleanup` removes what a killed one left.
#[test]
fn stopped_and_cleaned_up_instances_leave_no_runtime_files() {
    skip_unless_root!();
    let lab = Lab::new(&["wlan0"]).unwrap();
    let files = |instance: &Instance| {
        let flat = instance
            .pin_dir
            .display()
            .to_string()
            .trim_matches('/')
            .replace('/', "-");
        ["lock", "sock"].map(|ext| std::path::PathBuf::from(format!("/run/mif/{flat}.{ext}")))
    };
    let daemon = Daemon::start(&lab, "").unwrap();
    let [lock, sock] = files(&daemon.instance);
    assert!(
        lock.exists() && sock.exists(),
        "a running instance has both"
    );
    daemon.stop().unwrap();
    assert!(!lock.exists(), "{} left behind", lock.display());
    assert!(!sock.exists(), "{} left behind", sock.display());

    let daemon = Daemon::start(&lab, "").unwrap();
    let instance = daemon.instance.clone();
    daemon.kill_hard().unwrap();
    let mut args = vec!["cleanup".to_string()];
    args.extend(instance.args());
    let out = run_mif(&lab, &args).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in files(&instance) {
        assert!(
            !file.exists(),
            "{} left behind after cleanup",
            file.display()
        );
    }
}

/// The example config starts on a host that has none of its networks and
/// runs none of its applications: its PvDs are unavailable, its policies
/// (by app and by unit) pending.
#[test]
fn the_example_config_starts_on_any_host() {
    skip_unless_root!();
    let lab = mif_tests::lab::Lab::new(&["eth7"]).unwrap();
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mif.toml"),
    )
    .unwrap();
    let daemon = mif_tests::mif::Daemon::start(&lab, &example).unwrap();
    let out = daemon.mif(&["policy", "list", "--json"]).unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["cgroup"].as_str().unwrap(), p["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("app:org.mozilla.firefox", "pending"),
            ("unit:backup.service", "pending")
        ]
    );
}

/// A policies directory laid out as a Kubernetes ConfigMap volume is:
/// `app.toml -> ..data/app.toml`, `..data -> ..TIMESTAMP/`, replaced by
/// renaming a new `..data` symlink over the old one.
struct ConfigMapDir {
    dir: std::path::PathBuf,
    generation: usize,
}

impl ConfigMapDir {
    fn new(dir: std::path::PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir, generation: 0 }
    }

    /// Publishes `files` (name, content) as kubelet does: a new data
    /// directory, then one atomic swap of `..data`; the files' own symlinks
    /// are made once and point through `..data`.
    fn publish(&mut self, files: &[(&str, &str)]) {
        use std::os::unix::fs::symlink;
        self.generation += 1;
        let data = format!("..2026_12_01_{}", self.generation);
        std::fs::create_dir(self.dir.join(&data)).unwrap();
        for (name, content) in files {
            std::fs::write(self.dir.join(&data).join(name), content).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        symlink(&data, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        for (name, _) in files {
            let link = self.dir.join(name);
            if link.symlink_metadata().is_err() {
                symlink(format!("..data/{name}"), link).unwrap();
            }
        }
        // Links to files the new data no longer has dangle, as kubelet
        // leaves them until it removes them.
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && !files.iter().any(|(f, _)| *f == name) {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
    }
}

/// Policies from a directory: added, changed (by a ConfigMap's symlink
/// swap) and removed while traffic flows, each applied at once; a broken
/// file keeps the running policy and is reported with file, line and
/// field.
#[test]
fn a_policies_directory_is_applied_live_all_or_nothing() {
    skip_unless_root!();
    let lab = Lab::new(&["wlan0", "wwan0"]).unwrap();
    let app = lab.create_cgroup("app").unwrap();
    let cgroup = format!("{}/app", lab.cgroup_rel());
    let config = write_config(&lab, "").unwrap();
    let mut dir = ConfigMapDir::new(mif_tests::mif::policies_dir(&config));
    let daemon = Daemon::start(&lab, "").unwrap();
    let network = || {
        lab.client(
            Some(&app),
            mif_tests::lab::Proto::Tcp,
            mif_tests::lab::INTERNET_V4.into(),
            None,
        )
        .map(|r| r.network)
        .unwrap_or_default()
    };
    let wait_network = |want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while network() != want {
            assert!(std::time::Instant::now() < deadline, "never left by {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let policies = || -> serde_json::Value {
        let out = daemon.mif(&["policy", "list", "--json"]).unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(network(), "wlan0", "unsteered: the main table's default");

    let policy = |prefer: &str| {
        format!("[[policy]]\ncgroup = {cgroup:?}\nprefer = [{prefer:?}]\nstrict = true\n")
    };
    dir.publish(&[("app.toml", &policy("wwan0"))]);
    wait_network("wwan0");
    let listed = policies();
    assert_eq!(listed[0]["origin"]["kind"], "config", "{listed:#}");
    assert!(
        listed[0]["origin"]["file"]
            .as_str()
            .unwrap()
            .ends_with("policies.d/app.toml"),
        "{listed:#}"
    );

    // Changed by a swap of ..data: wlan0, strict (so its mark is set).
    dir.publish(&[("app.toml", &policy("wlan0"))]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while policies()[0]["prefer"][0] != "wlan0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the change was not applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_network("wlan0");

    // A broken file next to it: refused whole, the running policy stays.
    let broken = dir.dir.join("zz-broken.toml");
    std::fs::write(
        &broken,
        "[[policy]]\ncgroup = \"/nope\"\nprefer = [\"wwan0\"]\nstrikt = true\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let error = loop {
        let out = daemon.mif(&["status", "--json"]).unwrap();
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(e) = status["daemon"]["last_reload_error"].as_str() {
            break e.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reload error: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        error.contains("zz-broken.toml:4:") && error.contains("strikt"),
        "{error}"
    );
    assert_eq!(policies()[0]["prefer"][0], "wlan0");
    assert_eq!(network(), "wlan0");

    // Removed: the broken file, then the policy's (kubelet drops its link).
    std::fs::remove_file(&broken).unwrap();
    dir.publish(&[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while policies().as_array().is_some_and(|a| !a.is_empty()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the policy was not removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        lab.sockmark(Some(&app), Family::V4).unwrap().mark,
        0,
        "still steered after its file went"
    );
}
