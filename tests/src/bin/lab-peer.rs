//! The lab's network peer: a tiny service that tells a client which network
//! it came through, and the client that asks it.
//!
//! ```text
//! lab-peer serve --name NAME [--port 7777] [--watch-stdin] [--mptcp]
//! lab-peer client --proto tcp|udp|udp-unconnected --to ADDR --port PORT [--bind IP]
//! lab-peer sockmark --family 4|6
//! lab-peer client|sockmark --new-cgroup DIR ...
//! lab-peer attack --to ADDR ...   (see lab_peer/attack.rs)
//! lab-peer http --name NAME --listen ADDR:PORT ... --state DIR   (see lab_peer/http.rs)
//! lab-peer ra --dev IF --captive-portal URI [--lifetime S]   (see lab_peer/ra.rs)
//! ```
//!
//! `serve` answers every TCP connection and UDP datagram with
//! `NAME <client-ip>\n`. With `--mptcp` it serves MPTCP connections
//! (`IPPROTO_MPTCP`, TCP for clients without it) and no UDP, and keeps
//! each connection open until the client closes it, so that the client's
//! kernel has the time to add subflows. `client` prints that line. Every failure is printed
//! as `<syscall>: <io::Error>` (e.g. `socket: Operation not permitted (os
//! error 1)`) with exit status 1, so tests can tell a refusal by mif's
//! programs from a timeout or a wrong route.
//!
//! `--new-cgroup DIR` makes the cgroup DIR and moves the process into it
//! as its very first act, as systemd starts a unit (the cgroup first,
//! then the process in it), before `client` or `sockmark` opens its
//! socket: nothing runs between the cgroup's creation and the socket.
//!
//! Sockets are made with raw syscalls rather than std's constructors
//! because std can neither set IPV6_V6ONLY (needed to bind `0.0.0.0` and
//! `[::]` on one port) nor bind a TCP socket before connecting.

use std::collections::HashMap;
use std::io::{self, BufRead, IoSlice, IoSliceMut, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, SockaddrStorage,
};
use nix::sys::time::{TimeVal, TimeValLike};

// In a directory of its own: cargo would take a file of src/bin for a binary.
#[path = "lab_peer/attack.rs"]
mod attack;
#[path = "lab_peer/http.rs"]
mod http;
#[path = "lab_peer/ra.rs"]
mod ra;

const DEFAULT_PORT: u16 = 7777;
const TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let result = Args::parse(std::env::args().skip(1))
        .and_then(|args| {
            if let Some(dir) = args.get("new-cgroup") {
                enter_new_cgroup(dir)?;
            }
            Ok(args)
        })
        .and_then(|args| match args.command.as_str() {
            "serve" => serve(&args),
            "client" => client(&args),
            "sockmark" => sockmark(&args),
            "attack" => attack::attack(&args),
            "http" => http::http(&args),
            "ra" => ra::ra(&args),
            other => Err(format!("unknown command {other:?}")),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Makes the cgroup `dir` (it must not exist) and moves this process in.
fn enter_new_cgroup(dir: &str) -> Result<(), String> {
    std::fs::create_dir(dir).map_err(|e| format!("mkdir {dir}: {e}"))?;
    std::fs::write(
        format!("{dir}/cgroup.procs"),
        std::process::id().to_string(),
    )
    .map_err(|e| format!("moving into {dir}: {e}"))
}

/// `COMMAND (--key value | --flag)*`; a key given twice keeps both values
/// (`http --listen A --listen B`), and [`Args::get`] sees the last.
struct Args {
    command: String,
    options: HashMap<String, Vec<String>>,
    flags: Vec<String>,
}

impl Args {
    const FLAGS: &'static [&'static str] = &[
        "watch-stdin",
        "dontroute-flag",
        "transparent",
        "connected",
        "qdisc-bypass",
        "mptcp",
    ];

    fn parse(mut argv: impl Iterator<Item = String>) -> Result<Self, String> {
        let command = argv
            .next()
            .ok_or("usage: lab-peer serve|client|sockmark|attack|http ...")?;
        let (mut options, mut flags) = (HashMap::new(), Vec::new());
        while let Some(arg) = argv.next() {
            let key = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {arg:?}"))?;
            if Self::FLAGS.contains(&key) {
                flags.push(key.to_owned());
            } else {
                let value = argv.next().ok_or_else(|| format!("{arg} needs a value"))?;
                options
                    .entry(key.to_owned())
                    .or_insert_with(Vec::new)
                    .push(value);
            }
        }
        Ok(Self {
            command,
            options,
            flags,
        })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.options.get(key)?.last().map(String::as_str)
    }

    /// Every value given for `key`, in order.
    fn all(&self, key: &str) -> &[String] {
        self.options.get(key).map_or(&[], Vec::as_slice)
    }

    fn required(&self, key: &str) -> Result<&str, String> {
        self.get(key).ok_or_else(|| format!("--{key} is required"))
    }

    fn parsed<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        self.get(key)
            .map(|v| v.parse().map_err(|_| format!("bad --{key} {v:?}")))
            .transpose()
    }

    fn flag(&self, key: &str) -> bool {
        self.flags.iter().any(|f| f == key)
    }
}

