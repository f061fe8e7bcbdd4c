//! What router advertisements taught about each interface's DNS (RDNSS
//! servers, DNSSL domains; RFC 8106) and its captive portal (RFC 8910),
//! kept between passes because an RA comes once and stays valid for its
//! lifetime, while every pass starts from a fresh dump.
//!
//! The captive-portal option has no lifetime, and RFC 8910 gives it none:
//! it describes the network as long as the router keeps announcing it.
//! An RA that stops carrying it cannot be told apart here from one whose
//! option went unnoticed, because the kernel passes each option up as a
//! message of its own and an RA without the option sends none. So the URI
//! an interface's routers announced last is kept ([`RaCaptivePortal`]):
//! replaced by the next one announced, and dropped when none was
//! announced for [`CAPTIVE_PORTAL_HOLD`] (three of the longest intervals
//! between unsolicited RAs that RFC 4861 allows a router) or when the
//! interface goes away, like RDNSS servers. A network that drops its
//! portal can say so at once with `urn:ietf:params:capport:unrestricted`
//! (RFC 8910 section 2), which replaces the old URI like any other.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

/// What router advertisements taught about one interface's DNS (RDNSS
/// servers, DNSSL domains; RFC 8106), each item until its lifetime runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaLearned<T> {
    by_ifindex: BTreeMap<u32, Vec<(T, Instant)>>,
}

impl<T> Default for RaLearned<T> {
    fn default() -> Self {
        Self {
            by_ifindex: BTreeMap::new(),
        }
    }
}

/// RDNSS servers by interface.
pub type RaDns = RaLearned<IpAddr>;

/// How long an announced captive-portal URI is kept without being
/// announced again: 3 × MaxRtrAdvInterval's largest value (1800 s,
/// RFC 4861 section 6.2.1), so a router advertising as rarely as allowed
/// may miss two advertisements before its URI goes.
pub const CAPTIVE_PORTAL_HOLD: Duration = Duration::from_secs(3 * 1800);

/// The captive-portal URI (RA option 37) last announced on each interface.
pub type RaCaptivePortal = RaLearned<String>;

impl RaCaptivePortal {
    /// Records the URI a router announced now on `ifindex`: it replaces
    /// whatever the interface had (one portal per network).
    pub fn announce(&mut self, ifindex: u32, uri: &str, now: Instant) {
        let entry = self.by_ifindex.entry(ifindex).or_default();
        entry.clear();
        entry.push((uri.to_owned(), now + CAPTIVE_PORTAL_HOLD));
    }
}

impl<T: Clone + PartialEq> RaLearned<T> {
    /// Records items announced now with `lifetime`; a zero lifetime
    /// withdraws them (RFC 8106 §5.1).
    pub fn learn(&mut self, ifindex: u32, items: &[T], lifetime: Duration, now: Instant) {
        let entry = self.by_ifindex.entry(ifindex).or_default();
        entry.retain(|(item, _)| !items.contains(item));
        if !lifetime.is_zero() {
            entry.extend(items.iter().map(|a| (a.clone(), now + lifetime)));
        }
    }

    /// Unexpired items by interface name, for the interfaces that exist.
    pub fn current(
        &mut self,
        interfaces: &[crate::host::netlink::Interface],
        now: Instant,
    ) -> BTreeMap<String, Vec<T>> {
        for items in self.by_ifindex.values_mut() {
            items.retain(|(_, until)| *until > now);
        }
        // An index that no longer exists was a removed interface: its RAs
        // belong to a network that is gone.
        self.by_ifindex.retain(|index, items| {
            !items.is_empty() && interfaces.iter().any(|i| i.index == *index)
        });
        interfaces
            .iter()
            .filter_map(|i| {
                let items = self.by_ifindex.get(&i.index)?;
                Some((
                    i.name.clone(),
                    items.iter().map(|(a, _)| a.clone()).collect(),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ra_dns_expires_and_can_be_withdrawn() {
        let iface = crate::host::netlink::Interface {
            name: "wwan0".into(),
            index: 3,
            up: true,
            loopback: false,
            kind: Default::default(),
            addrs: vec![],
            uplink4: None,
            uplink6: None,
            routes: vec![],
            routes_left_out: 0,
        };
        let t0 = Instant::now();
        let server: IpAddr = "2001:db8:1::53".parse().unwrap();
        let mut dns = RaDns::default();
        dns.learn(3, &[server], Duration::from_secs(10), t0);
        assert_eq!(
            dns.current(std::slice::from_ref(&iface), t0)["wwan0"],
            [server]
        );
        assert!(dns
            .current(std::slice::from_ref(&iface), t0 + Duration::from_secs(11))
            .is_empty());
        dns.learn(3, &[server], Duration::from_secs(10), t0);
        dns.learn(3, &[server], Duration::ZERO, t0);
        assert!(dns.current(std::slice::from_ref(&iface), t0).is_empty());
        // Learned on an interface that is gone: dropped.
        dns.learn(9, &[server], Duration::from_secs(10), t0);
        assert!(dns.current(&[iface], t0).is_empty());
    }

    #[test]
    fn the_last_captive_portal_uri_is_kept_for_the_hold_time() {
        let iface = crate::host::netlink::Interface {
            name: "wlan0".into(),
            index: 2,
            up: true,
            loopback: false,
            kind: Default::default(),
            addrs: vec![],
            uplink4: None,
            uplink6: None,
            routes: vec![],
            routes_left_out: 0,
        };
        let ifaces = std::slice::from_ref(&iface);
        let t0 = Instant::now();
        let mut portal = RaCaptivePortal::default();
        portal.announce(2, "https://portal.lab/a", t0);
        portal.announce(2, "https://portal.lab/b", t0 + Duration::from_secs(5));
        assert_eq!(
            portal.current(ifaces, t0 + Duration::from_secs(6))["wlan0"],
            ["https://portal.lab/b"],
            "a new URI replaces the old"
        );
        // Announced again before the hold ran out: kept from then on.
        let again = t0 + CAPTIVE_PORTAL_HOLD;
        portal.announce(2, "https://portal.lab/b", again);
        assert_eq!(
            portal.current(ifaces, again + CAPTIVE_PORTAL_HOLD - Duration::from_secs(1))["wlan0"],
            ["https://portal.lab/b"]
        );
        assert!(portal
            .current(ifaces, again + CAPTIVE_PORTAL_HOLD)
            .is_empty());
    }
}
