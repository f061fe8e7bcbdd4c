//! A `mif daemon` for the benchmark: like [`crate::mif::Daemon`], but it
//! keeps every log line with the instant it arrived (reconcile times are
//! read from them), reports how long it took to become ready, and allows
//! long start-ups (100,000 policies).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::Signal;

use crate::lab::{Lab, LabChild};
use crate::mif::{mif_path, run_mif, write_config, Instance};

pub struct BenchDaemon<'lab> {
    lab: &'lab Lab,
    child: Option<LabChild>,
    pub instance: Instance,
    config: PathBuf,
    lines: mpsc::Receiver<(Instant, String)>,
    /// From spawning the process to its `ready` line.
    pub start_time: Duration,
}

impl<'lab> BenchDaemon<'lab> {
    /// Starts `mif daemon` with `toml` for the lab's own instance and waits
    /// up to `timeout` for `ready`.
    pub fn start(lab: &'lab Lab, toml: &str, timeout: Duration) -> Result<Self> {
        let instance = Instance::for_lab(lab);
        let config = write_config(lab, toml)?;
        let mut args = vec![
            "daemon".to_string(),
            "--config".into(),
            config.display().to_string(),
        ];
        args.extend(instance.args());
        // (f)'s strict policy is set from the CLI: its state file goes with
        // the lab, not to the host's /var/lib/mif.
        let state = config.parent().map(|d| d.join("state")).unwrap_or_default();
        args.extend(["--state-dir".to_string(), state.display().to_string()]);
        let policies = crate::mif::policies_dir(&config);
        args.extend(["--policies-dir".to_string(), policies.display().to_string()]);
        let mut cmd = lab.command_in(None, mif_path()?, &args)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = Instant::now();
        let child = lab.spawn(cmd)?;

        let (line_tx, lines) = mpsc::channel();
        let stderr = child.take_stderr().context("daemon stderr")?;
        // For profiling by hand: every daemon's log, appended to a file.
        let mut copy = std::env::var_os("MIF_BENCH_DAEMON_LOG").and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(file) = copy.as_mut() {
                    let _ = writeln!(file, "{line}");
                }
                let _ = line_tx.send((Instant::now(), line));
            }
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.take_stdout().context("daemon stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready_tx.send(Instant::now());
                }
            }
        });
        let mut daemon = Self {
            lab,
            child: Some(child),
            instance,
            config,
            lines,
            start_time: Duration::ZERO,
        };
        let deadline = spawned + timeout;
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(200)) {
                Ok(at) => {
                    daemon.start_time = at - spawned;
                    return Ok(daemon);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    super::check_interrupted()?;
                }
                Err(_) => {
                    let log = daemon.drain().join("\n");
                    bail!("mif daemon not ready within {timeout:?} (or exited):\n{log}")
                }
            }
        }
    }

    pub fn pid(&self) -> Result<u32> {
        Ok(self.child.as_ref().context("daemon stopped")?.pid())
    }

    /// Log lines received so far (and forgets them).
    pub fn drain(&self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok((_, line)) = self.lines.recv_timeout(Duration::from_millis(20)) {
            out.push(line);
        }
        out
    }

    /// Waits for the first log line matching `pred`, returning when it
    /// arrived (`None` on timeout or if the daemon exited); lines before it
    /// are dropped.
    pub fn wait_line(
        &self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<Option<Instant>> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(None);
            };
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok((at, line)) if pred(&line) => return Ok(Some(at)),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => super::check_interrupted()?,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }

    /// SIGTERM, wait, and remove what it left (it should leave nothing).
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        child.signal(Signal::SIGTERM)?;
        let status = child.wait_timeout(Duration::from_secs(60))?;
        if status.is_none() {
            child.kill()?;
        }
        let mut args = vec!["cleanup".to_string()];
        args.extend(self.instance.args());
        let _ = run_mif(self.lab, &args);
        let _ = std::fs::remove_dir_all(self.config.parent().unwrap_or(&self.config));
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!("mif daemon exited with {s}"),
            None => bail!("mif daemon did not stop within 60 s"),
        }
    }
}

impl Drop for BenchDaemon<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("mif-bench: stopping the daemon: {e:#}");
        }
    }
}

/// `[[policy]]` TOML for `cgroup`, preferring `prefer` in order.
pub fn policy_toml(cgroup: &str, prefer: &[&str]) -> String {
    let prefer: Vec<String> = prefer.iter().map(|p| format!("{p:?}")).collect();
    format!(
        "[[policy]]\ncgroup = {cgroup:?}\nprefer = [{}]\n\n",
        prefer.join(", ")
    )
}
