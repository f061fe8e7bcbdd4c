//! How fast a strict VPN app is cut off when the tunnel goes down as it
//! does in real life, by the VPN client dying: a real OpenVPN full tunnel
//! ([`Lab::start_vpn`], `redirect-gateway def1`), a PvD `vpn` on `tun0` and
//! a strict policy `prefer = ["vpn"]` for a cgroup of its own. The client
//! is killed with SIGKILL (so it removes nothing itself; `tun0` goes when
//! the kernel closes its fd on the exit path: RTM_NEWLINK without IFF_UP,
//! then RTM_DELLINK) and t0 is taken just before kill(2). We time, as
//! [`super::reaction`] does for a lost link,
//!
//! - until the first link notification saying `tun0` is down reaches a
//!   listener in the host namespace (the client's death and the kernel's
//!   teardown of `tun0`: what mif reacts to),
//! - until the vpn PvD's IPv4 availability flag is cleared in MIF_PVDS
//!   (polled in the pinned map; the notifications are read in the same
//!   loop, so both are exact to its 20 µs naps, taken with a timer slack
//!   of 1 ns), and
//! - until the first new socket of the strict cgroup is refused
//!   (`mif-bench watch` in `refused` mode creates a TCP socket every 50 µs
//!   and reports the time just before the first socket() that failed with
//!   EPERM).
//!
//! Between rounds the client is restarted ([`Vpn::restart_client`]: `tun0`
//! comes back with a new ifindex) and we wait until a connection of the
//! strict app goes through the tunnel again, timing that from the moment
//! the lab saw the tunnel carry its own probe.

use std::mem::size_of;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use mif_common::PVD_AVAIL_V4;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{link::LinkFlags, RouteNetlinkMessage};

use super::daemon::BenchDaemon;
use super::kmaps::PinnedMaps;
use super::reaction::{ms_between, poll_flags, poll_flags_with, socket_in_ns, Hit, Watcher};
use super::worker::now_ns;
use crate::lab::{Lab, Vpn, VpnShape, VPN_DEV, VPN_NETWORK_NAME, VPN_SERVER_V4};

/// The PvD of the tunnel, as the daemon's config declares it.
pub const VPN_PVD: &str = "vpn";
const DAEMON_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Clone)]
pub struct VpnReaction {
    /// SIGKILL → the first link notification of `tun0` down read by a
    /// listener in the host namespace, milliseconds, one per round.
    pub notified_ms: Vec<f64>,
    /// SIGKILL → the vpn PvD's IPv4 availability flag cleared.
    pub flag_ms: Vec<f64>,
    /// That notification → flag cleared: mif's share of `flag_ms`.
    pub after_notified_ms: Vec<f64>,
    /// SIGKILL → socket() of the strict app's first refused socket.
    pub refused_ms: Vec<f64>,
    /// The restarted tunnel carried the lab's probe → socket() of the
    /// strict app's first connection through it.
    pub back_ms: Vec<f64>,
    /// Rounds in which none of the strict app's sockets was refused (or
    /// failed) before that connection: mif had the PvD back before the
    /// lab's probes were answered.
    pub back_clean: usize,
    /// The strict app's sockets that failed with anything but EPERM while
    /// the tunnel went down (expected: none).
    pub other_failures: u64,
    /// How the client was stopped.
    pub signal: &'static str,
    pub elapsed: Duration,
}

/// The daemon's config: the declared PvD of the tunnel and the strict
/// policy of `cgroup`.
fn config(cgroup: &str) -> String {
    format!(
        "[[pvd]]\nname = {VPN_PVD:?}\ninterface = {VPN_DEV:?}\n\n\
         [[policy]]\ncgroup = {cgroup:?}\nprefer = [{VPN_PVD:?}]\nstrict = true\n"
    )
}

/// Link notifications of one network namespace (RTMGRP_LINK), read
/// without blocking.
struct LinkNotifications {
    sock: OwnedFd,
    buf: Vec<u8>,
}

