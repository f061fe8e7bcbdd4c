//! Installs the toolchain pieces and test peers, only what is missing.
use std::process::Command;

use anyhow::Context as _;

use crate::run_command;

/// Debian packages: LLVM 22 for bpf-linker (it must match nightly's LLVM),
/// iproute2/util-linux for labs, and the real peers the tests talk to.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "iproute2",
    "util-linux",
    "nftables",
    "dnsmasq",
    "radvd",
    "socat",
    "curl",
    "dnsutils",
    "iperf3",
    // The DNS forwarder's benchmark: a real load generator.
    "dnsperf",
    // The lab's VPN (a real tunnel over TUN) and DHCP client scenarios.
    "openvpn",
    "isc-dhcp-client",
    // `cargo xtask deb`: cargo-deb computes the package's Depends with
    // dpkg-shlibdeps, the changelog is read with dpkg-parsechangelog.
    "dpkg-dev",
    // The package test checks the unit with `systemd-analyze verify` and
    // `security` (they need no running systemd).
    "systemd",
    // The Kubernetes manifests' validator lives in a virtualenv of Debian's
    // Python (PEP 668 keeps pip off the system's site-packages).
    "python3-venv",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// The newest cargo-fuzz; it builds with stable 1.95 and drives nightly.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Builds the Debian package (`cargo xtask deb`); 3.8.0 needs Rust 1.85.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

pub fn run() -> anyhow::Result<()> {
    install_packages()?;
    install_rust_src()?;
    install_bpf_linker()?;
    install_cargo_fuzz()?;
    install_cargo_deb()?;
    crate::kubernetes::install_validator()?;
    Ok(())
}

fn install_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run_command(Command::new("apt-get").arg("update").arg("-qq"))?;
    run_command(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
    .context("apt-get install (run as root on Debian)")
}

fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn install_rust_src() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("rustup is needed for the nightly toolchain")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    eprintln!("xtask: adding rust-src to the nightly toolchain");
    run_command(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

fn install_bpf_linker() -> anyhow::Result<()> {
    let current = Command::new("bpf-linker").arg("--version").output();
    if current.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 80 s)");
    // The default feature wants LLVM 23, which Debian does not ship; without
    // LLVM_PREFIX the build finds /usr and cannot link -lLLVM.
    run_command(
        Command::new(env!("CARGO"))
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"]),
    )
}

fn install_cargo_fuzz() -> anyhow::Result<()> {
    let current = Command::new("cargo-fuzz").arg("--version").output();
    if current.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    eprintln!("xtask: building cargo-fuzz {CARGO_FUZZ_VERSION} (about 60 s)");
    run_command(Command::new(env!("CARGO")).args([
        "install",
        "--locked",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

fn install_cargo_deb() -> anyhow::Result<()> {
    // `cargo-deb --version` prints "cargo-deb 3.8.0".
    let current = Command::new("cargo-deb").arg("--version").output();
    if current.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .any(|w| w == CARGO_DEB_VERSION)
    }) {
        return Ok(());
    }
    eprintln!("xtask: building cargo-deb {CARGO_DEB_VERSION} (about 70 s)");
    run_command(Command::new(env!("CARGO")).args([
        "install",
        "--locked",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
    ]))
}
