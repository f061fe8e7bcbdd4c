//! `lab-peer attack`: what an application would try to get its traffic out
//! of the network its policy gives it.
//!
//! ```text
//! lab-peer attack --to ADDR[%IFNAME] [--port PORT] [--proto udp|tcp|raw]
//!                 [--bind IP] [--setsockopt OPTION] [--dev IFNAME]
//!                 [--pktinfo-src IP] [--pktinfo-dev IFNAME] [--cmsg-mark MARK]
//!                 [--dontroute-flag] [--wait stdin] [--first-connect IP]
//! ```
//!
//! Opens a socket for ADDR's family, then in order: waits for a line on
//! stdin (`--wait stdin`, after printing `ready`: a socket that exists
//! before a policy does), binds, sets OPTION, and sends one request to
//! ADDR (a datagram, optionally with control messages: an
//! `IP_PKTINFO`/`IPV6_PKTINFO` source (`--pktinfo-src`) and/or interface
//! (`--pktinfo-dev`), an `SO_MARK` for this datagram alone (`--cmsg-mark`,
//! which needs `CAP_NET_RAW` or `CAP_NET_ADMIN`), sent with `MSG_DONTROUTE`
//! with `--dontroute-flag`; a TCP connect; an ICMP echo for `raw`). A `%IFNAME` suffix sets the IPv6
//! scope. With `--first-connect IP` the socket is first connected to IP
//! (same port; a TCP socket is then disconnected with `AF_UNSPEC`), as an
//! application would to get a socket taken off its network by an
//! exclusion before sending elsewhere. Prints the peer's reply (`NAME SOURCE`), or `sent` when none is
//! expected; fails like `client`, as `<operation>: <error>`.
//!
//! OPTION is one of `mark` (SO_MARK 0), `device` (SO_BINDTODEVICE --dev),
//! `bindtoifindex`, `unicast-if`, `multicast-if` (the index of --dev),
//! `pktinfo` (a sticky IPV6_PKTINFO naming --dev), `dontroute`, `join`
//! (a multicast group on --dev), or `tos` (harmless, for contrast).
use std::io::{self, BufRead as _, Write as _};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrLike as _,
    SockaddrStorage,
};

use super::{op, Args, DEFAULT_PORT, TIMEOUT};

pub fn attack(args: &Args) -> Result<(), String> {
    let (to, scope) = destination(args.required("to")?)?;
    let port = args.parsed("port")?.unwrap_or(DEFAULT_PORT);
    let dst = match (to, scope) {
        (IpAddr::V6(ip), Some(scope)) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope)),
        _ => SocketAddr::new(to, port),
    };
    let proto = args.get("proto").unwrap_or("udp");
    let fd = open(dst, proto)?;

    if args.get("wait") == Some("stdin") {
        println!("ready");
        io::stdout().flush().map_err(op("write"))?;
        io::stdin()
            .lock()
            .read_line(&mut String::new())
            .map_err(op("read"))?;
    }
    if let Some(bind) = args.parsed::<IpAddr>("bind")? {
        let addr = SockaddrStorage::from(SocketAddr::new(bind, 0));
        socket::bind(fd.as_raw_fd(), &addr).map_err(op("bind"))?;
    }
    if let Some(option) = args.get("setsockopt") {
        set_option(&fd, option, args.get("dev"), dst)?;
    }
    if let Some(first) = args.parsed::<IpAddr>("first-connect")? {
        let first = SockaddrStorage::from(SocketAddr::new(first, port));
        socket::connect(fd.as_raw_fd(), &first).map_err(op("first connect"))?;
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
    let line = match proto {
        "tcp" => ask_tcp(fd, dst)?,
        "raw" => echo(&fd, dst, &cmsgs)?,
        _ => ask_udp(&fd, dst, &cmsgs)?,
    };
    println!("{}", line.trim_end());
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

fn open(dst: SocketAddr, proto: &str) -> Result<OwnedFd, String> {
    let af = if dst.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let (ty, protocol) = match (proto, dst.is_ipv4()) {
        ("tcp", _) => (SockType::Stream, None),
        ("raw", true) => (SockType::Raw, Some(SockProtocol::Icmp)),
        ("raw", false) => (SockType::Raw, Some(SockProtocol::IcmpV6)),
        ("udp", _) => (SockType::Datagram, None),
        (other, _) => return Err(format!("unknown --proto {other:?}")),
    };
    let fd = socket::socket(af, ty, SockFlag::SOCK_CLOEXEC, protocol).map_err(op("socket"))?;
    let timeout = libc::timeval {
        tv_sec: TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    for name in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        setsockopt(&fd, libc::SOL_SOCKET, name, &timeout)?;
    }
    Ok(fd)
}

/// setsockopt(2) with a plain value, so any level and option can be tried.
fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> Result<(), String> {
    // SAFETY: value is valid for reads of size_of::<T>() bytes.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(op("setsockopt")(io::Error::last_os_error()));
    }
    Ok(())
}

