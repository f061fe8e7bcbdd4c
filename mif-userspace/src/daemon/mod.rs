//! `mif daemon`: check everything, take over or install the kernel state,
//! then follow the networks live until told to stop.
//!
//! Order of events:
//! 1. subscribe to netlink first, so no change between the first dump and
//!    the subscription is missed;
//! 2. check the config against the host (nothing changed yet on failure);
//! 3. load the programs, reusing pinned maps (adoption after a restart);
//! 4. reconcile once (routing, then maps), then attach the programs — a
//!    socket is never marked for a PvD whose routing is not in place;
//! 5. on each batch of netlink events (or every 30 s), reconcile again;
//!    PvDs that were lost get their policies' TCP sockets reset if asked;
//! 6. on SIGINT/SIGTERM remove everything (or, with --keep-steering, leave
//!    it for the next daemon to adopt).
mod admin;
mod failing;
mod guard_log;
mod predating;
mod prepare;
pub mod process_pvd;
mod ring;
pub mod steering;
mod tcp_trouble;
mod watchers;

use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::FutureExt as _;
use log::{debug, info, warn};
use mif_common::Settings;
use tokio::sync::broadcast;

pub use self::prepare::{prepare, Prepared};
use self::{
    admin::Admin,
    steering::{Attaching, Steering},
    watchers::CgroupWatchers,
};
use crate::host::cgroup_pattern::is_pattern;
use crate::{
    apply::kernel_maps::KernelMaps,
    apply::loader::Capacity,
    apply::sockdiag,
    control::{
        self,
        protocol::MonitorEvent,
        server::{Control, Writers},
    },
    host::cgroup_watch::{CgroupEvent, CgroupWatcher},
    host::netlink::{self, NetEvent, Netlink},
    host::netns,
    instance::InstanceOptions,
    model::config::ConfigSources,
    model::policies::{self, PolicySet},
    model::pvd::PvdState,
    reconcile::PolicyState,
    reconcile::{InstanceNumbers, Lost, Reconciler},
    validation::{Validator, VerdictChange},
};

/// How often the kernel state is re-checked even without events, to repair
/// what someone else changed without our noticing.
const RECHECK_INTERVAL: Duration = Duration::from_secs(30);

/// How long a change in the policies directory may take to settle before
/// the files are read: a file is often written in several steps.
const POLICIES_SETTLE: Duration = Duration::from_millis(100);

/// How often policy cgroups are scanned for processes in network namespaces
/// of their own (containers), which are steered from the host side.
const CONTAINER_SCAN_INTERVAL: Duration = Duration::from_secs(1);

pub struct DaemonOptions<'a> {
    pub config: &'a Path,
    /// The policies directory (`*.toml` merged after the config file,
    /// watched), if any.
    pub policies_dir: Option<&'a Path>,
    pub instance: &'a InstanceOptions,
    /// Where policies set from the CLI are kept across restarts.
    pub state_dir: &'a Path,
    /// Leave programs, maps and routing in place on exit, for the next
    /// daemon (an upgrade, a restart) to adopt without a gap.
    pub keep_steering: bool,
}

