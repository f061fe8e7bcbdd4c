//! The `mif` command line: one module per verb, each with an `execute`.
pub mod cleanup;
mod common;
mod completions;
mod connect;
mod container;
pub mod daemon;
mod exec;
pub mod maps;
mod monitor;
mod policy;
mod pvd;
mod reload;
pub mod report;
mod stats;
mod status;

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
    Status(status::StatusArgs),
    Pvd(pvd::PvdArgs),
    Policy(policy::PolicyArgs),
    Exec(exec::ExecArgs),
    Connect(connect::ConnectArgs),
    Maps(maps::MapsArgs),
    Stats(stats::StatsArgs),
    Monitor(monitor::MonitorArgs),
    Reload(reload::ReloadArgs),
    Cleanup(cleanup::CleanupArgs),
    Completions(completions::CompletionsArgs),
    Man(completions::ManArgs),
}

impl Cli {
    pub async fn execute(self) -> anyhow::Result<()> {
        // Client verbs block on the socket; they are short and run alone.
        match self.command {
            Command::Daemon(args) => args.execute().await,
            Command::Status(args) => args.execute(),
            Command::Pvd(args) => args.execute(),
            Command::Policy(args) => args.execute(),
            Command::Exec(args) => args.execute(),
            Command::Connect(args) => args.execute(),
            Command::Maps(args) => args.execute(),
            Command::Stats(args) => args.execute(),
            Command::Monitor(args) => args.execute(),
            Command::Reload(args) => args.execute(),
            Command::Cleanup(args) => args.execute().await,
            Command::Completions(args) => args.execute(),
            Command::Man(args) => args.execute(),
        }
    }
}
