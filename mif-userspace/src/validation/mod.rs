//! Validation in the daemon: which (PvD, family) pairs to probe, when, and
//! what their probes found. The verdicts reach the kernel through the
//! reconciler (`PVD_DEGRADED_*` flags), where non-strict policies pass a
//! captive or failing PvD over; see [`crate::model::validation`] for the
//! states and the schedule.
//!
//! Probes run as tasks of their own and report on a channel, so the event
//! loop never waits on a network. A pair is probed while its PvD is
//! available for the family; a new address or interface on it (another
//! Wi-Fi network joined) makes it `unknown` again and probed at once.
pub mod probe;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Instant, SystemTime},
};

use log::{info, warn};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use self::probe::ProbeRoute;
use crate::model::{
    config::Config,
    pvd::PvdState,
    validation::{
        effective, Check, Outcome, PvdValidation, PvdVerdicts, ValidationConfig, Verdict,
    },
};

/// One (PvD, family): the PvD's name and whether IPv6.
type Pair = (String, bool);

/// What a network must stay for its verdict to stand: the same interface
/// and source address. (A new gateway on the same address is the same
/// network as far as the probe can tell; its next probe will say.)
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attachment {
    ifindex: u32,
    source: IpAddr,
}

struct Entry {
    check: Check,
    config: ValidationConfig,
    attachment: Attachment,
    /// Which probe of this entry is in flight, if any; results of other
    /// (older) probes are ignored.
    in_flight: Option<u64>,
}

/// A finished probe, as its task reports it.
#[derive(Debug)]
pub struct ProbeResult {
    pair: Pair,
    probe: u64,
    outcome: Outcome,
}

/// A verdict that changed, for the log, `mif monitor` and socket resets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictChange {
    pub pvd: String,
    pub v6: bool,
    pub before: Verdict,
    pub after: Verdict,
}

/// Per family, what `mif pvd list` shows of validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FamilyValidationView {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
    pub url: String,
    /// Seconds since the Unix epoch of the last probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
}

impl FamilyValidationView {
    /// The state in a few words: `validated`, `captive (portal http://...)`.
    pub fn words(&self) -> String {
        match &self.portal {
            Some(portal) => format!("{} (portal {portal})", self.state),
            None => self.state.clone(),
        }
    }
}

/// An answer owed to a `mif pvd probe` caller once its PvD's probes end:
/// each probed family (true: IPv6) as it then stands.
pub type Waiter = oneshot::Sender<Vec<(bool, FamilyValidationView)>>;

/// What to probe for the PvD named `pvd`: `[validation]` with the PvD's own
/// `validation` over it, if any.
fn config_for(config: &Config, pvd: &str) -> Option<ValidationConfig> {
    let own = config
        .pvds
        .iter()
        .find(|p| p.name == pvd)
        .map(|p| &p.validation);
    effective(
        config.validation.as_ref(),
        own.unwrap_or(&PvdValidation::Inherit),
    )
}

pub struct Validator {
    entries: BTreeMap<Pair, Entry>,
    next_probe: u64,
    results_tx: mpsc::UnboundedSender<ProbeResult>,
    results: mpsc::UnboundedReceiver<ProbeResult>,
    /// Per PvD, callers waiting for the probes started for them.
    waiters: BTreeMap<String, Vec<Waiter>>,
}

impl Default for Validator {
    fn default() -> Self {
        let (results_tx, results) = mpsc::unbounded_channel();
        Self {
            entries: BTreeMap::new(),
            next_probe: 0,
            results_tx,
            results,
            waiters: BTreeMap::new(),
        }
    }
}

