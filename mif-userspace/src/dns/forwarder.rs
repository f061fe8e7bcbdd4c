//! The forwarder's sockets and tasks: listeners on loopback (one port per
//! PvD index, UDP and TCP, IPv4 and IPv6), and upstream sockets carrying
//! the chosen PvD's mark and bound to its source address: shared by UDP
//! queries (see [`super::upstream`]), one per TCP query.
use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, RwLock},
    time::Duration,
};

use aya::maps::{Array, MapData};
use log::{debug, info, warn};
use mif_common::{names, DnsForward, MAX_PVDS, PVD_AVAIL_V4, PVD_AVAIL_V6};
use std::net::SocketAddrV6;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpSocket, TcpStream, UdpSocket},
    task::JoinHandle,
};

use super::{
    message,
    upstream::{Route, Upstreams},
};
use crate::backoff::Backoff;
use crate::{
    apply::kernel_maps::KernelMaps,
    apply::pins::PinDir,
    model::pvd::PvdState,
    plan::{ipv4_from_word, ipv6_from_words, only_via_forwarder, pvd_name},
};

/// (domain, PvD name) pairs the forwarder routes by, shared with the
/// daemon, which updates them after each pass (domains come and go with
/// DNSSL options and DHCP leases).
pub type Domains = Arc<RwLock<Vec<(String, String)>>>;

/// How long an upstream resolver has to answer one query (over UDP, up to
/// half a second more: waiting queries are swept twice a second).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How often the PvDs (addresses, marks, resolvers) are re-read from the
/// pinned maps the reconcile loop keeps current.
const REFRESH: Duration = Duration::from_secs(1);
/// Largest DNS message (UDP with EDNS, or TCP).
pub(super) const MAX_MESSAGE: usize = 65_535;

#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error("cannot open pinned map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// What the forwarder knows of one PvD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ForwarderPvd {
    mark: u32,
    /// The interface, the scope of link-local resolvers.
    ifindex: u32,
    addr4: Option<Ipv4Addr>,
    addr6: Option<Ipv6Addr>,
    dns: Vec<IpAddr>,
}

impl ForwarderPvd {
    /// The first resolver reachable from one of the PvD's available
    /// sources, with that source. Link-local resolvers get the PvD's
    /// interface as scope (the kernel's redirection cannot give one, which
    /// is why such queries come here) and its IPv6 source when it has one;
    /// loopback ones would not leave by the PvD: skipped.
    fn upstream(&self) -> Option<(IpAddr, SocketAddr)> {
        self.dns.iter().find_map(|server| match server {
            IpAddr::V4(a) if !a.is_loopback() => {
                Some((IpAddr::V4(self.addr4?), SocketAddr::new(*server, 53)))
            }
            IpAddr::V6(a) if a.is_unicast_link_local() && self.ifindex != 0 => {
                let src = self.addr6.unwrap_or(Ipv6Addr::UNSPECIFIED);
                let scoped = SocketAddrV6::new(*a, 53, 0, self.ifindex);
                Some((IpAddr::V6(src), SocketAddr::V6(scoped)))
            }
            IpAddr::V6(a) if !a.is_loopback() && !a.is_unicast_link_local() => {
                Some((IpAddr::V6(self.addr6?), SocketAddr::new(*server, 53)))
            }
            _ => None,
        })
    }
}

/// The PvDs by index and the declared domains.
#[derive(Debug, Default)]
struct Table {
    pvds: HashMap<u32, ForwarderPvd>,
    /// (domain, PvD index), from the config's `domains` by PvD name.
    domains: Vec<(String, u32)>,
}

