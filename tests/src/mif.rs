//! Running the real `mif` binary against a lab: a daemon per test with its
//! own pin directory, attach cgroup and config file, stopped and cleaned up
//! on drop even when the test fails.
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Output, Stdio},
    sync::{mpsc, OnceLock},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::Signal;

use crate::lab::{Lab, LabChild};

/// Environment variable naming the `mif` binary to test instead of building one.
pub const MIF_BIN_ENV: &str = "MIF_BIN";

/// How long a daemon may take to report `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `mif` binary under test: `$MIF_BIN`, or else built (once per test
/// process) from this workspace so a test never runs a stale daemon — cargo
/// does not rebuild another package's binaries for this crate's tests.
pub fn mif_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(MIF_BIN_ENV) {
        return Ok(path.into());
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_mif().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_mif() -> Result<PathBuf> {
    build_artifact(&["--package", "mif-userspace", "--bin", "mif"], "mif")
}

/// Runs `cargo build --quiet TARGET...` in this workspace and returns the
/// path of the `artifact` it made, found beside this test's profile.
pub(crate) fn build_artifact(target: &[&str], artifact: &str) -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--quiet"])
        .args(target)
        .status()
        .with_context(|| format!("running cargo build for {artifact}"))?;
    if !status.success() {
        bail!("cargo build of {artifact} failed: {status}");
    }
    // Test binaries live in target/<profile>/deps; artifacts in target/<profile>.
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(artifact))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("{artifact} not found near {}", exe.display()))
}

/// The control socket of the instance pinned at `pin_dir` (as mif's
/// `control::socket_path` names it: `/run/mif/<pin dir with / as ->.sock`).
pub fn control_socket_of(pin_dir: &Path) -> PathBuf {
    let flat = pin_dir
        .display()
        .to_string()
        .trim_matches('/')
        .replace('/', "-");
    PathBuf::from(format!("/run/mif/{flat}.sock"))
}

/// The options that keep one test's mif apart from every other's.
#[derive(Debug, Clone)]
pub struct Instance {
    pub pin_dir: PathBuf,
    pub cgroup: String,
}

impl Instance {
    /// A pin directory named after the lab's cgroup (already unique), and
    /// the lab's cgroup as the attach point.
    pub fn for_lab(lab: &Lab) -> Self {
        let unique = lab.cgroup_rel().trim_start_matches('/').replace('/', "-");
        Self {
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/{unique}")),
            cgroup: lab.cgroup_rel(),
        }
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "--pin-dir".into(),
            self.pin_dir.display().to_string(),
            "--cgroup".into(),
            self.cgroup.clone(),
        ]
    }
}

/// A running `mif daemon` in the lab's host namespace.
pub struct Daemon<'lab> {
    lab: &'lab Lab,
    child: Option<LabChild>,
    pub instance: Instance,
    pub config: PathBuf,
    stderr: mpsc::Receiver<String>,
    /// Whether drop runs `mif cleanup` (not after kill_hard: the state is
    /// then meant for the next daemon to adopt).
    cleanup_on_drop: bool,
    keeps_steering: bool,
}

