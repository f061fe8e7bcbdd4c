//! A real OpenVPN tunnel out of the lab's host, for tests of how mif treats
//! a VPN: an interface that appears and disappears (with a new ifindex each
//! time), whose own transport must keep leaving by a physical network while
//! what it carries goes through it.
//!
//! ```text
//!   host ns                 router 0 ns                     VPN server ns
//!   wlan0 198.18.0.2 <----> eth0 198.18.0.1
//!                           vpn0 198.51.100.254 <---------> eth0 198.51.100.1
//!   tun0 10.99.0.2  ====== UDP 198.51.100.1:1194 ========>  tun0 10.99.0.1
//!        2001:db8:99::2/64                                       2001:db8:99::1/64
//!                                                           lo 203.0.113.1, 2001:db8:ffff::1
//!                                                              lab-peer "vpn"
//! ```
//!
//! The server lives in a namespace of its own, reached from the host only
//! through network 0's router (which forwards IPv4 for it): its public
//! address [`VPN_SERVER_V4`] is covered by the host's main-table default
//! via wlan0, so the VPN's own traffic crosses wlan0's network as UDP to
//! port [`VPN_PORT`] (see [`super::Arrivals::ExceptVpn`] to count
//! everything else there). Behind the tunnel the server owns the same
//! "internet" addresses as every router, served by a `lab-peer` that
//! reports [`VPN_NETWORK_NAME`]: a reply says whether a connection went
//! through the tunnel, and its source is then the tunnel address
//! [`VPN_CLIENT_V4`] (or [`VPN_CLIENT_V6`]).
//!
//! OpenVPN runs in static-key point-to-point mode (no certificates, one
//! client per server): deprecated, but the shortest real setup, and the
//! kernel side (a POINTOPOINT, NOARP `tun0` without link-layer address,
//! `inet 10.99.0.2 peer 10.99.0.1/32`) is what any OpenVPN gives.
//! The tunnel carries IPv4 and IPv6.

use std::fs::{File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use super::topology::ROUTER_IF;
use super::wait::{wait_until, GaveUp};
use super::{netns, Lab, LabChild, Proto, INTERNET_V4, INTERNET_V6, OUTPUT_TIMEOUT, PEER_PORT};

/// The VPN server's public address, on the far side of router 0.
pub const VPN_SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The UDP port the server listens on; the client's is random (`--nobind`).
pub const VPN_PORT: u16 = 1194;
/// What the peer behind the tunnel reports as its network.
pub const VPN_NETWORK_NAME: &str = "vpn";
/// The tunnel's device, in the host namespace (and the server's).
pub const VPN_DEV: &str = "tun0";
/// The host's end of the tunnel.
pub const VPN_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// The server's end of the tunnel (the client's point-to-point peer).
pub const VPN_PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The host's IPv6 address in the tunnel (a /64 shared with the server).
pub const VPN_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 2);
/// The server's IPv6 address in the tunnel.
pub const VPN_PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 1);
/// The metric of [`VpnShape::DefaultDev`]'s default routes: below every lab
/// network's (100 × (i + 1)), so the tunnel wins in the main table.
pub const VPN_DEFAULT_METRIC: u32 = 50;

/// Router 0's end of the server's link.
const UPLINK_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
/// Router 0's interface towards the server.
const UPLINK_IF: &str = "vpn0";
/// The network whose router the server hides behind.
const VIA_NETWORK: usize = 0;
/// From starting a client until the tunnel carries a connection.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long openvpn may take to clean up after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the client does with the host's routes once the tunnel is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VpnShape {
    /// No routes: `tun0` and its addresses only (reachable are the tunnel
    /// peer's addresses); an application must be steered into it.
    Split,
    /// `--redirect-gateway def1 ipv6`: `0.0.0.0/1` and `128.0.0.0/1` via
    /// 10.99.0.1, `::/3`, `2000::/4`, `3000::/4` and `fc00::/7` via
    /// `tun0`, and a host route to the server via wlan0's router, as most
    /// commercial VPNs configure.
    FullTunnel,
    /// Once the tunnel is up, `default dev tun0` (IPv4 and IPv6) in the main
    /// table with [`VPN_DEFAULT_METRIC`], as pppd and raw-IP modems install
    /// it, plus the host route to the server that keeps the tunnel's own
    /// packets out of it.
    DefaultDev,
}

