//! Requests and answers on the control socket (JSON, one per line).
use serde::{Deserialize, Serialize};

use crate::{
    host::netlink::{HostRoute, Uplink, UplinkShape},
    model::policies::{Origin, PolicySpec},
    model::pvd::PvdState,
    validation::FamilyValidationView,
};

/// The name serde gives a unit enum variant (`point-to-point`, `ra`...),
/// so views say exactly what JSON says.
fn wire_name(value: impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    Pvds,
    Policies,
    PolicySet(PolicySpec),
    PolicyDel {
        cgroup: String,
    },
    Reload,
    /// Streams [`MonitorEvent`]s until the client goes away.
    Monitor,
    /// Validates a PvD now; answered when its probes end.
    PvdProbe {
        name: String,
    },
    /// The asking process's policy, as the kernel applies it to its
    /// sockets (the MIF API's candidates for `mif_connect`).
    Choices,
    /// Moves the asking process into a cgroup of the daemon's whose policy
    /// prefers `pvd` (the MIF API's `mif_set_process_pvd`), if its own
    /// policy allows it to choose `pvd`. Any local process may ask, for
    /// itself only (the pid is the socket peer's).
    ProcessPvd {
        pvd: String,
    },
}

impl Request {
    /// Decodes one request line as the daemon receives it from any local
    /// user: untrusted, so it must never panic (fuzzed: `fuzz/`).
    pub fn decode(line: &str) -> Result<Self, String> {
        serde_json::from_str(line).map_err(|e| format!("malformed request: {e}"))
    }

    /// Whether the request changes anything (and so needs a privileged peer).
    pub fn is_change(&self) -> bool {
        matches!(
            self,
            Self::PolicySet(_) | Self::PolicyDel { .. } | Self::Reload | Self::PvdProbe { .. }
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok,
    Error(String),
    /// Boxed: the status is several times the size of the other answers.
    Status(Box<StatusView>),
    Pvds(Vec<PvdView>),
    Policies(Vec<PolicyView>),
    /// What `PvdProbe` found, per probed family.
    Probed(Vec<ProbedView>),
    Choices(ChoicesView),
}

/// The answer to [`Request::Choices`]: the policy covering the asking
/// process (the deepest among its cgroup and the cgroup's ancestors), if
/// any, and what it lets the process choose for its own sockets.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChoicesView {
    /// The process's cgroup.
    pub cgroup: String,
    /// The policy's cgroup; None when no policy covers the process.
    pub policy: Option<String>,
    pub prefer: Vec<String>,
    pub allow: Vec<String>,
    pub strict: bool,
}

/// One family's validation after `mif pvd probe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbedView {
    pub family: String,
    #[serde(flatten)]
    pub validation: FamilyValidationView,
}

