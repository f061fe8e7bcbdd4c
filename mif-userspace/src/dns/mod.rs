//! Per-domain DNS selection (RFC 6731) and link-local resolvers: a small
//! forwarder in the daemon.
//!
//! The kernel programs send the DNS queries of `dns = "pvd"` policies
//! straight to the resolver of the socket's PvD. The query name, needed to
//! honour a PvD's `domains` (declared, or learned from DNSSL or a DHCP
//! lease), is in the payload, which no cgroup hook sees, and a link-local
//! resolver needs a scope a hook cannot set; so while some PvD has domains
//! or only link-local resolvers, the programs send those queries to this
//! forwarder instead, on loopback, at port
//! `forwarder_port + PvD index`: the port says which PvD the application's
//! socket was given. The forwarder then asks, by the query name's longest
//! matching domain, that PvD's resolver, and otherwise the
//! application's PvD's, from that PvD's source address with its mark.
//!
//! Messages are relayed byte for byte but for the id of UDP queries, which
//! the forwarder chooses upstream and gives back (see [`upstream`]): EDNS
//! options pass through, and a truncated UDP answer keeps its TC bit so the
//! client retries over TCP, which is forwarded as well.
pub mod forwarder;
pub mod message;
mod upstream;

pub use forwarder::ForwarderControl;
