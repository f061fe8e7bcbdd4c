//! `lab-peer attack`: what an application would try to get its traffic out
//! of the network its policy gives it.
//!
//! ```text
//! lab-peer attack --to ADDR[%IFNAME] [--port PORT]
//!                 [--proto udp|tcp|raw|ping|mptcp|packet]
//!                 [--via syscalls|io_uring|sqpoll] [--transparent]
//!                 [--bind IP] [--setsockopt OPTION] [--dev IFNAME] [--connected]
//!                 [--pktinfo-src IP] [--pktinfo-dev IFNAME] [--cmsg-mark MARK]
//!                 [--dontroute-flag] [--wait stdin] [--first-connect IP]
//!                 [--hold SECS] [--src IP] [--dst-mac MAC] [--qdisc-bypass]
//! ```
//!
//! Opens a socket for ADDR's family, then in order: waits for a line on
//! stdin (`--wait stdin`, after printing `ready`: a socket that exists
//! before a policy does), sets `IP_TRANSPARENT`/`IPV6_TRANSPARENT`
//! (`--transparent`, as a transparent proxy does before its bind; needs
//! `CAP_NET_ADMIN`), binds, sets OPTION, and sends one request to
//! ADDR (a datagram, optionally with control messages: an
//! `IP_PKTINFO`/`IPV6_PKTINFO` source (`--pktinfo-src`) and/or interface
//! (`--pktinfo-dev`), an `SO_MARK` for this datagram alone (`--cmsg-mark`,
//! which needs `CAP_NET_RAW` or `CAP_NET_ADMIN`), sent with `MSG_DONTROUTE`
//! with `--dontroute-flag`; a TCP connect; an ICMP echo for `raw` and
//! `ping`). A `%IFNAME` suffix sets the IPv6 scope. With `--connected`
//! the socket is connected to ADDR first and OPTION set only then, on the
//! connected socket (UDP then sends with send(2), TCP writes a byte), as an
//! application would that changes its mind after the route was chosen.
//! With `--first-connect IP` the socket is first connected to IP
//! (same port; a TCP socket is then disconnected with `AF_UNSPEC`), as an
//! application would to get a socket taken off its network by an
//! exclusion before sending elsewhere. Prints the peer's reply (`NAME
//! SOURCE`), or `sent` when none is expected; fails like `client`, as
//! `<operation>: <error>`.
//!
//! Protocols beyond UDP, TCP and raw ICMP sockets:
//!
//! - `ping`: an ICMP "ping" socket (`SOCK_DGRAM`, `IPPROTO_ICMP` or
//!   `IPPROTO_ICMPV6`; `net.ipv4.ping_group_range` must allow the caller's
//!   group); it takes the same control messages and flags as UDP.
//! - `mptcp`: a TCP request over an MPTCP socket (`IPPROTO_MPTCP`). With
//!   `--hold SECS` the connection stays open that long after the reply,
//!   for the kernel's path manager to add subflows, and the reply line
//!   gets ` subflows=N` (`MPTCP_INFO`'s count of additional subflows).
//! - `packet`: a packet socket (`AF_PACKET`, `SOCK_RAW`) bound to --dev,
//!   which sends one hand-built Ethernet + IPv4 + UDP frame to ADDR:PORT
//!   from `--src` (an IPv4 address) and --dev's own MAC to `--dst-mac`.
//!   `--qdisc-bypass` sets `PACKET_QDISC_BYPASS`: the frame then goes to the
//!   driver without the device's queueing layer (and its tc hooks).
//!
//! `--via io_uring` makes every call of the attack an io_uring request
//! instead of a syscall (`IORING_OP_SOCKET`, `_BIND`, `_URING_CMD`
//! setsockopt, `_CONNECT`; a datagram with an address or control messages
//! is `IORING_OP_SENDMSG`, a connected socket's send `IORING_OP_SEND`);
//! `--via sqpoll` the same through a ring whose kernel thread submits them
//! (`IORING_SETUP_SQPOLL`), so the calls are made by that thread, not by
//! the attacking process. Receiving stays a syscall: it sends nothing.
//!
//! OPTION is one of `mark` (SO_MARK 0), `device` (SO_BINDTODEVICE --dev),
//! `bindtoifindex`, `unicast-if`, `multicast-if` (the index of --dev),
//! `pktinfo` (a sticky IPV6_PKTINFO naming --dev), `dontroute`, `join`
//! (a multicast group on --dev), or `tos` (harmless, for contrast).
use std::cell::RefCell;
use std::io::{self, BufRead as _, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd as _, OwnedFd};
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};
use nix::sys::socket::{self, MsgFlags, SockaddrLike as _, SockaddrStorage};