pub async fn run(opts: DaemonOptions<'_>) -> anyhow::Result<()> {
    let mut start_up = StartUp::new();
    let netlink = Netlink::connect().context("opening rtnetlink")?;
    let mut events = netlink::subscribe().context("subscribing to netlink events")?;
    let interfaces: Vec<String> = netlink
        .interfaces()
        .await
        .context("reading interfaces from netlink")?
        .into_iter()
        .map(|i| i.name)
        .collect();
    let sources = ConfigSources {
        file: opts.config.to_path_buf(),
        dir: opts.policies_dir.map(Path::to_path_buf),
    };
    let mut prepared = prepare(&sources, opts.instance, &interfaces)?;
    start_up.step("config read");
    // The cgroup watchers' layouts are read meanwhile when the config has
    // selectors (see `watchers`).
    let mut watchers = CgroupWatchers::new(
        (prepared.config.policies.iter()).any(|p| crate::host::selector::is_selector(&p.cgroup)),
    );

    let settings = Settings {
        netns_cookie: netns::current_netns_cookie()
            .context("reading this network namespace's cookie")?,
        mark_mask: opts.instance.mark_mask,
        mark_shift: opts.instance.mark_mask.trailing_zeros(),
        attach_level: prepared.attach.level,
        _pad: 0,
        attach_cgroup_id: prepared.attach.id,
    };
    let state_file = policies::state_file(opts.state_dir, &opts.instance.pin_dir);
    let persisted = policies::load_persisted(&state_file)?;
    // The set takes the file's policies: from here on `prepared.config` is
    // the rest of the file (PvDs, DNS, control), which the reconciler keeps.
    let (set, dropped) = PolicySet::new(&mut prepared.config, persisted);
    for spec in dropped {
        warn!(
            "the config file owns cgroup {}: its saved CLI policy is dropped",
            spec.cgroup
        );
    }
    let mut policy_state = PolicyState::new(set, prepared.cgroup2.clone(), prepared.attach.clone());
    // A fresh install attaches its hooks on a thread of its own while the
    // policies are resolved and the first pass fills the maps and routing:
    // the kernel's part of an attach (a walk over every cgroup below the
    // attach cgroup) is a third of a start with 100,000 cgroups. Until the
    // pass ends the programs find no policy and steer nothing, as before
    // the daemon started. The maps must be sized first: by the policies'
    // count when each names one cgroup, else (patterns) by their resolve.
    // An adopted instance resolves and checks before it touches the pins.
    let literal_only = (policy_state.set.iter()).all(|(cgroup, _)| !is_pattern(cgroup));
    let resolve_later = literal_only && !opts.instance.pins().has_links();
    // The cgroup watcher is made before the resolve: it reports only what
    // changes after it exists (until 2026-12-02 it started after `ready`,
    // and every policy was resolved once more then, for the cgroups made in
    // between). When the resolve comes after the programs, so does the
    // watcher: with 100,000 literal policies its 0.3 s (a listing of the
    // cgroups) ran on one CPU while the other idled, and now overlaps the
    // programs' verification instead. Not on a thread of its own: that
    // saved 40 of its 200 ms and kept 3–8 MiB more resident (the thread's
    // malloc arena).
    let early_watch = (!resolve_later).then(|| {
        let watch = CgroupWatch::new(&policy_state);
        start_up.step("cgroup watcher");
        watch
    });
    let count = if resolve_later {
        policy_state.set.iter().count()
    } else {
        let resolved = policy_state.resolve_now();
        check_resolved(&policy_state, &prepared)?;
        start_up.step("policies resolved");
        resolved
    };
    // The maps that grow with the policies are sized for those found now,
    // with room for more (see `plan::policy_capacity_for`).
    let capacity = Capacity::for_policies(count, prepared.config.policy_capacity);
    let mut steering = Steering::load(opts.instance.pins(), &settings, capacity)?;
    start_up.step("programs loaded");
    let maps = match KernelMaps::open(&steering.pins) {
        Ok(maps) => maps,
        Err(e) => {
            if !steering.adopted {
                steering.remove_maps();
            }
            return Err(e.into());
        }
    };
    let dns_forwarder_port = prepared.config.dns_forwarder_port;
    let writers = Writers {
        group: match &prepared.config.control_group {
            Some((name, _)) => {
                nix::unistd::Group::from_name(name)?.map(|g| (name.clone(), g.gid.as_raw()))
            }
            None => None,
        },
    };
    // Started before the first pass: a link lost during start-up is
    // withdrawn at once too. Without it every loss still reaches the maps,
    // only a pass later.
    if let Err(e) = crate::apply::link_watch::spawn(maps.pvd_table()) {
        warn!("no link-down fast path ({e}); lost links are withdrawn by the regular pass only");
    }
    let guards = match steering.guard_links(prepared.cgroup2.mount()) {
        Ok(guards) => guards,
        Err(e) => {
            if !steering.adopted {
                steering.remove_maps();
            }
            return Err(e);
        }
    };
    let adopted = steering.adopted;
    let needs = policy_state.needs_of_set();
    // Fails for an adopted instance only, whose state stays, steering.
    let attaching = Attaching::start(steering, &prepared.attach.path, needs)?;
    let mut cgroup_watch = match early_watch {
        Some(watch) => watch,
        None => {
            let watch = CgroupWatch::new(&policy_state);
            start_up.step("cgroup watcher (the programs attaching meanwhile)");
            watch
        }
    };
    if resolve_later {
        policy_state.resolve_now();
        if let Err(e) = check_resolved(&policy_state, &prepared) {
            attaching.finish(false).await.0.remove_all();
            return Err(e);
        }
        start_up.step("policies resolved (the programs attaching meanwhile)");
    }
    let mut validator = Validator::default();
    let mut reconciler = Reconciler::new(
        netlink.clone(),
        maps,
        guards,
        prepared.config,
        policy_state,
        InstanceNumbers {
            numbering: opts.instance.numbering(),
            rules: opts.instance.rules(),
            settings,
        },
    );
    if adopted {
        info!(
            "adopting the programs and maps pinned at {}",
            opts.instance.pins().versioned().display()
        );
        reconciler.adopt_previous();
    }
    let passed = reconciler.reconcile(true).await;
    start_up.step("first pass");
    // Adopted links are replaced only after a good pass: the new programs
    // never see maps it has not brought up to date.
    let (mut steering, attached) = attaching.finish(passed.is_ok()).await;
    start_up.step("programs attached");
    let started = passed
        .and(attached)
        .map(|waiting| reconciler.set_on_demand_hooks(waiting));
    if let Err(e) = started {
        // A fresh install is rolled back whole; adopted state is left as
        // the previous daemon had it, still steering.
        if !steering.adopted {
            teardown(reconciler, steering).await;
        }
        return Err(e);
    }
    // Per-domain DNS selection and link-local resolvers: the forwarder runs
    // while some PvD needs it (see `dns::ForwarderControl`); dropped when
    // the daemon returns, which turns the kernel's redirection to it off.
    let mut dns_forwarder = crate::dns::ForwarderControl::new(&steering.pins, dns_forwarder_port);
    dns_forwarder.follow(reconciler.pvds()).await;
    let mut control =
        match control::server::start(&control::socket_path(&opts.instance.pin_dir), writers) {
            Ok(control) => control,
            Err(e) => {
                if !steering.adopted {
                    teardown(reconciler, steering).await;
                }
                return Err(e.into());
            }
        };
    watchers.follow(&reconciler, &mut steering, true);
    let mut admin = Admin::new(sources.clone(), opts.instance.clone(), state_file);
    // Process choices saved by the previous daemon follow today's policies.
    admin.refresh_process_policies(&mut reconciler).await;
    admin.cgroup_watchers = watchers.state.clone();
    start_up.step("control socket, DNS, watchers");
    info!(
        "steering {} policies over {} PvDs below cgroup {} (pins in {})",
        reconciler.policies().len(),
        reconciler.pvds().len(),
        prepared.attach.rel,
        opts.instance.pin_dir.display()
    );
    // Handlers first: a signal right after `ready` must not find the
    // default action (SIGHUP would kill the daemon, SIGTERM skip teardown).
    let mut signals = Signals::new()?;
    // Start-up's one-off work (the config's TOML document above all) is
    // freed by now: its pages go back before the daemon settles.
    crate::memory::give_back();
    start_up.step("memory given back");
    start_up.log();
    // Machine-readable readiness for scripts and tests.
    println!("ready");

    // Without it the guards still drop and count; only the notice is lost.
    let mut drops = guard_log::GuardLog::open(&steering.pins)
        .inspect_err(|e| warn!("guard drops will not be logged: {e:#}"))
        .ok();
    // Without it steering is whole; only the passive health signal is lost.
    let mut tcp_trouble = tcp_trouble::TcpTroubleRing::open(&steering.pins)
        .inspect_err(|e| warn!("TCP retransmission timeouts will not be followed: {e:#}"))
        .ok();
    follow(
        &mut reconciler,
        Inputs {
            events: &mut events,
            control: &mut control,
            signals: &mut signals,
            drops: drops.as_mut(),
            validator: &mut validator,
            tcp_trouble: tcp_trouble.as_mut(),
            cgroups: &mut cgroup_watch,
        },
        Kernel {
            steering: &mut steering,
            watchers: &mut watchers,
        },
        &mut admin,
        &mut dns_forwarder,
        opts.instance.mark_mask,
    )
    .await?;
    drop(dns_forwarder);
    drop(control);

    if opts.keep_steering {
        info!("stopping; steering stays in place (--keep-steering)");
        steering.release();
    } else {
        info!("stopping: removing programs, routing and maps");
        teardown(reconciler, steering).await;
    }
    Ok(())
}

