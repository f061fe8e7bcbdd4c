//! The daemon's policy file (TOML): which PvDs exist beyond the implicit
//! one-per-interface, and which cgroup prefers which PvDs.
//!
//! Parsing and checking are pure so they can be unit-tested without root;
//! every error names the file, line, field and value at fault.
use std::{
    collections::{HashMap, HashSet},
    fmt,
    ops::Range,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use mif_common::{MAX_PREFER, PVD_NAME_LEN};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::config_pieces;
use crate::model::validation::{
    ProbeUrl, PvdValidation, Timing, ValidationConfig, DEFAULT_INTERVAL, MAX_INTERVAL, MIN_INTERVAL,
};

/// A checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub pvds: Vec<PvdConfig>,
    /// Empty once a `PolicySet` took them (at start and on reload): a
    /// running daemon keeps one copy of its policies, the set's.
    pub policies: Vec<PolicyConfig>,
    /// `[control] group`: a group whose members may change policies
    /// through the control socket, besides root; with its line.
    pub control_group: Option<(String, usize)>,
    /// `[dns] forwarder_port`: first loopback port of the DNS forwarder
    /// (one port per PvD index), used when some PvD declares `domains`.
    pub dns_forwarder_port: u16,
    /// `[dns] leases`: where the host's DHCP clients keep their leases
    /// (files, or a directory's files with `*` in the last part); the
    /// resolvers in them serve PvDs without configured or RA-learned ones.
    pub dns_leases: Vec<PathBuf>,
    /// `[limits] policy_capacity`: room for at least this many cgroups with
    /// a policy in the kernel's policy map (sized at start; see
    /// `plan::policy_capacity_for`), for policies added later by the CLI or
    /// patterns without a restart.
    pub policy_capacity: Option<usize>,
    /// `[validation]`: probe every PvD through itself (see
    /// [`crate::model::validation`]); None: nothing is probed but PvDs
    /// with a `validation` URL of their own.
    pub validation: Option<ValidationConfig>,
}

/// Default first port of the DNS forwarder: below 1024, so that only root
/// can listen there. The kernel keeps sending queries to these ports while
/// the daemon restarts (or after it was killed); an unprivileged port could
/// be taken over meanwhile by any local user, who would then read and answer
/// other applications' DNS. 700–763 collides only with Kerberos
/// administration (749) on KDCs; `[dns] forwarder_port` moves it.
pub const DEFAULT_FORWARDER_PORT: u16 = 700;

/// An explicit PvD: a name for an interface that may not exist yet, and
/// optionally a fixed mark or routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvdConfig {
    pub name: String,
    pub interface: String,
    pub mark: Option<u32>,
    pub table: Option<u32>,
    /// Configured DNS servers; they take precedence over RA-learned ones.
    pub dns: Vec<std::net::IpAddr>,
    /// DNS domains (RFC 6731) whose names this PvD's resolvers answer for
    /// every `dns = "pvd"` application, lowercase, no trailing dot.
    pub domains: Vec<String>,
    /// `validation`: inherit `[validation]`, off, or a URL of its own.
    pub validation: PvdValidation,
    /// The file it is in, as for policies.
    pub file: Arc<Path>,
    pub line: usize,
}

/// Which resolvers a policy's DNS queries go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsMode {
    /// Untouched: whatever resolver the application asks (resolv.conf).
    #[default]
    System,
    /// The resolvers of the socket's PvD, from its source address.
    Pvd,
}

/// How a policy holds its sockets to the PvD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BindMode {
    /// Socket mark only: routing by the PvD's table and source address.
    #[default]
    Mark,
    /// Also SO_BINDTODEVICE to the PvD's interface.
    Device,
}

/// A destination a policy leaves to the main table (`exclude`): a prefix
/// (`192.168.0.0/16`, `fd00::/8`, a bare address for one host), or an
/// interface name (`docker0`), which stands for the prefixes the host
/// routes through that interface, as they are at each pass.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Exclusion {
    Prefix(std::net::IpAddr, u8),
    Interface(String),
}

impl std::str::FromStr for Exclusion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        match addr.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let len = match len {
                    None => max,
                    Some(len) => len
                        .parse::<u8>()
                        .ok()
                        .filter(|l| *l <= max)
                        .ok_or_else(|| format!("prefix length must be 0 to {max}"))?,
                };
                Ok(Self::Prefix(crate::prefix::network(ip, len), len))
            }
            Err(_) if len.is_none() && is_interface_name(text) => {
                Ok(Self::Interface(text.to_string()))
            }
            Err(_) => Err(
                "neither a prefix (192.168.0.0/16, fd00::/8, an address) nor an interface name"
                    .into(),
            ),
        }
    }
}

impl TryFrom<String> for Exclusion {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Exclusion> for String {
    fn from(e: Exclusion) -> String {
        e.to_string()
    }
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Prefix(addr, len) => write!(f, "{addr}/{len}"),
            Self::Interface(name) => f.write_str(name),
        }
    }
}

/// What the kernel takes as an interface name: 1 to 15 bytes, no '/',
/// no whitespace, not `.` or `..`.
fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
}

/// Most exclusions one policy may list.
pub const MAX_EXCLUDE: usize = 64;

/// What a policy asks for its cgroup, the same wherever the policy came
/// from (the config file, the CLI) and once bound to a cgroup. Held behind
/// an `Arc` by every policy record: policies that ask for the same are one
/// allocation (see [`TermsInterner`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyTerms {
    /// PvD names in order of preference.
    pub prefer: Vec<String>,
    #[serde(default)]
    pub strict: bool,
    #[serde(default)]
    pub bind: BindMode,
    /// Reset the policy's TCP connections on a PvD that is lost, so
    /// applications reconnect at once over the next PvD.
    #[serde(default)]
    pub reset: bool,
    /// Refuse raw IP sockets (`SOCK_RAW`), which write their own headers.
    #[serde(default)]
    pub deny_raw: bool,
    /// Where the policy's DNS queries go.
    #[serde(default)]
    pub dns: DnsMode,
    /// Destinations that keep the main table's route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Exclusion>,
    /// PvDs the policy's processes may also choose for their own sockets
    /// with the MIF API, besides those of `prefer` (never with `strict`);
    /// [`ALLOW_ANY`] for any PvD, now or later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

/// Hands out one shared copy of each distinct [`PolicyTerms`]. A file of
/// 100,000 policies typically says the same few things 100,000 times: one
/// `prefer` list (a `Vec` and a `String` per name) per policy was most of
/// the daemon's memory for them.
#[derive(Debug, Default)]
pub struct TermsInterner {
    seen: HashSet<Arc<PolicyTerms>>,
}

