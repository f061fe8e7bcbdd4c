//! Resetting TCP sockets stuck on a lost network, through NETLINK_SOCK_DIAG.
//!
//! When a PvD goes away, sockets bound to its address hang until TCP gives
//! up, which takes minutes. Like Android's netd, mif asks the kernel to abort
//! them (SOCK_DESTROY, CONFIG_INET_DIAG_DESTROY): their owners see
//! ECONNABORTED at once and reconnect over a network that still exists.
//!
//! One round is a dump (SOCK_DIAG_BY_FAMILY) whose bytecode filter makes the
//! kernel select the sockets, then one SOCK_DESTROY per socket found, keyed by
//! its identity including the cookie, so a socket that closed and had its
//! 4-tuple reused in between is left alone.
//!
//! Layouts follow the uapi headers linux/inet_diag.h and linux/sock_diag.h.
//! Fields named `be` there are in network order; everything else, including
//! the bytecode's jump offsets, port and mark, is in host order.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use netlink_packet_core::{
    DoneBuffer, ErrorBuffer, NLA_HEADER_SIZE, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};

use crate::host::netlink::frames;

/// Which sockets to reset: TCP sockets (any state except LISTEN and
/// TIME_WAIT) that meet every condition given: a local address of `source`,
/// a mark with SO_MARK & mask == value (`mark` is `Some((value, mask))`),
/// created in cgroup `cgroup` (its id; that cgroup only, not below it).
/// With `spare_loopback`, sockets whose peer is a loopback address stay.
///
/// An IPv4 `source` also covers IPv6 sockets using it as a v4-mapped address
/// (dual-stack sockets connected to an IPv4 peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DestroyFilter {
    pub source: Option<IpAddr>,
    pub mark: Option<(u32, u32)>,
    pub cgroup: Option<u64>,
    pub spare_loopback: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("cannot open a sock_diag netlink socket")]
    Socket(#[source] io::Error),
    #[error("cannot talk to the kernel over sock_diag")]
    Io(#[source] io::Error),
    #[error("the kernel refused to dump {family} tcp sockets")]
    Dump {
        family: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot destroy tcp socket {local} -> {remote}")]
    Destroy {
        local: SocketAddr,
        remote: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("malformed sock_diag reply: {0}")]
    Malformed(&'static str),
}

/// Resets the TCP sockets matching `filter` in the calling thread's network
/// namespace and returns how many it destroyed. Needs CAP_NET_ADMIN (the
/// mark condition and SOCK_DESTROY both check it). Blocking.
///
/// A socket that vanishes between the dump and its destruction is skipped,
/// not an error: it is gone either way.
pub fn destroy_tcp(filter: &DestroyFilter) -> Result<usize, SockDiagError> {
    let source = filter.source.map(canonical);
    let bytecode = filter_bytecode(source, filter.mark, filter.cgroup);
    // An IPv4 address is also in use by dual-stack IPv6 sockets (as
    // ::ffff:a.b.c.d), which only an AF_INET6 dump lists; the kernel matches
    // them against an AF_INET host condition by itself.
    let families: &[u8] = match source {
        Some(IpAddr::V6(_)) => &[AF_INET6],
        Some(IpAddr::V4(_)) | None => &[AF_INET, AF_INET6],
    };

    let mut sock = NetlinkSocket::open()?;
    let mut victims = Vec::new();
    for &family in families {
        victims.extend(sock.dump(family, &bytecode)?);
    }
    if filter.spare_loopback {
        victims.retain(|v| !canonical(v.remote().ip()).is_loopback());
    }
    // Destroying only after the dumps finish keeps the kernel's dump cursor
    // away from a hash table that we are changing under it.
    let mut destroyed = 0;
    for victim in &victims {
        if sock.destroy(victim)? {
            destroyed += 1;
        }
    }
    Ok(destroyed)
}

// The sock_diag constants from the uapi headers, which neither the libc
// crate nor netlink-packet-core has; the netlink ones come from the latter.
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_BC_S_COND: u8 = 7;
const INET_DIAG_BC_MARK_COND: u8 = 10;
const INET_DIAG_BC_CGROUP_COND: u8 = 13;

const SOCKID_LEN: usize = 48;
const REQ_V2_LEN: usize = 8 + SOCKID_LEN;
/// inet_diag_msg: family, state, timer, retrans, the id, then five u32s.
const DIAG_MSG_LEN: usize = 4 + SOCKID_LEN + 20;
const BC_OP_LEN: usize = 4;
/// inet_diag_hostcond without its address: family, prefix_len, two bytes of
/// padding (the next field is an int), port.
const HOSTCOND_LEN: usize = 8;
const MARKCOND_LEN: usize = 8;
/// The cgroup id (Linux 5.9).
const CGROUPCOND_LEN: usize = 8;

// TCP states (include/net/tcp_states.h), as bits of idiag_states.
const TCP_ESTABLISHED: u32 = 1;
const TCP_TIME_WAIT: u32 = 6;
const TCP_LISTEN: u32 = 10;
const TCP_NEW_SYN_RECV: u32 = 12;

/// The states to dump: every real TCP state but LISTEN (a listener is not
/// tied to a path and may be needed again) and TIME_WAIT (no socket left to
/// reset, and not destroyable). Stops at NEW_SYN_RECV: the pseudo-state
/// BOUND_INACTIVE (13) lists bound, unconnected sockets, which carry no
/// traffic and which SOCK_DESTROY cannot look up.
fn tcp_states() -> u32 {
    let all = (TCP_ESTABLISHED..=TCP_NEW_SYN_RECV).fold(0u32, |m, s| m | 1 << s);
    all & !(1 << TCP_LISTEN | 1 << TCP_TIME_WAIT)
}

fn state_wanted(state: u8) -> bool {
    1u32.checked_shl(state.into())
        .is_some_and(|bit| tcp_states() & bit != 0)
}

/// Treats `::ffff:a.b.c.d` as the IPv4 address it stands for, which is how
/// the kernel reports and matches such sockets.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The INET_DIAG_REQ_BYTECODE program accepting sockets that meet every
/// condition given: their source is exactly `source` (any port), their mark
/// matches `mark`, they were created in cgroup `cgroup`. No condition: the
/// empty program, which accepts every socket.
///
/// The kernel runs ops in sequence: each jumps `yes` bytes ahead when its
/// condition holds and `no` bytes ahead when not; a socket is accepted when
/// the program counter lands exactly on the end. So `yes` is each op's own
/// length (fall through to the next condition) and `no` is the distance to
/// four bytes past the end, the furthest jump the kernel's audit allows and
/// one that can never land on the end: a rejection.
fn filter_bytecode(
    source: Option<IpAddr>,
    mark: Option<(u32, u32)>,
    cgroup: Option<u64>,
) -> Vec<u8> {
    // (op code, condition bytes), in order.
    let mut ops: Vec<(u8, Vec<u8>)> = Vec::new();
    if let Some(source) = source {
        let (family, addr): (u8, Vec<u8>) = match source {
            IpAddr::V4(a) => (AF_INET, a.octets().to_vec()),
            IpAddr::V6(a) => (AF_INET6, a.octets().to_vec()),
        };
        let mut cond = Vec::with_capacity(HOSTCOND_LEN + addr.len());
        cond.push(family);
        cond.push((addr.len() * 8) as u8); // prefix_len in bits: the whole address
        cond.extend_from_slice(&[0, 0]);
        cond.extend_from_slice(&(-1i32).to_ne_bytes()); // any port
        cond.extend_from_slice(&addr);
        ops.push((INET_DIAG_BC_S_COND, cond));
    }
    if let Some((value, mask)) = mark {
        let mut cond = Vec::with_capacity(MARKCOND_LEN);
        cond.extend_from_slice(&value.to_ne_bytes());
        cond.extend_from_slice(&mask.to_ne_bytes());
        ops.push((INET_DIAG_BC_MARK_COND, cond));
    }
    if let Some(id) = cgroup {
        debug_assert_eq!(CGROUPCOND_LEN, 8);
        ops.push((INET_DIAG_BC_CGROUP_COND, id.to_ne_bytes().to_vec()));
    }
    let total: usize = ops.iter().map(|(_, cond)| BC_OP_LEN + cond.len()).sum();
    let mut bc = Vec::with_capacity(total);
    for (code, cond) in ops {
        let len = BC_OP_LEN + cond.len();
        let left = total - bc.len();
        push_op(&mut bc, code, len, left + 4);
        bc.extend_from_slice(&cond);
    }
    debug_assert_eq!(bc.len(), total);
    bc
}

fn push_op(bc: &mut Vec<u8>, code: u8, yes: usize, no: usize) {
    bc.push(code);
    bc.push(u8::try_from(yes).expect("bytecode op longer than 255 bytes"));
    bc.extend_from_slice(
        &u16::try_from(no)
            .expect("bytecode longer than 64 KiB")
            .to_ne_bytes(),
    );
}

/// struct inet_diag_sockid, with addresses kept as the kernel's 16 bytes (an
/// IPv4 address in the first four) so that it round-trips exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SockId {
    sport: u16,
    dport: u16,
    src: [u8; 16],
    dst: [u8; 16],
    ifindex: u32,
    cookie: [u32; 2],
}

impl SockId {
    /// The "any socket" id for dumps: the kernel ignores it there, and the
    /// all-ones cookie is INET_DIAG_NOCOOKIE.
    const WILDCARD: SockId = SockId {
        sport: 0,
        dport: 0,
        src: [0; 16],
        dst: [0; 16],
        ifindex: 0,
        cookie: [u32::MAX; 2],
    };

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.sport.to_be_bytes());
        out.extend_from_slice(&self.dport.to_be_bytes());
        out.extend_from_slice(&self.src);
        out.extend_from_slice(&self.dst);
        out.extend_from_slice(&self.ifindex.to_ne_bytes());
        out.extend_from_slice(&self.cookie[0].to_ne_bytes());
        out.extend_from_slice(&self.cookie[1].to_ne_bytes());
    }

    fn decode(b: &[u8; SOCKID_LEN]) -> Self {
        let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
        SockId {
            sport: u16::from_be_bytes([b[0], b[1]]),
            dport: u16::from_be_bytes([b[2], b[3]]),
            src: b[4..20].try_into().unwrap(),
            dst: b[20..36].try_into().unwrap(),
            ifindex: u32_at(36),
            cookie: [u32_at(40), u32_at(44)],
        }
    }

    fn addr(family: u8, bytes: &[u8; 16], port: u16) -> SocketAddr {
        let ip = if family == AF_INET {
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(*bytes))
        };
        SocketAddr::new(ip, port)
    }
}