impl Response {
    /// Decodes one answer line as the CLI receives it.
    pub fn decode(line: &str) -> Result<Self, String> {
        serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub pid: u32,
    pub version: String,
    pub layout_version: u32,
    pub uptime_secs: u64,
    pub pin_dir: String,
    pub attach_cgroup: String,
    pub pvds: usize,
    pub pvds_available: usize,
    pub policies: usize,
    pub policies_pending: usize,
    /// Policies (cgroups) left out of the full policy map: not enforced.
    #[serde(default)]
    pub policies_over_capacity: usize,
    /// Cgroups the policy map holds (its `max_entries`, sized at load).
    #[serde(default)]
    pub policy_capacity: usize,
    /// Why the last reload was refused, if it was.
    pub last_reload_error: Option<String>,
    /// Cgroups the strict policies' egress guard is attached to.
    #[serde(default)]
    pub guarded_cgroups: usize,
    /// Interfaces the strict policies' packet guard is attached to.
    #[serde(default)]
    pub guarded_interfaces: usize,
    /// The guards this kernel cannot run, each with why.
    #[serde(default)]
    pub guards_left_out: Vec<String>,
    /// Why the cgroup watchers (policies for new cgroups inside `mkdir`)
    /// are not attached, if they are not.
    #[serde(default)]
    pub cgroup_watchers_left_out: Option<String>,
    /// Whether they are attached: from the first `unit`, `app` or `user`
    /// policy on (without one they have nothing to do).
    #[serde(default)]
    pub cgroup_watchers_attached: bool,
    /// The on-demand hooks no policy has needed yet (verified, not
    /// attached; see `names::ON_DEMAND_HOOKS`).
    #[serde(default)]
    pub hooks_waiting: Vec<String>,
    /// Why the last pass could not attach a guard somewhere.
    #[serde(default)]
    pub guard_problem: Option<String>,
    /// TCP retransmission timeouts reported for sockets whose mark is no
    /// current PvD's (those of PvDs are in each PvD's `tcp_timeouts`).
    #[serde(default)]
    pub tcp_timeouts_no_pvd: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PvdView {
    pub index: u32,
    pub name: String,
    pub interface: String,
    pub ifindex: Option<u32>,
    pub link_up: bool,
    pub available_v4: bool,
    pub available_v6: bool,
    pub addr4: Option<String>,
    pub addr6: Option<String>,
    pub gateway4: Option<String>,
    pub gateway6: Option<String>,
    pub dns: Vec<String>,
    pub dns_source: String,
    pub mark: String,
    pub table: u32,
    /// `ethernet`, `wifi`, `point-to-point`, ...
    #[serde(default)]
    pub kind: String,
    /// Why the PvD is unavailable for a family (None when it is available).
    #[serde(default)]
    pub why_not_v4: Option<String>,
    #[serde(default)]
    pub why_not_v6: Option<String>,
    /// How the host reaches the internet through the PvD, per family
    /// (`default via 198.18.0.1 (table main)`, `split default dev tun0`...).
    #[serde(default)]
    pub uplink4: Option<String>,
    #[serde(default)]
    pub uplink6: Option<String>,
    /// The host's more-specific routes the PvD's table carries, each with
    /// where it came from (`2001:db8:77::/64 via fe80::2 (ra)`).
    #[serde(default)]
    pub routes: Vec<String>,
    /// Routes of the interface the table does not copy (beyond the cap).
    #[serde(default)]
    pub routes_left_out: usize,
    /// DNS domains its resolvers answer for (RFC 6731), and where they
    /// came from (`config`, `ra`, `dhcp`).
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub domains_source: String,
    /// Validation per family: None while the family is not probed
    /// (validation off, or the family unavailable).
    #[serde(default)]
    pub validation_v4: Option<FamilyValidationView>,
    #[serde(default)]
    pub validation_v6: Option<FamilyValidationView>,
    /// TCP retransmission timeouts (SYN timeouts included) of connections
    /// on the PvD since the daemon started: a sign the network stopped
    /// working. Known to `mif pvd list` only (None in monitor events).
    #[serde(default)]
    pub tcp_timeouts: Option<u64>,
    /// The captive portal's API URI the network announced (RFC 8910), and
    /// where it came from (`ra`, `dhcp`).
    #[serde(default)]
    pub captive_portal_api: Option<String>,
    #[serde(default)]
    pub captive_portal_source: Option<String>,
}

/// An uplink in words.
fn describe_uplink(u: &Uplink, interface: &str) -> String {
    let shape = match u.shape {
        UplinkShape::Default => "default",
        UplinkShape::SplitDefault => "split default",
        UplinkShape::PointToPoint => "point-to-point (no route needed)",
    };
    let hop = match u.gateway {
        Some(gw) => format!("via {gw}"),
        None => format!("dev {interface}"),
    };
    match u.table {
        Some(254) => format!("{shape} {hop} (table main)"),
        Some(table) => format!("{shape} {hop} (table {table})"),
        None => format!("{shape} {hop}"),
    }
}

/// A copied route in words, with its origin.
fn describe_route(r: &HostRoute) -> String {
    let origin = wire_name(r.origin);
    match r.gateway {
        Some(gw) => format!("{}/{} via {gw} ({origin})", r.dst, r.prefix_len),
        None => format!("{}/{} on-link ({origin})", r.dst, r.prefix_len),
    }
}

impl From<&PvdState> for PvdView {
    fn from(p: &PvdState) -> Self {
        let s = |a: Option<String>| a;
        Self {
            index: p.index,
            name: p.name.clone(),
            interface: p.interface.clone(),
            ifindex: p.ifindex,
            link_up: p.up,
            available_v4: p.available4(),
            available_v6: p.available6(),
            addr4: s(p.addr4.map(|a| a.to_string())),
            addr6: s(p.addr6.map(|a| a.to_string())),
            gateway4: p.gateway4().map(|a| a.to_string()),
            gateway6: p.gateway6().map(|a| a.to_string()),
            dns: p.dns.iter().map(|a| a.to_string()).collect(),
            dns_source: wire_name(p.dns_source),
            mark: format!("{:#x}", p.mark),
            table: p.table,
            kind: wire_name(p.kind),
            why_not_v4: p.unavailable_because(false),
            why_not_v6: p.unavailable_because(true),
            uplink4: p.uplink4.as_ref().map(|u| describe_uplink(u, &p.interface)),
            uplink6: p.uplink6.as_ref().map(|u| describe_uplink(u, &p.interface)),
            routes: p.routes.iter().map(describe_route).collect(),
            routes_left_out: p.routes_left_out,
            domains: p.domains.clone(),
            domains_source: wire_name(p.domains_source),
            validation_v4: None,
            validation_v6: None,
            tcp_timeouts: None,
            captive_portal_api: p.captive_portal_api.clone(),
            captive_portal_source: p
                .captive_portal_api
                .as_ref()
                .map(|_| wire_name(p.captive_portal_source)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyView {
    #[serde(flatten)]
    pub spec: PolicySpec,
    pub origin: Origin,
    /// The policy's id (counters) and its cgroup's id, when the cgroup exists.
    pub id: Option<u32>,
    pub cgroup_id: Option<u64>,
    /// "active", or "pending" while its cgroup does not exist.
    pub state: String,
}

/// What `mif monitor` streams.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MonitorEvent {
    /// The first line of a stream: the client is subscribed, and every
    /// change from here on reaches it (a script can act after seeing it).
    Subscribed,
    /// Boxed: a PvD's view is several times the size of the other events.
    Pvd(Box<PvdView>),
    PolicySet(PolicySpec),
    PolicyDel {
        cgroup: String,
    },
    Reload {
        ok: bool,
        error: Option<String>,
    },
}
