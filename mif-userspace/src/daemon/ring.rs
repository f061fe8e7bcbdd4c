//! A pinned BPF ring buffer the daemon reads as the kernel fills it: the
//! guards' drops (`MIF_GUARD_LOG`) and the TCP health watch's timeouts
//! (`MIF_TCP_TROUBLE`). Waiting costs nothing while nothing is written: the
//! ring's fd wakes the daemon only when the kernel writes to it.
use std::os::fd::{AsFd as _, AsRawFd, RawFd};

use aya::maps::{Map, MapData, RingBuf};
use tokio::io::{unix::AsyncFd, Interest};

use crate::apply::pins::PinDir;

/// The ring, as a file descriptor tokio can wait on.
struct Ring(RingBuf<MapData>);

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub struct PinnedRing(AsyncFd<Ring>);

impl PinnedRing {
    /// Opens the ring `name` pinned by the instance at `pins`.
    pub fn open(pins: &PinDir, name: &str) -> anyhow::Result<Self> {
        let data = MapData::from_pin(pins.map(name))?;
        let ring = RingBuf::try_from(Map::RingBuf(data))?;
        // SAFETY: the ring's fd lives in the `Ring` the AsyncFd owns, so it
        // stays open as long as the registration does.
        let ring = unsafe { AsyncFd::register_with_interest(Ring(ring), Interest::READABLE) }?;
        Ok(Self(ring))
    }

    /// Waits until the kernel has written something; returns every record
    /// there is, each read as a `T` (records shorter than a `T` are
    /// skipped). `T` must be the `#[repr(C)]` type the programs write.
    pub async fn next<T: Copy>(&mut self) -> Vec<T> {
        let mut records = Vec::new();
        let Ok(mut ready) = self.0.readable_mut().await else {
            return records;
        };
        let ring = &mut ready.get_inner_mut().0;
        while let Some(item) = ring.next() {
            if item.len() < std::mem::size_of::<T>() {
                continue;
            }
            // SAFETY: the programs write one T per record (a plain
            // `#[repr(C)]` type of mif-common); the length is checked and
            // the read is unaligned.
            records.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
        }
        ready.clear_ready();
        records
    }
}
