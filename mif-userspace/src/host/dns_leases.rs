//! Resolvers and search domains that the host's own DHCP clients learned.
//!
//! IPv6 links announce their resolvers in router advertisements, which the
//! daemon reads from netlink (RDNSS and DNSSL, RFC 8106). IPv4 links hand
//! them out by DHCP (options 6, 15 and 119), and mif runs no DHCP client: a
//! second client on a link would compete with the host's own one for the
//! lease, its address and its renewals. So this module only observes,
//! read-only, the lease state the host's DHCP client already keeps on disk,
//! and returns per interface name the resolvers and domains of the current
//! lease ([`learn`]). It never writes, locks or signals anything.
//!
//! What it reads ([`DEFAULT_LEASE_PATHS`]; each format was checked against
//! the software that writes it, see [`LeaseFormat`]):
//! - ISC dhclient lease files: `lease { ... }` declarations appended over
//!   time; per interface the last one that has not expired is current.
//!   NetworkManager's dhclient plugin writes the same format.
//! - systemd-networkd lease files, `KEY=value` lines named by interface
//!   index, so [`learn`] takes an index-to-name map (from netlink).
//! - NetworkManager: the internal client's `internal-<uuid>-<ifname>.lease`
//!   (since NetworkManager 1.22 it holds only `ADDRESS=`, so nothing is
//!   learned from it) and, where the DNS of that client is really kept, the
//!   device state files `/run/NetworkManager/devices/<ifindex>` (1.40+),
//!   whose `[dhcp4]` group holds the options of the current lease.
//!
//! Only DHCPv4 is read: dhclient's `lease6` declarations, NetworkManager's
//! `[dhcp6]` group and its `*6-*.lease` files are skipped.
//!
//! Besides DNS, the captive portal's API URI is read where a format keeps
//! it (RFC 8910 option 114; RFC 7710 had used 160, which is read when 114
//! is not there): dhclient's `option default-url` (its name for 114) and
//! `option v4-captive-portal` (160); NetworkManager's `dhcp4.default_url`
//! and `dhcp4.v4_captive_portal`. systemd-networkd's lease file does not
//! keep it (neither `dhcp_lease_save`'s `KEY=value` lines nor its JSON
//! successor; networkd writes the URI to the link's state file,
//! `/run/systemd/netif/links/<ifindex>` `CAPTIVE_PORTAL=`, which is not
//! read here).
//!
//! Precedence is the caller's to apply: a PvD's `dns` and `domains` from the
//! configuration win over what router advertisements say, which wins over
//! what is learned here. Among several lease files naming one interface,
//! [`learn`] keeps the one that is most surely current: state files that
//! their owner removes or rewrites when the lease ends (networkd,
//! NetworkManager's device state) over dhclient's log, then the latest
//! expiry.
//!
//! An expired lease is ignored, as dhclient itself ignores it; networkd
//! records no expiry but deletes the file when the lease ends (and when it
//! stops), so its files count while they exist. A lease file that cannot be
//! read or parsed yields a [`LeaseError`] in [`Learned::problems`] for the
//! caller to log, never a panic: in a dhclient file only the garbled
//! declarations are left out (dhclient, too, warns and reads on), and a
//! `KEY=value` file loses only its garbled lines. Addresses that cannot be
//! resolvers (unspecified, loopback, multicast, broadcast) and names that
//! are not domain names are dropped quietly; what is kept is capped at
//! [`MAX_DNS`] servers and [`MAX_DOMAINS`] domains. A lease may be current
//! for the DHCP client yet belong to a network the link has left (dhclient
//! keeps unexpired leases after it stops): [`LinkDns::address`] lets the
//! caller check that the link still holds the leased address.

use std::{
    collections::{btree_map::Entry, BTreeMap, BTreeSet},
    fmt, fs,
    io::{self, Read},
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use mif_common::MAX_DNS;

/// Where the host's DHCP clients keep their leases. The last component may
/// hold `*` wildcards; the directories are literal.
pub const DEFAULT_LEASE_PATHS: &[&str] = &[
    // ISC dhclient: Debian's default dhclient.leases, ifupdown's
    // dhclient.<ifname>.leases (and dhclient6*, which hold no IPv4 lease).
    "/var/lib/dhcp/dhclient*.leases",
    // ISC dhclient as Fedora and RHEL package it.
    "/var/lib/dhclient/*.leases",
    // NetworkManager: dhclient-<uuid>-<ifname>.lease (dhclient plugin) and
    // internal-<uuid>-<ifname>.lease (internal client); NMSTATEDIR.
    "/var/lib/NetworkManager/*.lease",
    // NetworkManager 1.40+: each device's state, with the options of its
    // current DHCP lease (NM_CONFIG_DEVICE_STATE_DIR).
    "/run/NetworkManager/devices/*",
    // systemd-networkd: one file per interface index.
    "/run/systemd/netif/leases/*",
];

/// Most domains kept per link: well above the six search domains of the
/// classic resolv.conf, and a bound on what a garbled lease can add.
pub const MAX_DOMAINS: usize = 16;

/// Lease files larger than this are not read (a dhclient file is rewritten
/// after 20 appended leases, client/dhclient.c, so real ones stay small).
pub const MAX_LEASE_FILE: u64 = 4 << 20;

/// Deepest `{` nesting read in a dhclient file (`lease6` nests three deep).
const MAX_DEPTH: usize = 8;

/// The longest interface name Linux accepts (IFNAMSIZ less the NUL).
const MAX_IFNAME: usize = 15;

/// Which software wrote a lease file, and so how it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaseFormat {
    /// ISC dhclient's lease declarations (dhclient.conf(5), "LEASE
    /// DECLARATIONS"; checked against isc-dhcp-client 4.4.3-P1 of Debian 12,
    /// whose files were captured for the tests, and against
    /// client/dhclient.c `write_client_lease` and common/print.c
    /// `print_time`). Also what NetworkManager's dhclient plugin writes.
    Dhclient,
    /// systemd-networkd's `KEY=value` lease (libsystemd-network
    /// sd-dhcp-lease.c `dhcp_lease_save`; a file written by
    /// systemd-networkd 252 was captured for the tests).
    Networkd,
    /// The same lease as JSON, as systemd pull request #38806 proposes
    /// (`Servers.DNS` as byte arrays); read so a systemd that adopts it is
    /// not mistaken for garbage.
    NetworkdJson,
    /// NetworkManager's internal client, `internal-<uuid>-<ifname>.lease`.
    /// Up to 1.20 (systemd's client) a networkd-style lease; since 1.22
    /// (nettools' n-dhcp4) only `ADDRESS=` (src/core/dhcp/nm-dhcp-nettools.c
    /// `lease_save`), so nothing is learned from it.
    NetworkManagerInternal,
    /// NetworkManager's device state, `/run/NetworkManager/devices/<ifindex>`,
    /// a GKeyFile whose `[dhcp4]` group holds `dhcp4.<option>=` lines
    /// (src/core/nm-config.c `nm_config_device_state_write`, 1.40+).
    NetworkManagerDevice,
}

impl LeaseFormat {
    /// Whether the file's owner removes or rewrites it when the lease ends,
    /// so that its presence means the lease is current.
    fn is_live(self) -> bool {
        matches!(
            self,
            Self::Networkd | Self::NetworkdJson | Self::NetworkManagerDevice
        )
    }
}

impl fmt::Display for LeaseFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dhclient => "dhclient lease",
            Self::Networkd => "systemd-networkd lease",
            Self::NetworkdJson => "systemd-networkd lease (JSON)",
            Self::NetworkManagerInternal => "NetworkManager internal lease",
            Self::NetworkManagerDevice => "NetworkManager device state",
        })
    }
}

/// Where a link's DHCP resolvers came from, for `mif pvd list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSource {
    pub path: PathBuf,
    pub format: LeaseFormat,
}

impl fmt::Display for LeaseSource {
    /// For example `dhclient lease /var/lib/dhcp/dhclient.leases`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.format, self.path.display())
    }
}

/// When a lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    At(SystemTime),
    /// An infinite lease (dhclient's `never`).
    Never,
    /// The file does not say; it is current while it exists (networkd).
    Unrecorded,
}

impl Expiry {
    pub fn is_expired(self, now: SystemTime) -> bool {
        matches!(self, Self::At(end) if end <= now)
    }
}

/// One lease as a parser read it, addresses and names already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The interface, where the file itself says (dhclient's `interface`);
    /// the other formats name it by the file name.
    pub interface: Option<String>,
    /// The leased address.
    pub address: Option<Ipv4Addr>,
    pub servers: Vec<IpAddr>,
    /// The search list (option 119) first, then the domain name (option 15)
    /// when it is not in the list; lowercase, without the trailing dot.
    pub domains: Vec<String>,
    /// The captive portal's API URI (option 114, else 160), checked by
    /// [`crate::host::captive_portal::clean_uri`].
    pub captive_portal: Option<String>,
    pub expires: Expiry,
    /// The lease time in seconds where the file records it only relative
    /// (`LIFETIME=` of the `KEY=value` format).
    pub lifetime: Option<Duration>,
}

impl Lease {
    fn new(expires: Expiry) -> Self {
        Self {
            interface: None,
            address: None,
            servers: Vec::new(),
            domains: Vec::new(),
            captive_portal: None,
            expires,
            lifetime: None,
        }
    }

    /// Whether the lease gives resolvers or domains.
    pub fn has_dns(&self) -> bool {
        !self.servers.is_empty() || !self.domains.is_empty()
    }

    /// Whether the lease gives anything a PvD can use.
    pub fn is_useful(&self) -> bool {
        self.has_dns() || self.captive_portal.is_some()
    }
}

/// The captive portal's URI from option 114 (RFC 8910), else from 160
/// (RFC 7710), as read; checked.
fn captive_portal_of(option_114: Option<&str>, option_160: Option<&str>) -> Option<String> {
    let clean = |uri: &str| crate::host::captive_portal::clean_uri(uri.trim().as_bytes());
    option_114
        .and_then(clean)
        .or_else(|| option_160.and_then(clean))
}

/// What the current lease of one link says about DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkDns {
    /// At most [`MAX_DNS`], in the server's order.
    pub servers: Vec<IpAddr>,
    /// At most [`MAX_DOMAINS`], lowercase, without the trailing dot.
    pub domains: Vec<String>,
    /// The captive portal's API URI (DHCP option 114), if the lease has one.
    pub captive_portal: Option<String>,
    /// The leased address: a lease whose address the link no longer holds
    /// belongs to a network the link has left.
    pub address: Option<Ipv4Addr>,
    pub expires: Expiry,
    pub source: LeaseSource,
}

