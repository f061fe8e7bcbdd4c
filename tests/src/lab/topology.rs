//! The address plan of a lab and the `ip` commands that wire it up.
//!
//! Network `i` is a veth pair between the host namespace and that network's
//! router namespace:
//!
//! ```text
//!   host ns                          router ns i
//!   NAME 198.18.i.2/24  <-- veth -->  eth0 198.18.i.1/24
//!        2001:db8:i::2/64                  2001:db8:i::1/64
//!                                     lo   203.0.113.1/32, 2001:db8:ffff::1/128
//! ```
//!
//! Every router owns the same "internet" address, so which network a
//! connection to it took is only visible from what the peer behind it
//! reports: that is the whole point of the lab.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Result};

use super::netns::ip;

/// The "internet" service address, present in every network.
pub const INTERNET_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The IPv6 "internet" service address, present in every network.
pub const INTERNET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

/// The address of a Docker-like container bridge on the host, as Docker's
/// default `docker0` has it; the lab builds none (a container test does),
/// and no lab network overlaps its prefix.
pub const CONTAINER_BRIDGE_V4: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
/// A container's address behind [`CONTAINER_BRIDGE_V4`], its default
/// gateway.
pub const CONTAINER_V4: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
/// The prefix length of the container network.
pub const CONTAINER_PREFIX_LEN: u8 = 16;
/// The container network itself (172.17.0.0), what masquerading matches.
pub const CONTAINER_NET_V4: Ipv4Addr = Ipv4Addr::from_bits(
    CONTAINER_BRIDGE_V4.to_bits() & (u32::MAX << (32 - CONTAINER_PREFIX_LEN as u32)),
);

/// The router-side end of each veth (namespaces keep names apart).
pub(crate) const ROUTER_IF: &str = "eth0";

/// `addr/len` with the prefix length of every lab network (/24, /64), for
/// `ip addr` on either end of a veth.
pub(crate) fn on_link(addr: impl Into<IpAddr>) -> String {
    match addr.into() {
        addr @ IpAddr::V4(_) => format!("{addr}/24"),
        addr @ IpAddr::V6(_) => format!("{addr}/64"),
    }
}

/// One network of the lab, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Position in `Lab::new`'s list; also the third octet of its prefix.
    pub index: usize,
    /// Host-side interface name (`wlan0`), which is also what the peer of
    /// this network reports.
    pub name: String,
    /// The namespace playing this network's router.
    pub router_ns: String,
    pub host_v4: Ipv4Addr,
    pub host_v6: Ipv6Addr,
    pub gateway_v4: Ipv4Addr,
    pub gateway_v6: Ipv6Addr,
}

impl Network {
    pub(crate) fn plan(index: usize, name: &str, router_ns: String) -> Result<Self> {
        let Ok(octet) = u8::try_from(index) else {
            bail!("at most 256 networks fit the 198.18.i.0/24 plan");
        };
        let v6 = |host| Ipv6Addr::new(0x2001, 0xdb8, octet.into(), 0, 0, 0, 0, host);
        Ok(Self {
            index,
            name: name.to_owned(),
            router_ns,
            host_v4: Ipv4Addr::new(198, 18, octet, 2),
            host_v6: v6(2),
            gateway_v4: Ipv4Addr::new(198, 18, octet, 1),
            gateway_v6: v6(1),
        })
    }

