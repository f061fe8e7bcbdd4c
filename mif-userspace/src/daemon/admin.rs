//! What the daemon does for the control socket and SIGHUP: report state,
//! change CLI policies (checked, persisted, applied at once), reload the
//! config file (an invalid one changes nothing and is reported).
use std::{path::PathBuf, sync::Arc, time::Instant};

use log::{info, warn};
use tokio::sync::broadcast;

use super::{
    prepare::{check_unresolved, load_config},
    process_pvd,
};
use crate::{
    apply::loader::GuardTarget,
    control::peer::Peer,
    control::protocol::{
        ChoicesView, MonitorEvent, PolicyView, ProbedView, PvdView, Request, Response, StatusView,
    },
    host::{cgroup::normalize_cgroup, foreign_netns},
    instance::InstanceOptions,
    model::config::{ConfigSources, PolicyTerms},
    model::policies::{self, Origin, PolicySpec},
    model::pvd::PvdState,
    reconcile::Reconciler,
    validation::Validator,
};

/// A PvD as `mif pvd list` and `mif monitor` show it, with its validation.
pub fn pvd_view(p: &PvdState, validator: &Validator) -> PvdView {
    let mut view = PvdView::from(p);
    view.validation_v4 = validator.view(&p.name, false);
    view.validation_v6 = validator.view(&p.name, true);
    view
}

/// The policies [`Admin::process_pvd`] made (CLI ones, by their cgroup's
/// name).
fn process_policies(reconciler: &Reconciler) -> Vec<PolicySpec> {
    let mut specs = reconciler.policy_state().set.cli();
    specs.retain(|p| process_pvd::parse(&p.cgroup).is_some());
    specs
}

/// The policy covering `cgroup`: the deepest among it and its ancestors,
/// as the kernel's walk finds it.
fn policy_above<'r>(
    reconciler: &'r Reconciler,
    cgroup: &str,
) -> Option<&'r crate::plan::ResolvedPolicy> {
    let state = reconciler.policy_state();
    foreign_netns::cgroup_and_ancestors(cgroup).find_map(|c| state.policy_of_cgroup(c))
}

/// [`policy_above`]'s terms.
fn origin_of(reconciler: &Reconciler, cgroup: &str) -> Option<std::sync::Arc<PolicyTerms>> {
    policy_above(reconciler, cgroup).map(|p| p.terms.clone())
}

/// The asking process's pid and cgroup, when it is still the process that
/// opened the connection.
fn peer_cgroup(peer: &Peer) -> Result<(i32, String), String> {
    let pid = peer.pid.ok_or("the asking process is unknown")?;
    if !peer.still_there() {
        return Err("the process that opened this connection is gone".into());
    }
    let cgroup = foreign_netns::cgroup2_path_of(pid as u32)
        .ok_or("cannot read the asking process's cgroup")?;
    Ok((pid, cgroup))
}

/// The policy covering process `pid` and what it may choose (see
/// [`ChoicesView`]): the deepest policy among its cgroup and the cgroup's
/// ancestors, as the kernel's walk finds it. Any local process may ask,
/// about itself only (the pid is the socket peer's).
pub fn choices(reconciler: &Reconciler, peer: &Peer) -> Response {
    let cgroup = match peer_cgroup(peer) {
        Ok((_, cgroup)) => cgroup,
        Err(why) => return Response::Error(why),
    };
    let found = policy_above(reconciler, &cgroup);
    let mut view = ChoicesView {
        cgroup: cgroup.clone(),
        ..Default::default()
    };
    if let Some(policy) = found {
        view.policy = Some(policy.cgroup.to_string());
        view.prefer = policy.terms.prefer.clone();
        view.allow = policy.terms.allow.clone();
        view.strict = policy.terms.strict;
    }
    Response::Choices(view)
}