impl LinkNotifications {
    fn new(ns_path: &Path) -> Result<Self> {
        let sock = socket_in_ns(
            ns_path,
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK,
            libc::NETLINK_ROUTE,
        )?;
        // SAFETY: sockaddr_nl is plain data.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        sa.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: a valid sockaddr_nl of the length given.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("binding to RTMGRP_LINK");
        }
        Ok(Self {
            sock,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Reads everything queued; whether any of it said that link `ifindex`
    /// is down, by the rule of mif's link watcher: RTM_DELLINK, or
    /// RTM_NEWLINK without IFF_UP or without carrier.
    fn saw_down(&mut self, ifindex: u32) -> Result<bool> {
        let mut down = false;
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(down),
                    // Lost notifications (while nobody read, between
                    // rounds) or a signal: read on.
                    Some(libc::ENOBUFS | libc::EINTR) => continue,
                    _ => {
                        return Err(std::io::Error::last_os_error())
                            .context("reading link notifications")
                    }
                }
            }
            down |= datagram_says_down(&self.buf[..n as usize], ifindex);
        }
    }
}

/// Whether one netlink datagram holds a link message saying `ifindex` is
/// down. Messages are parsed by netlink-packet-route (the crate mif's
/// rtnetlink stack uses), one after the other as the kernel packs them.
fn datagram_says_down(datagram: &[u8], ifindex: u32) -> bool {
    let mut down = false;
    let mut at = 0;
    while at < datagram.len() {
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[at..]) else {
            break;
        };
        let len = msg.header.length as usize;
        if len == 0 {
            break;
        }
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link))
                if link.header.index == ifindex =>
            {
                down = true
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link))
                if link.header.index == ifindex =>
            {
                let flags = link.header.flags;
                let up = flags.contains(LinkFlags::Up)
                    && flags.intersects(LinkFlags::LowerUp | LinkFlags::Running);
                down |= !up;
            }
            _ => {}
        }
        at += len.next_multiple_of(4);
    }
    down
}

/// The calling thread's timer slack at 1 ns while this lives, so that
/// [`poll_flags_with`]'s 20 µs naps are 20 µs and not the default slack's
/// 50 µs more: the notification and the flag are then seen to within
/// about 25 µs.
struct FineNaps {
    before: libc::c_int,
}

impl FineNaps {
    fn new() -> Self {
        // SAFETY: prctl with integer arguments only, on the calling thread.
        let before = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK) };
        // SAFETY: as above.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        Self { before }
    }
}

impl Drop for FineNaps {
    fn drop(&mut self) {
        if self.before > 0 {
            // SAFETY: as above.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, self.before as libc::c_ulong) };
        }
    }
}

/// SIGKILL to `pid`.
fn kill_hard(pid: u32) -> Result<()> {
    let pid = libc::pid_t::try_from(pid)?;
    // SAFETY: plain syscall. The pid is the lab's running child, not yet
    // reaped (so not reused).
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error()).context("kill -KILL the VPN client");
    }
    Ok(())
}

/// Waits until a connection of the watcher's cgroup goes through the
/// tunnel.
fn steered_again(watcher: &mut Watcher) -> Result<Hit> {
    watcher.arm(VPN_NETWORK_NAME)?;
    watcher.hit()
}

