//! The set of policies a running daemon enforces: those of the config file
//! and those set at run time from the CLI (persisted in the state
//! directory), with one rule of precedence: the config file owns the
//! cgroups it names; the CLI manages every other cgroup. So a policy has
//! exactly one source, and an admin is told which file to edit when the CLI
//! may not change it.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use mif_common::{names, MAX_PREFER};

use crate::{
    host::cgroup::{check_cgroup_path, normalize_cgroup},
    host::cgroup::{Cgroup, Cgroup2},
    host::cgroup_pattern::{existing_matches, is_pattern, search_root, CgroupPattern},
    model::config::{Config, PolicyConfig, PolicyTerms, MAX_EXCLUDE},
    plan::{ResolvedPolicy, POLICY_CAPACITY_MAX},
};

/// Where a policy comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Origin {
    Config { file: PathBuf, line: usize },
    Cli,
}

/// One policy as an admin wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySpec {
    pub cgroup: Arc<str>,
    /// Flattened: the control protocol and the state file keep one flat
    /// object per policy.
    #[serde(flatten)]
    pub terms: Arc<PolicyTerms>,
}

impl PolicySpec {
    /// Checks a policy that came from outside (the control socket) as the
    /// config file's are checked, and normalises its cgroup path. Pure, so
    /// the fuzz targets run it on every decoded request.
    pub fn checked(mut self) -> Result<Self, PolicyError> {
        check_cgroup_path(&self.cgroup).map_err(|reason| PolicyError::BadCgroup {
            cgroup: self.cgroup.to_string(),
            reason,
        })?;
        self.cgroup = normalize_cgroup(&self.cgroup).into();
        if self.terms.prefer.is_empty() || self.terms.prefer.len() > MAX_PREFER {
            return Err(PolicyError::PreferCount);
        }
        for (i, name) in self.terms.prefer.iter().enumerate() {
            if self.terms.prefer[..i].contains(name) {
                return Err(PolicyError::PreferTwice(name.clone()));
            }
        }
        if self.terms.exclude.len() > MAX_EXCLUDE {
            return Err(PolicyError::ExcludeCount);
        }
        if self.terms.strict && !self.terms.allow.is_empty() {
            return Err(PolicyError::AllowStrict);
        }
        for (i, name) in self.terms.allow.iter().enumerate() {
            if self.terms.allow[..i].contains(name) {
                return Err(PolicyError::AllowTwice(name.clone()));
            }
        }
        Ok(self)
    }

    pub fn from_config(p: &PolicyConfig) -> Self {
        Self {
            cgroup: p.cgroup.clone(),
            terms: p.terms.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("cgroup {cgroup} has its policy in {}:{line}; edit that file and reload (SIGHUP or `mif reload`)", file.display())]
    OwnedByConfig {
        cgroup: String,
        file: PathBuf,
        line: usize,
    },
    #[error("no policy for cgroup {0}")]
    NotFound(String),
    #[error("cgroup {cgroup:?}: {reason}")]
    BadCgroup { cgroup: String, reason: String },
    #[error("--prefer: list 1 to {MAX_PREFER} PvDs")]
    PreferCount,
    #[error("--prefer: {0:?} listed twice")]
    PreferTwice(String),
    #[error("--exclude: at most {MAX_EXCLUDE} destinations")]
    ExcludeCount,
    #[error("--allow with --strict: a strict policy's processes may choose among its --prefer list only")]
    AllowStrict,
    #[error("--allow: {0:?} listed twice")]
    AllowTwice(String),
    #[error(
        "refused, nothing changed: the policy map {} holds at most {limit} cgroups, \
         and with this policy for {cgroup} the policies would cover {needed}; \
         remove policies or narrow patterns first (a restarted daemon sizes the map \
         for the policies it finds, up to {POLICY_CAPACITY_MAX})",
        names::MAP_POLICIES
    )]
    OverCapacity {
        cgroup: String,
        limit: usize,
        needed: usize,
    },
}

