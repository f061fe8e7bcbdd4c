//! Smoke tests of the lab itself, on the real kernel, without mif: the
//! topology routes as documented, and labs clean up and stay apart.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mif_tests::lab::{lab_peer_path, ClientFailure, Lab, Proto, INTERNET_V4, INTERNET_V6};
use mif_tests::skip_unless_root;

const NETWORKS: &[&str] = &["wlan0", "wwan0"];

#[test]
fn finds_the_peer_binary_cargo_built() {
    let found = lab_peer_path().unwrap().canonicalize().unwrap();
    let built = Path::new(env!("CARGO_BIN_EXE_lab-peer"))
        .canonicalize()
        .unwrap();
    assert_eq!(found, built);
}

/// Without mif, everything leaves by the main table's default: network 0.
#[test]
fn unsteered_traffic_takes_network_zero() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    let app = lab.create_cgroup("apps/browser").unwrap();
    let wlan0 = lab.network(0);

    for (to, source) in [
        (IpAddr::V4(INTERNET_V4), IpAddr::V4(wlan0.host_v4)),
        (IpAddr::V6(INTERNET_V6), IpAddr::V6(wlan0.host_v6)),
    ] {
        for proto in Proto::ALL {
            let reply = lab
                .client(Some(&app), proto, to, None)
                .unwrap_or_else(|e| panic!("{proto} to {to}: {e:#}"));
            assert_eq!(reply.network, "wlan0", "{proto} to {to}");
            assert_eq!(reply.source, source, "{proto} to {to}");
        }
    }
}

/// The client really runs in the cgroup it was given, so programs attached
/// there will see its sockets.
#[test]
fn programs_start_in_their_cgroup() {
    skip_unless_root!();
    let lab = Lab::new(&["wlan0"]).unwrap();
    let app = lab.create_cgroup("apps/shell").unwrap();
    let out = lab
        .output_in(Some(&app), "cat", ["/proc/self/cgroup"])
        .unwrap();
    assert!(out.status.success());
    let expected = format!("0::{}/apps/shell", lab.cgroup_rel());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l == expected),
        "{text:?} lacks {expected:?}"
    );
}

/// A source address of network 1 does not, by itself, move a connection to
/// network 1: without rules the main table sends it out of wlan0, where
/// router 0 has no route back to 198.18.1.0/24, so no reply can arrive.
#[test]
fn binding_a_source_address_does_not_steer() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    let wwan0 = lab.network(1);
    for (to, bind) in [
        (IpAddr::V4(INTERNET_V4), IpAddr::V4(wwan0.host_v4)),
        (IpAddr::V6(INTERNET_V6), IpAddr::V6(wwan0.host_v6)),
    ] {
        let result = lab.client(None, Proto::Udp, to, Some(bind));
        let failure = match result {
            Ok(reply) => panic!("bound to {bind}, got {reply:?}"),
            Err(e) => e.downcast::<ClientFailure>().expect("lab-peer ran"),
        };
        assert!(
            failure.stderr.contains("timed out"),
            "bound to {bind}: {failure}"
        );
    }
}

/// A test's own failure must not be masked: a refused socket is reported
/// as such (this one fails at bind, for an address the host doesn't have).
#[test]
fn client_errors_name_the_failing_call() {
    skip_unless_root!();
    let lab = Lab::new(&["wlan0"]).unwrap();
    let bind: IpAddr = "198.18.99.2".parse().unwrap();
    let err = lab
        .client(None, Proto::Tcp, IpAddr::V4(INTERNET_V4), Some(bind))
        .unwrap_err();
    let failure = err.downcast::<ClientFailure>().unwrap();
    assert!(failure.stderr.starts_with("bind: "), "{:?}", failure.stderr);
}

#[test]
fn sockmark_reports_an_unmarked_socket() {
    skip_unless_root!();
    let lab = Lab::new(&["wlan0"]).unwrap();
    for family in [mif_tests::lab::Family::V4, mif_tests::lab::Family::V6] {
        let mark = lab.sockmark(None, family).unwrap();
        assert_eq!((mark.mark, mark.ifindex), (0, 0), "{family:?}");
    }
    assert!(lab.host_ifindex("wlan0").unwrap() > 1);
}

/// What a lab leaves behind after it is gone: nothing.
struct Footprint {
    namespaces: Vec<PathBuf>,
    cgroup: PathBuf,
}

impl Footprint {
    fn of(lab: &Lab) -> Self {
        let mut namespaces = vec![lab.host_ns_path()];
        namespaces.extend(
            lab.networks()
                .iter()
                .map(|n| Path::new("/run/netns").join(&n.router_ns)),
        );
        Self {
            namespaces,
            cgroup: lab.cgroup_root().to_path_buf(),
        }
    }

    fn assert_present(&self) {
        for path in self.namespaces.iter().chain([&self.cgroup]) {
            assert!(path.exists(), "{} missing", path.display());
        }
    }

    fn assert_gone(&self) {
        for path in self.namespaces.iter().chain([&self.cgroup]) {
            assert!(!path.exists(), "{} left behind", path.display());
        }
    }
}

#[test]
fn drop_removes_everything_even_with_processes_running() {
    skip_unless_root!();
    let lab = Lab::new(NETWORKS).unwrap();
    let deep = lab.create_cgroup("apps/browser/tabs").unwrap();
    lab.create_cgroup("apps/mail").unwrap();
    let sleeper = lab.spawn_in(Some(&deep), "sleep", ["600"]).unwrap();
    let footprint = Footprint::of(&lab);
    footprint.assert_present();

    drop(lab);

    footprint.assert_gone();
    assert!(
        sleeper.try_wait().unwrap().is_some(),
        "sleeper still running"
    );
}

#[test]
fn drop_cleans_up_when_a_test_panics() {
    skip_unless_root!();
    let footprint = Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::new(NETWORKS).unwrap();
        let app = lab.create_cgroup("apps/browser").unwrap();
        lab.spawn_in(Some(&app), "sleep", ["600"]).unwrap();
        *footprint.lock().unwrap() = Some(Footprint::of(&lab));
        panic!("test failure while the lab is up");
    });
    assert!(result.is_err());
    let footprint = footprint.into_inner().unwrap().unwrap();
    footprint.assert_gone();
}

#[test]
fn concurrent_labs_do_not_collide() {
    skip_unless_root!();
    let labs: Vec<Lab> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| Lab::new(NETWORKS).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut names: Vec<&str> = labs.iter().map(Lab::host_ns_name).collect();
    names.extend(
        labs.iter()
            .flat_map(|l| l.networks().iter().map(|n| n.router_ns.as_str())),
    );
    let cgroups: Vec<&Path> = labs.iter().map(Lab::cgroup_root).collect();
    let (n_names, n_cgroups) = (names.len(), cgroups.len());
    names.sort();
    names.dedup();
    let mut cgroups = cgroups;
    cgroups.sort();
    cgroups.dedup();
    assert_eq!((names.len(), cgroups.len()), (n_names, n_cgroups));

    // Each still works on its own, in parallel.
    std::thread::scope(|s| {
        for lab in &labs {
            s.spawn(move || {
                let app = lab.create_cgroup("app").unwrap();
                let reply = lab
                    .client(Some(&app), Proto::Tcp, IpAddr::V4(INTERNET_V4), None)
                    .unwrap();
                assert_eq!(reply.network, "wlan0");
                assert_eq!(reply.source, IpAddr::V4(lab.network(0).host_v4));
            });
        }
    });
}
