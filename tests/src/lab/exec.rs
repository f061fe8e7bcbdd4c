//! Starting programs inside a lab namespace (and optionally a cgroup) so
//! that they are there from their first instruction.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Builds a command whose child enters the network namespace at `ns_path`
/// and, if given, the cgroup directory `cgroup` before it execs.
///
/// Both files are opened here, before fork, so the child only makes two raw
/// syscalls (write, setns): between fork and exec only async-signal-safe
/// calls are allowed, since another thread of the test may hold the
/// allocator's lock at fork time. The fds are close-on-exec, so the program
/// never sees them.
pub(crate) fn command_in_ns<S: AsRef<OsStr>>(
    ns_path: &Path,
    cgroup: Option<&Path>,
    program: impl AsRef<OsStr>,
    args: impl IntoIterator<Item = S>,
) -> Result<Command> {
    command_in_ns_as(ns_path, cgroup, None, program, args)
}

/// [`command_in_ns`], the program then running as the unprivileged user
/// `uid` (its group the same number, no supplementary groups). The user
/// changes after the namespace and cgroup are entered, which need root;
/// std's own `Command::uid` would change it before the `pre_exec` hook.
pub(crate) fn command_in_ns_as<S: AsRef<OsStr>>(
    ns_path: &Path,
    cgroup: Option<&Path>,
    uid: Option<u32>,
    program: impl AsRef<OsStr>,
    args: impl IntoIterator<Item = S>,
) -> Result<Command> {
    let ns: OwnedFd = File::open(ns_path)
        .with_context(|| format!("opening network namespace {}", ns_path.display()))?
        .into();
    let procs: Option<OwnedFd> = match cgroup {
        Some(dir) => {
            let procs = dir.join("cgroup.procs");
            let file = OpenOptions::new()
                .write(true)
                .open(&procs)
                .with_context(|| format!("opening {}", procs.display()))?;
            Some(file.into())
        }
        None => None,
    };

    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: the closure only calls write(2), setns(2) and the user's
    // set*id(2) on fds and values from above, and builds io::Errors from
    // errno, which does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(procs) = &procs {
                // "0" means "the writing process": the child moves itself.
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(uid) = uid {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Runs `cmd` to completion, capturing stdout and stderr, and kills it if
/// it outlives `timeout`: a hung client must fail a test, not hang it.
pub(crate) fn output_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{shown} did not finish within {timeout:?}");
        }
        sleep(Duration::from_millis(5));
    };
    // A grandchild could keep the pipes open forever; don't wait for it.
    let collect =
        |rx: mpsc::Receiver<Vec<u8>>| rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// Reads a pipe to its end on a thread, so that neither pipe can fill up
/// and block the child while we wait for the other.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// A process started by the lab. The lab keeps a handle too and kills the
/// process when it is dropped, so tests need not clean up after panics.
#[derive(Debug, Clone)]
pub struct LabChild {
    pid: u32,
    child: Arc<Mutex<Child>>,
}

impl LabChild {
    pub(crate) fn new(child: Child) -> Self {
        Self {
            pid: child.id(),
            child: Arc::new(Mutex::new(child)),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Takes the stdout pipe, if the command was built with a piped stdout.
    pub fn take_stdout(&self) -> Option<ChildStdout> {
        self.lock().stdout.take()
    }

    /// Takes the stdin pipe, if the command was built with a piped stdin.
    pub fn take_stdin(&self) -> Option<std::process::ChildStdin> {
        self.lock().stdin.take()
    }

    /// Takes the stderr pipe, if the command was built with a piped stderr.
    pub fn take_stderr(&self) -> Option<ChildStderr> {
        self.lock().stderr.take()
    }

    /// The exit status if the process has ended (and reaps it).
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        Ok(self.lock().try_wait()?)
    }

    /// Waits up to `timeout` for the process to end.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (e.g. SIGTERM to test a graceful shutdown) unless the
    /// process was already reaped: its pid might then belong to a stranger.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let mut child = self.lock();
        if child.try_wait()?.is_none() {
            kill(Pid::from_raw(self.pid as i32), signal)?;
        }
        Ok(())
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&self) -> Result<()> {
        let mut child = self.lock();
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// A test that panicked while holding the lock must not stop the
    /// cleanup that runs during unwinding.
    fn lock(&self) -> MutexGuard<'_, Child> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
