//! A network whose IPv4 configuration comes from DHCP, as on most Wi-Fi
//! and Ethernet links: the host's interface has no static IPv4 address or
//! route; a real DHCP client (ISC dhclient, Debian's `isc-dhcp-client`)
//! leases an address from dnsmasq in the router, which also hands out the
//! router, a DNS server and a domain. mif is expected to learn the
//! network's DNS server and domain from dhclient's lease file
//! ([`DhcpLease::lease_file`]), the way it would on a machine without
//! NetworkManager.
//!
//! The DHCP server is the network's resolver too (the lab's usual
//! [`Resolver::Network`], answering [`super::DNS_NAME`] and friends), and
//! also answers [`DHCP_ONLY_NAME`], so a test can tell that a query went
//! to the DNS server the lease named.
//!
//! dhclient runs with a script of the lab's own instead of
//! `/sbin/dhclient-script`: it sets the address and the default route (with
//! the metric the lab gives that network statically, 100 × (i + 1)) and
//! nothing else; above all it never writes `/etc/resolv.conf`, which
//! belongs to the machine, not to the lab. Its configuration, lease file
//! and log live in the lab's scratch directory.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::wait::{wait_until, GaveUp};
use super::{Dnsmasq, Lab, LabChild, Resolver};

/// The domain the DHCP server hands out (option 15).
pub const DHCP_DOMAIN: &str = "dhcp.lab";
/// A name only the DHCP network's DNS server answers, with
/// [`DHCP_ONLY_ANSWER`].
pub const DHCP_ONLY_NAME: &str = "dhcp-only.lab";
/// The A record of [`DHCP_ONLY_NAME`] (no lab resolver gives it to
/// anything else).
pub const DHCP_ONLY_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);

/// The pool, as last octets in 198.18.i.0/24: apart from the static plan's
/// .1 (router) and .2 (host), so an address from it can only be a lease.
const POOL: (u8, u8) = (100, 199);
/// Long enough that no renewal rewrites the lease file during a test.
const LEASE_TIME: &str = "1h";
/// From starting dhclient until the address, the route and the lease file
/// are there. dhclient's first DISCOVER goes out within a second or two.
const LEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// The lab's dhclient script: address and default route from the `new_*`
/// variables, removal on expiry; `@METRIC@` is replaced per network.
const SCRIPT: &str = r#"#!/bin/sh
# Written by the mif test lab for dhclient -sf. Configures the leased
# address and default route only; never touches /etc/resolv.conf.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
case "$reason" in
PREINIT)
    ip link set dev "$interface" up
    ;;
BOUND|RENEW|REBIND|REBOOT)
    if [ -n "$old_ip_address" ] && [ "$old_ip_address" != "$new_ip_address" ]; then
        ip -4 addr flush dev "$interface"
    fi
    ip -4 addr replace "$new_ip_address/$new_subnet_mask" dev "$interface" || exit 1
    for router in $new_routers; do
        ip -4 route replace default via "$router" dev "$interface" metric @METRIC@ || exit 1
        break
    done
    ;;
EXPIRE|FAIL|RELEASE|STOP)
    ip -4 route flush dev "$interface"
    ip -4 addr flush dev "$interface"
    ;;
esac
exit 0
"#;

/// dhclient.conf: only what this lab's networks offer, so that neither the
/// machine's /etc/dhcp/dhclient.conf nor dhclient's defaults matter.
const CLIENT_CONF: &str = "request subnet-mask, broadcast-address, routers, \
                           domain-name, domain-name-servers;\n";

/// A lease obtained by [`Lab::use_dhcp`]. Dropping it kills dhclient (the
/// address stays, as when a DHCP client crashes) and the DHCP server.
#[derive(Debug)]
pub struct DhcpLease {
    interface: String,
    address: Ipv4Addr,
    prefix_len: u8,
    router: Ipv4Addr,
    pool: (Ipv4Addr, Ipv4Addr),
    lease_file: PathBuf,
    log: PathBuf,
    client: LabChild,
    server: Dnsmasq,
}