use super::{op, Args, DEFAULT_PORT, TIMEOUT};

/// `SOL_PACKET` option: frames skip the device's queueing layer
/// (linux/if_packet.h; not in libc).
const PACKET_QDISC_BYPASS: i32 = 20;
/// `getsockopt` level and option of MPTCP's connection-level counters
/// (linux/mptcp.h; not in libc).
const SOL_MPTCP: i32 = 284;
const MPTCP_INFO: i32 = 1;

pub fn attack(args: &Args) -> Result<(), String> {
    let calls = Calls::new(args.get("via").unwrap_or("syscalls"))?;
    let (to, scope) = destination(args.required("to")?)?;
    let port = args.parsed("port")?.unwrap_or(DEFAULT_PORT);
    let dst = match (to, scope) {
        (IpAddr::V6(ip), Some(scope)) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope)),
        _ => SocketAddr::new(to, port),
    };
    let proto = args.get("proto").unwrap_or("udp");
    let fd = open(&calls, dst, proto)?;

    if args.get("wait") == Some("stdin") {
        println!("ready");
        io::stdout().flush().map_err(op("write"))?;
        io::stdin()
            .lock()
            .read_line(&mut String::new())
            .map_err(op("read"))?;
    }
    if args.flag("transparent") {
        let (level, name) = if dst.is_ipv6() {
            (libc::SOL_IPV6, libc::IPV6_TRANSPARENT)
        } else {
            (libc::SOL_IP, libc::IP_TRANSPARENT)
        };
        setsockopt(&calls, &fd, level, name, &1i32)?;
    }
    if let Some(bind) = args.parsed::<IpAddr>("bind")? {
        let addr = SockaddrStorage::from(SocketAddr::new(bind, 0));
        calls
            .bind(&fd, addr.as_ptr(), addr.len())
            .map_err(op("bind"))?;
    }
    // With --connected the option waits for the connect.
    let late = args.flag("connected");
    if let Some(option) = args.get("setsockopt").filter(|_| !late) {
        set_option(&calls, &fd, option, args.get("dev"), dst)?;
    }
    if let Some(first) = args.parsed::<IpAddr>("first-connect")? {
        let first = SockaddrStorage::from(SocketAddr::new(first, port));
        calls.connect(&fd, &first).map_err(op("first connect"))?;
        if proto == "tcp" {
            disconnect(&fd)?;
        }
    }
    let cmsgs = Cmsgs {
        src: args.parsed("pktinfo-src")?,
        dev: args.get("pktinfo-dev").map(ifindex).transpose()?,
        mark: args.parsed("cmsg-mark")?,
        dontroute: args.flag("dontroute-flag"),
    };
    let connected = late.then(|| Late {
        option: args.get("setsockopt"),
        dev: args.get("dev"),
    });
    let line = match proto {
        "tcp" | "mptcp" => {
            let hold = args.parsed::<u64>("hold")?.map(Duration::from_secs);
            ask_tcp(&calls, fd, dst, connected.as_ref(), hold)?
        }
        "raw" | "ping" => echo(&calls, &fd, dst, &cmsgs)?,
        "packet" => frame(&calls, &fd, dst, args)?,
        _ => ask_udp(&calls, &fd, dst, &cmsgs, connected.as_ref())?,
    };
    println!("{}", line.trim_end());
    Ok(())
}