impl Table {
    fn read(maps: &KernelMaps, declared: &[(String, String)]) -> Self {
        let mut pvds = HashMap::new();
        let mut index_of = HashMap::new();
        for (index, pvd, meta) in maps.pvds() {
            let Some(meta) = meta else { continue };
            index_of.insert(pvd_name(&meta), index);
            let dns = meta
                .dns
                .iter()
                .take(meta.dns_count as usize)
                .map(|octets| {
                    let v6 = Ipv6Addr::from(*octets);
                    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
                })
                .collect();
            pvds.insert(
                index,
                ForwarderPvd {
                    mark: pvd.mark,
                    ifindex: pvd.ifindex,
                    addr4: (pvd.flags & PVD_AVAIL_V4 != 0).then(|| ipv4_from_word(pvd.addr4)),
                    addr6: (pvd.flags & PVD_AVAIL_V6 != 0).then(|| ipv6_from_words(pvd.addr6)),
                    dns,
                },
            );
        }
        let domains = declared
            .iter()
            .filter_map(|(domain, pvd)| Some((domain.clone(), *index_of.get(pvd)?)))
            .collect();
        Self { pvds, domains }
    }

    /// Where a query that arrived on PvD `index`'s port goes: the PvD of
    /// its name's declared domain if that PvD has a usable resolver, else
    /// the application's own PvD.
    fn route(&self, index: u32, query: &[u8]) -> Option<(u32, IpAddr, SocketAddr)> {
        let declared = message::query_name(query)
            .and_then(|name| message::route(&name, &self.domains))
            .filter(|&pvd| pvd != index);
        declared.into_iter().chain(Some(index)).find_map(|pvd| {
            let view = self.pvds.get(&pvd)?;
            let (src, server) = view.upstream()?;
            Some((view.mark, src, server))
        })
    }
}

/// Runs the forwarder exactly while some PvD needs it: one with DNS
/// domains (declared, or learned from DNSSL or DHCP), or with resolvers
/// only it can reach (link-local). Otherwise the kernel sends queries to
/// the PvDs' resolvers itself, and no port is bound.
pub struct ForwarderControl {
    pins: PinDir,
    port_base: u16,
    domains: Domains,
    running: Option<Forwarder>,
    /// A start failed with this error: logged once, retried each pass.
    failed: Option<String>,
}

impl ForwarderControl {
    /// Turns a previous instance's redirection off until the first
    /// [`Self::follow`] decides.
    pub fn new(pins: &PinDir, port_base: u16) -> Self {
        if let Ok(mut switch) = open_switch(pins) {
            set_switch(&mut switch, 0);
        }
        Self {
            pins: pins.clone(),
            port_base,
            domains: Domains::default(),
            running: None,
            failed: None,
        }
    }

    /// After a pass: the PvDs' domains for routing, and the forwarder
    /// started or stopped as they need. Without it, DNS still follows
    /// each application's PvD; only domains and link-local resolvers are
    /// not honoured, so a failure to start is logged, not fatal.
    pub async fn follow(&mut self, pvds: &[PvdState]) {
        let domains: Vec<(String, String)> = pvds
            .iter()
            .flat_map(|p| p.domains.iter().map(|d| (d.clone(), p.name.clone())))
            .collect();
        let needed = !domains.is_empty() || pvds.iter().any(|p| only_via_forwarder(&p.dns));
        *self.domains.write().unwrap_or_else(|p| p.into_inner()) = domains;
        match (needed, self.running.is_some()) {
            (true, false) => {
                match Forwarder::start(&self.pins, self.port_base, self.domains.clone()).await {
                    Ok(forwarder) => {
                        self.running = Some(forwarder);
                        self.failed = None;
                    }
                    Err(e) => {
                        let text = format!("{e:#}");
                        if self.failed.as_ref() != Some(&text) {
                            warn!("DNS forwarder not started: {text}");
                        }
                        self.failed = Some(text);
                    }
                }
            }
            (false, true) => {
                self.running = None;
                info!("DNS forwarder stopped: no PvD has domains or link-local resolvers");
            }
            _ => {}
        }
    }
}

/// The running forwarder. Dropping it turns the kernel's redirection to it
/// off and stops its tasks.
pub struct Forwarder {
    switch: Array<MapData, DnsForward>,
    tasks: Vec<JoinHandle<()>>,
    upstreams: Arc<Upstreams>,
}