impl DhcpLease {
    /// The host-side interface (`wlan0`).
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The leased address, as configured on the interface.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The router the server hands out (option 3), the default route's
    /// gateway: the network's router, 198.18.i.1.
    pub fn router(&self) -> Ipv4Addr {
        self.router
    }

    /// The DNS server the server hands out (option 6): the router too.
    pub fn dns_server(&self) -> Ipv4Addr {
        self.router
    }

    /// The domain the server hands out (option 15), [`DHCP_DOMAIN`].
    pub fn domain(&self) -> &'static str {
        DHCP_DOMAIN
    }

    /// First and last address of the server's pool.
    pub fn pool(&self) -> (Ipv4Addr, Ipv4Addr) {
        self.pool
    }

    /// dhclient's lease file (`-lf`), in its own text format.
    pub fn lease_file(&self) -> &Path {
        &self.lease_file
    }

    /// The lease file's contents now.
    pub fn lease_text(&self) -> String {
        std::fs::read_to_string(&self.lease_file).unwrap_or_default()
    }

    /// dhclient's pid.
    pub fn client_pid(&self) -> u32 {
        self.client.pid()
    }

    /// What dhclient printed so far.
    pub fn client_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The DHCP server, which is also the network's resolver (its query
    /// log shows who asked).
    pub fn server(&self) -> &Dnsmasq {
        &self.server
    }
}

impl Drop for DhcpLease {
    fn drop(&mut self) {
        // The server's process dies with the lab (dnsmasq is not killed
        // by Dnsmasq's drop); dhclient at least stops renewing now.
        if let Err(e) = self.client.kill() {
            eprintln!("DHCP cleanup: killing dhclient: {e:#}");
        }
    }
}

impl Lab {
    /// Turns network `i` into a DHCP-only IPv4 network: removes the host's
    /// static IPv4 address and routes on it, starts dnsmasq in router `i`
    /// serving DHCP (pool 198.18.i.100-199, router and DNS server
    /// 198.18.i.1, domain [`DHCP_DOMAIN`]) and DNS, then dhclient on the
    /// host. Returns once the interface has its lease and the default route,
    /// and the lease file holds the lease.
    ///
    /// From then on `network(i).host_v4` no longer names the host's
    /// address: use [`DhcpLease::address`]. IPv6 stays static. Router `i`
    /// then already runs a resolver: do not also call
    /// [`Lab::start_resolver`] for it.
    pub fn use_dhcp(&self, i: usize) -> Result<DhcpLease> {
        self.use_dhcp_forcing(i, &[])
    }