/// `mif pvd probe NAME`: probes the PvD's families now and answers on
/// `reply` when they end (a task waits for them, so the event loop goes
/// on); at once with an error when the PvD is not validated at all.
pub fn probe(
    validator: &mut Validator,
    reconciler: &Reconciler,
    name: &str,
    reply: tokio::sync::oneshot::Sender<Response>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if let Err(e) = validator.probe_now(name, reconciler.pvds(), reconciler.config(), tx) {
        let _ = reply.send(Response::Error(e));
        return;
    }
    tokio::spawn(async move {
        let response = match rx.await {
            Ok(views) => Response::Probed(
                views
                    .into_iter()
                    .map(|(v6, validation)| ProbedView {
                        family: if v6 { "IPv6" } else { "IPv4" }.into(),
                        validation,
                    })
                    .collect(),
            ),
            Err(_) => Response::Error("the PvD changed while it was probed; probe again".into()),
        };
        let _ = reply.send(response);
    });
}

pub struct Admin {
    pub sources: ConfigSources,
    pub opts: InstanceOptions,
    pub state_file: PathBuf,
    started: Instant,
    last_reload_error: Option<String>,
    /// Retransmission timeouts per PvD, for `mif pvd list`.
    pub tcp_health: super::tcp_trouble::TcpHealth,
    /// Why the cgroup watchers are not attached, if they are not.
    pub cgroup_watchers: super::watchers::WatcherState,
}

impl Admin {
    pub fn new(sources: ConfigSources, opts: InstanceOptions, state_file: PathBuf) -> Self {
        Self {
            sources,
            opts,
            state_file,
            started: Instant::now(),
            last_reload_error: None,
            tcp_health: Default::default(),
            cgroup_watchers: super::watchers::WatcherState::NotNeeded,
        }
    }

    pub async fn handle(
        &mut self,
        reconciler: &mut Reconciler,
        monitor: &broadcast::Sender<MonitorEvent>,
        validator: &Validator,
        request: Request,
        peer: &Peer,
    ) -> Response {
        match request {
            Request::Status => Response::Status(Box::new(self.status(reconciler))),
            Request::Pvds => Response::Pvds(
                reconciler
                    .pvds()
                    .iter()
                    .map(|p| PvdView {
                        tcp_timeouts: Some(self.tcp_health.timeouts(&p.name)),
                        ..pvd_view(p, validator)
                    })
                    .collect(),
            ),
            Request::Policies => Response::Policies(policy_views(reconciler)),
            Request::PolicySet(spec) => match self.set_policy(reconciler, spec.clone()).await {
                Ok(()) => {
                    let _ = monitor.send(MonitorEvent::PolicySet(spec));
                    Response::Ok
                }
                Err(e) => Response::Error(e),
            },
            Request::PolicyDel { cgroup } => match self.del_policy(reconciler, &cgroup).await {
                Ok(()) => {
                    let _ = monitor.send(MonitorEvent::PolicyDel { cgroup });
                    Response::Ok
                }
                Err(e) => Response::Error(e),
            },
            Request::Reload => match self.reload_announced(reconciler, monitor).await {
                Ok(()) => Response::Ok,
                Err(e) => Response::Error(e),
            },
            // Served by the connection itself.
            Request::Monitor => Response::Error("monitor is a stream".into()),
            // Served by [`probe`], which answers when the probes end.
            Request::PvdProbe { .. } => Response::Error("probe is answered apart".into()),
            Request::Choices => choices(reconciler, peer),
            Request::ProcessPvd { pvd } => match self.process_pvd(reconciler, peer, &pvd).await {
                Ok(cgroup) => {
                    let _ = monitor.send(MonitorEvent::PolicySet(cgroup));
                    Response::Ok
                }
                Err(e) => Response::Error(e),
            },
        }
    }

