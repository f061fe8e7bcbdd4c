//! What only the daemon knows: the PvDs with their properties, the calling
//! process's policy, and changes as they happen. Asked over its control
//! socket (JSON, one message per line), which every local user may read.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::IpAddr,
    os::{fd::AsRawFd as _, fd::RawFd, unix::net::UnixStream},
    path::PathBuf,
};

use std::time::Duration;

use serde::Deserialize;

use crate::Error;

/// The control socket of the default instance (pin directory
/// `/sys/fs/bpf/mif`); `MIF_SOCKET` names another.
pub const DEFAULT_SOCKET: &str = "/run/mif/sys-fs-bpf-mif.sock";

/// The socket [`use_socket`] named, if any.
static CHOSEN_SOCKET: std::sync::RwLock<Option<PathBuf>> = std::sync::RwLock::new(None);

/// Talks to the daemon at `path` from now on (another instance's socket),
/// whatever `MIF_SOCKET` says.
pub fn use_socket(path: PathBuf) {
    if let Ok(mut chosen) = CHOSEN_SOCKET.write() {
        *chosen = Some(path);
    }
}

/// The control socket this process talks to: the one [`use_socket`] named,
/// else `$MIF_SOCKET`, else [`DEFAULT_SOCKET`].
pub fn socket_path() -> PathBuf {
    let chosen = CHOSEN_SOCKET.read().ok().and_then(|c| c.clone());
    chosen
        .or_else(|| std::env::var_os("MIF_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// One provisioning domain as the daemon sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pvd {
    pub name: String,
    pub interface: String,
    /// The interface's index, while it exists.
    pub ifindex: Option<u32>,
    /// `ethernet`, `wifi`, `cellular`, `vpn`, `point-to-point`, ...
    pub kind: String,
    pub link_up: bool,
    pub available_v4: bool,
    pub available_v6: bool,
    /// The PvD's source addresses (IPv4 first).
    pub addresses: Vec<IpAddr>,
    /// Its DNS resolvers, in the order the network gave them.
    pub resolvers: Vec<IpAddr>,
    /// The DNS domains its resolvers answer for (RFC 6731).
    pub domains: Vec<String>,
    /// Validation per family (`validated`, `captive`, `failing`,
    /// `probing`...); `None` while the family is not validated.
    pub validation_v4: Option<String>,
    pub validation_v6: Option<String>,
}

impl Pvd {
    /// Whether a socket of the family (`v6`) can use the PvD now.
    pub fn available(&self, v6: bool) -> bool {
        if v6 {
            self.available_v6
        } else {
            self.available_v4
        }
    }
}

/// The calling process's policy, as the kernel applies it to its sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Choices {
    /// The policy's cgroup; `None` when no policy covers the process.
    #[serde(default)]
    pub policy: Option<String>,
    /// Its PvDs in order of preference.
    #[serde(default)]
    pub prefer: Vec<String>,
    /// The PvDs it may also choose.
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub strict: bool,
}

impl Choices {
    /// The PvDs of `pvds` the process may choose, in the order it should
    /// try them: its policy's preference, then its `allow` list (not for a
    /// strict policy); under no policy, every PvD as the daemon lists them.
    pub fn candidates<'a>(&self, pvds: &'a [Pvd]) -> Vec<&'a Pvd> {
        let by_name = |name: &String| pvds.iter().find(|p| &p.name == name);
        if self.policy.is_none() {
            return pvds.iter().collect();
        }
        let extra = if self.strict {
            &[][..]
        } else {
            &self.allow[..]
        };
        let mut out: Vec<&Pvd> = Vec::new();
        for name in self.prefer.iter().chain(extra) {
            // `*`: any PvD, after those named.
            let these: Vec<&Pvd> = match name.as_str() {
                "*" => pvds.iter().collect(),
                _ => by_name(name).into_iter().collect(),
            };
            for pvd in these {
                if !out.iter().any(|p| p.name == pvd.name) {
                    out.push(pvd);
                }
            }
        }
        out
    }
}

#[derive(Deserialize)]
struct PvdWire {
    name: String,
    interface: String,
    #[serde(default)]
    ifindex: Option<u32>,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    link_up: bool,
    #[serde(default)]
    available_v4: bool,
    #[serde(default)]
    available_v6: bool,
    #[serde(default)]
    addr4: Option<String>,
    #[serde(default)]
    addr6: Option<String>,
    #[serde(default)]
    dns: Vec<String>,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    validation_v4: Option<ValidationWire>,
    #[serde(default)]
    validation_v6: Option<ValidationWire>,
}

#[derive(Deserialize)]
struct ValidationWire {
    state: String,
}

