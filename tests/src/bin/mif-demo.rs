//! `cargo xtask demo`: builds a throwaway lab of two networks, starts the
//! real `mif daemon` with the bundled example policy (examples/demo.toml),
//! shows two applications leaving by different networks, and cleans up.
use std::{
    io::{BufRead as _, BufReader},
    net::IpAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use mif_tests::{
    lab::{cgroup2_mount, running_as_root, Lab, Proto, INTERNET_V4, INTERNET_V6},
    mif::{mif_path, run_mif},
};
use nix::sys::signal::Signal;

const POLICY: &str = include_str!("../../../examples/demo.toml");
const DEMO_CGROUP: &str = "mif-demo";
const PIN_DIR: &str = "/sys/fs/bpf/mif-demo";

/// The demo's cgroups, removed on drop even when the demo fails.
struct DemoCgroups(PathBuf);

impl Drop for DemoCgroups {
    fn drop(&mut self) {
        for sub in ["browser.scope", "updater.scope", ""] {
            let _ = std::fs::remove_dir(self.0.join(sub));
        }
    }
}

fn main() -> Result<()> {
    if !running_as_root() {
        bail!("the demo builds network namespaces and cgroups: run it as root");
    }
    println!("Building a lab: a host with Wi-Fi (wlan0) and cellular (wwan0), each with its own");
    println!("router, addresses and the same 'internet' service at {INTERNET_V4} / {INTERNET_V6}.");
    let lab = Lab::new(&["wlan0", "wwan0"])?;
    for net in lab.networks() {
        println!("  {}: {} / {}", net.name, net.host_v4, net.host_v6);
    }
    let root = cgroup2_mount()?.join(DEMO_CGROUP);
    if root.exists() {
        bail!("{} exists: is another demo running?", root.display());
    }
    let cgroups = DemoCgroups(root);
    let browser = cgroups.0.join("browser.scope");
    let updater = cgroups.0.join("updater.scope");
    std::fs::create_dir_all(&browser)?;
    std::fs::create_dir_all(&updater)?;

    let config = std::env::temp_dir().join("mif-demo.toml");
    std::fs::write(&config, POLICY)?;
    println!("\nThe policy (examples/demo.toml):\n");
    for line in POLICY
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        println!("    {line}");
    }

    println!("\nStarting `mif daemon` steering below /{DEMO_CGROUP}:");
    let mif = mif_path()?;
    let args = [
        "daemon",
        "--config",
        &config.display().to_string(),
        "--cgroup",
        &format!("/{DEMO_CGROUP}"),
        "--pin-dir",
        PIN_DIR,
        // The demo's policy only, whatever the host has in /etc/mif.
        "--no-policies-dir",
    ];
    let mut cmd = lab.command_in(None, &mif, args)?;
    cmd.stdout(Stdio::piped());
    let daemon = lab.spawn(cmd)?;
    let stdout = daemon.take_stdout().context("daemon stdout")?;
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l == "ready");
    if !ready {
        bail!("the daemon stopped before it was ready");
    }

    println!("\nEach application connects to the same address; the service answers with the");
    println!("network it was reached through and the source address it saw:\n");
    show(&lab, "browser", &browser)?;
    show(&lab, "updater", &updater)?;
    show(&lab, "an unsteered app", &cgroups.0)?;

    println!("\nwwan0 goes down. mif follows at once: the strict updater is refused rather");
    println!("than leaking onto Wi-Fi; the browser is unaffected.\n");
    lab.ip_host(&["link", "set", "wwan0", "down"])?;
    std::thread::sleep(Duration::from_millis(200));
    match lab.client(Some(&updater), Proto::Tcp, INTERNET_V4.into(), None) {
        Ok(reply) => println!(
            "  updater           LEFT BY {} (unexpected!)",
            reply.network
        ),
        Err(e) => println!(
            "  updater           refused: {}",
            first_line(&format!("{e:#}"))
        ),
    }
    show(&lab, "browser", &browser)?;
    println!("\nwwan0 comes back: the updater is steered to it again.\n");
    lab.restore_uplink(1)?;
    std::thread::sleep(Duration::from_millis(300));
    show(&lab, "updater", &updater)?;

    println!("\n`mif maps` reads the kernel's state back:\n");
    let out = run_mif(&lab, &["maps", "--pin-dir", PIN_DIR])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));

    println!("\nStopping the daemon: it removes its programs, routing and pins.");
    daemon.signal(Signal::SIGTERM)?;
    daemon.wait_timeout(Duration::from_secs(10))?;
    drop(cgroups);
    drop(lab);
    let _ = std::fs::remove_file(&config);
    println!("Done; the lab is gone.");
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn show(lab: &Lab, app: &str, cgroup: &Path) -> Result<()> {
    for to in [IpAddr::from(INTERNET_V4), IpAddr::from(INTERNET_V6)] {
        let reply = lab.client(Some(cgroup), Proto::Tcp, to, None)?;
        println!(
            "  {app:<17} TCP to {to:<17} left by {:<6} from {}",
            reply.network, reply.source
        );
    }
    Ok(())
}
