//! Who is asking on the control socket: the peer's pid, and a pidfd that
//! tells whether that process is still the one with that pid.
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// The asking process, as the control socket's peer credentials name it.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub pid: Option<i32>,
    /// A pidfd of the process that connected (`SO_PEERPIDFD`, Linux 6.5).
    pub pidfd: Option<std::sync::Arc<OwnedFd>>,
}

impl Peer {
    /// Whether the process that connected is still the one with its pid.
    /// A pid is reused once its process is gone: a socket handed to
    /// another process, its first owner gone, must not let that one act
    /// for whichever process gets the pid next. With a pidfd the kernel
    /// says so; without one (before Linux 6.5) the pid is trusted.
    pub fn still_there(&self) -> bool {
        let Some(pidfd) = &self.pidfd else {
            return true;
        };
        // SAFETY: signal 0 on a live pidfd only checks the process.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        // EPERM: alive, only not ours to signal (we are root: rare).
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// A pidfd of the process that connected to `stream` (`SO_PEERPIDFD`,
/// Linux 6.5), so that what is done for "the caller" is never done for a
/// process that got its pid after it exited; `None` on older kernels.
pub fn peer_pidfd(stream: &impl std::os::fd::AsRawFd) -> Option<OwnedFd> {
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: fd and len are live and len is fd's size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&raw mut fd).cast(),
            &mut len,
        )
    };
    // SAFETY: on success the kernel gave us a new fd nobody else owns.
    (rc == 0 && fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}