/// The policies in force. The config file's are kept as the file gave
/// them (one compact record each, their file named once): with 100,000
/// policies, every per-policy copy or field costs megabytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    config: Vec<PolicyConfig>,
    cli: BTreeMap<String, PolicySpec>,
}

impl PolicySet {
    /// The config file's policies, in the file's order.
    pub fn config_policies(&self) -> impl Iterator<Item = &PolicyConfig> {
        self.config.iter()
    }

    /// Every PvD name some policy prefers, from the file and the CLI: an
    /// interface so named is a PvD even without a default route (a split
    /// VPN, a link that is down at start). The PvDs of `allow` lists count
    /// too: an application may choose them.
    pub fn preferred_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let terms =
            (self.config.iter().map(|p| &p.terms)).chain(self.cli.values().map(|s| &s.terms));
        // A name is copied once, not once per policy naming it (100,000
        // policies name a handful of PvDs).
        for name in terms.flat_map(|t| t.named_pvds()) {
            if !names.contains(name) {
                names.insert(name.clone());
            }
        }
        names
    }

    /// The config file's policies (taken out of `config`, see
    /// [`PolicySet::replace_config`]) plus the persisted CLI ones. A
    /// persisted policy for a cgroup the file now names is dropped
    /// (returned) — the file wins.
    pub fn new(config: &mut Config, persisted: Vec<PolicySpec>) -> (Self, Vec<PolicySpec>) {
        let mut set = Self::default();
        set.replace_config(config);
        let mut dropped = Vec::new();
        for spec in persisted {
            if set.owned_by_config(&spec.cgroup).is_some() {
                dropped.push(spec);
            } else {
                set.cli.insert(spec.cgroup.to_string(), spec);
            }
        }
        (set, dropped)
    }

    /// A new set of `config`'s policies and this set's CLI policies (less
    /// those the file now names, returned), leaving this set as it is: for
    /// a reload that may yet be refused.
    pub fn with_config(&self, config: &mut Config) -> (PolicySet, Vec<PolicySpec>) {
        let mut next = PolicySet {
            config: Vec::new(),
            cli: self.cli.clone(),
        };
        let displaced = next.replace_config(config);
        (next, displaced)
    }

    /// Takes the policies of a (re)loaded config file, leaving
    /// `config.policies` empty: the set keeps the one copy of them in the
    /// daemon. CLI policies for cgroups the file now names give way; they
    /// are returned.
    pub fn replace_config(&mut self, config: &mut Config) -> Vec<PolicySpec> {
        self.config = std::mem::take(&mut config.policies);
        if self.cli.is_empty() {
            return Vec::new();
        }
        let owned: std::collections::HashSet<&str> =
            self.config.iter().map(|p| &*p.cgroup).collect();
        let (displaced, kept) = std::mem::take(&mut self.cli)
            .into_iter()
            .partition(|(cgroup, _)| owned.contains(cgroup.as_str()));
        self.cli = kept;
        displaced.into_values().collect()
    }

    /// The error for changing, from the CLI, a cgroup the file owns.
    fn owned_by_config(&self, cgroup: &str) -> Option<PolicyError> {
        let p = self.config.iter().find(|p| &*p.cgroup == cgroup)?;
        Some(PolicyError::OwnedByConfig {
            cgroup: cgroup.into(),
            file: p.file.to_path_buf(),
            line: p.line,
        })
    }

    /// Sets (or replaces) a CLI policy.
    pub fn set(&mut self, spec: PolicySpec) -> Result<(), PolicyError> {
        if let Some(e) = self.owned_by_config(&spec.cgroup) {
            return Err(e);
        }
        self.cli.insert(spec.cgroup.to_string(), spec);
        Ok(())
    }

    /// Deletes a CLI policy.
    pub fn del(&mut self, cgroup: &str) -> Result<PolicySpec, PolicyError> {
        if let Some(e) = self.owned_by_config(cgroup) {
            return Err(e);
        }
        self.cli
            .remove(cgroup)
            .ok_or_else(|| PolicyError::NotFound(cgroup.into()))
    }

    /// Every policy's cgroup and terms, borrowed: the file's in file
    /// order, then the CLI's. (Resolving runs over this on every change of
    /// cgroups; a copy of 100,000 policies each time was tens of MiB.)
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<PolicyTerms>)> {
        self.config
            .iter()
            .map(|p| (&p.cgroup, &p.terms))
            .chain(self.cli.values().map(|s| (&s.cgroup, &s.terms)))
    }

    /// Every policy with its origin, as copies (for listing them): the
    /// file's in file order, then the CLI's.
    pub fn all(&self) -> Vec<(PolicySpec, Origin)> {
        self.config
            .iter()
            .map(|p| {
                let origin = Origin::Config {
                    file: p.file.to_path_buf(),
                    line: p.line,
                };
                (PolicySpec::from_config(p), origin)
            })
            .chain(self.cli.values().map(|s| (s.clone(), Origin::Cli)))
            .collect()
    }

    /// The CLI's policies, to persist.
    pub fn cli(&self) -> Vec<PolicySpec> {
        self.cli.values().cloned().collect()
    }
}

