//! The options that name everything one mif instance touches, so that two
//! instances (parallel tests, a scoped deployment beside a host-wide one)
//! never collide: pin directory, attach cgroup, mark mask, tables, rules.
use std::path::PathBuf;

use clap::Args;

use crate::{apply::pins::PinDir, model::pvd::Numbering, plan::RuleOptions};

#[derive(Debug, Clone, Args)]
pub struct InstanceOptions {
    /// Directory on bpffs where maps and links are pinned.
    #[arg(long, default_value = "/sys/fs/bpf/mif", value_name = "DIR")]
    pub pin_dir: PathBuf,

    /// cgroup (relative to the cgroup2 root) the programs attach to; only
    /// processes below it are steered. The root steers the whole host.
    #[arg(long, default_value = "/", value_name = "PATH")]
    pub cgroup: String,

    /// Bits of the socket mark that mif owns; other bits are left to others
    /// (Tailscale, kube-proxy and wg-quick use bits outside the default).
    #[arg(long, default_value = "0x7f000000", value_parser = parse_u32, value_name = "MASK")]
    pub mark_mask: u32,

    /// Routing table of the PvD with index 0; PvD i uses table BASE + i.
    #[arg(long, default_value_t = 20100, value_name = "BASE")]
    pub table_base: u32,

    /// Priority of the `from <PvD address>` rules; the `fwmark` rules use the
    /// next one. Source first: a socket the application bound to some PvD's
    /// address leaves by that PvD, whatever its mark (RFC 8028: the first
    /// hop follows the source). Must come before the main table (32766).
    #[arg(long, default_value_t = 9000, value_name = "PRIO")]
    pub rule_priority: u32,
}

impl InstanceOptions {
    pub fn pins(&self) -> PinDir {
        PinDir::new(&self.pin_dir)
    }

    pub fn numbering(&self) -> Numbering {
        Numbering {
            mark_mask: self.mark_mask,
            table_base: self.table_base,
        }
    }

    pub fn rules(&self) -> RuleOptions {
        RuleOptions {
            mark_mask: self.mark_mask,
            source_priority: self.rule_priority,
            mark_priority: self.rule_priority + 1,
        }
    }
}

/// Accepts decimal or 0x-prefixed hexadecimal.
pub fn parse_u32(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?} is not a 32-bit number: {e}"))
}