/// What `prepare` left to the resolve: each of the file's policies names a
/// cgroup that exists within the attach cgroup.
fn check_resolved(policy_state: &PolicyState, prepared: &Prepared) -> anyhow::Result<()> {
    prepare::check_unresolved(
        &policy_state.set,
        policy_state.pending(),
        &prepared.cgroup2,
        &prepared.attach,
    )
}

/// What the daemon waits on between passes.
struct Inputs<'a> {
    events: &'a mut netlink::NetEvents,
    control: &'a mut Control,
    signals: &'a mut Signals,
    /// The guards' drops, to log; `None` if the ring could not be opened.
    drops: Option<&'a mut guard_log::GuardLog>,
    /// Probes due and probes finished.
    validator: &'a mut Validator,
    /// Retransmission timeouts on PvDs; `None` if the ring could not be
    /// opened.
    tcp_trouble: Option<&'a mut tcp_trouble::TcpTroubleRing>,
    /// Cgroups that policies may gain or lose.
    cgroups: &'a mut CgroupWatch,
}

/// What the event loop attaches to the kernel besides the passes' writes:
/// the cgroup watchers, once a policy needs them.
struct Kernel<'a> {
    steering: &'a mut Steering,
    watchers: &'a mut CgroupWatchers,
}

impl Kernel<'_> {
    /// After a pass that may have changed the policies.
    fn follow(&mut self, reconciler: &Reconciler, admin: &mut Admin) {
        self.watchers.follow(reconciler, self.steering, false);
        admin.cgroup_watchers = self.watchers.state.clone();
    }
}

