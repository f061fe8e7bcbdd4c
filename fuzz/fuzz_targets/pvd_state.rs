//! The reducer from what netlink reports (interfaces, addresses, uplinks,
//! more-specific routes, RA-learned DNS) to PvD state, the transitions between two
//! states, and the desired kernel state: pure functions fed with
//! arbitrary interface lists, twice in a row as the daemon does.
#![no_main]

use std::{
    collections::{BTreeSet, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mif::{
    model::config,
    host::netlink::{HostRoute, Interface, InterfaceAddr, LinkKind, RouteOrigin, Uplink, UplinkShape},
    plan::{self, RuleOptions},
    model::pvd::{self, DnsSource, Learned, LearnedDns, Numbering, Registry},
    reconcile::transitions,
};

#[derive(Debug, Arbitrary)]
struct Addr {
    v6: bool,
    bits: u128,
    prefix_len: u8,
    scope: u8,
    deprecated: bool,
    tentative: bool,
    temporary: bool,
}

#[derive(Debug, Arbitrary)]
struct Iface {
    /// Index into a small set of names, so that config PvDs match.
    name: u8,
    index: u8,
    up: bool,
    loopback: bool,
    /// Point-to-point (tun) rather than Ethernet.
    point_to_point: bool,
    addrs: Vec<Addr>,
    /// IPv4 default gateway; 0 for a device-only default (`default dev X`).
    gateway4: Option<u32>,
    gateway6: Option<u128>,
    /// More-specific routes: (destination, prefix length, gateway).
    routes: Vec<(u128, u8, Option<u128>)>,
    dns: Vec<u128>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    before: Vec<Iface>,
    after: Vec<Iface>,
    mask_bits: u8,
}

const NAMES: [&str; 6] = ["wlan0", "wwan0", "eth0", "tun0", "lo", "veth1"];

/// Explicit PvDs with and without fixed marks and tables, and policies.
const CONFIG: &str = r#"
[[pvd]]
name = "vpn"
interface = "tun0"
mark = 0x05000000
table = 20199

[[pvd]]
name = "cell"
interface = "wwan0"

[[policy]]
cgroup = "/a"
prefer = ["vpn", "wlan0"]
strict = true
"#;

fn address(a: &Addr) -> InterfaceAddr {
    InterfaceAddr {
        addr: if a.v6 {
            IpAddr::V6(Ipv6Addr::from(a.bits))
        } else {
            IpAddr::V4(Ipv4Addr::from(a.bits as u32))
        },
        prefix_len: a.prefix_len,
        scope: a.scope,
        deprecated: a.deprecated,
        tentative: a.tentative,
        temporary: a.temporary,
        peer: None,
    }
}

fn uplink(gateway: Option<IpAddr>) -> Uplink {
    Uplink {
        gateway: gateway.filter(|g| !g.is_unspecified()),
        shape: UplinkShape::Default,
        table: Some(254),
        metric: 0,
    }
}

/// As a dump delivers them: one entry per interface index.
fn interfaces(list: &[Iface]) -> (Vec<Interface>, LearnedDns) {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut learned = LearnedDns::new();
    for i in list.iter().filter(|i| seen.insert(i.index)) {
        let name = NAMES[usize::from(i.name) % NAMES.len()].to_string();
        if !i.dns.is_empty() {
            learned.insert(
                name.clone(),
                Learned {
                    servers: i.dns.iter().map(|&d| IpAddr::V6(d.into())).collect(),
                    servers_from: DnsSource::Ra,
                    domains: vec!["corp.lab".into()],
                    domains_from: DnsSource::Ra,
                    captive_portal: Some(("https://portal.lab/".into(), DnsSource::Ra)),
                },
            );
        }
        out.push(Interface {
            name,
            index: u32::from(i.index),
            up: i.up,
            loopback: i.loopback,
            kind: if i.point_to_point {
                LinkKind::PointToPoint
            } else {
                LinkKind::Ethernet
            },
            addrs: i.addrs.iter().map(address).collect(),
            uplink4: i
                .gateway4
                .map(|g| uplink(Some(IpAddr::V4(Ipv4Addr::from(g))))),
            uplink6: i
                .gateway6
                .map(|g| uplink(Some(IpAddr::V6(Ipv6Addr::from(g))))),
            routes: i
                .routes
                .iter()
                .map(|&(dst, prefix_len, gateway)| HostRoute {
                    dst: IpAddr::V6(Ipv6Addr::from(dst)),
                    prefix_len,
                    gateway: gateway.map(|g| IpAddr::V6(Ipv6Addr::from(g))),
                    metric: 1024,
                    origin: RouteOrigin::Ra,
                })
                .collect(),
            routes_left_out: 0,
        });
    }
    (out, learned)
}

fuzz_target!(|input: Input| {
    let config = config::parse(Path::new("/etc/mif/mif.toml"), CONFIG).expect("valid config");
    // Contiguous masks of 3 to 8 bits at the top, as `check_mark_mask`
    // allows.
    let bits = 3 + u32::from(input.mask_bits % 6);
    let numbering = Numbering {
        mark_mask: ((1u32 << bits) - 1) << (31 - bits),
        table_base: 20100,
    };
    let rules = RuleOptions {
        mark_mask: numbering.mark_mask,
        mark_priority: 9001,
        source_priority: 9000,
    };
    let preferred: BTreeSet<String> = config
        .policies
        .iter()
        .flat_map(|p| p.terms.prefer.iter().cloned())
        .collect();
    let mut registry = Registry::default();
    let mut previous = Vec::new();
    for list in [&input.before, &input.after] {
        let (interfaces, learned) = interfaces(list);
        let Ok((pvds, _skipped)) =
            pvd::build(&config, &preferred, &interfaces, &learned, &numbering, &mut registry)
        else {
            return;
        };
        // Indices, marks and tables identify a PvD: never shared.
        let unique = |v: Vec<u32>| v.iter().collect::<BTreeSet<_>>().len() == v.len();
        assert!(unique(pvds.iter().map(|p| p.index).collect()), "{pvds:?}");
        assert!(unique(pvds.iter().map(|p| p.mark).collect()), "{pvds:?}");
        assert!(unique(pvds.iter().map(|p| p.table).collect()), "{pvds:?}");
        for p in &pvds {
            assert_eq!(p.mark & !numbering.mark_mask, 0, "{p:?}");
            for (net, len) in &p.prefixes {
                assert_eq!(mif::prefix::network(*net, *len), *net);
            }
        }
        let desired = plan::desired(&pvds, &[], &rules, plan::POLICY_CAPACITY_MAX);
        assert_eq!(desired.pvds.len(), pvds.len());
        let _ = transitions(&previous, &pvds);
        previous = pvds;
    }
    // `network` is public and takes any prefix length.
    for a in input.before.iter().flat_map(|i| &i.addrs) {
        let a = address(a);
        let _ = mif::prefix::network(a.addr, a.prefix_len);
    }
});
