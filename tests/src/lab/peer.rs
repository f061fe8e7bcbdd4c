//! The lab's side of `lab-peer`: finding the binary, starting the service
//! in each router, and running clients on the host.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::{Lab, LabChild};

/// The port `lab-peer serve` listens on in every router, TCP and UDP.
pub const PEER_PORT: u16 = 7777;

/// Overrides where the lab looks for the `lab-peer` binary.
pub const LAB_PEER_ENV: &str = "MIF_LAB_PEER";

/// How long a router's peer may take to bind its sockets.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Finds the `lab-peer` binary: `$MIF_LAB_PEER` if set, else next to the
/// running executable or one directory up. Cargo puts integration test
/// binaries in `target/<profile>/deps` and bins in `target/<profile>`, and
/// builds a package's bins before running its integration tests, so the
/// fallback finds it for `cargo test -p mif-tests`.
pub fn lab_peer_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(LAB_PEER_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{LAB_PEER_ENV}={} is not a file", path.display());
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locating the current executable")?;
    let dir = exe
        .parent()
        .context("current executable has no directory")?;
    let found = [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join("lab-peer"))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "lab-peer not found near {}; build it (cargo build -p mif-tests) or set {LAB_PEER_ENV}",
                exe.display()
            )
        });
    found
}

/// How `lab-peer client` talks to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    /// connect(2)ed UDP socket: the route is chosen at connect time.
    Udp,
    /// sendto(2) without connect: the route is chosen per datagram.
    UdpUnconnected,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::UdpUnconnected];

    pub fn arg(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::UdpUnconnected => "udp-unconnected",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.arg())
    }
}

/// What a peer answered: which network it serves, and the source address
/// the connection arrived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReply {
    pub network: String,
    pub source: IpAddr,
}

impl ClientReply {
    /// Parses the peer's `NAME IP` line.
    pub fn parse(line: &str) -> Result<Self> {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(network), Some(source), None) => Ok(Self {
                network: network.to_owned(),
                source: source
                    .parse()
                    .with_context(|| format!("bad source in {line:?}"))?,
            }),
            _ => bail!("malformed peer reply {line:?}"),
        }
    }
}

/// A lab-peer process that ran but failed. Tests that expect a refusal
/// (say, `socket: Operation not permitted`) can downcast the anyhow error
/// to this and look at `stderr`.
#[derive(Debug, Clone)]
pub struct ClientFailure {
    pub status: ExitStatus,
    pub stderr: String,
}

impl fmt::Display for ClientFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lab-peer failed ({}): {}",
            self.status,
            self.stderr.trim()
        )
    }
}

impl std::error::Error for ClientFailure {}

/// Address family for `lab-peer sockmark`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// What the kernel stamped on a fresh UDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockMark {
    /// SO_MARK.
    pub mark: u32,
    /// SO_BINDTOIFINDEX; 0 when the socket is not bound to a device.
    pub ifindex: u32,
}

impl SockMark {
    /// Parses `mark=0x... ifindex=N`.
    pub fn parse(line: &str) -> Result<Self> {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .with_context(|| format!("no {key} in {line:?}"))
        };
        let mark = field("mark")?;
        let mark = u32::from_str_radix(mark.trim_start_matches("0x"), 16)
            .with_context(|| format!("bad mark in {line:?}"))?;
        let ifindex = field("ifindex")?
            .parse()
            .with_context(|| format!("bad ifindex in {line:?}"))?;
        Ok(Self { mark, ifindex })
    }
}

/// `lab-peer client` to the peer at `to` over `proto`.
fn client_args(proto: Proto, to: IpAddr) -> Vec<String> {
    vec![
        "client".to_owned(),
        "--proto".to_owned(),
        proto.arg().to_owned(),
        "--to".to_owned(),
        to.to_string(),
        "--port".to_owned(),
        PEER_PORT.to_string(),
    ]
}

impl Lab {
    /// Runs `lab-peer client` on the host, optionally in `cgroup`, against
    /// the peer at `to`, optionally bound to the source address `bind`.
    pub fn client(
        &self,
        cgroup: Option<&Path>,
        proto: Proto,
        to: IpAddr,
        bind: Option<IpAddr>,
    ) -> Result<ClientReply> {
        let mut args = client_args(proto, to);
        if let Some(bind) = bind {
            args.extend(["--bind".to_owned(), bind.to_string()]);
        }
        let line = self.run_peer(cgroup, &args)?;
        ClientReply::parse(&line)
    }