/// What a parser made of one file's text: its leases in file order, and
/// what it had to leave out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub leases: Vec<Lease>,
    pub errors: Vec<ParseError>,
}

/// Why part of a lease file was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: {what}")]
    Syntax { line: usize, what: String },
    #[error("not a JSON lease: {0}")]
    Json(String),
}

impl ParseError {
    fn syntax(line: usize, what: impl Into<String>) -> Self {
        Self::Syntax {
            line,
            what: what.into(),
        }
    }

    fn line(&self) -> usize {
        match self {
            Self::Syntax { line, .. } => *line,
            Self::Json(_) => 0,
        }
    }
}

/// Why a lease file, or part of one, taught nothing.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is larger than {MAX_LEASE_FILE} bytes; not read", path.display())]
    TooLarge { path: PathBuf },
    #[error("{} ({format}): {error}", path.display())]
    Garbled {
        path: PathBuf,
        format: LeaseFormat,
        #[source]
        error: ParseError,
    },
    #[error("{}: a lease for no known interface ({why})", path.display())]
    NoInterface { path: PathBuf, why: String },
}

/// What [`learn`] found.
#[derive(Debug, Default)]
pub struct Learned {
    /// The current lease's resolvers, domains and captive portal, by
    /// interface name; only links whose lease gives at least one of them.
    pub links: BTreeMap<String, LinkDns>,
    /// Files or leases that could not be used, for the caller to log.
    pub problems: Vec<LeaseError>,
}

/// Reads the lease files that `paths` name (files, directories, or a last
/// component with `*` wildcards, like [`DEFAULT_LEASE_PATHS`]) and returns
/// the resolvers and domains of each interface's current lease at `now`.
/// `ifnames` maps interface indexes to names, for the formats that name a
/// file by index. Paths that do not exist are skipped quietly: most hosts
/// have only one of these DHCP clients. Files are read in name order within
/// a pattern and patterns in the order given, which breaks ties.
pub fn learn<P: AsRef<Path>>(
    paths: &[P],
    ifnames: &BTreeMap<u32, String>,
    now: SystemTime,
) -> Learned {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    let mut candidates = Vec::new();
    for pattern in paths {
        for path in expand(pattern.as_ref(), &mut problems) {
            if !seen.insert(path.clone()) {
                continue;
            }
            match read_capped(&path) {
                Ok((text, modified)) => {
                    let (found, errors) = leases_of_file(&path, &text, modified, ifnames, now);
                    candidates.extend(found);
                    problems.extend(errors);
                }
                Err(error) => problems.push(error),
            }
        }
    }
    Learned {
        links: choose(candidates),
        problems,
    }
}

/// Of several leases for one interface, the one most surely current: a live
/// state file before dhclient's log, then the latest expiry; the first on a
/// tie.
fn choose(candidates: Vec<(String, LinkDns)>) -> BTreeMap<String, LinkDns> {
    fn rank(dns: &LinkDns) -> (bool, bool, SystemTime) {
        match dns.expires {
            Expiry::At(end) => (dns.source.format.is_live(), false, end),
            Expiry::Never | Expiry::Unrecorded => (dns.source.format.is_live(), true, UNIX_EPOCH),
        }
    }
    let mut links = BTreeMap::new();
    for (name, dns) in candidates {
        match links.entry(name) {
            Entry::Vacant(entry) => {
                entry.insert(dns);
            }
            Entry::Occupied(mut entry) => {
                if rank(&dns) > rank(entry.get()) {
                    entry.insert(dns);
                }
            }
        }
    }
    links
}

/// The current leases one file gives, by interface name, and its problems.
fn leases_of_file(
    path: &Path,
    text: &str,
    modified: Option<SystemTime>,
    ifnames: &BTreeMap<u32, String>,
    now: SystemTime,
) -> (Vec<(String, LinkDns)>, Vec<LeaseError>) {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let hint = name_hint(file_name);
    let (format, parsed) = match sniff(text) {
        Syntax::Empty => return (Vec::new(), Vec::new()),
        Syntax::Dhclient => (LeaseFormat::Dhclient, parse_dhclient(text)),
        Syntax::KeyValue => {
            if hint == NameHint::Ipv6 {
                return (Vec::new(), Vec::new());
            }
            let format = if file_name.starts_with("internal") {
                LeaseFormat::NetworkManagerInternal
            } else {
                LeaseFormat::Networkd
            };
            (format, parse_networkd(text))
        }
        Syntax::Json => (LeaseFormat::NetworkdJson, parse_networkd_json(text)),
        Syntax::KeyFile => (
            LeaseFormat::NetworkManagerDevice,
            parse_nm_device_state(text),
        ),
    };
    let mut problems: Vec<LeaseError> = parsed
        .errors
        .into_iter()
        .map(|error| LeaseError::Garbled {
            path: path.to_path_buf(),
            format,
            error,
        })
        .collect();

    let mut leases = parsed.leases;
    for lease in &mut leases {
        if lease.interface.is_none() {
            lease.interface = hint.name(ifnames);
        }
        // NetworkManager's internal file persists across reboots and says
        // only how long the lease was for: count from when it was written.
        if format == LeaseFormat::NetworkManagerInternal && lease.expires == Expiry::Unrecorded {
            if let (Some(written), Some(lifetime)) = (modified, lease.lifetime) {
                lease.expires = written
                    .checked_add(lifetime)
                    .map_or(Expiry::Never, Expiry::At);
            }
        }
    }
    let unnamed = leases
        .iter()
        .any(|l| l.interface.is_none() && l.is_useful() && !l.expires.is_expired(now));
    if unnamed {
        problems.push(LeaseError::NoInterface {
            path: path.to_path_buf(),
            why: hint.why_unnamed(),
        });
    }
    let current = if format == LeaseFormat::Dhclient {
        current_dhclient(&leases, now)
    } else {
        leases
            .into_iter()
            .filter(|l| !l.expires.is_expired(now))
            .filter_map(|l| Some((l.interface.clone()?, l)))
            .collect()
    };
    let source = LeaseSource {
        path: path.to_path_buf(),
        format,
    };
    let found = current
        .into_iter()
        .filter(|(_, lease)| lease.is_useful())
        .map(|(name, lease)| {
            let dns = LinkDns {
                servers: lease.servers,
                domains: lease.domains,
                captive_portal: lease.captive_portal,
                address: lease.address,
                expires: lease.expires,
                source: source.clone(),
            };
            (name, dns)
        })
        .collect();
    (found, problems)
}

/// Per interface, the last lease in file order that has not expired at
/// `now`: the lease dhclient itself falls back to (client/clparse.c
/// `parse_client_lease_statement`: "The last lease in the lease file on a
/// particular interface is the active lease", older unexpired ones stay
/// usable). Leases that name no interface are left out.
pub fn current_dhclient(leases: &[Lease], now: SystemTime) -> BTreeMap<String, Lease> {
    let mut current = BTreeMap::new();
    for lease in leases {
        if let Some(name) = &lease.interface {
            if !lease.expires.is_expired(now) {
                current.insert(name.clone(), lease.clone());
            }
        }
    }
    current
}

// ---------------------------------------------------------------------------
// File names and reading

/// What a lease file's name says about its interface.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NameHint {
    /// networkd's and NetworkManager's device files: `<ifindex>`.
    Ifindex(u32),
    /// `internal-<uuid>-<ifname>.lease`, `dhclient-<uuid>-<ifname>.lease`
    /// (NetworkManager, src/core/dhcp/nm-dhcp-utils.c
    /// `nm_dhcp_utils_get_leasefile_path`), `dhclient.<ifname>.leases`
    /// (Debian's ifupdown).
    Ifname(String),
    /// The same names for DHCPv6 (`internal6-`, `dhclient6-`).
    Ipv6,
    None,
}

impl NameHint {
    fn name(&self, ifnames: &BTreeMap<u32, String>) -> Option<String> {
        match self {
            Self::Ifindex(index) => ifnames.get(index).cloned(),
            Self::Ifname(name) => Some(name.clone()),
            Self::Ipv6 | Self::None => None,
        }
    }

    fn why_unnamed(&self) -> String {
        match self {
            Self::Ifindex(index) => format!("interface index {index} is not a known link"),
            _ => "neither the lease nor the file name names an interface".to_string(),
        }
    }
}