/// Reconciles on every batch of events until SIGINT/SIGTERM.
async fn follow(
    reconciler: &mut Reconciler,
    inputs: Inputs<'_>,
    mut kernel: Kernel<'_>,
    admin: &mut Admin,
    dns_forwarder: &mut crate::dns::ForwarderControl,
    mark_mask: u32,
) -> anyhow::Result<()> {
    let Inputs {
        events,
        control,
        signals,
        mut drops,
        validator,
        mut tcp_trouble,
        cgroups: watcher,
    } = inputs;
    let mut recheck = tokio::time::interval(RECHECK_INTERVAL);
    recheck.tick().await;
    // The policies directory: a change there is a reload.
    let mut policies_dir = match admin.sources.dir.as_deref() {
        Some(dir) => crate::host::dir_watch::DirWatch::new(dir)
            .inspect_err(|e| {
                warn!(
                    "not watching {}: {e}; reload to apply its changes",
                    dir.display()
                )
            })
            .ok()
            .flatten(),
        None => None,
    };
    // Containers start and stop without a netlink event in our namespace
    // that reliably follows their processes: poll for them, cheaply.
    let mut containers = tokio::time::interval(CONTAINER_SCAN_INTERVAL);
    let mut known_containers = reconciler.foreign_fingerprint();
    // No watcher (it failed, logged): the cgroups made since the start-up
    // resolve are looked for once now, later ones at each recheck.
    if !watcher.is_whole() {
        reconciler.policy_state_mut().cgroups_changed();
        if let Err(e) = reconciler.reconcile(false).await {
            warn!("reconciling: {e:#}");
        }
    }
    // Connections older than the strict policies this instance starts
    // with, then than each that arrives.
    let mut predating = predating::PredatingResets::default();
    predating.after_pass(reconciler, mark_mask).await;
    follow_validation(reconciler, validator).await;
    // Verdicts that changed since the last pass, for its resets.
    let mut changed: Vec<VerdictChange> = Vec::new();
    loop {
        let verify = tokio::select! {
            _ = signals.term.recv() => return Ok(()),
            _ = signals.int.recv() => return Ok(()),
            _ = recheck.tick() => {
                reconciler.recheck_everything();
                true
            }
            lines = async {
                match drops.as_deref_mut() {
                    Some(drops) => drops.next().await,
                    None => std::future::pending().await,
                }
            } => {
                guard_log::log(&lines, |id| {
                    reconciler
                        .policies()
                        .iter()
                        .find(|p| p.id == id)
                        .map(|p| p.cgroup.to_string())
                });
                continue;
            }
            _ = sleep_until(validator.next_due()) => {
                validator.start_due(reconciler.pvds());
                continue;
            }
            result = validator.next_result() => {
                let Some(change) = validator.record(result) else { continue };
                reconciler.set_verdicts(validator.verdicts());
                changed.push(change);
                false
            }
            batch = async {
                match tcp_trouble.as_deref_mut() {
                    Some(ring) => ring.next().await,
                    None => std::future::pending().await,
                }
            } => {
                for record in &batch.records {
                    // No PvD: one that went away before a restart (a
                    // name keeps its index while the daemon runs).
                    match tcp_trouble::pvd_of_mark(reconciler.pvds(), record.mark, mark_mask) {
                        Some(pvd) => on_tcp_timeout(
                            &mut admin.tcp_health,
                            validator,
                            pvd,
                            record.state == mif_common::TCP_SYN_SENT,
                            record,
                        ),
                        None => {
                            admin.tcp_health.record_no_pvd();
                            debug!(
                                "tcp: retransmission timeout of a socket with mark {:#x}, no PvD's",
                                record.mark
                            );
                        }
                    }
                }
                if batch.lost > 0 {
                    debug!(
                        "tcp: {} retransmission timeouts not reported (the ring was full)",
                        batch.lost
                    );
                }
                continue;
            }
            event = watcher.next() => {
                if event.is_none() {
                    continue;
                }
                // Take whatever else is already queued: one pass for a burst
                // (a container runtime makes several cgroups at once).
                while let Some(Some(_)) = watcher.next().now_or_never() {}
                reconciler.policy_state_mut().cgroups_changed();
                false
            }
            _ = containers.tick() => {
                let now = reconciler.foreign_fingerprint();
                if now == known_containers {
                    continue;
                }
                known_containers = now;
                reconciler.policy_state_mut().cgroups_changed();
                false
            }
            changed = async {
                match policies_dir.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Err(e) = changed {
                    warn!("policies directory watch ended ({e}); reload to apply its changes");
                    policies_dir = None;
                    continue;
                }
                // Take the rest of the burst (an editor's or kubelet's
                // several steps) before reading the files.
                tokio::time::sleep(POLICIES_SETTLE).await;
                while let Some(w) = policies_dir.as_mut() {
                    if w.changed().now_or_never().is_none() {
                        break;
                    }
                }
                info!("the policies directory changed: reloading");
                let _ = admin.reload_announced(reconciler, &control.monitor).await;
                admin.refresh_process_policies(reconciler).await;
                kernel.follow(reconciler, admin);
                if !after_reload(reconciler, validator, dns_forwarder, watcher).await {
                    continue;
                }
                false
            }
            _ = signals.hup.recv() => {
                let _ = admin.reload(reconciler).await;
                admin.refresh_process_policies(reconciler).await;
                kernel.follow(reconciler, admin);
                if !after_reload(reconciler, validator, dns_forwarder, watcher).await {
                    continue;
                }
                false
            }
            command = control.commands.recv() => {
                let Some(command) = command else { continue };
                if let control::protocol::Request::PvdProbe { name } = command.request {
                    // Answered when the probes end, by a task: the loop
                    // goes on meanwhile.
                    admin::probe(validator, reconciler, &name, command.reply);
                    continue;
                }
                let before = reconciler.pvds().to_vec();
                let response = admin
                    .handle(reconciler, &control.monitor, validator, command.request, &command.peer)
                    .await;
                // Before the answer: whoever changed a policy sees the
                // process choices below it follow once it returns.
                admin.refresh_process_policies(reconciler).await;
                let _ = command.reply.send(response);
                kernel.follow(reconciler, admin);
                dns_forwarder.follow(reconciler.pvds()).await;
                follow_validation(reconciler, validator).await;
                announce_pvd_changes(&before, reconciler, validator, &control.monitor);
                if !watcher.follow(reconciler.policy_state()) {
                    continue;
                }
                reconciler.policy_state_mut().cgroups_changed();
                false
            }
            event = events.next() => {
                let Some(first) = event else {
                    anyhow::bail!("the netlink event stream ended");
                };
                // Take whatever else is already queued: one pass for a burst.
                let mut verify = false;
                let mut pending = Some(first);
                while let Some(event) =
                    pending.take().or_else(|| events.next().now_or_never().flatten())
                {
                    verify |= needs_verify(&event);
                    if let NetEvent::RaOptions {
                        ifindex,
                        rdnss,
                        dnssl,
                        captive_portal,
                        ..
                    } = &event
                    {
                        if let Some(uri) = captive_portal {
                            reconciler.learn_ra_captive_portal(*ifindex, uri);
                        }
                        for option in rdnss {
                            let servers: Vec<IpAddr> =
                                option.servers.iter().map(|&a| a.into()).collect();
                            reconciler.learn_ra_dns(*ifindex, &servers, option.lifetime);
                        }
                        for option in dnssl {
                            reconciler.learn_ra_domains(*ifindex, &option.domains, option.lifetime);
                        }
                    }
                }
                verify
            }
        };
        let before = reconciler.pvds().to_vec();
        match reconciler.reconcile(verify).await {
            Ok(lost) => {
                follow_validation(reconciler, validator).await;
                announce_pvd_changes(&before, reconciler, validator, &control.monitor);
                dns_forwarder.follow(reconciler.pvds()).await;
                reset_lost(reconciler, &lost, mark_mask).await;
                failing::reset_on_failing(reconciler, &std::mem::take(&mut changed), mark_mask)
                    .await;
                predating.after_pass(reconciler, mark_mask).await;
            }
            // A failed pass is retried on the next event or recheck; the
            // kernel keeps the last good state meanwhile.
            Err(e) => warn!("reconciling: {e:#}"),
        }
    }
}

