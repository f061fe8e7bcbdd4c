use std::path::PathBuf;

use clap::Args;

use crate::instance::InstanceOptions;

/// Load the programs, install routing per PvD, steer until SIGINT/SIGTERM,
/// then remove everything installed.
///
/// Prints `ready` on stdout once steering is in place.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Policy file (TOML): [[pvd]] and [[policy]] entries.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,

    #[command(flatten)]
    pub instance: InstanceOptions,
}

impl DaemonArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        crate::daemon::run(&self.config, &self.instance).await
    }
}
