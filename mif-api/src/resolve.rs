//! Name resolution through one PvD's own resolvers (RFC 6731): the queries
//! leave by that PvD, from its source, to the servers that network gave, so
//! the answers are the ones that network means (its CDN nodes, its
//! internal names).
use std::{
    io,
    net::{IpAddr, SocketAddr, SocketAddrV6, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, RecordType},
};

use crate::{daemon::Pvd, socket::set_socket_pvd, Error};

/// How long one resolver gets to answer before the next is asked.
pub const RESOLVER_TIMEOUT: Duration = Duration::from_millis(1500);

/// The addresses of `host` (IPv6 first, as RFC 8305 orders them) through
/// `pvd`'s resolvers; an address literal is returned as it is.
pub fn resolve(pvd: &Pvd, host: &str) -> Result<Vec<IpAddr>, Error> {
    if let Ok(addr) = host.trim_start_matches('[').trim_end_matches(']').parse() {
        return Ok(vec![addr]);
    }
    let no = |why: String| Error::NoAddress {
        host: host.to_owned(),
        pvd: pvd.name.clone(),
        why,
    };
    let name = Name::from_ascii(host).map_err(|e| no(format!("not a DNS name: {e}")))?;
    if pvd.resolvers.is_empty() {
        return Err(no("the PvD has no resolver".into()));
    }
    let mut problems = Vec::new();
    for &server in &pvd.resolvers {
        match ask(pvd, &name, server) {
            Ok(addrs) if !addrs.is_empty() => return Ok(addrs),
            Ok(_) => problems.push(format!("{server}: no A or AAAA record")),
            Err(e) => problems.push(format!("{server}: {e}")),
        }
    }
    Err(no(problems.join("; ")))
}

/// Asks `server` for `name`'s AAAA and A records on one socket chosen to
/// leave by `pvd`; the addresses of both answers, AAAA first.
fn ask(pvd: &Pvd, name: &Name, server: IpAddr) -> Result<Vec<IpAddr>, Error> {
    let socket = udp_socket(server.is_ipv6())?;
    set_socket_pvd(socket.as_raw_fd(), &pvd.name)?;
    let mut dst = SocketAddr::new(server, 53);
    if let (SocketAddr::V6(d), Some(ifindex)) = (&mut dst, pvd.ifindex) {
        if d.ip().is_unicast_link_local() {
            *d = SocketAddrV6::new(*d.ip(), 53, 0, ifindex);
        }
    }
    socket.connect(dst).map_err(Error::Socket)?;
    let base = query_id();
    let kinds = [RecordType::AAAA, RecordType::A];
    for (i, kind) in kinds.iter().enumerate() {
        let mut query = Message::new();
        query
            .set_id(base.wrapping_add(i as u16))
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(name.clone(), *kind));
        let bytes = query
            .to_vec()
            .map_err(|e| Error::Protocol(format!("DNS query: {e}")))?;
        socket.send(&bytes).map_err(Error::Socket)?;
    }
    let deadline = Instant::now() + RESOLVER_TIMEOUT;
    let mut answers: [Option<Vec<IpAddr>>; 2] = [None, None];
    let mut buf = vec![0u8; 4096];
    while answers.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left)).map_err(Error::Socket)?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(Error::Socket(e)),
        };
        let Ok(answer) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let slot = answer.id().wrapping_sub(base) as usize;
        if answer.message_type() != MessageType::Response || slot >= answers.len() {
            continue;
        }
        let addrs = answer.answers().iter().filter_map(|r| match r.data() {
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        });
        answers[slot] = Some(addrs.collect());
    }
    if answers.iter().all(Option::is_none) {
        return Err(Error::Socket(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer in {} ms", RESOLVER_TIMEOUT.as_millis()),
        )));
    }
    Ok(answers.into_iter().flatten().flatten().collect())
}

/// An unbound UDP socket: the kernel then gives it the PvD's source at
/// connect, where a socket bound to a port first keeps the address the
/// routing picks.
fn udp_socket(v6: bool) -> Result<UdpSocket, Error> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    Ok(UdpSocket::from(new_socket(family, libc::SOCK_DGRAM)?))
}

/// `socket(family, kind | SOCK_CLOEXEC, 0)`.
pub(crate) fn new_socket(family: i32, kind: i32) -> Result<OwnedFd, Error> {
    // SAFETY: plain syscall; the fd it returns is owned by nobody else.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::Socket(io::Error::last_os_error()));
    }
    // SAFETY: fd is a new, valid descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A query id not guessable off the path at a glance: the clock's low bits
/// and the process id (the socket is connected to the resolver and bound to
/// a random port too).
fn query_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ (nanos >> 16) ^ std::process::id()) as u16
}
