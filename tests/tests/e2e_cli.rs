//! End-to-end: an admin drives `mif` from the command line against a
//! running daemon in the lab — policies set, listed, removed, kept across
//! restarts, refused when they should be; exec, status, reload, monitor.
use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use mif_tests::e2e::two_networks as lab;
use mif_tests::{
    lab::{Family, Lab, Proto, INTERNET_V4},
    mif::{mif_path, Daemon},
    skip_unless_root,
};

/// `mif ARGS --pin-dir <the daemon's>`, in the lab's host namespace.
fn mif(lab: &Lab, daemon: &Daemon, args: &[&str]) -> Output {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend([
        "--pin-dir".into(),
        daemon.instance.pin_dir.display().to_string(),
    ]);
    lab.output_in(None, mif_path().unwrap(), &all).unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "mif failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "mif accepted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn network_of(lab: &Lab, cgroup: &Path) -> String {
    lab.client(Some(cgroup), Proto::Tcp, INTERNET_V4.into(), None)
        .unwrap()
        .network
}

#[test]
fn policies_set_from_the_cli_apply_at_once_and_are_removed_at_once() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let rel = format!("{}/app", lab.cgroup_rel());
    let daemon = Daemon::start(&lab, "").unwrap();
    assert_eq!(lab.sockmark(Some(&app), Family::V4).unwrap().mark, 0);

    ok(&mif(
        &lab,
        &daemon,
        &["policy", "set", &rel, "--prefer", "wwan0,wlan0"],
    ));
    assert_eq!(network_of(&lab, &app), "wwan0");
    let list: serde_json::Value =
        serde_json::from_str(&ok(&mif(&lab, &daemon, &["policy", "list", "--json"]))).unwrap();
    assert_eq!(list[0]["cgroup"], rel.as_str());
    assert_eq!(list[0]["prefer"], serde_json::json!(["wwan0", "wlan0"]));
    assert_eq!(list[0]["origin"]["kind"], "cli");
    assert_eq!(list[0]["state"], "active");
    let table = ok(&mif(&lab, &daemon, &["policy", "list"]));
    assert!(
        table.contains(&rel) && table.contains("wwan0,wlan0"),
        "{table}"
    );

    ok(&mif(&lab, &daemon, &["policy", "del", &rel]));
    assert_eq!(lab.sockmark(Some(&app), Family::V4).unwrap().mark, 0);
}

#[test]
fn cli_policies_survive_a_daemon_restart() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let rel = format!("{}/app", lab.cgroup_rel());
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().to_str().unwrap();
    let first = Daemon::start_with(&lab, "", &["--state-dir", state_arg]).unwrap();
    ok(&mif(
        &lab,
        &first,
        &["policy", "set", &rel, "--prefer", "wwan0", "--strict"],
    ));
    first.stop().unwrap();
    assert_eq!(
        lab.sockmark(Some(&app), Family::V4).unwrap().mark,
        0,
        "a stopped daemon still steers"
    );

    let second = Daemon::start_with(&lab, "", &["--state-dir", state_arg]).unwrap();
    assert_eq!(network_of(&lab, &app), "wwan0");
    let list: serde_json::Value =
        serde_json::from_str(&ok(&mif(&lab, &second, &["policy", "list", "--json"]))).unwrap();
    assert_eq!(list[0]["strict"], true);
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    skip_unless_root!();
    let lab = lab();
    lab.create_cgroup("owned").unwrap();
    let app = lab.create_cgroup("app").unwrap();
    let rel = lab.cgroup_rel();
    let config = format!("[[policy]]\ncgroup = \"{rel}/owned\"\nprefer = [\"wlan0\"]\n");
    let daemon = Daemon::start(&lab, &config).unwrap();
    let before = ok(&mif(&lab, &daemon, &["policy", "list", "--json"]));

    let app_rel = format!("{rel}/app");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "policy".into(),
                "set".into(),
                app_rel.clone(),
                "--prefer".into(),
                "wwan9".into(),
            ],
            "unknown PvD \"wwan9\"",
        ),
        (
            vec![
                "policy".into(),
                "set".into(),
                format!("{rel}/nope"),
                "--prefer".into(),
                "wwan0".into(),
            ],
            "does not exist",
        ),
        (
            vec![
                "policy".into(),
                "set".into(),
                "relative/path".into(),
                "--prefer".into(),
                "wwan0".into(),
            ],
            "must start with '/'",
        ),
        (
            vec![
                "policy".into(),
                "set".into(),
                app_rel.clone(),
                "--prefer".into(),
                "wwan0,wwan0".into(),
            ],
            "listed twice",
        ),
        (
            vec![
                "policy".into(),
                "set".into(),
                format!("{rel}/owned"),
                "--prefer".into(),
                "wwan0".into(),
            ],
            "edit that file",
        ),
        (
            vec!["policy".into(), "del".into(), format!("{rel}/owned")],
            "mif.toml:1",
        ),
        (
            vec!["policy".into(), "del".into(), app_rel.clone()],
            "no policy for cgroup",
        ),
        (
            vec![
                "policy".into(),
                "set".into(),
                "--container".into(),
                "xyz!".into(),
                "--prefer".into(),
                "wwan0".into(),
            ],
            "xyz!",
        ),
        (
            vec![
                "policy".into(),
                "set".into(),
                "--container".into(),
                "0123456789abcdef".into(),
                "--prefer".into(),
                "wwan0".into(),
            ],
            "0123456789abcdef",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = refused(&mif(&lab, &daemon, &args));
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
    }
    assert_eq!(
        ok(&mif(&lab, &daemon, &["policy", "list", "--json"])),
        before
    );
    assert_eq!(lab.sockmark(Some(&app), Family::V4).unwrap().mark, 0);
}

