//! What a pass changed, for the log and for the sockets to reset: the
//! (PvD, family) pairs that stopped being available with their source.
use std::net::IpAddr;

use log::{info, warn};

use crate::model::pvd::PvdState;

/// A PvD that stopped being usable for one family, with the source address
/// its sockets were bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub pvd: String,
    pub mark: u32,
    pub source: IpAddr,
}

/// The (PvD, family) pairs available in `old` and not in `new` with the
/// same source address.
pub fn transitions(old: &[PvdState], new: &[PvdState]) -> Vec<Lost> {
    let mut lost = Vec::new();
    for before in old {
        let after = new.iter().find(|p| p.name == before.name);
        if before.available4() {
            let kept = after.is_some_and(|a| a.available4() && a.addr4 == before.addr4);
            if let (false, Some(addr)) = (kept, before.addr4) {
                lost.push(Lost {
                    pvd: before.name.clone(),
                    mark: before.mark,
                    source: addr.into(),
                });
            }
        }
        if before.available6() {
            let kept = after.is_some_and(|a| a.available6() && a.addr6 == before.addr6);
            if let (false, Some(addr)) = (kept, before.addr6) {
                lost.push(Lost {
                    pvd: before.name.clone(),
                    mark: before.mark,
                    source: addr.into(),
                });
            }
        }
    }
    lost
}

pub(super) fn log_changes(old: &[PvdState], new: &[PvdState]) {
    for p in new {
        let before = old.iter().find(|o| o.name == p.name);
        let state = |p: &PvdState| {
            (
                p.available4(),
                p.available6(),
                p.addr4,
                p.addr6,
                p.uplink4.clone(),
                p.uplink6.clone(),
            )
        };
        let cut = before.map_or(0, |b| b.routes_left_out);
        if p.routes_left_out > 0 && p.routes_left_out != cut {
            warn!(
                "PvD {}: {} has {} routes beyond the {} its table copies; the widest are copied",
                p.name,
                p.interface,
                p.routes_left_out,
                crate::host::netlink::MAX_COPIED_ROUTES
            );
        }
        if before.map(state) != Some(state(p)) {
            info!(
                "PvD {} (interface {}, mark {:#x}, table {}): IPv4 {}, IPv6 {}",
                p.name,
                p.interface,
                p.mark,
                p.table,
                availability(p, false),
                availability(p, true),
            );
        }
        let portal = |p: &PvdState| (p.captive_portal_api.clone(), p.captive_portal_source);
        let had = before.map(portal).filter(|(uri, _)| uri.is_some());
        if had != Some(portal(p)).filter(|(uri, _)| uri.is_some()) {
            match (&p.captive_portal_api, had) {
                (Some(uri), _) => info!(
                    "PvD {}: captive portal API {uri} (from {})",
                    p.name,
                    match p.captive_portal_source {
                        crate::model::pvd::DnsSource::Ra => "a router advertisement",
                        _ => "the DHCP lease",
                    }
                ),
                (None, Some(_)) => info!("PvD {}: no captive portal API any more", p.name),
                (None, None) => {}
            }
        }
    }
}

fn availability(p: &PvdState, v6: bool) -> String {
    let addr = if v6 {
        p.addr6.map(IpAddr::V6)
    } else {
        p.addr4.map(IpAddr::V4)
    };
    match (p.unavailable_because(v6), addr) {
        (None, Some(a)) => format!("available from {a}"),
        (Some(why), _) => format!("unavailable ({why})"),
        (None, None) => "unavailable".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn pvd(name: &str, up: bool, addr: [u8; 4]) -> PvdState {
        PvdState {
            index: 0,
            name: name.into(),
            interface: name.into(),
            ifindex: Some(2),
            up,
            addr4: Some(Ipv4Addr::from(addr)),
            addr6: None,
            kind: Default::default(),
            uplink4: Some(crate::host::netlink::Uplink::main_default(
                Ipv4Addr::new(198, 18, 0, 1).into(),
                100,
            )),
            uplink6: None,
            prefixes: vec![],
            routes: vec![],
            routes_left_out: 0,
            mark: 0x100_0000,
            table: 100,
            dns: vec![],
            dns_source: Default::default(),
            domains: vec![],
            domains_source: Default::default(),
            validation: Default::default(),
            captive_portal_api: None,
            captive_portal_source: Default::default(),
        }
    }

    #[test]
    fn a_link_going_down_loses_its_address() {
        let lost = transitions(
            &[pvd("wlan0", true, [198, 18, 0, 2])],
            &[pvd("wlan0", false, [198, 18, 0, 2])],
        );
        assert_eq!(
            lost,
            [Lost {
                pvd: "wlan0".into(),
                mark: 0x100_0000,
                source: "198.18.0.2".parse().unwrap()
            }]
        );
    }

    #[test]
    fn renumbering_loses_the_old_address_only() {
        let lost = transitions(
            &[pvd("wlan0", true, [198, 18, 0, 2])],
            &[pvd("wlan0", true, [198, 18, 0, 3])],
        );
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].source, "198.18.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn nothing_is_lost_when_nothing_changes_or_a_pvd_returns() {
        let up = pvd("wlan0", true, [198, 18, 0, 2]);
        let same = std::slice::from_ref(&up);
        assert!(transitions(same, same).is_empty());
        assert!(transitions(&[pvd("wlan0", false, [198, 18, 0, 2])], &[up]).is_empty());
    }
}
