//! Everything the daemon checks before it touches the host: the config, the
//! mark mask, the cgroups its policies name. A failure here changes nothing.
use std::path::Path;

use anyhow::Context as _;

use crate::{
    cgroup::{Cgroup, Cgroup2, CgroupError},
    config::{self, Config},
    instance::InstanceOptions,
    plan::ResolvedPolicy,
    pvd,
};

/// The checked configuration, bound to real cgroups.
pub struct Prepared {
    pub config: Config,
    pub policies: Vec<ResolvedPolicy>,
    pub attach: Cgroup,
}

pub fn prepare(
    config_path: &Path,
    opts: &InstanceOptions,
    interfaces: &[String],
) -> anyhow::Result<Prepared> {
    pvd::check_mark_mask(opts.mark_mask).context("--mark-mask")?;
    let config = config::load(config_path)?;
    config.check_marks(opts.mark_mask)?;
    config.check_prefer(&interfaces.iter().cloned().collect())?;

    let cgroup2 = Cgroup2::find()?;
    let attach = cgroup2.resolve(&opts.cgroup).context("--cgroup")?;
    let cgroups = resolve_policy_cgroups(&config, &cgroup2, &attach)?;
    let policies = config
        .policies
        .iter()
        .zip(cgroups)
        .enumerate()
        .map(|(i, (p, cg))| ResolvedPolicy {
            id: i as u32 + 1,
            cgroup_id: cg.id,
            cgroup: cg.rel,
            prefer: p.prefer.clone(),
            strict: p.strict,
            bind: p.bind,
            reset: p.reset,
        })
        .collect();
    Ok(Prepared {
        config,
        policies,
        attach,
    })
}

/// Each policy's cgroup, which must exist and lie within the attach cgroup.
fn resolve_policy_cgroups(
    config: &Config,
    cgroup2: &Cgroup2,
    attach: &Cgroup,
) -> anyhow::Result<Vec<Cgroup>> {
    config
        .policies
        .iter()
        .map(|p| {
            let cg = cgroup2.resolve(&p.cgroup).map_err(|e| {
                let problem = match e {
                    CgroupError::Missing { mount, .. } => {
                        format!(
                            "no such cgroup in the cgroup2 hierarchy at {}",
                            mount.display()
                        )
                    }
                    e => e.to_string(),
                };
                config.error_at(p.line, "policy.cgroup", format!("{:?}", p.cgroup), problem)
            })?;
            if !cg.is_within(attach) {
                return Err(config
                    .error_at(
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
