//! What runs inside the lab: the load generators in the benchmark's cgroup
//! on the host (`mif-bench worker`, `mif-bench watch`) and the service in
//! each router (`mif-bench server`).
//!
//! The hot loops make raw syscalls (libc), so a measured operation is
//! exactly the syscalls it names and nothing std adds around them.
//!
//! ```text
//! mif-bench worker --to IP [--mark M | --pvd NAME] [--expect NAME] [--cpu C] [--crr-port P] --batches B --op NAME=N...
//! mif-bench watch --to IP [--cpu C]        (commands on stdin: `go NAME`, `refused`)
//! mif-bench server [--cpu C]               (exits at EOF on stdin)
//! ```
//!
//! `worker` prints, per op, `NAME ns ns ...`: nanoseconds per operation of
//! each batch. Every failure ends the process with status 1 and the failing
//! syscall on stderr.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::lab::PEER_PORT;

/// TCP connect/request/response/close (the server closes first, so the
/// client never holds TIME_WAIT and never runs out of ports): ports
/// `CRR_PORT .. CRR_PORT + CRR_PORTS`, one per variant. Variants must not
/// share 4-tuples: nftables' NAT'd connections leave TIME_WAIT entries on
/// the server whose sequence numbers and timestamps (hashed from the
/// pre-NAT source) are unrelated to a later direct connection's, which is
/// then stalled for milliseconds by the TIME_WAIT socket.
pub const CRR_PORT: u16 = 9110;
pub const CRR_PORTS: u16 = 16;
/// TCP sink for the stream test: reads and discards until EOF.
pub const SINK_PORT: u16 = 9102;
/// UDP sink for sendto and the datagram stream.
pub const UDP_PORT: u16 = 9103;

/// Bytes per write(2) of the TCP stream.
pub const STREAM_WRITE: usize = 64 * 1024;
/// Payload of one datagram of the UDP stream and of sendto.
pub const DATAGRAM: usize = 64;

/// One measured operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// socket(AF_INET, SOCK_DGRAM) + close(): the sock_create hook alone.
    Socket,
    /// socket() + connect() of UDP + close(): adds the connect4 hook (bind).
    UdpConnect,
    /// sendto() on one unconnected UDP socket: the sendmsg4 hook per call.
    UdpSendto,
    /// TCP connect, 1-byte request and response, close (netperf TCP_CRR).
    TcpCrr,
    /// One 64 KiB write(2) of a bulk TCP stream (per-packet cost).
    TcpStream,
    /// One 64-byte send(2) on a connected UDP socket (per-packet cost).
    UdpStream,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Socket,
        Op::UdpConnect,
        Op::UdpSendto,
        Op::TcpCrr,
        Op::TcpStream,
        Op::UdpStream,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Socket => "socket",
            Op::UdpConnect => "udp_connect",
            Op::UdpSendto => "udp_sendto",
            Op::TcpCrr => "tcp_crr",
            Op::TcpStream => "tcp_stream",
            Op::UdpStream => "udp_stream",
        }
    }

    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Streams run for a duration (N is milliseconds), the others N times.
    pub fn is_stream(self) -> bool {
        matches!(self, Op::TcpStream | Op::UdpStream)
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the
/// benchmark, so the watcher's timestamps compare with the orchestrator's.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Pins the calling thread (and the threads it starts later) to one CPU, so
/// that load generator and server do not trade places between variants.
pub fn pin_cpu(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("sched_setaffinity");
    }
    Ok(())
}

/// `--key value` options after the subcommand.
struct Args {
    pairs: Vec<(String, String)>,
}

