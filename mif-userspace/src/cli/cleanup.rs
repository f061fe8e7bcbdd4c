use clap::Args;
use log::warn;

use crate::{
    apply::kernel_maps::KernelMaps, apply::loader, host::netlink::Netlink,
    instance::InstanceOptions, plan::installed_routing,
};

/// Remove everything a mif instance installed (programs, maps, routing
/// tables and rules), for example after the daemon was killed with SIGKILL.
/// Run it in the network namespace the daemon ran in, with the same
/// instance options.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    #[command(flatten)]
    pub instance: InstanceOptions,
}

impl CleanupArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let pins = self.instance.pins();
        // Read the routing back from the maps before they go: tables, marks
        // and source addresses are what the rules were made of.
        let routing = match KernelMaps::open(&pins) {
            Ok(maps) => installed_routing(&maps.pvds(), &self.instance.rules()),
            Err(e) => {
                warn!("{e}; removing pins only");
                Vec::new()
            }
        };
        let detached = loader::detach(&pins);
        if !routing.is_empty() {
            let netlink = Netlink::connect()?;
            let dump = netlink.routing().await?;
            for r in &routing {
                netlink.remove(r, &dump).await?;
            }
        }
        let unpinned = loader::unpin_maps(&pins);
        pins.remove_dirs();
        // What a killed daemon leaves under /run/mif: its lock file (unless
        // a daemon holds it) and its control socket.
        if let Err(e) = crate::daemon::steering::remove_stale_lock(&pins) {
            warn!("{e:#}");
        }
        let _ = std::fs::remove_file(crate::control::socket_path(&self.instance.pin_dir));
        println!(
            "removed {detached} programs, {unpinned} maps, routing of {} PvDs",
            routing.len()
        );
        Ok(())
    }
}