impl TermsInterner {
    pub fn intern(&mut self, terms: PolicyTerms) -> Arc<PolicyTerms> {
        if let Some(shared) = self.seen.get(&terms) {
            return Arc::clone(shared);
        }
        let shared = Arc::new(terms);
        self.seen.insert(Arc::clone(&shared));
        shared
    }
}

/// A `[[policy]]` of the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// cgroup path relative to the cgroup2 root, starting with `/`; shared
    /// with the policy's ids and its resolved cgroup.
    pub cgroup: Arc<str>,
    /// Shared with every policy of the file that asks for the same.
    pub terms: Arc<PolicyTerms>,
    /// The file it is in (the config file, or one of the policies
    /// directory's), shared by the file's policies.
    pub file: Arc<Path>,
    pub line: usize,
}

/// Where in the file a problem is, and what it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    /// Dotted field name, e.g. `policy.prefer`.
    pub field: String,
    pub value: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        if !self.value.is_empty() {
            write!(f, " = {}", self.value)?;
        }
        write!(f, ": {}", self.problem)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    pvd: Vec<Spanned<RawPvd>>,
    #[serde(default)]
    policy: Vec<Spanned<RawPolicy>>,
    control: Option<Spanned<RawControl>>,
    dns: Option<Spanned<RawDns>>,
    limits: Option<Spanned<RawLimits>>,
    validation: Option<Spanned<RawValidation>>,
}

impl RawConfig {
    /// The first section beside `[[pvd]]` and `[[policy]]`, with its span:
    /// what a policies directory's file may not have.
    fn section(&self) -> Option<(&'static str, Range<usize>)> {
        let span = |name, s: Option<Range<usize>>| Some((name, s?));
        span("control", self.control.as_ref().map(Spanned::span))
            .or_else(|| span("dns", self.dns.as_ref().map(Spanned::span)))
            .or_else(|| span("limits", self.limits.as_ref().map(Spanned::span)))
            .or_else(|| span("validation", self.validation.as_ref().map(Spanned::span)))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidation {
    url: Spanned<String>,
    /// Seconds, an integer or not.
    interval: Option<Spanned<toml::Value>>,
    timeout: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    policy_capacity: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    forwarder_port: Option<Spanned<i64>>,
    leases: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    group: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPvd {
    name: Spanned<String>,
    interface: Option<Spanned<String>>,
    mark: Option<Spanned<i64>>,
    table: Option<Spanned<i64>>,
    #[serde(default)]
    dns: Vec<Spanned<String>>,
    #[serde(default)]
    domains: Vec<Spanned<String>>,
    /// `false`, or a URL.
    validation: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// Exactly one of `cgroup`, `unit`, `app`, `user`.
    cgroup: Option<Spanned<String>>,
    unit: Option<Spanned<String>>,
    app: Option<Spanned<String>>,
    user: Option<Spanned<toml::Value>>,
    prefer: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    strict: bool,
    #[serde(default)]
    bind: BindMode,
    #[serde(default)]
    reset: bool,
    #[serde(default)]
    deny_raw: bool,
    #[serde(default)]
    dns: DnsMode,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    allow: Option<Spanned<Vec<Spanned<String>>>>,
}

/// An `allow` entry that lets a policy's processes choose any PvD.
pub const ALLOW_ANY: &str = "*";

impl PolicyTerms {
    /// The PvD names this policy names, preferred or allowed (not
    /// [`ALLOW_ANY`]).
    pub fn named_pvds(&self) -> impl Iterator<Item = &String> {
        self.prefer
            .iter()
            .chain(self.allow.iter().filter(|n| n.as_str() != ALLOW_ANY))
    }
}

/// A policy's `allow` list, checked: PvD names (or [`ALLOW_ANY`]), each once, and none with
/// `strict` (a strict policy's processes choose among `prefer` only, so an
/// `allow` there would promise what the kernel refuses).
fn checked_allow(
    checker: &Checker<'_>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    strict: bool,
) -> Result<Vec<String>, ConfigError> {
    let Some(allow) = allow else {
        return Ok(Vec::new());
    };
    let span = allow.span();
    let items = allow.into_inner();
    if strict && !items.is_empty() {
        return Err(checker.error(
            span,
            "policy.allow",
            format!("{} entries", items.len()),
            "a strict policy's processes may choose among its prefer list only: \
             drop allow, or strict",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let name = item.get_ref();
        if name != ALLOW_ANY && (name.is_empty() || name.len() >= mif_common::PVD_NAME_LEN) {
            return Err(checker.error(
                item.span(),
                "policy.allow",
                format!("{:?}", item.get_ref()),
                format!(
                    "a PvD name of 1 to {} bytes, or {ALLOW_ANY:?} for any",
                    mif_common::PVD_NAME_LEN - 1
                ),
            ));
        }
        if out.contains(item.get_ref()) {
            return Err(checker.error(
                item.span(),
                "policy.allow",
                format!("{:?}", item.get_ref()),
                "listed twice",
            ));
        }
        out.push(item.into_inner());
    }
    Ok(out)
}

/// Byte offsets of a text's line starts, so that the line of any offset is
/// a binary search: error messages and `PolicyConfig::line` need it for
/// every entry, and counting newlines from the start each time made parsing
/// quadratic (100,000 policies took minutes).
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { starts }
    }

    /// Line (1-based) of a byte offset.
    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset)
    }
}

/// Errors and line numbers for one piece of a file (see
/// [`config_pieces`]): spans are the piece's, `base` is where it starts.
struct Checker<'a> {
    file: &'a Path,
    lines: &'a LineIndex,
    base: usize,
}

impl Checker<'_> {
    /// The file's line of an offset into the piece.
    fn line_of(&self, offset: usize) -> usize {
        self.lines.line_of(self.base + offset)
    }

    /// A TOML error of the piece, at the file's line.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        error_in(
            self.file,
            e.span().map_or(0, |s| self.line_of(s.start)),
            "",
            "",
            e.message().to_string(),
        )
    }

    fn error(
        &self,
        span: Range<usize>,
        field: &str,
        value: impl fmt::Display,
        problem: impl Into<String>,
    ) -> ConfigError {
        error_in(self.file, self.line_of(span.start), field, value, problem)
    }
}

