//! A second router on network 0's link, announcing with a Route
//! Information Option (RFC 4191) a prefix only it can reach: the case of
//! a home network with a second box (a "PvD" router, a corporate gateway)
//! next to the default router, where the host must send traffic for that
//! prefix to the second router's link-local address and nowhere else.
//!
//! ```text
//!   host ns               router 0 ns                    second router ns
//!   wlan0 <-- veth -->    eth0 (router 0's addresses)
//!                           \-- macvlan (bridge mode) -->  eth0 fe80::..., 198.18.0.3/24
//!                                                          lo 2001:db8:77::1, 198.18.77.1
//!                                                             lab-peer "wlan0-r2"
//! ```
//!
//! The link stays one L2 segment: the second router's interface is a
//! macvlan on router 0's end of the veth, moved into a namespace of its
//! own, so frames for its MAC address (and every multicast, which neighbour
//! discovery needs) reach it through the same veth while router 0 keeps its
//! `eth0` and addresses unchanged (so [`Lab::set_carrier`] and
//! [`Lab::advertise_rdnss`] work as before, and pulling network 0's carrier
//! takes the second router away too). Router 0 has no route to
//! 2001:db8:77::/64: a packet for it sent to router 0 never reaches the
//! second router's peer.
//!
//! radvd on the second router sends router lifetime 0 (it is not a default
//! router) and one RIO for 2001:db8:77::/64. The host's kernel installs it
//! as `2001:db8:77::/64 via fe80::... dev wlan0 proto ra` only with
//! `accept_ra_rt_info_max_plen` at least 64 on wlan0 (its default, 0,
//! ignores every RIO), which the lab sets inside its host namespace;
//! `accept_ra` stays at its default 1, enough since the host does not
//! forward.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::topology::ROUTER_IF;
use super::wait::wait_until;
use super::{netns, Lab, LabChild, Radvd};

/// The address the second router serves its peer on, inside the prefix it
/// announces.
pub const SECOND_ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 1);
/// The same for IPv4, which RAs cannot announce: reachable only once a
/// test adds a route via [`SecondRouter::link_v4`].
pub const SECOND_ROUTER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 1);
/// The prefix in the Route Information Option.
pub const SECOND_ROUTER_PREFIX: &str = "2001:db8:77::/64";

/// The network whose link gets the second router.
const LINK: usize = 0;
/// The second router's IPv4 address on the link, next to router 0's .1
/// and the host's .2.
const LINK_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// How long the RIO route may take to show up: radvd sends its first RA
/// at once, then every 3 to 4 s.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// A second router added by [`Lab::add_second_router`]. Dropping it stops
/// radvd and the peer and removes its namespace (with its macvlan); the
/// host's RIO route then stays until its lifetime (60 s) runs out.
pub struct SecondRouter {
    radvd: Radvd,
    peer: LabChild,
    ns: String,
    name: String,
    link_local: Ipv6Addr,
}

impl SecondRouter {
    /// What its peer reports as network name: `<network 0's name>-r2`
    /// (`wlan0-r2`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its link-local address on the link: the gateway of the RIO route.
    pub fn link_local(&self) -> Ipv6Addr {
        self.link_local
    }

    /// Its IPv4 address on the link (198.18.0.3), the gateway for
    /// [`SECOND_ROUTER_V4`] should a test add that route.
    pub fn link_v4(&self) -> Ipv4Addr {
        LINK_V4
    }

    /// Its namespace (for `ip -n`).
    pub fn ns_name(&self) -> &str {
        &self.ns
    }

    /// radvd's log so far.
    pub fn radvd_log(&self) -> String {
        self.radvd.log_text()
    }
}

impl Drop for SecondRouter {
    fn drop(&mut self) {
        if let Err(e) = self.peer.kill() {
            eprintln!("second router cleanup: killing its peer: {e:#}");
        }
        // Only the name goes now; the namespace itself (and its macvlan)
        // when its last process does: radvd, whose field drops right after
        // this.
        if let Err(e) = netns::delete(&self.ns) {
            eprintln!("second router cleanup: {e:#}");
        }
    }
}

