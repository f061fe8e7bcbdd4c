//! End-to-end: policies by glob pattern and by container id, with cgroups
//! laid out as Docker and Kubernetes (systemd driver) lay them out, created
//! after the policy.
use std::{
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use mif_tests::{
    lab::{Family, Lab, Proto, INTERNET_V4},
    mif::{mif_path, Daemon},
    skip_unless_root,
};

const ID: &str = "4f1c0a9e2b7d3c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6";
const OTHER_ID: &str = "9a8b7c6d5e4f30211203f4e5d6c7b8a9988776655443322110ffeeddccbbaa99";

fn wait_for_network(lab: &Lab, cgroup: &Path, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = lab
            .client(Some(cgroup), Proto::Tcp, INTERNET_V4.into(), None)
            .map(|r| r.network);
        if got.as_deref().ok() == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{cgroup:?} never left by {expected}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mif(lab: &Lab, daemon: &Daemon, args: &[&str]) -> Output {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend([
        "--pin-dir".into(),
        daemon.instance.pin_dir.display().to_string(),
    ]);
    lab.output_in(None, mif_path().unwrap(), &all).unwrap()
}

#[test]
fn a_pattern_policy_steers_docker_scopes_created_later_and_their_children() {
    skip_unless_root!();
    let lab = Lab::new(&["wlan0", "wwan0"]).unwrap();
    lab.create_cgroup("system.slice").unwrap();
    let config = format!(
        "[[policy]]\ncgroup = \"{}/system.slice/docker-*.scope\"\nprefer = [\"wwan0\"]\n",
        lab.cgroup_rel()
    );
    let daemon = Daemon::start(&lab, &config).unwrap();

    let scope = lab
        .create_cgroup(&format!("system.slice/docker-{ID}.scope"))
        .unwrap();
    wait_for_network(&lab, &scope, "wwan0");
    let child = lab
        .create_cgroup(&format!("system.slice/docker-{ID}.scope/init"))
        .unwrap();
    wait_for_network(&lab, &child, "wwan0");
    let other = lab.create_cgroup("system.slice/cron.service").unwrap();
    assert_eq!(
        lab.sockmark(Some(&other), Family::V4).unwrap().mark,
        0,
        "a non-matching cgroup was steered"
    );

    let list: serde_json::Value =
        serde_json::from_slice(&mif(&lab, &daemon, &["policy", "list", "--json"]).stdout).unwrap();
    assert_eq!(list[0]["state"], "active (1 cgroups)", "{list:#}");
}

#[test]
fn kubernetes_pods_by_recursive_pattern_and_containers_by_id() {
    skip_unless_root!();
    let lab = Lab::new(&["wlan0", "wwan0"]).unwrap();
    let daemon = Daemon::start(&lab, "").unwrap();
    let rel = lab.cgroup_rel();

    // Every pod below kubepods.slice, created after the policy.
    let out = mif(
        &lab,
        &daemon,
        &[
            "policy",
            "set",
            &format!("{rel}/kubepods.slice/**"),
            "--prefer",
            "wwan0",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0c5f9f2e_1d2b_4c3a_9e8f_7a6b5c4d3e2f.slice";
    let container = lab
        .create_cgroup(&format!("{pod}/cri-containerd-{ID}.scope"))
        .unwrap();
    wait_for_network(&lab, &container, "wwan0");

    // A Docker container by the 12-digit prefix `docker ps` shows.
    let scope = lab
        .create_cgroup(&format!("system.slice/docker-{OTHER_ID}.scope"))
        .unwrap();
    let out = mif(
        &lab,
        &daemon,
        &[
            "policy",
            "set",
            "--container",
            &OTHER_ID[..12],
            "--prefer",
            "wwan0",
            "--strict",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_network(&lab, &scope, "wwan0");
    let list =
        String::from_utf8_lossy(&mif(&lab, &daemon, &["policy", "list"]).stdout).into_owned();
    assert!(
        list.contains(&format!("{rel}/system.slice/docker-{OTHER_ID}.scope")),
        "{list}"
    );

    // Ids that are not ids, or that match nothing, are refused clearly.
    let out = mif(
        &lab,
        &daemon,
        &[
            "policy",
            "set",
            "--container",
            "not-an-id",
            "--prefer",
            "wwan0",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not-an-id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mif(
        &lab,
        &daemon,
        &[
            "policy",
            "set",
            "--container",
            "ffffffffffff",
            "--prefer",
            "wwan0",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ffffffffffff"));
}