/// One socket from a dump: enough to name it in SOCK_DESTROY and in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DiagSocket {
    family: u8,
    state: u8,
    id: SockId,
}

impl DiagSocket {
    fn local(&self) -> SocketAddr {
        SockId::addr(self.family, &self.id.src, self.id.sport)
    }

    fn remote(&self) -> SocketAddr {
        SockId::addr(self.family, &self.id.dst, self.id.dport)
    }
}

/// struct inet_diag_req_v2 for TCP.
fn encode_req_v2(out: &mut Vec<u8>, family: u8, states: u32, id: &SockId) {
    out.push(family);
    out.push(libc::IPPROTO_TCP as u8);
    out.push(0); // idiag_ext: no extensions, the identity is all we use
    out.push(0); // pad
    out.extend_from_slice(&states.to_ne_bytes());
    id.encode(out);
}

fn dump_request(family: u8, seq: u32, bytecode: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(REQ_V2_LEN + NLA_HEADER_SIZE + bytecode.len());
    encode_req_v2(&mut body, family, tcp_states(), &SockId::WILDCARD);
    // Ops are 4-byte multiples, so the attribute gets no padding.
    frames::push_attribute(&mut body, INET_DIAG_REQ_BYTECODE, bytecode);
    frames::request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, &body)
}