    /// Runs `lab-peer client` (TCP) on the host in a cgroup it makes itself
    /// at `new_cgroup` (below the lab's, which must not exist yet) as its
    /// first act, so its socket is opened right after the cgroup appears.
    pub fn client_in_new_cgroup(&self, new_cgroup: &Path, to: IpAddr) -> Result<ClientReply> {
        anyhow::ensure!(
            new_cgroup.starts_with(self.cgroup_root()) && !new_cgroup.exists(),
            "{} is no new cgroup of this lab",
            new_cgroup.display()
        );
        let mut args = client_args(Proto::Tcp, to);
        args.extend(["--new-cgroup".to_owned(), new_cgroup.display().to_string()]);
        let line = self.run_peer(None, &args)?;
        ClientReply::parse(&line)
    }

    /// Runs `lab-peer sockmark` on the host, optionally in `cgroup`.
    pub fn sockmark(&self, cgroup: Option<&Path>, family: Family) -> Result<SockMark> {
        let family = match family {
            Family::V4 => "4",
            Family::V6 => "6",
        };
        let line = self.run_peer(cgroup, &["sockmark", "--family", family])?;
        SockMark::parse(&line)
    }

    /// The path of the `lab-peer` binary this lab uses.
    pub fn peer_path(&self) -> &Path {
        &self.peer
    }

    fn run_peer<S: AsRef<std::ffi::OsStr>>(
        &self,
        cgroup: Option<&Path>,
        args: &[S],
    ) -> Result<String> {
        let out = self.output_in(cgroup, &self.peer, args)?;
        if !out.status.success() {
            return Err(ClientFailure {
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Starts `lab-peer serve` in router `i` and waits until it is bound.
    pub(crate) fn start_peer(&self, i: usize) -> Result<()> {
        let net = &self.networks[i];
        self.start_peer_in(&net.router_ns, &net.name)?;
        Ok(())
    }

    /// Starts `lab-peer serve --name NAME` in the lab namespace `ns` and
    /// waits until it is bound. The lab kills it when it drops; scenarios
    /// that remove their namespace earlier kill it themselves.
    ///
    /// The peer's stdin is a pipe the lab never writes to; the peer exits
    /// when it reaches EOF, i.e. when this process dies without running
    /// Drop (SIGKILL, abort), so no peer outlives its test binary.
    pub(crate) fn start_peer_in(&self, ns: &str, name: &str) -> Result<LabChild> {
        let port = PEER_PORT.to_string();
        let args = ["serve", "--name", name, "--port", &port, "--watch-stdin"];
        let mut cmd = self.command_in_netns(ns, &self.peer, args)?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let child = self.spawn(cmd)?;
        let stdout = child.take_stdout().context("peer stdout not piped")?;

        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so a chatty peer can never block on a full pipe.
            lines.for_each(drop);
        });
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(Ok(line))) if line.trim() == "ready" => Ok(child),
            Ok(Some(Ok(line))) => Err(anyhow!("peer of {name} said {line:?} instead of ready")),
            Ok(Some(Err(e))) => Err(e).context(format!("reading peer of {name}")),
            Ok(None) => Err(anyhow!(
                "peer of {name} exited before it was ready ({:?})",
                child.try_wait()
            )),
            Err(_) => Err(anyhow!("peer of {name} not ready within {READY_TIMEOUT:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        let r = ClientReply::parse("wwan0 198.18.1.2\n").unwrap();
        assert_eq!(r.network, "wwan0");
        assert_eq!(r.source, "198.18.1.2".parse::<IpAddr>().unwrap());
        assert!(ClientReply::parse("wwan0").is_err());
        assert!(ClientReply::parse("wwan0 nope").is_err());
        assert!(ClientReply::parse("a 1.2.3.4 extra").is_err());
    }

    #[test]
    fn parses_sockmarks() {
        let m = SockMark::parse("mark=0x1f ifindex=3 dev=wwan0").unwrap();
        assert_eq!(
            m,
            SockMark {
                mark: 0x1f,
                ifindex: 3
            }
        );
        assert!(SockMark::parse("ifindex=3").is_err());
    }
}
