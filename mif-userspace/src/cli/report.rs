//! What the kernel holds, in a form for people (tables) and scripts (JSON).
use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
};

use mif_common::{names, Counters, Settings, NO_PVD, PVD_AVAIL_V4, PVD_AVAIL_V6};
use serde::Serialize;

use crate::{
    apply::guard_links,
    apply::kernel_maps::KernelMaps,
    host::attached,
    host::cgroup::Cgroup2,
    plan::{ipv4_from_word, ipv6_from_words, pvd_name},
};

#[derive(Debug, Serialize)]
pub struct MapsReport {
    pub instance: Option<InstanceReport>,
    pub pvds: Vec<PvdReport>,
    pub policies: Vec<PolicyReport>,
    pub counters: Vec<CounterReport>,
}

#[derive(Debug, Serialize)]
pub struct InstanceReport {
    pub mark_mask: String,
    pub netns_cookie: u64,
    /// The cgroup the programs should be attached to; None if it is gone.
    pub attach_cgroup: Option<String>,
    pub attach_cgroup_id: u64,
    /// mif's hooks actually attached there, by name (each should be 1).
    pub attached: BTreeMap<String, usize>,
    /// Cgroups of strict policies with the egress guard's links pinned
    /// (attached there, not to the attach cgroup).
    pub guarded_cgroups: usize,
    /// Interfaces with the packet guard's links pinned.
    pub guarded_interfaces: usize,
}

