use clap::Args;
use log::warn;

use crate::{
    instance::InstanceOptions,
    kernel_maps::KernelMaps,
    loader,
    netlink::{Netlink, PvdRouting},
    plan::{ipv4_from_word, ipv6_from_words, RuleOptions},
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
            Ok(maps) => routing_of(&maps, &self.instance.rules()),
            Err(e) => {
                warn!("{e}; removing pins only");
                Vec::new()
            }
        };
        let detached = loader::detach(&pins);
        if !routing.is_empty() {
            let netlink = Netlink::connect()?;
            for r in &routing {
                netlink.remove(r).await?;
            }
        }
        let unpinned = loader::unpin_maps(&pins);
        pins.remove_dirs();
        println!(
            "removed {detached} programs, {unpinned} maps, routing of {} PvDs",
            routing.len()
        );
        Ok(())
    }
}

/// The routing a previous instance installed, as far as the pinned maps
/// tell: tables, marks and source addresses (what rules are made of).
pub fn routing_of(maps: &KernelMaps, rules: &RuleOptions) -> Vec<PvdRouting> {
    maps.pvds()
        .into_iter()
        .filter_map(|(index, pvd, meta)| {
            let meta = meta?;
            let mut sources = Vec::new();
            if pvd.addr4 != 0 {
                sources.push(ipv4_from_word(pvd.addr4).into());
            }
            if pvd.addr6 != [0; 4] {
                sources.push(ipv6_from_words(pvd.addr6).into());
            }
            Some(PvdRouting {
                name: format!("#{index}"),
                table: meta.table,
                ifindex: pvd.ifindex,
                default4: None,
                default6: None,
                prefixes: Vec::new(),
                routes: Vec::new(),
                sources,
                mark: pvd.mark,
                mark_mask: rules.mark_mask,
                mark_priority: rules.mark_priority,
                source_priority: rules.source_priority,
            })
        })
        .collect()
}
