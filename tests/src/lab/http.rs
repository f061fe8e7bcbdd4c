//! What network validation talks to: a connectivity-check HTTP server in
//! every network, switchable between a working network, a captive portal
//! and a portal answering in place, and a switch that kills a network's
//! upstream while its link stays up.
//!
//! [`Lab::start_connectivity_servers`] starts `lab-peer http` (see
//! `src/bin/lab_peer/http.rs`) in every router, on port [`HTTP_PORT`] of
//! the internet addresses ([`INTERNET_V4`], [`INTERNET_V6`]): the same URL,
//! say `http://203.0.113.1/generate_204`, reaches whichever network's server
//! the request was routed to, as the one probe URL of a real system does.
//! Each server logs every request it got (source address, method, path,
//! Host header) before answering it, so a test can tell exactly which
//! network a probe left by: [`ConnectivityServers::requests`]. With a
//! resolver started in a network ([`Lab::start_resolver`]),
//! [`CONNECTIVITY_NAME`](super::CONNECTIVITY_NAME) resolves to the internet addresses there, for a
//! probe URL whose name must be resolved through that network.
//!
//! [`Lab::cut_upstream`] makes a network's internet go silent: its router
//! drops (no reset, no ICMP error) every packet from the host's link to the
//! internet addresses, whatever the protocol, so TCP handshakes time out,
//! as behind a modem whose line is down. Everything else stays: the host's
//! link, addresses and routes, the router's own addresses (ARP and
//! neighbour discovery keep answering, the gateway looks fine to the
//! kernel) and whatever else the router serves (its resolver).
//!
//! [`Lab::http_get`] is a plain HTTP client (curl) on the host, optionally
//! in a cgroup and bound to an interface.
//!
//! The servers are killed when the [`ConnectivityServers`] drops, or with
//! the lab; their state directories are in the lab's scratch directory.
//! The upstream switch is an nftables table in the router's namespace,
//! gone with it.

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::topology::ROUTER_IF;
use super::{Lab, LabChild, INTERNET_V4, INTERNET_V6};

/// The port of every connectivity-check server: HTTP's own, so a probe URL
/// needs none.
pub const HTTP_PORT: u16 = 80;

/// The path Android's probe asks for; any path gets the same answer, this
/// one is only a convention for tests.
pub const CONNECTIVITY_PATH: &str = "/generate_204";

/// The path the servers always answer with `NETWORK SOURCE` (see
/// [`Lab::http_get`]).
pub const WHOAMI_PATH: &str = "/whoami";

/// How long [`Lab::http_get`] waits for a connection, and for the whole
/// exchange twice that.
pub const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a server may take to bind its sockets.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The nftables table of [`Lab::cut_upstream`]. One per router, and the
/// router's namespace belongs to one lab: a fixed name is what makes
/// cutting twice replace the table rather than add a second.
const CUT_TABLE: &str = "mif_cut_upstream";

/// State directories of one test binary never share a name, so servers
/// started again in one lab never read the previous ones' files.
static NEXT_SERVERS: AtomicU32 = AtomicU32::new(0);

/// What a network's server answers to everything but [`WHOAMI_PATH`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `204 No Content`: the network reaches the internet.
    NoContent,
    /// `302 Found` to this URL: a captive portal.
    Redirect(String),
    /// `200 OK` with an HTML page: a portal that answers in place.
    Page,
}

impl Answer {
    /// The line `lab-peer http` reads from its answer file.
    fn file_text(&self) -> String {
        match self {
            Answer::NoContent => "204\n".to_owned(),
            Answer::Redirect(url) => format!("redirect {url}\n"),
            Answer::Page => "page\n".to_owned(),
        }
    }
}

/// One request a server logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The client's address, as the server saw it.
    pub source: IpAddr,
    pub method: String,
    /// The request target as sent (path and query).
    pub path: String,
    /// The Host header, if the request had one.
    pub host: Option<String>,
}

/// The servers started by [`Lab::start_connectivity_servers`], one per
/// network, in the lab's network order.
#[derive(Debug)]
pub struct ConnectivityServers<'lab> {
    lab: &'lab Lab,
    servers: Vec<Server>,
}

#[derive(Debug)]
struct Server {
    /// Holds `answer` and `requests.log`.
    dir: PathBuf,
    child: LabChild,
}

/// What [`Lab::http_get`] got: the status, the `Location` of a redirect
/// (not followed), and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// curl ran and failed (no answer, refused, reset). Tests that expect a
/// failure downcast the anyhow error to this and look at the exit code.
#[derive(Debug, Clone)]
pub struct HttpFailure {
    pub status: ExitStatus,
    pub stderr: String,
}

impl HttpFailure {
    /// Whether curl gave up waiting (exit code 28), as when packets vanish,
    /// rather than being refused (7) or reset (56).
    pub fn timed_out(&self) -> bool {
        self.status.code() == Some(28)
    }
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "curl failed ({}): {}", self.status, self.stderr.trim())
    }
}