impl Args {
    fn parse(argv: &[String]) -> Result<Self> {
        let mut pairs = Vec::new();
        let mut it = argv.iter();
        while let Some(arg) = it.next() {
            let key = arg
                .strip_prefix("--")
                .with_context(|| format!("unexpected argument {arg:?}"))?;
            let value = it.next().with_context(|| format!("{arg} needs a value"))?;
            pairs.push((key.to_owned(), value.clone()));
        }
        Ok(Self { pairs })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn parsed<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>> {
        self.get(key)
            .map(|v| v.parse().map_err(|_| anyhow::anyhow!("bad --{key} {v:?}")))
            .transpose()
    }
}

fn parse_mark(s: &str) -> Result<u32> {
    let v = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    v.with_context(|| format!("bad mark {s:?}"))
}

fn os_err(what: &'static str) -> anyhow::Error {
    anyhow::Error::new(io::Error::last_os_error()).context(what)
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

const SOCKADDR_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

/// Where the load goes, the mark an application sets itself (variant
/// "SO_MARK"; 0 = none) and the PvD it chooses itself with the MIF API's
/// `SOL_MIF` (variant "chosen"; empty = none, NUL-padded).
#[derive(Clone, Copy)]
struct Target {
    to: Ipv4Addr,
    mark: u32,
    pvd: [u8; 16],
    crr_port: u16,
}

impl Target {
    /// socket(2), plus SO_MARK when the application marks its own sockets:
    /// that setsockopt is part of that variant's cost.
    #[inline(always)]
    fn socket(&self, ty: libc::c_int) -> Result<OwnedFd> {
        // SAFETY: plain syscall; the fd is owned right after.
        let fd = unsafe { libc::socket(libc::AF_INET, ty | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(os_err("socket"));
        }
        // SAFETY: fd was just returned by socket(2) and is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if self.mark != 0 {
            let mark = self.mark as libc::c_int;
            // SAFETY: valid fd, pointer and length of a c_int.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_MARK,
                    (&raw const mark).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(os_err("setsockopt SO_MARK"));
            }
        }
        if self.pvd[0] != 0 {
            let len = self.pvd.iter().position(|&b| b == 0).unwrap_or(16);
            // SAFETY: valid fd; the pointer and length describe self.pvd.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    mif_common::api::SOL_MIF,
                    mif_common::api::MIF_PVD,
                    self.pvd.as_ptr().cast(),
                    len as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(os_err("setsockopt SOL_MIF"));
            }
        }
        Ok(fd)
    }

    #[inline(always)]
    fn connect(&self, fd: RawFd, port: u16) -> Result<()> {
        let sa = sockaddr(self.to, port);
        // SAFETY: sa is a valid sockaddr_in of the length given.
        let rc = unsafe { libc::connect(fd, (&raw const sa).cast(), SOCKADDR_LEN) };
        if rc != 0 {
            return Err(os_err("connect"));
        }
        Ok(())
    }
}

fn write_all(fd: RawFd, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for reads of its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n <= 0 {
            return Err(os_err("write"));
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

fn read_some(fd: RawFd, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(os_err("read"));
    }
    Ok(n as usize)
}

/// Runs `n` operations and returns nanoseconds per operation.
fn timed(n: u64, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..n {
        op()?;
    }
    Ok(start.elapsed().as_nanos() as f64 / n.max(1) as f64)
}

fn run_op(t: Target, op: Op, n: u64) -> Result<f64> {
    match op {
        Op::Socket => timed(n, || t.socket(libc::SOCK_DGRAM).map(drop)),
        Op::UdpConnect => timed(n, || {
            let fd = t.socket(libc::SOCK_DGRAM)?;
            t.connect(fd.as_raw_fd(), UDP_PORT)
        }),
        Op::UdpSendto => {
            let fd = t.socket(libc::SOCK_DGRAM)?;
            let sa = sockaddr(t.to, UDP_PORT);
            let payload = [0u8; DATAGRAM];
            timed(n, || {
                // SAFETY: valid fd, buffer and sockaddr of the lengths given.
                let rc = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        payload.as_ptr().cast(),
                        payload.len(),
                        0,
                        (&raw const sa).cast(),
                        SOCKADDR_LEN,
                    )
                };
                if rc < 0 {
                    return Err(os_err("sendto"));
                }
                Ok(())
            })
        }
        Op::TcpCrr => {
            let mut byte = [0u8; 1];
            let debug = std::env::var_os("MIF_BENCH_DEBUG").is_some();
            let mut lat = Vec::with_capacity(if debug { n as usize } else { 0 });
            let ns = timed(n, || {
                let t0 = debug.then(Instant::now);
                let fd = t.socket(libc::SOCK_STREAM)?;
                let raw = fd.as_raw_fd();
                t.connect(raw, t.crr_port)?;
                write_all(raw, b"?")?;
                if read_some(raw, &mut byte)? != 1 {
                    bail!("crr: no response");
                }
                // The server closes first: wait for its FIN.
                if read_some(raw, &mut byte)? != 0 {
                    bail!("crr: more than one byte of response");
                }
                if let Some(t0) = t0 {
                    lat.push(t0.elapsed().as_micros() as u64);
                }
                Ok(())
            });
            if debug && !lat.is_empty() {
                lat.sort_unstable();
                let at = |p: usize| lat[(lat.len() - 1) * p / 100];
                eprintln!(
                    "tcp_crr µs: p50 {} p90 {} p99 {} max {} (>10ms: {})",
                    at(50),
                    at(90),
                    at(99),
                    lat[lat.len() - 1],
                    lat.iter().filter(|&&l| l > 10_000).count()
                );
            }
            ns
        }
        Op::TcpStream => {
            let fd = t.socket(libc::SOCK_STREAM)?;
            t.connect(fd.as_raw_fd(), SINK_PORT)?;
            let buf = vec![0u8; STREAM_WRITE];
            stream_for(Duration::from_millis(n), || write_all(fd.as_raw_fd(), &buf))
        }
        Op::UdpStream => {
            let fd = t.socket(libc::SOCK_DGRAM)?;
            t.connect(fd.as_raw_fd(), UDP_PORT)?;
            let payload = [0u8; DATAGRAM];
            stream_for(Duration::from_millis(n), || {
                // SAFETY: valid fd and buffer.
                let rc = unsafe {
                    libc::send(fd.as_raw_fd(), payload.as_ptr().cast(), payload.len(), 0)
                };
                // A full receiver is the receiver's problem, not a failure
                // of the path being measured.
                if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::ECONNREFUSED) {
                    return Err(os_err("send"));
                }
                Ok(())
            })
        }
    }
}

