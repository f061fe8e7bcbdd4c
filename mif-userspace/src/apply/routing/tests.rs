//! Tests against the real kernel, in throwaway network namespaces (root only;
//! skipped otherwise). Nothing here touches the root namespace or sends
//! traffic: the veth peer lives in a second namespace and stays silent.

use std::{future::Future, net::IpAddr, process::Command};

use crate::{
    host::netlink::{Interface, Netlink, NextHop, Uplink},
    plan::routing::PvdRouting,
};

const TABLE: u32 = 1234;
/// The veth end inside the test namespace.
const DEV: &str = "mif0";

/// A namespace with a veth into a silent peer namespace, addresses on its
/// end and default routes via the peer; both deleted on drop.
struct TestNetns {
    ns: crate::test_support::TestNetns,
    _peer: crate::test_support::TestNetns,
}

impl TestNetns {
    fn create() -> Self {
        let ns = crate::test_support::TestNetns::new("mifnl");
        let peer = crate::test_support::TestNetns::new("mifnl-peer");
        ns.veth_to(DEV, &peer, "mif0p");
        ns.ip(&["addr", "add", "198.18.5.2/24", "dev", DEV]);
        ns.ip(&["addr", "add", "2001:db8:5::2/64", "dev", DEV, "nodad"]);
        ns.ip(&["route", "add", "default", "via", "198.18.5.1"]);
        ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:5::1",
            "dev",
            DEV,
        ]);
        Self { ns, _peer: peer }
    }

    fn ip(&self, args: &[&str]) -> String {
        self.ns.ip(args)
    }

    /// `ip [-6] route get ...` in the namespace: the route the kernel would
    /// pick (nothing is sent), or its refusal.
    fn route_get(&self, family: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["-n", self.ns.name(), family, "route", "get"])
            .args(args)
            .output()
            .expect("run ip");
        match out.status.success() {
            true => Ok(lines(&String::from_utf8_lossy(&out.stdout)).join(" ")),
            false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        }
    }

    /// Runs `body` inside the namespace, so `Netlink::connect` opens its
    /// socket there.
    fn run<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        self.ns.block_on(body);
    }

    /// `ip [-6] rule` lines that look up `table`.
    fn rules(&self, family: &str, table: u32) -> Vec<String> {
        let lookup = format!("lookup {table}");
        lines(&self.ip(&[family, "rule", "show"]))
            .into_iter()
            .filter(|line| line.ends_with(&lookup) || line.contains(&format!("{lookup} ")))
            .collect()
    }

    /// `ip [-6] route show table N` lines.
    fn routes(&self, family: &str, table: u32) -> Vec<String> {
        lines(&self.ip(&[family, "route", "show", "table", &table.to_string()]))
    }
}

/// Non-empty lines with whitespace runs collapsed, for exact comparisons.
fn lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect();
    lines.sort();
    lines
}

fn is_root() -> bool {
    crate::test_support::root_or_skip("netlink tests in a network namespace")
}

fn plan_for(iface: &Interface) -> PvdRouting {
    let global = || iface.addrs.iter().filter(|a| a.scope == 0);
    PvdRouting {
        name: "test".into(),
        table: TABLE,
        ifindex: iface.index,
        default4: iface.uplink4.as_ref().map(Uplink::next_hop),
        default6: iface.uplink6.as_ref().map(Uplink::next_hop),
        prefixes: global().map(|a| (a.addr, a.prefix_len)).collect(),
        routes: Vec::new(),
        sources: global().map(|a| a.addr).collect(),
        route_source4: global().find_map(|a| match a.addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        }),
        mark: 0x0100_0000,
        mark_mask: 0x7f00_0000,
        mark_priority: 9000,
        source_priority: 9001,
    }
}

async fn interface(netlink: &Netlink) -> Interface {
    let interfaces = netlink.interfaces().await.expect("interfaces");
    assert!(
        interfaces.iter().any(|i| i.name == "lo" && i.loopback),
        "{interfaces:#?}"
    );
    interfaces
        .into_iter()
        .find(|i| i.name == DEV)
        .expect("test veth listed")
}

