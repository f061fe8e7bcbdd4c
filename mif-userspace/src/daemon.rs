//! `mif daemon`: check everything, then install programs, maps and routing
//! as one unit, steer until told to stop, and remove all of it again.
//!
//! Nothing is changed on the host until every check passed; a failure while
//! installing rolls back what was installed so far.
use std::{collections::HashSet, path::Path};

use anyhow::{bail, Context as _};
use aya::Ebpf;
use log::{info, warn};
use mif_common::Settings;

use crate::{
    cgroup::{Cgroup, Cgroup2, CgroupError},
    config::{self, Config},
    instance::InstanceOptions,
    kernel_maps::KernelMaps,
    loader,
    netlink::{Netlink, PvdRouting},
    netns,
    pins::PinDir,
    plan::{self, Desired, ResolvedPolicy},
    pvd::{self, PvdState},
};

/// Everything checked and computed, nothing installed yet.
pub struct Prepared {
    pub pvds: Vec<PvdState>,
    pub policies: Vec<ResolvedPolicy>,
    pub desired: Desired,
    pub settings: Settings,
    pub attach: Cgroup,
}

/// What is installed, and so what teardown removes.
pub struct Installed {
    pins: PinDir,
    routing: Vec<PvdRouting>,
    ebpf: Option<Ebpf>,
}

pub async fn prepare(
    config_path: &Path,
    opts: &InstanceOptions,
    netlink: &Netlink,
) -> anyhow::Result<Prepared> {
    pvd::check_mark_mask(opts.mark_mask).context("--mark-mask")?;
    let config = config::load(config_path)?;
    config.check_marks(opts.mark_mask)?;

    let cgroup2 = Cgroup2::find()?;
    let attach = cgroup2.resolve(&opts.cgroup).context("--cgroup")?;
    let cgroups = resolve_policy_cgroups(&config, &cgroup2, &attach)?;

    let interfaces = netlink
        .interfaces()
        .await
        .context("reading interfaces from netlink")?;
    let names: HashSet<String> = interfaces.iter().map(|i| i.name.clone()).collect();
    config.check_prefer(&names)?;
    let (pvds, skipped) = pvd::build(&config, &interfaces, &opts.numbering())?;
    if !skipped.is_empty() {
        warn!(
            "more interfaces than the mark mask holds PvDs for; no PvD for: {}",
            skipped.join(", ")
        );
    }

    let policies: Vec<ResolvedPolicy> = config
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
        })
        .collect();
    let desired = plan::desired(&pvds, &policies, &opts.rules());
    let settings = Settings {
        netns_cookie: netns::current_netns_cookie()
            .context("reading this network namespace's cookie")?,
        mark_mask: opts.mark_mask,
        mark_shift: opts.mark_mask.trailing_zeros(),
        attach_level: attach.level,
        _pad: 0,
    };
    Ok(Prepared {
        pvds,
        policies,
        desired,
        settings,
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

/// Installs maps, routing and programs, in that order: programs come last so
/// no socket is ever marked for a PvD whose routing is not there yet.
pub async fn install(
    prepared: &Prepared,
    opts: &InstanceOptions,
    netlink: &Netlink,
) -> anyhow::Result<Installed> {
    let pins = opts.pins();
    if pins.has_links() {
        bail!(
            "mif programs are already pinned at {} (another daemon runs, or one died): stop it or run `mif cleanup --pin-dir {}`",
            pins.links().display(),
            opts.pin_dir.display()
        );
    }
    pins.prepare()?;
    // Map pins without links are leftovers of an instance that died while
    // starting or stopping: ours to discard.
    loader::unpin_maps(&pins);

    let mut installed = Installed {
        pins,
        routing: Vec::new(),
        ebpf: None,
    };
    match install_steps(prepared, netlink, &mut installed).await {
        Ok(()) => Ok(installed),
        Err(e) => {
            installed.teardown(netlink).await;
            Err(e)
        }
    }
}

async fn install_steps(
    prepared: &Prepared,
    netlink: &Netlink,
    installed: &mut Installed,
) -> anyhow::Result<()> {
    let ebpf = installed
        .ebpf
        .insert(loader::load(&prepared.settings, &installed.pins)?);
    KernelMaps::open(&installed.pins)?.write(&prepared.settings, &prepared.desired)?;
    for routing in &prepared.desired.routing {
        installed.routing.push(routing.clone());
        netlink
            .install(routing)
            .await
            .with_context(|| format!("installing the routing of PvD {}", routing.name))?;
    }
    loader::attach(ebpf, &prepared.attach.path, &installed.pins)?;
    Ok(())
}

impl Installed {
    /// Removes everything: programs first (no new socket gets a mark), then
    /// routing, then the maps.
    pub async fn teardown(mut self, netlink: &Netlink) {
        loader::detach(&self.pins);
        for routing in &self.routing {
            if let Err(e) = netlink.remove(routing).await {
                warn!("removing the routing of PvD {}: {e:#}", routing.name);
            }
        }
        drop(self.ebpf.take());
        loader::unpin_maps(&self.pins);
        self.pins.remove_dirs();
    }
}

pub async fn run(config: &Path, opts: &InstanceOptions) -> anyhow::Result<()> {
    let netlink = Netlink::connect().context("opening rtnetlink")?;
    let prepared = prepare(config, opts, &netlink).await?;
    let installed = install(&prepared, opts, &netlink).await?;
    for p in &prepared.pvds {
        info!(
            "PvD {} (interface {}, mark {:#x}, table {}): IPv4 {}, IPv6 {}",
            p.name,
            p.interface,
            p.mark,
            p.table,
            availability(p.available4(), p.addr4.map(|a| a.to_string())),
            availability(p.available6(), p.addr6.map(|a| a.to_string())),
        );
    }
    info!(
        "steering {} policies over {} PvDs below cgroup {} (pins in {})",
        prepared.policies.len(),
        prepared.pvds.len(),
        prepared.attach.rel,
        opts.pin_dir.display()
    );
    // Machine-readable readiness for scripts and tests.
    println!("ready");

    wait_for_stop().await?;
    info!("stopping: removing programs, routing and maps");
    installed.teardown(&netlink).await;
    Ok(())
}

fn availability(available: bool, addr: Option<String>) -> String {
    match (available, addr) {
        (true, Some(a)) => format!("available from {a}"),
        (false, Some(a)) => format!("unavailable (address {a}, no default route or link down)"),
        (_, None) => "unavailable (no address)".into(),
    }
}

async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