/// Stable policy ids by cgroup path: counters are keyed by them.
#[derive(Debug, Clone, Default)]
pub struct PolicyIds {
    /// Keyed by the policies' own paths (shared, not copied).
    by_cgroup: BTreeMap<Arc<str>, u32>,
    /// Highest id handed out: a new id is one more, without a scan of all
    /// ids (that scan made resolving 100,000 policies quadratic).
    highest: u32,
}

impl PolicyIds {
    pub fn get(&self, cgroup: &str) -> Option<u32> {
        self.by_cgroup.get(cgroup).copied()
    }
    pub fn id(&mut self, cgroup: &Arc<str>) -> u32 {
        if let Some(&id) = self.by_cgroup.get(&**cgroup) {
            return id;
        }
        self.highest += 1;
        self.by_cgroup.insert(Arc::clone(cgroup), self.highest);
        self.highest
    }
}

/// A policy whose cgroup does not exist (any more): kept, and applied again
/// if the cgroup comes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pending {
    pub cgroup: String,
}

/// Binds each policy to its cgroup's current id. Policies outside the
/// attach cgroup cannot be steered and are reported pending as well.
pub fn resolve(
    set: &PolicySet,
    cgroup2: &Cgroup2,
    attach: &Cgroup,
    ids: &mut PolicyIds,
) -> (Vec<ResolvedPolicy>, Vec<Pending>) {
    let mut resolved: Vec<ResolvedPolicy> = Vec::new();
    let mut pending = Vec::new();
    let (patterns, literals): (Vec<_>, Vec<_>) =
        set.iter().partition(|(cgroup, _)| is_pattern(cgroup));
    let found = cgroup2.resolve_many(literals.iter().map(|(cgroup, _)| &***cgroup));
    resolved.reserve_exact(literals.len());
    for ((cgroup, terms), found) in literals.into_iter().zip(found) {
        match found {
            Ok(cg) if cg.is_within(attach) => resolved.push(ResolvedPolicy {
                id: ids.id(cgroup),
                cgroup_id: cg.id,
                // The policy's own path (normalised when it was read)
                // rather than the resolve's copy of it.
                cgroup: if *cg.rel == **cgroup {
                    Arc::clone(cgroup)
                } else {
                    cg.rel.into()
                },
                terms: Arc::clone(terms),
            }),
            _ => pending.push(Pending {
                cgroup: cgroup.to_string(),
            }),
        }
    }
    // Patterns after literals: a cgroup named literally keeps its own
    // policy; among patterns the first listed wins. The cgroups taken so
    // far are a set, not a scan of `resolved`: a pattern may match 100,000
    // cgroups, and a scan per match made resolving quadratic.
    let mut claimed: std::collections::HashSet<u64> =
        resolved.iter().map(|r| r.cgroup_id).collect();
    for (cgroup, terms) in patterns {
        let Ok(pattern) = CgroupPattern::parse(cgroup) else {
            continue;
        };
        let id = ids.id(cgroup);
        let mut matched = false;
        let Some(from) = search_root(pattern.literal_prefix(), &attach.rel) else {
            pending.push(Pending {
                cgroup: cgroup.to_string(),
            });
            continue;
        };
        for rel in existing_matches(cgroup2.mount(), &pattern, from) {
            let Ok(cg) = cgroup2.resolve(&rel) else {
                continue;
            };
            if !cg.is_within(attach) || !claimed.insert(cg.id) {
                continue;
            }
            matched = true;
            resolved.push(ResolvedPolicy {
                id,
                cgroup_id: cg.id,
                cgroup: cg.rel.into(),
                terms: Arc::clone(terms),
            });
        }
        if !matched {
            pending.push(Pending {
                cgroup: cgroup.to_string(),
            });
        }
    }
    (resolved, pending)
}