/// Repeats `op` for `duration` (checking the clock every 64 calls) and
/// returns nanoseconds per call.
fn stream_for(duration: Duration, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    let mut calls = 0u64;
    loop {
        for _ in 0..64 {
            op()?;
        }
        calls += 64;
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return Ok(elapsed.as_nanos() as f64 / calls as f64);
        }
    }
}

/// Asks the lab peer which network a TCP connection leaves by.
fn network_of(t: Target, timeout: Duration) -> Result<String> {
    let fd = t.socket(libc::SOCK_STREAM)?;
    set_timeouts(fd.as_raw_fd(), timeout)?;
    t.connect(fd.as_raw_fd(), PEER_PORT)?;
    let stream = TcpStream::from(fd);
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .context("reading the peer's reply")?;
    line.split_whitespace()
        .next()
        .map(str::to_owned)
        .context("empty reply from the peer")
}

fn set_timeouts(fd: RawFd, timeout: Duration) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    for opt in [libc::SO_SNDTIMEO, libc::SO_RCVTIMEO] {
        // SAFETY: valid fd and timeval.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(os_err("setsockopt timeout"));
        }
    }
    Ok(())
}

/// `mif-bench worker`: checks the route (`--expect`), then runs every
/// `--op NAME=N` in `--batches` batches and prints the results.
pub fn worker_main(argv: &[String]) -> Result<()> {
    let args = Args::parse(argv)?;
    let to: Ipv4Addr = args.parsed("to")?.context("--to is required")?;
    let mark = args.get("mark").map(parse_mark).transpose()?.unwrap_or(0);
    let batches: usize = args.parsed("batches")?.unwrap_or(1);
    let crr_port = args.parsed("crr-port")?.unwrap_or(CRR_PORT);
    if let Some(cpu) = args.parsed::<usize>("cpu")? {
        pin_cpu(cpu)?;
    }
    let mut pvd = [0u8; 16];
    if let Some(name) = args.get("pvd") {
        anyhow::ensure!(name.len() < pvd.len(), "--pvd {name:?}: too long");
        pvd[..name.len()].copy_from_slice(name.as_bytes());
    }
    let t = Target {
        to,
        mark,
        pvd,
        crr_port,
    };
    if let Some(expect) = args.get("expect") {
        let got = network_of(t, Duration::from_secs(2)).context("route check")?;
        if got != expect {
            bail!("route check: traffic leaves by {got}, expected {expect}");
        }
    }
    let mut out = String::new();
    for spec in args.all("op") {
        let (name, n) = spec
            .split_once('=')
            .with_context(|| format!("--op {spec:?}: want NAME=N"))?;
        let op = Op::parse(name).with_context(|| format!("unknown op {name:?}"))?;
        let n: u64 = n.parse().with_context(|| format!("--op {spec:?}"))?;
        // A short unmeasured warm-up: page faults, first route lookups.
        let warm = if op.is_stream() {
            n / 4 + 1
        } else {
            n / 10 + 1
        };
        run_op(t, op, warm).with_context(|| format!("{name} (warm-up)"))?;
        out.push_str(name);
        for _ in 0..batches {
            let ns = run_op(t, op, n).with_context(|| name.to_owned())?;
            out.push_str(&format!(" {ns:.1}"));
        }
        out.push('\n');
    }
    io::stdout().write_all(out.as_bytes())?;
    Ok(())
}

/// One connection of the watcher, from socket() to the peer's reply.
struct Attempt {
    fd: OwnedFd,
    started: u64,
    connected: bool,
    reply: Vec<u8>,
}

