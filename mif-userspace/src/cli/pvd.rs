use clap::{Args, Subcommand};

use super::common::{note_daemon_down, or_dash, unexpected, ClientArgs};
use crate::{
    control::{
        client::ClientError,
        protocol::{PvdView, Request, Response},
    },
    report::{table, MapsReport},
};

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
    /// DNS servers (and where they came from), mark, table.
    List,
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
        }
    }
}

fn render(pvds: &[PvdView]) -> String {
    let mut rows = vec![[
        "NAME",
        "INTERFACE",
        "LINK",
        "IPV4",
        "IPV6",
        "GATEWAYS",
        "DNS",
        "MARK",
        "TABLE",
    ]
    .map(String::from)
    .to_vec()];
    for p in pvds {
        let family = |available: bool, addr: &Option<String>| match (available, addr) {
            (true, Some(a)) => a.clone(),
            (false, Some(a)) => format!("{a} (down)"),
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
        ]);
    }
    table(&rows)
}