impl From<PvdWire> for Pvd {
    fn from(w: PvdWire) -> Self {
        let parse = |s: &String| s.split('%').next().and_then(|a| a.parse().ok());
        Pvd {
            name: w.name,
            interface: w.interface,
            ifindex: w.ifindex,
            kind: w.kind,
            link_up: w.link_up,
            available_v4: w.available_v4,
            available_v6: w.available_v6,
            addresses: w.addr4.iter().chain(&w.addr6).filter_map(parse).collect(),
            resolvers: w.dns.iter().filter_map(parse).collect(),
            domains: w.domains,
            validation_v4: w.validation_v4.map(|v| v.state),
            validation_v6: w.validation_v6.map(|v| v.state),
        }
    }
}

/// The daemon's answers this crate reads (the control protocol's
/// `Response`, externally tagged).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Ok,
    Error(String),
    Pvds(Vec<PvdWire>),
    Choices(Choices),
}

/// How long the daemon gets to answer a question (a daemon that hangs
/// must not hang its applications, `mif_connect`'s deadline included).
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(5);

fn connect() -> Result<UnixStream, Error> {
    let path = socket_path();
    let stream = UnixStream::connect(&path).map_err(|source| Error::NoDaemon { path, source })?;
    stream
        .set_write_timeout(Some(DAEMON_TIMEOUT))
        .map_err(Error::Socket)?;
    Ok(stream)
}

fn ask(request: &str) -> Result<Answer, Error> {
    let mut stream = connect()?;
    stream
        .set_read_timeout(Some(DAEMON_TIMEOUT))
        .map_err(Error::Socket)?;
    let io = |e| Error::Protocol(format!("control socket: {e}"));
    stream.write_all(request.as_bytes()).map_err(io)?;
    stream.write_all(b"\n").map_err(io)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).map_err(io)?;
    match serde_json::from_str(&line) {
        Ok(Answer::Error(why)) => Err(Error::Daemon(why)),
        Ok(answer) => Ok(answer),
        Err(e) => Err(Error::Protocol(format!("{e}: {}", line.trim()))),
    }
}

/// Every PvD the daemon manages, in its order (PvD index).
pub fn pvds() -> Result<Vec<Pvd>, Error> {
    match ask(r#"{"op":"pvds"}"#)? {
        Answer::Pvds(list) => Ok(list.into_iter().map(Pvd::from).collect()),
        _ => Err(Error::Protocol("expected the PvD list".into())),
    }
}

/// The PvD named `name`.
pub fn pvd(name: &str) -> Result<Pvd, Error> {
    pvds()?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| Error::NoSuchPvd(name.to_owned()))
}

/// The calling process's policy (the daemon reads the caller's cgroup from
/// the socket's peer credentials).
pub fn choices() -> Result<Choices, Error> {
    match ask(r#"{"op":"choices"}"#)? {
        Answer::Choices(c) => Ok(c),
        _ => Err(Error::Protocol("expected the caller's choices".into())),
    }
}

/// Makes every socket this process opens from now on use `pvd` (Android's
/// `setprocnetwork`): the daemon moves the process into a cgroup of its own
/// whose policy prefers `pvd`, if the process's policy allows it to choose
/// that PvD. Sockets already open keep their PvD.
pub fn set_process_pvd(pvd: &str) -> Result<(), Error> {
    let request = serde_json::json!({ "op": "process_pvd", "pvd": pvd }).to_string();
    // The daemon's refusals are words; the two a caller acts on keep the
    // errno of the per-socket choice.
    match ask(&request) {
        Ok(Answer::Ok) => Ok(()),
        Ok(_) => Err(Error::Protocol("expected ok".into())),
        Err(Error::Daemon(why)) if why.contains("(EPERM)") => Err(Error::NotAllowed(pvd.into())),
        Err(Error::Daemon(why)) if why.starts_with("no PvD is named") => {
            Err(Error::NoSuchPvd(pvd.into()))
        }
        Err(e) => Err(e),
    }
}

/// What [`Watch::next_event`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A PvD changed (link, addresses, availability, validation, ...):
    /// its state now.
    Pvd(Box<Pvd>),
    /// The policies changed (a policy set or removed, a reload).
    Policies,
}

/// A subscription to the daemon's changes. Its fd becomes readable when an
/// event is there: poll it with the application's other fds.
pub struct Watch {
    stream: UnixStream,
}

impl Watch {
    /// Subscribes; changes from the moment this returns are reported.
    pub fn open() -> Result<Self, Error> {
        let mut stream = connect()?;
        let io = |e| Error::Protocol(format!("control socket: {e}"));
        stream.write_all(b"{\"op\":\"monitor\"}\n").map_err(io)?;
        stream
            .set_read_timeout(Some(DAEMON_TIMEOUT))
            .map_err(Error::Socket)?;
        let mut watch = Self { stream };
        let first = watch.line()?.unwrap_or_default();
        let subscribed = serde_json::from_str::<serde_json::Value>(&first)
            .is_ok_and(|v| v["event"] == "subscribed");
        if !subscribed {
            return Err(Error::Protocol(format!("not subscribed: {}", first.trim())));
        }
        // Events come when they come.
        watch.stream.set_read_timeout(None).map_err(Error::Socket)?;
        Ok(watch)
    }