#[test]
fn interfaces_report_state_addresses_and_gateways() {
    if !is_root() {
        return;
    }
    let ns = TestNetns::create();
    ns.run(|| async {
        let netlink = Netlink::connect().expect("connect");
        let iface = interface(&netlink).await;
        assert!(iface.up && !iface.loopback, "{iface:#?}");
        let addr = |s: &str| s.parse::<IpAddr>().unwrap();
        let v4 = iface.addrs.iter().find(|a| a.addr == addr("198.18.5.2"));
        let v4 = v4.expect("ipv4 address");
        assert_eq!((v4.prefix_len, v4.scope), (24, 0));
        let v6 = iface.addrs.iter().find(|a| a.addr == addr("2001:db8:5::2"));
        let v6 = v6.expect("ipv6 address");
        assert_eq!((v6.prefix_len, v6.scope), (64, 0));
        assert!(!v6.tentative && !v6.deprecated && !v6.temporary, "{v6:?}");
        let gateway = |u: &Option<Uplink>| u.as_ref().and_then(|u| u.gateway);
        assert_eq!(gateway(&iface.uplink4), Some(addr("198.18.5.1")));
        assert_eq!(gateway(&iface.uplink6), Some(addr("2001:db8:5::1")));
    });
}

#[test]
fn install_and_remove_a_pvd() {
    if !is_root() {
        return;
    }
    let ns = TestNetns::create();
    // Someone else's fwmark rule at our priority, and their own table.
    ns.ip(&[
        "rule", "add", "fwmark", "0x5", "lookup", "77", "pref", "9000",
    ]);
    ns.ip(&[
        "-6", "rule", "add", "fwmark", "0x5", "lookup", "77", "pref", "9000",
    ]);
    ns.ip(&["route", "add", "unreachable", "default", "table", "77"]);

    let (tx, rx) = std::sync::mpsc::channel();
    ns.run(move || async move {
        let netlink = Netlink::connect().expect("connect");
        let plan = plan_for(&interface(&netlink).await);
        netlink
            .install(&plan, &netlink.routing().await.expect("dump"))
            .await
            .expect("install");
        tx.send(plan).unwrap();
    });
    let plan = rx.recv().unwrap();

    assert_eq!(
        ns.rules("-4", TABLE),
        [
            "9000: from all fwmark 0x1000000/0x7f000000 lookup 1234 proto 241",
            "9001: from 198.18.5.2 lookup 1234 proto 241",
        ]
    );
    assert_eq!(
        ns.rules("-6", TABLE),
        [
            "9000: from all fwmark 0x1000000/0x7f000000 lookup 1234 proto 241",
            "9001: from 2001:db8:5::2 lookup 1234 proto 241",
        ]
    );
    assert_eq!(
        ns.routes("-4", TABLE),
        [
            "198.18.5.0/24 dev mif0 proto 241 scope link src 198.18.5.2 metric 256",
            "default via 198.18.5.1 dev mif0 proto 241 src 198.18.5.2 metric 1024",
            "unreachable default proto 241 metric 4294967295",
        ]
    );
    assert_eq!(
        ns.routes("-6", TABLE),
        [
            "2001:db8:5::/64 dev mif0 proto 241 metric 256 pref medium",
            "default via 2001:db8:5::1 dev mif0 proto 241 metric 1024 pref medium",
            "unreachable default dev lo proto 241 metric 4294967295 pref medium",
        ]
    );
    // What the kernel now picks: marked sockets and the PvD's source
    // addresses go through its table, unmarked ones still use main.
    let marked4 = ns
        .route_get("-4", &["203.0.113.1", "mark", "0x1000000"])
        .unwrap();
    assert!(
        marked4.contains("via 198.18.5.1 dev mif0 table 1234"),
        "{marked4}"
    );
    let from6 = ns
        .route_get("-6", &["2001:db8:99::1", "from", "2001:db8:5::2"])
        .unwrap();
    assert!(
        from6.contains("via 2001:db8:5::1 dev mif0 table 1234"),
        "{from6}"
    );
    let unmarked = ns.route_get("-4", &["203.0.113.1"]).unwrap();
    assert!(!unmarked.contains("table"), "{unmarked}");

    let snapshot = |ns: &TestNetns| {
        (
            ns.ip(&["-4", "rule"]),
            ns.ip(&["-6", "rule"]),
            ns.routes("-4", TABLE),
            ns.routes("-6", TABLE),
        )
    };
    let installed = snapshot(&ns);

    // Installing again changes nothing.
    let again = plan.clone();
    ns.run(move || async move {
        let netlink = Netlink::connect().expect("connect");
        netlink
            .install(&again, &netlink.routing().await.expect("dump"))
            .await
            .expect("second install");
    });
    assert_eq!(snapshot(&ns), installed);

    // A changed plan replaces the gateway and prunes what it no longer has.
    let mut changed = plan.clone();
    changed.default4 = Some(NextHop::Gateway("198.18.5.254".parse().unwrap()));
    changed.default6 = None;
    changed.sources.retain(IpAddr::is_ipv4);
    changed.prefixes.retain(|(addr, _)| addr.is_ipv4());
    ns.run(move || async move {
        let netlink = Netlink::connect().expect("connect");
        netlink
            .install(&changed, &netlink.routing().await.expect("dump"))
            .await
            .expect("changed install");
    });
    assert_eq!(
        ns.rules("-6", TABLE),
        ["9000: from all fwmark 0x1000000/0x7f000000 lookup 1234 proto 241"]
    );
    assert_eq!(
        ns.routes("-4", TABLE),
        [
            "198.18.5.0/24 dev mif0 proto 241 scope link src 198.18.5.2 metric 256",
            "default via 198.18.5.254 dev mif0 proto 241 src 198.18.5.2 metric 1024",
            "unreachable default proto 241 metric 4294967295",
        ]
    );
    assert_eq!(
        ns.routes("-6", TABLE),
        ["unreachable default dev lo proto 241 metric 4294967295 pref medium"]
    );
    // Without a gateway the PvD's sockets get no route at all, rather than
    // main's default through whatever other network it leads to. (IPv6
    // reports an unreachable route as EHOSTUNREACH.)
    let err = ns
        .route_get("-6", &["2001:db8:99::1", "mark", "0x1000000"])
        .unwrap_err();
    assert!(err.contains("No route to host"), "{err}");
    assert!(ns.route_get("-6", &["2001:db8:99::1"]).is_ok());

    // Removing (with the original plan: its priorities and table are what
    // count) leaves nothing of ours, twice over, and everything of others.
    ns.run(move || async move {
        let netlink = Netlink::connect().expect("connect");
        netlink
            .remove(&plan, &netlink.routing().await.expect("dump"))
            .await
            .expect("remove");
        netlink
            .remove(&plan, &netlink.routing().await.expect("dump"))
            .await
            .expect("second remove");
    });
    assert_eq!(ns.rules("-4", TABLE), Vec::<String>::new());
    assert_eq!(ns.rules("-6", TABLE), Vec::<String>::new());
    assert_eq!(ns.routes("-4", TABLE), Vec::<String>::new());
    assert_eq!(ns.routes("-6", TABLE), Vec::<String>::new());
    assert_eq!(ns.rules("-4", 77), ["9000: from all fwmark 0x5 lookup 77"]);
    assert_eq!(ns.rules("-6", 77), ["9000: from all fwmark 0x5 lookup 77"]);
    assert_eq!(ns.routes("-4", 77), ["unreachable default"]);
    // The main table is untouched.
    assert!(ns
        .routes("-4", 254)
        .contains(&"default via 198.18.5.1 dev mif0".to_string()));
}

#[test]
fn invalid_plans_touch_nothing() {
    if !is_root() {
        return;
    }
    let ns = TestNetns::create();
    let before = ns.routes("-4", 254);
    ns.run(|| async {
        let netlink = Netlink::connect().expect("connect");
        let mut plan = plan_for(&interface(&netlink).await);
        plan.table = 254;
        let err = netlink
            .remove(&plan, &netlink.routing().await.expect("dump"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
        assert!(netlink
            .install(&plan, &netlink.routing().await.expect("dump"))
            .await
            .is_err());
    });
    assert_eq!(ns.routes("-4", 254), before);
}

#[test]
fn connect_needs_a_runtime() {
    let err = Netlink::connect().unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}