/// One openvpn process and its log.
#[derive(Debug)]
struct Openvpn {
    child: LabChild,
    log: PathBuf,
}

impl Openvpn {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A [`GaveUp`] error if the process has exited, with its log.
    fn check_alive(&self, role: &str) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(GaveUp(format!(
                "openvpn {role} exited ({status}); its log:\n{}",
                self.log_text()
            ))
            .into()),
        }
    }

    /// SIGTERM (openvpn then removes the routes and addresses it added),
    /// SIGKILL if it takes too long.
    fn stop(&self) -> Result<()> {
        self.child.signal(Signal::SIGTERM)?;
        if self.child.wait_timeout(STOP_TIMEOUT)?.is_none() {
            self.child.kill()?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Processes {
    /// Counts (re)starts, to give every process a log of its own.
    generation: u32,
    server: Option<Openvpn>,
    client: Option<Openvpn>,
}

/// A VPN started by [`Lab::start_vpn`]. Dropping it stops the client (so
/// its routes go), the server and the server's namespace.
#[derive(Debug)]
pub struct Vpn<'lab> {
    lab: &'lab Lab,
    shape: VpnShape,
    /// The server's namespace.
    ns: String,
    dir: PathBuf,
    peer: Option<LabChild>,
    processes: Mutex<Processes>,
}

impl Lab {
    /// Builds the VPN server behind router 0 (see the module
    /// documentation), starts the client in the host namespace and returns
    /// once the tunnel carries TCP to the server (and, for the shapes that
    /// route into it, to the "internet"). One VPN per lab at a time.
    pub fn start_vpn(&self, shape: VpnShape) -> Result<Vpn<'_>> {
        let ns = self.extra_ns_name("vpn");
        self.add_namespace(&ns)
            .context("creating the VPN server's namespace")?;
        // From here on, dropping `vpn` undoes everything.
        let mut vpn = Vpn {
            lab: self,
            shape,
            dir: self.scratch_dir("vpn")?,
            ns,
            peer: None,
            processes: Mutex::new(Processes::default()),
        };
        vpn.wire()
            .context("wiring the VPN server behind router 0")?;
        vpn.peer = Some(
            self.start_peer_in(&vpn.ns, VPN_NETWORK_NAME)
                .context("starting the VPN server's peer")?,
        );
        vpn.generate_key()?;
        vpn.start_server()?;
        vpn.start_client()?;
        Ok(vpn)
    }
}

