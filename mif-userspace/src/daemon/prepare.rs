//! Everything the daemon checks before it touches the host: the config, the
//! mark mask, the cgroups its policies name. A failure here changes nothing.
use anyhow::Context as _;

use crate::{
    host::cgroup::{Cgroup, Cgroup2, CgroupError},
    instance::InstanceOptions,
    model::config::{self, Config, ConfigSources},
    model::pvd,
};

/// The checked configuration, bound to real cgroups.
pub struct Prepared {
    pub config: Config,
    pub cgroup2: Cgroup2,
    pub attach: Cgroup,
}

/// Checks the config file against the host: marks, PvD names. Whether
/// each policy's cgroup exists within the attach cgroup is checked by the
/// daemon's first resolve ([`check_unresolved`]): resolving 100,000
/// cgroups twice was a sixth of such a start.
pub fn prepare(
    sources: &ConfigSources,
    opts: &InstanceOptions,
    interfaces: &[String],
) -> anyhow::Result<Prepared> {
    pvd::check_mark_mask(opts.mark_mask).context("--mark-mask")?;
    let cgroup2 = Cgroup2::find()?;
    let attach = cgroup2.resolve(&opts.cgroup).context("--cgroup")?;
    let config = load_config(sources, opts, interfaces)?;
    Ok(Prepared {
        config,
        cgroup2,
        attach,
    })
}

/// After a resolve (at start, or of a reloaded config): the error for the
/// first policy of the config file whose cgroup did not resolve (missing,
/// or outside the attach cgroup). `unresolved` are the cgroups the resolve
/// left pending; the CLI's saved policies may wait for theirs.
pub fn check_unresolved(
    policies: &crate::model::policies::PolicySet,
    unresolved: &[crate::model::policies::Pending],
    cgroup2: &Cgroup2,
    attach: &Cgroup,
) -> anyhow::Result<()> {
    if unresolved.is_empty() {
        return Ok(());
    }
    let pending: std::collections::HashSet<&str> =
        unresolved.iter().map(|p| p.cgroup.as_str()).collect();
    let of_file = (policies.config_policies()).filter(|p| pending.contains(&*p.cgroup));
    resolve_policy_cgroups(of_file, cgroup2, attach).map(drop)
}

/// Loads a config file and checks what needs no cgroup: at start and on
/// reload. Whether each policy's cgroup exists is judged on the resolve
/// that follows ([`check_unresolved`]).
pub fn load_config(
    sources: &ConfigSources,
    opts: &InstanceOptions,
    interfaces: &[String],
) -> anyhow::Result<Config> {
    let config = sources.load()?;
    config.check_marks(opts.mark_mask)?;
    config.check_prefer(&interfaces.iter().cloned().collect())?;
    if let Some((group, line)) = &config.control_group {
        if nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .is_none()
        {
            return Err(config
                .error_at(
                    *line,
                    "control.group",
                    format!("{group:?}"),
                    "no such group",
                )
                .into());
        }
    }
    Ok(config)
}

/// Each policy's cgroup, which must exist and lie within the attach cgroup.
fn resolve_policy_cgroups<'a>(
    policies: impl Iterator<Item = &'a config::PolicyConfig>,
    cgroup2: &Cgroup2,
    attach: &Cgroup,
) -> anyhow::Result<Vec<Cgroup>> {
    // Patterns need not match anything yet: cgroups appear later.
    let literals: Vec<_> = policies
        .filter(|p| !crate::host::cgroup_pattern::is_pattern(&p.cgroup))
        .collect();
    let found = cgroup2.resolve_many(literals.iter().map(|p| &*p.cgroup));
    literals
        .into_iter()
        .zip(found)
        .map(|(p, found)| {
            let cg = found.map_err(|e| {
                let problem = match e {
                    CgroupError::Missing { mount, .. } => {
                        format!(
                            "no such cgroup in the cgroup2 hierarchy at {}",
                            mount.display()
                        )
                    }
                    e => e.to_string(),
                };
                config::error_in(
                    &p.file,
                    p.line,
                    "policy.cgroup",
                    format!("{:?}", p.cgroup),
                    problem,
                )
            })?;
            if !cg.is_within(attach) {
                return Err(config::error_in(
                    &p.file,
                    p.line,
                    "policy.cgroup",
                    format!("{:?}", p.cgroup),
                    format!(
                        "outside the cgroup mif attaches to ({}); see --cgroup",
                        attach.rel
                    ),
                )
                .into());
            }
            Ok(cg)
        })
        .collect()
}
