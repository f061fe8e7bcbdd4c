//! How fast mif follows a lost network: the link of wwan0 goes down (an
//! ioctl from this process, so t0 is exact to the microsecond) and we time
//!
//! - until the PvD's IPv4 availability flag is cleared in MIF_PVDS (this
//!   process polls the pinned map), and
//! - until the first new connection of the steered cgroup leaves by wlan0
//!   (`mif-bench watch` connects in a loop in that cgroup and reports the
//!   CLOCK_MONOTONIC time just before socket() of the first connection the
//!   peer of wlan0 answered).
//!
//! Between flaps the uplink is restored as NetworkManager would (link up,
//! IPv6 address, default routes) and we wait until new connections leave
//! by wwan0 again.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use mif_common::PVD_AVAIL_V4;

use super::kmaps::PinnedMaps;
use super::testbed::{Testbed, Variant, NETWORKS};
use super::worker::now_ns;
use crate::lab::{Lab, INTERNET_V4};

/// `socket(domain, ty, proto)` (close-on-exec) created inside the network
/// namespace at `ns_path`, from a thread of its own: only that thread
/// changes namespace, and the socket stays in the namespace it was created
/// in (its ioctls, and a netlink socket's notifications, are that one's).
pub(super) fn socket_in_ns(
    ns_path: &Path,
    domain: libc::c_int,
    ty: libc::c_int,
    proto: libc::c_int,
) -> Result<OwnedFd> {
    let ns = File::open(ns_path).with_context(|| format!("opening {}", ns_path.display()))?;
    std::thread::spawn(move || -> Result<OwnedFd> {
        // SAFETY: plain syscalls on an fd we own.
        unsafe {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error()).context("setns");
            }
            let fd = libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto);
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("socket");
            }
            Ok(OwnedFd::from_raw_fd(fd))
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("setns thread panicked"))?
}

/// Sets interfaces of one network namespace up or down with SIOCSIFFLAGS.
pub struct LinkCtl {
    sock: OwnedFd,
}

impl LinkCtl {
    /// A socket created inside the namespace at `ns_path` (a socket's ioctls
    /// act on the namespace it was created in, whatever ours is).
    pub fn new(ns_path: &Path) -> Result<Self> {
        let sock = socket_in_ns(ns_path, libc::AF_INET, libc::SOCK_DGRAM, 0)?;
        Ok(Self { sock })
    }

    pub fn set_up(&self, name: &str, up: bool) -> Result<()> {
        let cname = CString::new(name)?;
        // SAFETY: ifreq is plain data; the name fits (checked) and the
        // ioctls read and write only the ifreq given.
        unsafe {
            let mut req: libc::ifreq = std::mem::zeroed();
            let bytes = cname.as_bytes_with_nul();
            if bytes.len() > req.ifr_name.len() {
                bail!("interface name {name:?} too long");
            }
            for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
                *dst = *src as libc::c_char;
            }
            if libc::ioctl(self.sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
                return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS");
            }
            let up_flag = libc::IFF_UP as libc::c_short;
            if up {
                req.ifr_ifru.ifru_flags |= up_flag;
            } else {
                req.ifr_ifru.ifru_flags &= !up_flag;
            }
            if libc::ioctl(self.sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
                return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS");
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default, Clone)]
pub struct Reaction {
    /// Link down → availability flag cleared, milliseconds, one per flap.
    pub flag_ms: Vec<f64>,
    /// Link down → the ioctl returned: the kernel's own work, at whose end
    /// it sends the notification mif reacts to.
    pub kernel_ms: Vec<f64>,
    /// The ioctl returned → flag cleared: mif's share of `flag_ms`.
    pub after_kernel_ms: Vec<f64>,
    /// Link down → socket() of the first connection leaving by wlan0.
    pub conn_ms: Vec<f64>,
    /// Connection attempts that failed while wwan0 was down but still chosen.
    pub failed_attempts: u64,
    pub elapsed: Duration,
}

/// Polls until `pred(flags)` holds for PvD `index`; returns the time.
pub(super) fn poll_flags(maps: &PinnedMaps, index: u32, pred: impl Fn(u32) -> bool) -> Result<u64> {
    poll_flags_with(maps, index, pred, || Ok(()))
}

/// [`poll_flags`], calling `tick` before every look at the map (to watch
/// something else at the same pace).
pub(super) fn poll_flags_with(
    maps: &PinnedMaps,
    index: u32,
    pred: impl Fn(u32) -> bool,
    mut tick: impl FnMut() -> Result<()>,
) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // First what else is watched: of two things that happen within one
        // nap, the earlier (here: a notification) is seen no later.
        tick()?;
        if maps.pvd_flags(index).is_some_and(&pred) {
            return Ok(now_ns());
        }
        if Instant::now() > deadline {
            bail!("PvD {index}'s flags never changed as expected");
        }
        // Short naps leave the CPU to the daemon on a small machine.
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// Milliseconds from `t0` to `t` (CLOCK_MONOTONIC nanoseconds).
pub(super) fn ms_between(t0: u64, t: u64) -> f64 {
    t.saturating_sub(t0) as f64 / 1e6
}

/// What the watcher found.
pub(super) struct Hit {
    /// CLOCK_MONOTONIC ns just before socket() of the connection (or the
    /// refused socket) it was looking for.
    pub at: u64,
    /// Sockets it created since it was armed that failed (in `refused`
    /// mode: otherwise than with EPERM).
    pub failed: u64,
}

/// `mif-bench watch` in a cgroup, driven through its stdin.
pub(super) struct Watcher {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watcher {
    /// Starts the watcher in `cgroup` of the lab's host namespace, watching
    /// connections to the lab's "internet" address.
    pub(super) fn start(lab: &Lab, cgroup: &Path, exe: &Path, cpu: Option<usize>) -> Result<Self> {
        let mut args = vec!["watch".to_string(), "--to".into(), INTERNET_V4.to_string()];
        if let Some(cpu) = cpu {
            args.extend(["--cpu".into(), cpu.to_string()]);
        }
        let mut cmd = lab.command_in(Some(cgroup), exe, &args)?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        // Not through Lab::spawn: we need its stdin. The lab still kills it
        // with its cgroup.
        let mut child = cmd.spawn().context("starting the watcher")?;
        let stdin = child.stdin.take().context("watcher stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("watcher stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the watcher exited");
        }
        Ok(line.trim().to_owned())
    }

