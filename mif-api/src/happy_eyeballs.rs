//! Happy Eyeballs across PvDs (RFC 8305, with the MIF working group's
//! extension to several interfaces): `connect(host, port)` resolves the
//! name through each candidate PvD's own resolvers, orders the (PvD,
//! address) pairs, starts a connection attempt every
//! [`ConnectOptions::attempt_delay`] (250 ms, RFC 8305's recommended
//! Connection Attempt Delay) without waiting for the earlier ones to fail,
//! and keeps the first that connects; the others are closed.
//!
//! The order ([`order`]): the first PvD of the caller's policy first (the
//! admin's preference), then the PvDs take turns, and within each PvD the
//! address families alternate, IPv6 first (RFC 8305 §4). An attempt that
//! fails at once (refused, unreachable) lets the next start at once. The
//! race starts when the first PvD's addresses are known, or
//! [`ConnectOptions::resolution_delay`] after any PvD's (RFC 8305 §3), so
//! a PvD whose resolver is dead delays nothing.
use std::{
    io,
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::{AsRawFd as _, OwnedFd},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::{daemon, resolve, socket::set_socket_pvd, Error};

/// How often the race looks for resolutions that came in while it waits
/// for attempts (the resolvers answer on threads of their own).
const ANSWER_POLL: Duration = Duration::from_millis(5);

/// How [`connect`] races.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Only these PvDs, in this order; `None`: the ones the caller's
    /// policy allows, in its order.
    pub pvds: Option<Vec<String>>,
    /// Between the starts of two attempts.
    pub attempt_delay: Duration,
    /// How long the race waits for the first PvD's addresses once another
    /// PvD's are known.
    pub resolution_delay: Duration,
    /// The whole call's limit.
    pub timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            pvds: None,
            attempt_delay: Duration::from_millis(250),
            resolution_delay: Duration::from_millis(50),
            timeout: Duration::from_secs(30),
        }
    }
}

/// The connection that won.
#[derive(Debug)]
pub struct Connected {
    pub stream: TcpStream,
    /// The PvD it leaves by.
    pub pvd: String,
    /// The address it connected to.
    pub address: SocketAddr,
    /// How many attempts were started (the winner included).
    pub attempts: usize,
}

/// One PvD's addresses, with its rank in the candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub rank: usize,
    pub addresses: Vec<IpAddr>,
}

/// The attempts in the order they should start, as (rank, address): the
/// PvDs take turns in rank order, and each PvD's own list alternates
/// families, IPv6 first.
pub fn order(resolved: &[Resolved]) -> Vec<(usize, IpAddr)> {
    let mut ranked: Vec<&Resolved> = resolved.iter().collect();
    ranked.sort_by_key(|r| r.rank);
    let lists: Vec<Vec<IpAddr>> = ranked.iter().map(|r| interleave(&r.addresses)).collect();
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::new();
    for turn in 0..longest {
        for (r, list) in ranked.iter().zip(&lists) {
            if let Some(addr) = list.get(turn) {
                out.push((r.rank, *addr));
            }
        }
    }
    out
}

