//! Real router advertisements: radvd in a router's namespace announcing a
//! DNS server (RDNSS) and search list (DNSSL), as a home router or a
//! carrier would, or, for other
//! scenarios, whatever configuration they give [`Lab::start_radvd`].
use std::{fs::File, net::IpAddr, path::PathBuf, process::Stdio};

use anyhow::{Context as _, Result};

use super::{Lab, LabChild};

/// A running radvd; stopped, and its files removed, on drop (the lab also
/// kills it when the lab drops).
pub struct Radvd {
    child: LabChild,
    dir: PathBuf,
    log: PathBuf,
}

impl Radvd {
    /// What radvd wrote so far (its stderr), for error messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
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
        self.advertise_dns(i, rdnss, &[])
    }

    /// [`Lab::advertise_rdnss`] with a DNS search list (DNSSL) as well.
    pub fn advertise_dns(&self, i: usize, rdnss: IpAddr, dnssl: &[&str]) -> Result<Radvd> {
        let net = &self.networks()[i];
        let prefix = net.gateway_v6.segments();
        let search = if dnssl.is_empty() {
            String::new()
        } else {
            format!(" DNSSL {} {{ AdvDNSSLLifetime 60; }};\n", dnssl.join(" "))
        };
        let config = format!(
            "interface eth0 {{\n AdvSendAdvert on;\n MinRtrAdvInterval 3;\n \
             MaxRtrAdvInterval 4;\n AdvDefaultLifetime 0;\n \
             prefix {:x}:{:x}:{:x}::/64 {{ AdvAutonomous off; }};\n \
             RDNSS {rdnss} {{ AdvRDNSSLifetime 60; }};\n{search}}};\n",
            prefix[0], prefix[1], prefix[2]
        );
        self.start_radvd(&net.router_ns, &format!("r{i}"), &config)
    }

    /// Starts radvd with `config` (radvd.conf text) in the lab namespace
    /// `ns`; `tag` names its scratch directory. Its stderr goes to a log
    /// ([`Radvd::log_text`]).
    pub(crate) fn start_radvd(&self, ns: &str, tag: &str, config: &str) -> Result<Radvd> {
        let dir = self.scratch_dir(&format!("radvd-{tag}"))?;
        let conf = dir.join("radvd.conf");
        std::fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
        // radvd wants forwarding on, which is per namespace: the router's own.
        self.sysctl_in(ns, "net.ipv6.conf.all.forwarding=1")
            .context("radvd needs IPv6 forwarding")?;
        let pid = dir.join("radvd.pid");
        let log = dir.join("radvd.log");
        let conf = conf.to_str().context("temp dir is not UTF-8")?;
        let pid = pid.to_str().context("temp dir is not UTF-8")?;
        let args = ["-n", "-C", conf, "-p", pid, "-m", "stderr"];
        let mut radvd = self.command_in_netns(ns, "radvd", args)?;
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        radvd.stdin(Stdio::null()).stderr(log_file);
        let child = self.spawn(radvd)?;
        Ok(Radvd { child, dir, log })
    }
}