fn name_hint(file_name: &str) -> NameHint {
    if !file_name.is_empty() && file_name.bytes().all(|b| b.is_ascii_digit()) {
        return file_name
            .parse()
            .ok()
            .filter(|&index| index > 0)
            .map_or(NameHint::None, NameHint::Ifindex);
    }
    for (prefix, v6) in [
        ("internal-", false),
        ("internal6-", true),
        ("dhclient-", false),
        ("dhclient6-", true),
    ] {
        let Some(rest) = file_name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(".lease"))
        else {
            continue;
        };
        let (Some(uuid), Some(ifname)) = (rest.get(..36), rest.get(36..)) else {
            continue;
        };
        if let Some(ifname) = ifname.strip_prefix('-') {
            if is_uuid(uuid) && is_ifname(ifname) {
                return if v6 {
                    NameHint::Ipv6
                } else {
                    NameHint::Ifname(ifname.to_string())
                };
            }
        }
    }
    if let Some(ifname) = file_name
        .strip_prefix("dhclient.")
        .and_then(|rest| rest.strip_suffix(".leases"))
    {
        if is_ifname(ifname) {
            return NameHint::Ifname(ifname.to_string());
        }
    }
    NameHint::None
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A name Linux would take for an interface.
fn is_ifname(name: &str) -> bool {
    (1..=MAX_IFNAME).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// The regular files a path names: itself, a directory's entries, or the
/// entries of its directory matching a last component with `*`. Hidden
/// entries (networkd's temporary `.#<ifindex>...` files) are skipped unless
/// the pattern itself starts with a dot.
fn expand(pattern: &Path, problems: &mut Vec<LeaseError>) -> Vec<PathBuf> {
    let name = pattern.file_name().and_then(|n| n.to_str());
    let (dir, wanted) = match name {
        Some(name) if name.contains('*') => (
            pattern.parent().unwrap_or_else(|| Path::new(".")),
            Some(name),
        ),
        _ => match fs::metadata(pattern) {
            Ok(meta) if meta.is_dir() => (pattern, None),
            Ok(_) => return vec![pattern.to_path_buf()],
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(source) => {
                problems.push(LeaseError::Read {
                    path: pattern.to_path_buf(),
                    source,
                });
                return Vec::new();
            }
        },
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(source) => {
            problems.push(LeaseError::Read {
                path: dir.to_path_buf(),
                source,
            });
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let hidden_ok = wanted.is_some_and(|w| w.starts_with('.'));
        if file_name.starts_with('.') && !hidden_ok {
            continue;
        }
        if wanted.is_some_and(|w| !wildcard_match(w, file_name)) {
            continue;
        }
        let path = entry.path();
        // Follows symbolic links, as reading the file will.
        if fs::metadata(&path).is_ok_and(|meta| meta.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Whether `name` matches `pattern`, where `*` stands for any run of
/// characters and everything else for itself.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No '*' at all: the whole name must match.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn read_capped(path: &Path) -> Result<(String, Option<SystemTime>), LeaseError> {
    let read_error = |source| LeaseError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if meta.len() > MAX_LEASE_FILE {
        return Err(LeaseError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_LEASE_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_LEASE_FILE {
        return Err(LeaseError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    // The writers escape anything but printable ASCII; stray bytes become
    // U+FFFD and fail the address and name checks.
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok((text, meta.modified().ok()))
}

/// How a file's text is written, from its first line that is neither blank
/// nor a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    Empty,
    Dhclient,
    KeyValue,
    Json,
    KeyFile,
}

fn sniff(text: &str) -> Syntax {
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('{') {
            return Syntax::Json;
        }
        if line.starts_with('[') {
            return Syntax::KeyFile;
        }
        let word_end = line
            .find(|c: char| c.is_whitespace() || matches!(c, '{' | ';' | '"'))
            .unwrap_or(line.len());
        return if line[..word_end].contains('=') {
            Syntax::KeyValue
        } else {
            Syntax::Dhclient
        };
    }
    Syntax::Empty
}

// ---------------------------------------------------------------------------
// Checks shared by the formats

/// Whether a resolver address can be used: not unspecified, loopback,
/// multicast or the IPv4 broadcast address (NetworkManager and networkd, too,
/// drop 0.0.0.0 and loopback resolvers from a lease).
fn usable_server(addr: IpAddr) -> bool {
    !addr.is_unspecified()
        && !addr.is_loopback()
        && !addr.is_multicast()
        && !matches!(addr, IpAddr::V4(v4) if v4.is_broadcast())
}

/// Usable servers, each once, in the order given, at most [`MAX_DNS`].
fn clean_servers(servers: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut kept = Vec::new();
    for server in servers {
        if kept.len() == MAX_DNS {
            break;
        }
        if usable_server(server) && !kept.contains(&server) {
            kept.push(server);
        }
    }
    kept
}

/// A domain name as mif keeps it: lowercase, without the trailing dot,
/// dot-separated labels of 1 to 63 letters, digits, `-` or `_`, at most 253
/// characters (the rule `pvd.domains` in the configuration follows). The
/// root and `localhost` names (RFC 6761) are refused, as systemd's lease
/// parser refuses them.
pub fn normalize_domain(name: &str) -> Option<String> {
    let name = name.trim();
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    let local = name == "localhost" || name.ends_with(".localhost");
    (valid && !local).then_some(name)
}

/// Valid domains, each once, in the order given, at most [`MAX_DOMAINS`].
fn clean_domains<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut kept = Vec::new();
    for name in names {
        if kept.len() == MAX_DOMAINS {
            break;
        }
        if let Some(name) = normalize_domain(name) {
            if !kept.contains(&name) {
                kept.push(name);
            }
        }
    }
    kept
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

// ---------------------------------------------------------------------------
// ISC dhclient

/// A token of dhclient's lease syntax (common/conflex.c, reduced to what
/// lease files hold).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A run of anything but blanks, `{};,"` and `#`: keywords, numbers,
    /// addresses, dates.
    Word(String),
    /// A quoted string, its escapes undone.
    Str(String),
    Comma,
    Semi,
    Open,
    Close,
}

/// Splits dhclient lease text into tokens with their line numbers. Comments
/// run from `#` to the end of the line. In strings, `\ooo` is an octal byte
/// and `\` before any other character stands for that character, as
/// dhclient writes them (common/options.c `pretty_escape`: non-printable
/// bytes as `\ooo`, and `\` before `"`, `'`, `$`, `` ` ``, `\`, `|`, `&`).
/// An unterminated string ends the tokens, with an error.
fn lex(text: &str) -> (Vec<(Token, usize)>, Option<ParseError>) {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'#' => {
                while bytes.get(i).is_some_and(|&b| b != b'\n') {
                    i += 1;
                }
            }
            b'{' | b'}' | b';' | b',' => {
                let token = match c {
                    b'{' => Token::Open,
                    b'}' => Token::Close,
                    b';' => Token::Semi,
                    _ => Token::Comma,
                };
                tokens.push((token, line));
                i += 1;
            }
            b'"' => {
                let start = line;
                i += 1;
                let mut value = Vec::new();
                loop {
                    let Some(&b) = bytes.get(i) else {
                        return (
                            tokens,
                            Some(ParseError::syntax(start, "string is not closed")),
                        );
                    };
                    i += 1;
                    match b {
                        b'"' => break,
                        b'\\' => {
                            let Some(&escaped) = bytes.get(i) else {
                                continue;
                            };
                            i += 1;
                            match escaped {
                                b'0'..=b'7' => {
                                    let mut code = u32::from(escaped - b'0');
                                    for _ in 0..2 {
                                        match bytes.get(i) {
                                            Some(&d @ b'0'..=b'7') => {
                                                code = code * 8 + u32::from(d - b'0');
                                                i += 1;
                                            }
                                            _ => break,
                                        }
                                    }
                                    value.push((code & 0xff) as u8);
                                }
                                b't' => value.push(b'\t'),
                                b'n' => value.push(b'\n'),
                                b'r' => value.push(b'\r'),
                                b'\n' => {
                                    line += 1;
                                    value.push(b'\n');
                                }
                                other => value.push(other),
                            }
                        }
                        b'\n' => {
                            line += 1;
                            value.push(b'\n');
                        }
                        other => value.push(other),
                    }
                }
                tokens.push((
                    Token::Str(String::from_utf8_lossy(&value).into_owned()),
                    start,
                ));
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                let start = i;
                while bytes.get(i).is_some_and(|&b| {
                    !b.is_ascii_whitespace()
                        && !matches!(b, b'{' | b'}' | b';' | b',' | b'"' | b'#')
                }) {
                    i += 1;
                }
                // Delimiters are ASCII, so `start..i` falls on character
                // boundaries.
                let word = text.get(start..i).unwrap_or_default();
                tokens.push((Token::Word(word.to_string()), line));
            }
        }
    }
    (tokens, None)
}

/// A statement: its words up to `;`, or up to `{` and then its block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    line: usize,
    words: Vec<Token>,
    block: Option<Vec<Statement>>,
}

/// An open `{`, while its block is read.
struct Frame {
    line: usize,
    words: Vec<Token>,
    children: Vec<Statement>,
    /// Something inside was garbled: the whole top-level statement is
    /// dropped.
    garbled: bool,
}

/// Groups tokens into statements and blocks, without recursion (a file of
/// `{` alone must not overflow the stack). A top-level statement with
/// anything garbled inside (a statement without `;`, nesting deeper than
/// [`MAX_DEPTH`], a `{` never closed) is left out, with an error.
fn group(tokens: Vec<(Token, usize)>) -> (Vec<Statement>, Vec<ParseError>) {
    let mut top = Vec::new();
    let mut errors = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut words = Vec::new();
    let mut words_line = 0;
    // How deep we are inside a block that is being skipped for depth.
    let mut skipping = 0usize;
    for (token, line) in tokens {
        if skipping > 0 {
            match token {
                Token::Open => skipping += 1,
                Token::Close => skipping -= 1,
                _ => {}
            }
            continue;
        }
        match token {
            Token::Semi => {
                if !words.is_empty() {
                    let statement = Statement {
                        line: words_line,
                        words: std::mem::take(&mut words),
                        block: None,
                    };
                    match stack.last_mut() {
                        Some(frame) => frame.children.push(statement),
                        None => top.push(statement),
                    }
                }
            }
            Token::Open => {
                if stack.len() >= MAX_DEPTH {
                    errors.push(ParseError::syntax(line, "blocks nested too deep"));
                    if let Some(outer) = stack.first_mut() {
                        outer.garbled = true;
                    }
                    words.clear();
                    skipping = 1;
                    continue;
                }
                let start = if words.is_empty() { line } else { words_line };
                stack.push(Frame {
                    line: start,
                    words: std::mem::take(&mut words),
                    children: Vec::new(),
                    garbled: false,
                });
            }
            Token::Close => {
                let Some(mut frame) = stack.pop() else {
                    errors.push(ParseError::syntax(line, "'}' without a matching '{'"));
                    words.clear();
                    continue;
                };
                if !words.is_empty() {
                    errors.push(ParseError::syntax(
                        words_line,
                        "statement does not end with ';'",
                    ));
                    words.clear();
                    frame.garbled = true;
                }
                let statement = Statement {
                    line: frame.line,
                    words: frame.words,
                    block: Some(frame.children),
                };
                match stack.last_mut() {
                    Some(parent) => {
                        parent.garbled |= frame.garbled;
                        parent.children.push(statement);
                    }
                    None if frame.garbled => {}
                    None => top.push(statement),
                }
            }
            word => {
                if words.is_empty() {
                    words_line = line;
                }
                words.push(word);
            }
        }
    }
    if let Some(outer) = stack.first() {
        errors.push(ParseError::syntax(outer.line, "'{' is never closed"));
    } else if !words.is_empty() {
        errors.push(ParseError::syntax(
            words_line,
            "statement does not end with ';'",
        ));
    }
    (top, errors)
}

/// Parses an ISC dhclient lease file: its `lease { ... }` declarations in
/// file order. `lease6` (DHCPv6), `default-duid` and other statements are
/// skipped; a declaration that is garbled, or whose `expire` date is not a
/// date, is left out with an error (dhclient takes such a date as 0, so the
/// lease would be expired anyway). A lease without `expire` counts as
/// expired, as dhclient counts it.
pub fn parse_dhclient(text: &str) -> Parsed {
    let (tokens, lex_error) = lex(text);
    let (statements, mut errors) = group(tokens);
    errors.extend(lex_error);
    let mut leases = Vec::new();
    for statement in statements {
        let is_lease = matches!(statement.words.as_slice(), [Token::Word(w)] if w == "lease");
        if let (true, Some(block)) = (is_lease, &statement.block) {
            match dhclient_lease(block) {
                Ok(lease) => leases.push(lease),
                Err(error) => errors.push(error),
            }
        }
    }
    errors.sort_by_key(ParseError::line);
    Parsed { leases, errors }
}

fn dhclient_lease(block: &[Statement]) -> Result<Lease, ParseError> {
    // dhclient takes a missing expiry as time 0 (client/clparse.c).
    let mut lease = Lease::new(Expiry::At(UNIX_EPOCH));
    let mut search = Vec::new();
    let mut domain_name = Vec::new();
    let mut servers = Vec::new();
    // Options 114 and 160: one string each.
    let (mut url, mut portal) = (None, None);
    for statement in block {
        let Some(Token::Word(keyword)) = statement.words.first() else {
            continue;
        };
        let args = &statement.words[1..];
        match keyword.as_str() {
            "interface" => {
                lease.interface = match args {
                    [Token::Str(name) | Token::Word(name)] if is_ifname(name) => Some(name.clone()),
                    _ => None,
                }
            }
            "fixed-address" => {
                lease.address = match args {
                    [Token::Word(addr)] => addr.parse().ok(),
                    _ => None,
                }
            }
            "expire" => {
                let words: Vec<&str> = args
                    .iter()
                    .filter_map(|t| match t {
                        Token::Word(w) => Some(w.as_str()),
                        _ => None,
                    })
                    .collect();
                lease.expires = parse_dhclient_time(&words.join(" "))
                    .ok_or_else(|| ParseError::syntax(statement.line, "expire is not a date"))?;
            }
            "option" => {
                let Some((Token::Word(option), values)) = args.split_first() else {
                    continue;
                };
                let texts = values.iter().filter_map(|t| match t {
                    Token::Word(s) | Token::Str(s) => Some(s.as_str()),
                    _ => None,
                });
                match option.as_str() {
                    "domain-name-servers" => servers = texts.filter_map(parse_ip).collect(),
                    // Option 15 is one name, but servers put several in it,
                    // separated by blanks (so does NetworkManager's reader).
                    "domain-name" => {
                        domain_name = texts
                            .flat_map(str::split_whitespace)
                            .map(str::to_string)
                            .collect()
                    }
                    "domain-search" => search = texts.map(str::to_string).collect(),
                    "default-url" => url = texts.map(str::to_string).next(),
                    "v4-captive-portal" => portal = texts.map(str::to_string).next(),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    lease.servers = clean_servers(servers);
    lease.domains = clean_domains(search.iter().chain(&domain_name).map(String::as_str));
    lease.captive_portal = captive_portal_of(url.as_deref(), portal.as_deref());
    Ok(lease)
}

/// Parses a dhclient date (common/parse.c `parse_date_core`, written by
/// common/print.c `print_time`): `W YYYY/MM/DD HH:MM:SS` in UTC (the
/// weekday is not used), `epoch N` (`db-time-format local`), or `never`.
pub fn parse_dhclient_time(text: &str) -> Option<Expiry> {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["never"] => Some(Expiry::Never),
        ["epoch", seconds] => {
            let seconds: u64 = seconds.parse().ok()?;
            Some(
                UNIX_EPOCH
                    .checked_add(Duration::from_secs(seconds))
                    .map_or(Expiry::Never, Expiry::At),
            )
        }
        [weekday, date, time] => {
            weekday.parse::<u8>().ok()?;
            let mut ymd = date.split('/').map(|n| n.parse::<u32>().ok());
            let (Some(Some(year)), Some(Some(month)), Some(Some(day)), None) =
                (ymd.next(), ymd.next(), ymd.next(), ymd.next())
            else {
                return None;
            };
            let mut hms = time.split(':').map(|n| n.parse::<u32>().ok());
            let (Some(Some(hour)), Some(Some(minute)), Some(Some(second)), None) =
                (hms.next(), hms.next(), hms.next(), hms.next())
            else {
                return None;
            };
            let seconds = epoch_seconds(year, month, day, hour, minute, second)?;
            Some(Expiry::At(UNIX_EPOCH + Duration::from_secs(seconds)))
        }
        _ => None,
    }
}

/// Seconds since 1970-01-01 00:00:00 UTC of a UTC date and time, or `None`
/// when it is not one (or before 1970). Leap seconds are not counted, as
/// Unix time does not count them; a second of 60 is the next minute's 0.
fn epoch_seconds(
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
) -> Option<u64> {
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(days * 86_400 + u64::from(hour) * 3600 + u64::from(minute) * 60 + u64::from(second))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`, "chrono-Compatible Low-Level Date
/// Algorithms").
fn days_from_civil(year: u32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------
// systemd-networkd (and NetworkManager's internal client)

/// Parses a systemd-networkd lease file (`KEY=value` lines, `#` comments;
/// also NetworkManager's `internal-*.lease`). Read are `ADDRESS`, `DNS`
/// (blank-separated), `DOMAIN_SEARCH_LIST` (blank-separated), `DOMAINNAME`
/// and `LIFETIME` (whole seconds, as systemd up to 25x and NetworkManager's
/// systemd-based client wrote it; newer systemd writes a time span such as
/// `1h`, which is not needed for its live files). Lines that are not
/// `KEY=value` are left out with an error. The file records no expiry.
pub fn parse_networkd(text: &str) -> Parsed {
    let mut lease = Lease::new(Expiry::Unrecorded);
    let mut errors = Vec::new();
    let mut any = false;
    let mut servers = Vec::new();
    let mut search = String::new();
    let mut domain_name = String::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            errors.push(ParseError::syntax(index + 1, "not KEY=value"));
            continue;
        };
        any = true;
        let value = unquote(value.trim());
        match key.trim() {
            "ADDRESS" => lease.address = value.parse().ok(),
            "DNS" => servers = value.split_whitespace().filter_map(parse_ip).collect(),
            "DOMAIN_SEARCH_LIST" => search = value,
            "DOMAINNAME" => domain_name = value,
            "LIFETIME" => lease.lifetime = value.parse().ok().map(Duration::from_secs),
            _ => {}
        }
    }
    lease.servers = clean_servers(servers);
    lease.domains = clean_domains(
        search
            .split_whitespace()
            .chain(domain_name.split_whitespace()),
    );
    Parsed {
        leases: if any { vec![lease] } else { Vec::new() },
        errors,
    }
}

/// A value of systemd's environment-file syntax: quotes around it removed,
/// and in double quotes the backslash escapes undone.
fn unquote(value: &str) -> String {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(b'\''), Some(b'\'')) if bytes.len() >= 2 => value[1..value.len() - 1].to_string(),
        (Some(b'"'), Some(b'"')) if bytes.len() >= 2 => {
            let mut out = String::new();
            let mut chars = value[1..value.len() - 1].chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    out.extend(chars.next());
                } else {
                    out.push(c);
                }
            }
            out
        }
        _ => value.to_string(),
    }
}