/// Labels an error with the operation that failed.
fn op<E: Into<io::Error>>(what: &'static str) -> impl FnOnce(E) -> String {
    move |e| {
        let e: io::Error = e.into();
        match e.kind() {
            // Read timeouts surface as EAGAIN, which reads like a bug.
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                format!("{what}: timed out after {TIMEOUT:?} ({e})")
            }
            _ => format!("{what}: {e}"),
        }
    }
}

/// socket(2) for `addr`'s family, optionally v6-only, and bind(2) if asked.
fn new_socket(family: IpAddr, ty: SockType, bind: Option<SocketAddr>) -> Result<OwnedFd, String> {
    let af = match family {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(af, ty, SockFlag::SOCK_CLOEXEC, None).map_err(op("socket"))?;
    set_up(fd, ty, bind)
}

/// An MPTCP stream socket (nix has no name for `IPPROTO_MPTCP`), bound to
/// `addr` as [`new_socket`] binds.
fn mptcp_socket(addr: SocketAddr) -> Result<OwnedFd, String> {
    let af = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: plain syscall; the fd is checked before it is owned.
    let fd = unsafe { libc::socket(af, ty, libc::IPPROTO_MPTCP) };
    if fd < 0 {
        return Err(op("socket")(io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor that nothing else owns.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    set_up(fd, SockType::Stream, Some(addr))
}

/// IPV6_V6ONLY and SO_REUSEADDR as a server needs them, and bind(2).
fn set_up(fd: OwnedFd, ty: SockType, bind: Option<SocketAddr>) -> Result<OwnedFd, String> {
    if let Some(addr) = bind {
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            // Lets `[::]` share the port with `0.0.0.0` instead of also
            // claiming IPv4 through mapped addresses.
            socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(op("setsockopt"))?;
        }
        if ty == SockType::Stream && addr.port() != 0 {
            socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(op("setsockopt"))?;
        }
        socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(op("bind"))?;
    }
    Ok(fd)
}

fn serve(args: &Args) -> Result<(), String> {
    let name = args.required("name")?.to_owned();
    let port = args.parsed("port")?.unwrap_or(DEFAULT_PORT);
    let any = [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ];

    let mptcp = args.flag("mptcp");
    let mut workers = Vec::new();
    for ip in any {
        let addr = SocketAddr::new(ip, port);
        if mptcp {
            let listener = mptcp_socket(addr)?;
            socket::listen(&listener, Backlog::MAXCONN).map_err(op("listen"))?;
            let (name, listener) = (name.clone(), TcpListener::from(listener));
            workers.push(std::thread::spawn(move || serve_held(&name, listener)));
            continue;
        }
        let tcp = new_socket(ip, SockType::Stream, Some(addr))?;
        socket::listen(&tcp, Backlog::MAXCONN).map_err(op("listen"))?;
        let udp = new_socket(ip, SockType::Datagram, Some(addr))?;
        want_local_addr(&udp, ip)?;
        let tcp = TcpListener::from(tcp);
        let (n1, n2) = (name.clone(), name.clone());
        workers.push(std::thread::spawn(move || serve_tcp(&n1, tcp)));
        workers.push(std::thread::spawn(move || serve_udp(&n2, udp)));
    }
    // The lab waits for this line before it lets tests run.
    let mut stdout = io::stdout();
    writeln!(stdout, "ready")
        .and_then(|()| stdout.flush())
        .map_err(op("write"))?;

    if args.flag("watch-stdin") {
        // The lab holds the other end of our stdin; EOF means it is gone
        // (even if it was SIGKILLed and never ran its cleanup).
        let _ = io::stdin().lock().read_to_end(&mut Vec::new());
        return Ok(());
    }
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}

/// The client's address as it would write it: without the IPv4-mapped form.
fn reply(name: &str, peer: SocketAddr) -> String {
    format!("{name} {}\n", peer.ip().to_canonical())
}

fn serve_tcp(name: &str, listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if let Ok(peer) = stream.peer_addr() {
            // Small enough to fit the socket buffer: never blocks.
            let _ = stream.write_all(reply(name, peer).as_bytes());
        }
    }
}

/// Like [`serve_tcp`], but each connection stays open, on a thread of its
/// own, until the client closes it.
fn serve_held(name: &str, listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let name = name.to_owned();
        std::thread::spawn(move || {
            if let Ok(peer) = stream.peer_addr() {
                let _ = stream.write_all(reply(&name, peer).as_bytes());
            }
            let _ = io::copy(&mut stream, &mut io::sink());
        });
    }
}

fn serve_udp(name: &str, socket: OwnedFd) {
    let mut buf = [0u8; 1500];
    loop {
        if let Ok((peer, local)) = recv_with_local(&socket, &mut buf) {
            let _ = send_from(&socket, reply(name, peer).as_bytes(), peer, &local);
        }
    }
}

/// The address a datagram was sent to, from IP_PKTINFO/IPV6_PKTINFO.
enum LocalAddr {
    V4(libc::in_pktinfo),
    V6(libc::in6_pktinfo),
}

/// Asks the kernel to report each datagram's destination address, which a
/// wildcard-bound socket otherwise never learns.
fn want_local_addr(socket: &OwnedFd, ip: IpAddr) -> Result<(), String> {
    match ip {
        IpAddr::V4(_) => socket::setsockopt(socket, sockopt::Ipv4PacketInfo, &true),
        IpAddr::V6(_) => socket::setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true),
    }
    .map_err(op("setsockopt"))
}