/// How the attack makes its calls: syscalls, or requests to an io_uring
/// (see the module documentation).
enum Calls {
    Syscalls,
    Ring(Box<RefCell<IoUring>>),
}

impl Calls {
    fn new(via: &str) -> Result<Self, String> {
        let ring = match via {
            "syscalls" => return Ok(Self::Syscalls),
            "io_uring" => IoUring::new(8),
            // Idle time of the kernel thread before it sleeps, in ms.
            "sqpoll" => IoUring::builder().setup_sqpoll(1000).build(8),
            other => return Err(format!("unknown --via {other:?}")),
        };
        let ring = ring.map_err(op("io_uring_setup"))?;
        Ok(Self::Ring(Box::new(RefCell::new(ring))))
    }

    /// Submits `entry` (linked to a timeout of `limit`, if given) and
    /// waits for its completion: its result, or the error it carries.
    fn run(
        ring: &RefCell<IoUring>,
        entry: squeue::Entry,
        limit: Option<Duration>,
    ) -> io::Result<i32> {
        let mut ring = ring.borrow_mut();
        let timeout = limit.map(types::Timespec::from);
        let full = || io::Error::other("submission queue full");
        // SAFETY: every buffer the entries point to (the caller's, and
        // `timeout`) outlives the wait for their completions below.
        unsafe {
            let mut queue = ring.submission();
            match &timeout {
                Some(timespec) => {
                    let linked = entry.user_data(1).flags(squeue::Flags::IO_LINK);
                    queue.push(&linked).map_err(|_| full())?;
                    let timer = opcode::LinkTimeout::new(timespec).build().user_data(2);
                    queue.push(&timer).map_err(|_| full())?;
                }
                None => queue.push(&entry.user_data(1)).map_err(|_| full())?,
            }
        }
        let wanted = if timeout.is_some() { 2 } else { 1 };
        let mut result = None;
        let mut seen = 0;
        while seen < wanted {
            ring.submit_and_wait(wanted - seen)?;
            for cqe in ring.completion() {
                seen += 1;
                if cqe.user_data() == 1 {
                    result = Some(cqe.result());
                }
            }
        }
        match result {
            Some(res) if res >= 0 => Ok(res),
            // The linked timeout fired and cancelled the request.
            Some(res) if -res == libc::ECANCELED && timeout.is_some() => {
                Err(io::ErrorKind::TimedOut.into())
            }
            Some(res) => Err(io::Error::from_raw_os_error(-res)),
            None => Err(io::Error::other("no completion")),
        }
    }