    fn status(&self, reconciler: &Reconciler) -> StatusView {
        let state = reconciler.policy_state();
        StatusView {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            layout_version: mif_common::LAYOUT_VERSION,
            uptime_secs: self.started.elapsed().as_secs(),
            pin_dir: self.opts.pin_dir.display().to_string(),
            attach_cgroup: state.attach.rel.clone(),
            pvds: reconciler.pvds().len(),
            pvds_available: reconciler
                .pvds()
                .iter()
                .filter(|p| p.available4() || p.available6())
                .count(),
            policies: state.resolved().len(),
            policies_pending: state.pending().len(),
            policies_over_capacity: crate::plan::over_capacity(
                state.resolved(),
                reconciler.policy_capacity(),
            )
            .len(),
            policy_capacity: reconciler.policy_capacity(),
            last_reload_error: self.last_reload_error.clone(),
            guarded_cgroups: reconciler.guards().guarded(GuardTarget::Cgroups),
            guarded_interfaces: reconciler.guards().guarded(GuardTarget::Interfaces),
            guard_problem: reconciler.guards().problem().map(str::to_string),
            guards_left_out: reconciler
                .guards()
                .left_out()
                .iter()
                .map(|l| format!("{}: {}", l.program, l.why))
                .collect(),
            hooks_waiting: (reconciler.waiting_hooks().into_iter())
                .map(str::to_string)
                .collect(),
            tcp_timeouts_no_pvd: self.tcp_health.no_pvd(),
            cgroup_watchers_left_out: match &self.cgroup_watchers {
                super::watchers::WatcherState::LeftOut(why) => Some(why.clone()),
                _ => None,
            },
            cgroup_watchers_attached: self.cgroup_watchers
                == super::watchers::WatcherState::Attached,
        }
    }