fn destroy_request(socket: &DiagSocket, seq: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(REQ_V2_LEN);
    // The kernel finds the socket by id alone; the states are not consulted.
    encode_req_v2(&mut body, socket.family, tcp_states(), &socket.id);
    frames::request(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, seq, &body)
}

/// What one netlink message in a reply says.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Socket(DiagSocket),
    /// End of a dump, with the dump's own status (0 or a negative errno).
    Done(i32),
    /// NLMSG_ERROR: 0 is an ack, otherwise a negative errno.
    Error(i32),
    /// Anything else (NLMSG_NOOP, ...), ignored.
    Other,
}

/// Splits one received datagram into (sequence number, reply) pairs. A
/// frame that cannot be split off rejects the whole datagram: the kernel
/// never sends one, and a reply missing its socket would go unnoticed.
fn parse_replies(buf: &[u8]) -> Result<Vec<(u32, Reply)>, SockDiagError> {
    frames::messages(buf)
        .map(|message| {
            let message = message.map_err(|err| SockDiagError::Malformed(err.as_str()))?;
            let payload = message.payload;
            let reply = match message.kind {
                SOCK_DIAG_BY_FAMILY => Reply::Socket(parse_diag_msg(payload)?),
                // The kernel always puts the dump's status there; a done
                // message too short for it still ends the dump, cleanly.
                NLMSG_DONE => Reply::Done(DoneBuffer::new_checked(payload).map_or(0, |d| d.code())),
                NLMSG_ERROR => Reply::Error(
                    ErrorBuffer::new_checked(payload)
                        .map_err(|_| SockDiagError::Malformed("short netlink error"))?
                        .code()
                        .map_or(0, |errno| errno.get()),
                ),
                _ => Reply::Other,
            };
            Ok((message.seq, reply))
        })
        .collect()
}

