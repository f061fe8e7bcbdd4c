//! Real router advertisements: radvd in a router's namespace announcing a
//! DNS server (RDNSS), as a home router or a carrier would.
use std::{net::IpAddr, path::PathBuf, process::Stdio, time::Duration};

use anyhow::{bail, Context as _, Result};

use super::{Lab, LabChild};

/// A running radvd; stopped, and its files removed, on drop (the lab also
/// kills it when the lab drops).
pub struct Radvd {
    child: LabChild,
    dir: PathBuf,
}

impl Drop for Radvd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    /// Starts radvd on router `i`, advertising its network's IPv6 prefix
    /// (not for autoconfiguration: the host's address is static), no
    /// default route, and `rdnss` as DNS server, every 3 to 4 s.
    pub fn advertise_rdnss(&self, i: usize, rdnss: IpAddr) -> Result<Radvd> {
        let net = &self.networks()[i];
        let prefix = net.gateway_v6.segments();
        let dir = std::env::temp_dir().join(format!("mif-radvd-{}-{i}", self.host_ns_name()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // radvd refuses configs in world-writable places.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let conf = dir.join("radvd.conf");
        std::fs::write(
            &conf,
            format!(
                "interface eth0 {{\n AdvSendAdvert on;\n MinRtrAdvInterval 3;\n \
                 MaxRtrAdvInterval 4;\n AdvDefaultLifetime 0;\n \
                 prefix {:x}:{:x}:{:x}::/64 {{ AdvAutonomous off; }};\n \
                 RDNSS {rdnss} {{ AdvRDNSSLifetime 60; }};\n}};\n",
                prefix[0], prefix[1], prefix[2]
            ),
        )?;
        // radvd wants forwarding on, which is per namespace: the router's own.
        let sysctl =
            self.command_in_router(i, "sysctl", ["-qw", "net.ipv6.conf.all.forwarding=1"])?;
        if !self
            .output(sysctl, Duration::from_secs(5))?
            .status
            .success()
        {
            bail!("cannot turn IPv6 forwarding on in router {i}");
        }
        let pid = dir.join("radvd.pid");
        let conf = conf.to_str().context("temp dir is not UTF-8")?;
        let pid = pid.to_str().context("temp dir is not UTF-8")?;
        let args = ["-n", "-C", conf, "-p", pid, "-m", "stderr"];
        let mut radvd = self.command_in_router(i, "radvd", args)?;
        radvd.stdin(Stdio::null());
        let child = self.spawn(radvd)?;
        Ok(Radvd { child, dir })
    }
}