pub fn run(lab: &Lab, rounds: usize, exe: &Path, cpu: Option<usize>) -> Result<VpnReaction> {
    let started = Instant::now();
    let cgroup = lab.create_cgroup("vpn-strict")?;
    let rel = format!("{}/vpn-strict", lab.cgroup_rel());
    let vpn: Vpn<'_> = lab
        .start_vpn(VpnShape::FullTunnel)
        .context("starting the VPN")?;
    let daemon = BenchDaemon::start(lab, &config(&rel), DAEMON_TIMEOUT)?;
    let maps = PinnedMaps::open(&daemon.instance.pin_dir)?;
    let index = maps
        .pvd_index(VPN_PVD)
        .with_context(|| format!("no PvD {VPN_PVD} in the maps"))?;
    let mut links = LinkNotifications::new(&lab.host_ns_path())?;
    let mut watcher = Watcher::start(lab, &cgroup, exe, cpu)?;
    let mut out = VpnReaction {
        signal: "SIGKILL",
        ..VpnReaction::default()
    };

    steered_again(&mut watcher).context("the strict app never went through the tunnel")?;
    let naps = FineNaps::new();
    for round in 0..rounds {
        super::check_interrupted()?;
        let ifindex = lab.host_ifindex(VPN_DEV)?;
        let pid = vpn.client_pid().context("no VPN client")?;
        if maps.pvd_flags(index).is_none_or(|f| f & PVD_AVAIL_V4 == 0) {
            bail!("round {round}: the vpn PvD is not available before the kill");
        }
        watcher.arm_refusal()?;
        // Let the loop get going (sockets through the tunnel meanwhile).
        std::thread::sleep(Duration::from_millis(2));
        links.saw_down(ifindex)?;
        let mut notified = None;
        let t0 = now_ns();
        kill_hard(pid)?;
        let t1 = poll_flags_with(
            &maps,
            index,
            |f| f & PVD_AVAIL_V4 == 0,
            || {
                if notified.is_none() && links.saw_down(ifindex)? {
                    notified = Some(now_ns());
                }
                Ok(())
            },
        )
        .with_context(|| format!("round {round}: availability never cleared"))?;
        let refused = watcher
            .hit()
            .with_context(|| format!("round {round}: no socket of the strict app refused"))?;
        match notified {
            Some(t) => {
                out.notified_ms.push(ms_between(t0, t));
                out.after_notified_ms.push(ms_between(t, t1));
            }
            None => {
                // Not read by the time the flag was cleared: left out of
                // those two rows (and worth a look).
                eprintln!("mif-bench: round {round}: the flag was cleared before tun0's down notification arrived");
                out.notified_ms.push(f64::NAN);
                out.after_notified_ms.push(f64::NAN);
            }
        }
        out.flag_ms.push(ms_between(t0, t1));
        out.refused_ms.push(ms_between(t0, refused.at));
        out.other_failures += refused.failed;

        // The killed client left its host route to the server behind (no
        // cleanup of its own); the next one adds it anew.
        let _ = lab.ip_host(&["-4", "route", "del", &format!("{VPN_SERVER_V4}/32")]);
        vpn.restart_client()
            .with_context(|| format!("round {round}: restarting the VPN client"))?;
        let t_ready = now_ns();
        let back = steered_again(&mut watcher).with_context(|| {
            format!("round {round}: the strict app never returned to the tunnel")
        })?;
        out.back_ms.push(ms_between(t_ready, back.at));
        out.back_clean += usize::from(back.failed == 0);
        poll_flags(&maps, index, |f| f & PVD_AVAIL_V4 != 0)
            .with_context(|| format!("round {round}: the vpn PvD never came back"))?;
    }
    drop(naps);
    drop(watcher);
    drop(maps);
    daemon.stop()?;
    drop(vpn);
    out.elapsed = started.elapsed();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `struct nlmsghdr` and `struct ifinfomsg`, as the kernel sends them.
    const NLMSG_HEADER: usize = 16;
    const IFINFOMSG: usize = 16;

    /// One link message: nlmsghdr and ifinfomsg, no attributes.
    fn link_message(kind: u16, ifindex: u32, flags: u32) -> Vec<u8> {
        let len = (NLMSG_HEADER + IFINFOMSG) as u32;
        let mut m = Vec::new();
        m.extend(len.to_ne_bytes());
        m.extend(kind.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend([0u8; 4]);
        m.extend(ifindex.to_ne_bytes());
        m.extend(flags.to_ne_bytes());
        m.extend([0u8; 4]);
        m
    }

    #[test]
    fn down_is_a_close_or_a_deletion_of_that_link() {
        let up = (libc::IFF_UP | libc::IFF_RUNNING | libc::IFF_LOWER_UP) as u32;
        let closed = libc::IFF_POINTOPOINT as u32;
        assert!(!datagram_says_down(
            &link_message(libc::RTM_NEWLINK, 7, up),
            7
        ));
        assert!(datagram_says_down(
            &link_message(libc::RTM_NEWLINK, 7, closed),
            7
        ));
        assert!(datagram_says_down(
            &link_message(libc::RTM_DELLINK, 7, up),
            7
        ));
        assert!(!datagram_says_down(
            &link_message(libc::RTM_DELLINK, 8, up),
            7
        ));
        // Several messages in one datagram; a truncated one ends it.
        let mut both = link_message(libc::RTM_NEWLINK, 8, closed);
        both.extend(link_message(libc::RTM_NEWLINK, 7, closed));
        assert!(datagram_says_down(&both, 7));
        assert!(!datagram_says_down(&both[..40], 7));
    }
}