impl Vpn<'_> {
    pub fn shape(&self) -> VpnShape {
        self.shape
    }

    /// The tunnel's device in the host namespace.
    pub fn device(&self) -> &'static str {
        VPN_DEV
    }

    /// The host's tunnel address, [`VPN_CLIENT_V4`].
    pub fn client_v4(&self) -> Ipv4Addr {
        VPN_CLIENT_V4
    }

    /// The server's tunnel address, [`VPN_PEER_V4`].
    pub fn server_tunnel_v4(&self) -> Ipv4Addr {
        VPN_PEER_V4
    }

    /// The host's IPv6 tunnel address, [`VPN_CLIENT_V6`].
    pub fn client_v6(&self) -> Ipv6Addr {
        VPN_CLIENT_V6
    }

    /// The server's IPv6 tunnel address, [`VPN_PEER_V6`].
    pub fn server_tunnel_v6(&self) -> Ipv6Addr {
        VPN_PEER_V6
    }

    /// Where the encrypted traffic goes: [`VPN_SERVER_V4`], UDP port
    /// [`VPN_PORT`].
    pub fn server_public_v4(&self) -> Ipv4Addr {
        VPN_SERVER_V4
    }

    /// The server's namespace (e.g. for `ip -n`).
    pub fn server_ns_name(&self) -> &str {
        &self.ns
    }

    /// The running client's pid, if any.
    pub fn client_pid(&self) -> Option<u32> {
        self.lock().client.as_ref().map(|c| c.child.pid())
    }

    /// The current client's log ("" when stopped).
    pub fn client_log(&self) -> String {
        self.lock()
            .client
            .as_ref()
            .map(Openvpn::log_text)
            .unwrap_or_default()
    }

    /// The current server's log.
    pub fn server_log(&self) -> String {
        self.lock()
            .server
            .as_ref()
            .map(Openvpn::log_text)
            .unwrap_or_default()
    }

    /// Stops the client as a user disconnecting would (SIGTERM: openvpn
    /// removes its routes) and returns once `tun0` is gone; for
    /// [`VpnShape::DefaultDev`] also removes the host route to the server.
    /// Does nothing if the client is not running.
    pub fn stop_client(&self) -> Result<()> {
        let Some(client) = self.lock().client.take() else {
            return Ok(());
        };
        client
            .stop()
            .with_context(|| format!("stopping the VPN client; log:\n{}", client.log_text()))?;
        wait_until("tun0 to disappear", STOP_TIMEOUT, || {
            match self.lab.ip_host(&["link", "show", "dev", VPN_DEV]) {
                Ok(_) => bail!("{VPN_DEV} still exists"),
                Err(_) => Ok(()),
            }
        })?;
        if self.shape == VpnShape::DefaultDev {
            self.lab
                .ip_host(&["-4", "route", "del", &format!("{VPN_SERVER_V4}/32")])
                .context("removing the host route to the VPN server")?;
        }
        Ok(())
    }

    /// Connects anew: stops the client if it runs, restarts the server (in
    /// static-key mode there is no handshake, and a server that saw the old
    /// client drops the new one's packets as replays when both started in
    /// the same second), starts a new client and re-applies the shape.
    /// Returns once the tunnel is ready again; `tun0` then has a new
    /// ifindex.
    pub fn restart_client(&self) -> Result<()> {
        self.stop_client()?;
        if let Some(server) = self.lock().server.take() {
            server.stop().context("stopping the VPN server")?;
        }
        self.start_server()?;
        self.start_client()
    }

    fn lock(&self) -> MutexGuard<'_, Processes> {
        self.processes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The server's link to router 0, its addresses and routes, and IPv4
    /// forwarding in router 0.
    fn wire(&self) -> Result<()> {
        let lab = self.lab;
        let server = Some(self.ns.as_str());
        lab.ip_router(
            VIA_NETWORK,
            &[
                "link", "add", UPLINK_IF, "type", "veth", "peer", "name", ROUTER_IF, "netns",
                &self.ns,
            ],
        )?;
        let uplink = format!("{UPLINK_V4}/24");
        lab.ip_router(VIA_NETWORK, &["addr", "add", &uplink, "dev", UPLINK_IF])?;
        lab.ip_router(VIA_NETWORK, &["link", "set", UPLINK_IF, "up"])?;
        let router_ns = lab.network(VIA_NETWORK).router_ns.clone();
        lab.sysctl_in(&router_ns, "net.ipv4.conf.all.forwarding=1")?;

        let public = format!("{VPN_SERVER_V4}/24");
        netns::ip(server, &["addr", "add", &public, "dev", ROUTER_IF])?;
        netns::serve_on_loopback(&self.ns, INTERNET_V4, INTERNET_V6)?;
        netns::ip(server, &["link", "set", ROUTER_IF, "up"])?;
        // Back to the host (and anything else) through router 0.
        let uplink = UPLINK_V4.to_string();
        netns::ip(server, &["route", "add", "default", "via", &uplink])?;
        Ok(())
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("static.key")
    }

    fn generate_key(&self) -> Result<()> {
        let key = self.key_path();
        let mut cmd = std::process::Command::new("openvpn");
        cmd.arg("--genkey").arg("secret").arg(&key);
        let out = self.lab.output(cmd, OUTPUT_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "openvpn --genkey secret {} failed ({}): {}",
                key.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Spawns openvpn with `role_args` in the lab namespace `ns`, with the
    /// options both ends share; everything it says goes to its log.
    fn spawn_openvpn(&self, ns: &str, role: &str, role_args: &[String]) -> Result<Openvpn> {
        let generation = {
            let mut processes = self.lock();
            processes.generation += 1;
            processes.generation
        };
        let log = self.dir.join(format!("{role}-{generation}.log"));
        let pid = self.dir.join(format!("{role}-{generation}.pid"));
        let path = |p: &PathBuf| {
            p.to_str()
                .map(str::to_owned)
                .context("temp dir is not UTF-8")
        };
        let mut args: Vec<String> = [
            "--dev",
            VPN_DEV,
            "--dev-type",
            "tun",
            "--proto",
            "udp4",
            "--cipher",
            "AES-256-CBC",
            "--verb",
            "3",
        ]
        .map(str::to_owned)
        .into();
        args.extend(["--secret".into(), path(&self.key_path())?]);
        args.extend(["--writepid".into(), path(&pid)?]);
        // Appending, because stdout and stderr (where openvpn complains
        // before it opens its log) go to the same file.
        args.extend(["--log-append".into(), path(&log)?]);
        args.extend(role_args.iter().cloned());

        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = self.lab.command_in_netns(ns, "openvpn", &args)?;
        cmd.stdin(Stdio::null())
            .stdout(File::try_clone(&file)?)
            .stderr(file);
        let child = self
            .lab
            .spawn(cmd)
            .with_context(|| format!("starting the VPN {role}"))?;
        Ok(Openvpn { child, log })
    }

    /// Starts the server and waits until its UDP socket is bound.
    fn start_server(&self) -> Result<()> {
        let args = [
            "--port".to_owned(),
            VPN_PORT.to_string(),
            // The client has no fixed port (--nobind).
            "--float".to_owned(),
            "--ifconfig".to_owned(),
            VPN_PEER_V4.to_string(),
            VPN_CLIENT_V4.to_string(),
            "--ifconfig-ipv6".to_owned(),
            format!("{VPN_PEER_V6}/64"),
            VPN_CLIENT_V6.to_string(),
        ];
        let server = self.spawn_openvpn(&self.ns, "server", &args)?;
        let ready = wait_until("the VPN server to listen", READY_TIMEOUT, || {
            server.check_alive("server")?;
            // Logged once the socket is bound, after tun0 is configured.
            if server.log_text().contains("link local (bound)") {
                Ok(())
            } else {
                bail!("no \"link local (bound)\" in its log")
            }
        });
        let log = server.log_text();
        self.lock().server = Some(server);
        ready.with_context(|| format!("VPN server log:\n{log}"))
    }

    /// Starts a client, applies the shape and waits until the tunnel
    /// carries connections.
    fn start_client(&self) -> Result<()> {
        let mut args = vec![
            "--remote".to_owned(),
            VPN_SERVER_V4.to_string(),
            VPN_PORT.to_string(),
            "--nobind".to_owned(),
            "--ifconfig".to_owned(),
            VPN_CLIENT_V4.to_string(),
            VPN_PEER_V4.to_string(),
            "--ifconfig-ipv6".to_owned(),
            format!("{VPN_CLIENT_V6}/64"),
            VPN_PEER_V6.to_string(),
        ];
        if self.shape == VpnShape::FullTunnel {
            args.extend(["--redirect-gateway", "def1", "ipv6"].map(str::to_owned));
        }
        let client = self.spawn_openvpn(self.lab.host_ns_name(), "client", &args)?;
        let ready = self.await_client(&client);
        let log = client.log_text();
        self.lock().client = Some(client);
        ready.with_context(|| {
            format!(
                "VPN client ({:?}) not ready; client log:\n{log}\nserver log:\n{}",
                self.shape,
                self.server_log()
            )
        })
    }

    fn await_client(&self, client: &Openvpn) -> Result<()> {
        let lab = self.lab;
        wait_until("tun0 to get its address", READY_TIMEOUT, || {
            client.check_alive("client")?;
            let addrs = lab.ip_host(&["-4", "addr", "show", "dev", VPN_DEV])?;
            if addrs.contains(&format!("inet {VPN_CLIENT_V4} ")) {
                Ok(())
            } else {
                bail!("{VPN_DEV} has no {VPN_CLIENT_V4}: {addrs}")
            }
        })?;
        if self.shape == VpnShape::DefaultDev {
            self.add_default_dev()?;
        }
        // What must answer through the tunnel: its far end always, and the
        // "internet" when the shape routes there.
        let mut probes: Vec<(IpAddr, IpAddr)> = vec![
            (VPN_PEER_V4.into(), VPN_CLIENT_V4.into()),
            (VPN_PEER_V6.into(), VPN_CLIENT_V6.into()),
        ];
        if self.shape != VpnShape::Split {
            probes.push((INTERNET_V4.into(), VPN_CLIENT_V4.into()));
            probes.push((INTERNET_V6.into(), VPN_CLIENT_V6.into()));
        }
        for (to, source) in probes {
            let what = format!("TCP to {to}:{PEER_PORT} through the tunnel");
            wait_until(&what, READY_TIMEOUT, || {
                client.check_alive("client")?;
                let reply = lab.client(None, Proto::Tcp, to, None)?;
                if reply.network == VPN_NETWORK_NAME && reply.source == source {
                    Ok(())
                } else {
                    bail!("answered by {reply:?}, expected {VPN_NETWORK_NAME} from {source}")
                }
            })?;
        }
        Ok(())
    }

    /// [`VpnShape::DefaultDev`]'s routes: first the host route that keeps
    /// the encrypted packets on wlan0, then the defaults into the tunnel.
    fn add_default_dev(&self) -> Result<()> {
        let lab = self.lab;
        let uplink = lab.network(VIA_NETWORK);
        let server = format!("{VPN_SERVER_V4}/32");
        let gateway = uplink.gateway_v4.to_string();
        lab.ip_host(&[
            "-4",
            "route",
            "replace",
            &server,
            "via",
            &gateway,
            "dev",
            &uplink.name,
        ])?;
        let metric = VPN_DEFAULT_METRIC.to_string();
        for family in ["-4", "-6"] {
            lab.ip_host(&[
                family, "route", "add", "default", "dev", VPN_DEV, "metric", &metric,
            ])?;
        }
        Ok(())
    }
}

impl Drop for Vpn<'_> {
    /// Best effort, like the lab's own teardown: report, never panic.
    fn drop(&mut self) {
        if let Err(e) = self.stop_client() {
            eprintln!("VPN cleanup: {e:#}");
        }
        let processes = self.processes.get_mut().unwrap_or_else(|p| p.into_inner());
        let children = processes
            .server
            .take()
            .map(|s| s.child)
            .into_iter()
            .chain(self.peer.take());
        for child in children {
            if let Err(e) = child.kill() {
                eprintln!("VPN cleanup: killing pid {}: {e:#}", child.pid());
            }
        }
        // Its veth (and router 0's end) goes with it.
        if let Err(e) = netns::delete(&self.ns) {
            eprintln!("VPN cleanup: {e:#}");
        }
    }
}