/// One retransmission timeout of a connection on PvD `pvd`, as the kernel
/// reported it: the hand-off from passive detection to network validation.
/// `syn_sent`: a connect whose SYN went unanswered (else data that went
/// unacknowledged on an established connection); `record` has the rest
/// (retransmissions so far, whether the kernel gave the connection up).
/// Called once per record, in the order the kernel wrote them: a dead
/// network gives several per connection, one per backed-off retry.
/// Brings the PvD's next probe forward (passive detection, see
/// [`Validator::hurry`]), counts it (`tcp_timeouts` in `mif pvd list`) and
/// logs it at debug level, rate-limited per PvD.
fn on_tcp_timeout(
    health: &mut tcp_trouble::TcpHealth,
    validator: &mut Validator,
    pvd: &str,
    syn_sent: bool,
    record: &mif_common::TcpTrouble,
) {
    if validator.hurry(pvd) {
        let what = if syn_sent {
            "a connect"
        } else {
            "a connection"
        };
        debug!("validation: probing PvD {pvd} now: {what} on it timed out");
    }
    if let Some(line) = health.record(pvd, record, std::time::Instant::now()) {
        debug!("{line}");
    }
}

/// Watches cgroupfs where pattern policies may gain cgroups, so a new
/// container's cgroup is steered the moment it appears.
///
/// Made before the start-up resolve, so that a cgroup made while the
/// policies resolve is seen by the resolve, by an event, or by both.
struct CgroupWatch {
    watcher: Option<CgroupWatcher>,
    /// Whether the policies have cgroups to watch (and so, without a
    /// watcher, the watcher failed).
    wanted: bool,
    mount: std::path::PathBuf,
}

