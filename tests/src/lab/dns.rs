//! Real resolvers for the lab: dnsmasq in a router (the network's
//! resolver) or in the host namespace (a local stub on 127.0.0.53 and ::1),
//! each answering [`DNS_NAME`] with addresses of its own and logging every
//! query with its source address.
//!
//! Clients: `dig` and `getent hosts` run in a cgroup of the host namespace;
//! `getent` under a private mount namespace whose `/etc/resolv.conf` is
//! bind-mounted from the lab's own file, so the machine's real resolver is
//! never asked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{Lab, LabChild, INTERNET_V4, INTERNET_V6};

/// The name every lab resolver answers, each with its own addresses.
pub const DNS_NAME: &str = "whoami.lab";
/// A domain every lab resolver also answers for (any name below it), with
/// the same addresses: what a PvD declares in `domains`.
pub const CORP_DOMAIN: &str = "corp.lab";
/// The name of the connectivity check (see [`Lab::start_connectivity_servers`]):
/// every network's resolver answers it with the internet addresses
/// ([`INTERNET_V4`], [`INTERNET_V6`]), where that network's HTTP server
/// listens. The host's stub does not know it, so a probe by name only works
/// through a network's own resolver.
pub const CONNECTIVITY_NAME: &str = "connectivity.lab";
/// A TXT record of `big.corp.lab` too large for a UDP answer without EDNS
/// (512 bytes): such answers come truncated (TC), and clients retry over TCP.
pub const BIG_TXT: &str = "big.corp.lab";
/// One of the strings of [`BIG_TXT`] (it has four).
pub fn big_txt_chunk(resolver: Resolver) -> String {
    format!("{}{}", resolver.octet(), "x".repeat(200))
}

/// Which resolver answered: network `i`'s, or the host's stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    Network(usize),
    Stub,
}

impl Resolver {
    fn octet(self) -> u8 {
        match self {
            Resolver::Network(i) => 10 + i as u8,
            Resolver::Stub => 99,
        }
    }

    /// The A record this resolver gives [`DNS_NAME`].
    pub fn answer_v4(self) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, self.octet())
    }

    /// The AAAA record likewise.
    pub fn answer_v6(self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0xaaaa, 0, 0, 0, 0, self.octet().into())
    }

    /// Whether `text` (dig or getent output) holds one of this resolver's
    /// answers.
    pub fn answered(self, text: &str) -> bool {
        text.contains(&self.answer_v4().to_string()) || text.contains(&self.answer_v6().to_string())
    }
}

/// A running dnsmasq; killed with the lab.
#[derive(Debug)]
pub struct Dnsmasq {
    pub resolver: Resolver,
    dir: PathBuf,
    log: PathBuf,
    _child: LabChild,
}

impl Dnsmasq {
    /// Source addresses of the queries seen so far (`query[A] NAME from X`).
    pub fn query_sources(&self) -> Vec<IpAddr> {
        self.queries()
            .into_iter()
            .map(|(_, source)| source)
            .collect()
    }

