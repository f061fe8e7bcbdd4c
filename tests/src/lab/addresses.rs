//! More addresses on the host's end of a network, and deprecated ones: for
//! scenarios where the kernel's own choice of source address and mif's
//! differ. They live on interfaces of the host namespace, so they go with
//! the lab like everything else in it.

use std::net::IpAddr;

use anyhow::Result;

use super::{topology::on_link, Family, Lab};

impl Lab {
    /// Adds `addr` to network `i`'s host interface with the network's
    /// prefix length: an IPv4 address of the network's subnet becomes a
    /// secondary address (the kernel's source selection passes over it
    /// while the primary is there). IPv6 addresses skip duplicate address
    /// detection, so they are usable at once.
    pub fn add_host_address(&self, i: usize, addr: IpAddr) -> Result<()> {
        let (name, cidr) = (&self.networks[i].name, on_link(addr));
        let mut args = vec!["addr", "add", &cidr, "dev", name];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        self.ip_host(&args)?;
        Ok(())
    }

    /// Marks network `i`'s own host address of `family` deprecated
    /// (preferred lifetime 0, as when a DHCP lease's or a router
    /// advertisement's preferred time runs out). It stays on the interface
    /// and usable; RFC 6724 (and mif) prefer other addresses to it.
    pub fn deprecate_host_address(&self, i: usize, family: Family) -> Result<()> {
        let net = &self.networks[i];
        let addr = match family {
            Family::V4 => on_link(net.host_v4),
            Family::V6 => on_link(net.host_v6),
        };
        self.ip_host(&[
            "addr",
            "change",
            &addr,
            "dev",
            &net.name,
            "preferred_lft",
            "0",
        ])?;
        Ok(())
    }
}
