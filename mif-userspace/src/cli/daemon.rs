use std::path::PathBuf;

use clap::Args;

use crate::instance::InstanceOptions;

/// Load the programs, install routing per PvD, follow network changes live,
/// steer until SIGINT/SIGTERM, then remove everything installed.
///
/// A daemon started over the pins of a previous one (killed, or stopped with
/// --keep-steering) adopts its state without a gap. Prints `ready` on stdout
/// once steering is in place.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Policy file (TOML): `[[pvd]]` and `[[policy]]` entries.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,

    #[command(flatten)]
    pub instance: InstanceOptions,

    /// On exit, leave programs, maps and routing in place (steering goes
    /// on) for the next daemon to adopt: restarts and upgrades without a
    /// gap. `mif cleanup` removes it all.
    #[arg(long)]
    pub keep_steering: bool,

    /// A directory of `*.toml` files with more `[[pvd]]` and `[[policy]]`
    /// entries, merged after the config file in name order and watched:
    /// a file added, changed or removed (also by a Kubernetes ConfigMap's
    /// symlink swap) is applied at once, all or nothing, as a reload is.
    /// A directory that does not exist holds none (create it and reload).
    #[arg(long, default_value = crate::model::config::DEFAULT_POLICIES_DIR, value_name = "DIR")]
    pub policies_dir: PathBuf,

    /// Read no policies directory: the config file only.
    #[arg(long, conflicts_with = "policies_dir")]
    pub no_policies_dir: bool,

    /// Where policies set with `mif policy set` are kept across restarts.
    #[arg(long, default_value = "/var/lib/mif", value_name = "DIR")]
    pub state_dir: PathBuf,
}

impl DaemonArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        crate::daemon::run(crate::daemon::DaemonOptions {
            config: &self.config,
            policies_dir: (!self.no_policies_dir).then_some(self.policies_dir.as_path()),
            instance: &self.instance,
            keep_steering: self.keep_steering,
            state_dir: &self.state_dir,
        })
        .await
    }
}