    /// The names asked so far, with the source of each query.
    pub fn queries(&self) -> Vec<(String, IpAddr)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once("query[")?;
                let (_, rest) = rest.split_once("] ")?;
                let (name, source) = rest.split_once(" from ")?;
                Some((name.to_string(), source.trim().parse().ok()?))
            })
            .collect()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it now rather than with the lab (its addresses are free for
    /// the next dnsmasq once this returns): for a lab that serves several
    /// scenarios in turn, as the benchmark's does.
    pub fn stop(self) -> Result<()> {
        self._child.kill()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    /// dnsmasq in router `i`, listening on the router's addresses on the
    /// host's network (198.18.i.1, 2001:db8:i::1) and on `extra` ones
    /// (added to the router's interface).
    pub fn start_resolver(&self, i: usize, extra: &[IpAddr]) -> Result<Dnsmasq> {
        let net = self.network(i).clone();
        let mut listen: Vec<IpAddr> = vec![net.gateway_v4.into(), net.gateway_v6.into()];
        for addr in extra {
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            self.ip_router(
                i,
                &[
                    "addr",
                    "add",
                    &format!("{addr}/{prefix}"),
                    "dev",
                    "eth0",
                    "nodad",
                ],
            )?;
            listen.push(*addr);
        }
        self.start_dnsmasq(Some(i), Resolver::Network(i), &listen, &[])
    }

    /// [`Lab::start_resolver`] without query logging, for load: logging
    /// each query would be most of dnsmasq's work at tens of thousands a
    /// second ([`Dnsmasq::queries`] then sees none).
    pub fn start_resolver_unlogged(&self, i: usize) -> Result<Dnsmasq> {
        let net = self.network(i).clone();
        let listen: Vec<IpAddr> = vec![net.gateway_v4.into(), net.gateway_v6.into()];
        self.start_dnsmasq_logging(Some(i), Resolver::Network(i), &listen, &[], false)
    }

    /// dnsmasq in the host namespace on 127.0.0.53 and ::1: the system's
    /// local stub resolver, as systemd-resolved would be.
    pub fn start_stub_resolver(&self) -> Result<Dnsmasq> {
        let listen = [
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        self.start_dnsmasq(None, Resolver::Stub, &listen, &[])
    }

    /// Starts dnsmasq as `resolver`, listening on `listen`, with `extra`
    /// options on top of the resolver's own (e.g. a DHCP server's, see
    /// [`Lab::use_dhcp`]).
    pub(crate) fn start_dnsmasq(
        &self,
        router: Option<usize>,
        resolver: Resolver,
        listen: &[IpAddr],
        extra: &[String],
    ) -> Result<Dnsmasq> {
        self.start_dnsmasq_logging(router, resolver, listen, extra, true)
    }

    fn start_dnsmasq_logging(
        &self,
        router: Option<usize>,
        resolver: Resolver,
        listen: &[IpAddr],
        extra: &[String],
        log_queries: bool,
    ) -> Result<Dnsmasq> {
        let tag = router.map_or("stub".to_string(), |i| format!("r{i}"));
        let dir = std::env::temp_dir().join(format!("mif-dnsmasq-{}-{tag}", self.host_ns_name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("queries.log");
        let mut args = vec![
            "--keep-in-foreground".to_string(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--bind-interfaces".into(),
            "--user=root".into(),
            format!("--pid-file={}", dir.join("pid").display()),
            format!("--log-facility={}", log.display()),
            format!("--address=/{DNS_NAME}/{}", resolver.answer_v4()),
            format!("--address=/{DNS_NAME}/{}", resolver.answer_v6()),
            format!("--address=/{CORP_DOMAIN}/{}", resolver.answer_v4()),
            format!("--address=/{CORP_DOMAIN}/{}", resolver.answer_v6()),
            format!(
                "--txt-record={BIG_TXT}{}",
                format!(",{}", big_txt_chunk(resolver)).repeat(4)
            ),
        ];
        if let Resolver::Network(_) = resolver {
            for internet in [IpAddr::V4(INTERNET_V4), IpAddr::V6(INTERNET_V6)] {
                args.push(format!("--address=/{CONNECTIVITY_NAME}/{internet}"));
            }
        }
        if log_queries {
            args.push("--log-queries".into());
        }
        args.extend(listen.iter().map(|a| format!("--listen-address={a}")));
        args.extend(extra.iter().cloned());
        let mut cmd = match router {
            Some(i) => self.command_in_router(i, "dnsmasq", &args)?,
            None => self.command_in(None, "dnsmasq", &args)?,
        };
        cmd.stdin(Stdio::null());
        let child = self.spawn(cmd)?;
        let server = Dnsmasq {
            resolver,
            dir,
            log,
            _child: child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.log_text().contains("started") {
            if Instant::now() > deadline {
                bail!("dnsmasq ({tag}) did not start: {}", server.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// `dig +short @server DNS_NAME TYPE` in `cgroup`, one try of 2 s.
    pub fn dig(
        &self,
        cgroup: Option<&Path>,
        server: IpAddr,
        tcp: bool,
        rtype: &str,
    ) -> Result<Output> {
        self.dig_name(cgroup, server, tcp, DNS_NAME, rtype)
    }

    /// `dig +short @server NAME TYPE` in `cgroup`, one try of 2 s.
    pub fn dig_name(
        &self,
        cgroup: Option<&Path>,
        server: IpAddr,
        tcp: bool,
        name: &str,
        rtype: &str,
    ) -> Result<Output> {
        let at = format!("@{server}");
        let mut args = vec![at.as_str(), name, rtype, "+short", "+time=2", "+tries=1"];
        if tcp {
            args.push("+tcp");
        }
        self.output_in(cgroup, "dig", args)
    }

    /// `getent hosts DNS_NAME` in `cgroup`, with a resolv.conf naming only
    /// `nameserver`, bind-mounted over /etc/resolv.conf in a private mount
    /// namespace.
    pub fn getent_hosts(&self, cgroup: Option<&Path>, nameserver: IpAddr) -> Result<Output> {
        let dir = std::env::temp_dir().join(format!("mif-resolv-{}", self.host_ns_name()));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join(format!("resolv-{nameserver}.conf"));
        std::fs::write(
            &conf,
            format!("nameserver {nameserver}\noptions timeout:2 attempts:1\n"),
        )
        .context("writing resolv.conf")?;
        let script = format!(
            "mount --bind {} /etc/resolv.conf && exec getent hosts {DNS_NAME}",
            conf.display()
        );
        let out = self.output_in(
            cgroup,
            "unshare",
            ["-m", "--propagation", "private", "sh", "-c", &script],
        );
        // The mount lived in the command's namespace only: the file can go.
        let _ = std::fs::remove_file(&conf);
        let _ = std::fs::remove_dir(&dir);
        out
    }
}