impl Validator {
    /// Follows the PvDs of a pass and the config in force: starts checks
    /// for pairs that became probe-able, drops those that did not stay
    /// (pairs whose URL or timing a reload changed start over as
    /// `unknown`). Returns whether the verdicts changed (a dropped
    /// degraded pair is no longer degraded).
    pub fn follow(&mut self, pvds: &[PvdState], config: &Config) -> bool {
        let before = self.verdicts();
        let now = Instant::now();
        let mut wanted = BTreeMap::new();
        for p in pvds {
            let Some(config) = config_for(config, &p.name) else {
                continue;
            };
            for v6 in [false, true] {
                let (available, source) = match v6 {
                    false => (p.available4(), p.addr4.map(IpAddr::V4)),
                    true => (p.available6(), p.addr6.map(IpAddr::V6)),
                };
                let (Some(source), Some(ifindex)) = (source, p.ifindex) else {
                    continue;
                };
                if available && config.url.host.serves(v6) {
                    wanted.insert(
                        (p.name.clone(), v6),
                        (config.clone(), Attachment { ifindex, source }),
                    );
                }
            }
        }
        self.entries.retain(|pair, entry| {
            wanted
                .get(pair)
                .is_some_and(|(c, a)| *c == entry.config && *a == entry.attachment)
        });
        // Callers waiting on probes that will never report (their pair is
        // gone or started over) are answered with an error: the dropped
        // sender says so.
        let entries = &self.entries;
        self.waiters.retain(|name, _| {
            entries
                .iter()
                .any(|((n, _), e)| n == name && e.in_flight.is_some())
        });
        for (pair, (config, attachment)) in wanted {
            self.entries.entry(pair).or_insert_with(|| Entry {
                check: Check::new(now),
                config,
                attachment,
                in_flight: None,
            });
        }
        self.verdicts() != before
    }