/// Refuses to set `spec` when the policies would then cover more cgroups
/// than the kernel's policy map holds (a pattern covers every cgroup it
/// matches), unless they already did and `spec` does not add to it (so a
/// policy can still be changed or narrowed on a full map). Checked before
/// anything changes: a refused `mif policy set` leaves the set, the state
/// file and the maps as they were.
pub fn check_capacity(
    set: &PolicySet,
    spec: &PolicySpec,
    cgroup2: &Cgroup2,
    attach: &Cgroup,
    capacity: usize,
) -> Result<(), PolicyError> {
    let mut with = set.clone();
    with.set(spec.clone())?;
    let count = |set: &PolicySet| {
        resolve(set, cgroup2, attach, &mut PolicyIds::default())
            .0
            .len()
    };
    let needed = count(&with);
    if needed > capacity && needed > count(set) {
        return Err(PolicyError::OverCapacity {
            cgroup: spec.cgroup.to_string(),
            limit: capacity,
            needed,
        });
    }
    Ok(())
}

/// Where CLI policies are kept between runs.
pub fn state_file(state_dir: &Path, pin_dir: &Path) -> PathBuf {
    let flat = pin_dir
        .display()
        .to_string()
        .trim_matches('/')
        .replace('/', "-");
    state_dir.join(flat).join("policies.json")
}