/// Reads and parses `path`. Checks that need the host (interfaces, cgroups)
/// are made by [`Config::check_prefer`] and the daemon.
///
/// The parsed TOML document takes far more memory than the checked
/// [`Config`] made from it (about 2 KiB per `[[policy]]` against 50 bytes:
/// 200 MiB for 100,000 policies). It is built on a thread of its own, so
/// that it and everything allocated among it come from that thread's
/// malloc arena, and the `Config` kept is a copy made on the caller's
/// thread: once the parse's memory is freed, its pages are free whole and
/// [`crate::memory::give_back`] can return them, where records scattered
/// among them would have kept most pages resident.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        field: String::new(),
        value: String::new(),
        problem: format!("cannot read: {e}"),
    })?;
    let parsed = std::thread::scope(|s| {
        let parser = std::thread::Builder::new()
            .name("mif-config".into())
            .spawn_scoped(s, || parse(path, &text));
        match parser {
            Ok(parser) => parser
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to be had: parse here, only the memory is kept longer.
            Err(_) => parse(path, &text),
        }
    })?;
    Ok(parsed.clone())
}

/// Parses configuration text; `path` is only used in errors.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_file(path, text, false)
}

/// [`parse`], for a config file or (`part`) a policies directory's file,
/// which holds `[[pvd]]` and `[[policy]]` entries only.
///
/// A long run of `[[policy]]` entries at the end is cut into pieces parsed
/// on another thread while this one checks them (see [`config_pieces`]):
/// with 100,000 policies TOML's document was most of a start and of its
/// peak memory.
fn parse_file(path: &Path, text: &str, part: bool) -> Result<Config, ConfigError> {
    parse_in_pieces(path, text, part, config_pieces::POLICIES_PER_PIECE)
}

/// [`parse_file`], cutting pieces of `per_piece` policies.
fn parse_in_pieces(
    path: &Path,
    text: &str,
    part: bool,
    per_piece: usize,
) -> Result<Config, ConfigError> {
    let lines = LineIndex::new(text);
    let cuts = config_pieces::policy_cuts(text, per_piece);
    let head = &text[..cuts.first().copied().unwrap_or(text.len())];
    let checker = Checker {
        file: path,
        lines: &lines,
        base: 0,
    };
    let file: Arc<Path> = Arc::from(path);
    let mut policies = Policies::new(Arc::clone(&file));
    // The head (all but the pieces) in the order a whole parse checks it:
    // its syntax, sections, PvDs and policies; then the pieces' policies,
    // in order; then the head's other sections.
    let mut head_rest = None;
    config_pieces::parse_pieces::<RawConfig, ConfigError, _>(
        text,
        &cuts,
        &mut policies,
        |policies| {
            let mut raw: RawConfig = toml::from_str(head).map_err(|e| checker.toml_error(&e))?;
            if let Some((section, span)) = raw.section().filter(|_| part) {
                return Err(checker.error(
                    span,
                    section,
                    "",
                    "a policies directory file holds [[pvd]] and [[policy]] entries only; this belongs in the config file",
                ));
            }
            let pvds = check_pvds(&checker, std::mem::take(&mut raw.pvd), &file)?;
            policies.add(&checker, std::mem::take(&mut raw.policy))?;
            head_rest = Some((raw, pvds));
            Ok(())
        },
        |policies, base, piece| {
            let checker = Checker {
                file: path,
                lines: &lines,
                base,
            };
            policies.add(&checker, piece.map_err(|e| checker.toml_error(&e))?.policy)
        },
    )?;
    let (raw, pvds) = head_rest.expect("the head is checked first");
    let policies = policies.finish();

    let control_group = raw
        .control
        .and_then(|c| c.into_inner().group)
        .map(|g| (g.get_ref().clone(), checker.line_of(g.span().start)));
    let dns = raw.dns.map(Spanned::into_inner);
    let dns_leases = match dns.as_ref().and_then(|d| d.leases.as_ref()) {
        None => crate::host::dns_leases::DEFAULT_LEASE_PATHS
            .iter()
            .map(PathBuf::from)
            .collect(),
        Some(paths) => {
            let mut out = Vec::new();
            for path in paths {
                if !path.get_ref().starts_with('/') {
                    return Err(checker.error(
                        path.span(),
                        "dns.leases",
                        format!("{:?}", path.get_ref()),
                        "must be an absolute path",
                    ));
                }
                out.push(PathBuf::from(path.get_ref()));
            }
            out
        }
    };
    let dns_forwarder_port = match dns.and_then(|d| d.forwarder_port) {
        None => DEFAULT_FORWARDER_PORT,
        Some(port) => {
            let n = *port.get_ref();
            // Every PvD index gets base + index: the whole range must fit.
            match u16::try_from(n) {
                Ok(p) if p > 0 && u32::from(p) + mif_common::MAX_PVDS <= 65_535 => p,
                _ => {
                    return Err(checker.error(
                        port.span(),
                        "dns.forwarder_port",
                        n,
                        format!(
                            "must be between 1 and {} (one port per PvD follows it)",
                            65_535 - mif_common::MAX_PVDS
                        ),
                    ))
                }
            }
        }
    };
    let policy_capacity = match raw.limits.and_then(|l| l.into_inner().policy_capacity) {
        None => None,
        Some(n) => {
            let max = crate::plan::POLICY_CAPACITY_MAX;
            match usize::try_from(*n.get_ref()) {
                Ok(c) if (1..=max).contains(&c) => Some(c),
                _ => {
                    return Err(checker.error(
                        n.span(),
                        "limits.policy_capacity",
                        *n.get_ref(),
                        format!("must be between 1 and {max} (the largest policy map)"),
                    ))
                }
            }
        }
    };
    let validation = raw
        .validation
        .map(|v| validation_section(&checker, v))
        .transpose()?;
    Ok(Config {
        path: path.to_path_buf(),
        pvds,
        policies,
        control_group,
        dns_forwarder_port,
        dns_leases,
        policy_capacity,
        validation,
    })
}

