//! The log line an admin sees when a strict application tries to leak: the
//! guards write each drop to a ring buffer (`MIF_GUARD_LOG`), the daemon
//! reads it as it fills and logs, per policy, interface and family, the
//! first drop and then at most one line every [`NOTICE_INTERVAL`] with how
//! many were dropped since. The counters (`guard_drops` in `mif maps` and
//! `mif stats`) stay the exact record; this is the notice. Reading costs
//! nothing while nothing is dropped: the ring's fd wakes the daemon only
//! when the kernel writes to it.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use log::warn;
use mif_common::{names, GuardDrop};

use super::ring::PinnedRing;
use crate::apply::pins::PinDir;

/// At most one line per (policy, interface, family) this often.
pub const NOTICE_INTERVAL: Duration = Duration::from_secs(10);

/// What to log of one (policy, interface, family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Notice {
    last: Instant,
    /// Drops since the last line.
    unreported: u64,
}

pub struct GuardLog {
    ring: PinnedRing,
    notices: Notices,
}

impl GuardLog {
    /// Opens the pinned ring of the instance at `pins`.
    pub fn open(pins: &PinDir) -> anyhow::Result<Self> {
        Ok(Self {
            ring: PinnedRing::open(pins, names::MAP_GUARD_LOG)?,
            notices: Notices::default(),
        })
    }

    /// Waits until the guards have written something; returns the drops
    /// to log now, each with how many drops its line covers.
    pub async fn next(&mut self) -> Vec<(GuardDrop, u64)> {
        let drops: Vec<GuardDrop> = self.ring.next().await;
        let now = Instant::now();
        drops
            .into_iter()
            .filter_map(|drop| Some((drop, self.notices.record(&drop, now)?)))
            .collect()
    }
}

/// Logs the lines [`GuardLog::next`] returned; `cgroup_of` names a policy
/// by (one of) its cgroup(s).
pub fn log(lines: &[(GuardDrop, u64)], cgroup_of: impl Fn(u32) -> Option<String>) {
    for (drop, covered) in lines {
        warn!("{}", describe(drop, *covered, &cgroup_of));
    }
}

/// The rate limit, per (policy, ifindex, family).
#[derive(Debug, Default)]
struct Notices(BTreeMap<(u32, u32, u32), Notice>);

impl Notices {
    /// Records one drop at `now`; returns how many drops a line logged now
    /// covers (this one and the unreported ones before it), or `None` when
    /// it is too soon for another line.
    fn record(&mut self, drop: &GuardDrop, now: Instant) -> Option<u64> {
        let key = (drop.policy, drop.ifindex, drop.family);
        match self.0.get_mut(&key) {
            Some(notice) if now.duration_since(notice.last) < NOTICE_INTERVAL => {
                notice.unreported += 1;
                None
            }
            Some(notice) => {
                let covered = notice.unreported + 1;
                *notice = Notice {
                    last: now,
                    unreported: 0,
                };
                Some(covered)
            }
            None => {
                self.0.insert(
                    key,
                    Notice {
                        last: now,
                        unreported: 0,
                    },
                );
                Some(1)
            }
        }
    }
}

fn describe(drop: &GuardDrop, packets: u64, cgroup_of: &impl Fn(u32) -> Option<String>) -> String {
    let who = match cgroup_of(drop.policy) {
        Some(cgroup) => format!("strict policy {} (cgroup {cgroup})", drop.policy),
        None => format!("strict policy {}", drop.policy),
    };
    let family = match drop.family as i32 {
        libc::AF_INET => "IPv4",
        libc::AF_INET6 => "IPv6",
        libc::AF_PACKET => "packet-socket",
        _ => "other",
    };
    let interface = interface_name(drop.ifindex);
    let what = if packets == 1 {
        format!("1 {family} packet")
    } else {
        format!("{packets} {family} packets since the last notice")
    };
    format!(
        "guard: {who} tried to leave by {interface}, which none of its PvDs uses: {what} dropped"
    )
}

/// `eth0 (ifindex 3)`, or the index alone once the interface is gone.
fn interface_name(ifindex: u32) -> String {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer is IF_NAMESIZE bytes, as if_indextoname wants.
    let found = unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) };
    if found.is_null() {
        return format!("ifindex {ifindex}");
    }
    // SAFETY: on success the kernel's name is NUL-terminated in `name`.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    format!("{} (ifindex {ifindex})", name.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_then_one_per_interval_with_the_count() {
        let mut notices = Notices::default();
        let drop = GuardDrop {
            policy: 1,
            ifindex: 3,
            family: libc::AF_INET as u32,
            _pad: 0,
        };
        let t0 = Instant::now();
        assert_eq!(notices.record(&drop, t0), Some(1));
        for i in 1..=5 {
            assert_eq!(notices.record(&drop, t0 + Duration::from_secs(i)), None);
        }
        // Another family or interface is another notice.
        let v6 = GuardDrop {
            family: libc::AF_INET6 as u32,
            ..drop
        };
        assert_eq!(notices.record(&v6, t0 + Duration::from_secs(1)), Some(1));
        assert_eq!(
            notices.record(&drop, t0 + NOTICE_INTERVAL),
            Some(6),
            "the five held back and this one"
        );
        assert_eq!(notices.record(&drop, t0 + NOTICE_INTERVAL), None);
    }

    #[test]
    fn lines_name_policy_interface_and_family() {
        let drop = GuardDrop {
            policy: 7,
            ifindex: 1,
            family: libc::AF_PACKET as u32,
            _pad: 0,
        };
        let line = describe(&drop, 3, &|_| Some("/apps/vpn".into()));
        assert!(
            line.contains("strict policy 7 (cgroup /apps/vpn)"),
            "{line}"
        );
        assert!(line.contains("(ifindex 1)"), "{line}");
        assert!(line.contains("3 packet-socket packets"), "{line}");
    }
}
