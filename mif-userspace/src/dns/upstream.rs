//! The forwarder's UDP queries upstream: one socket per route (the PvD's
//! mark, its source address and the resolver) serves many queries, each
//! sent under an id of the forwarder's choosing and answered to its client
//! under its own.
//!
//! Until 2026-12-02 each query had a socket of its own (socket, bind,
//! SO_MARK, connect, a task, close: eight system calls and mif's own
//! socket hooks per query); the forwarder then topped out at about 40,000
//! queries/s on 2 CPUs, half of what the resolver answers directly, and its
//! queue added most of its latency at 20,000/s (docs/benchmarks.md).
//!
//! What this gives up against a socket per query is source port entropy:
//! a socket is retired after [`QUERIES_PER_SOCKET`] queries or
//! [`SOCKET_LIFETIME`], whichever comes first, so a port lives a second at
//! most (a stub resolver's lives one round trip), and a blind spoofed
//! answer must guess the port and one of the ids waiting on it. The ids
//! are a keyed hash of a counter (SipHash with a random key), none used
//! twice on one socket (a late answer to a query that timed out cannot
//! answer a later one). A retired socket lives until its last query is
//! answered or times out.
use std::{
    collections::{hash_map::RandomState, HashMap, HashSet},
    hash::BuildHasher,
    io,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use log::debug;
use tokio::{net::UdpSocket, task::JoinHandle};

use super::message;

/// Queries one upstream socket carries before a fresh one (another source
/// port) takes over.
const QUERIES_PER_SOCKET: u32 = 64;
/// How long one upstream socket takes queries, however few.
const SOCKET_LIFETIME: Duration = Duration::from_secs(1);
/// How often a reader looks for queries that timed out (and, once its
/// socket is retired or idle, whether it is done).
const SWEEP: Duration = Duration::from_millis(500);

/// Where a query goes upstream: the PvD's mark and source, the resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub mark: u32,
    pub src: IpAddr,
    pub server: SocketAddr,
}

/// A client's query waiting for its answer.
struct Waiter {
    /// The id the client gave it.
    id: u16,
    client: SocketAddr,
    /// The listening socket the client asked, which answers it.
    reply_from: Arc<UdpSocket>,
    since: Instant,
}

/// One upstream socket and the queries it carries.
struct Upstream {
    route: Route,
    socket: UdpSocket,
    born: Instant,
    /// Queries are added only under [`Upstreams::current`]'s lock (and
    /// only while the socket is current), so a reader that holds it sees
    /// the last; answers and timeouts take them out under this lock alone.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiting: HashMap<u16, Waiter>,
    /// Every id this socket was given (at most [`QUERIES_PER_SOCKET`]).
    used: HashSet<u16>,
    sent: u32,
    /// No longer handed queries (rotated, or idle).
    retired: bool,
    last_used: Option<Instant>,
}

impl State {
    /// Whether the socket took no query for `timeout` (or none at all).
    fn idle(&self, timeout: Duration) -> bool {
        self.last_used.is_none_or(|t| t.elapsed() >= timeout)
    }
}

/// The upstream sockets of one forwarder.
pub struct Upstreams {
    current: Mutex<HashMap<Route, Arc<Upstream>>>,
    /// The sockets' readers, stopped with the forwarder.
    readers: Mutex<Vec<JoinHandle<()>>>,
    ids: RandomState,
    counter: AtomicU64,
    timeout: Duration,
}