/// The `[[pvd]]` entries, checked.
fn check_pvds(
    checker: &Checker<'_>,
    raw: Vec<Spanned<RawPvd>>,
    file: &Arc<Path>,
) -> Result<Vec<PvdConfig>, ConfigError> {
    let mut pvds = Vec::new();
    let mut names = HashSet::new();
    for pvd in raw {
        let line = checker.line_of(pvd.span().start);
        let pvd = pvd.into_inner();
        let name = pvd.name.get_ref().clone();
        if name.is_empty() || name.len() >= PVD_NAME_LEN || !name.chars().all(is_name_char) {
            return Err(checker.error(
                pvd.name.span(),
                "pvd.name",
                format!("{name:?}"),
                format!(
                    "PvD names are 1 to {} characters of letters, digits, '-', '_' and '.'",
                    PVD_NAME_LEN - 1
                ),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(checker.error(
                pvd.name.span(),
                "pvd.name",
                format!("{name:?}"),
                "declared twice",
            ));
        }
        let interface = match pvd.interface {
            Some(i) if i.get_ref().is_empty() => {
                return Err(checker.error(
                    i.span(),
                    "pvd.interface",
                    "\"\"",
                    "must name an interface",
                ))
            }
            Some(i) => i.into_inner(),
            // A PvD named after its interface, declared so it may appear later.
            None => name.clone(),
        };
        let mark = pvd
            .mark
            .map(|m| to_u32(checker, m, "pvd.mark"))
            .transpose()?;
        let table = pvd
            .table
            .map(|t| to_u32(checker, t, "pvd.table"))
            .transpose()?;
        let mut dns = Vec::new();
        for server in &pvd.dns {
            let text = server.get_ref();
            let addr = text.parse().map_err(|_| {
                checker.error(
                    server.span(),
                    "pvd.dns",
                    format!("{text:?}"),
                    "not an IP address",
                )
            })?;
            dns.push(addr);
        }
        if dns.len() > mif_common::MAX_DNS {
            return Err(checker.error(
                pvd.name.span(),
                "pvd.dns",
                format!("{} servers", dns.len()),
                format!("at most {} DNS servers per PvD", mif_common::MAX_DNS),
            ));
        }
        let mut domains = Vec::new();
        for domain in &pvd.domains {
            let text = domain.get_ref();
            let normal = text.trim_end_matches('.').to_ascii_lowercase();
            if !is_domain(&normal) {
                return Err(checker.error(
                    domain.span(),
                    "pvd.domains",
                    format!("{text:?}"),
                    "not a domain name (labels of letters, digits, '-' and '_', 1-63 characters each)",
                ));
            }
            domains.push(normal);
        }
        let validation = match pvd.validation {
            None => PvdValidation::Inherit,
            Some(v) => match v.get_ref() {
                toml::Value::Boolean(false) => PvdValidation::Off,
                toml::Value::Boolean(true) => PvdValidation::Inherit,
                toml::Value::String(text) => {
                    PvdValidation::Url(ProbeUrl::parse(text).map_err(|problem| {
                        checker.error(v.span(), "pvd.validation", format!("{text:?}"), problem)
                    })?)
                }
                other => {
                    return Err(checker.error(
                        v.span(),
                        "pvd.validation",
                        other,
                        "must be false (never probe this PvD) or an http:// URL",
                    ))
                }
            },
        };
        pvds.push(PvdConfig {
            name,
            interface,
            mark,
            table,
            dns,
            domains,
            validation,
            file: Arc::clone(file),
            line,
        });
    }
    Ok(pvds)
}

/// The policies of a file as its pieces are checked, in the file's order:
/// each cgroup once, equal terms shared (see [`TermsInterner`]).
struct Policies {
    file: Arc<Path>,
    policies: Vec<PolicyConfig>,
    cgroups: HashSet<Arc<str>>,
    interner: TermsInterner,
}

impl Policies {
    fn new(file: Arc<Path>) -> Self {
        Self {
            file,
            policies: Vec::new(),
            cgroups: HashSet::new(),
            interner: TermsInterner::default(),
        }
    }

    /// Checks the next `[[policy]]` entries of the file.
    fn add(
        &mut self,
        checker: &Checker<'_>,
        raw: Vec<Spanned<RawPolicy>>,
    ) -> Result<(), ConfigError> {
        self.policies.reserve(raw.len());
        for policy in raw {
            let line = checker.line_of(policy.span().start);
            let span = policy.span();
            let policy = policy.into_inner();
            let (cgroup, key_span) = policy_key(checker, &policy, span)?;
            let cgroup: Arc<str> = cgroup.into();
            if !self.cgroups.insert(Arc::clone(&cgroup)) {
                return Err(checker.error(
                    key_span,
                    "policy.cgroup",
                    format!("{cgroup:?}"),
                    "a policy for this cgroup is already defined above",
                ));
            }
            let prefer_span = policy.prefer.span();
            let prefer_items = policy.prefer.into_inner();
            if prefer_items.is_empty() || prefer_items.len() > MAX_PREFER {
                return Err(checker.error(
                    prefer_span,
                    "policy.prefer",
                    format!("{} entries", prefer_items.len()),
                    format!("list 1 to {MAX_PREFER} PvDs"),
                ));
            }
            // A list of at most MAX_PREFER: a scan, not a set per policy.
            let mut prefer: Vec<String> = Vec::with_capacity(prefer_items.len());
            for item in prefer_items {
                if prefer.contains(item.get_ref()) {
                    return Err(checker.error(
                        item.span(),
                        "policy.prefer",
                        format!("{:?}", item.get_ref()),
                        "listed twice",
                    ));
                }
                prefer.push(item.into_inner());
            }
            if policy.exclude.len() > MAX_EXCLUDE {
                return Err(checker.error(
                    prefer_span,
                    "policy.exclude",
                    format!("{} entries", policy.exclude.len()),
                    format!("at most {MAX_EXCLUDE} exclusions per policy"),
                ));
            }
            let mut exclude = Vec::new();
            for item in &policy.exclude {
                let parsed: Exclusion = item.get_ref().parse().map_err(|problem: String| {
                    checker.error(
                        item.span(),
                        "policy.exclude",
                        format!("{:?}", item.get_ref()),
                        problem,
                    )
                })?;
                if !exclude.contains(&parsed) {
                    exclude.push(parsed);
                }
            }
            let allow = checked_allow(checker, policy.allow, policy.strict)?;
            self.policies.push(PolicyConfig {
                cgroup,
                terms: self.interner.intern(PolicyTerms {
                    prefer,
                    strict: policy.strict,
                    bind: policy.bind,
                    reset: policy.reset,
                    deny_raw: policy.deny_raw,
                    dns: policy.dns,
                    exclude,
                    allow,
                }),
                file: Arc::clone(&self.file),
                line,
            });
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<PolicyConfig> {
        // Grown by doubling piece by piece: up to a third of it unused
        // (1.7 MiB with 100,000 policies), kept for the daemon's lifetime.
        self.policies.shrink_to_fit();
        self.policies
    }
}

/// What a policy applies to: its cgroup path (normalized) or its
/// selector's key (`unit:`, `app:`, `user:`), with the span to blame.
fn policy_key(
    checker: &Checker<'_>,
    policy: &RawPolicy,
    span: Range<usize>,
) -> Result<(String, Range<usize>), ConfigError> {
    use crate::host::selector::Selector;
    let given = [
        policy.cgroup.as_ref().map(|_| "cgroup"),
        policy.unit.as_ref().map(|_| "unit"),
        policy.app.as_ref().map(|_| "app"),
        policy.user.as_ref().map(|_| "user"),
    ];
    let given: Vec<&str> = given.into_iter().flatten().collect();
    if given.len() != 1 {
        return Err(checker.error(
            span,
            "policy",
            if given.is_empty() {
                "none".to_string()
            } else {
                given.join(" and ")
            },
            "give exactly one of cgroup, unit, app or user",
        ));
    }
    let selected = |field: &str, span: Range<usize>, value: String, s: Result<Selector, String>| {
        s.map(|s| (s.key(), span.clone()))
            .map_err(|problem| checker.error(span, field, value, problem))
    };
    if let Some(cgroup) = &policy.cgroup {
        let text = cgroup.get_ref();
        // A selector's key is not a path: `unit = ...` says it plainly.
        let checked = match crate::host::selector::is_selector(text) {
            true => Err(format!(
                "a cgroup path starts with '/' (for a selector write {} = ...)",
                text.split(':').next().unwrap_or_default()
            )),
            false => crate::host::cgroup::check_cgroup_path(text),
        };
        if let Err(problem) = checked {
            return Err(checker.error(
                cgroup.span(),
                "policy.cgroup",
                format!("{text:?}"),
                problem,
            ));
        }
        return Ok((crate::host::cgroup::normalize_cgroup(text), cgroup.span()));
    }
    if let Some(unit) = &policy.unit {
        let text = unit.get_ref();
        return selected(
            "policy.unit",
            unit.span(),
            format!("{text:?}"),
            Selector::unit(text),
        );
    }
    if let Some(app) = &policy.app {
        let text = app.get_ref();
        return selected(
            "policy.app",
            app.span(),
            format!("{text:?}"),
            Selector::app(text),
        );
    }
    let user = policy.user.as_ref().expect("one selector is given");
    let parsed = match user.get_ref() {
        toml::Value::String(name) => Selector::user(name),
        toml::Value::Integer(uid) => u32::try_from(*uid)
            .map(Selector::User)
            .map_err(|_| "a uid is 0 to 4294967295".to_string()),
        _ => Err("a user name or a uid".to_string()),
    };
    selected(
        "policy.user",
        user.span(),
        user.get_ref().to_string(),
        parsed,
    )
}

/// `[validation]`, checked.
fn validation_section(
    checker: &Checker<'_>,
    section: Spanned<RawValidation>,
) -> Result<ValidationConfig, ConfigError> {
    let raw = section.into_inner();
    let url = ProbeUrl::parse(raw.url.get_ref()).map_err(|problem| {
        checker.error(
            raw.url.span(),
            "validation.url",
            format!("{:?}", raw.url.get_ref()),
            problem,
        )
    })?;
    let seconds = |v: &Spanned<toml::Value>, field: &str, min: Duration| {
        let secs = match v.get_ref() {
            toml::Value::Integer(n) => Some(*n as f64),
            toml::Value::Float(f) => Some(*f),
            _ => None,
        };
        secs.filter(|s| s.is_finite())
            .map(Duration::from_secs_f64)
            .filter(|d| (min..=MAX_INTERVAL).contains(d))
            .ok_or_else(|| {
                checker.error(
                    v.span(),
                    field,
                    v.get_ref(),
                    format!(
                        "must be a number of seconds from {} to {}",
                        min.as_secs_f64(),
                        MAX_INTERVAL.as_secs()
                    ),
                )
            })
    };
    let interval = match &raw.interval {
        None => DEFAULT_INTERVAL,
        Some(v) => seconds(v, "validation.interval", MIN_INTERVAL)?,
    };
    let mut timing = Timing::with_interval(interval);
    if let Some(v) = &raw.timeout {
        timing.timeout = seconds(v, "validation.timeout", Duration::from_millis(100))?;
    }
    Ok(ValidationConfig { url, timing })
}

/// A DNS name as `domains` takes it: dot-separated labels.
fn is_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn to_u32(checker: &Checker<'_>, v: Spanned<i64>, field: &str) -> Result<u32, ConfigError> {
    let n = *v.get_ref();
    u32::try_from(n)
        .map_err(|_| checker.error(v.span(), field, n, "must be between 0 and 4294967295"))
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// An error at `line` of `file`.
pub fn error_in(
    file: &Path,
    line: usize,
    field: &str,
    value: impl fmt::Display,
    problem: impl Into<String>,
) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line,
        field: field.into(),
        value: value.to_string(),
        problem: problem.into(),
    }
}

/// Where a daemon's configuration comes from: the config file and the
/// policies directory (see [`load_all`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSources {
    pub file: PathBuf,
    pub dir: Option<PathBuf>,
}

impl ConfigSources {
    pub fn load(&self) -> Result<Config, ConfigError> {
        load_all(&self.file, self.dir.as_deref())
    }
}

/// The policies directory's default (`mif daemon --policies-dir`).
pub const DEFAULT_POLICIES_DIR: &str = "/etc/mif/policies.d";

/// The config file and, after it, the `*.toml` files of `dir` in name
/// order (a directory that does not exist has none), merged into one
/// config: each file's `[[pvd]]` and `[[policy]]` entries are added to the
/// config file's; the other sections belong in the config file only. A PvD
/// named twice or a cgroup given two policies across files is an error
/// naming the later file and line. Names starting with `.` are left out:
/// a Kubernetes ConfigMap volume keeps its data under `..data` and
/// `..TIMESTAMP` beside the files, which are symlinks into them.
pub fn load_all(path: &Path, dir: Option<&Path>) -> Result<Config, ConfigError> {
    let mut config = load(path)?;
    let Some(dir) = dir else {
        return Ok(config);
    };
    let files = policy_files(dir)?;
    // The daemon reads the default directory even where there is none:
    // a config file's 100,000 policies need no map then.
    if files.is_empty() {
        return Ok(config);
    }
    // Which file and line already has a policy for a cgroup: a map, not a
    // scan of every policy so far for each new one (quadratic in the
    // directory's policies).
    let mut first: HashMap<Arc<str>, (Arc<Path>, usize)> = (config.policies.iter())
        .map(|p| (Arc::clone(&p.cgroup), (Arc::clone(&p.file), p.line)))
        .collect();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| error_in(&file, 0, "", "", format!("cannot read: {e}")))?;
        let part = parse_file(&file, &text, true)?;
        for pvd in part.pvds {
            if config.pvds.iter().any(|p| p.name == pvd.name) {
                return Err(error_in(
                    &file,
                    pvd.line,
                    "pvd.name",
                    format!("{:?}", pvd.name),
                    "declared in another file already",
                ));
            }
            config.pvds.push(pvd);
        }
        config.policies.reserve(part.policies.len());
        for policy in part.policies {
            let at = (Arc::clone(&policy.file), policy.line);
            if let Some((in_file, line)) = first.insert(Arc::clone(&policy.cgroup), at) {
                return Err(error_in(
                    &file,
                    policy.line,
                    "policy",
                    format!("{:?}", policy.cgroup),
                    format!("has a policy in {}:{line} already", in_file.display()),
                ));
            }
            config.policies.push(policy);
        }
    }
    Ok(config)
}