/// struct inet_diag_msg; the attributes after it are not needed.
fn parse_diag_msg(payload: &[u8]) -> Result<DiagSocket, SockDiagError> {
    if payload.len() < DIAG_MSG_LEN {
        return Err(SockDiagError::Malformed("short inet_diag_msg"));
    }
    Ok(DiagSocket {
        family: payload[0],
        state: payload[1],
        id: SockId::decode(payload[4..4 + SOCKID_LEN].try_into().unwrap()),
    })
}

fn family_name(family: u8) -> &'static str {
    if family == AF_INET {
        "ipv4"
    } else {
        "ipv6"
    }
}

struct NetlinkSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl NetlinkSocket {
    /// Dump datagrams are at most 32 KiB (the kernel caps its dump skbs
    /// there); twice that leaves room without ever truncating.
    const RECV_BUF: usize = 64 * 1024;

    fn open() -> Result<Self, SockDiagError> {
        // SAFETY: plain syscall; the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(SockDiagError::Socket(io::Error::last_os_error()));
        }
        Ok(Self {
            // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            seq: 0,
            buf: vec![0; Self::RECV_BUF],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, msg: &[u8]) -> Result<(), SockDiagError> {
        // SAFETY: an all-zero sockaddr_nl is valid; pid 0 is the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: msg and kernel are valid for the duration of the call.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&raw const kernel).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(SockDiagError::Io(err));
            }
        }
    }

    /// Receives one datagram and parses it.
    fn recv(&mut self) -> Result<Vec<(u32, Reply)>, SockDiagError> {
        loop {
            // SAFETY: buf is valid for writes of its length. MSG_TRUNC makes
            // the kernel report the full length, so truncation is visible.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(SockDiagError::Io(err));
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(SockDiagError::Malformed(
                    "reply larger than the receive buffer",
                ));
            }
            return parse_replies(&self.buf[..n]);
        }
    }

    /// The TCP sockets of `family` that `bytecode` accepts.
    fn dump(&mut self, family: u8, bytecode: &[u8]) -> Result<Vec<DiagSocket>, SockDiagError> {
        let seq = self.next_seq();
        self.send(&dump_request(family, seq, bytecode))?;
        let refused = |errno: i32| SockDiagError::Dump {
            family: family_name(family),
            source: io::Error::from_raw_os_error(-errno),
        };
        let mut sockets = Vec::new();
        loop {
            for (reply_seq, reply) in self.recv()? {
                if reply_seq != seq {
                    continue; // a late answer to something earlier
                }
                match reply {
                    // The state check is belt and braces: the kernel already
                    // filtered by idiag_states.
                    Reply::Socket(s) if state_wanted(s.state) => sockets.push(s),
                    Reply::Socket(_) | Reply::Other => {}
                    Reply::Done(0) => return Ok(sockets),
                    Reply::Done(errno) | Reply::Error(errno) if errno != 0 => {
                        return Err(refused(errno))
                    }
                    Reply::Done(_) | Reply::Error(_) => {
                        return Err(SockDiagError::Malformed("dump acknowledged without end"))
                    }
                }
            }
        }
    }

    /// Destroys one socket; false when it was already gone.
    fn destroy(&mut self, socket: &DiagSocket) -> Result<bool, SockDiagError> {
        let seq = self.next_seq();
        self.send(&destroy_request(socket, seq))?;
        loop {
            for (reply_seq, reply) in self.recv()? {
                if reply_seq != seq {
                    continue;
                }
                match reply {
                    Reply::Error(0) => return Ok(true),
                    // ENOENT also covers a cookie that no longer matches:
                    // the tuple now belongs to a newer socket.
                    Reply::Error(errno) if -errno == libc::ENOENT => return Ok(false),
                    Reply::Error(errno) => {
                        return Err(SockDiagError::Destroy {
                            local: socket.local(),
                            remote: socket.remote(),
                            source: io::Error::from_raw_os_error(-errno),
                        })
                    }
                    Reply::Socket(_) | Reply::Done(_) | Reply::Other => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }

    fn ne32(v: u32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    #[test]
    fn bytecode_with_source_and_mark() {
        let bc = filter_bytecode(
            Some("198.18.9.2".parse().unwrap()),
            Some((0x0200_0000, 0x7f00_0000)),
            None,
        );
        let mut want = Vec::new();
        // S_COND: 16 bytes long; on mismatch jump to 28 + 4, past the end.
        want.extend_from_slice(&[INET_DIAG_BC_S_COND, 16]);
        want.extend_from_slice(&ne16(32));
        want.extend_from_slice(&[AF_INET, 32, 0, 0]);
        want.extend_from_slice(&(-1i32).to_ne_bytes());
        want.extend_from_slice(&[198, 18, 9, 2]);
        // MARK_COND at offset 16: 12 bytes long, 12 left; reject = 16.
        want.extend_from_slice(&[INET_DIAG_BC_MARK_COND, 12]);
        want.extend_from_slice(&ne16(16));
        want.extend_from_slice(&ne32(0x0200_0000));
        want.extend_from_slice(&ne32(0x7f00_0000));
        assert_eq!(bc, want);
        assert_eq!(bc.len(), 28);
    }

    #[test]
    fn bytecode_ipv6_source_only() {
        let bc = filter_bytecode(Some("2001:db8:9::2".parse().unwrap()), None, None);
        assert_eq!(bc.len(), 28);
        assert_eq!(&bc[0..2], &[INET_DIAG_BC_S_COND, 28]);
        assert_eq!(&bc[2..4], &ne16(32));
        assert_eq!(&bc[4..8], &[AF_INET6, 128, 0, 0]);
        assert_eq!(&bc[8..12], &(-1i32).to_ne_bytes());
        assert_eq!(
            &bc[12..28],
            &"2001:db8:9::2".parse::<Ipv6Addr>().unwrap().octets()
        );
    }

    /// The kernel's interpreter (inet_diag_bc_run) over our programs: the
    /// jump offsets must accept exactly when every condition holds.
    fn run(bc: &[u8], source_ok: bool, mark_ok: bool) -> bool {
        run_with(bc, source_ok, mark_ok, true)
    }

    fn run_with(bc: &[u8], source_ok: bool, mark_ok: bool, cgroup_ok: bool) -> bool {
        let mut pc = 0usize;
        let mut len = bc.len() as isize;
        while len > 0 {
            let yes = match bc[pc] {
                INET_DIAG_BC_S_COND => source_ok,
                INET_DIAG_BC_MARK_COND => mark_ok,
                INET_DIAG_BC_CGROUP_COND => cgroup_ok,
                other => panic!("unexpected op {other}"),
            };
            let step = if yes {
                bc[pc + 1] as usize
            } else {
                u16::from_ne_bytes([bc[pc + 2], bc[pc + 3]]) as usize
            };
            pc += step;
            len -= step as isize;
        }
        len == 0
    }

    #[test]
    fn bytecode_jumps_accept_only_full_matches() {
        let both = filter_bytecode(Some("198.18.9.2".parse().unwrap()), Some((1, 1)), None);
        assert!(run(&both, true, true));
        assert!(!run(&both, true, false));
        assert!(!run(&both, false, true));
        assert!(!run(&both, false, false));
        let source_only = filter_bytecode(Some("2001:db8::1".parse().unwrap()), None, None);
        assert!(run(&source_only, true, false));
        assert!(!run(&source_only, false, true));
        // What a strict policy's arrival resets: unmarked sockets of one
        // cgroup, whatever their source.
        let unmarked = filter_bytecode(None, Some((0, 0x7f00_0000)), Some(4242));
        assert_eq!(
            unmarked.len(),
            BC_OP_LEN + MARKCOND_LEN + BC_OP_LEN + CGROUPCOND_LEN
        );
        assert_eq!(unmarked[12], INET_DIAG_BC_CGROUP_COND);
        assert_eq!(&unmarked[16..24], &4242u64.to_ne_bytes());
        assert!(run_with(&unmarked, false, true, true));
        assert!(!run_with(&unmarked, false, true, false));
        assert!(!run_with(&unmarked, false, false, true));
        assert!(filter_bytecode(None, None, None).is_empty());
    }

    #[test]
    fn v4_mapped_source_is_ipv4() {
        let mapped: IpAddr = "::ffff:198.18.9.2".parse().unwrap();
        assert_eq!(canonical(mapped), "198.18.9.2".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn states_exclude_listen_and_time_wait() {
        let s = tcp_states();
        assert_eq!(s, 0b1_1011_1011_1110);
        assert_eq!(s & (1 << TCP_LISTEN), 0);
        assert_eq!(s & (1 << TCP_TIME_WAIT), 0);
        assert_eq!(s & 1, 0); // no state 0
        assert_eq!(s & (1 << 13), 0); // BOUND_INACTIVE
    }

    fn sample_id() -> SockId {
        let mut src = [0; 16];
        src[..4].copy_from_slice(&[198, 18, 9, 2]);
        let mut dst = [0; 16];
        dst[..4].copy_from_slice(&[198, 18, 9, 1]);
        SockId {
            sport: 0x1234,
            dport: 80,
            src,
            dst,
            ifindex: 7,
            cookie: [0xdead_beef, 0x42],
        }
    }

    #[test]
    fn sockid_layout_round_trips() {
        let id = sample_id();
        let mut b = Vec::new();
        id.encode(&mut b);
        assert_eq!(b.len(), SOCKID_LEN);
        assert_eq!(&b[0..4], &[0x12, 0x34, 0, 80]); // ports big-endian
        assert_eq!(&b[4..8], &[198, 18, 9, 2]);
        assert_eq!(&b[20..24], &[198, 18, 9, 1]);
        assert_eq!(&b[36..40], &ne32(7));
        assert_eq!(&b[40..44], &ne32(0xdead_beef));
        assert_eq!(&b[44..48], &ne32(0x42));
        assert_eq!(SockId::decode(b.as_slice().try_into().unwrap()), id);
    }

    #[test]
    fn dump_request_layout() {
        let bc = filter_bytecode(Some("198.18.9.2".parse().unwrap()), None, None);
        let msg = dump_request(AF_INET, 9, &bc);
        assert_eq!(msg.len(), 16 + 56 + 4 + 16);
        // nlmsghdr
        assert_eq!(&msg[0..4], &ne32(msg.len() as u32));
        assert_eq!(&msg[4..6], &ne16(SOCK_DIAG_BY_FAMILY));
        assert_eq!(&msg[6..8], &ne16(0x301));
        assert_eq!(&msg[8..12], &ne32(9));
        assert_eq!(&msg[12..16], &ne32(0));
        // inet_diag_req_v2
        assert_eq!(&msg[16..20], &[AF_INET, 6, 0, 0]);
        assert_eq!(&msg[20..24], &ne32(tcp_states()));
        assert_eq!(&msg[24..28], &[0; 4]); // ports
        assert_eq!(&msg[64..72], &[0xff; 8]); // INET_DIAG_NOCOOKIE
                                              // the bytecode attribute
        assert_eq!(&msg[72..74], &ne16(20));
        assert_eq!(&msg[74..76], &ne16(INET_DIAG_REQ_BYTECODE));
        assert_eq!(&msg[76..], bc.as_slice());
    }

    #[test]
    fn destroy_request_layout() {
        let socket = DiagSocket {
            family: AF_INET,
            state: TCP_ESTABLISHED as u8,
            id: sample_id(),
        };
        let msg = destroy_request(&socket, 3);
        assert_eq!(msg.len(), 16 + 56);
        assert_eq!(&msg[0..4], &ne32(72));
        assert_eq!(&msg[4..6], &ne16(21));
        assert_eq!(&msg[6..8], &ne16(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(&msg[8..12], &ne32(3));
        assert_eq!(&msg[16..18], &[AF_INET, libc::IPPROTO_TCP as u8]);
        let mut id = Vec::new();
        sample_id().encode(&mut id);
        assert_eq!(&msg[24..], id.as_slice());
    }

    use frames::test_message as nlmsg;

    #[test]
    fn parses_dump_replies() {
        let mut diag = vec![AF_INET, TCP_ESTABLISHED as u8, 0, 0];
        sample_id().encode(&mut diag);
        diag.extend_from_slice(&[0; 20]);
        // An attribute after the fixed part (INET_DIAG_MARK) is skipped.
        diag.extend_from_slice(&[8, 0, 15, 0, 1, 2, 3, 4]);
        let mut buf = nlmsg(SOCK_DIAG_BY_FAMILY, 5, &diag);
        buf.extend(nlmsg(NLMSG_DONE, 5, &0i32.to_ne_bytes()));
        let replies = parse_replies(&buf).unwrap();
        let want = DiagSocket {
            family: AF_INET,
            state: TCP_ESTABLISHED as u8,
            id: sample_id(),
        };
        assert_eq!(replies, vec![(5, Reply::Socket(want)), (5, Reply::Done(0))]);
        assert_eq!(want.local(), "198.18.9.2:4660".parse().unwrap());
        assert_eq!(want.remote(), "198.18.9.1:80".parse().unwrap());
    }

    #[test]
    fn parses_errors_and_acks() {
        let mut err = (-libc::ENOENT).to_ne_bytes().to_vec();
        err.extend(frames::request(SOCK_DESTROY, 0, 4, &[0; 56])); // echoed request
        let mut buf = nlmsg(NLMSG_ERROR, 4, &err);
        buf.extend(nlmsg(NLMSG_ERROR, 5, &[0; 20]));
        assert_eq!(
            parse_replies(&buf).unwrap(),
            vec![(4, Reply::Error(-libc::ENOENT)), (5, Reply::Error(0))]
        );
    }

    #[test]
    fn rejects_malformed_replies() {
        assert!(parse_replies(&[1, 2, 3]).is_err());
        let mut bad_len = nlmsg(NLMSG_DONE, 1, &[0; 4]);
        bad_len[0..4].copy_from_slice(&ne32(100));
        assert!(parse_replies(&bad_len).is_err());
        assert!(parse_replies(&nlmsg(SOCK_DIAG_BY_FAMILY, 1, &[0; 40])).is_err());
        assert!(parse_replies(&nlmsg(NLMSG_ERROR, 1, &[])).is_err());
    }
}