    fn socket(&self, domain: i32, ty: i32, protocol: i32) -> io::Result<OwnedFd> {
        let ty = ty | libc::SOCK_CLOEXEC;
        let fd = match self {
            // SAFETY: plain syscall; the fd is checked before it is owned.
            Self::Syscalls => unsafe { libc::socket(domain, ty, protocol) },
            Self::Ring(ring) => Self::run(
                ring,
                opcode::Socket::new(domain, ty, protocol).build(),
                None,
            )?,
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn bind(&self, fd: &OwnedFd, addr: *const libc::sockaddr, len: u32) -> io::Result<()> {
        match self {
            // SAFETY: addr is valid for reads of len bytes.
            Self::Syscalls => check(unsafe { libc::bind(fd.as_raw_fd(), addr, len) }),
            Self::Ring(ring) => {
                let entry = opcode::Bind::new(types::Fd(fd.as_raw_fd()), addr, len).build();
                Self::run(ring, entry, None).map(drop)
            }
        }
    }

    fn setsockopt(&self, fd: &OwnedFd, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
        let (ptr, len) = (value.as_ptr().cast::<libc::c_void>(), value.len());
        match self {
            // SAFETY: value is valid for reads of its length.
            Self::Syscalls => check(unsafe {
                libc::setsockopt(fd.as_raw_fd(), level, name, ptr, len as libc::socklen_t)
            }),
            Self::Ring(ring) => {
                let fd = types::Fd(fd.as_raw_fd());
                let entry =
                    opcode::SetSockOpt::new(fd, level as u32, name as u32, ptr, len as u32).build();
                Self::run(ring, entry, None).map(drop)
            }
        }
    }

    /// connect(2); a blocking one gives up after [`TIMEOUT`] either way.
    fn connect(&self, fd: &OwnedFd, to: &SockaddrStorage) -> io::Result<()> {
        match self {
            Self::Syscalls => match socket::connect(fd.as_raw_fd(), to) {
                // SO_SNDTIMEO ran out.
                Err(nix::errno::Errno::EINPROGRESS) => Err(io::ErrorKind::TimedOut.into()),
                other => other.map_err(io::Error::from),
            },
            Self::Ring(ring) => {
                let entry = opcode::Connect::new(types::Fd(fd.as_raw_fd()), to.as_ptr(), to.len());
                Self::run(ring, entry.build(), Some(TIMEOUT)).map(drop)
            }
        }
    }

    /// sendmsg(2) of `msg`: as `IORING_OP_SEND` on a ring when it has
    /// neither an address nor control messages, else `IORING_OP_SENDMSG`.
    fn sendmsg(&self, fd: &OwnedFd, msg: &libc::msghdr, flags: i32) -> io::Result<()> {
        match self {
            // SAFETY: msg describes live buffers; the kernel only reads them.
            Self::Syscalls => {
                let rc = unsafe { libc::sendmsg(fd.as_raw_fd(), msg, flags) };
                check(if rc < 0 { -1 } else { 0 })
            }
            Self::Ring(ring) => {
                let fd = types::Fd(fd.as_raw_fd());
                let entry = if msg.msg_name.is_null() && msg.msg_controllen == 0 {
                    // SAFETY: the one iovec of every msghdr built here.
                    let iov = unsafe { &*msg.msg_iov };
                    opcode::Send::new(fd, iov.iov_base.cast(), iov.iov_len as u32)
                        .flags(flags)
                        .build()
                } else {
                    opcode::SendMsg::new(fd, msg).flags(flags as u32).build()
                };
                Self::run(ring, entry, None).map(drop)
            }
        }
    }
}

/// A libc return code as a result.
fn check(rc: i32) -> io::Result<()> {
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `connect(AF_UNSPEC)`: the socket forgets its peer and may connect again.
fn disconnect(fd: &OwnedFd) -> Result<(), String> {
    let unspec = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    let len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
    // SAFETY: a valid sockaddr of `len` bytes for a socket we own.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), &unspec, len) };
    if rc != 0 {
        return Err(format!("disconnect: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// `ADDR` or `ADDR%IFNAME`.
fn destination(text: &str) -> Result<(IpAddr, Option<u32>), String> {
    let (addr, scope) = match text.split_once('%') {
        Some((addr, dev)) => (addr, Some(ifindex(dev)?)),
        None => (text, None),
    };
    let addr = addr.parse().map_err(|_| format!("bad --to {text:?}"))?;
    Ok((addr, scope))
}

fn ifindex(dev: &str) -> Result<u32, String> {
    nix::net::if_::if_nametoindex(dev).map_err(op("if_nametoindex"))
}

fn open(calls: &Calls, dst: SocketAddr, proto: &str) -> Result<OwnedFd, String> {
    let v4 = dst.is_ipv4();
    let af = if v4 { libc::AF_INET } else { libc::AF_INET6 };
    let icmp = if v4 {
        libc::IPPROTO_ICMP
    } else {
        libc::IPPROTO_ICMPV6
    };
    let (af, ty, protocol) = match proto {
        "tcp" => (af, libc::SOCK_STREAM, 0),
        "mptcp" => (af, libc::SOCK_STREAM, libc::IPPROTO_MPTCP),
        "raw" => (af, libc::SOCK_RAW, icmp),
        "ping" => (af, libc::SOCK_DGRAM, icmp),
        "udp" => (af, libc::SOCK_DGRAM, 0),
        // Protocol 0: the socket receives nothing, it only sends.
        "packet" => (libc::AF_PACKET, libc::SOCK_RAW, 0),
        other => return Err(format!("unknown --proto {other:?}")),
    };
    let fd = calls.socket(af, ty, protocol).map_err(op("socket"))?;
    let timeout = libc::timeval {
        tv_sec: TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    for name in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        setsockopt(calls, &fd, libc::SOL_SOCKET, name, &timeout)?;
    }
    Ok(fd)
}

/// setsockopt(2) with a plain value, so any level and option can be tried.
fn setsockopt<T>(
    calls: &Calls,
    fd: &OwnedFd,
    level: i32,
    name: i32,
    value: &T,
) -> Result<(), String> {
    // SAFETY: value is valid for reads of size_of::<T>() bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>())
    };
    calls
        .setsockopt(fd, level, name, bytes)
        .map_err(op("setsockopt"))
}

fn set_option(
    calls: &Calls,
    fd: &OwnedFd,
    option: &str,
    dev: Option<&str>,
    dst: SocketAddr,
) -> Result<(), String> {
    let dev = || dev.ok_or_else(|| format!("--setsockopt {option} needs --dev"));
    let index = || ifindex(dev()?);
    let v6 = dst.is_ipv6();
    let (sol_ip, sol_ipv6) = (libc::SOL_IP, libc::SOL_IPV6);
    let set = |level, name, value: &dyn Fn() -> Result<Vec<u8>, String>| {
        calls
            .setsockopt(fd, level, name, &value()?)
            .map_err(op("setsockopt"))
    };
    match option {
        "mark" => setsockopt(calls, fd, libc::SOL_SOCKET, libc::SO_MARK, &0u32),
        "device" => set(libc::SOL_SOCKET, libc::SO_BINDTODEVICE, &|| {
            Ok(dev()?.as_bytes().to_vec())
        }),
        "bindtoifindex" => setsockopt(
            calls,
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTOIFINDEX,
            &index()?,
        ),
        // IP_UNICAST_IF takes the index in network byte order; IPv6's does not.
        "unicast-if" if v6 => setsockopt(calls, fd, sol_ipv6, libc::IPV6_UNICAST_IF, &index()?),
        "unicast-if" => setsockopt(calls, fd, sol_ip, libc::IP_UNICAST_IF, &index()?.to_be()),
        "multicast-if" if v6 => setsockopt(calls, fd, sol_ipv6, libc::IPV6_MULTICAST_IF, &index()?),
        "multicast-if" => {
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr { s_addr: 0 },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: index()? as i32,
            };
            setsockopt(calls, fd, sol_ip, libc::IP_MULTICAST_IF, &mreq)
        }
        "pktinfo" => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr { s6_addr: [0; 16] },
                ipi6_ifindex: index()?,
            };
            setsockopt(calls, fd, sol_ipv6, libc::IPV6_PKTINFO, &info)
        }
        "join" if v6 => {
            let mreq = libc::ipv6_mreq {
                ipv6mr_multiaddr: libc::in6_addr {
                    s6_addr: Ipv6Addr::new(0xff12, 0, 0, 0, 0, 0, 0, 0x1234).octets(),
                },
                ipv6mr_interface: index()?,
            };
            setsockopt(calls, fd, sol_ipv6, libc::IPV6_ADD_MEMBERSHIP, &mreq)
        }
        "join" => {
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([239, 1, 2, 3]),
                },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: index()? as i32,
            };
            setsockopt(calls, fd, sol_ip, libc::IP_ADD_MEMBERSHIP, &mreq)
        }
        "dontroute" => setsockopt(calls, fd, libc::SOL_SOCKET, libc::SO_DONTROUTE, &1i32),
        "tos" if v6 => setsockopt(calls, fd, sol_ipv6, libc::IPV6_TCLASS, &0x10i32),
        "tos" => setsockopt(calls, fd, sol_ip, libc::IP_TOS, &0x10i32),
        other => Err(format!("unknown --setsockopt {other:?}")),
    }
}

/// What `--connected` does once the socket is connected: sets the option
/// (with its --dev), if one was given.
struct Late<'a> {
    option: Option<&'a str>,
    dev: Option<&'a str>,
}

