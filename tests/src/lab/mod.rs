//! A disposable multi-homed machine for end-to-end tests.
//!
//! [`Lab::new`] builds, from real kernel objects:
//!
//! - a "host" network namespace, the machine mif runs on;
//! - per network, a "router" namespace joined to the host by a veth pair
//!   whose host end has the given name (`wlan0`, ...), see [`topology`] for
//!   the address plan; every network has a default route in the main
//!   table, network 0 with the lowest metric (so unsteered traffic leaves
//!   by it), and the lab adds no ip rules (steering is mif's job);
//! - in every router, the same "internet" address ([`INTERNET_V4`],
//!   [`INTERNET_V6`]) served by `lab-peer serve`, which answers with the
//!   network's name and the client's source address;
//! - a private cgroup directory under the cgroup2 mount;
//! - a private scratch directory under the system's temp dir, for the
//!   configuration, logs and keys of the programs scenarios start.
//!
//! Scenarios build on that on demand: an OpenVPN tunnel behind network 0
//! ([`Lab::start_vpn`]), a second router on network 0's link announcing a
//! route of its own ([`Lab::add_second_router`]), a network configured by
//! DHCP ([`Lab::use_dhcp`]), packet counters in the routers
//! ([`Lab::count_arrivals`]), more or deprecated addresses on the host's
//! interfaces ([`Lab::add_host_address`], [`Lab::deprecate_host_address`]),
//! connectivity-check HTTP servers for network validation
//! ([`Lab::start_connectivity_servers`]) and networks whose upstream dies
//! while their link stays up ([`Lab::cut_upstream`]).
//!
//! Traffic only ever goes to addresses inside these namespaces. Everything
//! is removed on drop, also while a failing test unwinds: child processes
//! first (they pin namespaces and cgroups), then namespaces, then cgroups
//! deepest-first.
//!
//! The `lab-peer` binary is found through [`lab_peer_path`]: `$MIF_LAB_PEER`
//! if set, else next to the test executable or one directory up.
//!
//! ```no_run
//! use std::net::IpAddr;
//! use mif_tests::lab::{Lab, Proto, INTERNET_V4};
//!
//! # fn main() -> anyhow::Result<()> {
//! let lab = Lab::new(&["wlan0", "wwan0"])?;
//! let browser = lab.create_cgroup("apps/browser")?;
//! // ... start mif with lab.spawn_in(None, mif, args), steering
//! // lab.cgroup_rel() + "/apps/browser" to wwan0 ...
//! let reply = lab.client(Some(&browser), Proto::Tcp, IpAddr::V4(INTERNET_V4), None)?;
//! assert_eq!(reply.network, "wwan0");
//! assert_eq!(reply.source, IpAddr::V4(lab.network(1).host_v4));
//! # Ok(())
//! # }
//! ```

mod addresses;
mod capture;
mod cgroup;
mod dhcp;
mod dns;
mod exec;
mod http;
mod names;
mod netns;
mod peer;
mod radvd;
mod second_router;
mod topology;
mod vpn;
mod wait;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub(crate) use capture::nft;
pub use capture::{ArrivalCounter, Arrivals};
pub use cgroup::{cgroup2_mount, effective_egress_programs};
pub use dhcp::{DhcpLease, DHCP_DOMAIN, DHCP_ONLY_ANSWER, DHCP_ONLY_NAME};
pub use dns::{
    big_txt_chunk, Dnsmasq, Resolver, BIG_TXT, CONNECTIVITY_NAME, CORP_DOMAIN, DNS_NAME,
};
pub use exec::LabChild;
pub use http::{
    Answer, ConnectivityServers, HttpFailure, HttpReply, HttpRequest, CONNECTIVITY_PATH,
    HTTP_CONNECT_TIMEOUT, HTTP_PORT, WHOAMI_PATH,
};
pub use peer::{
    lab_peer_path, ClientFailure, ClientReply, Family, Proto, SockMark, LAB_PEER_ENV, PEER_PORT,
};
pub use radvd::Radvd;
pub use second_router::{SecondRouter, SECOND_ROUTER_PREFIX, SECOND_ROUTER_V4, SECOND_ROUTER_V6};
pub use topology::{
    Network, CONTAINER_BRIDGE_V4, CONTAINER_NET_V4, CONTAINER_PREFIX_LEN, CONTAINER_V4,
    INTERNET_V4, INTERNET_V6,
};
pub use vpn::{
    Vpn, VpnShape, VPN_CLIENT_V4, VPN_CLIENT_V6, VPN_DEFAULT_METRIC, VPN_DEV, VPN_NETWORK_NAME,
    VPN_PEER_V4, VPN_PEER_V6, VPN_PORT, VPN_SERVER_V4,
};