/// The `*.toml` files of a policies directory, in name order.
pub fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(error_in(
                dir,
                0,
                "",
                "",
                format!("cannot read the policies directory: {e}"),
            ))
        }
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            // `is_file` follows symlinks: a ConfigMap's file is one.
            !name.starts_with('.') && name.ends_with(".toml") && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

impl Config {
    /// Checks that every preferred PvD is known: an explicit `[[pvd]]` or an
    /// interface that exists now (an implicit PvD).
    pub fn check_prefer(&self, interfaces: &HashSet<String>) -> Result<(), ConfigError> {
        let explicit: HashSet<&str> = self.pvds.iter().map(|p| p.name.as_str()).collect();
        for policy in &self.policies {
            let terms = &policy.terms;
            let named = (terms.prefer.iter().map(|n| ("policy.prefer", n))).chain(
                (terms.allow.iter())
                    .filter(|n| n.as_str() != ALLOW_ANY)
                    .map(|n| ("policy.allow", n)),
            );
            for (field, name) in named {
                if !explicit.contains(name.as_str()) && !interfaces.contains(name) {
                    return Err(error_in(
                        &policy.file,
                        policy.line,
                        field,
                        format!("{name:?}"),
                        "unknown PvD: neither a [[pvd]] name nor an existing interface (declare a [[pvd]] for an interface that appears later)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks explicit marks against the mark mask.
    pub fn check_marks(&self, mask: u32) -> Result<(), ConfigError> {
        for pvd in &self.pvds {
            if let Some(mark) = pvd.mark {
                let shift = mask.trailing_zeros();
                if mark == 0
                    || mark & !mask != 0
                    || mif_common::pvd_from_mark(mark, mask, shift).is_none()
                {
                    return Err(error_in(
                        &pvd.file,
                        pvd.line,
                        "pvd.mark",
                        format!("{mark:#x}"),
                        format!(
                            "outside the mark mask {mask:#x} (or beyond the {} PvDs mif holds)",
                            mif_common::MAX_PVDS
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn error_at(
        &self,
        line: usize,
        field: &str,
        value: impl fmt::Display,
        problem: impl Into<String>,
    ) -> ConfigError {
        error_in(&self.path, line, field, value, problem)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_index_finds_lines() {
        let lines = super::LineIndex::new("a\nbc\n\nd");
        let got: Vec<usize> = (0..8).map(|o| lines.line_of(o)).collect();
        assert_eq!(got, [1, 1, 2, 2, 2, 3, 4, 4]);
    }

    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("mif.toml"), text)
    }

    /// A file parsed in pieces of one policy means what it means whole:
    /// the same config, or the same error at the same line.
    #[test]
    fn pieces_parse_as_the_whole_file() {
        let policy = |cg: &str, extra: &str| {
            format!("[[policy]]\ncgroup = \"{cg}\"\nprefer = [\"a\", \"b\"]\n{extra}")
        };
        let run: String = (0..6).map(|i| policy(&format!("/p{i}"), "")).collect();
        let head = "[dns]\nforwarder_port = 5300\n[[pvd]]\nname = \"a\"\n";
        let texts = [
            format!("{head}{run}"),
            format!("{run}{head}"),
            format!("{run}{}", policy("/p9", "dns = \"pvd\"\nstrict = true\n")),
            // Errors in a later piece, at its own line.
            format!("{run}{}", policy("/p2", "")),
            format!("{run}{}", policy("/p9", "bogus = 1\n")),
            format!("{run}{}", policy("/p9", "prefer = [\"a\"]\n")),
            format!("{run}[[policy]]\ncgroup = \"/p9\"\nprefer = [\"a\",\n"),
            format!("{run}{}", policy("/p9", "exclude = [\"nonsense\"]\n")),
            // A head that is not an array of tables, extended after.
            format!("policy = []\n{run}"),
        ];
        for (i, text) in texts.iter().enumerate() {
            // Not cut: the policies before other sections, an unclosed array.
            if ![1, 6].contains(&i) {
                let cuts = config_pieces::policy_cuts(text, 1);
                assert!(cuts.len() >= 5, "not cut: {text}");
            }
            let whole = parse_in_pieces(Path::new("mif.toml"), text, false, usize::MAX);
            let pieces = parse_in_pieces(Path::new("mif.toml"), text, false, 1);
            assert_eq!(pieces, whole, "{text}");
        }
        let text = format!("{run}{}", policy("/p2", ""));
        let e = parse_in_pieces(Path::new("mif.toml"), &text, false, 1).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (20, "policy.cgroup"), "{e}");
    }

    #[test]
    fn policies_by_app_unit_and_user_are_keyed_by_their_selector() {
        let config = parse_str(
            "[[policy]]\napp = \"org.mozilla.firefox\"\nprefer = [\"a\"]\n\
             [[policy]]\nunit = \"backup.service\"\nprefer = [\"a\"]\n\
             [[policy]]\nuser = 1000\nprefer = [\"a\"]\n\
             [[policy]]\nuser = \"root\"\nprefer = [\"a\"]\n",
        )
        .unwrap();
        let keys: Vec<&str> = config.policies.iter().map(|p| &*p.cgroup).collect();
        assert_eq!(
            keys,
            [
                "app:org.mozilla.firefox",
                "unit:backup.service",
                "user:1000",
                "user:0"
            ]
        );
        for (text, line, field, value) in [
            ("[[policy]]\nprefer = [\"a\"]\n", 1, "policy", "none"),
            (
                "[[policy]]\napp = \"x.y\"\nunit = \"b.service\"\nprefer = [\"a\"]\n",
                1,
                "policy",
                "unit and app",
            ),
            (
                "\n[[policy]]\nunit = \"backup\"\nprefer = [\"a\"]\n",
                3,
                "policy.unit",
                "\"backup\"",
            ),
            (
                "[[policy]]\napp = \"a/b\"\nprefer = [\"a\"]\n",
                2,
                "policy.app",
                "\"a/b\"",
            ),
            (
                "[[policy]]\nuser = \"no-such-user-here\"\nprefer = [\"a\"]\n",
                2,
                "policy.user",
                "\"no-such-user-here\"",
            ),
            (
                "[[policy]]\ncgroup = \"unit:x.service\"\nprefer = [\"a\"]\n",
                2,
                "policy.cgroup",
                "\"unit:x.service\"",
            ),
        ] {
            let err = parse_str(text).unwrap_err();
            assert_eq!(
                (err.line, err.field.as_str(), err.value.as_str()),
                (line, field, value),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn a_policies_directory_adds_entries_in_name_order_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("mif.toml");
        let parts = dir.path().join("policies.d");
        std::fs::create_dir(&parts).unwrap();
        std::fs::write(&main, "[[pvd]]\nname = \"a\"\n").unwrap();
        let policy = |cgroup: &str| format!("[[policy]]\ncgroup = {cgroup:?}\nprefer = [\"a\"]\n");
        std::fs::write(parts.join("20-b.toml"), policy("/b")).unwrap();
        std::fs::write(parts.join("10-a.toml"), policy("/a")).unwrap();
        // A ConfigMap's own entries and other files are left out.
        std::fs::create_dir(parts.join("..data")).unwrap();
        std::fs::write(parts.join("..data/x.toml"), "garbage").unwrap();
        std::fs::write(parts.join("notes.txt"), "garbage").unwrap();
        let config = load_all(&main, Some(&parts)).unwrap();
        let got: Vec<(&str, String)> = config
            .policies
            .iter()
            .map(|p| (&*p.cgroup, p.file.display().to_string()))
            .collect();
        let at = |f: &str| parts.join(f).display().to_string();
        assert_eq!(got, [("/a", at("10-a.toml")), ("/b", at("20-b.toml"))]);
        assert_eq!(
            load_all(&main, Some(&dir.path().join("absent")))
                .unwrap()
                .policies,
            []
        );

        std::fs::write(parts.join("30-dup.toml"), format!("\n{}", policy("/a"))).unwrap();
        let err = load_all(&main, Some(&parts)).unwrap_err();
        assert_eq!(
            (err.file, err.line),
            (parts.join("30-dup.toml"), 2),
            "{}",
            err.problem
        );
        assert!(err.problem.contains("10-a.toml:1"), "{}", err.problem);
        std::fs::remove_file(parts.join("30-dup.toml")).unwrap();

        let section =
            "[[policy]]\ncgroup = \"/c\"\nprefer = [\"a\"]\n\n[validation]\nurl = \"http://x/\"\n";
        std::fs::write(parts.join("40-section.toml"), section).unwrap();
        let err = load_all(&main, Some(&parts)).unwrap_err();
        assert_eq!(
            (err.file, err.line, err.field.as_str()),
            (parts.join("40-section.toml"), 5, "validation")
        );
    }

    #[test]
    fn validation_section_and_pvd_overrides() {
        let config = parse_str(
            r#"
[validation]
url = "http://connectivity.example/generate_204"
interval = 2.5

[[pvd]]
name = "vpn"
interface = "tun0"
validation = false

[[pvd]]
name = "lte"
interface = "wwan0"
validation = "http://[2001:db8::1]/204"
"#,
        )
        .unwrap();
        let v = config.validation.unwrap();
        assert_eq!(v.url.path, "/generate_204");
        assert_eq!(v.timing.interval, Duration::from_millis(2500));
        assert_eq!(v.timing.timeout, Duration::from_millis(1250));
        assert_eq!(config.pvds[0].validation, PvdValidation::Off);
        assert!(matches!(&config.pvds[1].validation, PvdValidation::Url(u) if u.port == 80));
        assert_eq!(parse_str("").unwrap().validation, None, "off by default");
    }

    #[test]
    fn bad_validation_settings_name_line_field_and_value() {
        for (text, line, field, value) in [
            (
                "\n[validation]\nurl = \"https://x.example/\"\n",
                3,
                "validation.url",
                "\"https://x.example/\"",
            ),
            (
                "[validation]\nurl = \"http://x.example/\"\ninterval = 0\n",
                3,
                "validation.interval",
                "0",
            ),
            (
                "[validation]\nurl = \"http://x.example/\"\ntimeout = \"5s\"\n",
                3,
                "validation.timeout",
                "\"5s\"",
            ),
            (
                "[[pvd]]\nname = \"a\"\nvalidation = 3\n",
                3,
                "pvd.validation",
                "3",
            ),
        ] {
            let err = parse_str(text).unwrap_err();
            assert_eq!(
                (err.line, err.field.as_str(), err.value.as_str()),
                (line, field, value),
                "{text}: {err}"
            );
        }
        let err = parse_str("[validation]\ninterval = 5\n").unwrap_err();
        assert!(err.problem.contains("url"), "{err}");
    }

    #[test]
    fn parses_policies_and_pvds() {
        let config = parse_str(
            r#"
[[pvd]]
name = "cell"
interface = "wwan0"
mark = 0x05000000

[[policy]]
cgroup = "/apps.slice//browser.scope/"
prefer = ["wlan0", "cell"]
strict = true
bind = "device"
"#,
        )
        .unwrap();
        assert_eq!(config.pvds[0].interface, "wwan0");
        assert_eq!(config.pvds[0].mark, Some(0x0500_0000));
        let p = &config.policies[0];
        assert_eq!(&*p.cgroup, "/apps.slice/browser.scope");
        assert_eq!(p.terms.prefer, ["wlan0", "cell"]);
        assert!(p.terms.strict);
        assert_eq!(p.terms.bind, BindMode::Device);
        assert_eq!(p.line, 7);
    }

    #[test]
    fn exclusions_are_prefixes_addresses_or_interfaces() {
        let config = parse_str(
            "[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\"]\n\
             exclude = [\"192.168.1.77/16\", \"fd00::1\", \"docker0\", \"docker0\"]\n",
        )
        .unwrap();
        let shown: Vec<String> = config.policies[0]
            .terms
            .exclude
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["192.168.0.0/16", "fd00::1/128", "docker0"]);
        let err = parse_str(
            "[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\"]\n\nexclude = [\"10.0.0.0/33\"]\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "mif.toml:5: policy.exclude = \"10.0.0.0/33\": prefix length must be 0 to 32"
        );
        let err =
            parse_str("[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\"]\nexclude = [\"eth 0\"]\n")
                .unwrap_err();
        assert!(err.to_string().contains("neither a prefix"), "{err}");
    }

    #[test]
    fn deny_raw_is_off_unless_asked() {
        let config = parse_str(
            "[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\"]\n\
             [[policy]]\ncgroup = \"/b\"\nprefer = [\"x\"]\ndeny_raw = true\n",
        )
        .unwrap();
        assert!(!config.policies[0].terms.deny_raw);
        assert!(config.policies[1].terms.deny_raw);
        let err =
            parse_str("[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\"]\ndeny_raw = 1\n").unwrap_err();
        assert_eq!(err.line, 4, "{err}");
    }

    #[test]
    fn dns_is_system_unless_pvd() {
        let config = parse_str(
            "[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\"]\n\
             [[policy]]\ncgroup = \"/b\"\nprefer = [\"x\"]\ndns = \"pvd\"\n",
        )
        .unwrap();
        assert_eq!(config.policies[0].terms.dns, DnsMode::System);
        assert_eq!(config.policies[1].terms.dns, DnsMode::Pvd);
        let err = parse_str("[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\"]\ndns = \"doh\"\n")
            .unwrap_err();
        assert_eq!(err.line, 4, "{err}");
        assert!(err.to_string().contains("doh"), "{err}");
    }

    #[test]
    fn allow_lists_pvds_a_loose_policy_may_choose_and_no_strict_one() {
        let config =
            parse_str("[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\"]\nallow = [\"y\", \"z\"]\n")
                .unwrap();
        assert_eq!(config.policies[0].terms.allow, ["y", "z"]);
        let err = parse_str(
            "[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\"]\nstrict = true\nallow = [\"y\"]\n",
        )
        .unwrap_err();
        assert_eq!((err.line, err.field.as_str()), (5, "policy.allow"), "{err}");
        assert!(err.to_string().contains("strict"), "{err}");
        let err =
            parse_str("[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\"]\nallow = [\"y\", \"y\"]\n")
                .unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
        let config =
            parse_str("[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\"]\nallow = [\"nope\"]\n")
                .unwrap();
        let interfaces = ["x".to_string()].into_iter().collect();
        let err = config.check_prefer(&interfaces).unwrap_err();
        assert_eq!(err.field, "policy.allow", "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn malformed_toml_names_the_line() {
        let err = parse_str("[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\"\n").unwrap_err();
        assert_eq!(err.file, Path::new("mif.toml"));
        assert!(err.line >= 3, "{err}");
    }

    #[test]
    fn unknown_field_is_refused() {
        let err =
            parse_str("[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\"]\nprefered = 1\n").unwrap_err();
        assert!(err.to_string().contains("prefered"), "{err}");
    }

    #[test]
    fn duplicate_policy_names_field_line_and_value() {
        let err = parse_str(
            "[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\"]\n[[policy]]\ncgroup = \"/a/\"\nprefer = [\"y\"]\n",
        )
        .unwrap_err();
        assert_eq!(
            (err.line, err.field.as_str(), err.value.as_str()),
            (5, "policy.cgroup", "\"/a\"")
        );
        assert_eq!(
            err.to_string(),
            "mif.toml:5: policy.cgroup = \"/a\": a policy for this cgroup is already defined above"
        );
    }

    #[test]
    fn relative_and_dotted_cgroups_are_refused() {
        for bad in ["a/b", "/a/../b", "/./a"] {
            let text = format!("[[policy]]\ncgroup = {bad:?}\nprefer = [\"x\"]\n");
            let err = parse_str(&text).unwrap_err();
            assert_eq!(err.field, "policy.cgroup", "{bad}: {err}");
        }
    }

    #[test]
    fn prefer_must_be_short_and_unique() {
        let err = parse_str("[[policy]]\ncgroup = \"/a\"\nprefer = []\n").unwrap_err();
        assert_eq!(err.field, "policy.prefer");
        let err = parse_str("[[policy]]\ncgroup = \"/a\"\nprefer = [\"x\", \"x\"]\n").unwrap_err();
        assert_eq!(err.value, "\"x\"");
    }

    #[test]
    fn unknown_pvd_is_reported_with_its_policy_line() {
        let config =
            parse_str("\n[[policy]]\ncgroup = \"/a\"\nprefer = [\"wlan0\", \"wwan9\"]\n").unwrap();
        let interfaces = HashSet::from(["wlan0".to_string()]);
        let err = config.check_prefer(&interfaces).unwrap_err();
        assert_eq!((err.line, err.value.as_str()), (2, "\"wwan9\""));
        assert!(err.problem.contains("unknown PvD"));
    }

    #[test]
    fn marks_must_fit_the_mask() {
        let config = parse_str("[[pvd]]\nname = \"v\"\nmark = 0x100\n").unwrap();
        let err = config.check_marks(0x7f00_0000).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.value.as_str()),
            ("pvd.mark", "0x100")
        );
        let config = parse_str("[[pvd]]\nname = \"v\"\nmark = 0x01000000\n").unwrap();
        config.check_marks(0x7f00_0000).unwrap();
    }

    #[test]
    fn pvd_dns_servers_are_addresses() {
        let config =
            parse_str("[[pvd]]\nname = \"v\"\ndns = [\"2001:db8::53\", \"192.0.2.53\"]\n").unwrap();
        assert_eq!(config.pvds[0].dns.len(), 2);
        let err = parse_str("[[pvd]]\nname = \"v\"\ndns = [\"resolver\"]\n").unwrap_err();
        assert_eq!(
            (err.line, err.field.as_str(), err.value.as_str()),
            (3, "pvd.dns", "\"resolver\"")
        );
    }

    #[test]
    fn the_policy_capacity_is_a_floor_within_the_largest_map() {
        assert_eq!(parse_str("").unwrap().policy_capacity, None);
        let config = parse_str("[limits]\npolicy_capacity = 200000\n");
        let err = config.unwrap_err().to_string();
        assert!(
            err.contains("limits.policy_capacity") && err.contains("200000"),
            "{err}"
        );
        assert!(err.contains(":2"), "names the line: {err}");
        let config = parse_str("[limits]\npolicy_capacity = 50000\n").unwrap();
        assert_eq!(config.policy_capacity, Some(50000));
    }

    #[test]
    fn pvd_domains_are_names_and_the_forwarder_port_fits() {
        let config = parse_str("[[pvd]]\nname = \"v\"\ndomains = [\"Corp.Example.\"]\n").unwrap();
        assert_eq!(config.pvds[0].domains, ["corp.example"]);
        assert_eq!(config.dns_forwarder_port, DEFAULT_FORWARDER_PORT);
        let err = parse_str("[[pvd]]\nname = \"v\"\ndomains = [\"a..b\"]\n").unwrap_err();
        assert_eq!(
            (err.line, err.field.as_str(), err.value.as_str()),
            (3, "pvd.domains", "\"a..b\"")
        );
        let config = parse_str("[dns]\nforwarder_port = 6000\n").unwrap();
        assert_eq!(config.dns_forwarder_port, 6000);
        let err = parse_str("[dns]\nforwarder_port = 65500\n").unwrap_err();
        assert_eq!((err.line, err.field.as_str()), (2, "dns.forwarder_port"));
    }

    #[test]
    fn pvd_names_are_checked() {
        let err = parse_str("[[pvd]]\nname = \"a name with spaces\"\n").unwrap_err();
        assert_eq!(err.field, "pvd.name");
        let err = parse_str("[[pvd]]\nname = \"a\"\n[[pvd]]\nname = \"a\"\n").unwrap_err();
        assert_eq!((err.line, err.problem.as_str()), (4, "declared twice"));
    }
}
