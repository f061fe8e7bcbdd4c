use clap::{Args, Subcommand};

use super::common::{note_daemon_down, or_dash, unexpected, ClientArgs};
use crate::{
    cli::report::{table, MapsReport},
    control::{
        client::ClientError,
        protocol::{ProbedView, PvdView, Request, Response},
    },
};

/// How long ago a Unix time was, in words (`12 s ago`).
fn ago(unix_secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{} s ago", now.saturating_sub(unix_secs))
}

/// Provisioning domains.
#[derive(Debug, Args)]
pub struct PvdArgs {
    #[command(subcommand)]
    pub command: PvdCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum PvdCommand {
    /// Each PvD: name, interface, state per family, addresses, gateways,
    /// DNS servers (and where they came from), mark, table, and validation
    /// (validated, captive with the portal, failing, unknown; last probe).
    List,
    /// Validate a PvD now (each family it is available for) and show what
    /// the probes found; needs `[validation]` or the PvD's own URL.
    Probe {
        /// The PvD's name, as `mif pvd list` shows it.
        name: String,
    },
}

impl PvdArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        match self.command {
            PvdCommand::List => match self.client.request(&Request::Pvds) {
                Ok(Response::Pvds(pvds)) => self.client.print(&pvds, || render(&pvds)),
                Ok(other) => Err(unexpected(other)),
                Err(e @ ClientError::NotRunning(_)) => {
                    note_daemon_down(&e);
                    let report = MapsReport::read(&self.client.maps()?);
                    self.client.print(&report.pvds, || report.render_pvds())
                }
                Err(e) => Err(e.into()),
            },
            PvdCommand::Probe { name } => {
                match self.client.request(&Request::PvdProbe { name })? {
                    Response::Probed(views) => self.client.print(&views, || render_probed(&views)),
                    Response::Error(e) => anyhow::bail!("{e}"),
                    other => Err(unexpected(other)),
                }
            }
        }
    }
}

fn render_probed(views: &[ProbedView]) -> String {
    let mut out = String::new();
    for v in views {
        out.push_str(&format!(
            "{}: {} ({}, {})\n",
            v.family,
            v.validation.words(),
            v.validation.url,
            v.validation.last_outcome.as_deref().unwrap_or("-"),
        ));
    }
    out
}

/// The VALIDATION column: one state when both families agree.
fn validation_cell(p: &PvdView) -> String {
    match (&p.validation_v4, &p.validation_v6) {
        (None, None) => "-".into(),
        (Some(a), Some(b)) if a.state == b.state => a.state.clone(),
        (a, b) => [("v4", a), ("v6", b)]
            .iter()
            .filter_map(|(f, v)| Some(format!("{f} {}", v.as_ref()?.state)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn render(pvds: &[PvdView]) -> String {
    let mut rows = vec![[
        "NAME",
        "INTERFACE",
        "KIND",
        "LINK",
        "IPV4",
        "IPV6",
        "GATEWAYS",
        "DNS",
        "MARK",
        "TABLE",
        "VALIDATION",
    ]
    .map(String::from)
    .to_vec()];
    let mut notes = Vec::new();
    for p in pvds {
        let family = |available: bool, addr: &Option<String>| match (available, addr) {
            (true, Some(a)) => a.clone(),
            (false, Some(a)) => format!("{a} (unavailable)"),
            _ => "-".into(),
        };
        let gateways: Vec<&str> = p
            .gateway4
            .iter()
            .chain(p.gateway6.iter())
            .map(String::as_str)
            .collect();
        rows.push(vec![
            p.name.clone(),
            match p.ifindex {
                Some(i) => format!("{} ({i})", p.interface),
                None => format!("{} (absent)", p.interface),
            },
            or_dash((!p.kind.is_empty()).then(|| p.kind.clone())),
            if p.link_up { "up" } else { "down" }.into(),
            family(p.available_v4, &p.addr4),
            family(p.available_v6, &p.addr6),
            or_dash((!gateways.is_empty()).then(|| gateways.join(","))),
            if p.dns.is_empty() {
                "-".into()
            } else {
                format!("{} ({})", p.dns.join(","), p.dns_source)
            },
            p.mark.clone(),
            p.table.to_string(),
            validation_cell(p),
        ]);
        notes.extend(pvd_notes(p));
    }
    let mut out = table(&rows);
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            out.push_str(&note);
            out.push('\n');
        }
    }
    out
}

/// What the table has no room for: why a family is unavailable, how the
/// host reaches the internet through the PvD, and the routes its table
/// carries with their origin.
fn pvd_notes(p: &PvdView) -> Vec<String> {
    let mut notes = Vec::new();
    for (family, uplink, why) in [
        ("IPv4", &p.uplink4, &p.why_not_v4),
        ("IPv6", &p.uplink6, &p.why_not_v6),
    ] {
        match (why, uplink) {
            (Some(why), _) => notes.push(format!("{}: {family} unavailable: {why}", p.name)),
            (None, Some(uplink)) => notes.push(format!("{}: {family} uplink: {uplink}", p.name)),
            (None, None) => {}
        }
    }
    if !p.domains.is_empty() {
        let domains = p.domains.join(" ");
        notes.push(format!(
            "{}: domains {domains} ({})",
            p.name, p.domains_source
        ));
    }
    for (family, v) in [("IPv4", &p.validation_v4), ("IPv6", &p.validation_v6)] {
        let Some(v) = v else { continue };
        let when = match v.last_probe {
            Some(at) => format!("last probe {}", ago(at)),
            None => "not probed yet".into(),
        };
        let outcome = v
            .last_outcome
            .as_deref()
            .map_or(String::new(), |o| format!(": {o}"));
        notes.push(format!(
            "{}: {family} {} by {} ({when}{outcome})",
            p.name,
            v.words(),
            v.url
        ));
    }
    if let Some(uri) = &p.captive_portal_api {
        let from = p.captive_portal_source.as_deref().unwrap_or("?");
        notes.push(format!("{}: captive portal API {uri} ({from})", p.name));
    }
    if let Some(n) = p.tcp_timeouts.filter(|&n| n > 0) {
        notes.push(format!("{}: {n} TCP retransmission timeouts", p.name));
    }
    notes.extend(p.routes.iter().map(|r| format!("{}: route {r}", p.name)));
    if p.routes_left_out > 0 {
        let n = p.routes_left_out;
        notes.push(format!(
            "{}: {n} more routes not copied (the widest are)",
            p.name
        ));
    }
    notes
}