impl Late<'_> {
    fn apply(&self, calls: &Calls, fd: &OwnedFd, dst: SocketAddr) -> Result<(), String> {
        match self.option {
            Some(option) => set_option(calls, fd, option, self.dev, dst),
            None => Ok(()),
        }
    }
}

/// Ancillary data for one datagram.
#[derive(Default)]
struct Cmsgs {
    /// `IP_PKTINFO`/`IPV6_PKTINFO` source address.
    src: Option<IpAddr>,
    /// `IP_PKTINFO`/`IPV6_PKTINFO` interface index.
    dev: Option<u32>,
    /// `SO_MARK` for this datagram.
    mark: Option<u32>,
    /// The `MSG_DONTROUTE` flag (not ancillary data, but per datagram too).
    dontroute: bool,
}

/// Appends one control message to `buf` (already aligned, as every length
/// `CMSG_SPACE` gives is).
fn push_cmsg<T>(buf: &mut Vec<u8>, level: i32, ty: i32, value: &T) {
    let len = std::mem::size_of::<T>() as u32;
    // SAFETY: CMSG_* only compute sizes.
    let (space, hdr_len) = unsafe { (libc::CMSG_SPACE(len), libc::CMSG_LEN(len)) };
    let start = buf.len();
    buf.resize(start + space as usize, 0);
    let hdr = libc::cmsghdr {
        cmsg_len: hdr_len as _,
        cmsg_level: level,
        cmsg_type: ty,
    };
    let hdr_size = std::mem::size_of::<libc::cmsghdr>();
    // SAFETY: both are plain old data read for their own size; the buffer
    // has room for the header and the value after it (CMSG_SPACE).
    unsafe {
        std::ptr::copy_nonoverlapping(
            std::ptr::from_ref(&hdr).cast::<u8>(),
            buf[start..].as_mut_ptr(),
            hdr_size,
        );
        std::ptr::copy_nonoverlapping(
            std::ptr::from_ref(value).cast::<u8>(),
            buf[start + hdr_size..].as_mut_ptr(),
            len as usize,
        );
    }
}