fn recv_with_local(socket: &OwnedFd, buf: &mut [u8]) -> nix::Result<(SocketAddr, LocalAddr)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let msg = socket::recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )?;
    let peer = msg
        .address
        .as_ref()
        .and_then(std_addr)
        .ok_or(Errno::EAFNOSUPPORT)?;
    let local = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::Ipv4PacketInfo(info) => Some(LocalAddr::V4(info)),
        ControlMessageOwned::Ipv6PacketInfo(info) => Some(LocalAddr::V6(info)),
        _ => None,
    });
    Ok((peer, local.ok_or(Errno::ENOMSG)?))
}

/// Replies from the address the request went to. Without this the kernel
/// would pick the outgoing interface's address (198.18.i.1 rather than the
/// internet address), and a connected client would discard the reply.
fn send_from(
    socket: &OwnedFd,
    data: &[u8],
    to: SocketAddr,
    local: &LocalAddr,
) -> nix::Result<usize> {
    let iov = [IoSlice::new(data)];
    let to = SockaddrStorage::from(to);
    let fd = socket.as_raw_fd();
    match local {
        LocalAddr::V4(got) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: got.ipi_addr,
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
            socket::sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&to))
        }
        LocalAddr::V6(got) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: got.ipi6_addr,
                ipi6_ifindex: 0,
            };
            let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
            socket::sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&to))
        }
    }
}

