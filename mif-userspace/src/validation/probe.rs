//! One probe: resolve the URL's host through the PvD's own resolvers (when
//! it is a name), connect from the PvD's source address with its mark, send
//! `GET` and read the status line and headers.
//!
//! The mark selects the PvD's routing table whatever the main table says
//! (the host's default route may be another network's), and the source
//! address is the PvD's, as a steered application's would be: the probe
//! sees exactly what the applications would. HTTP is hyper's client over
//! that socket; DNS messages are hickory's, sent on a socket set up the
//! same way.
use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, RecordType},
};
use http_body_util::Empty;
use hyper::{body::Bytes, header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::model::validation::{Outcome, ProbeHost, ProbeUrl};

/// Where a probe leaves from: one PvD, one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRoute {
    pub pvd: String,
    pub ifindex: u32,
    pub mark: u32,
    /// The PvD's source address of the probed family.
    pub source: IpAddr,
    /// Its other family's address, to reach a resolver of that family.
    pub other_source: Option<IpAddr>,
    pub resolvers: Vec<IpAddr>,
}

/// The `User-Agent` of probes, so a network's admin can tell them apart.
const USER_AGENT: &str = concat!("mif-validation/", env!("CARGO_PKG_VERSION"));

/// Probes `url` over `route`; whatever happens ends within `timeout`.
pub async fn probe(url: &ProbeUrl, route: &ProbeRoute, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, attempt(url, route)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failed(format!("no answer within {:.1} s", timeout.as_secs_f64())),
    }
}

async fn attempt(url: &ProbeUrl, route: &ProbeRoute) -> Outcome {
    let v6 = route.source.is_ipv6();
    let addr = match &url.host {
        ProbeHost::Addr(a) => *a,
        ProbeHost::Name(name) => match resolve(name, v6, route).await {
            Ok(a) => a,
            Err(outcome) => return outcome,
        },
    };
    let stream = match connect(SocketAddr::new(addr, url.port), route).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("connecting to {addr} port {}: {e}", url.port)),
    };
    match get(stream, url).await {
        Ok((status, location)) if status == StatusCode::NO_CONTENT => {
            let _ = location;
            Outcome::NoContent
        }
        Ok((status, location)) => Outcome::Answered {
            status: status.as_u16(),
            location,
        },
        Err(e) => Outcome::Failed(format!("HTTP from {addr}: {e}")),
    }
}

/// A socket of the PvD: its mark, bound to `source` (port 0).
fn pvd_socket(ty: Type, protocol: Protocol, source: IpAddr, mark: u32) -> io::Result<Socket> {
    let domain = match source {
        IpAddr::V4(_) => Domain::IPV4,
        IpAddr::V6(_) => Domain::IPV6,
    };
    let socket = Socket::new(domain, ty.nonblocking().cloexec(), Some(protocol))?;
    socket.set_mark(mark)?;
    socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    Ok(socket)
}

async fn connect(dst: SocketAddr, route: &ProbeRoute) -> io::Result<tokio::net::TcpStream> {
    let socket = pvd_socket(Type::STREAM, Protocol::TCP, route.source, route.mark)?;
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    socket.connect(dst).await
}

/// Sends `GET` and returns the status and a redirect's `Location`.
async fn get(
    stream: tokio::net::TcpStream,
    url: &ProbeUrl,
) -> Result<(StatusCode, Option<String>), hyper::Error> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection's I/O runs beside the request; it ends with the
    // response (Connection: close) or when the probe is dropped.
    let io = tokio::spawn(connection);
    let request = Request::get(url.path.as_str())
        .header(header::HOST, url.host.header(url.port))
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::CONNECTION, "close")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Empty::<Bytes>::new())
        .expect("a GET with static headers is a valid request");
    let response = sender.send_request(request).await;
    io.abort();
    let response = response?;
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(String::from);
    Ok((response.status(), location))
}

/// The first address of the family for `name`, asked of every resolver of
/// the PvD at once (the first answer wins).
async fn resolve(name: &str, v6: bool, route: &ProbeRoute) -> Result<IpAddr, Outcome> {
    let rtype = if v6 { RecordType::AAAA } else { RecordType::A };
    let fqdn = Name::from_ascii(format!("{name}."))
        .map_err(|e| Outcome::NotProbed(format!("{name:?} is not a DNS name: {e}")))?;
    let asks: Vec<_> = route
        .resolvers
        .iter()
        .filter_map(|&server| {
            let source = [Some(route.source), route.other_source]
                .into_iter()
                .flatten()
                .find(|s| s.is_ipv6() == server.is_ipv6())?;
            Some(Box::pin(ask(fqdn.clone(), rtype, server, source, route)))
        })
        .collect();
    if asks.is_empty() {
        return Err(Outcome::NotProbed(format!(
            "PvD {} has no resolver it can ask for {name}",
            route.pvd
        )));
    }
    match futures::future::select_ok(asks).await {
        Ok((Some(addr), _)) => Ok(addr),
        Ok((None, _)) => Err(Outcome::Failed(format!(
            "{name} has no {} address",
            if v6 { "IPv6" } else { "IPv4" }
        ))),
        Err(e) => Err(Outcome::Failed(format!("resolving {name}: {e}"))),
    }
}

async fn ask(
    name: Name,
    rtype: RecordType,
    server: IpAddr,
    source: IpAddr,
    route: &ProbeRoute,
) -> io::Result<Option<IpAddr>> {
    let socket = pvd_socket(Type::DGRAM, Protocol::UDP, source, route.mark)?;
    let socket = tokio::net::UdpSocket::from_std(socket.into())?;
    let mut dst = SocketAddr::new(server, 53);
    // A link-local resolver (RAs often advertise the router's) is reached
    // on the PvD's own interface.
    if let (SocketAddr::V6(d), IpAddr::V6(a)) = (&mut dst, server) {
        if a.is_unicast_link_local() {
            d.set_scope_id(route.ifindex);
        }
    }
    socket.connect(dst).await?;
    let id: u16 = rand_id();
    let mut query = Message::new();
    query
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name, rtype));
    let bytes = query
        .to_vec()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    socket.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).await?;
        let Ok(answer) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        // Anything else on this connected socket is not our answer.
        if answer.id() != id || answer.message_type() != MessageType::Response {
            continue;
        }
        return Ok(answer.answers().iter().find_map(|r| match r.data() {
            RData::A(a) if rtype == RecordType::A => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) if rtype == RecordType::AAAA => Some(IpAddr::V6(a.0)),
            _ => None,
        }));
    }
}

/// A query id nobody off the path can guess easily: the clock's low bits
/// mixed with the process id (a probe is not a security boundary; the
/// socket is connected and bound to an ephemeral port too).
fn rand_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ (nanos >> 16) ^ std::process::id()) as u16
}
