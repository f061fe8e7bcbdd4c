//! What router advertisements taught about each interface's DNS (RDNSS
//! servers, DNSSL domains; RFC 8106), kept between passes because an RA
//! comes once and stays valid for its lifetime, while every pass starts
//! from a fresh dump.
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
}