impl std::error::Error for HttpFailure {}

impl Lab {
    /// Starts a connectivity-check server in every router (see the module
    /// documentation), answering [`Answer::NoContent`] until told
    /// otherwise. Returns once every one of them listens.
    pub fn start_connectivity_servers(&self) -> Result<ConnectivityServers<'_>> {
        let n = NEXT_SERVERS.fetch_add(1, Ordering::Relaxed);
        let mut servers = ConnectivityServers {
            lab: self,
            servers: Vec::new(),
        };
        // Pushed one by one: if a later one fails, dropping `servers` kills
        // the ones already running.
        for i in 0..self.networks().len() {
            let server = self
                .start_http_server(i, n)
                .with_context(|| format!("starting {}'s HTTP server", self.network(i).name))?;
            servers.servers.push(server);
        }
        Ok(servers)
    }

    fn start_http_server(&self, i: usize, n: u32) -> Result<Server> {
        let dir = self.scratch_dir(&format!("http{n}-r{i}"))?;
        let state = dir.to_str().context("scratch dir is not UTF-8")?;
        let v4 = format!("{INTERNET_V4}:{HTTP_PORT}");
        let v6 = format!("[{INTERNET_V6}]:{HTTP_PORT}");
        let name = &self.network(i).name;
        let args = [
            "http",
            "--name",
            name,
            "--listen",
            &v4,
            "--listen",
            &v6,
            "--state",
            state,
            // EOF on stdin ends the server even if this process dies
            // without running Drop.
            "--watch-stdin",
        ];
        let mut cmd = self.command_in_router(i, self.peer_path(), args)?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let child = self.spawn(cmd)?;
        let server = Server { dir, child };
        let stdout = server.child.take_stdout().context("stdout not piped")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep draining so the server never blocks on a full pipe.
            lines.for_each(drop);
        });
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(Ok(line))) if line.trim() == "ready" => Ok(server),
            Ok(Some(Ok(line))) => bail!("said {line:?} instead of ready"),
            Ok(Some(Err(e))) => Err(e).context("reading its stdout"),
            Ok(None) => bail!(
                "exited before it was ready ({:?}); see its stderr",
                server.child.try_wait()
            ),
            Err(_) => bail!("not ready within {READY_TIMEOUT:?}"),
        }
    }

    /// Makes network `i`'s upstream die (see the module documentation):
    /// from now on router `i` silently drops whatever the host sends to
    /// the internet addresses. Cutting a cut network changes nothing.
    pub fn cut_upstream(&self, i: usize) -> Result<()> {
        // Priority -250: after the arrival counters (-300), which thus
        // still see what a cut network gets, and before conntrack (-200),
        // which then never learns of the dropped connections.
        let table = format!(
            "table inet {CUT_TABLE} {{\n\
             chain prerouting {{\n\
             type filter hook prerouting priority -250; policy accept;\n\
             iifname \"{ROUTER_IF}\" ip daddr {INTERNET_V4} drop\n\
             iifname \"{ROUTER_IF}\" ip6 daddr {INTERNET_V6} drop\n\
             }}\n}}\n"
        );
        self.replace_cut_table(i, &table)
            .with_context(|| format!("cutting {}'s upstream", self.network(i).name))
    }

    /// Brings network `i`'s upstream back: the router forwards to the
    /// internet addresses again. Restoring a working network changes
    /// nothing.
    pub fn restore_upstream(&self, i: usize) -> Result<()> {
        self.replace_cut_table(i, "")
            .with_context(|| format!("restoring {}'s upstream", self.network(i).name))
    }

    /// Replaces router `i`'s cut table by `table` (nothing if empty) in one
    /// nft transaction: declaring the table first makes the delete succeed
    /// whether or not it existed, so both switches are idempotent.
    fn replace_cut_table(&self, i: usize, table: &str) -> Result<()> {
        let script = format!("table inet {CUT_TABLE} {{}}\ndelete table inet {CUT_TABLE}\n{table}");
        let n = NEXT_SERVERS.fetch_add(1, Ordering::Relaxed);
        let file = self.scratch_dir("nft")?.join(format!("cut-r{i}-{n}.nft"));
        fs::write(&file, &script).with_context(|| format!("writing {}", file.display()))?;
        let path = file.to_str().context("scratch dir is not UTF-8")?;
        let done = super::capture::nft(self, i, &["-f", path]);
        let _ = fs::remove_file(&file);
        done.with_context(|| script.clone()).map(drop)
    }

    /// `GET url` with curl on the host, optionally in `cgroup` and bound to
    /// `interface` (SO_BINDTODEVICE, which also picks the interface's
    /// address as source: what makes a request leave by a given network
    /// without mif). Redirects are not followed. Gives up after
    /// [`HTTP_CONNECT_TIMEOUT`] without a connection; a failure is an
    /// [`HttpFailure`].
    pub fn http_get(
        &self,
        cgroup: Option<&Path>,
        interface: Option<&str>,
        url: &str,
    ) -> Result<HttpReply> {
        let connect = HTTP_CONNECT_TIMEOUT.as_secs_f64().to_string();
        let total = (2.0 * HTTP_CONNECT_TIMEOUT.as_secs_f64()).to_string();
        // The status and Location come after the body, on a line of their
        // own: the last line of stdout.
        let mut args = vec![
            "--silent",
            "--show-error",
            "--connect-timeout",
            &connect,
            "--max-time",
            &total,
            "--write-out",
            "\n%{http_code} %{redirect_url}",
        ];
        let bound;
        if let Some(interface) = interface {
            bound = format!("if!{interface}");
            args.extend(["--interface", &bound]);
        }
        args.push(url);
        let out = self.output_in(cgroup, "curl", &args)?;
        if !out.status.success() {
            return Err(HttpFailure {
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
            .into());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (body, meta) = stdout
            .rsplit_once('\n')
            .ok_or_else(|| anyhow!("no status line from curl in {stdout:?}"))?;
        let (status, location) = meta.split_once(' ').unwrap_or((meta, ""));
        Ok(HttpReply {
            status: status
                .parse()
                .with_context(|| format!("bad status from curl in {stdout:?}"))?,
            location: Some(location.to_owned()).filter(|l| !l.is_empty()),
            body: body.to_owned(),
        })
    }
}

impl ConnectivityServers<'_> {
    /// Switches network `i`'s server to `answer`, for every request from
    /// now on. The answer file is replaced by a rename, so no request ever
    /// reads half of it.
    pub fn set_answer(&self, i: usize, answer: Answer) -> Result<()> {
        let dir = &self.server(i)?.dir;
        let tmp = dir.join("answer.tmp");
        fs::write(&tmp, answer.file_text())
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, dir.join("answer"))
            .with_context(|| format!("renaming {} into place", tmp.display()))
    }

    /// Every request network `i`'s server got so far, in order. A request
    /// is logged before it is answered: once a client has its answer, its
    /// request is here.
    pub fn requests(&self, i: usize) -> Result<Vec<HttpRequest>> {
        let log = self.server(i)?.dir.join("requests.log");
        let text = match fs::read_to_string(&log) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", log.display())),
        };
        // Only complete lines: one being written by a request in flight
        // has no newline yet.
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        complete
            .lines()
            .map(|line| parse_request(line).with_context(|| format!("in {}", log.display())))
            .collect()
    }

    fn server(&self, i: usize) -> Result<&Server> {
        self.servers.get(i).with_context(|| {
            format!(
                "no connectivity server {i}: the lab has {} networks",
                self.lab.networks().len()
            )
        })
    }
}

