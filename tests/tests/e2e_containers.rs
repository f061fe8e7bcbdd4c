//! End-to-end: containers with a network namespace of their own, laid out
//! as Docker lays them out (a bridge on the host, a veth per container,
//! masquerading), are steered by their cgroup's policy from the host side.
use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mif_tests::{
    e2e::pvd_table,
    lab::{
        lab_peer_path, ClientReply, Family, Lab, SockMark, CONTAINER_BRIDGE_V4, CONTAINER_NET_V4,
        CONTAINER_PREFIX_LEN, CONTAINER_V4, INTERNET_V4, PEER_PORT,
    },
    mif::Daemon,
    skip_unless_root,
};

/// A "container": its own network namespace behind a host bridge, with
/// masquerading on the host, removed on drop.
struct Container {
    ns: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn docker_like(lab: &Lab) -> Container {
    let host = lab.host_ns_name();
    let container = Container {
        ns: format!("{host}c"),
    };
    let bridge = format!("{CONTAINER_BRIDGE_V4}/{CONTAINER_PREFIX_LEN}");
    let address = format!("{CONTAINER_V4}/{CONTAINER_PREFIX_LEN}");
    let gateway = CONTAINER_BRIDGE_V4.to_string();
    sh(&["ip", "netns", "add", &container.ns]);
    sh(&["ip", "-n", host, "link", "add", "mifbr0", "type", "bridge"]);
    sh(&["ip", "-n", host, "addr", "add", &bridge, "dev", "mifbr0"]);
    sh(&["ip", "-n", host, "link", "set", "mifbr0", "up"]);
    sh(&[
        "ip",
        "-n",
        host,
        "link",
        "add",
        "vethc0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &container.ns,
    ]);
    sh(&[
        "ip", "-n", host, "link", "set", "vethc0", "master", "mifbr0", "up",
    ]);
    sh(&[
        "ip",
        "-n",
        &container.ns,
        "addr",
        "add",
        &address,
        "dev",
        "eth0",
    ]);
    sh(&["ip", "-n", &container.ns, "link", "set", "eth0", "up"]);
    sh(&["ip", "-n", &container.ns, "link", "set", "lo", "up"]);
    sh(&[
        "ip",
        "-n",
        &container.ns,
        "route",
        "add",
        "default",
        "via",
        &gateway,
    ]);
    // Forwarding and NAT in the lab's own host namespace only.
    sh(&[
        "ip",
        "netns",
        "exec",
        host,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    let nft = format!(
        "table ip mifnat {{\n chain post {{\n  type nat hook postrouting priority 100;\n  \
         ip saddr {CONTAINER_NET_V4}/{CONTAINER_PREFIX_LEN} oifname != \"mifbr0\" masquerade\n \
         }}\n}}\n"
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", host, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), nft.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    container
}

/// A command in the container's namespace and `cgroup`.
fn in_container(container: &Container, cgroup: &Path, program: &Path, args: &[&str]) -> Command {
    let ns = File::open(format!("/run/netns/{}", container.ns)).unwrap();
    let procs = File::options()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .unwrap();
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: only write(2) and setns(2) on fds opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1
                || libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

fn reply(container: &Container, cgroup: &Path) -> Option<ClientReply> {
    let port = PEER_PORT.to_string();
    let to = INTERNET_V4.to_string();
    let args = ["client", "--proto", "tcp", "--to", &to, "--port", &port];
    let out = in_container(container, cgroup, &lab_peer_path().unwrap(), &args)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| ClientReply::parse(String::from_utf8_lossy(&out.stdout).trim()).unwrap())
}

#[test]
fn a_container_with_its_own_namespace_is_steered_from_the_host_side() {
    skip_unless_root!();
    let lab = Lab::new(&["wlan0", "wwan0"]).unwrap();
    let container = docker_like(&lab);
    let scope = lab
        .create_cgroup("system.slice/docker-0123abcd.scope")
        .unwrap();

    let (wlan, wwan) = (lab.network(0), lab.network(1));

    // Without a policy the container leaves by the main table's network.
    let before = reply(&container, &scope).expect("the container cannot reach the internet");
    assert_eq!(
        before,
        ClientReply {
            network: wlan.name.clone(),
            source: wlan.host_v4.into()
        }
    );

    let config = format!(
        "[[policy]]\ncgroup = \"{}/system.slice/docker-0123abcd.scope\"\nprefer = [{:?}]\n",
        lab.cgroup_rel(),
        wwan.name
    );
    let daemon = Daemon::start(&lab, &config).unwrap();
    // The container's long-running process is what mif finds.
    let mut sleeper = in_container(&container, &scope, Path::new("sleep"), &["60"]);
    let mut sleeper = sleeper.stdin(Stdio::null()).spawn().unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let expected = ClientReply {
        network: wwan.name.clone(),
        source: wwan.host_v4.into(),
    };
    loop {
        let got = reply(&container, &scope);
        if got.as_ref() == Some(&expected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the container was not steered: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Steered on the host side: the container's address looks up wwan0's
    // table, as the daemon numbered it.
    let table = pvd_table(&daemon.maps_json().unwrap(), &wwan.name);
    let rules = lab.ip_host(&["rule"]).unwrap();
    let rule = format!("from {CONTAINER_V4} lookup {table}");
    assert!(rules.contains(&rule), "no {rule:?} in:\n{rules}");
    // By mark only in the host's namespace: a socket of the same cgroup
    // made there carries wwan0's mark, one made in the container's carries
    // none (sock_create reads the namespace from the creating task).
    let host_side = lab.sockmark(Some(&scope), Family::V4).unwrap();
    assert_ne!(host_side.mark, 0, "the host-side socket was not steered");
    let out = in_container(
        &container,
        &scope,
        &lab_peer_path().unwrap(),
        &["sockmark", "--family", "4"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inside = SockMark::parse(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(
        inside.mark, 0,
        "a socket of the container's namespace was marked"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