impl Upstreams {
    /// Queries unanswered after `timeout` are forgotten (their clients
    /// retry, as after a lost datagram).
    pub fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            current: Mutex::new(HashMap::new()),
            readers: Mutex::new(Vec::new()),
            ids: RandomState::new(),
            counter: AtomicU64::new(0),
            timeout,
        })
    }

    /// Sends `query` from `client` (received on `reply_from`) by `route`;
    /// the answer goes back to the client from `reply_from`. A query
    /// without a header is dropped.
    pub async fn send(
        self: &Arc<Self>,
        route: Route,
        query: &[u8],
        client: SocketAddr,
        reply_from: &Arc<UdpSocket>,
    ) -> io::Result<()> {
        let Some(client_id) = message::id(query) else {
            return Ok(());
        };
        let (upstream, id) = self.enqueue(
            route,
            Waiter {
                id: client_id,
                client,
                reply_from: reply_from.clone(),
                since: Instant::now(),
            },
        )?;
        let mut message = query.to_vec();
        message[..2].copy_from_slice(&id.to_be_bytes());
        // An ICMP error for an earlier query (port unreachable) is reported
        // by the socket's next call, which may be this send: it then sent
        // nothing, and is tried once more.
        let sent = match upstream.socket.send(&message).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                upstream.socket.send(&message).await
            }
            other => other,
        };
        if let Err(e) = sent {
            lock(&upstream.state).waiting.remove(&id);
            return Err(e);
        }
        Ok(())
    }

    /// Registers `waiter` with the route's current socket (made, with its
    /// reader, when there is none or it was retired) under a fresh id.
    fn enqueue(self: &Arc<Self>, route: Route, waiter: Waiter) -> io::Result<(Arc<Upstream>, u16)> {
        let mut current = lock(&self.current);
        let upstream = match current.get(&route) {
            Some(upstream) if upstream.born.elapsed() < SOCKET_LIFETIME => upstream.clone(),
            old => {
                if let Some(old) = old {
                    lock(&old.state).retired = true;
                }
                let upstream = Arc::new(Upstream {
                    route,
                    socket: connect(route)?,
                    born: Instant::now(),
                    state: Mutex::default(),
                });
                current.insert(route, upstream.clone());
                let reader = tokio::spawn(read_answers(self.clone(), upstream.clone()));
                let mut readers = lock(&self.readers);
                readers.retain(|r| !r.is_finished());
                readers.push(reader);
                upstream
            }
        };
        let mut state = lock(&upstream.state);
        let id = loop {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let id = self.ids.hash_one(n) as u16;
            if state.used.insert(id) {
                break id;
            }
        };
        state.waiting.insert(id, waiter);
        state.sent += 1;
        state.last_used = Some(Instant::now());
        if state.sent >= QUERIES_PER_SOCKET {
            state.retired = true;
            current.remove(&route);
        }
        drop(state);
        Ok((upstream, id))
    }

    /// Whether the reader of `upstream` is done: it is retired (or, idle
    /// for a timeout, retired now) and nothing waits on it.
    fn done(&self, upstream: &Arc<Upstream>) -> bool {
        {
            // Most calls (after each answer) end here, without the lock
            // every query takes.
            let state = lock(&upstream.state);
            if !state.waiting.is_empty() || (!state.retired && !state.idle(self.timeout)) {
                return false;
            }
        }
        let mut current = lock(&self.current);
        let mut state = lock(&upstream.state);
        if !state.retired && state.idle(self.timeout) && state.waiting.is_empty() {
            state.retired = true;
            if current
                .get(&upstream.route)
                .is_some_and(|u| Arc::ptr_eq(u, upstream))
            {
                current.remove(&upstream.route);
            }
        }
        state.retired && state.waiting.is_empty()
    }

    /// Stops every reader and closes every socket (the forwarder stops):
    /// queries still waiting get no answer.
    pub fn stop(&self) {
        for reader in lock(&self.readers).drain(..) {
            reader.abort();
        }
        lock(&self.current).clear();
    }
}

/// A socket with the route's mark, bound to its source, connected to its
/// resolver (so that only the resolver's datagrams reach it).
fn connect(route: Route) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(SocketAddr::new(route.src, 0))?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Mark, &route.mark)?;
    socket.connect(route.server)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Answers the clients of `upstream` until it is retired and nothing waits.