/// The control messages of `cmsgs` for a datagram to `dst`, as sendmsg(2)
/// takes them.
fn control(dst: SocketAddr, cmsgs: &Cmsgs) -> Vec<u8> {
    let mut buf = Vec::new();
    if cmsgs.src.is_some() || cmsgs.dev.is_some() {
        let ifindex = cmsgs.dev.unwrap_or(0);
        match (dst, cmsgs.src) {
            (SocketAddr::V4(_), src) => {
                let ip = match src {
                    Some(IpAddr::V4(ip)) => u32::from_ne_bytes(ip.octets()),
                    _ => 0,
                };
                let info = libc::in_pktinfo {
                    ipi_ifindex: ifindex as i32,
                    ipi_spec_dst: libc::in_addr { s_addr: ip },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                push_cmsg(&mut buf, libc::SOL_IP, libc::IP_PKTINFO, &info);
            }
            (SocketAddr::V6(_), src) => {
                let octets = match src {
                    Some(IpAddr::V6(ip)) => ip.octets(),
                    _ => [0; 16],
                };
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr { s6_addr: octets },
                    ipi6_ifindex: ifindex,
                };
                push_cmsg(&mut buf, libc::SOL_IPV6, libc::IPV6_PKTINFO, &info);
            }
        }
    }
    if let Some(mark) = cmsgs.mark {
        push_cmsg(&mut buf, libc::SOL_SOCKET, libc::SO_MARK, &mark);
    }
    buf
}