impl Drop for ConnectivityServers<'_> {
    fn drop(&mut self) {
        // Best effort, never a panic (this may run while a test unwinds);
        // the lab kills them anyway and removes its scratch directory.
        for server in &self.servers {
            if let Err(e) = server.child.kill() {
                eprintln!("connectivity server {}: {e:#}", server.child.pid());
            }
            let _ = fs::remove_dir_all(&server.dir);
        }
    }
}

/// One line of `requests.log`: `{"source":..,"method":..,"path":..,"host":..}`.
fn parse_request(line: &str) -> Result<HttpRequest> {
    let value: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("bad log line {line:?}"))?;
    let field = |key: &str| {
        value[key]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no {key} in {line:?}"))
    };
    Ok(HttpRequest {
        source: field("source")?
            .parse()
            .with_context(|| format!("bad source in {line:?}"))?,
        method: field("method")?,
        path: field("path")?,
        host: value["host"].as_str().map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_logged_requests() {
        let line =
            r#"{"source":"198.18.1.2","method":"GET","path":"/generate_204","host":"203.0.113.1"}"#;
        let r = parse_request(line).unwrap();
        assert_eq!(r.source, "198.18.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/generate_204")
        );
        assert_eq!(r.host.as_deref(), Some("203.0.113.1"));
        let r = parse_request(r#"{"source":"::1","method":"HEAD","path":"/","host":null}"#);
        assert_eq!(r.unwrap().host, None);
        assert!(parse_request(r#"{"source":"nope","method":"GET","path":"/"}"#).is_err());
    }

    #[test]
    fn answers_are_what_the_server_reads() {
        assert_eq!(Answer::NoContent.file_text(), "204\n");
        assert_eq!(
            Answer::Redirect("http://portal.lab/".into()).file_text(),
            "redirect http://portal.lab/\n"
        );
        assert_eq!(Answer::Page.file_text(), "page\n");
    }
}