#[test]
fn only_root_may_change_policies_but_anyone_may_read() {
    skip_unless_root!();
    let lab = lab();
    lab.create_cgroup("app").unwrap();
    let rel = format!("{}/app", lab.cgroup_rel());
    let daemon = Daemon::start(&lab, "").unwrap();
    let as_nobody = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend([
            "--pin-dir".into(),
            daemon.instance.pin_dir.display().to_string(),
        ]);
        // setpriv drops to nobody after the lab has entered the namespace.
        let mut argv = vec![
            "--reuid=65534".to_string(),
            "--regid=65534".into(),
            "--clear-groups".into(),
        ];
        argv.push(mif_path().unwrap().display().to_string());
        argv.extend(all);
        lab.output_in(None, "setpriv", &argv).unwrap()
    };
    let stderr = refused(&as_nobody(&["policy", "set", &rel, "--prefer", "wwan0"]));
    assert!(
        stderr.contains("refused: changes need root") && stderr.contains("uid 65534"),
        "{stderr}"
    );
    let pvds = ok(&as_nobody(&["pvd", "list", "--json"]));
    assert!(pvds.contains("\"wwan0\""), "{pvds}");
    assert_eq!(
        ok(&mif(&lab, &daemon, &["policy", "list", "--json"])).trim(),
        "[]"
    );
}

