use clap::{Args, Subcommand, ValueEnum};

use super::common::{note_daemon_down, or_dash, unexpected, ClientArgs};
use crate::{
    cli::report::{table, MapsReport},
    control::{
        client::ClientError,
        protocol::{PolicyView, Request, Response},
    },
    model::config::{BindMode, DnsMode, Exclusion, PolicyTerms},
    model::policies::{Origin, PolicySpec},
};

/// Which applications use which networks.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Set the policy of a cgroup (or a container's): takes effect for the
    /// next socket, and is kept across restarts.
    Set(SetArgs),
    /// Remove the policy of a cgroup set with `mif policy set`.
    Del(DelArgs),
    /// Every policy, where it comes from, and whether its cgroup exists.
    List,
}

/// The policy itself, shared with `mif exec`.
#[derive(Debug, Clone, Args)]
pub struct PolicyOptions {
    /// PvDs in order of preference; the first available one is used.
    #[arg(long, value_delimiter = ',', required = true, value_name = "PVD,...")]
    pub prefer: Vec<String>,
    /// Refuse sockets rather than leave by another network when none of
    /// the PvDs is available.
    #[arg(long)]
    pub strict: bool,
    /// How sockets are held to the PvD.
    #[arg(long, value_enum, default_value_t = Bind::Mark)]
    pub bind: Bind,
    /// Reset TCP connections on a lost PvD so applications reconnect.
    #[arg(long)]
    pub reset: bool,
    /// Refuse raw IP sockets, which write their own headers.
    #[arg(long)]
    pub deny_raw: bool,
    /// Where DNS queries (port 53) go: `pvd` sends them to the resolvers of
    /// the socket's PvD, `system` leaves them alone.
    #[arg(long, value_enum, default_value_t = Dns::System)]
    pub dns: Dns,
    /// Destinations that keep the main table's route: prefixes
    /// (192.168.0.0/16), addresses, or interface names (docker0).
    #[arg(long, value_delimiter = ',', value_name = "PREFIX|IF,...")]
    pub exclude: Vec<Exclusion>,
    /// PvDs the processes may also choose for their own sockets with the
    /// MIF API (`SOL_MIF`, `mif connect --pvd`), besides those of
    /// --prefer. Not with --strict.
    #[arg(long, value_delimiter = ',', value_name = "PVD,...")]
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Dns {
    System,
    Pvd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Bind {
    Mark,
    Device,
}

impl PolicyOptions {
    pub fn spec(&self, cgroup: String) -> PolicySpec {
        PolicySpec {
            cgroup: cgroup.into(),
            terms: PolicyTerms {
                prefer: self.prefer.clone(),
                strict: self.strict,
                bind: match self.bind {
                    Bind::Mark => BindMode::Mark,
                    Bind::Device => BindMode::Device,
                },
                reset: self.reset,
                deny_raw: self.deny_raw,
                dns: match self.dns {
                    Dns::System => DnsMode::System,
                    Dns::Pvd => DnsMode::Pvd,
                },
                exclude: self.exclude.clone(),
                allow: self.allow.clone(),
            }
            .into(),
        }
    }
}

#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub policy: PolicyOptions,
}

#[derive(Debug, Args)]
pub struct DelArgs {
    #[command(flatten)]
    pub target: Target,
}

/// What a policy applies to: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// cgroup path relative to the cgroup2 root (see /proc/PID/cgroup), or
    /// a glob pattern (`/system.slice/docker-*.scope`).
    pub cgroup: Option<String>,
    /// A Docker, Podman, containerd or CRI-O container id (or a unique
    /// prefix of 12+ hex digits), or a Kubernetes pod UID.
    #[arg(long, value_name = "ID")]
    pub container: Option<String>,
    /// A systemd unit (`backup.service`), wherever its cgroup is, also
    /// when it starts later.
    #[arg(long, value_name = "UNIT")]
    pub unit: Option<String>,
    /// A desktop application by id (`org.mozilla.firefox`): every scope
    /// or service systemd's desktop naming gives it, for any launcher.
    #[arg(long, value_name = "ID")]
    pub app: Option<String>,
    /// Everything a user runs (a name or a uid): its user-UID.slice.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

impl PolicyArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        match &self.command {
            PolicyCommand::Set(args) => {
                let cgroup = target(&self.client, &args.target)?;
                expect_ok(
                    self.client
                        .request(&Request::PolicySet(args.policy.spec(cgroup))),
                )
            }
            PolicyCommand::Del(args) => {
                let cgroup = target(&self.client, &args.target)?;
                expect_ok(self.client.request(&Request::PolicyDel { cgroup }))
            }
            PolicyCommand::List => match self.client.request(&Request::Policies) {
                Ok(Response::Policies(policies)) => {
                    self.client.print(&policies, || render(&policies))
                }
                Ok(other) => Err(unexpected(other)),
                Err(e @ ClientError::NotRunning(_)) => {
                    note_daemon_down(&e);
                    let report = MapsReport::read(&self.client.maps()?);
                    self.client
                        .print(&report.policies, || report.render_policies())
                }
                Err(e) => Err(e.into()),
            },
        }
    }
}

/// The key a policy verb is about: the cgroup given, the container's, or
/// a selector's (`unit:`, `app:`, `user:`).
fn target(client: &ClientArgs, target: &Target) -> anyhow::Result<String> {
    use crate::host::selector::Selector;
    let selector = match target {
        Target {
            cgroup: Some(cgroup),
            ..
        } => return Ok(cgroup.clone()),
        Target {
            container: Some(id),
            ..
        } => return super::container::cgroup_of(client, id),
        Target { unit: Some(u), .. } => Selector::unit(u),
        Target { app: Some(a), .. } => Selector::app(a),
        Target { user: Some(u), .. } => Selector::user(u),
        _ => anyhow::bail!("name a cgroup, --container, --unit, --app or --user"),
    };
    selector.map(|s| s.key()).map_err(anyhow::Error::msg)
}

pub fn expect_ok(response: Result<Response, ClientError>) -> anyhow::Result<()> {
    match response? {
        Response::Ok => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn render(policies: &[PolicyView]) -> String {
    let mut rows = vec![[
        "CGROUP", "PREFER", "STRICT", "BIND", "RESET", "DNS", "FROM", "STATE", "ID",
    ]
    .map(String::from)
    .to_vec()];
    for p in policies {
        rows.push(vec![
            p.spec.cgroup.to_string(),
            p.spec.terms.prefer.join(","),
            yes_no(p.spec.terms.strict),
            format!("{:?}", p.spec.terms.bind).to_lowercase(),
            yes_no(p.spec.terms.reset),
            format!("{:?}", p.spec.terms.dns).to_lowercase(),
            match &p.origin {
                Origin::Config { file, line } => format!("{}:{line}", file.display()),
                Origin::Cli => "cli".into(),
            },
            p.state.clone(),
            or_dash(p.id),
        ]);
    }
    table(&rows)
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}