/// Parses systemd-networkd's lease as JSON (systemd pull request #38806:
/// `Address` and each of `Servers.DNS` a four-byte array, `Domain_Name` a
/// string, `Domain_Search_List` an array of strings). Addresses written as
/// strings are taken too.
pub fn parse_networkd_json(text: &str) -> Parsed {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => {
            return Parsed {
                leases: Vec::new(),
                errors: vec![ParseError::Json(error.to_string())],
            }
        }
    };
    let Some(object) = value.as_object() else {
        return Parsed {
            leases: Vec::new(),
            errors: vec![ParseError::Json("not an object".to_string())],
        };
    };
    let mut lease = Lease::new(Expiry::Unrecorded);
    lease.address = object.get("Address").and_then(json_ipv4);
    let servers = object
        .get("Servers")
        .and_then(|servers| servers.get("DNS"))
        .and_then(serde_json::Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(json_ipv4)
                .map(IpAddr::V4)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    lease.servers = clean_servers(servers);
    let search = object
        .get("Domain_Search_List")
        .and_then(serde_json::Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let domain_name = object
        .get("Domain_Name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    lease.domains = clean_domains(search.into_iter().chain(domain_name.split_whitespace()));
    Parsed {
        leases: vec![lease],
        errors: Vec::new(),
    }
}

fn json_ipv4(value: &serde_json::Value) -> Option<Ipv4Addr> {
    if let Some(text) = value.as_str() {
        return text.parse().ok();
    }
    let bytes = value.as_array()?;
    let octets: Vec<u8> = bytes
        .iter()
        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
        .collect::<Option<_>>()?;
    let octets: [u8; 4] = octets.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

// ---------------------------------------------------------------------------
// NetworkManager device state

/// Parses NetworkManager's device state file (a GKeyFile: `[group]` lines,
/// `key=value` lines, `#` comments). Its `[dhcp4]` group holds the current
/// lease's options as `dhcp4.<name>=value`, names as in
/// src/core/dhcp/nm-dhcp-options.c: `domain_name_servers` and
/// `domain_search` blank-separated, `domain_name`, `ip_address`,
/// `default_url` and `v4_captive_portal` (options 114 and 160), and
/// `expiry` in seconds since 1970. No `[dhcp4]` group, no lease.
pub fn parse_nm_device_state(text: &str) -> Parsed {
    let mut errors = Vec::new();
    let mut group: Option<&str> = None;
    let mut seen_dhcp4 = false;
    let mut lease = Lease::new(Expiry::Unrecorded);
    let mut servers = String::new();
    let mut search = String::new();
    let mut domain_name = String::new();
    let (mut url, mut portal) = (None, None);
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            match name.strip_suffix(']') {
                Some(name) => {
                    group = Some(name);
                    seen_dhcp4 |= name == "dhcp4";
                }
                None => errors.push(ParseError::syntax(index + 1, "group header without ']'")),
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            errors.push(ParseError::syntax(index + 1, "not key=value"));
            continue;
        };
        match group {
            None => {
                errors.push(ParseError::syntax(index + 1, "key before any [group]"));
                continue;
            }
            Some("dhcp4") => {}
            Some(_) => continue,
        }
        let key = key.trim();
        let key = key.strip_prefix("dhcp4.").unwrap_or(key);
        let value = keyfile_unescape(value.trim());
        match key {
            "domain_name_servers" => servers = value,
            "domain_search" => search = value,
            "domain_name" => domain_name = value,
            // Options 114 and 160 (nm-dhcp-options.c `default_url`,
            // `v4_captive_portal`).
            "default_url" => url = Some(value),
            "v4_captive_portal" => portal = Some(value),
            "ip_address" => lease.address = value.parse().ok(),
            "expiry" => {
                if let Ok(seconds) = value.parse::<u64>() {
                    lease.expires = UNIX_EPOCH
                        .checked_add(Duration::from_secs(seconds))
                        .map_or(Expiry::Never, Expiry::At);
                }
            }
            _ => {}
        }
    }
    if !seen_dhcp4 {
        return Parsed {
            leases: Vec::new(),
            errors,
        };
    }
    lease.servers = clean_servers(servers.split_whitespace().filter_map(parse_ip));
    lease.domains = clean_domains(
        search
            .split_whitespace()
            .chain(domain_name.split_whitespace()),
    );
    lease.captive_portal = captive_portal_of(url.as_deref(), portal.as_deref());
    Parsed {
        leases: vec![lease],
        errors,
    }
}

/// Undoes GKeyFile's escapes of a string value: `\s`, `\n`, `\t`, `\r`,
/// `\\`.
fn keyfile_unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn ifnames(pairs: &[(u32, &str)]) -> BTreeMap<u32, String> {
        pairs.iter().map(|&(i, n)| (i, n.to_string())).collect()
    }

    // 2026-12-01 06:30:00 UTC.
    const NOW: u64 = 1_796_106_600;

    /// Written by isc-dhcp-client 4.4.3-P1 (Debian 12) for a lease from
    /// dnsmasq 2.90 (`dhcp-option=option:domain-search,dhcp.lab,corp.example`
    /// and so on), in the default db-time-format.
    const DHCLIENT_REAL: &str = r#"lease {
  interface "mifhd1";
  fixed-address 198.18.0.85;
  option subnet-mask 255.255.255.0;
  option routers 198.18.0.1;
  option dhcp-lease-time 3600;
  option dhcp-message-type 5;
  option domain-name-servers 198.18.0.1,198.18.0.53;
  option dhcp-server-identifier 198.18.0.1;
  option domain-search "dhcp.lab.", "corp.example.";
  option dhcp-renewal-time 1800;
  option broadcast-address 198.18.0.255;
  option dhcp-rebinding-time 3150;
  option domain-name "dhcp.lab";
  renew 2 2026/12/01 06:49:46;
  rebind 2 2026/12/01 07:14:15;
  expire 2 2026/12/01 07:21:45;
}
"#;

    /// The same client restarted with `db-time-format local;` against a
    /// server that hands out loopback and multicast resolvers and a
    /// quoted domain name: dhclient rewrote the first lease in the new time
    /// format and appended the second.
    const DHCLIENT_REAL_EPOCH: &str = r#"lease {
  interface "mifhd1";
  fixed-address 198.18.0.85;
  option subnet-mask 255.255.255.0;
  option dhcp-lease-time 3600;
  option routers 198.18.0.1;
  option dhcp-message-type 5;
  option dhcp-server-identifier 198.18.0.1;
  option domain-name-servers 198.18.0.1,198.18.0.53;
  option domain-search "dhcp.lab.", "corp.example.";
  option dhcp-renewal-time 1800;
  option dhcp-rebinding-time 3150;
  option broadcast-address 198.18.0.255;
  option domain-name "dhcp.lab";
  renew epoch 1796107786; # Tue Dec 01 06:49:46 2026
  rebind epoch 1796109255; # Tue Dec 01 07:14:15 2026
  expire epoch 1796109705; # Tue Dec 01 07:21:45 2026
}
lease {
  interface "mifhd1";
  fixed-address 198.18.0.85;
  option subnet-mask 255.255.255.0;
  option routers 198.18.0.1;
  option dhcp-lease-time 120;
  option dhcp-message-type 5;
  option domain-name-servers 198.18.0.53,127.0.0.1,198.18.0.1,224.0.0.1,198.18.0.54;
  option dhcp-server-identifier 198.18.0.1;
  option domain-search "second.lab.";
  option dhcp-renewal-time 60;
  option broadcast-address 198.18.0.255;
  option dhcp-rebinding-time 105;
  option domain-name "\"Lab.Example other.example\"";
  renew epoch 1796106165; # Tue Dec 01 06:22:45 2026
  rebind epoch 1796106218; # Tue Dec 01 06:23:38 2026
  expire epoch 1796106233; # Tue Dec 01 06:23:53 2026
}
"#;

    /// `dhclient -6` of the same package against dnsmasq's DHCPv6.
    const DHCLIENT6_REAL: &str = r#"default-duid "\000\001\000\0012\241$\020\342k\014\206\307\223";
