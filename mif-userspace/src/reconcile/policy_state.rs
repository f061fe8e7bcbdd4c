//! The policies a daemon enforces and what they resolve to right now, with
//! the cgroups its watcher must follow for them.
use super::ms;
use crate::{
    apply::on_demand::HookNeeds,
    host::cgroup::{Cgroup, Cgroup2},
    host::selector::{is_selector, Selector},
    model::policies::{self, Pending, PolicyIds, PolicySet},
    plan::{ResolvedPolicy, SelectorPolicy},
};

/// The resolved policies of each policy, from [`PolicyState::matches`].
pub struct PolicyMatches<'a> {
    state: &'a PolicyState,
    by_id: std::collections::HashMap<u32, Vec<&'a ResolvedPolicy>>,
}

impl<'a> PolicyMatches<'a> {
    /// The cgroups the policy of `cgroup` (its key: a path, a pattern or a
    /// selector) currently applies to.
    pub fn of(&self, cgroup: &str) -> &[&'a ResolvedPolicy] {
        (self.state.ids.get(cgroup))
            .and_then(|id| self.by_id.get(&id))
            .map_or(&[], Vec::as_slice)
    }
}

/// The policies to enforce and what they resolve to right now.
pub struct PolicyState {
    pub set: PolicySet,
    ids: PolicyIds,
    cgroup2: Cgroup2,
    pub attach: Cgroup,
    resolved: Vec<ResolvedPolicy>,
    pending: Vec<Pending>,
    /// The selector policies as the kernel matches new cgroups by them.
    selectors: Vec<SelectorPolicy>,
    /// Positions in `resolved`, in the order of their cgroup paths: finds
    /// a cgroup's policy by binary search, without a map of every path.
    by_cgroup: Vec<u32>,
    /// Counts resolves: what a pass built from `resolved` stays valid while
    /// this is unchanged.
    resolution: u64,
    /// Whether policies or cgroups may have changed since the last resolve.
    /// Resolving looks up every policy's cgroup (a `stat` each: seconds for
    /// 100,000 policies), and a pass for a network change needs none of it.
    pub(super) stale: bool,
    /// [`PolicySet::preferred_names`] as of the last resolve: read by
    /// every pass, changed only with the policies.
    preferred_names: std::collections::BTreeSet<String>,
    /// The on-demand hooks the policies need, as of the last resolve.
    hook_needs: HookNeeds,
}

impl PolicyState {
    pub fn new(set: PolicySet, cgroup2: Cgroup2, attach: Cgroup) -> Self {
        Self {
            set,
            ids: PolicyIds::default(),
            cgroup2,
            attach,
            resolved: Vec::new(),
            pending: Vec::new(),
            selectors: Vec::new(),
            by_cgroup: Vec::new(),
            resolution: 0,
            stale: true,
            preferred_names: Default::default(),
            hook_needs: HookNeeds::default(),
        }
    }

    /// Re-binds every policy to its cgroup (cgroups come and go).
    pub(super) fn resolve(&mut self) {
        let started = std::time::Instant::now();
        (self.resolved, self.pending) =
            policies::resolve(&self.set, &self.cgroup2, &self.attach, &mut self.ids);
        let looked_up = started.elapsed();
        self.preferred_names = self.set.preferred_names();
        self.hook_needs = self.needs_of_set();
        let named = started.elapsed();
        self.selectors = self
            .set
            .iter()
            .filter(|(key, _)| is_selector(key))
            .filter_map(|(key, terms)| {
                Some(SelectorPolicy {
                    key: Selector::parse(key).ok()?.kernel_key()?,
                    id: self.ids.id(key),
                    terms: std::sync::Arc::clone(terms),
                })
            })
            .collect();
        let mut by_cgroup: Vec<u32> = (0..self.resolved.len() as u32).collect();
        by_cgroup.sort_unstable_by(|a, b| {
            self.resolved[*a as usize]
                .cgroup
                .cmp(&self.resolved[*b as usize].cgroup)
        });
        self.by_cgroup = by_cgroup;
        self.resolution += 1;
        self.stale = false;
        let indexed = started.elapsed();
        // The previous resolution (a record per cgroup) and this one's
        // look-ups were freed among the records kept: with 100,000
        // policies tens of MiB of pages that malloc would otherwise keep.
        // Resolving is rare (cgroups or policies changed, the 30 s
        // recheck) and costs a stat per policy; this costs far less.
        crate::memory::give_back();
        log::debug!(
            "resolve: {} policies, cgroups {:.1} ms, names {:.1} ms, selectors and index \
             {:.1} ms, memory given back {:.1} ms",
            self.resolved.len(),
            ms(looked_up),
            ms(named - looked_up),
            ms(indexed - named),
            ms(started.elapsed() - indexed)
        );
    }