/// How often the watcher starts a connection, whatever happened to the
/// earlier ones: a connection whose SYN left by the link that just went
/// down hangs, and must not hold the next ones back.
const WATCH_INTERVAL: Duration = Duration::from_micros(250);
/// Attempts older than this are abandoned.
const WATCH_GIVE_UP: Duration = Duration::from_millis(300);

impl Attempt {
    fn start(to: Ipv4Addr) -> Result<Self> {
        let started = now_ns();
        // SAFETY: plain syscall; the fd is owned right after.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            return Err(os_err("socket"));
        }
        // SAFETY: fd was just returned by socket(2).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sa = sockaddr(to, PEER_PORT);
        // SAFETY: valid sockaddr of the length given.
        let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const sa).cast(), SOCKADDR_LEN) };
        if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(os_err("connect"));
        }
        Ok(Self {
            fd,
            started,
            connected: rc == 0,
            reply: Vec::new(),
        })
    }

    /// Advances on a poll event; `Ok(Some(name))` once the reply is in,
    /// `Err` when the attempt failed.
    fn advance(&mut self) -> Result<Option<String>> {
        if !self.connected {
            let mut err: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: valid fd, int and length.
            let rc = unsafe {
                libc::getsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&raw mut err).cast(),
                    &mut len,
                )
            };
            if rc != 0 || err != 0 {
                bail!("connect failed ({err})");
            }
            self.connected = true;
        }
        let mut buf = [0u8; 128];
        // SAFETY: valid fd and buffer.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
                return Ok(None);
            }
            return Err(os_err("read"));
        }
        self.reply.extend_from_slice(&buf[..n as usize]);
        if n == 0 || self.reply.contains(&b'\n') {
            let text = String::from_utf8_lossy(&self.reply);
            let name = text.split_whitespace().next().context("empty reply")?;
            return Ok(Some(name.to_owned()));
        }
        Ok(None)
    }
}

/// Starts a connection every [`WATCH_INTERVAL`] until one leaves by
/// `expect`; returns the start time of the earliest one that did (after
/// letting those in flight finish), the attempts and the failures.
fn watch_until(to: Ipv4Addr, expect: &str, timeout: Duration) -> Result<Option<(u64, u64, u64)>> {
    let deadline = Instant::now() + timeout;
    let (mut attempts, mut failures) = (0u64, 0u64);
    let mut inflight: Vec<Attempt> = Vec::new();
    let mut next_start = Instant::now();
    let mut first_hit: Option<(u64, Instant)> = None;
    loop {
        let now = Instant::now();
        if let Some((t, at)) = first_hit {
            // Earlier attempts still in flight may also have left by
            // `expect`: give them a moment, then report the earliest.
            if now > at + Duration::from_millis(5) || inflight.iter().all(|a| a.started > t) {
                return Ok(Some((t, attempts, failures)));
            }
        } else if now > deadline {
            return Ok(None);
        }
        if first_hit.is_none() && now >= next_start {
            attempts += 1;
            match Attempt::start(to) {
                Ok(a) => inflight.push(a),
                Err(_) => failures += 1,
            }
            next_start = now + WATCH_INTERVAL;
        }
        let mut fds: Vec<libc::pollfd> = inflight
            .iter()
            .map(|a| libc::pollfd {
                fd: a.fd.as_raw_fd(),
                events: if a.connected {
                    libc::POLLIN
                } else {
                    libc::POLLOUT
                },
                revents: 0,
            })
            .collect();
        let wait = next_start.saturating_duration_since(Instant::now());
        let wait_ms = if first_hit.is_some() {
            1
        } else {
            wait.as_millis() as libc::c_int
        };
        // SAFETY: fds is a valid array of pollfd of the length given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            return Err(os_err("poll"));
        }
        let give_up = now_ns().saturating_sub(WATCH_GIVE_UP.as_nanos() as u64);
        let mut keep = Vec::with_capacity(inflight.len());
        for (mut a, p) in inflight.into_iter().zip(&fds) {
            if p.revents == 0 {
                if a.started >= give_up {
                    keep.push(a);
                } else {
                    failures += 1;
                }
                continue;
            }
            match a.advance() {
                Ok(None) => keep.push(a),
                Ok(Some(name)) if name == expect => {
                    if first_hit.is_none_or(|(t, _)| a.started < t) {
                        first_hit = Some((a.started, first_hit.map_or(Instant::now(), |f| f.1)));
                    }
                }
                Ok(Some(_)) => {}
                Err(_) => failures += 1,
            }
        }
        inflight = keep;
        if wait_ms == 0 && n == 0 {
            // Nothing to wait for yet: do not spin faster than the interval.
            std::thread::sleep(wait.min(WATCH_INTERVAL));
        }
    }
}