fn set_option(
    fd: &OwnedFd,
    option: &str,
    dev: Option<&str>,
    dst: SocketAddr,
) -> Result<(), String> {
    let dev = || dev.ok_or_else(|| format!("--setsockopt {option} needs --dev"));
    let index = || ifindex(dev()?);
    let v6 = dst.is_ipv6();
    let (sol_ip, sol_ipv6) = (libc::SOL_IP, libc::SOL_IPV6);
    match option {
        "mark" => setsockopt(fd, libc::SOL_SOCKET, libc::SO_MARK, &0u32),
        "device" => {
            let name = dev()?.as_bytes().to_vec();
            // SAFETY: name is valid for reads of its length.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_BINDTODEVICE,
                    name.as_ptr().cast(),
                    name.len() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(op("setsockopt")(io::Error::last_os_error()));
            }
            Ok(())
        }
        "bindtoifindex" => setsockopt(fd, libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX, &index()?),
        // IP_UNICAST_IF takes the index in network byte order; IPv6's does not.
        "unicast-if" if v6 => setsockopt(fd, sol_ipv6, libc::IPV6_UNICAST_IF, &index()?),
        "unicast-if" => setsockopt(fd, sol_ip, libc::IP_UNICAST_IF, &index()?.to_be()),
        "multicast-if" if v6 => setsockopt(fd, sol_ipv6, libc::IPV6_MULTICAST_IF, &index()?),
        "multicast-if" => {
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr { s_addr: 0 },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: index()? as i32,
            };
            setsockopt(fd, sol_ip, libc::IP_MULTICAST_IF, &mreq)
        }
        "pktinfo" => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr { s6_addr: [0; 16] },
                ipi6_ifindex: index()?,
            };
            setsockopt(fd, sol_ipv6, libc::IPV6_PKTINFO, &info)
        }
        "join" if v6 => {
            let mreq = libc::ipv6_mreq {
                ipv6mr_multiaddr: libc::in6_addr {
                    s6_addr: Ipv6Addr::new(0xff12, 0, 0, 0, 0, 0, 0, 0x1234).octets(),
                },
                ipv6mr_interface: index()?,
            };
            setsockopt(fd, sol_ipv6, libc::IPV6_ADD_MEMBERSHIP, &mreq)
        }
        "join" => {
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([239, 1, 2, 3]),
                },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: index()? as i32,
            };
            setsockopt(fd, sol_ip, libc::IP_ADD_MEMBERSHIP, &mreq)
        }
        "dontroute" => setsockopt(fd, libc::SOL_SOCKET, libc::SO_DONTROUTE, &1i32),
        "tos" if v6 => setsockopt(fd, sol_ipv6, libc::IPV6_TCLASS, &0x10i32),
        "tos" => setsockopt(fd, sol_ip, libc::IP_TOS, &0x10i32),
        other => Err(format!("unknown --setsockopt {other:?}")),
    }
}

/// Ancillary data for one datagram.
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

/// sendmsg(2) of `payload` to `dst` with the control messages of `cmsgs`.
fn send_with(fd: &OwnedFd, dst: SocketAddr, payload: &[u8], cmsgs: &Cmsgs) -> Result<(), String> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    let to = SockaddrStorage::from(dst);
    let mut control = control(dst, cmsgs);
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives
    // the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = to.as_ptr().cast_mut().cast();
    msg.msg_namelen = to.len();
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if !control.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() as _;
    }
    // SAFETY: msg describes live buffers of the lengths given; the kernel
    // only reads the payload.
    let flags = if cmsgs.dontroute {
        libc::MSG_DONTROUTE
    } else {
        0
    };
    let rc = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, flags) };
    if rc < 0 {
        return Err(op("send")(io::Error::last_os_error()));
    }
    Ok(())
}

/// One datagram to the peer, its reply back.
fn ask_udp(fd: &OwnedFd, dst: SocketAddr, cmsgs: &Cmsgs) -> Result<String, String> {
    send_with(fd, dst, b"?", cmsgs)?;
    let mut buf = [0u8; 1500];
    let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(op("recv"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn ask_tcp(fd: OwnedFd, dst: SocketAddr) -> Result<String, String> {
    socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)).map_err(op("connect"))?;
    let mut line = String::new();
    io::BufReader::new(std::net::TcpStream::from(fd))
        .read_line(&mut line)
        .map_err(op("recv"))?;
    Ok(line)
}

/// An ICMP echo request: the kernel fills the IPv4 header, and for ICMPv6
/// the checksum; an IPv4 one needs its own (of a constant header: 0xf7ff).
fn echo(fd: &OwnedFd, mut dst: SocketAddr, cmsgs: &Cmsgs) -> Result<String, String> {
    // A raw IPv6 socket reads the port as the protocol: 0 means its own.
    dst.set_port(0);
    let packet: [u8; 8] = if dst.is_ipv4() {
        [8, 0, 0xf7, 0xff, 0, 0, 0, 0]
    } else {
        [128, 0, 0, 0, 0, 0, 0, 0]
    };
    send_with(fd, dst, &packet, cmsgs)?;
    Ok("sent".into())
}