async fn read_answers(upstreams: Arc<Upstreams>, upstream: Arc<Upstream>) {
    // Room for the largest message, not zeroed.
    let mut buf = Vec::with_capacity(super::forwarder::MAX_MESSAGE);
    loop {
        buf.clear();
        match tokio::time::timeout(SWEEP, upstream.socket.recv_buf(&mut buf)).await {
            Ok(Ok(_)) => answer(&upstream, &mut buf).await,
            // An ICMP error for an earlier datagram (port unreachable):
            // its query times out like a lost one.
            Ok(Err(e)) => debug!("DNS over UDP to {}: {e}", upstream.route.server),
            Err(_) => {}
        }
        let now = Instant::now();
        lock(&upstream.state)
            .waiting
            .retain(|_, w| now.duration_since(w.since) < upstreams.timeout);
        if upstreams.done(&upstream) {
            return;
        }
    }
}

/// Sends `reply` to the client whose query it answers, under the client's
/// id; a reply to no waiting query (late, or stray) is dropped.
async fn answer(upstream: &Upstream, reply: &mut [u8]) {
    let Some(id) = message::id(reply) else {
        return;
    };
    let Some(waiter) = lock(&upstream.state).waiting.remove(&id) else {
        return;
    };
    reply[..2].copy_from_slice(&waiter.id.to_be_bytes());
    let _ = waiter.reply_from.send_to(reply, waiter.client).await;
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolver on loopback that answers each query with itself and
    /// records the source port and id it came with.
    async fn echo_resolver() -> (SocketAddr, Arc<Mutex<Vec<(u16, u16)>>>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            loop {
                let (n, from) = socket.recv_from(&mut buf).await.unwrap();
                let id = message::id(&buf[..n]).unwrap();
                lock(&log).push((from.port(), id));
                socket.send_to(&buf[..n], from).await.unwrap();
            }
        });
        (addr, seen)
    }

    /// Every client gets the answer to its own query under its own id,
    /// though upstream the ids are the forwarder's and one socket carries
    /// up to [`QUERIES_PER_SOCKET`] queries before another port takes over.
    #[tokio::test]
    async fn answers_go_to_their_clients_under_their_ids() {
        // SO_MARK needs CAP_NET_ADMIN.
        if !crate::test_support::root_or_skip("the upstream sockets' test") {
            return;
        }
        let (server, seen) = echo_resolver().await;
        let route = Route {
            mark: 0x4d1f_0000,
            src: IpAddr::from([127, 0, 0, 1]),
            server,
        };
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let upstreams = Upstreams::new(Duration::from_secs(3));
        let clients: Vec<UdpSocket> = clients(4).await;
        let queries = 3 * QUERIES_PER_SOCKET as usize;
        for i in 0..queries {
            let client = &clients[i % clients.len()];
            let query = message::tests::query(i as u16, &format!("q{i}.example"));
            let from = client.local_addr().unwrap();
            upstreams.send(route, &query, from, &listen).await.unwrap();
        }
        for (c, client) in clients.iter().enumerate() {
            let mut got = HashSet::new();
            let mut buf = vec![0u8; 512];
            for _ in (c..queries).step_by(clients.len()) {
                let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
                    .await
                    .expect("an answer")
                    .unwrap();
                let id = message::id(&buf[..n]).unwrap();
                assert_eq!(
                    message::query_name(&buf[..n]).unwrap(),
                    format!("q{id}.example"),
                    "the answer to this client's query {id}"
                );
                got.insert(id);
            }
            let want: HashSet<u16> = (c..queries)
                .step_by(clients.len())
                .map(|i| i as u16)
                .collect();
            assert_eq!(got, want);
        }
        let seen = lock(&seen).clone();
        assert_eq!(seen.len(), queries);
        let ports: HashSet<u16> = seen.iter().map(|(port, _)| *port).collect();
        // Three unless the queries took longer than a socket's lifetime.
        assert!(
            ports.len() >= 3,
            "a fresh port every {QUERIES_PER_SOCKET} queries"
        );
        assert!(ports.len() < queries / 8, "a socket carries many queries");
        let same_ids = seen
            .iter()
            .enumerate()
            .filter(|(i, (_, id))| *id == *i as u16)
            .count();
        assert!(
            same_ids < 4,
            "upstream ids are the forwarder's, not the clients'"
        );
    }

    async fn clients(n: usize) -> Vec<UdpSocket> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        out
    }
}