impl Lab {
    /// Puts a second router on network 0's link (see the module
    /// documentation) and returns once the host's main table routes
    /// 2001:db8:77::/64 via its link-local address.
    pub fn add_second_router(&self) -> Result<SecondRouter> {
        let ns = self.extra_ns_name("s0");
        self.add_namespace(&ns)
            .context("creating the second router's namespace")?;
        let result = self.build_second_router(&ns);
        if result.is_err() {
            // No handle owns the namespace yet; the lab would delete it
            // when it drops, but a failed call should leave nothing.
            let _ = netns::delete(&ns);
        }
        result
    }

    fn build_second_router(&self, ns: &str) -> Result<SecondRouter> {
        let link = self.network(LINK).clone();
        let r2 = Some(ns);
        // Created in router 0 (where its lower device is), born in the
        // second router's namespace under the usual router-side name.
        self.ip_router(
            LINK,
            &[
                "link", "add", "link", ROUTER_IF, "name", ROUTER_IF, "netns", ns, "type",
                "macvlan", "mode", "bridge",
            ],
        )
        .context("adding the second router's macvlan")?;
        // No duplicate address detection: its link-local address must be
        // usable (radvd sends from it) as soon as the link is up.
        self.sysctl_in(ns, &format!("net.ipv6.conf.{ROUTER_IF}.accept_dad=0"))?;
        let v4 = format!("{LINK_V4}/24");
        netns::ip(r2, &["addr", "add", &v4, "dev", ROUTER_IF])?;
        netns::serve_on_loopback(ns, SECOND_ROUTER_V4, SECOND_ROUTER_V6)?;
        netns::ip(r2, &["link", "set", ROUTER_IF, "up"])?;
        // Replies to the host's global address go out on-link (the host
        // sends from 2001:db8:0::2, which radvd does not announce here).
        let host_prefix = format!("{}/64", link.gateway_v6);
        netns::ip(r2, &["-6", "route", "add", &host_prefix, "dev", ROUTER_IF])?;
        // Added once the macvlan is operationally up, which the kernel
        // reports a moment after `link set up`.
        let link_local = wait_until(
            "the second router's link-local address",
            ROUTE_TIMEOUT,
            || link_local_of(ns),
        )?;

        let name = format!("{}-r2", link.name);
        let peer = self
            .start_peer_in(ns, &name)
            .context("starting the second router's peer")?;

        // Before the first RA arrives, or the kernel ignores its RIO.
        self.sysctl_in(
            self.host_ns_name(),
            &format!("net.ipv6.conf.{}.accept_ra_rt_info_max_plen=64", link.name),
        )?;
        let config = format!(
            "interface {ROUTER_IF} {{\n AdvSendAdvert on;\n MinRtrAdvInterval 3;\n \
             MaxRtrAdvInterval 4;\n AdvDefaultLifetime 0;\n \
             route {SECOND_ROUTER_PREFIX} {{ AdvRouteLifetime 60; AdvRoutePreference medium; }};\n}};\n"
        );
        let radvd = self.start_radvd(ns, "s0", &config)?;
        let router = SecondRouter {
            radvd,
            peer,
            ns: ns.to_owned(),
            name,
            link_local,
        };

        let gateway = format!("via {link_local} dev {} proto ra", link.name);
        wait_until("the host to learn the RIO route", ROUTE_TIMEOUT, || {
            let routes = self.ip_host(&["-6", "route", "show", SECOND_ROUTER_PREFIX])?;
            if routes.contains(&gateway) {
                Ok(())
            } else {
                bail!("{SECOND_ROUTER_PREFIX} in the host: {routes:?}, expected {gateway:?}")
            }
        })
        .with_context(|| format!("radvd log:\n{}", router.radvd_log()))?;
        Ok(router)
    }
}

/// The link-local address of `eth0` in the lab namespace `ns`.
fn link_local_of(ns: &str) -> Result<Ipv6Addr> {
    let json = netns::ip(
        Some(ns),
        &[
            "-j", "-6", "addr", "show", "dev", ROUTER_IF, "scope", "link",
        ],
    )?;
    let parsed: serde_json::Value =
        serde_json::from_str(&json).with_context(|| format!("parsing ip -j: {json}"))?;
    parsed[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|a| a["local"].as_str()?.parse().ok())
        .with_context(|| format!("no link-local address on {ROUTER_IF} in {ns}: {json}"))
}