fn std_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

fn client(args: &Args) -> Result<(), String> {
    let proto = args.required("proto")?;
    let to: IpAddr = args.parsed("to")?.ok_or("--to is required")?;
    let port: u16 = args.parsed("port")?.ok_or("--port is required")?;
    let bind: Option<IpAddr> = args.parsed("bind")?;
    let dst = SocketAddr::new(to, port);
    let bind = bind.map(|ip| SocketAddr::new(ip, 0));

    let line = match proto {
        "tcp" => tcp_ask(dst, bind)?,
        "udp" | "udp-unconnected" => udp_ask(dst, bind, proto == "udp")?,
        other => return Err(format!("unknown --proto {other:?}")),
    };
    println!("{}", line.trim_end());
    Ok(())
}

fn tcp_ask(dst: SocketAddr, bind: Option<SocketAddr>) -> Result<String, String> {
    let fd = new_socket(dst.ip(), SockType::Stream, bind)?;
    // On Linux a blocking connect(2) gives up after SO_SNDTIMEO.
    let timeout = TimeVal::milliseconds(TIMEOUT.as_millis() as i64);
    socket::setsockopt(&fd, sockopt::SendTimeout, &timeout).map_err(op("setsockopt"))?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => return Err(op("connect")(io::ErrorKind::TimedOut)),
        Err(e) => return Err(op("connect")(e)),
    }
    let stream = TcpStream::from(fd);
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(op("setsockopt"))?;
    let mut line = String::new();
    io::BufReader::new(stream)
        .read_line(&mut line)
        .map_err(op("recv"))?;
    if line.is_empty() {
        return Err("recv: connection closed without a reply".into());
    }
    Ok(line)
}

fn udp_ask(dst: SocketAddr, bind: Option<SocketAddr>, connected: bool) -> Result<String, String> {
    let socket = UdpSocket::from(new_socket(dst.ip(), SockType::Datagram, bind)?);
    socket
        .set_read_timeout(Some(TIMEOUT))
        .map_err(op("setsockopt"))?;
    let mut buf = [0u8; 1500];
    let n = if connected {
        socket.connect(dst).map_err(op("connect"))?;
        socket.send(b"?").map_err(op("send"))?;
        socket.recv(&mut buf).map_err(op("recv"))?
    } else {
        socket.send_to(b"?", dst).map_err(op("send"))?;
        let (n, from) = socket.recv_from(&mut buf).map_err(op("recv"))?;
        if from != dst {
            return Err(format!("recv: reply came from {from}, not {dst}"));
        }
        n
    };
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Prints what the kernel put on a fresh UDP socket: `mark=0x.. ifindex=N`
/// (plus `dev=NAME` when bound to a device).
fn sockmark(args: &Args) -> Result<(), String> {
    let family = match args.required("family")? {
        "4" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "6" => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        other => return Err(format!("bad --family {other:?}")),
    };
    let fd = new_socket(family, SockType::Datagram, None)?;
    let mark = socket::getsockopt(&fd, sockopt::Mark).map_err(op("getsockopt SO_MARK"))?;
    let ifindex = bound_ifindex(&fd).map_err(op("getsockopt SO_BINDTOIFINDEX"))?;
    let dev =
        socket::getsockopt(&fd, sockopt::BindToDevice).map_err(op("getsockopt SO_BINDTODEVICE"))?;
    let dev = dev.to_string_lossy();
    if dev.is_empty() {
        println!("mark={mark:#x} ifindex={ifindex}");
    } else {
        println!("mark={mark:#x} ifindex={ifindex} dev={dev}");
    }
    Ok(())
}

/// SO_BINDTOIFINDEX, which nix does not wrap (Linux 5.0+ answers it in
/// getsockopt with the socket's bound device index, 0 if none).
fn bound_ifindex(fd: &OwnedFd) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTOIFINDEX,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value as u32)
}
