//! Noticing changes to the policies directory, so a file added, changed or
//! removed there is applied without a SIGHUP. One inotify watch on the
//! directory itself: a file written in place (`IN_CLOSE_WRITE`), made,
//! removed or renamed into or out of it (editors and `mv` replace files
//! that way), and the symlink swap of a Kubernetes ConfigMap volume, which
//! renames a new `..data` symlink over the old one (`IN_MOVED_TO`). What
//! changed is not looked at: the daemon reloads everything, all or nothing.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    path::Path,
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::{unix::AsyncFd, Interest};

struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub struct DirWatch(AsyncFd<InotifyFd>);

impl DirWatch {
    /// Watches `dir`; None when it does not exist.
    pub fn new(dir: &Path) -> io::Result<Option<Self>> {
        if !dir.is_dir() {
            return Ok(None);
        }
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            dir,
            AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_ATTRIB
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF,
        )?;
        // SAFETY: the descriptor lives in the `InotifyFd` the AsyncFd owns,
        // so it stays open as long as the registration does.
        let fd =
            unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }?;
        Ok(Some(Self(fd)))
    }

    /// Waits for the next change (a burst of events counts once).
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from)) {
                Ok(Ok(events)) if !events.is_empty() => return Ok(()),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}