    /// Checks a CLI policy as thoroughly as the config file's: path, PvD
    /// names, cgroup existence within the attach cgroup.
    async fn set_policy(
        &mut self,
        reconciler: &mut Reconciler,
        spec: PolicySpec,
    ) -> Result<(), String> {
        let spec = spec.checked().map_err(|e| e.to_string())?;
        let known = reconciler
            .known_pvd_names()
            .await
            .map_err(|e| format!("{e:#}"))?;
        if let Some(unknown) = spec.terms.named_pvds().find(|n| !known.contains(*n)) {
            return Err(format!(
                "unknown PvD {unknown:?}: neither a [[pvd]] of the config nor an interface (known: {})",
                known.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        // A pattern applies to cgroups as they appear; a literal cgroup
        // must exist, below the cgroup mif attaches to.
        if !crate::host::cgroup_pattern::is_pattern(&spec.cgroup) {
            let state = reconciler.policy_state();
            let cgroup = state
                .cgroup2()
                .resolve(&spec.cgroup)
                .map_err(|e| e.to_string())?;
            if !cgroup.is_within(&state.attach) {
                return Err(format!(
                    "cgroup {} is outside the cgroup mif attaches to ({})",
                    spec.cgroup, state.attach.rel
                ));
            }
        }
        let state = reconciler.policy_state();
        policies::check_capacity(
            &state.set,
            &spec,
            state.cgroup2(),
            &state.attach,
            reconciler.policy_capacity(),
        )
        .map_err(|e| e.to_string())?;
        reconciler
            .policy_state_mut()
            .set
            .set(spec)
            .map_err(|e| e.to_string())?;
        self.persist_and_apply(reconciler).await
    }

    /// `mif_set_process_pvd` (see [`process_pvd`]): moves the asking
    /// process into `mif-pvd-<pvd>` below its cgroup, with a policy derived
    /// from the one above, when that policy lets it choose `pvd`. The
    /// policy is written before the move, so no socket of the process
    /// misses it; on any failure nothing is left behind.
    async fn process_pvd(
        &mut self,
        reconciler: &mut Reconciler,
        peer: &Peer,
        pvd: &str,
    ) -> Result<PolicySpec, String> {
        let (pid, own) = peer_cgroup(peer)?;
        if !process_pvd::is_plain_name(pvd) || !reconciler.pvds().iter().any(|p| p.name == pvd) {
            return Err(format!("no PvD is named {pvd:?}"));
        }
        let base = process_pvd::base_of(&own);
        let terms = process_pvd::derive(origin_of(reconciler, &base).as_deref(), pvd)?;
        self.remove_empty_process_cgroups(reconciler).await;
        let cgroup = normalize_cgroup(&process_pvd::cgroup_for(&base, pvd));
        let state = reconciler.policy_state();
        let derived = process_policies(reconciler);
        if !derived.iter().any(|p| *p.cgroup == *cgroup)
            && derived.len() >= process_pvd::MAX_PROCESS_POLICIES
        {
            return Err(format!(
                "{} processes have chosen their PvD already, the most mif holds",
                process_pvd::MAX_PROCESS_POLICIES
            ));
        }
        let within = state
            .cgroup2()
            .resolve(&base)
            .is_ok_and(|c| c.is_within(&state.attach));
        if !within {
            return Err(format!(
                "the process's cgroup {base} is outside the cgroup mif attaches to ({})",
                state.attach.rel
            ));
        }
        let dir = state.cgroup2().mount().join(cgroup.trim_start_matches('/'));
        let made = match std::fs::create_dir(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(format!("cannot make cgroup {}: {e}", dir.display())),
        };
        let spec = PolicySpec {
            cgroup: cgroup.as_str().into(),
            terms: terms.into(),
        };
        let moved = match self.set_policy(reconciler, spec.clone()).await {
            Ok(()) => std::fs::write(dir.join("cgroup.procs"), pid.to_string())
                .map_err(|e| format!("cannot move process {pid} into {cgroup}: {e}")),
            Err(e) => Err(e),
        };
        if let Err(e) = moved {
            if process_policies(reconciler)
                .iter()
                .any(|p| *p.cgroup == *cgroup)
            {
                let _ = self.del_policy(reconciler, &cgroup).await;
            }
            if made {
                let _ = std::fs::remove_dir(&dir);
            }
            return Err(e);
        }
        info!("process {pid} now uses PvD {pvd} ({cgroup})");
        Ok(spec)
    }

    /// Derives every `mif-pvd-*` policy again from its origin (see
    /// [`process_pvd`]), after the policies changed: one whose origin no
    /// longer allows its PvD is removed (its processes fall back to the
    /// origin), the others follow the origin's terms.
    pub async fn refresh_process_policies(&mut self, reconciler: &mut Reconciler) {
        for PolicySpec { cgroup, terms: now } in process_policies(reconciler) {
            let Some((base, pvd)) = process_pvd::parse(&cgroup) else {
                continue;
            };
            let outcome = match process_pvd::derive(origin_of(reconciler, &base).as_deref(), pvd) {
                Ok(terms) if terms == *now => continue,
                Ok(terms) => {
                    let spec = PolicySpec {
                        cgroup: cgroup.clone(),
                        terms: terms.into(),
                    };
                    self.set_policy(reconciler, spec).await
                }
                Err(why) => {
                    info!("{cgroup}: {why}; its processes follow their policy again");
                    self.del_policy(reconciler, &cgroup).await
                }
            };
            if let Err(e) = outcome {
                warn!("deriving the policy of {cgroup} again: {e}");
            }
        }
    }

    /// Removes the `mif-pvd-*` cgroups of [`Self::process_pvd`] whose
    /// processes are all gone, and their policies.
    async fn remove_empty_process_cgroups(&mut self, reconciler: &mut Reconciler) {
        let mount = reconciler.policy_state().cgroup2().mount().to_path_buf();
        let empty: Vec<Arc<str>> = process_policies(reconciler)
            .into_iter()
            .map(|p| p.cgroup)
            .filter(|c| {
                let procs = mount.join(c.trim_start_matches('/')).join("cgroup.procs");
                std::fs::read_to_string(procs).map_or(true, |p| p.trim().is_empty())
            })
            .collect();
        for cgroup in empty {
            let _ = std::fs::remove_dir(mount.join(cgroup.trim_start_matches('/')));
            if let Err(e) = self.del_policy(reconciler, &cgroup).await {
                warn!("removing the policy of the empty cgroup {cgroup}: {e}");
            }
        }
    }

    async fn del_policy(
        &mut self,
        reconciler: &mut Reconciler,
        cgroup: &str,
    ) -> Result<(), String> {
        reconciler
            .policy_state_mut()
            .set
            .del(&normalize_cgroup(cgroup))
            .map_err(|e| e.to_string())?;
        self.persist_and_apply(reconciler).await
    }

    async fn persist_and_apply(&mut self, reconciler: &mut Reconciler) -> Result<(), String> {
        policies::persist(&self.state_file, &reconciler.policy_state().set.cli())
            .map_err(|e| format!("saving policies to {}: {e:#}", self.state_file.display()))?;
        reconciler
            .reconcile(false)
            .await
            .map_err(|e| format!("{e:#}"))?;
        Ok(())
    }

    /// [`Admin::reload`], its outcome streamed to `mif monitor`.
    pub async fn reload_announced(
        &mut self,
        reconciler: &mut Reconciler,
        monitor: &broadcast::Sender<MonitorEvent>,
    ) -> Result<(), String> {
        let result = self.reload(reconciler).await;
        let _ = monitor.send(MonitorEvent::Reload {
            ok: result.is_ok(),
            error: result.clone().err(),
        });
        result
    }

    /// Re-reads the config file; on any error the running policy stays.
    pub async fn reload(&mut self, reconciler: &mut Reconciler) -> Result<(), String> {
        let outcome = self.reload_config(reconciler).await;
        // The file was parsed anew (and maybe the policy set replaced):
        // that one-off memory goes back, as after start-up.
        crate::memory::give_back();
        outcome
    }

    async fn reload_config(&mut self, reconciler: &mut Reconciler) -> Result<(), String> {
        let result = async {
            let interfaces: Vec<String> = reconciler.known_pvd_names().await?.into_iter().collect();
            let config = load_config(&self.sources, &self.opts, &interfaces)?;
            // Whether each of the file's policies names a cgroup within the
            // attach cgroup: judged on the resolve the pass would make.
            reconciler.replace_config_checked(config, |state| {
                check_unresolved(&state.set, state.pending(), state.cgroup2(), &state.attach)
            })
        }
        .await;
        match result {
            Ok(displaced) => {
                for displaced in displaced {
                    warn!(
                        "the config file now owns cgroup {}: its CLI policy is dropped",
                        displaced.cgroup
                    );
                }
                self.last_reload_error = None;
                info!("reloaded {}", self.sources.file.display());
                self.persist_and_apply(reconciler).await
            }
            Err(e) => {
                let message = format!("reload refused, the running policy stays: {e:#}");
                warn!("{message}");
                self.last_reload_error = Some(message.clone());
                Err(message)
            }
        }
    }
}

fn policy_views(reconciler: &Reconciler) -> Vec<PolicyView> {
    let state = reconciler.policy_state();
    let matches_of = state.matches();
    let over_capacity: std::collections::HashSet<u64> =
        crate::plan::over_capacity(state.resolved(), reconciler.policy_capacity())
            .iter()
            .map(|r| r.cgroup_id)
            .collect();
    state
        .set
        .all()
        .into_iter()
        .map(|(spec, origin): (PolicySpec, Origin)| {
            let matches = matches_of.of(&spec.cgroup);
            let pattern = crate::host::cgroup_pattern::is_pattern(&spec.cgroup);
            let left_out = (matches.iter())
                .filter(|m| over_capacity.contains(&m.cgroup_id))
                .count();
            PolicyView {
                id: matches.first().map(|r| r.id),
                cgroup_id: if pattern {
                    None
                } else {
                    matches.first().map(|r| r.cgroup_id)
                },
                state: match (pattern, matches.len()) {
                    (_, 0) => "pending".into(),
                    (false, _) => "active".into(),
                    (true, n) => format!("active ({n} cgroups)"),
                } + &match left_out {
                    0 => String::new(),
                    n => format!(", {n} not enforced: policy map full"),
                },
                spec,
                origin,
            }
        })
        .collect()
}
