//! Counting, in a router's namespace, the packets that reach it from the
//! host: the way a test proves that nothing of an application left by a
//! network it must not use ("no leak"), and, with [`Arrivals::ExceptVpn`],
//! that nothing but the VPN's own encrypted transport did.
//!
//! An nftables table of its own per counter, in the router's namespace
//! (so nothing on the machine is touched and counters of one lab can
//! coexist); it goes when the [`ArrivalCounter`] drops, or with the
//! router's namespace.
//!
//! Counted: TCP, UDP, ICMP and ICMPv6 echo requests arriving on the
//! router's end of the host's link (`eth0`), whatever their addresses:
//! what applications send. Not counted: neighbour discovery, router
//! solicitations and multicast listener reports, which the host's kernel
//! sends by itself. Note that a DHCP client's broadcasts (see
//! [`Lab::use_dhcp`]) are UDP and do count.

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

use super::topology::ROUTER_IF;
use super::vpn::{VPN_PORT, VPN_SERVER_V4};
use super::{Lab, OUTPUT_TIMEOUT};

/// Which arrivals an [`ArrivalCounter`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// Everything an application could have sent.
    All,
    /// The same, but not the VPN's encapsulated traffic (UDP to
    /// [`VPN_SERVER_V4`] port [`VPN_PORT`]), which crosses network 0 by
    /// design (see [`Lab::start_vpn`]).
    ExceptVpn,
}

/// Tables of one test binary never share a name, so two counters in one
/// router do not replace each other.
static NEXT_TABLE: AtomicU32 = AtomicU32::new(0);

/// The counter object's name inside its table.
const COUNTER: &str = "arrivals";

/// An installed counter; see the module documentation.
#[derive(Debug)]
pub struct ArrivalCounter<'lab> {
    lab: &'lab Lab,
    router: usize,
    table: String,
}

impl Lab {
    /// Starts counting, in router `i`, the packets that arrive from the
    /// host (see the module documentation for what counts).
    pub fn count_arrivals(&self, i: usize, which: Arrivals) -> Result<ArrivalCounter<'_>> {
        let table = format!("mif_arrivals{}", NEXT_TABLE.fetch_add(1, Ordering::Relaxed));
        // The VPN's packets leave the chain before any counting rule.
        let skip_vpn = match which {
            Arrivals::All => String::new(),
            Arrivals::ExceptVpn => format!(
                "iifname \"{ROUTER_IF}\" ip daddr {VPN_SERVER_V4} udp dport {VPN_PORT} return\n"
            ),
        };
        // Priority -300: before conntrack and anything a test adds, so a
        // packet is counted even if something later drops it.
        let rules = format!(
            "table inet {table} {{\n\
             counter {COUNTER} {{}}\n\
             chain prerouting {{\n\
             type filter hook prerouting priority -300; policy accept;\n\
             {skip_vpn}\
             iifname \"{ROUTER_IF}\" meta l4proto {{ tcp, udp }} counter name {COUNTER}\n\
             iifname \"{ROUTER_IF}\" icmp type echo-request counter name {COUNTER}\n\
             iifname \"{ROUTER_IF}\" icmpv6 type echo-request counter name {COUNTER}\n\
             }}\n}}\n"
        );
        let file = self.scratch_dir("nft")?.join(format!("{table}.nft"));
        std::fs::write(&file, &rules).with_context(|| format!("writing {}", file.display()))?;
        let file = file.to_str().context("temp dir is not UTF-8")?;
        nft(self, i, &["-f", file]).with_context(|| format!("installing {rules}"))?;
        Ok(ArrivalCounter {
            lab: self,
            router: i,
            table,
        })
    }
}

impl ArrivalCounter<'_> {
    /// Packets counted since the counter was installed.
    pub fn packets(&self) -> Result<u64> {
        let json = nft(
            self.lab,
            self.router,
            &["-j", "list", "counter", "inet", &self.table, COUNTER],
        )?;
        let parsed: serde_json::Value =
            serde_json::from_str(&json).with_context(|| format!("parsing nft -j: {json}"))?;
        parsed["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|item| item["counter"]["packets"].as_u64())
            .with_context(|| format!("no packet count in {json}"))
    }
}

impl Drop for ArrivalCounter<'_> {
    fn drop(&mut self) {
        // Best effort: the table also goes with the router's namespace.
        let _ = nft(
            self.lab,
            self.router,
            &["delete", "table", "inet", &self.table],
        );
    }
}

/// `nft ARGS` in router `i`; returns stdout, fails with nft's stderr.
/// Shared by the lab's nftables users (counters, cut upstreams, the
/// benchmark's probe counter).
pub(crate) fn nft(lab: &Lab, i: usize, args: &[&str]) -> Result<String> {
    let out = lab.output(lab.command_in_router(i, "nft", args)?, OUTPUT_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "nft {} in router {i} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