/// sendmsg(2) of `payload` to `dst` (none: the connected peer) with the
/// control messages of `cmsgs`.
fn send_with(
    calls: &Calls,
    fd: &OwnedFd,
    dst: Option<SocketAddr>,
    payload: &[u8],
    cmsgs: &Cmsgs,
) -> Result<(), String> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    let to = dst.map(SockaddrStorage::from);
    let mut control = dst.map(|dst| control(dst, cmsgs)).unwrap_or_default();
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives
    // the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some(to) = &to {
        msg.msg_name = to.as_ptr().cast_mut().cast();
        msg.msg_namelen = to.len();
    }
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if !control.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() as _;
    }
    let flags = if cmsgs.dontroute {
        libc::MSG_DONTROUTE
    } else {
        0
    };
    calls.sendmsg(fd, &msg, flags).map_err(op("send"))
}

/// One datagram to the peer, its reply back. With `connected`, the socket
/// is connected first, then given the late option, then sends without an
/// address.
fn ask_udp(
    calls: &Calls,
    fd: &OwnedFd,
    dst: SocketAddr,
    cmsgs: &Cmsgs,
    connected: Option<&Late>,
) -> Result<String, String> {
    match connected {
        Some(late) => {
            calls
                .connect(fd, &SockaddrStorage::from(dst))
                .map_err(op("connect"))?;
            late.apply(calls, fd, dst)?;
            send_with(calls, fd, None, b"?", cmsgs)?;
        }
        None => send_with(calls, fd, Some(dst), b"?", cmsgs)?,
    }
    let mut buf = [0u8; 1500];
    let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(op("recv"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A TCP (or MPTCP) request: connect, then (with `connected`) the late
/// option and one byte written, then the peer's line. With `hold`, the
/// connection stays open that long before the answer is given, which then
/// tells how many subflows MPTCP added.
fn ask_tcp(
    calls: &Calls,
    fd: OwnedFd,
    dst: SocketAddr,
    connected: Option<&Late>,
    hold: Option<Duration>,
) -> Result<String, String> {
    calls
        .connect(&fd, &SockaddrStorage::from(dst))
        .map_err(op("connect"))?;
    if let Some(late) = connected {
        late.apply(calls, &fd, dst)?;
        send_with(calls, &fd, None, b"?", &Cmsgs::default())?;
    }
    let stream = std::net::TcpStream::from(fd);
    let mut line = String::new();
    io::BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(op("recv"))?;
    let Some(hold) = hold else {
        return Ok(line);
    };
    std::thread::sleep(hold);
    // The first bytes of struct mptcp_info: mptcpi_subflows comes first.
    let mut info = [0u8; 64];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: info and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            SOL_MPTCP,
            MPTCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(op("getsockopt MPTCP_INFO")(io::Error::last_os_error()));
    }
    // Read what the peer may have sent since, so closing sends a FIN, not
    // a reset.
    stream.set_nonblocking(true).map_err(op("fcntl"))?;
    let _ = (&stream).read(&mut [0u8; 64]);
    Ok(format!("{} subflows={}", line.trim_end(), info[0]))
}

/// An ICMP echo request: the kernel fills the IPv4 header, and for ICMPv6
/// (and ping sockets) the checksum; a raw IPv4 one needs its own (of a
/// constant header: 0xf7ff).
fn echo(calls: &Calls, fd: &OwnedFd, mut dst: SocketAddr, cmsgs: &Cmsgs) -> Result<String, String> {
    // A raw IPv6 socket reads the port as the protocol: 0 means its own.
    // Ping sockets ignore it.
    dst.set_port(0);
    let packet: [u8; 8] = if dst.is_ipv4() {
        [8, 0, 0xf7, 0xff, 0, 0, 0, 0]
    } else {
        [128, 0, 0, 0, 0, 0, 0, 0]
    };
    send_with(calls, fd, Some(dst), &packet, cmsgs)?;
    Ok("sent".into())
}

/// `aa:bb:cc:dd:ee:ff`.
fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("bad MAC {text:?}"))?;
    bytes.try_into().map_err(|_| format!("bad MAC {text:?}"))
}