#[test]
fn exec_runs_a_command_under_a_policy_and_cleans_up() {
    skip_unless_root!();
    let lab = lab();
    let daemon = Daemon::start(&lab, "").unwrap();
    let peer = lab.peer_path().display().to_string();
    let pin_dir = daemon.instance.pin_dir.display().to_string();
    let exec = |command: &[&str]| {
        let mut args = vec!["exec", "--pin-dir", &pin_dir, "--prefer", "wwan0", "--"];
        args.extend(command);
        lab.output_in(None, mif_path().unwrap(), &args).unwrap()
    };
    let out = exec(&[
        &peer,
        "client",
        "--proto",
        "tcp",
        "--to",
        "203.0.113.1",
        "--port",
        "7777",
    ]);
    assert!(
        ok(&out).starts_with("wwan0 198.18.1.2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = exec(&["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    // Neither the transient cgroup nor its policy is left.
    let leftovers: Vec<_> = std::fs::read_dir(lab.cgroup_root())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("mif-exec-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        ok(&mif(&lab, &daemon, &["policy", "list", "--json"])).trim(),
        "[]"
    );
}

/// `mif exec --user nobody` (and, through sudo, the invoking user) runs the
/// command as that user, steered from its first instruction: the peer sees
/// wwan0's address, `id` says nobody.
#[test]
fn exec_runs_the_command_as_an_unprivileged_user_over_the_chosen_network() {
    skip_unless_root!();
    let lab = lab();
    let daemon = Daemon::start(&lab, "").unwrap();
    let peer = lab.peer_path().display().to_string();
    let pin_dir = daemon.instance.pin_dir.display().to_string();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let script =
        format!("id -u; id -g; exec {peer} client --proto tcp --to 203.0.113.1 --port 7777");
    let run = |user: Option<&str>, sudo_user: Option<&str>| {
        let mut args = vec!["exec", "--pin-dir", &pin_dir, "--prefer", "wwan0"];
        if let Some(user) = user {
            args.extend(["--user", user]);
        }
        args.extend(["--", "sh", "-c", &script]);
        let mut cmd = lab.command_in(None, mif_path().unwrap(), &args).unwrap();
        if let Some(u) = sudo_user {
            cmd.env("SUDO_USER", u);
        }
        ok(&lab.output(cmd, Duration::from_secs(10)).unwrap())
    };
    let want = format!(
        "{}\n{}\nwwan0 198.18.1.2",
        nobody.uid.as_raw(),
        nobody.gid.as_raw()
    );
    let out = run(Some("nobody"), None);
    assert!(out.starts_with(&want), "{out}");
    let out = run(None, Some("nobody"));
    assert!(out.starts_with(&want), "through sudo: {out}");
    let out = run(Some("root"), Some("nobody"));
    assert!(
        out.starts_with("0\n0\nwwan0 198.18.1.2"),
        "--user root: {out}"
    );
    let mut args = vec!["exec", "--pin-dir", &pin_dir, "--prefer", "wwan0"];
    args.extend(["--user", "no-such-user-here", "--", "true"]);
    let out = lab.output_in(None, mif_path().unwrap(), &args).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such user"));
}

#[test]
fn sighup_reloads_and_an_invalid_reload_keeps_the_running_policy() {
    skip_unless_root!();
    let lab = lab();
    let app = lab.create_cgroup("app").unwrap();
    let rel = format!("{}/app", lab.cgroup_rel());
    let daemon = Daemon::start(&lab, "").unwrap();
    std::fs::write(
        &daemon.config,
        format!("[[policy]]\ncgroup = {rel:?}\nprefer = [\"wwan0\"]\n"),
    )
    .unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while network_of(&lab, &app) != "wwan0" {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }

    std::fs::write(
        &daemon.config,
        "[[policy]]\ncgroup = \"/nope\"\nprefer = [\"wwan0\"]\n",
    )
    .unwrap();
    let stderr = refused(&mif(&lab, &daemon, &["reload"]));
    assert!(
        stderr.contains("reload refused, the running policy stays")
            && stderr.contains("policy.cgroup"),
        "{stderr}"
    );
    assert_eq!(network_of(&lab, &app), "wwan0");
    // The daemon holds the running policies, resolved: none of the refused
    // file's, which a later pass would otherwise install.
    let list: serde_json::Value =
        serde_json::from_str(&ok(&mif(&lab, &daemon, &["policy", "list", "--json"]))).unwrap();
    let listed: Vec<(&str, &str)> = (list.as_array().unwrap().iter())
        .map(|p| (p["cgroup"].as_str().unwrap(), p["state"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [(rel.as_str(), "active")], "{list:#}");
    let status: serde_json::Value =
        serde_json::from_str(&ok(&mif(&lab, &daemon, &["status", "--json"]))).unwrap();
    assert!(
        status["daemon"]["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("/nope"),
        "{status:#}"
    );
}

#[test]
fn status_pvd_list_and_monitor_show_what_is_going_on() {
    skip_unless_root!();
    let lab = lab();
    let daemon = Daemon::start(&lab, "").unwrap();
    let status: serde_json::Value =
        serde_json::from_str(&ok(&mif(&lab, &daemon, &["status", "--json"]))).unwrap();
    assert_eq!(status["steering"], true, "{status:#}");
    assert_eq!(status["daemon"]["pvds"], 2);
    assert_eq!(status["attach_cgroup"], lab.cgroup_rel().as_str());
    let pvds: serde_json::Value =
        serde_json::from_str(&ok(&mif(&lab, &daemon, &["pvd", "list", "--json"]))).unwrap();
    let wwan = pvds
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "wwan0")
        .unwrap();
    assert_eq!(wwan["gateway4"], "198.18.1.1");
    assert_eq!(wwan["available_v6"], true);

    // monitor streams the link going down.
    let mut all = vec!["monitor".to_string(), "--json".into()];
    all.extend([
        "--pin-dir".into(),
        daemon.instance.pin_dir.display().to_string(),
    ]);
    let mut cmd = lab.command_in(None, mif_path().unwrap(), &all).unwrap();
    cmd.stdout(Stdio::piped());
    let monitor = lab.spawn(cmd).unwrap();
    let mut lines = BufReader::new(monitor.take_stdout().unwrap())
        .lines()
        .map_while(Result::ok);
    // The stream's first line says the subscription is in place: every
    // change from then on is streamed.
    let first = lines.next().expect("monitor printed nothing");
    assert_eq!(first, r#"{"event":"subscribed"}"#);
    lab.ip_host(&["link", "set", "wwan0", "down"]).unwrap();
    let line = lines
        .find(|l| l.contains("\"wwan0\""))
        .expect("no monitor event");
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (event["event"].as_str(), event["available_v4"].as_bool()),
        (Some("pvd"), Some(false)),
        "{event}"
    );
    monitor.kill().unwrap();

    // With the daemon gone, status says so (exit 3) and reads come from pins.
    let pin_dir = daemon.instance.pin_dir.display().to_string();
    daemon.kill_hard().unwrap();
    let out = lab
        .output_in(None, mif_path().unwrap(), ["status", "--pin-dir", &pin_dir])
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not running"));
    let out = lab
        .output_in(
            None,
            mif_path().unwrap(),
            ["pvd", "list", "--pin-dir", &pin_dir],
        )
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("wwan0"));
    let cleanup = lab
        .output_in(
            None,
            mif_path().unwrap(),
            [
                "cleanup",
                "--pin-dir",
                &pin_dir,
                "--cgroup",
                &lab.cgroup_rel(),
            ],
        )
        .unwrap();
    assert!(cleanup.status.success());
}

#[test]
fn completions_and_man_page_come_from_the_same_definitions() {
    let bash = std::process::Command::new(mif_path().unwrap())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bash.stdout).contains("policy"));
    let man = std::process::Command::new(mif_path().unwrap())
        .arg("man")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH mif"));
}