impl CgroupWatch {
    fn new(policy_state: &PolicyState) -> Self {
        let mount = policy_state.cgroup2().mount().to_path_buf();
        let mut watch = Self {
            watcher: None,
            wanted: false,
            mount,
        };
        watch.follow(policy_state);
        watch
    }

    /// Re-targets the watcher when the policies changed (the watcher is
    /// compared with them: no copy of its targets is kept, which with
    /// 100,000 literal policies would be 10 MiB). A watcher that failed is
    /// made again. Returns whether it watches anew (then cgroups made
    /// before the new watcher existed must be looked for by the caller).
    fn follow(&mut self, policy_state: &PolicyState) -> bool {
        let targets = policy_state.watch_targets();
        self.wanted = !targets.is_empty();
        if targets.is_empty() {
            self.watcher = None;
            return false;
        }
        if (self.watcher.as_ref()).is_some_and(|w| w.watches(&targets.roots, &targets.exact)) {
            return false;
        }
        self.watcher = CgroupWatcher::with_exact(&self.mount, &targets.roots, &targets.exact)
            .map_err(|e| warn!("watching cgroups for policies: {e}"))
            .ok();
        self.watcher.is_some()
    }

    /// Whether cgroups that policies name are watched for, or need not be.
    fn is_whole(&self) -> bool {
        self.watcher.is_some() || !self.wanted
    }