/// The Internet checksum of `data` (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame carrying one IPv4 UDP datagram (`?`, no UDP checksum,
/// which IPv4 allows) from `src` to `dst`.
fn udp_frame(
    from_mac: [u8; 6],
    to_mac: [u8; 6],
    src: Ipv4Addr,
    dst: SocketAddr,
) -> Result<Vec<u8>, String> {
    let SocketAddr::V4(dst) = dst else {
        return Err("--proto packet sends IPv4 only".into());
    };
    let payload = b"?";
    let udp_len = 8 + payload.len() as u16;
    let mut ip = vec![
        0x45,
        0,
        0,
        0,
        0,
        0,
        0x40,
        0,
        64,
        libc::IPPROTO_UDP as u8,
        0,
        0,
    ];
    ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.ip().octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());

    let mut frame = Vec::new();
    frame.extend_from_slice(&to_mac);
    frame.extend_from_slice(&from_mac);
    frame.extend_from_slice(&(libc::ETH_P_IP as u16).to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&50000u16.to_be_bytes());
    frame.extend_from_slice(&dst.port().to_be_bytes());
    frame.extend_from_slice(&udp_len.to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// The link-layer address of the interface `dev` (SIOCGIFHWADDR).
fn hardware_address(fd: &OwnedFd, dev: &str) -> Result<[u8; 6], String> {
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in req.ifr_name.iter_mut().zip(dev.bytes()) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: req is a valid ifreq naming the interface.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if rc != 0 {
        return Err(op("ioctl SIOCGIFHWADDR")(io::Error::last_os_error()));
    }
    // SAFETY: SIOCGIFHWADDR fills the hardware address member.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(std::array::from_fn(|i| data[i] as u8))
}

/// One hand-built frame out of a packet socket bound to --dev: no IP
/// stack on the way, so no socket address hook and no IP output path.
fn frame(calls: &Calls, fd: &OwnedFd, dst: SocketAddr, args: &Args) -> Result<String, String> {
    let dev = args.required("dev")?;
    let index = ifindex(dev)?;
    let src: Ipv4Addr = args.parsed("src")?.ok_or("--src is required")?;
    let to_mac = parse_mac(args.required("dst-mac")?)?;
    // SAFETY: an all-zero sockaddr_ll is valid.
    let mut link: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    link.sll_family = libc::AF_PACKET as u16;
    link.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    link.sll_ifindex = index as i32;
    link.sll_halen = 6;
    link.sll_addr[..6].copy_from_slice(&to_mac);
    let link_ptr = std::ptr::from_ref(&link).cast::<libc::sockaddr>();
    let link_len = size_of::<libc::sockaddr_ll>() as u32;
    calls.bind(fd, link_ptr, link_len).map_err(op("bind"))?;
    if args.flag("qdisc-bypass") {
        setsockopt(calls, fd, libc::SOL_PACKET, PACKET_QDISC_BYPASS, &1i32)?;
    }
    let frame = udp_frame(hardware_address(fd, dev)?, to_mac, src, dst)?;
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr().cast_mut().cast(),
        iov_len: frame.len(),
    };
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives
    // the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = link_ptr.cast_mut().cast();
    msg.msg_namelen = link_len;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    calls.sendmsg(fd, &msg, 0).map_err(op("send"))?;
    Ok("sent".into())
}
