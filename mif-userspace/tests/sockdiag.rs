//! `mif::apply::sockdiag::destroy_tcp` against real sockets, in two throwaway
//! network namespaces joined by a veth pair: "local", where the clients and
//! the destroy run, and "peer", where the servers listen. The root namespace
//! is never touched. Needs root; skips otherwise.
use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    thread,
    time::Duration,
};

use mif::{
    apply::sockdiag::{destroy_tcp, DestroyFilter},
    test_support::TestNetns as Netns,
};
use nix::sys::socket::{setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType};

const LOCAL4: &str = "198.18.9.2";
const PEER4: &str = "198.18.9.1";
const LOCAL6: &str = "2001:db8:9::2";
const PEER6: &str = "2001:db8:9::1";
const MARK_A: u32 = 0x0200_0000;
const MARK_B: u32 = 0x0100_0000;
const MARK_MASK: u32 = 0x7f00_0000;

fn is_root() -> bool {
    mif::test_support::root_or_skip("sockdiag tests (network namespaces, CAP_NET_ADMIN)")
}

/// The two namespaces, with the veth pair between them (created inside
/// "local", its far end moved straight to "peer").
struct Lab {
    local: Netns,
    peer: Netns,
}

impl Lab {
    fn new() -> Self {
        let local = Netns::new("mifsd");
        let peer = Netns::new("mifsd-peer");
        local.veth_to("sd0", &peer, "sd1");
        for (ns, dev, v4, v6) in [
            (&local, "sd0", LOCAL4, LOCAL6),
            (&peer, "sd1", PEER4, PEER6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
        }
        Lab { local, peer }
    }

    /// Echo servers in "peer" on `addrs`, each accepting `conns` connections.
    fn echo_servers(&self, addrs: &[&str], conns: usize) -> Vec<SocketAddr> {
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        let listeners = self.peer.run(move || {
            addrs
                .into_iter()
                .map(|a| TcpListener::bind((a, 0)).expect("listen in peer"))
                .collect::<Vec<_>>()
        });
        listeners
            .into_iter()
            .map(|listener| {
                let addr = listener.local_addr().unwrap();
                thread::spawn(move || {
                    for conn in listener.incoming().take(conns) {
                        let Ok(mut conn) = conn else { continue };
                        thread::spawn(move || {
                            let mut buf = [0; 64];
                            // Ends on EOF or on the reset a destroy sends.
                            while let Ok(n @ 1..) = conn.read(&mut buf) {
                                if conn.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                });
                addr
            })
            .collect()
    }
}

/// `addr` as a C socket address. By hand: the workspace's nix lacks the
/// "net" feature that would convert it.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any
            // socket address.
            let sin = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn check(rc: libc::c_int, what: &str) {
    assert_eq!(rc, 0, "{what}: {}", io::Error::last_os_error());
}

/// A TCP client with SO_MARK `mark`, bound to `source`, connected to `server`.
/// Must run in the namespace the client belongs in.
fn client(source: &str, mark: u32, server: SocketAddr) -> TcpStream {
    let source: IpAddr = source.parse().unwrap();
    let family = match source {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("socket");
    setsockopt(&fd, sockopt::Mark, &mark).expect("SO_MARK");
    if family == AddressFamily::Inet6 {
        // Explicitly dual-stack, for the v4-mapped client.
        let off: libc::c_int = 0;
        // SAFETY: off is a valid int for the duration of the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&raw const off).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        check(rc, "IPV6_V6ONLY");
    }
    let (local, local_len) = sockaddr(SocketAddr::new(source, 0));
    // SAFETY: local is a valid socket address of local_len bytes.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const local).cast(), local_len) };
    check(rc, "bind client");
    let (remote, remote_len) = sockaddr(server);
    // SAFETY: remote is a valid socket address of remote_len bytes.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const remote).cast(), remote_len) };
    check(rc, "connect");
    let stream = TcpStream::from(fd);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// One echo round trip.
fn ping(stream: &mut TcpStream) -> io::Result<()> {
    stream.write_all(b"ping")?;
    let mut buf = [0; 4];
    stream.read_exact(&mut buf)?;
    assert_eq!(&buf, b"ping");
    Ok(())
}

fn assert_aborted(stream: &mut TcpStream, what: &str) {
    let mut buf = [0; 4];
    let err = match stream.read(&mut buf) {
        Ok(n) => panic!("{what}: read {n} bytes from a destroyed socket"),
        Err(err) => err,
    };
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ECONNABORTED),
        "{what}: unexpected error {err}"
    );
}

fn filter(source: &str, mark: Option<(u32, u32)>) -> DestroyFilter {
    DestroyFilter {
        source: Some(source.parse().unwrap()),
        mark,
        ..Default::default()
    }
}

#[test]
fn destroys_by_source_and_mark() {
    if !is_root() {
        return;
    }
    let lab = Lab::new();
    let servers = lab.echo_servers(&[PEER4, PEER6], 2);
    let (server4, server6) = (servers[0], servers[1]);
    lab.local.run(move || {
        let mut a = client(LOCAL4, MARK_A, server4);
        let mut b = client(LOCAL4, MARK_B, server4);
        let mut c = client(LOCAL6, MARK_A, server6);
        for s in [&mut a, &mut b, &mut c] {
            ping(s).expect("echo before destroy");
        }

        let n = destroy_tcp(&filter(LOCAL4, Some((MARK_A, MARK_MASK)))).expect("destroy v4");
        assert_eq!(n, 1, "only the IPv4 client with mark A");
        assert_aborted(&mut a, "IPv4 client with mark A");
        ping(&mut b).expect("IPv4 client with mark B survives");
        ping(&mut c).expect("IPv6 client survives an IPv4 destroy");

        // Nothing left on that address and mark: a second round is a no-op.
        let n = destroy_tcp(&filter(LOCAL4, Some((MARK_A, MARK_MASK)))).expect("destroy again");
        assert_eq!(n, 0);

        let n = destroy_tcp(&filter(LOCAL6, None)).expect("destroy v6");
        assert_eq!(n, 1, "the IPv6 client");
        assert_aborted(&mut c, "IPv6 client");
        ping(&mut b).expect("IPv4 client with mark B survives an IPv6 destroy");
    });
}

#[test]
fn destroys_v4_mapped_sockets_by_ipv4_source() {
    if !is_root() {
        return;
    }
    let lab = Lab::new();
    let server4 = lab.echo_servers(&[PEER4], 3)[0];
    lab.local.run(move || {
        let mapped = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            v6 => v6,
        };
        let server_mapped = SocketAddr::new(mapped(server4.ip()), server4.port());
        let mut plain = client(LOCAL4, MARK_A, server4);
        let mut dual = client("::ffff:198.18.9.2", MARK_A, server_mapped);
        let mut other = client(LOCAL4, MARK_B, server4);
        for s in [&mut plain, &mut dual, &mut other] {
            ping(s).expect("echo before destroy");
        }

        let n = destroy_tcp(&filter(LOCAL4, Some((MARK_A, MARK_MASK)))).expect("destroy");
        assert_eq!(n, 2, "the IPv4 and the v4-mapped IPv6 client with mark A");
        assert_aborted(&mut plain, "IPv4 client");
        assert_aborted(&mut dual, "v4-mapped client");
        ping(&mut other).expect("client with mark B survives");

        // Without a mark condition, everything on the address goes.
        let n = destroy_tcp(&filter(LOCAL4, None)).expect("destroy unmarked");
        assert_eq!(n, 1);
        assert_aborted(&mut other, "client with mark B");
    });
}

#[test]
fn empty_namespace_destroys_nothing() {
    if !is_root() {
        return;
    }
    let lab = Lab::new();
    let n = lab
        .local
        .run(|| destroy_tcp(&filter(LOCAL6, Some((MARK_A, MARK_MASK)))))
        .expect("destroy");
    assert_eq!(n, 0);
}
