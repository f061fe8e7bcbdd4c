use std::path::PathBuf;

use clap::Args;

use crate::{apply::kernel_maps::KernelMaps, apply::pins::PinDir, cli::report::MapsReport};

/// Print what the kernel holds: PvDs, policies (by cgroup path and id) and
/// counters, read from the pinned maps whether or not the daemon runs.
#[derive(Debug, Args)]
pub struct MapsArgs {
    /// Directory on bpffs where the daemon pinned its maps.
    #[arg(long, default_value = "/sys/fs/bpf/mif", value_name = "DIR")]
    pub pin_dir: PathBuf,

    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

impl MapsArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        let maps = KernelMaps::open(&PinDir::new(&self.pin_dir))?;
        let report = MapsReport::read(&maps);
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.render());
        }
        Ok(())
    }
}