lease6 {
  interface "mifhd1";
  ia-na 0c:86:c7:93 {
    starts 1796106129;
    renew 3600;
    rebind 6300;
    iaaddr 2001:db8:0:1::17f {
      starts 1796106129;
      preferred-life 7200;
      max-life 7200;
    }
  }
  option dhcp6.client-id 0:1:0:1:32:a1:24:10:e2:6b:c:86:c7:93;
  option dhcp6.server-id 0:1:0:1:32:a1:24:d:96:cd:3f:11:1:45;
  option dhcp6.name-servers 2001:db8:0:1::53;
  option dhcp6.domain-search "v6.lab.";
  option dhcp6.status-code success "success";
}
"#;

    /// Written by systemd-networkd 252 (Debian 12) for the dnsmasq lease
    /// above, with `[DHCPv4] UseDomains=yes` (without it, networkd does not
    /// ask for option 119 and writes no DOMAIN_SEARCH_LIST).
    const NETWORKD_REAL: &str = "# This is private data. Do not parse.
ADDRESS=198.18.0.85
NETMASK=255.255.255.0
ROUTER=198.18.0.1
SERVER_ADDRESS=198.18.0.1
NEXT_SERVER=198.18.0.1
BROADCAST=198.18.0.255
T1=1800
T2=3150
LIFETIME=3600
DNS=198.18.0.1 198.18.0.53
DOMAINNAME=dhcp.lab
DOMAIN_SEARCH_LIST=dhcp.lab corp.example
HOSTNAME=vm
CLIENTID=ff2d4a09d600020000ab110033bdebf95e192c
";

    /// As nm-config.c `nm_config_device_state_write` writes it (GKeyFile,
    /// `[dhcp4]` keys `dhcp4.<option>`).
    const NM_DEVICE: &str = "[device]
managed=true
connection-uuid=5a4b7f37-2c1b-4a0f-9d7e-0123456789ab
route-metric-default-aspired=100
route-metric-default-effective=100

[dhcp4]
dhcp4.broadcast_address=198.18.0.255
dhcp4.dhcp_lease_time=3600
dhcp4.dhcp_server_identifier=198.18.0.1
dhcp4.domain_name=dhcp.lab
dhcp4.domain_name_servers=198.18.0.1 198.18.0.53
dhcp4.domain_search=dhcp.lab corp.example
dhcp4.expiry=1796109705
dhcp4.ip_address=198.18.0.85
dhcp4.subnet_mask=255.255.255.0