impl InstanceReport {
    /// The instance `settings` describe, with the path of its attach cgroup
    /// (None: gone) and what is attached there.
    fn of(
        maps: &KernelMaps,
        settings: &Settings,
        cgroup2: Option<&Cgroup2>,
        attach_cgroup: Option<String>,
    ) -> Self {
        let attached = match (cgroup2, &attach_cgroup) {
            (Some(c), Some(rel)) => {
                attached::mif_programs_at(&c.mount().join(rel.trim_start_matches('/')))
                    .unwrap_or_default()
            }
            _ => BTreeMap::new(),
        };
        InstanceReport {
            mark_mask: format!("{:#x}", settings.mark_mask),
            netns_cookie: settings.netns_cookie,
            attach_cgroup,
            attach_cgroup_id: settings.attach_cgroup_id,
            attached,
            guarded_cgroups: guard_links::pinned_links(maps.pins(), names::PROG_GUARD),
            guarded_interfaces: guard_links::pinned_links(maps.pins(), names::PROG_PKT_GUARD),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PvdReport {
    pub index: u32,
    pub name: String,
    pub mark: String,
    pub table: Option<u32>,
    pub ifindex: u32,
    pub available_v4: bool,
    pub available_v6: bool,
    pub addr4: Option<IpAddr>,
    pub addr6: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

#[derive(Debug, Serialize)]
pub struct PolicyReport {
    pub id: u32,
    pub cgroup_id: u64,
    /// None when no cgroup with that id exists any more.
    pub cgroup: Option<String>,
    pub prefer: Vec<String>,
    pub strict: bool,
    pub bind: &'static str,
    /// `pvd` when DNS queries go to the PvD's resolvers, else `system`.
    pub dns: &'static str,
}

#[derive(Debug, Serialize)]
pub struct CounterReport {
    pub policy: u32,
    /// None for events that belong to no PvD (refusals, pass-throughs).
    pub pvd: Option<String>,
    /// What the kernel counted (see [`Counters`] for each field); flat in
    /// the JSON, beside `policy` and `pvd`.
    #[serde(flatten)]
    pub counts: Counters,
}

impl MapsReport {
    pub fn read(maps: &KernelMaps) -> Self {
        let settings = maps.settings();
        let pvds: Vec<PvdReport> = maps
            .pvds()
            .into_iter()
            .map(|(index, pvd, meta)| PvdReport {
                index,
                name: meta.map_or_else(|| format!("#{index}"), |m| pvd_name(&m)),
                mark: format!("{:#x}", pvd.mark),
                table: meta.map(|m| m.table),
                ifindex: pvd.ifindex,
                available_v4: pvd.flags & PVD_AVAIL_V4 != 0,
                available_v6: pvd.flags & PVD_AVAIL_V6 != 0,
                addr4: (pvd.addr4 != 0).then(|| IpAddr::V4(ipv4_from_word(pvd.addr4))),
                addr6: (pvd.addr6 != [0; 4]).then(|| IpAddr::V6(ipv6_from_words(pvd.addr6))),
                dns: meta.map(|m| dns_of(&m)).unwrap_or_default(),
            })
            .collect();
        let pvd_name = |index: u32| {
            pvds.iter()
                .find(|p| p.index == index)
                .map_or_else(|| format!("#{index}"), |p| p.name.clone())
        };

        let raw_policies = maps.policies();
        let mut ids: HashSet<u64> = raw_policies.iter().map(|(id, _)| *id).collect();
        ids.extend(settings.map(|s| s.attach_cgroup_id));
        let cgroup2 = Cgroup2::find().ok();
        let paths = cgroup2
            .as_ref()
            .map(|c| c.paths_of("/", &ids))
            .unwrap_or_default();
        let policies = raw_policies
            .into_iter()
            .map(|(cgroup_id, p)| PolicyReport {
                id: p.id,
                cgroup_id,
                cgroup: paths.get(&cgroup_id).cloned(),
                prefer: p
                    .prefer
                    .iter()
                    .take_while(|&&i| i != NO_PVD)
                    .map(|&i| pvd_name(u32::from(i)))
                    .collect(),
                strict: p.is_strict(),
                bind: if p.binds_device() { "device" } else { "mark" },
                dns: if p.dns_pvd() { "pvd" } else { "system" },
            })
            .collect();

        let mut counters: Vec<CounterReport> = maps
            .counters()
            .into_iter()
            .map(|(key, c)| {
                counter_report(
                    key.policy,
                    (key.pvd != mif_common::COUNTER_NO_PVD).then(|| pvd_name(key.pvd)),
                    &c,
                )
            })
            .collect();
        counters.sort_by(|a, b| (a.policy, &a.pvd).cmp(&(b.policy, &b.pvd)));

        Self {
            instance: settings.map(|s| {
                let attach_cgroup = paths.get(&s.attach_cgroup_id).cloned();
                InstanceReport::of(maps, &s, cgroup2.as_ref(), attach_cgroup)
            }),
            pvds,
            policies,
            counters,
        }
    }

    /// The instance part of [`Self::read`] alone, for `mif status`: what
    /// it needs without naming every policy's cgroup, which takes a walk of
    /// the cgroup tree on a host with many policies.
    pub fn instance(maps: &KernelMaps) -> Option<InstanceReport> {
        let settings = maps.settings()?;
        let cgroup2 = Cgroup2::find().ok();
        let attach_cgroup = cgroup2.as_ref().and_then(|c| {
            c.paths_of("/", &HashSet::from([settings.attach_cgroup_id]))
                .remove(&settings.attach_cgroup_id)
        });
        Some(InstanceReport::of(
            maps,
            &settings,
            cgroup2.as_ref(),
            attach_cgroup,
        ))
    }

    /// Text tables for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(i) = &self.instance {
            let attached: Vec<String> =
                i.attached.iter().map(|(p, n)| format!("{p}={n}")).collect();
            let attached = if attached.is_empty() {
                "nothing".to_string()
            } else {
                attached.join(" ")
            };
            let cgroup = i.attach_cgroup.as_deref().unwrap_or("(cgroup gone)");
            out += &format!(
                "Programs attached to {cgroup} (id {}): {attached}\n\
                 Strict policies' guards attached to {} cgroups and {} interfaces\n\n",
                i.attach_cgroup_id, i.guarded_cgroups, i.guarded_interfaces
            );
        }
        out += "PvDs\n";
        out += &self.render_pvds();
        out += "\nPolicies\n";
        out += &self.render_policies();
        out += "\nCounters\n";
        out += &self.render_counters();
        out
    }

    pub fn render_pvds(&self) -> String {
        let mut rows = vec![vec![
            "INDEX", "NAME", "MARK", "TABLE", "IFINDEX", "IPV4", "IPV6", "DNS",
        ]
        .into_iter()
        .map(String::from)
        .collect()];
        for p in &self.pvds {
            rows.push(vec![
                p.index.to_string(),
                p.name.clone(),
                p.mark.clone(),
                p.table.map_or("-".into(), |t| t.to_string()),
                p.ifindex.to_string(),
                family(p.available_v4, p.addr4),
                family(p.available_v6, p.addr6),
                if p.dns.is_empty() {
                    "-".into()
                } else {
                    p.dns
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                },
            ]);
        }
        table(&rows)
    }

    pub fn render_policies(&self) -> String {
        let mut rows = vec![vec![
            "ID",
            "CGROUP",
            "CGROUP ID",
            "PREFER",
            "STRICT",
            "BIND",
            "DNS",
        ]
        .into_iter()
        .map(String::from)
        .collect()];
        for p in &self.policies {
            rows.push(vec![
                p.id.to_string(),
                p.cgroup.clone().unwrap_or_else(|| "(gone)".into()),
                p.cgroup_id.to_string(),
                p.prefer.join(","),
                if p.strict { "yes" } else { "no" }.into(),
                p.bind.into(),
                p.dns.into(),
            ]);
        }
        table(&rows)
    }

    pub fn render_counters(&self) -> String {
        let mut rows = vec![vec![
            "POLICY",
            "PVD",
            "STEERED",
            "FALLBACK",
            "REFUSED",
            "UNSTEERED",
            "BOUND",
            "SRC SET",
            "DENIED",
            "DNS",
            "EXCLUDED",
            "GUARD DROPS",
            "CHOSEN",
        ]
        .into_iter()
        .map(String::from)
        .collect()];
        for c in &self.counters {
            rows.push(vec![
                c.policy.to_string(),
                c.pvd.clone().unwrap_or_else(|| "-".into()),
                c.counts.steered.to_string(),
                c.counts.fallback.to_string(),
                c.counts.refused.to_string(),
                c.counts.unsteered.to_string(),
                c.counts.bound.to_string(),
                c.counts.src_set.to_string(),
                c.counts.denied.to_string(),
                c.counts.dns.to_string(),
                c.counts.excluded.to_string(),
                c.counts.guard_drops.to_string(),
                c.counts.chosen.to_string(),
            ]);
        }
        table(&rows)
    }
}

fn counter_report(policy: u32, pvd: Option<String>, c: &Counters) -> CounterReport {
    CounterReport {
        policy,
        pvd,
        counts: *c,
    }
}

fn family(available: bool, addr: Option<IpAddr>) -> String {
    match (available, addr) {
        (true, Some(a)) => a.to_string(),
        (false, Some(a)) => format!("{a} (unavailable)"),
        _ => "-".into(),
    }
}

fn dns_of(meta: &mif_common::PvdMeta) -> Vec<IpAddr> {
    meta.dns
        .iter()
        .take(meta.dns_count as usize)
        .map(|octets| {
            let v6 = std::net::Ipv6Addr::from(*octets);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        })
        .collect()
}

/// Left-aligned columns separated by two spaces.
pub fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            format!("{}\n", line.join("  ").trim_end())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["A".to_string(), "BB".into()],
            vec!["long".into(), "x".into()],
        ];
        assert_eq!(table(&rows), "A     BB\nlong  x\n");
    }
}