    /// The next change below the roots; pending forever when nothing is watched.
    /// The next change; None once, when the watcher fails: it is then
    /// dropped (logged by the watcher), and new cgroups are found by the
    /// periodic recheck instead of a loop that would spin on a dead
    /// descriptor.
    async fn next(&mut self) -> Option<CgroupEvent> {
        let event = match &mut self.watcher {
            Some(w) => w.next().await,
            None => std::future::pending().await,
        };
        if event.is_none() {
            warn!(
                "cgroup watcher stopped: new cgroups are found by the periodic check (every {} s)",
                RECHECK_INTERVAL.as_secs()
            );
            self.watcher = None;
        }
        event
    }
}

/// The signals the daemon acts on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Tells `mif monitor` clients about PvDs whose state changed (validation
/// verdicts included).
fn announce_pvd_changes(
    before: &[PvdState],
    reconciler: &Reconciler,
    validator: &Validator,
    monitor: &broadcast::Sender<MonitorEvent>,
) {
    for pvd in reconciler.pvds() {
        if !before.contains(pvd) {
            let view = admin::pvd_view(pvd, validator);
            let _ = monitor.send(MonitorEvent::Pvd(Box::new(view)));
        }
    }
}

/// After a reload (SIGHUP, the policies directory), whose own pass is done:
/// the forwarder follows the PvDs' domains, validation its settings, the
/// cgroup watcher the policies. Returns whether another pass is due (a new
/// watcher: cgroups made before it are looked for, as at start).
async fn after_reload(
    reconciler: &mut Reconciler,
    validator: &mut Validator,
    dns_forwarder: &mut crate::dns::ForwarderControl,
    watcher: &mut CgroupWatch,
) -> bool {
    dns_forwarder.follow(reconciler.pvds()).await;
    follow_validation(reconciler, validator).await;
    if !watcher.follow(reconciler.policy_state()) {
        return false;
    }
    reconciler.policy_state_mut().cgroups_changed();
    true
}