    /// Creates the veth pair and addresses both ends. Both namespaces must
    /// exist. IPv6 addresses are `nodad` so they work immediately instead of
    /// after a second of duplicate address detection.
    pub(crate) fn wire(&self, host_ns: &str) -> Result<()> {
        let (host, router) = (Some(host_ns), Some(self.router_ns.as_str()));
        ip(
            host,
            &[
                "link",
                "add",
                &self.name,
                "type",
                "veth",
                "peer",
                "name",
                ROUTER_IF,
                "netns",
                &self.router_ns,
            ],
        )?;

        let (host_v4, host_v6) = (on_link(self.host_v4), on_link(self.host_v6));
        ip(host, &["addr", "add", &host_v4, "dev", &self.name])?;
        ip(host, &["addr", "add", &host_v6, "dev", &self.name, "nodad"])?;

        let (gw_v4, gw_v6) = (on_link(self.gateway_v4), on_link(self.gateway_v6));
        ip(router, &["addr", "add", &gw_v4, "dev", ROUTER_IF])?;
        ip(router, &["addr", "add", &gw_v6, "dev", ROUTER_IF, "nodad"])?;

        // The service lives on the router's loopback; replies to the host go
        // out on-link through the veth, so no forwarding or extra routes.
        super::netns::serve_on_loopback(&self.router_ns, INTERNET_V4, INTERNET_V6)?;
        ip(router, &["link", "set", ROUTER_IF, "up"])?;
        ip(host, &["link", "set", &self.name, "up"])?;
        Ok(())
    }

    /// Makes this network the host's default in the main table, the way a
    /// machine without mif would have exactly one way out.
    /// Adds this network's default routes to the host's main table with a
    /// metric growing with the index, as NetworkManager does on a host with
    /// several uplinks: network 0 wins for unsteered traffic, and every
    /// network's router is still known (mif learns PvD routers from them).
    pub(crate) fn add_default_routes(&self, host_ns: &str) -> Result<()> {
        let host = Some(host_ns);
        let (gw_v4, gw_v6) = (self.gateway_v4.to_string(), self.gateway_v6.to_string());
        let metric = (100 * (self.index + 1)).to_string();
        for (family, gw) in [("-4", &gw_v4), ("-6", &gw_v6)] {
            ip(
                host,
                &[
                    family, "route", "add", "default", "via", gw, "dev", &self.name, "metric",
                    &metric,
                ],
            )?;
        }
        Ok(())
    }
}

/// Checks the host-side names before anything is created: a name the kernel
/// rejects would otherwise fail halfway through building the lab.
pub(crate) fn check_names(names: &[&str]) -> Result<()> {
    if names.is_empty() {
        bail!("a lab needs at least one network");
    }
    for (i, name) in names.iter().enumerate() {
        let valid = !name.is_empty()
            && name.len() < libc::IFNAMSIZ
            && *name != "lo"
            && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
        if !valid {
            bail!("{name:?} is not a usable interface name");
        }
        if names[..i].contains(name) {
            bail!("interface name {name:?} is given twice");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_addresses_by_index() {
        let net = Network::plan(1, "wwan0", "r".into()).unwrap();
        assert_eq!(net.host_v4, Ipv4Addr::new(198, 18, 1, 2));
        assert_eq!(net.gateway_v6, "2001:db8:1::1".parse::<Ipv6Addr>().unwrap());
        assert!(Network::plan(256, "x", "r".into()).is_err());
    }

    #[test]
    fn container_network_is_apart_from_the_lab_networks() {
        assert_eq!(CONTAINER_NET_V4, Ipv4Addr::new(172, 17, 0, 0));
        let mask = u32::MAX << (32 - u32::from(CONTAINER_PREFIX_LEN));
        assert_eq!(CONTAINER_V4.to_bits() & mask, CONTAINER_NET_V4.to_bits());
        let net = Network::plan(0, "wlan0", "r".into()).unwrap();
        assert_ne!(net.host_v4.to_bits() & mask, CONTAINER_NET_V4.to_bits());
    }

    #[test]
    fn rejects_bad_names() {
        assert!(check_names(&[]).is_err());
        assert!(check_names(&["wlan0", "wlan0"]).is_err());
        assert!(check_names(&["a-name-that-is-too-long"]).is_err());
        assert!(check_names(&["lo"]).is_err());
        assert!(check_names(&["wlan0", "wwan0"]).is_ok());
    }
}