impl Forwarder {
    /// Starts the forwarder on ports `base`.. and turns the kernel's
    /// redirection to it on.
    async fn start(pins: &PinDir, base: u16, domains: Domains) -> Result<Self, ForwarderError> {
        let mut switch = open_switch(pins)?;
        let maps = KernelMaps::open(pins).map_err(|e| ForwarderError::Map {
            name: names::MAP_PVDS,
            source: Box::new(e),
        })?;
        let read = move |maps: &KernelMaps| {
            let domains = domains.read().unwrap_or_else(|p| p.into_inner());
            Table::read(maps, &domains)
        };
        let table = Arc::new(RwLock::new(read(&maps)));
        let upstreams = Upstreams::new(UPSTREAM_TIMEOUT);

        let mut tasks = Vec::new();
        for index in 0..MAX_PVDS {
            let port = base + index as u16;
            for ip in [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ] {
                let addr = SocketAddr::new(ip, port);
                let listen = |source| ForwarderError::Listen { addr, source };
                let udp = match UdpSocket::bind(addr).await {
                    Ok(udp) => udp,
                    // A host without IPv6 has no ::1: IPv4 clients still work.
                    Err(e) if ip.is_ipv6() && e.kind() == io::ErrorKind::AddrNotAvailable => {
                        continue
                    }
                    Err(e) => {
                        tasks.iter().for_each(JoinHandle::abort);
                        return Err(listen(e));
                    }
                };
                let tcp = match TcpListener::bind(addr).await {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        tasks.iter().for_each(JoinHandle::abort);
                        return Err(listen(e));
                    }
                };
                tasks.push(tokio::spawn(serve_udp(
                    udp,
                    index,
                    table.clone(),
                    upstreams.clone(),
                )));
                tasks.push(tokio::spawn(serve_tcp(tcp, index, table.clone())));
            }
        }
        let refresh_table = table.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            loop {
                tick.tick().await;
                let fresh = read(&maps);
                *refresh_table.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            }
        }));
        set_switch(&mut switch, u32::from(base));
        info!(
            "DNS forwarder for domains and link-local resolvers on 127.0.0.1 and ::1, ports {base}-{}",
            u32::from(base) + MAX_PVDS - 1
        );
        Ok(Self {
            switch,
            tasks,
            upstreams,
        })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // Off first, so no new query is sent to a port about to close.
        set_switch(&mut self.switch, 0);
        for task in &self.tasks {
            task.abort();
        }
        self.upstreams.stop();
    }
}

fn open_switch(pins: &PinDir) -> Result<Array<MapData, DnsForward>, ForwarderError> {
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| ForwarderError::Map {
        name: names::MAP_DNS_FWD,
        source,
    };
    let data = MapData::from_pin(pins.map(names::MAP_DNS_FWD)).map_err(|e| fail(Box::new(e)))?;
    Array::try_from(aya::maps::Map::Array(data)).map_err(|e| fail(Box::new(e)))
}

fn set_switch(switch: &mut Array<MapData, DnsForward>, port_base: u32) {
    if let Err(e) = switch.set(0, DnsForward { port_base }, 0) {
        warn!("cannot switch the DNS forwarder redirection to {port_base}: {e}");
    }
}

fn snapshot_route(
    table: &RwLock<Table>,
    index: u32,
    query: &[u8],
) -> Option<(u32, IpAddr, SocketAddr)> {
    table
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .route(index, query)
}

async fn serve_udp(
    socket: UdpSocket,
    index: u32,
    table: Arc<RwLock<Table>>,
    upstreams: Arc<Upstreams>,
) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut backoff = Backoff::new("DNS forwarder (UDP)");
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => {
                backoff.succeeded();
                received
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        let query = &buf[..n];
        // Sent from here, answered by the upstream socket's reader: no
        // task per query.
        match snapshot_route(&table, index, query) {
            Some((mark, src, server)) => {
                let route = Route { mark, src, server };
                if let Err(e) = upstreams.send(route, query, client, &socket).await {
                    debug!("DNS over UDP to {server} failed: {e}");
                }
            }
            None => {
                if let Some(reply) = message::servfail(query) {
                    let _ = socket.send_to(&reply, client).await;
                }
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, index: u32, table: Arc<RwLock<Table>>) {
    let mut backoff = Backoff::new("DNS forwarder (TCP)");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                stream
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        let table = table.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_tcp_client(stream, index, &table).await {
                debug!("DNS over TCP client: {e}");
            }
        });
    }
}