/// Sleeps until `when`; forever when there is nothing to wait for.
async fn sleep_until(when: Option<std::time::Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when.into()).await,
        None => std::future::pending().await,
    }
}

/// After a pass: the validator follows the PvDs (probing new or changed
/// ones, dropping gone ones). When that changes a verdict the kernel holds
/// (a degraded PvD left, or came back as a new network), the maps take it
/// at once rather than at the next event.
async fn follow_validation(reconciler: &mut Reconciler, validator: &mut Validator) {
    if !validator.follow(reconciler.pvds(), reconciler.config()) {
        return;
    }
    reconciler.set_verdicts(validator.verdicts());
    if let Err(e) = reconciler.reconcile(false).await {
        warn!("reconciling: {e:#}");
    }
}

/// Route and rule events may be someone else deleting ours; a resync means
/// events were lost. Link and address changes are covered by the dump.
fn needs_verify(event: &NetEvent) -> bool {
    matches!(
        event,
        NetEvent::Resync
            | NetEvent::Changed(netlink::ChangeKind::Route | netlink::ChangeKind::Rule)
    )
}

/// Where start-up's time goes, for `RUST_LOG=debug` (the benchmark's
/// start → ready is the sum).
struct StartUp {
    started: Instant,
    last: Instant,
    steps: Vec<Step>,
}

/// A start-up step: its name, how long it took, and the resident memory
/// after it (now and at the peak, KiB).
type Step = (&'static str, Duration, Option<(u64, u64)>);

impl StartUp {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last: now,
            steps: Vec::new(),
        }
    }

    /// Ends a step begun where the last one ended.
    fn step(&mut self, name: &'static str) {
        let now = Instant::now();
        // Read only for the debug log that shows it.
        let resident = log::log_enabled!(log::Level::Debug)
            .then(crate::memory::resident_kib)
            .flatten();
        self.steps.push((name, now - self.last, resident));
        self.last = now;
    }

    fn log(&self) {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(name, took, resident)| {
                let ms = took.as_secs_f64() * 1e3;
                match resident {
                    Some((now, peak)) => format!(
                        "{name} {ms:.1} ms (resident {} MiB, peak {} MiB)",
                        now / 1024,
                        peak / 1024
                    ),
                    None => format!("{name} {ms:.1} ms"),
                }
            })
            .collect();
        debug!(
            "start-up in {:.1} ms: {}",
            self.started.elapsed().as_secs_f64() * 1e3,
            steps.join(", ")
        );
    }
}

/// Resets the TCP sockets bound to a lost PvD's address, when a policy that
/// prefers that PvD asks for it, so applications reconnect over the next.
async fn reset_lost(reconciler: &Reconciler, lost: &[Lost], mark_mask: u32) {
    for l in lost {
        let wanted = reconciler
            .policies()
            .iter()
            .any(|p| p.terms.reset && p.terms.prefer.contains(&l.pvd));
        if !wanted {
            continue;
        }
        let filter = sockdiag::DestroyFilter {
            source: Some(l.source),
            mark: Some((l.mark, mark_mask)),
            ..Default::default()
        };
        match tokio::task::spawn_blocking(move || sockdiag::destroy_tcp(&filter)).await {
            Ok(Ok(n)) => info!("PvD {} lost {}: reset {n} TCP connections", l.pvd, l.source),
            Ok(Err(e)) => warn!(
                "PvD {} lost {}: resetting its connections: {e}",
                l.pvd, l.source
            ),
            Err(e) => warn!("resetting connections: {e}"),
        }
    }
}

/// Removes everything: programs first (no new socket gets a mark), then
/// routing, then the maps.
async fn teardown(mut reconciler: Reconciler, steering: Steering) {
    steering.detach_programs();
    reconciler.remove_routing().await;
    drop(reconciler);
    steering.remove_maps();
}