    fn command(&mut self, command: &str) -> Result<()> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        match self.line()?.as_str() {
            "armed" => Ok(()),
            other => bail!("watcher said {other:?}"),
        }
    }

    /// `go NAME`: returns once the watcher is looping, connecting until a
    /// connection leaves by NAME.
    pub(super) fn arm(&mut self, network: &str) -> Result<()> {
        self.command(&format!("go {network}"))
    }

    /// `refused`: returns once the watcher is looping, creating sockets
    /// until socket() fails with EPERM.
    pub(super) fn arm_refusal(&mut self) -> Result<()> {
        self.command("refused")
    }

    /// The `hit T N F` line.
    pub(super) fn hit(&mut self) -> Result<Hit> {
        let line = self.line()?;
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["hit", t, _n, f] => Ok(Hit {
                at: t.parse()?,
                failed: f.parse()?,
            }),
            _ => bail!("watcher: {line}"),
        }
    }
}

pub fn run(tb: &mut Testbed<'_>, flaps: usize, exe: &Path, cpu: Option<usize>) -> Result<Reaction> {
    let started = Instant::now();
    tb.enter(Variant::Mif(0))?;
    let lab: &Lab = tb.lab;
    let link = LinkCtl::new(&lab.host_ns_path())?;
    let mut watcher = Watcher::start(lab, tb.worker_cgroup(Variant::Mif(0)), exe, cpu)?;
    let (_, maps) = tb.daemon().context("no daemon")?;
    let wwan = maps.pvd_index(NETWORKS[1]).context("no PvD wwan0")?;
    let mut out = Reaction::default();

    watcher.arm(NETWORKS[1])?;
    watcher.hit()?;
    for flap in 0..flaps {
        super::check_interrupted()?;
        watcher.arm(NETWORKS[0])?;
        // Let the loop get going (connections leaving by wwan0 meanwhile).
        std::thread::sleep(Duration::from_millis(2));
        let t0 = now_ns();
        link.set_up(NETWORKS[1], false)?;
        // The kernel announces the link down at the end of the ioctl,
        // after flushing the link's routes and addresses: up to here is the
        // kernel's own time, the rest is mif's.
        let t_announced = now_ns();
        let t1 = poll_flags(maps, wwan, |f| f & PVD_AVAIL_V4 == 0)
            .with_context(|| format!("flap {flap}: availability never cleared"))?;
        let hit = watcher
            .hit()
            .with_context(|| format!("flap {flap}: no connection left by wlan0"))?;
        out.flag_ms.push(ms_between(t0, t1));
        out.kernel_ms.push(ms_between(t0, t_announced));
        out.after_kernel_ms.push(ms_between(t_announced, t1));
        out.conn_ms.push(ms_between(t0, hit.at));
        out.failed_attempts += hit.failed;

        lab.restore_uplink(1)?;
        poll_flags(maps, wwan, |f| f & PVD_AVAIL_V4 != 0)
            .with_context(|| format!("flap {flap}: wwan0 never came back"))?;
        watcher.arm(NETWORKS[1])?;
        watcher
            .hit()
            .with_context(|| format!("flap {flap}: connections did not return to wwan0"))?;
    }
    drop(watcher);
    out.elapsed = started.elapsed();
    Ok(out)
}