    /// The fd to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// One line, and not a byte more: what follows stays in the socket, so
    /// its fd stays readable while events wait (a buffered reader would
    /// take them in, and an application polling the fd would never hear of
    /// them). `None` at the end of the stream.
    fn line(&mut self) -> Result<Option<String>, Error> {
        let io = |e: std::io::Error| Error::Protocol(format!("control socket: {e}"));
        let mut line = Vec::new();
        let mut peek = vec![0u8; 64 << 10];
        loop {
            // SAFETY: peek is a live buffer of its length.
            let n = unsafe {
                libc::recv(
                    self.stream.as_raw_fd(),
                    peek.as_mut_ptr().cast(),
                    peek.len(),
                    libc::MSG_PEEK,
                )
            };
            if n < 0 {
                return Err(io(std::io::Error::last_os_error()));
            }
            if n == 0 {
                return Ok(None);
            }
            let seen = &peek[..n as usize];
            let take = seen
                .iter()
                .position(|&b| b == b'\n')
                .map_or(seen.len(), |i| i + 1);
            let mut chunk = vec![0u8; take];
            std::io::Read::read_exact(&mut self.stream, &mut chunk).map_err(io)?;
            line.extend_from_slice(&chunk);
            if line.last() == Some(&b'\n') {
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
        }
    }

    /// The next event, waiting for it; `None` when the daemon went away.
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        loop {
            let Some(line) = self.line()? else {
                return Ok(None);
            };
            let value: serde_json::Value = serde_json::from_str(&line)
                .map_err(|e| Error::Protocol(format!("{e}: {}", line.trim())))?;
            // The monitor's events are tagged by `event`, their fields
            // beside it (a PvD's view, flattened).
            match value["event"].as_str() {
                Some("pvd") => {
                    let wire: PvdWire = serde_json::from_value(value)
                        .map_err(|e| Error::Protocol(format!("{e}: {}", line.trim())))?;
                    return Ok(Some(Event::Pvd(Box::new(wire.into()))));
                }
                Some("policy_set" | "policy_del" | "reload") => return Ok(Some(Event::Policies)),
                // An event this version does not know: skipped.
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvd(name: &str) -> Pvd {
        Pvd {
            name: name.into(),
            interface: name.into(),
            ifindex: Some(2),
            kind: String::new(),
            link_up: true,
            available_v4: true,
            available_v6: true,
            addresses: vec![],
            resolvers: vec![],
            domains: vec![],
            validation_v4: None,
            validation_v6: None,
        }
    }

    fn names(list: Vec<&Pvd>) -> Vec<&str> {
        list.into_iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn candidates_follow_the_policy_then_its_allow_list() {
        let pvds = [pvd("wlan0"), pvd("wwan0"), pvd("tun0")];
        let none = Choices::default();
        assert_eq!(names(none.candidates(&pvds)), ["wlan0", "wwan0", "tun0"]);
        let loose = Choices {
            policy: Some("/app".into()),
            prefer: vec!["wwan0".into(), "gone0".into()],
            allow: vec!["tun0".into(), "wwan0".into()],
            strict: false,
        };
        assert_eq!(names(loose.candidates(&pvds)), ["wwan0", "tun0"]);
        let strict = Choices {
            strict: true,
            ..loose
        };
        assert_eq!(names(strict.candidates(&pvds)), ["wwan0"]);
        let any = Choices {
            policy: Some("/app".into()),
            prefer: vec!["tun0".into()],
            allow: vec!["*".into()],
            strict: false,
        };
        assert_eq!(names(any.candidates(&pvds)), ["tun0", "wlan0", "wwan0"]);
    }

    #[test]
    fn the_daemons_pvd_view_is_read() {
        let line = r#"{"pvds":[{"index":0,"name":"wlan0","interface":"wlan0","ifindex":3,
            "link_up":true,"available_v4":true,"available_v6":false,"addr4":"198.18.0.2",
            "addr6":null,"dns":["198.18.0.1","fe80::1"],"kind":"wifi","domains":["corp"],
            "validation_v4":{"state":"captive","url":"http://x/"},"mark":"0x1","table":1,
            "dns_source":"dhcp","gateway4":null,"gateway6":null}]}"#;
        let Answer::Pvds(list) = serde_json::from_str(line).unwrap() else {
            panic!("not a PvD list");
        };
        let p = Pvd::from(list.into_iter().next().unwrap());
        assert_eq!(p.addresses, ["198.18.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(p.resolvers.len(), 2);
        assert_eq!(p.validation_v4.as_deref(), Some("captive"));
        assert_eq!(p.validation_v6, None);
        assert!(!p.available(true) && p.available(false));
    }
}