/// Writes `toml` to a config file in a directory of the lab's scratch
/// directory (so it goes with the lab, also where no [`Daemon`] removed
/// it) and returns its path.
pub fn write_config(lab: &Lab, toml: &str) -> Result<PathBuf> {
    let dir = lab.scratch_dir("mif")?;
    let path = dir.join("mif.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// The policies directory of the daemon started with `config`.
pub fn policies_dir(config: &Path) -> PathBuf {
    config
        .parent()
        .map(|d| d.join("policies.d"))
        .unwrap_or_default()
}

/// Runs `mif ARGS` in the lab's host namespace to completion.
pub fn run_mif<S: AsRef<str>>(lab: &Lab, args: &[S]) -> Result<Output> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    lab.output_in(None, mif_path()?, &args)
}

impl<'lab> Daemon<'lab> {
    /// Starts `mif daemon` with `toml` and waits for `ready`.
    pub fn start(lab: &'lab Lab, toml: &str) -> Result<Self> {
        Self::start_with(lab, toml, &[])
    }

    /// Like [`Daemon::start`], with extra daemon options.
    pub fn start_with(lab: &'lab Lab, toml: &str, extra: &[&str]) -> Result<Self> {
        Self::start_within(lab, toml, extra, READY_TIMEOUT)
    }

    /// Like [`Daemon::start_with`], waiting up to `ready_timeout` (a daemon
    /// with 100,000 cgroups to resolve needs longer on a busy machine).
    pub fn start_within(
        lab: &'lab Lab,
        toml: &str,
        extra: &[&str],
        ready_timeout: Duration,
    ) -> Result<Self> {
        let instance = Instance::for_lab(lab);
        let config = write_config(lab, toml)?;
        let mut args = vec![
            "daemon".to_string(),
            "--config".into(),
            config.display().to_string(),
        ];
        args.extend(instance.args());
        // CLI-set policies are kept next to the config unless the test
        // wants a state directory of its own (to survive a restart).
        if !extra.contains(&"--state-dir") {
            let state = config.parent().map(|d| d.join("state")).unwrap_or_default();
            args.extend(["--state-dir".to_string(), state.display().to_string()]);
        }
        // Never the host's /etc/mif/policies.d: one next to the config
        // (absent unless the test makes it).
        if !extra.contains(&"--policies-dir") {
            args.extend([
                "--policies-dir".to_string(),
                policies_dir(&config).display().to_string(),
            ]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = lab.command_in(None, mif_path()?, &args)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = lab.spawn(cmd)?;

        // stderr is drained on a thread so the daemon never blocks on it and
        // a failed start can say why.
        let (err_tx, err_rx) = mpsc::channel();
        let stderr = child.take_stderr().context("daemon stderr")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.take_stdout().context("daemon stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready_tx.send(());
                }
            }
        });

        let mut daemon = Self {
            lab,
            child: Some(child),
            instance,
            config,
            stderr: err_rx,
            cleanup_on_drop: true,
            keeps_steering: extra.contains(&"--keep-steering"),
        };
        match ready_rx.recv_timeout(ready_timeout) {
            Ok(()) => Ok(daemon),
            Err(_) => {
                let status = daemon
                    .child
                    .as_ref()
                    .and_then(|c| c.wait_timeout(Duration::from_millis(200)).ok().flatten());
                let log = daemon.log();
                bail!("mif daemon did not become ready (exit: {status:?}):\n{log}")
            }
        }
    }

    /// Everything the daemon wrote on stderr so far.
    pub fn log(&mut self) -> String {
        let mut out = String::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(50)) {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// `mif ARGS --pin-dir <ours>` etc. for verbs that take the instance options.
    pub fn mif(&self, args: &[&str]) -> Result<Output> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend([
            "--pin-dir".to_string(),
            self.instance.pin_dir.display().to_string(),
        ]);
        run_mif(self.lab, &all)
    }

    /// `mif maps --json` parsed.
    pub fn maps_json(&self) -> Result<serde_json::Value> {
        let out = self.mif(&["maps", "--json"])?;
        if !out.status.success() {
            bail!("mif maps failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// SIGKILL, as a crash would: the pinned state stays for the next daemon.
    pub fn kill_hard(mut self) -> Result<()> {
        let child = self.child.take().context("already stopped")?;
        child.signal(Signal::SIGKILL)?;
        child
            .wait_timeout(Duration::from_secs(10))?
            .context("the daemon survived SIGKILL")?;
        self.cleanup_on_drop = false;
        Ok(())
    }

    /// Sends `signal` to the daemon (SIGHUP to reload, say).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        self.child.as_ref().context("not running")?.signal(signal)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> Result<u32> {
        Ok(self.child.as_ref().context("not running")?.pid())
    }

    /// How many file descriptors the daemon holds open.
    pub fn open_fds(&self) -> Result<usize> {
        let pid = self.pid()?;
        Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
    }

    /// CPU time the daemon has used so far (all its threads), from
    /// /proc/PID/stat in clock ticks (1/100 s on Linux).
    pub fn cpu_ticks(&self) -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?))?;
        // Fields after the command name, which may hold spaces: utime and
        // stime are the 14th and 15th fields of the line.
        let after = stat.rsplit_once(") ").context("parsing /proc/PID/stat")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let tick = |i: usize| -> Result<u64> { Ok(fields.get(i).context("short stat")?.parse()?) };
        Ok(tick(11)? + tick(12)?)
    }

    /// SIGTERM and wait; fails unless the daemon exits 0 in time. A daemon
    /// started with `--keep-steering` leaves its state for the next one, so
    /// drop then does not clean up either.
    pub fn stop(mut self) -> Result<()> {
        self.cleanup_on_drop = !self.keeps_steering;
        let child = self.child.take().context("already stopped")?;
        child.signal(Signal::SIGTERM)?;
        match child.wait_timeout(Duration::from_secs(10))? {
            Some(status) if status.success() => Ok(()),
            Some(status) => bail!("mif daemon exited with {status}:\n{}", self.log()),
            None => {
                child.kill()?;
                bail!("mif daemon did not stop within 10 s")
            }
        }
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = child.signal(Signal::SIGTERM);
            if !matches!(child.wait_timeout(Duration::from_secs(10)), Ok(Some(_))) {
                let _ = child.kill();
            }
        }
        if !self.cleanup_on_drop {
            return;
        }
        // Whatever a failed test left behind: pins are ours to remove.
        let mut args = vec!["cleanup".to_string()];
        args.extend(self.instance.args());
        let _ = run_mif(self.lab, &args);
        let _ = std::fs::remove_dir_all(self.config.parent().unwrap_or(Path::new("/nonexistent")));
    }
}