[dhcp6]
dhcp6.dhcp6_name_servers=2001:db8::53
dhcp6.dhcp6_domain_search=v6.lab
";

    #[test]
    fn dhclient_real_lease() {
        let parsed = parse_dhclient(DHCLIENT_REAL);
        assert_eq!(parsed.errors, []);
        assert_eq!(parsed.leases.len(), 1);
        let lease = &parsed.leases[0];
        assert_eq!(lease.interface.as_deref(), Some("mifhd1"));
        assert_eq!(lease.address, Some(Ipv4Addr::new(198, 18, 0, 85)));
        assert_eq!(lease.servers, [v4(198, 18, 0, 1), v4(198, 18, 0, 53)]);
        assert_eq!(lease.domains, ["dhcp.lab", "corp.example"]);
        // The same instant dhclient wrote as `epoch 1796109705` once
        // db-time-format was local.
        assert_eq!(lease.expires, Expiry::At(at(1_796_109_705)));
    }

    /// Written by isc-dhcp-client 4.4.3-P1 (Debian 12) for a lease from
    /// dnsmasq 2.90 started with `--dhcp-option-force=114,https://...`
    /// (the lab's `use_dhcp_forcing`): option 114 is dhclient's
    /// `default-url`, kept although its request list did not ask for it.
    const DHCLIENT_CAPTIVE_REAL: &str = r#"lease {
  interface "wwan0";
  fixed-address 198.18.1.191;
  option subnet-mask 255.255.255.0;
  option routers 198.18.1.1;
  option dhcp-lease-time 3600;
  option default-url "https://portal.lab/capport/api?net=wwan0";
  option dhcp-message-type 5;
  option domain-name-servers 198.18.1.1;
  option dhcp-server-identifier 198.18.1.1;
  option dhcp-renewal-time 1800;
  option broadcast-address 198.18.1.255;
  option dhcp-rebinding-time 3150;
  option domain-name "dhcp.lab";
  renew 2 2026/12/01 15:37:02;
  rebind 2 2026/12/01 16:00:49;
  expire 2 2026/12/01 16:08:19;
}
"#;

    #[test]
    fn dhclient_captive_portal_from_option_114_then_160() {
        let parsed = parse_dhclient(DHCLIENT_CAPTIVE_REAL);
        assert_eq!(parsed.errors, []);
        let lease = &parsed.leases[0];
        let uri = "https://portal.lab/capport/api?net=wwan0";
        assert_eq!(lease.captive_portal.as_deref(), Some(uri));
        assert_eq!(lease.servers, [v4(198, 18, 1, 1)]);
        assert_eq!(lease.domains, ["dhcp.lab"]);
        assert!(parse_dhclient(DHCLIENT_REAL).leases[0]
            .captive_portal
            .is_none());

        // RFC 7710's option 160 (`v4-captive-portal`) when 114 is absent,
        // 114 when both are there.
        let old = DHCLIENT_CAPTIVE_REAL.replace("default-url", "v4-captive-portal");
        assert_eq!(
            parse_dhclient(&old).leases[0].captive_portal.as_deref(),
            Some(uri)
        );
        let both = DHCLIENT_CAPTIVE_REAL.replace(
            "  option dhcp-message-type 5;\n",
            "  option v4-captive-portal \"https://old.lab/\";\n  option dhcp-message-type 5;\n",
        );
        assert_eq!(
            parse_dhclient(&both).leases[0].captive_portal.as_deref(),
            Some(uri)
        );

        // What dhclient wrote when dnsmasq was given the URI in quotes
        // (`114,"https://..."`): the quotes are part of the string, which
        // is then no URI; the rest of the lease stands.
        let quoted =
            DHCLIENT_CAPTIVE_REAL.replace(&format!("\"{uri}\""), &format!("\"\\\"{uri}\\\"\""));
        assert!(
            quoted.contains(r#"option default-url "\"https://"#),
            "{quoted}"
        );
        let lease = &parse_dhclient(&quoted).leases[0];
        assert_eq!(lease.captive_portal, None);
        assert_eq!(lease.servers, [v4(198, 18, 1, 1)]);
    }

    #[test]
    fn dhclient_epoch_format_and_last_unexpired_lease_wins() {
        let parsed = parse_dhclient(DHCLIENT_REAL_EPOCH);
        assert_eq!(parsed.errors, []);
        assert_eq!(parsed.leases.len(), 2);
        let second = &parsed.leases[1];
        assert_eq!(second.expires, Expiry::At(at(1_796_106_233)));
        // 127.0.0.1 and 224.0.0.1 dropped; the quoted name's labels hold
        // '"', so neither half is a domain.
        assert_eq!(
            second.servers,
            [v4(198, 18, 0, 53), v4(198, 18, 0, 1), v4(198, 18, 0, 54)]
        );
        assert_eq!(second.domains, ["second.lab"]);

        // Before 06:23:53 the appended lease is current.
        let current = current_dhclient(&parsed.leases, at(1_796_106_200));
        assert_eq!(current["mifhd1"].domains, ["second.lab"]);
        // After it, the earlier lease (until 07:21:45) still is.
        let current = current_dhclient(&parsed.leases, at(NOW));
        assert_eq!(current["mifhd1"].domains, ["dhcp.lab", "corp.example"]);
        // After both, none.
        assert!(current_dhclient(&parsed.leases, at(1_796_109_705)).is_empty());
    }

    #[test]
    fn dhclient_several_interfaces_and_appended_leases() {
        let text = "\
# dhclient.leases
lease {
  interface \"eth0\";
  fixed-address 198.18.1.10;
  option domain-name-servers 198.18.1.1;
  expire 2 2026/12/01 09:00:00;
}
lease {
  interface \"wlan0\";
  fixed-address 198.18.2.10;
  option domain-name-servers 198.18.2.1;
  expire never;
}
lease {
  interface \"eth0\";
  fixed-address 198.18.1.11;
  option domain-name-servers 198.18.1.2;
  expire 2 2026/12/01 08:00:00;
}
";
        let parsed = parse_dhclient(text);
        assert_eq!(parsed.errors, []);
        let current = current_dhclient(&parsed.leases, at(NOW));
        assert_eq!(current.len(), 2);
        assert_eq!(current["eth0"].servers, [v4(198, 18, 1, 2)]);
        assert_eq!(current["wlan0"].expires, Expiry::Never);
        // 08:30: the last eth0 lease has expired, the earlier one has not.
        let later = current_dhclient(&parsed.leases, at(NOW + 2 * 3600));
        assert_eq!(later["eth0"].servers, [v4(198, 18, 1, 1)]);
        assert_eq!(later["eth0"].address, Some(Ipv4Addr::new(198, 18, 1, 10)));
    }

    #[test]
    fn dhclient_ipv6_leases_and_other_statements_are_skipped() {
        let parsed = parse_dhclient(DHCLIENT6_REAL);
        assert_eq!(parsed, Parsed::default());

        // dhcp6 options inside a v4 lease, unknown statements and options,
        // and a statement after the block are ignored.
        let text = "lease {
  interface \"eth0\";
  bootp;
  medium \"media\";
  option dhcp6.name-servers 2001:db8::53;
  option unknown-245 1:2:3:4;
  option domain-name-servers 198.18.0.1;
  expire never;
}
alias { interface \"eth0\"; fixed-address 198.18.0.9; }
";
        let parsed = parse_dhclient(text);
        assert_eq!(parsed.errors, []);
        assert_eq!(parsed.leases.len(), 1);
        assert_eq!(parsed.leases[0].servers, [v4(198, 18, 0, 1)]);
    }

    #[test]
    fn dhclient_missing_fields() {
        // No expire: dhclient counts the lease as expired.
        let parsed = parse_dhclient("lease { interface \"eth0\"; option domain-name \"a.b\"; }");
        assert_eq!(parsed.errors, []);
        assert_eq!(parsed.leases[0].expires, Expiry::At(UNIX_EPOCH));
        assert!(current_dhclient(&parsed.leases, at(NOW)).is_empty());

        // No DNS options: a lease, but one that teaches nothing.
        let parsed = parse_dhclient("lease { interface \"eth0\"; expire never; }");
        assert!(!parsed.leases[0].has_dns());

        // No interface: not current for anyone.
        let parsed =
            parse_dhclient("lease { option domain-name-servers 198.18.0.1; expire never; }");
        assert_eq!(parsed.leases[0].interface, None);
        assert!(current_dhclient(&parsed.leases, at(NOW)).is_empty());
    }

    #[test]
    fn dhclient_quoting_escapes_and_comments() {
        let text = r#"lease { # a comment with "quotes" and { braces
  interface "eth\060";  # \060 is '0'
  option domain-name "Corp.Example. Lab.Example";
  option domain-search "a\.b.example.", "semi;colon.example", "x\"y.example", "ok.example.";
  option domain-name-servers 198.18.0.1 , 198.18.0.2;
  expire never;
}
"#;
        let parsed = parse_dhclient(text);
        assert_eq!(parsed.errors, []);
        let lease = &parsed.leases[0];
        assert_eq!(lease.interface.as_deref(), Some("eth0"));
        assert_eq!(lease.servers, [v4(198, 18, 0, 1), v4(198, 18, 0, 2)]);
        // `\.` is a plain dot; ';' and '"' are not in labels.
        assert_eq!(
            lease.domains,
            ["a.b.example", "ok.example", "corp.example", "lab.example"]
        );
    }

    #[test]
    fn dhclient_garbled_declarations_are_left_out() {
        let good = "lease {\n  interface \"eth0\";\n  option domain-name-servers 198.18.0.1;\n  expire never;\n}\n";

        // A truncated last lease (dhclient killed mid-write): the complete
        // one before it is kept.
        let text = format!(
            "{good}lease {{\n  interface \"eth0\";\n  option domain-name-servers 198.18.0.9;\n"
        );
        let parsed = parse_dhclient(&text);
        assert_eq!(parsed.leases.len(), 1);
        assert_eq!(parsed.leases[0].servers, [v4(198, 18, 0, 1)]);
        assert_eq!(
            parsed.errors,
            [ParseError::syntax(6, "'{' is never closed")]
        );

        // An unterminated string.
        let text = format!("{good}lease {{\n  interface \"eth0;\n}}\n");
        let parsed = parse_dhclient(&text);
        assert_eq!(parsed.leases.len(), 1);
        assert!(parsed
            .errors
            .contains(&ParseError::syntax(7, "string is not closed")));

        // A statement without ';', a stray '}', a bad date.
        let text = format!(
            "}}\nlease {{ interface \"eth1\"; option domain-name-servers 198.18.0.2 }}\n{good}\
             lease {{ interface \"eth2\"; expire 2 2026/13/01 00:00:00; }}\n"
        );
        let parsed = parse_dhclient(&text);
        assert_eq!(parsed.leases.len(), 1);
        assert_eq!(parsed.leases[0].interface.as_deref(), Some("eth0"));
        assert_eq!(
            parsed.errors,
            [
                ParseError::syntax(1, "'}' without a matching '{'"),
                ParseError::syntax(2, "statement does not end with ';'"),
                ParseError::syntax(8, "expire is not a date"),
            ]
        );

        // Not a lease file at all.
        let parsed = parse_dhclient("hello world");
        assert_eq!(parsed.leases, []);
        assert_eq!(parsed.errors.len(), 1);
    }

    #[test]
    fn dhclient_deep_nesting_and_binary_input_do_not_panic() {
        let deep = "{".repeat(200_000);
        let parsed = parse_dhclient(&deep);
        assert_eq!(parsed.leases, []);
        assert!(!parsed.errors.is_empty());

        let closed = format!("lease {}{}", "{".repeat(100_000), "}".repeat(100_001));
        let parsed = parse_dhclient(&closed);
        assert_eq!(parsed.leases, []);
        assert!(parsed
            .errors
            .contains(&ParseError::syntax(1, "blocks nested too deep")));

        let bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_dhclient(&text);
        let _ = parse_networkd(&text);
        let _ = parse_nm_device_state(&text);
        let _ = parse_networkd_json(&text);
        let _ = sniff(&text);
        // A backslash at the very end of an unterminated string.
        let _ = parse_dhclient("lease { interface \"eth0\\");
    }

    #[test]
    fn dhclient_dates() {
        assert_eq!(
            parse_dhclient_time("4 1970/01/01 00:00:00"),
            Some(Expiry::At(at(0)))
        );
        assert_eq!(
            parse_dhclient_time("2 2026/12/01 07:21:45"),
            Some(Expiry::At(at(1_796_109_705)))
        );
        // Leap days, centuries.
        assert_eq!(
            parse_dhclient_time("2 2000/02/29 12:00:00"),
            Some(Expiry::At(at(951_825_600)))
        );
        assert_eq!(
            parse_dhclient_time("1 2100/03/01 00:00:00"),
            Some(Expiry::At(at(4_107_542_400)))
        );
        assert_eq!(
            parse_dhclient_time("0 2038/01/19 03:14:08"),
            Some(Expiry::At(at(1 << 31)))
        );
        assert_eq!(
            parse_dhclient_time("epoch 1796109705"),
            Some(Expiry::At(at(1_796_109_705)))
        );
        assert_eq!(parse_dhclient_time("never"), Some(Expiry::Never));
        for bad in [
            "",
            "2 2026/12/01",
            "2026/12/01 07:21:45",
            "2 2026/02/29 00:00:00",
            "2 2100/02/29 00:00:00",
            "2 2026/12/32 00:00:00",
            "2 2026/00/01 00:00:00",
            "2 2026/12/01 24:00:00",
            "2 2026/12/01 07:60:00",
            "2 2026/12/01 07:21",
            "2 2026/12/01/1 07:21:45",
            "x 2026/12/01 07:21:45",
            "2 1969/12/31 23:59:59",
            "epoch",
            "epoch -1",
            "epoch 1.5",
        ] {
            assert_eq!(parse_dhclient_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn servers_and_domains_are_checked_and_capped() {
        let servers = clean_servers([
            v4(0, 0, 0, 0),
            v4(127, 0, 0, 53),
            v4(224, 0, 0, 251),
            v4(255, 255, 255, 255),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            v4(198, 18, 0, 1),
            v4(198, 18, 0, 1),
            v4(198, 18, 0, 2),
            v4(198, 18, 0, 3),
            v4(198, 18, 0, 4),
            v4(198, 18, 0, 5),
        ]);
        assert_eq!(
            servers,
            [
                v4(198, 18, 0, 1),
                v4(198, 18, 0, 2),
                v4(198, 18, 0, 3),
                v4(198, 18, 0, 4)
            ]
        );
        assert_eq!(servers.len(), MAX_DNS);

        assert_eq!(
            normalize_domain("Corp.Example."),
            Some("corp.example".into())
        );
        assert_eq!(
            normalize_domain("_srv.x-y.example"),
            Some("_srv.x-y.example".into())
        );
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "a b",
            "localhost",
            "LocalHost.",
            "x.localhost",
            "bücher.example",
            "a/b",
        ] {
            assert_eq!(normalize_domain(bad), None, "{bad:?}");
        }
        let long_label = "a".repeat(64);
        assert_eq!(normalize_domain(&long_label), None);
        let long_name = vec!["a".repeat(63); 4].join(".");
        assert_eq!(long_name.len(), 255);
        assert_eq!(normalize_domain(&long_name), None);

        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let domains = clean_domains(
            ["D0.example.", "d0.example"]
                .into_iter()
                .chain(many.iter().map(String::as_str)),
        );
        assert_eq!(domains.len(), MAX_DOMAINS);
        assert_eq!(domains[0], "d0.example");
        assert_eq!(domains[1], "d1.example");
    }

    #[test]
    fn networkd_real_lease() {
        let parsed = parse_networkd(NETWORKD_REAL);
        assert_eq!(parsed.errors, []);
        let lease = &parsed.leases[0];
        assert_eq!(lease.interface, None);
        assert_eq!(lease.address, Some(Ipv4Addr::new(198, 18, 0, 85)));
        assert_eq!(lease.servers, [v4(198, 18, 0, 1), v4(198, 18, 0, 53)]);
        assert_eq!(lease.domains, ["dhcp.lab", "corp.example"]);
        assert_eq!(lease.expires, Expiry::Unrecorded);
        assert_eq!(lease.lifetime, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn networkd_quirks_and_garbled_lines() {
        let text = "# comment\n\
            ADDRESS=198.18.0.85\n\
            this line is garbage\n\
            DNS=198.18.0.1 not-an-address 0.0.0.0 198.18.0.53\n\
            DOMAINNAME=\"Only.Name\"\n\
            LIFETIME=1h\n";
        let parsed = parse_networkd(text);
        assert_eq!(parsed.errors, [ParseError::syntax(3, "not KEY=value")]);
        let lease = &parsed.leases[0];
        assert_eq!(lease.servers, [v4(198, 18, 0, 1), v4(198, 18, 0, 53)]);
        assert_eq!(lease.domains, ["only.name"]);
        // A time span (newer systemd) is not needed and not read.
        assert_eq!(lease.lifetime, None);

        // NetworkManager 1.22+'s internal lease: only the address.
        let parsed = parse_networkd("# This is private data. Do not parse.\nADDRESS=198.18.0.85\n");
        assert_eq!(parsed.errors, []);
        assert!(!parsed.leases[0].has_dns());

        assert_eq!(parse_networkd(""), Parsed::default());
        assert_eq!(unquote("'a b'"), "a b");
        assert_eq!(unquote(r#""a\"b""#), "a\"b");
        assert_eq!(unquote("\""), "\"");
    }

    #[test]
    fn networkd_json_lease() {
        let text = r#"{
  "Address": [198, 18, 0, 85],
  "AddressString": "198.18.0.85",
  "Router": [[198, 18, 0, 1]],
  "Servers": { "DNS": [[198, 18, 0, 1], [198, 18, 0, 53], [127, 0, 0, 1], [1, 2, 3]], "NTP": [[198, 18, 0, 1]] },
  "Domain_Name": "dhcp.lab",
  "Domain_Search_List": ["dhcp.lab", "corp.example"],
  "Lifetime": "1h",
  "Timestamp_realtime": "Tue 2026-12-01 06:21:45.000000 UTC"
}"#;
        let parsed = parse_networkd_json(text);
        assert_eq!(parsed.errors, []);
        let lease = &parsed.leases[0];
        assert_eq!(lease.address, Some(Ipv4Addr::new(198, 18, 0, 85)));
        assert_eq!(lease.servers, [v4(198, 18, 0, 1), v4(198, 18, 0, 53)]);
        assert_eq!(lease.domains, ["dhcp.lab", "corp.example"]);

        assert!(matches!(
            parse_networkd_json("{ \"Address\": ").errors[..],
            [ParseError::Json(_)]
        ));
        assert!(matches!(
            parse_networkd_json("[1]").errors[..],
            [ParseError::Json(_)]
        ));
    }

    #[test]
    fn nm_device_state() {
        let parsed = parse_nm_device_state(NM_DEVICE);
        assert_eq!(parsed.errors, []);
        let lease = &parsed.leases[0];
        assert_eq!(lease.address, Some(Ipv4Addr::new(198, 18, 0, 85)));
        assert_eq!(lease.servers, [v4(198, 18, 0, 1), v4(198, 18, 0, 53)]);
        assert_eq!(lease.domains, ["dhcp.lab", "corp.example"]);
        assert_eq!(lease.expires, Expiry::At(at(1_796_109_705)));

        assert_eq!(lease.captive_portal, None);

        // Options 114 and 160 as NetworkManager names them
        // (nm-dhcp-options.c: `default_url`, `v4_captive_portal`).
        let with = |lines: &str| {
            let text = NM_DEVICE.replace(
                "dhcp4.domain_name=dhcp.lab\n",
                &format!("dhcp4.domain_name=dhcp.lab\n{lines}"),
            );
            parse_nm_device_state(&text).leases[0]
                .captive_portal
                .clone()
        };
        let portal = "https://portal.lab/api";
        assert_eq!(
            with(&format!("dhcp4.default_url={portal}\n")).as_deref(),
            Some(portal)
        );
        assert_eq!(
            with("dhcp4.v4_captive_portal=https://old.lab/\n").as_deref(),
            Some("https://old.lab/")
        );
        let both =
            format!("dhcp4.v4_captive_portal=https://old.lab/\ndhcp4.default_url={portal}\n");
        assert_eq!(with(&both).as_deref(), Some(portal));
        // GKeyFile's `\s` is a blank: no URI.
        assert_eq!(with("dhcp4.default_url=https://a\\sb/\n"), None);

        // A device without DHCPv4 (static, or IPv6 only).
        let parsed = parse_nm_device_state(
            "[device]\nmanaged=true\n\n[dhcp6]\ndhcp6.dhcp6_name_servers=2001:db8::53\n",
        );
        assert_eq!(parsed, Parsed::default());

        // Escapes and garbled lines.
        let parsed = parse_nm_device_state(
            "orphan=1\n[dhcp4\n[dhcp4]\ndhcp4.domain_search=a.example\\sb.example\nnonsense\n",
        );
        assert_eq!(parsed.leases[0].domains, ["a.example", "b.example"]);
        assert_eq!(
            parsed.errors,
            [
                ParseError::syntax(1, "key before any [group]"),
                ParseError::syntax(2, "group header without ']'"),
                ParseError::syntax(5, "not key=value"),
            ]
        );
    }

    #[test]
    fn file_names() {
        assert_eq!(name_hint("5"), NameHint::Ifindex(5));
        assert_eq!(name_hint("0"), NameHint::None);
        assert_eq!(name_hint("99999999999"), NameHint::None);
        assert_eq!(
            name_hint("internal-5a4b7f37-2c1b-4a0f-9d7e-0123456789ab-br-lan.lease"),
            NameHint::Ifname("br-lan".into())
        );
        assert_eq!(
            name_hint("dhclient-5a4b7f37-2c1b-4a0f-9d7e-0123456789ab-wlp2s0.lease"),
            NameHint::Ifname("wlp2s0".into())
        );
        assert_eq!(
            name_hint("internal6-5a4b7f37-2c1b-4a0f-9d7e-0123456789ab-eth0.lease"),
            NameHint::Ipv6
        );
        assert_eq!(
            name_hint("dhclient6-5a4b7f37-2c1b-4a0f-9d7e-0123456789ab-eth0.lease"),
            NameHint::Ipv6
        );
        assert_eq!(
            name_hint("dhclient.eth0.leases"),
            NameHint::Ifname("eth0".into())
        );
        assert_eq!(name_hint("dhclient.leases"), NameHint::None);
        assert_eq!(name_hint("internal-not-a-uuid-eth0.lease"), NameHint::None);
        assert_eq!(
            name_hint("internal-5a4b7f37-2c1b-4a0f-9d7e-0123456789ab-.lease"),
            NameHint::None
        );
        // Multi-byte characters where the UUID would end must not panic.
        assert_eq!(
            name_hint("internal-aéééééééééééééééééééé-eth0.lease"),
            NameHint::None
        );
        assert_eq!(name_hint("dhclient.ab/c.leases"), NameHint::None);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("dhclient*.leases", "dhclient.leases"));
        assert!(wildcard_match("dhclient*.leases", "dhclient.eth0.leases"));
        assert!(wildcard_match("dhclient*.leases", "dhclient6.leases"));
        assert!(!wildcard_match("dhclient*.leases", "dhclient.leases~"));
        assert!(!wildcard_match("dhclient*.leases", "xdhclient.leases"));
        assert!(!wildcard_match("a*a", "a"));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("*.lease", ".lease"));
        assert!(wildcard_match("a*b*c", "aXbYc"));
        assert!(!wildcard_match("a*b*c", "aXcYb"));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exactly"));
    }

    #[test]
    fn format_sniffing() {
        assert_eq!(sniff(""), Syntax::Empty);
        assert_eq!(sniff("\n# only a comment\n"), Syntax::Empty);
        assert_eq!(sniff(DHCLIENT_REAL), Syntax::Dhclient);
        assert_eq!(sniff(DHCLIENT6_REAL), Syntax::Dhclient);
        assert_eq!(sniff(NETWORKD_REAL), Syntax::KeyValue);
        assert_eq!(sniff(NM_DEVICE), Syntax::KeyFile);
        assert_eq!(sniff("{\"Address\": [1,2,3,4]}"), Syntax::Json);
        assert_eq!(sniff("lease{interface \"a=b\";}"), Syntax::Dhclient);
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).expect("write test file");
        path
    }

    #[test]
    fn learn_reads_every_format_from_disk() {
        let root = tempfile::tempdir().expect("tempdir");
        let dhcp = root.path().join("dhcp");
        let nm = root.path().join("NetworkManager");
        let nm_devices = root.path().join("nm-devices");
        let networkd = root.path().join("leases");
        for dir in [&dhcp, &nm, &nm_devices, &networkd] {
            fs::create_dir(dir).expect("mkdir");
        }
        write(&dhcp, "dhclient.leases", DHCLIENT_REAL);
        write(&dhcp, "dhclient6.leases", DHCLIENT6_REAL);
        write(
            &dhcp,
            "unrelated.conf",
            "lease { interface \"x\"; expire never; }",
        );
        // ifupdown's per-interface file, whose leases lack `interface`.
        write(
            &dhcp,
            "dhclient.eth9.leases",
            "lease { option domain-name-servers 198.18.9.1; expire never; }",
        );
        write(&networkd, "3", NETWORKD_REAL);
        write(&networkd, ".#3tmpXYZ", "DNS=198.18.7.7\n");
        write(
            &nm_devices,
            "4",
            &NM_DEVICE.replace("198.18.0.1 198.18.0.53", "198.18.4.1"),
        );
        write(
            &nm,
            "internal-5a4b7f37-2c1b-4a0f-9d7e-0123456789ab-wlan0.lease",
            "# This is private data. Do not parse.\nADDRESS=198.18.5.5\n",
        );
        write(&nm, "timestamps", "[timestamps]\n");

        let patterns = [
            dhcp.join("dhclient*.leases"),
            nm.join("*.lease"),
            nm_devices.join("*"),
            networkd.clone(),
            root.path().join("missing/dir/*"),
            root.path().join("missing-file"),
        ];
        let names = ifnames(&[(3, "enp3s0"), (4, "wlp4s0")]);
        let learned = learn(&patterns, &names, at(NOW));
        assert!(learned.problems.is_empty(), "{:?}", learned.problems);
        let links: Vec<&str> = learned.links.keys().map(String::as_str).collect();
        assert_eq!(links, ["enp3s0", "eth9", "mifhd1", "wlp4s0"]);

        let mifhd1 = &learned.links["mifhd1"];
        assert_eq!(mifhd1.servers, [v4(198, 18, 0, 1), v4(198, 18, 0, 53)]);
        assert_eq!(mifhd1.source.format, LeaseFormat::Dhclient);
        assert_eq!(mifhd1.source.path, dhcp.join("dhclient.leases"));
        assert_eq!(
            mifhd1.source.to_string(),
            format!("dhclient lease {}", dhcp.join("dhclient.leases").display())
        );
        assert_eq!(learned.links["eth9"].servers, [v4(198, 18, 9, 1)]);

        let enp3s0 = &learned.links["enp3s0"];
        assert_eq!(enp3s0.source.format, LeaseFormat::Networkd);
        assert_eq!(enp3s0.domains, ["dhcp.lab", "corp.example"]);
        assert_eq!(enp3s0.expires, Expiry::Unrecorded);

        let wlp4s0 = &learned.links["wlp4s0"];
        assert_eq!(wlp4s0.source.format, LeaseFormat::NetworkManagerDevice);
        assert_eq!(wlp4s0.servers, [v4(198, 18, 4, 1)]);

        // After the dhclient and NetworkManager leases expired, networkd's
        // file still counts, and the never-ending lease.
        let later = learn(&patterns, &names, at(1_796_109_705));
        let links: Vec<&str> = later.links.keys().map(String::as_str).collect();
        assert_eq!(links, ["enp3s0", "eth9"]);
    }

    #[test]
    fn learn_names_networkd_files_by_ifindex() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "3", NETWORKD_REAL);
        write(dir.path(), "7", NETWORKD_REAL);
        // A file networkd is about to replace by renaming is hidden.
        write(dir.path(), ".#7abc", "garbage");

        let learned = learn(&[dir.path()], &ifnames(&[(3, "eth0")]), at(NOW));
        assert_eq!(learned.links.keys().collect::<Vec<_>>(), ["eth0"]);
        match &learned.problems[..] {
            [LeaseError::NoInterface { path, why }] => {
                assert_eq!(path, &dir.path().join("7"));
                assert_eq!(why, "interface index 7 is not a known link");
            }
            other => panic!("unexpected problems {other:?}"),
        }

        // With both known, both are named; renamed links follow the map.
        let learned = learn(&[dir.path()], &ifnames(&[(3, "lan"), (7, "wan")]), at(NOW));
        assert_eq!(learned.links.keys().collect::<Vec<_>>(), ["lan", "wan"]);
        assert!(learned.problems.is_empty());
    }

    #[test]
    fn learn_keeps_a_lease_that_gives_only_a_captive_portal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = DHCLIENT_CAPTIVE_REAL
            .replace("  option domain-name-servers 198.18.1.1;\n", "")
            .replace("  option domain-name \"dhcp.lab\";\n", "")
            .replace("2026/12/01 16:08:19", "2026/12/01 07:30:00");
        write(dir.path(), "dhclient.leases", &text);
        let learned = learn(&[dir.path()], &ifnames(&[]), at(NOW));
        assert!(learned.problems.is_empty(), "{:?}", learned.problems);
        let link = &learned.links["wwan0"];
        assert!(link.servers.is_empty() && link.domains.is_empty());
        assert_eq!(
            link.captive_portal.as_deref(),
            Some("https://portal.lab/capport/api?net=wwan0")
        );
        // Expired, it teaches nothing, portal included.
        let learned = learn(&[dir.path()], &ifnames(&[]), at(NOW + 7200));
        assert!(learned.links.is_empty());
    }

    #[test]
    fn learn_prefers_live_state_over_dhclient_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A dhclient lease that has not expired, for the link networkd now
        // manages: networkd's file wins, whatever the order.
        let stale =
            "lease { interface \"eth0\"; option domain-name-servers 198.18.8.8; expire never; }";
        write(dir.path(), "dhclient.leases", stale);
        write(dir.path(), "2", "DNS=198.18.2.2\n");
        write(
            dir.path(),
            "dhclient.eth0.leases",
            &DHCLIENT_REAL.replace("mifhd1", "eth0"),
        );
        let names = ifnames(&[(2, "eth0")]);
        let learned = learn(&[dir.path()], &names, at(NOW));
        assert_eq!(learned.links["eth0"].servers, [v4(198, 18, 2, 2)]);
        assert_eq!(learned.links["eth0"].source.format, LeaseFormat::Networkd);

        // Without networkd's file, of two dhclient files the later expiry
        // wins (`never` beats a date).
        fs::remove_file(dir.path().join("2")).expect("rm");
        let learned = learn(&[dir.path()], &names, at(NOW));
        assert_eq!(learned.links["eth0"].servers, [v4(198, 18, 8, 8)]);
        assert_eq!(learned.links["eth0"].expires, Expiry::Never);
    }

    #[test]
    fn learn_reports_garbled_and_oversized_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let garbled = write(
            dir.path(),
            "dhclient.leases",
            &format!("{DHCLIENT_REAL}lease {{\n  interface \"mifhd1\";\n"),
        );
        let big = dir.path().join("dhclient.big.leases");
        let file = fs::File::create(&big).expect("create");
        file.set_len(MAX_LEASE_FILE + 1).expect("set_len");
        write(dir.path(), "dhclient.empty.leases", "");

        let learned = learn(
            &[dir.path().join("dhclient*.leases")],
            &BTreeMap::new(),
            at(NOW),
        );
        // The complete lease before the truncated one is still used.
        assert_eq!(
            learned.links["mifhd1"].servers,
            [v4(198, 18, 0, 1), v4(198, 18, 0, 53)]
        );
        assert_eq!(learned.problems.len(), 2, "{:?}", learned.problems);
        assert!(learned.problems.iter().any(|p| matches!(p,
            LeaseError::TooLarge { path } if path == &big)));
        assert!(learned.problems.iter().any(|p| matches!(p,
            LeaseError::Garbled { path, format: LeaseFormat::Dhclient, error }
                if path == &garbled && error.line() == 19)));
        for problem in &learned.problems {
            assert!(problem
                .to_string()
                .starts_with(dir.path().to_str().unwrap_or("")));
        }
    }

    #[test]
    fn learn_dates_networkmanager_internal_leases_by_file_time() {
        // NetworkManager up to 1.20 kept networkd-style leases in
        // /var/lib, across reboots: counted from when they were written.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "internal-5a4b7f37-2c1b-4a0f-9d7e-0123456789ab-eth0.lease",
            "ADDRESS=198.18.0.85\nDNS=198.18.0.1\nLIFETIME=3600\n",
        );
        let written = at(NOW);
        fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(written))
            .expect("set mtime");
        let learned = learn(&[dir.path()], &BTreeMap::new(), at(NOW + 60));
        let eth0 = &learned.links["eth0"];
        assert_eq!(eth0.source.format, LeaseFormat::NetworkManagerInternal);
        assert_eq!(eth0.expires, Expiry::At(at(NOW + 3600)));
        assert!(learn(&[dir.path()], &BTreeMap::new(), at(NOW + 3600))
            .links
            .is_empty());
    }

    #[test]
    fn learn_reads_a_single_named_file_and_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "12",
            r#"{"Address":[198,18,0,85],"Servers":{"DNS":[[198,18,0,1]]},"Domain_Name":"dhcp.lab"}"#,
        );
        let learned = learn(&[&path], &ifnames(&[(12, "eth0")]), at(NOW));
        let eth0 = &learned.links["eth0"];
        assert_eq!(eth0.source.format, LeaseFormat::NetworkdJson);
        assert_eq!(eth0.servers, [v4(198, 18, 0, 1)]);
        assert_eq!(eth0.domains, ["dhcp.lab"]);

        // Named twice, read once.
        let learned = learn(&[&path, &path], &ifnames(&[(12, "eth0")]), at(NOW));
        assert_eq!(learned.links.len(), 1);
        assert!(learned.problems.is_empty());
    }

    #[test]
    fn default_paths_are_absolute_with_literal_directories() {
        for path in DEFAULT_LEASE_PATHS {
            let path = Path::new(path);
            assert!(path.is_absolute());
            let parent = path.parent().and_then(Path::to_str).unwrap_or("*");
            assert!(!parent.contains('*'), "{}", path.display());
        }
    }
}