async fn serve_tcp_client(
    mut stream: TcpStream,
    index: u32,
    table: &RwLock<Table>,
) -> io::Result<()> {
    loop {
        let query = match tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await {
            Ok(Ok(Some(query))) => query,
            Ok(Ok(None)) | Err(_) => return Ok(()),
            Ok(Err(e)) => return Err(e),
        };
        let reply = match snapshot_route(table, index, &query) {
            Some((mark, src, server)) => tcp_exchange(mark, src, server, &query).await?,
            None => match message::servfail(&query) {
                Some(reply) => reply,
                None => return Ok(()),
            },
        };
        write_framed(&mut stream, &reply).await?;
    }
}

/// One query over TCP, framed (RFC 1035 §4.2.2).
async fn tcp_exchange(
    mark: u32,
    src: IpAddr,
    server: SocketAddr,
    query: &[u8],
) -> io::Result<Vec<u8>> {
    let socket = if src.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Mark, &mark)?;
    socket.bind(SocketAddr::new(src, 0))?;
    tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        let mut stream = socket.connect(server).await?;
        write_framed(&mut stream, query).await?;
        read_framed(&mut stream)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed without an answer"))
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))?
}

/// A length-prefixed message; None at a clean end of stream.
async fn read_framed(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut msg).await?;
    Ok(Some(msg))
}

async fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "message too long"))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    stream.write_all(&framed).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str) -> Vec<u8> {
        let mut m = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend(label.as_bytes());
        }
        m.extend([0, 0, 1, 0, 1]);
        m
    }

    fn view(n: u8, dns: &[&str]) -> ForwarderPvd {
        ForwarderPvd {
            mark: u32::from(n) << 24,
            ifindex: 0,
            addr4: Some(Ipv4Addr::new(198, 18, n, 2)),
            addr6: None,
            dns: dns.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn link_local_resolvers_get_the_pvds_interface_as_scope() {
        let mut pvd = view(1, &["fe80::53"]);
        assert_eq!(pvd.upstream(), None, "no interface known: no scope");
        pvd.ifindex = 7;
        let (src, server) = pvd.upstream().unwrap();
        assert_eq!(src, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(server, "[fe80::53%7]:53".parse::<SocketAddr>().unwrap());
        pvd.addr6 = Some("2001:db8:1::2".parse().unwrap());
        assert_eq!(
            pvd.upstream().unwrap().0,
            "2001:db8:1::2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn declared_domains_go_to_their_pvd_and_the_rest_to_the_apps() {
        let table = Table {
            pvds: HashMap::from([
                (0, view(0, &["198.18.0.1"])),
                (1, view(1, &["fe80::1", "2001:db8::53", "198.18.1.1"])),
                (2, view(2, &[])),
            ]),
            domains: vec![("corp.lab".into(), 1), ("dead.lab".into(), 2)],
        };
        let to = |index, name| {
            table
                .route(index, &query(name))
                .map(|(m, _, s)| (m >> 24, s))
        };
        let r0: SocketAddr = "198.18.0.1:53".parse().unwrap();
        let r1: SocketAddr = "198.18.1.1:53".parse().unwrap();
        assert_eq!(
            to(0, "host.corp.lab"),
            Some((1, r1)),
            "the v4 resolver: no v6 source"
        );
        assert_eq!(to(0, "whoami.lab"), Some((0, r0)));
        assert_eq!(to(1, "whoami.lab"), Some((1, r1)));
        assert_eq!(
            to(0, "x.dead.lab"),
            Some((0, r0)),
            "a PvD without resolvers"
        );
        assert_eq!(to(2, "whoami.lab"), None);
        assert_eq!(to(9, "host.corp.lab"), Some((1, r1)));
    }
}