    /// When the next probe is due (None: nothing to probe).
    pub fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.in_flight.is_none())
            .map(|e| e.check.due)
            .min()
    }

    /// Starts the probes that are due.
    pub fn start_due(&mut self, pvds: &[PvdState]) {
        let now = Instant::now();
        let due: Vec<Pair> = self
            .entries
            .iter()
            .filter(|(_, e)| e.in_flight.is_none() && e.check.due <= now)
            .map(|(pair, _)| pair.clone())
            .collect();
        for pair in due {
            match pvds.iter().find(|p| p.name == pair.0) {
                Some(p) => self.start(&pair, p),
                // Gone since the last pass (the next `follow` drops it):
                // not due again before then, or the loop would spin.
                None => {
                    if let Some(e) = self.entries.get_mut(&pair) {
                        e.check.due = now + e.config.timing.interval;
                    }
                }
            }
        }
    }

    fn start(&mut self, pair: &Pair, p: &PvdState) {
        let Some(entry) = self.entries.get_mut(pair) else {
            return;
        };
        let other_source = match pair.1 {
            false => p.addr6.map(IpAddr::V6),
            true => p.addr4.map(IpAddr::V4),
        };
        let route = ProbeRoute {
            pvd: p.name.clone(),
            ifindex: entry.attachment.ifindex,
            mark: p.mark,
            source: entry.attachment.source,
            other_source,
            resolvers: p.dns.clone(),
        };
        self.next_probe += 1;
        let id = self.next_probe;
        entry.in_flight = Some(id);
        let url = entry.config.url.clone();
        let timeout = entry.config.timing.timeout;
        let tx = self.results_tx.clone();
        let pair = pair.clone();
        tokio::spawn(async move {
            let outcome = probe::probe(&url, &route, timeout).await;
            let _ = tx.send(ProbeResult {
                pair,
                probe: id,
                outcome,
            });
        });
    }

    /// The next finished probe.
    pub async fn next_result(&mut self) -> ProbeResult {
        match self.results.recv().await {
            Some(r) => r,
            // The validator holds a sender itself: the channel never closes.
            None => std::future::pending().await,
        }
    }

    /// Takes a finished probe; returns the verdict's change, if any.
    pub fn record(&mut self, result: ProbeResult) -> Option<VerdictChange> {
        let ProbeResult {
            pair,
            probe,
            outcome,
        } = result;
        let entry = self.entries.get_mut(&pair)?;
        if entry.in_flight != Some(probe) {
            return None;
        }
        entry.in_flight = None;
        let family = if pair.1 { "IPv6" } else { "IPv4" };
        if let Outcome::NotProbed(why) = &outcome {
            warn!("validation of PvD {} ({family}): {why}", pair.0);
        }
        let before = entry.check.verdict.clone();
        let changed = entry
            .check
            .record(outcome, &entry.config.timing, Instant::now());
        let after = entry.check.verdict.clone();
        self.answer_waiters(&pair);
        if !changed {
            return None;
        }
        let outcome = self.entries.get(&pair).and_then(|e| e.check.last.as_ref());
        info!(
            "PvD {} ({family}): {before} -> {after}{}",
            pair.0,
            outcome.map_or(String::new(), |(_, o)| format!(" ({o})"))
        );
        Some(VerdictChange {
            pvd: pair.0,
            v6: pair.1,
            before,
            after,
        })
    }

    /// Answers the `mif pvd probe` callers of the pair's PvD once none of
    /// its probes is in flight any more.
    fn answer_waiters(&mut self, pair: &Pair) {
        if !self.waiters.contains_key(&pair.0) {
            return;
        }
        let busy = self
            .entries
            .iter()
            .any(|((name, _), e)| *name == pair.0 && e.in_flight.is_some());
        if busy {
            return;
        }
        let views: Vec<(bool, FamilyValidationView)> = [false, true]
            .into_iter()
            .filter_map(|v6| Some((v6, self.view(&pair.0, v6)?)))
            .collect();
        for w in self.waiters.remove(&pair.0).unwrap_or_default() {
            let _ = w.send(views.clone());
        }
    }

    /// Probes a PvD's families now (`mif pvd probe`); `reply` gets their
    /// outcomes. Err when the PvD is not probed at all, with why.
    pub fn probe_now(
        &mut self,
        pvd: &str,
        pvds: &[PvdState],
        config: &Config,
        reply: Waiter,
    ) -> Result<(), String> {
        let Some(p) = pvds.iter().find(|p| p.name == pvd) else {
            return Err(format!("no PvD named {pvd:?}"));
        };
        let pairs: Vec<Pair> = self
            .entries
            .keys()
            .filter(|(name, _)| name == pvd)
            .cloned()
            .collect();
        if pairs.is_empty() {
            return Err(match config_for(config, pvd) {
                None => format!(
                    "validation is off for PvD {pvd} (no [validation] section, or validation = false)"
                ),
                Some(_) => format!("PvD {pvd} is unavailable: nothing to probe"),
            });
        }
        for pair in &pairs {
            let idle = self
                .entries
                .get(pair)
                .is_some_and(|e| e.in_flight.is_none());
            if idle {
                self.start(pair, p);
            }
        }
        self.waiters.entry(pvd.to_string()).or_default().push(reply);
        Ok(())
    }

    /// A hint that TCP on the PvD is timing out (passive detection): its
    /// families are probed now, and a failure of that probe needs no
    /// confirmation. Returns whether a probe was brought forward. Hints
    /// while a family's probe is in flight are left to that probe: with
    /// mif attached at the root cgroup the probe's own socket is watched
    /// too, and its SYN timing out must not confirm its own failure.
    pub fn hurry(&mut self, pvd: &str) -> bool {
        let now = Instant::now();
        let mut any = false;
        for ((name, _), e) in self.entries.iter_mut() {
            if name == pvd && e.in_flight.is_none() {
                any |= e.check.hurry(now);
            }
        }
        any
    }

    /// Every probed PvD's verdicts.
    pub fn verdicts(&self) -> BTreeMap<String, PvdVerdicts> {
        let mut out: BTreeMap<String, PvdVerdicts> = BTreeMap::new();
        for ((name, v6), e) in &self.entries {
            let v = out.entry(name.clone()).or_default();
            match v6 {
                false => v.v4 = e.check.verdict.clone(),
                true => v.v6 = e.check.verdict.clone(),
            }
        }
        out
    }

    /// What `mif pvd list` shows of one family of a PvD.
    pub fn view(&self, pvd: &str, v6: bool) -> Option<FamilyValidationView> {
        let e = self.entries.get(&(pvd.to_string(), v6))?;
        let (last_probe, last_outcome) = match &e.check.last {
            Some((at, o)) => (
                at.duration_since(SystemTime::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs()),
                Some(o.to_string()),
            ),
            None => (None, None),
        };
        Some(FamilyValidationView {
            state: e.check.verdict.word().into(),
            portal: match &e.check.verdict {
                Verdict::Captive { portal } => portal.clone(),
                _ => None,
            },
            url: e.config.url.text.clone(),
            last_probe,
            last_outcome,
        })
    }
}