    /// Resolves the policies now (before the first pass, which then need
    /// not): how many cgroups they cover, to size the policy map by.
    pub fn resolve_now(&mut self) -> usize {
        self.resolve();
        self.resolved.len()
    }

    /// The PvD names the policies prefer (see [`PolicySet::preferred_names`]).
    pub fn preferred_names(&self) -> &std::collections::BTreeSet<String> {
        &self.preferred_names
    }

    /// The on-demand hooks the policies need (see
    /// [`crate::apply::on_demand`]), as of the last resolve.
    pub fn hook_needs(&self) -> HookNeeds {
        self.hook_needs
    }

    /// The on-demand hooks the policy set needs, resolved or not (a
    /// pending policy's terms count: its cgroup may come any moment).
    pub fn needs_of_set(&self) -> HookNeeds {
        HookNeeds::of(self.set.iter().map(|(_, terms)| &**terms))
    }

    /// Cgroups appeared or went away: the next pass resolves every policy.
    pub fn cgroups_changed(&mut self) {
        self.stale = true;
    }

    pub fn resolved(&self) -> &[ResolvedPolicy] {
        &self.resolved
    }

    pub fn pending(&self) -> &[Pending] {
        &self.pending
    }

    pub fn selectors(&self) -> &[SelectorPolicy] {
        &self.selectors
    }

    /// Which resolve [`Self::resolved`] comes from (see `resolution`).
    pub fn resolution(&self) -> u64 {
        self.resolution
    }

    /// The resolved policy of exactly the cgroup `cgroup`, if any.
    pub fn policy_of_cgroup(&self, cgroup: &str) -> Option<&ResolvedPolicy> {
        let at = self
            .by_cgroup
            .binary_search_by(|i| (*self.resolved[*i as usize].cgroup).cmp(cgroup))
            .ok()?;
        self.resolved.get(self.by_cgroup[at] as usize)
    }

    pub fn cgroup2(&self) -> &Cgroup2 {
        &self.cgroup2
    }

    /// The cgroups each policy (literal or pattern) currently applies to,
    /// by the policy's cgroup key: one pass over the resolved policies for
    /// all of them (a pass per policy made `mif policy list` quadratic:
    /// 12 s with 100,000 policies).
    pub fn matches(&self) -> PolicyMatches<'_> {
        let mut by_id: std::collections::HashMap<u32, Vec<&ResolvedPolicy>> =
            std::collections::HashMap::new();
        for r in &self.resolved {
            by_id.entry(r.id).or_default().push(r);
        }
        PolicyMatches { state: self, by_id }
    }

    /// Where new cgroups must be watched for: below the literal prefixes
    /// of the pattern policies, and the cgroups of literal policies
    /// themselves, so that one deleted and made again (a restarted service)
    /// is steered again at once, not at the next periodic check.
    pub fn watch_targets(&self) -> WatchTargets<'_> {
        let mut targets = WatchTargets::default();
        for (cgroup, _) in self.set.iter() {
            if crate::host::cgroup_pattern::is_pattern(cgroup) {
                if let Ok(p) = crate::host::cgroup_pattern::CgroupPattern::parse(cgroup) {
                    // Nothing outside the attach cgroup can be steered.
                    let root = crate::host::cgroup_pattern::search_root(
                        p.literal_prefix(),
                        &self.attach.rel,
                    );
                    targets.roots.extend(root.map(str::to_string));
                }
            } else {
                targets.exact.push(cgroup);
            }
        }
        targets.roots.sort();
        targets.roots.dedup();
        targets.exact.sort_unstable();
        targets.exact.dedup();
        targets
    }
}

/// What the daemon's cgroup watcher watches: subtrees, and single cgroups
/// (the policies' own paths, borrowed: there may be 100,000).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchTargets<'a> {
    pub roots: Vec<String>,
    pub exact: Vec<&'a str>,
}

impl WatchTargets<'_> {
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty() && self.exact.is_empty()
    }
}