/// How often the watcher's `refused` mode creates a socket: socket() alone
/// is cheap (a few µs), so it can look more often than connections start.
const REFUSAL_INTERVAL: Duration = Duration::from_micros(50);

/// Creates and closes a TCP socket every [`REFUSAL_INTERVAL`] until
/// socket() fails with EPERM (a strict policy without an available PvD);
/// returns the time just before that socket(), the attempts and the
/// sockets that failed otherwise.
fn watch_refusal(timeout: Duration) -> Result<Option<(u64, u64, u64)>> {
    // The default timer slack (50 µs) would double the naps.
    // SAFETY: prctl with integer arguments only.
    let slack = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK) };
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let deadline = Instant::now() + timeout;
    let (mut attempts, mut failures) = (0u64, 0u64);
    let found = loop {
        let started = now_ns();
        attempts += 1;
        // SAFETY: plain syscall; the fd is closed right after.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd >= 0 {
            // SAFETY: fd was just returned by socket(2) and is ours.
            unsafe { libc::close(fd) };
        } else if io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
            break Some((started, attempts, failures));
        } else {
            failures += 1;
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(REFUSAL_INTERVAL);
    };
    if slack > 0 {
        // SAFETY: as above.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, slack as libc::c_ulong) };
    }
    Ok(found)
}

/// `mif-bench watch`: on `go NAME`, connects to the lab peer over and over
/// (a new connection every 250 µs, several in flight) until one leaves by
/// NAME, then prints `hit T N F`: T the CLOCK_MONOTONIC time just before
/// socket() of the earliest connection that did, N the attempts, F the
/// failed ones. On `refused`, creates a socket every 50 µs (no connection)
/// until socket() fails with EPERM, then prints `hit T N F` with T the time
/// just before that socket() and F the sockets that failed otherwise. Each
/// command is acknowledged with `armed` once its loop starts; `timeout`
/// after 5 s.
pub fn watch_main(argv: &[String]) -> Result<()> {
    let args = Args::parse(argv)?;
    let to: Ipv4Addr = args.parsed("to")?.context("--to is required")?;
    if let Some(cpu) = args.parsed::<usize>("cpu")? {
        pin_cpu(cpu)?;
    }
    let stdin = io::stdin();
    let mut stdout = io::stdout();
    let timeout = Duration::from_secs(5);
    for line in stdin.lock().lines() {
        let line = line?;
        let refusal = line == "refused";
        let expect = line.strip_prefix("go ");
        if !refusal && expect.is_none() {
            bail!("unknown command {line:?}");
        }
        writeln!(stdout, "armed")?;
        stdout.flush()?;
        let found = match expect {
            Some(expect) => watch_until(to, expect, timeout)?,
            None => watch_refusal(timeout)?,
        };
        let reply = match found {
            Some((t, n, f)) => format!("hit {t} {n} {f}"),
            None => "timeout".to_owned(),
        };
        writeln!(stdout, "{reply}")?;
        stdout.flush()?;
    }
    Ok(())
}

/// `mif-bench server`: the CRR service, the TCP sink and the UDP sink on
/// every address of the router, until stdin reaches EOF.
pub fn server_main(argv: &[String]) -> Result<()> {
    let args = Args::parse(argv)?;
    if let Some(cpu) = args.parsed::<usize>("cpu")? {
        pin_cpu(cpu)?;
    }
    let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let crr: Vec<TcpListener> = (CRR_PORT..CRR_PORT + CRR_PORTS)
        .map(|port| TcpListener::bind(any(port)).with_context(|| format!("bind {port}")))
        .collect::<Result<_>>()?;
    let sink = TcpListener::bind(any(SINK_PORT)).context("bind sink")?;
    let udp = UdpSocket::bind(any(UDP_PORT)).context("bind udp")?;

    for listener in crr {
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if conn.read_exact(&mut byte).is_ok() {
                    let _ = conn.write_all(&byte);
                }
                // Dropping closes: the server's FIN comes first.
            }
        });
    }
    std::thread::spawn(move || {
        for conn in sink.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; STREAM_WRITE];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            let _ = udp.recv(&mut buf);
        }
    });
    let mut stdout = io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    // The orchestrator holds our stdin; EOF means it is gone.
    let _ = io::stdin().lock().read_to_end(&mut Vec::new());
    Ok(())
}