use cgroup::CgroupTree;
use names::LabNames;

/// How long [`Lab::output_in`] lets a program run.
pub const OUTPUT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the tests can build labs at all (namespaces, veths and cgroups
/// all need root).
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Set to `1` (as `.ci/run` does), a lab test fails instead of skipping
/// when not run as root: in CI a skipped test is a test that did not run.
pub const REQUIRE_ROOT_ENV: &str = "MIF_TESTS_REQUIRE_ROOT";

/// Whether skipping a test that needs root is forbidden ([`REQUIRE_ROOT_ENV`]).
pub fn root_required() -> bool {
    std::env::var(REQUIRE_ROOT_ENV).as_deref() == Ok("1")
}

/// Returns early from a test, with a note on stderr, unless running as
/// root; fails it instead when [`REQUIRE_ROOT_ENV`] is `1`.
#[macro_export]
macro_rules! skip_unless_root {
    () => {
        if !$crate::lab::running_as_root() {
            if $crate::lab::root_required() {
                panic!(
                    "{}:{}: the lab needs root, and {}=1 forbids skipping",
                    file!(),
                    line!(),
                    $crate::lab::REQUIRE_ROOT_ENV
                );
            }
            eprintln!("skipping {}:{}: the lab needs root", file!(), line!());
            return;
        }
    };
}

/// One lab; see the module documentation.
#[derive(Debug)]
pub struct Lab {
    host_ns: String,
    networks: Vec<Network>,
    names: LabNames,
    peer: PathBuf,
    cgroups: CgroupTree,
    /// `<temp dir>/mif-lab-<host ns>`: created on first use by
    /// [`Lab::scratch_dir`], removed with the lab.
    scratch: PathBuf,
    /// Namespaces in creation order, so drop deletes exactly what exists.
    /// Behind a lock because scenarios (a VPN server, a second router) add
    /// theirs to a lab that tests only hold by shared reference.
    namespaces: Mutex<Vec<String>>,
    children: Mutex<Vec<LabChild>>,
}

impl Lab {
    /// Builds a lab with one network per host-side interface name, using
    /// the `lab-peer` found by [`lab_peer_path`]. Returns once every
    /// router's peer accepts connections.
    pub fn new(interfaces: &[&str]) -> Result<Self> {
        Self::with_peer(interfaces, lab_peer_path()?)
    }

    /// Like [`Lab::new`] with an explicit `lab-peer` binary, e.g.
    /// `env!("CARGO_BIN_EXE_lab-peer")`.
    pub fn with_peer(interfaces: &[&str], peer: impl Into<PathBuf>) -> Result<Self> {
        topology::check_names(interfaces)?;
        let names = LabNames::next();
        let networks = interfaces
            .iter()
            .enumerate()
            .map(|(i, name)| Network::plan(i, name, names.router_ns(i)))
            .collect::<Result<Vec<_>>>()?;

        // From here on every created object is recorded in `lab` first, so
        // an error half-way drops the lab and removes what exists.
        let host_ns = names.host_ns();
        let mut lab = Lab {
            scratch: std::env::temp_dir().join(format!("mif-lab-{host_ns}")),
            host_ns,
            networks,
            cgroups: CgroupTree::create(&names.cgroup())?,
            names,
            peer: peer.into(),
            namespaces: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
        };
        lab.build().context("building the lab")?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        let host = self.host_ns.clone();
        self.add_namespace(&host)?;
        netns::ip(Some(&host), &["link", "set", "lo", "up"])?;
        for i in 0..self.networks.len() {
            let router = self.networks[i].router_ns.clone();
            self.add_namespace(&router)?;
            self.networks[i].wire(&host)?;
        }
        for network in &self.networks {
            network.add_default_routes(&host)?;
        }
        for i in 0..self.networks.len() {
            self.start_peer(i)?;
        }
        Ok(())
    }

    /// Creates a namespace that the lab deletes when it drops.
    pub(crate) fn add_namespace(&self, name: &str) -> Result<()> {
        let mut namespaces = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
        netns::add(name)?;
        namespaces.push(name.to_owned());
        Ok(())
    }

    /// A unique name for an extra namespace of this lab (`tag` tells
    /// scenarios apart, e.g. `vpn`).
    pub(crate) fn extra_ns_name(&self, tag: &str) -> String {
        self.names.extra_ns(tag)
    }

    /// The lab's scratch directory (scenarios' configuration, logs and
    /// keys); it may not exist yet, and is removed with the lab.
    pub fn scratch_root(&self) -> &Path {
        &self.scratch
    }

    /// `<lab scratch>/<tag>`, created (mode 0700: radvd refuses
    /// configuration in world-writable places) if missing. Everything in
    /// it goes when the lab drops.
    pub(crate) fn scratch_dir(&self, tag: &str) -> Result<PathBuf> {
        let dir = self.scratch.join(tag);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for d in [&self.scratch, &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting {}", d.display()))?;
        }
        Ok(dir)
    }

    /// Name of the host namespace (for `ip -n`).
    pub fn host_ns_name(&self) -> &str {
        &self.host_ns
    }

    /// `/run/netns/<host>`, for setns(2) or `nsenter --net=`.
    pub fn host_ns_path(&self) -> PathBuf {
        netns::ns_path(&self.host_ns)
    }

    pub fn networks(&self) -> &[Network] {
        &self.networks
    }

    /// Network `i`, in the order given to [`Lab::new`]. Panics if out of range.
    pub fn network(&self, i: usize) -> &Network {
        &self.networks[i]
    }

    /// The network whose host-side interface is `name`.
    pub fn network_named(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The lab's own cgroup directory (absolute).
    pub fn cgroup_root(&self) -> &Path {
        self.cgroups.root()
    }

    /// The lab's cgroup relative to the cgroup2 mount, starting with `/`.
    pub fn cgroup_rel(&self) -> String {
        self.cgroups.rel().to_owned()
    }

    /// `mkdir -p` of `rel` (e.g. `apps/browser`) under the lab's cgroup;
    /// returns the absolute path. Removed when the lab drops.
    pub fn create_cgroup(&self, rel: &str) -> Result<PathBuf> {
        self.cgroups.create_child(rel)
    }

    /// A command that starts in the host namespace and, if given, in
    /// `cgroup` (see [`Lab::create_cgroup`]). Spawning it is up to the
    /// caller; [`Lab::spawn`] also registers it for kill-on-drop.
    pub fn command_in<S: AsRef<OsStr>>(
        &self,
        cgroup: Option<&Path>,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Result<Command> {
        exec::command_in_ns(&self.host_ns_path(), cgroup, program, args)
    }

    /// [`Lab::command_in`], running as the unprivileged user `uid`.
    pub fn command_in_as<S: AsRef<OsStr>>(
        &self,
        cgroup: Option<&Path>,
        uid: u32,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Result<Command> {
        exec::command_in_ns_as(&self.host_ns_path(), cgroup, Some(uid), program, args)
    }

    /// A command that starts in router `i`'s namespace.
    pub fn command_in_router<S: AsRef<OsStr>>(
        &self,
        i: usize,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Result<Command> {
        self.command_in_netns(&self.networks[i].router_ns, program, args)
    }

    /// [`Lab::command_in_router`] in `cgroup` (one of the lab's): what it
    /// forks is killed with the lab too, not only the process itself.
    pub fn command_in_router_within<S: AsRef<OsStr>>(
        &self,
        i: usize,
        cgroup: &Path,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Result<Command> {
        exec::command_in_ns(
            &netns::ns_path(&self.networks[i].router_ns),
            Some(cgroup),
            program,
            args,
        )
    }

    /// A command that starts in the lab namespace named `ns` (host, router
    /// or a scenario's own).
    pub(crate) fn command_in_netns<S: AsRef<OsStr>>(
        &self,
        ns: &str,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Result<Command> {
        exec::command_in_ns(&netns::ns_path(ns), None, program, args)
    }

    /// `sysctl -w setting` (`key=value`) inside the lab namespace `ns`:
    /// /proc/sys/net belongs to the namespace of whoever opens it, so this
    /// never touches the machine's own settings.
    pub(crate) fn sysctl_in(&self, ns: &str, setting: &str) -> Result<()> {
        let cmd = self.command_in_netns(ns, "sysctl", ["-qw", setting])?;
        let out = self.output(cmd, OUTPUT_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "sysctl -w {setting} in {ns} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Spawns `cmd` (typically from [`Lab::command_in`]) and kills it when
    /// the lab drops.
    pub fn spawn(&self, mut cmd: Command) -> Result<LabChild> {
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        let child = LabChild::new(child);
        self.lock_children().push(child.clone());
        Ok(child)
    }

    /// Spawns `program` in the host namespace (and `cgroup`), stdin null,
    /// stdout/stderr inherited; killed when the lab drops.
    pub fn spawn_in<S: AsRef<OsStr>>(
        &self,
        cgroup: Option<&Path>,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Result<LabChild> {
        let mut cmd = self.command_in(cgroup, program, args)?;
        cmd.stdin(Stdio::null());
        self.spawn(cmd)
    }

    /// Runs `program` in the host namespace (and `cgroup`) to completion;
    /// kills it and fails after [`OUTPUT_TIMEOUT`]. A non-zero exit is not
    /// an error here: look at `status`.
    pub fn output_in<S: AsRef<OsStr>>(
        &self,
        cgroup: Option<&Path>,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Result<Output> {
        self.output(self.command_in(cgroup, program, args)?, OUTPUT_TIMEOUT)
    }

    /// Runs an already built command to completion with a timeout.
    pub fn output(&self, cmd: Command, timeout: Duration) -> Result<Output> {
        exec::output_with_timeout(cmd, timeout)
    }

    /// `ip -n <host> args...`; returns stdout, fails with ip's stderr.
    pub fn ip_host<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        netns::ip(Some(&self.host_ns), args)
    }

    /// `ip -n <router i> args...`; returns stdout, fails with ip's stderr.
    pub fn ip_router<S: AsRef<OsStr>>(&self, i: usize, args: &[S]) -> Result<String> {
        netns::ip(Some(&self.networks[i].router_ns), args)
    }

    /// Brings network `i`'s uplink back as NetworkManager or DHCP would
    /// after a link flap: link up, the IPv6 address (the kernel flushes IPv6
    /// addresses on link down) and the default routes with their metric.
    pub fn restore_uplink(&self, i: usize) -> Result<()> {
        let net = &self.networks[i];
        self.ip_host(&["link", "set", &net.name, "up"])?;
        let v6 = topology::on_link(net.host_v6);
        // Already there if the link only went down briefly: fine.
        let _ = self.ip_host(&["-6", "addr", "add", &v6, "dev", &net.name, "nodad"]);
        let metric = (100 * (net.index + 1)).to_string();
        for (family, gw) in [
            ("-4", net.gateway_v4.to_string()),
            ("-6", net.gateway_v6.to_string()),
        ] {
            self.ip_host(&[
                family, "route", "replace", "default", "via", &gw, "dev", &net.name, "metric",
                &metric,
            ])?;
        }
        Ok(())
    }

    /// Takes network `i`'s carrier away or gives it back: the router's end
    /// of the veth goes down or up, so the host's interface stays
    /// administratively up but shows NO-CARRIER, as when a cable is pulled
    /// or a modem drops off.
    /// The router's IPv6 gateway address comes back with the carrier (the
    /// kernel flushed it when the router's end went down).
    pub fn set_carrier(&self, i: usize, carrier: bool) -> Result<()> {
        let state = if carrier { "up" } else { "down" };
        self.ip_router(i, &["link", "set", topology::ROUTER_IF, state])?;
        if carrier {
            let gateway = topology::on_link(self.networks[i].gateway_v6);
            let add = [
                "-6",
                "addr",
                "replace",
                &gateway,
                "dev",
                topology::ROUTER_IF,
                "nodad",
            ];
            self.ip_router(i, &add)?;
        }
        Ok(())
    }

    /// The ifindex of a host-namespace interface (e.g. to compare with a
    /// socket's SO_BINDTOIFINDEX).
    pub fn host_ifindex(&self, name: &str) -> Result<u32> {
        let json = self.ip_host(&["-j", "link", "show", "dev", name])?;
        let links: serde_json::Value = serde_json::from_str(&json).context("parsing ip -j")?;
        match links[0]["ifindex"].as_u64() {
            Some(ifindex) => Ok(u32::try_from(ifindex)?),
            None => bail!("no ifindex for {name} in {json}"),
        }
    }

    fn lock_children(&self) -> MutexGuard<'_, Vec<LabChild>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Best-effort teardown: every step runs even if an earlier one failed,
    /// and failures are reported, never panicked on (a panic while a test
    /// is already unwinding would abort the whole test binary).
    fn teardown(&mut self) {
        for child in self.lock_children().drain(..) {
            if let Err(e) = child.kill() {
                eprintln!("lab cleanup: killing pid {}: {e:#}", child.pid());
            }
        }
        // Anything else in the lab's cgroups (e.g. forks of spawned
        // programs) would keep them busy.
        if let Err(e) = self.cgroups.kill_all() {
            eprintln!(
                "lab cleanup: cgroup.kill in {}: {e}",
                self.cgroups.root().display()
            );
        }
        let namespaces = self.namespaces.get_mut().unwrap_or_else(|p| p.into_inner());
        for ns in namespaces.drain(..).rev() {
            if let Err(e) = netns::delete(&ns) {
                eprintln!("lab cleanup: {e:#}");
            }
        }
        if let Err(e) = self.cgroups.remove() {
            eprintln!("lab cleanup: {e:#}");
        }
        match std::fs::remove_dir_all(&self.scratch) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("lab cleanup: removing {}: {e}", self.scratch.display()),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}