/// Reads persisted CLI policies; a missing file is an empty set.
pub fn load_persisted(path: &Path) -> anyhow::Result<Vec<PolicySpec>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// Writes the CLI policies atomically (temp file, then rename).
pub fn persist(path: &Path, specs: &[PolicySpec]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no directory", path.display()))?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(specs)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{parse, DnsMode};

    fn spec(cgroup: &str, prefer: &[&str]) -> PolicySpec {
        PolicySpec {
            cgroup: cgroup.into(),
            terms: PolicyTerms {
                prefer: prefer.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }
            .into(),
        }
    }

    fn config(text: &str) -> Config {
        parse(Path::new("/etc/mif/mif.toml"), text).unwrap()
    }

    #[test]
    fn the_config_file_owns_its_cgroups() {
        let mut cfg = config("[[policy]]\ncgroup = \"/a\"\nprefer = [\"wlan0\"]\n");
        let (mut set, dropped) =
            PolicySet::new(&mut cfg, vec![spec("/a", &["x"]), spec("/b", &["y"])]);
        assert_eq!(dropped, [spec("/a", &["x"])]);
        let err = set.set(spec("/a", &["wwan0"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cgroup /a has its policy in /etc/mif/mif.toml:1; edit that file and reload (SIGHUP or `mif reload`)"
        );
        assert!(matches!(
            set.del("/a"),
            Err(PolicyError::OwnedByConfig { .. })
        ));
        set.set(spec("/b", &["wwan0"])).unwrap();
        assert_eq!(set.cli(), [spec("/b", &["wwan0"])]);
        assert_eq!(set.del("/b").unwrap().terms.prefer, ["wwan0"]);
        assert_eq!(set.del("/b"), Err(PolicyError::NotFound("/b".into())));
    }

    #[test]
    fn a_reload_that_claims_a_cli_cgroup_takes_it_over() {
        let (mut set, _) = PolicySet::new(&mut config(""), vec![spec("/c", &["x"])]);
        let displaced = set.replace_config(&mut config(
            "[[policy]]\ncgroup = \"/c\"\nprefer = [\"y\"]\n",
        ));
        assert_eq!(displaced, [spec("/c", &["x"])]);
        let all = set.all();
        assert_eq!(all.len(), 1);
        assert!(matches!(all[0].1, Origin::Config { line: 1, .. }));
    }

    #[test]
    fn patterns_are_accepted_as_policy_cgroups() {
        let cfg =
            config("[[policy]]\ncgroup = \"/system.slice/docker-*.scope\"\nprefer = [\"wwan0\"]\n");
        assert_eq!(&*cfg.policies[0].cgroup, "/system.slice/docker-*.scope");
        let err = parse(
            Path::new("m.toml"),
            "[[policy]]\ncgroup = \"/a/x**\"\nprefer = [\"w\"]\n",
        )
        .unwrap_err();
        assert_eq!(err.field, "policy.cgroup");
    }

    #[test]
    fn a_spec_is_one_flat_object_on_the_wire_and_in_the_state_file() {
        // Written by daemons before the terms were a struct of their own.
        let saved = r#"{"cgroup":"/a","prefer":["wwan0"],"strict":true,"dns":"pvd"}"#;
        let spec: PolicySpec = serde_json::from_str(saved).unwrap();
        assert_eq!(spec.terms.prefer, ["wwan0"]);
        assert!(spec.terms.strict && spec.terms.dns == DnsMode::Pvd);
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["prefer"][0], "wwan0");
        assert_eq!(json["strict"], true);
        assert!(json.get("terms").is_none(), "{json}");
    }

    #[test]
    fn specs_from_the_control_socket_are_checked_and_normalised() {
        let ok = spec("//a//b/", &["wlan0", "wwan0"]).checked().unwrap();
        assert_eq!(&*ok.cgroup, "/a/b");
        assert!(matches!(
            spec("a", &["x"]).checked(),
            Err(PolicyError::BadCgroup { .. })
        ));
        assert!(matches!(
            spec("/a/../b", &["x"]).checked(),
            Err(PolicyError::BadCgroup { .. })
        ));
        assert_eq!(spec("/a", &[]).checked(), Err(PolicyError::PreferCount));
        assert_eq!(
            spec("/a", &["x"; MAX_PREFER + 1]).checked(),
            Err(PolicyError::PreferCount)
        );
        assert_eq!(
            spec("/a", &["x", "y", "x"]).checked(),
            Err(PolicyError::PreferTwice("x".into()))
        );
    }

    #[test]
    fn the_capacity_error_names_the_map_and_its_limit() {
        let e = PolicyError::OverCapacity {
            cgroup: "/x".into(),
            limit: POLICY_CAPACITY_MAX,
            needed: POLICY_CAPACITY_MAX + 1,
        };
        let text = e.to_string();
        assert!(
            text.contains("MIF_POLICIES") && text.contains("131072"),
            "{text}"
        );
        assert!(text.contains("nothing changed"), "{text}");
    }

    #[test]
    fn ids_are_stable_per_cgroup() {
        let mut ids = PolicyIds::default();
        let (a, b) = (Arc::from("/a"), Arc::from("/b"));
        assert_eq!((ids.id(&a), ids.id(&b), ids.id(&a)), (1, 2, 1));
    }

    #[test]
    fn persisted_policies_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_file(dir.path(), Path::new("/sys/fs/bpf/mif"));
        assert!(load_persisted(&path).unwrap().is_empty());
        persist(&path, &[spec("/b", &["wwan0"])]).unwrap();
        assert_eq!(load_persisted(&path).unwrap(), [spec("/b", &["wwan0"])]);
        assert!(path.ends_with("sys-fs-bpf-mif/policies.json"));
    }
}