    /// [`Lab::use_dhcp`], the server also sending each of `options`
    /// (dnsmasq's `CODE,VALUE`, e.g. `114,https://portal.lab/api`: no
    /// quotes, dnsmasq would send them as part of the string) in
    /// every reply whether dhclient asked for it or not
    /// (`--dhcp-option-force`): dhclient's request list is the lab's own.
    pub fn use_dhcp_forcing(&self, i: usize, options: &[&str]) -> Result<DhcpLease> {
        let net = self.network(i).clone();
        let [a, b, c, _] = net.gateway_v4.octets();
        let pool = (
            Ipv4Addr::new(a, b, c, POOL.0),
            Ipv4Addr::new(a, b, c, POOL.1),
        );
        let router = net.gateway_v4;

        // What the static plan configured goes; the connected route goes
        // with the address.
        self.ip_host(&["-4", "route", "flush", "dev", &net.name])?;
        self.ip_host(&["-4", "addr", "flush", "dev", &net.name])?;

        let dir = self.scratch_dir(&format!("dhcp-{}", net.name))?;
        let server_leases = dir.join("dnsmasq.leases");
        let mut dhcp_args = vec![
            format!(
                "--dhcp-range={},{},255.255.255.0,{LEASE_TIME}",
                pool.0, pool.1
            ),
            format!("--dhcp-option=option:router,{router}"),
            format!("--dhcp-option=option:dns-server,{router}"),
            format!("--dhcp-option=option:domain-name,{DHCP_DOMAIN}"),
            format!("--dhcp-leasefile={}", server_leases.display()),
            // Answers a REQUEST for an address it has no record of (say,
            // from an earlier lease file) at once instead of ignoring it.
            "--dhcp-authoritative".into(),
            "--log-dhcp".into(),
            format!("--address=/{DHCP_ONLY_NAME}/{DHCP_ONLY_ANSWER}"),
        ];
        dhcp_args.extend(options.iter().map(|o| format!("--dhcp-option-force={o}")));
        let listen = [IpAddr::V4(router), IpAddr::V6(net.gateway_v6)];
        let server = self
            .start_dnsmasq(Some(i), Resolver::Network(i), &listen, &dhcp_args)
            .with_context(|| format!("starting the DHCP server of {}", net.name))?;

        let script = dir.join("dhclient-script");
        let metric = (100 * (i + 1)).to_string();
        std::fs::write(&script, SCRIPT.replace("@METRIC@", &metric))
            .with_context(|| format!("writing {}", script.display()))?;
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let conf = dir.join("dhclient.conf");
        std::fs::write(&conf, CLIENT_CONF)
            .with_context(|| format!("writing {}", conf.display()))?;
        let lease_file = dir.join("dhclient.leases");
        let pid = dir.join("dhclient.pid");
        let log = dir.join("dhclient.log");

        let mut args: Vec<&std::ffi::OsStr> = vec!["-4".as_ref(), "-v".as_ref(), "-d".as_ref()];
        for (flag, path) in [
            ("-cf", &conf),
            ("-sf", &script),
            ("-lf", &lease_file),
            ("-pf", &pid),
        ] {
            args.extend([flag.as_ref(), path.as_os_str()]);
        }
        args.push(net.name.as_ref());
        let mut cmd = self.command_in(None, "dhclient", &args)?;
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let client = self.spawn(cmd).context("starting dhclient")?;

        let mut lease = DhcpLease {
            interface: net.name.clone(),
            address: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            router,
            pool,
            lease_file,
            log,
            client,
            server,
        };
        let (address, prefix_len) = wait_until(
            &format!("a DHCP lease on {}", net.name),
            LEASE_TIMEOUT,
            || self.check_lease(&lease),
        )
        .with_context(|| {
            format!(
                "dhclient log:\n{}\nlease file:\n{}\ndnsmasq log:\n{}",
                lease.client_log(),
                lease.lease_text(),
                lease.server.log_text()
            )
        })?;
        lease.address = address;
        lease.prefix_len = prefix_len;
        Ok(lease)
    }

    /// The leased address once the interface has one from the pool, the
    /// default route via the router and the lease file the lease.
    fn check_lease(&self, lease: &DhcpLease) -> Result<(Ipv4Addr, u8)> {
        if let Some(status) = lease.client.try_wait()? {
            return Err(GaveUp(format!("dhclient exited ({status})")).into());
        }
        let json = self.ip_host(&["-j", "-4", "addr", "show", "dev", &lease.interface])?;
        let parsed: serde_json::Value =
            serde_json::from_str(&json).with_context(|| format!("parsing ip -j: {json}"))?;
        let (address, prefix_len) = parsed[0]["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|a| {
                let address: Ipv4Addr = a["local"].as_str()?.parse().ok()?;
                let prefix_len = u8::try_from(a["prefixlen"].as_u64()?).ok()?;
                Some((address, prefix_len))
            })
            .with_context(|| format!("no IPv4 address on {} yet", lease.interface))?;
        if !(lease.pool.0..=lease.pool.1).contains(&address) {
            bail!("{address} on {} is not from the pool", lease.interface);
        }
        let routes = self.ip_host(&["-4", "route", "show", "default", "dev", &lease.interface])?;
        if !routes.contains(&format!("via {}", lease.router)) {
            bail!("no default route via {} yet: {routes:?}", lease.router);
        }
        if !lease
            .lease_text()
            .contains(&format!("fixed-address {address};"))
        {
            bail!("the lease file does not hold {address} yet");
        }
        Ok((address, prefix_len))
    }
}
