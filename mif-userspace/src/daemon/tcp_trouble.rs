//! TCP retransmission timeouts of connections on PvDs, as the kernel's
//! `mif_tcp_health` program reports them (see mif-ebpf's `tcp_health`): a
//! PvD whose connections stop being answered is likely a network that
//! stopped working, noticed from applications' own traffic between two
//! validation probes.
//!
//! The program writes one [`TcpTrouble`] record per timeout to a pinned
//! ring (`MIF_TCP_TROUBLE`); [`TcpTroubleRing`] waits on the ring's fd (no
//! cost while nothing times out) and hands the records over. [`TcpHealth`]
//! is what the daemon keeps of them: a count per PvD (`tcp_timeouts` in
//! `mif pvd list`) and a debug line per PvD, rate-limited.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use mif_common::{names, TcpTrouble, TCP_ESTABLISHED, TCP_SYN_SENT, TCP_TROUBLE_EXPIRED};

use super::ring::PinnedRing;
use crate::apply::pins::PinDir;

/// At most one debug line per PvD this often.
pub const NOTICE_INTERVAL: Duration = Duration::from_secs(10);

/// What one wake-up of the ring brought.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<TcpTrouble>,
    /// Records the kernel could not write since the last batch (the ring
    /// was full).
    pub lost: u64,
}

/// The pinned ring of the instance, and its count of lost records.
pub struct TcpTroubleRing {
    ring: PinnedRing,
    lost: Option<Array<MapData, u64>>,
    lost_seen: u64,
}

impl TcpTroubleRing {
    /// Opens the pinned ring (and lost count) of the instance at `pins`.
    pub fn open(pins: &PinDir) -> anyhow::Result<Self> {
        let ring = PinnedRing::open(pins, names::MAP_TCP_TROUBLE)?;
        // Without the count the records still arrive; only losses go
        // unnoticed.
        let lost = MapData::from_pin(pins.map(names::MAP_TCP_LOST))
            .ok()
            .and_then(|data| Array::try_from(Map::Array(data)).ok());
        // Losses from before this daemon are not this daemon's to report.
        let lost_seen = lost.as_ref().and_then(|a| a.get(&0, 0).ok()).unwrap_or(0);
        Ok(Self {
            ring,
            lost,
            lost_seen,
        })
    }

    /// Waits until the kernel has written something; returns every record
    /// there is.
    pub async fn next(&mut self) -> Batch {
        let mut batch = Batch {
            records: self.ring.next().await,
            lost: 0,
        };
        if let Some(total) = self.lost.as_ref().and_then(|a| a.get(&0, 0).ok()) {
            batch.lost = total.saturating_sub(self.lost_seen);
            self.lost_seen = total;
        }
        batch
    }
}

/// What the daemon keeps of the timeouts, by PvD name (a name keeps its
/// meaning across index changes; the record's mark is mapped to a name
/// when it arrives).
#[derive(Debug, Default)]
pub struct TcpHealth {
    by_pvd: BTreeMap<String, PvdTcp>,
    /// Timeouts of sockets whose mark is no current PvD's (a PvD of an
    /// earlier daemon, or a mark changed under the program's feet).
    no_pvd: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct PvdTcp {
    /// Every timeout since the daemon started.
    timeouts: u64,
    /// When the last debug line was written.
    last_line: Option<Instant>,
    /// Timeouts since then, and how many of them were SYN timeouts.
    unreported: u64,
    unreported_syn: u64,
}

impl TcpHealth {
    /// Counts one timeout of a connection on `pvd` (`syn_sent`: a connect
    /// whose SYN went unanswered) at `now`; returns the debug line to
    /// write, unless one was written for this PvD less than
    /// [`NOTICE_INTERVAL`] ago.
    pub fn record(&mut self, pvd: &str, record: &TcpTrouble, now: Instant) -> Option<String> {
        let entry = self.by_pvd.entry(pvd.to_owned()).or_default();
        entry.timeouts += 1;
        entry.unreported += 1;
        entry.unreported_syn += u64::from(record.state == TCP_SYN_SENT);
        if entry
            .last_line
            .is_some_and(|last| now.duration_since(last) < NOTICE_INTERVAL)
        {
            return None;
        }
        let line = if entry.unreported == 1 {
            format!(
                "tcp: retransmission timeout on PvD {pvd} ({}{})",
                state_name(record.state),
                if record.flags & TCP_TROUBLE_EXPIRED != 0 {
                    ", connection given up"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "tcp: {} retransmission timeouts on PvD {pvd} since the last notice ({} SYN_SENT)",
                entry.unreported, entry.unreported_syn
            )
        };
        entry.last_line = Some(now);
        entry.unreported = 0;
        entry.unreported_syn = 0;
        Some(line)
    }

    /// Counts a timeout that belongs to no PvD.
    pub fn record_no_pvd(&mut self) {
        self.no_pvd += 1;
    }

    /// Timeouts since the daemon started that belonged to no PvD.
    pub fn no_pvd(&self) -> u64 {
        self.no_pvd
    }

    /// Timeouts of connections on `pvd` since the daemon started.
    pub fn timeouts(&self, pvd: &str) -> u64 {
        self.by_pvd.get(pvd).map_or(0, |p| p.timeouts)
    }
}

/// The TCP state as `ss` names it.
fn state_name(state: u32) -> &'static str {
    match state {
        TCP_ESTABLISHED => "ESTABLISHED",
        TCP_SYN_SENT => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        11 => "CLOSING",
        _ => "other state",
    }
}

/// The name of the PvD whose mark `mark` carries (within `mark_mask`),
/// among `pvds`.
pub fn pvd_of_mark(
    pvds: &[crate::model::pvd::PvdState],
    mark: u32,
    mark_mask: u32,
) -> Option<&str> {
    pvds.iter()
        .find(|p| p.mark == mark & mark_mask)
        .map(|p| p.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: u32) -> TcpTrouble {
        TcpTrouble {
            mark: 0x20000,
            state,
            retransmits: 0,
            flags: 0,
        }
    }

    #[test]
    fn every_timeout_counts_and_lines_are_rate_limited_per_pvd() {
        let mut health = TcpHealth::default();
        let t0 = Instant::now();
        let line = health.record("wwan0", &record(TCP_SYN_SENT), t0).unwrap();
        assert_eq!(line, "tcp: retransmission timeout on PvD wwan0 (SYN_SENT)");
        assert_eq!(
            health.record("wwan0", &record(TCP_SYN_SENT), t0 + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            health.record(
                "wwan0",
                &record(TCP_ESTABLISHED),
                t0 + Duration::from_secs(2)
            ),
            None
        );
        // Another PvD has a limit of its own.
        let other = TcpTrouble {
            flags: TCP_TROUBLE_EXPIRED,
            ..record(TCP_ESTABLISHED)
        };
        assert_eq!(
            health.record("wlan0", &other, t0 + Duration::from_secs(2)),
            Some(
                "tcp: retransmission timeout on PvD wlan0 (ESTABLISHED, connection given up)"
                    .into()
            )
        );
        let line = health
            .record("wwan0", &record(TCP_SYN_SENT), t0 + NOTICE_INTERVAL)
            .unwrap();
        assert_eq!(
            line,
            "tcp: 3 retransmission timeouts on PvD wwan0 since the last notice (2 SYN_SENT)"
        );
        assert_eq!(health.timeouts("wwan0"), 4);
        assert_eq!(health.timeouts("wlan0"), 1);
        assert_eq!(health.timeouts("eth0"), 0);
    }
}
