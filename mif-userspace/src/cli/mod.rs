//! The `mif` command line: one module per verb, each with an `execute`.
pub mod cleanup;
pub mod daemon;
pub mod maps;

use clap::{Parser, Subcommand};

/// Steer each application's traffic to a provisioning domain (PvD) on a
/// multi-homed Linux host, in the kernel, by cgroup.
#[derive(Debug, Parser)]
#[command(name = "mif", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Daemon(daemon::DaemonArgs),
    Maps(maps::MapsArgs),
    Cleanup(cleanup::CleanupArgs),
}

impl Cli {
    pub async fn execute(self) -> anyhow::Result<()> {
        match self.command {
            Command::Daemon(args) => args.execute().await,
            Command::Maps(args) => args.execute(),
            Command::Cleanup(args) => args.execute().await,
        }
    }
}