/// RFC 8305 §4: IPv6, IPv4, IPv6, ... keeping each family's own order.
fn interleave(addrs: &[IpAddr]) -> Vec<IpAddr> {
    let (v6, v4): (Vec<IpAddr>, Vec<IpAddr>) = addrs.iter().partition(|a| a.is_ipv6());
    let mut out = Vec::with_capacity(addrs.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// Connects to `host` (a name or an address) on `port` over whichever PvD
/// answers first, as the module documentation describes.
pub fn connect(host: &str, port: u16, options: &ConnectOptions) -> Result<Connected, Error> {
    let all = daemon::pvds()?;
    let candidates: Vec<daemon::Pvd> = match &options.pvds {
        Some(names) => names
            .iter()
            .map(|n| {
                all.iter()
                    .find(|p| &p.name == n)
                    .cloned()
                    .ok_or_else(|| Error::NoSuchPvd(n.clone()))
            })
            .collect::<Result<_, _>>()?,
        None => daemon::choices()?
            .candidates(&all)
            .into_iter()
            .cloned()
            .collect(),
    };
    let candidates: Vec<daemon::Pvd> = candidates
        .into_iter()
        .filter(|p| p.available_v4 || p.available_v6)
        .collect();
    if candidates.is_empty() {
        return Err(Error::ConnectFailed {
            host: host.to_owned(),
            port,
            attempts: "no PvD this process may use is available".into(),
        });
    }
    Race::new(host, port, options, candidates).run()
}

/// An attempt under way.
struct Attempt {
    fd: OwnedFd,
    rank: usize,
    address: SocketAddr,
}

struct Race<'a> {
    host: &'a str,
    port: u16,
    options: &'a ConnectOptions,
    pvds: Vec<daemon::Pvd>,
    answers: mpsc::Receiver<(usize, Result<Vec<IpAddr>, Error>)>,
    resolved: Vec<Resolved>,
    pending_resolutions: usize,
    first_answer: Option<Instant>,
    first_pvd_answered: bool,
    tried: Vec<(usize, IpAddr)>,
    in_flight: Vec<Attempt>,
    failures: Vec<String>,
}

impl<'a> Race<'a> {
    fn new(host: &'a str, port: u16, options: &'a ConnectOptions, pvds: Vec<daemon::Pvd>) -> Self {
        let (send, answers) = mpsc::channel();
        for (rank, pvd) in pvds.iter().enumerate() {
            let (send, pvd, host) = (send.clone(), pvd.clone(), host.to_owned());
            // A thread per PvD: a dead resolver on one delays no other.
            // It ends by itself (each resolver has a timeout); a late
            // answer finds the channel closed.
            std::thread::spawn(move || {
                let _ = send.send((rank, resolve::resolve(&pvd, &host)));
            });
        }
        Self {
            host,
            port,
            options,
            pending_resolutions: pvds.len(),
            pvds,
            answers,
            resolved: Vec::new(),
            first_answer: None,
            first_pvd_answered: false,
            tried: Vec::new(),
            in_flight: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn run(mut self) -> Result<Connected, Error> {
        let deadline = Instant::now() + self.options.timeout;
        let mut next_start = Instant::now();
        loop {
            self.take_answers();
            let now = Instant::now();
            if now >= deadline {
                self.failures.push(format!(
                    "gave up after {} ms",
                    self.options.timeout.as_millis()
                ));
                return Err(self.failed());
            }
            if now >= next_start && self.may_start() {
                if let Some((rank, addr)) = self.next_candidate() {
                    self.tried.push((rank, addr));
                    match self.start(rank, addr) {
                        Ok(attempt) => self.in_flight.push(attempt),
                        Err(why) => {
                            // Failed at once: the next one need not wait.
                            self.failures.push(why);
                            continue;
                        }
                    }
                    next_start = Instant::now() + self.options.attempt_delay;
                }
            }
            if self.in_flight.is_empty()
                && self.pending_resolutions == 0
                && self.next_candidate().is_none()
            {
                return Err(self.failed());
            }
            // Wake at the deadline, for the next start if there is one to
            // make, and (while answers are awaited) soon, to take them;
            // otherwise only an attempt finishing wakes the poll.
            let now = Instant::now();
            let mut wake = deadline;
            if self.may_start() && self.next_candidate().is_some() {
                wake = wake.min(next_start.max(now));
            }
            if self.pending_resolutions > 0 {
                wake = wake.min(now + ANSWER_POLL);
            }
            if let Some(won) = self.wait(wake)? {
                return Ok(won);
            }
            if self.in_flight.is_empty() && self.next_candidate().is_some() {
                // Everything under way failed: go on at once.
                next_start = Instant::now();
            }
        }
    }

    fn take_answers(&mut self) {
        while let Ok((rank, result)) = self.answers.try_recv() {
            self.pending_resolutions -= 1;
            self.first_answer.get_or_insert_with(Instant::now);
            self.first_pvd_answered |= rank == 0;
            match result {
                Ok(addresses) => self.resolved.push(Resolved { rank, addresses }),
                Err(e) => self.failures.push(e.to_string()),
            }
        }
    }

    /// Whether the race may start attempts: the first PvD's answer is in
    /// (or all answers are), or the resolution delay has passed since the
    /// first answer.
    fn may_start(&self) -> bool {
        self.first_pvd_answered
            || self.pending_resolutions == 0
            || self
                .first_answer
                .is_some_and(|t| t.elapsed() >= self.options.resolution_delay)
    }

    fn next_candidate(&self) -> Option<(usize, IpAddr)> {
        order(&self.resolved)
            .into_iter()
            .filter(|(rank, addr)| self.pvds[*rank].available(addr.is_ipv6()))
            .find(|c| !self.tried.contains(c))
    }

    /// Starts one attempt (one that connects at once is in flight too, its
    /// socket already writable); an error is why it failed at once.
    fn start(&mut self, rank: usize, addr: IpAddr) -> Result<Attempt, String> {
        let pvd = &self.pvds[rank].name;
        let address = SocketAddr::new(addr, self.port);
        let what = |e: &dyn std::fmt::Display| format!("{address} over {pvd}: {e}");
        let family = if addr.is_ipv6() {
            libc::AF_INET6
        } else {
            libc::AF_INET
        };
        let fd = resolve::new_socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK)
            .map_err(|e| what(&e))?;
        set_socket_pvd(fd.as_raw_fd(), pvd).map_err(|e| what(&e))?;
        let (storage, len) = sockaddr(&address);
        // SAFETY: storage holds a sockaddr of `len` bytes for the family.
        let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const storage).cast(), len) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(what(&e));
            }
        }
        Ok(Attempt { fd, rank, address })
    }

    /// Polls the attempts until `wake`; the winner, if one connected.
    fn wait(&mut self, wake: Instant) -> Result<Option<Connected>, Error> {
        let timeout = wake.saturating_duration_since(Instant::now());
        let mut fds: Vec<libc::pollfd> = (self.in_flight.iter())
            .map(|a| libc::pollfd {
                fd: a.fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        // SAFETY: fds is a live array of fds.len() pollfds.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                timeout.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(Error::Socket(e));
        }
        if fds.is_empty() {
            // poll with no fds only slept.
            return Ok(None);
        }
        let mut done = Vec::new();
        for (i, pfd) in fds.iter().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            let attempt = &self.in_flight[i];
            match socket_error(attempt.fd.as_raw_fd()) {
                Ok(()) => {
                    let attempt = self.in_flight.swap_remove(i);
                    // The others are closed when `self` drops: cancelled.
                    return Ok(Some(self.won(attempt)?));
                }
                Err(e) => {
                    let pvd = &self.pvds[attempt.rank].name;
                    self.failures
                        .push(format!("{} over {pvd}: {e}", attempt.address));
                    done.push(i);
                }
            }
        }
        for i in done.into_iter().rev() {
            self.in_flight.swap_remove(i);
        }
        Ok(None)
    }

    fn won(&self, attempt: Attempt) -> Result<Connected, Error> {
        let fd = attempt.fd.as_raw_fd();
        // SAFETY: fcntl on a live fd; the flags are read, then written back
        // without O_NONBLOCK, so the caller gets an ordinary socket.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
                return Err(Error::Socket(io::Error::last_os_error()));
            }
        }
        Ok(Connected {
            stream: TcpStream::from(attempt.fd),
            pvd: self.pvds[attempt.rank].name.clone(),
            address: attempt.address,
            attempts: self.tried.len(),
        })
    }

    fn failed(&self) -> Error {
        Error::ConnectFailed {
            host: self.host.to_owned(),
            port: self.port,
            attempts: if self.failures.is_empty() {
                "no address".to_owned()
            } else {
                self.failures.join("; ")
            },
        }
    }
}

/// The pending error of a socket whose connect finished.
fn socket_error(fd: i32) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: err and len are live and len is err's size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    match err {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// `address` as the C `sockaddr` connect(2) takes.
fn sockaddr(address: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match address {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_pvd_goes_first_then_pvds_take_turns_and_families_alternate() {
        let resolved = [
            Resolved {
                rank: 1,
                addresses: vec![ip("192.0.2.2"), ip("2001:db8::2")],
            },
            Resolved {
                rank: 0,
                addresses: vec![ip("192.0.2.1"), ip("192.0.2.11"), ip("2001:db8::1")],
            },
        ];
        assert_eq!(
            order(&resolved),
            [
                (0, ip("2001:db8::1")),
                (1, ip("2001:db8::2")),
                (0, ip("192.0.2.1")),
                (1, ip("192.0.2.2")),
                (0, ip("192.0.2.11")),
            ]
        );
    }

    #[test]
    fn one_family_alone_keeps_its_order() {
        let a = [ip("192.0.2.1"), ip("192.0.2.2")];
        assert_eq!(interleave(&a), a);
        assert!(order(&[]).is_empty());
    }
}
