//! What Happy Eyeballs across PvDs (the MIF API's `mif_connect`) costs an
//! application and saves it: the time from the call to the first byte of
//! the peer's answer, with the policy's first PvD healthy and with it
//! black-holed, in one run (rounds alternate, so the machine's noise hits
//! both alike).
//!
//! The lab: both routers run dnsmasq, which answers `connectivity.lab`
//! with the internet address their peer serves; the load's cgroup prefers
//! wwan0, then wlan0. A round is `mif-bench api-connect` (in that cgroup,
//! the library in process, timing each try itself) making `tries`
//! connections by name: resolution through each PvD's own resolver, the
//! race, the peer's first line. Black-holed: wwan0's router drops,
//! silently, whatever the host sends to the internet address (its resolver
//! still answers), so the first attempt hangs and the second, over wlan0,
//! starts one attempt delay later.
//!
//! The per-socket cost of a chosen socket is in the cost table, variant
//! (h).
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::daemon::BenchDaemon;
use crate::lab::{Lab, CONNECTIVITY_NAME, PEER_PORT};

/// Rounds (each state once per round) and connections per round.
#[derive(Debug, Clone)]
pub struct ApiPlan {
    pub rounds: usize,
    pub tries: usize,
}

/// The attempt delay the runs use (RFC 8305's recommended value, the
/// library's default).
pub const ATTEMPT_DELAY_MS: u64 = 250;

#[derive(Debug, Clone, Default)]
pub struct ConnectRow {
    /// Whether the policy's first PvD (wwan0) was black-holed.
    pub first_dead: bool,
    /// Call to first byte, milliseconds, sorted.
    pub first_byte_ms: Vec<f64>,
    /// Which PvD won, how often.
    pub won: BTreeMap<String, usize>,
}

impl ConnectRow {
    pub fn label(&self) -> &'static str {
        if self.first_dead {
            "wwan0 black-holed"
        } else {
            "healthy"
        }
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        super::stats::percentile(&self.first_byte_ms, p)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ApiBench {
    pub rows: Vec<ConnectRow>,
}

impl ApiBench {
    pub fn row(&self, first_dead: bool) -> Option<&ConnectRow> {
        self.rows.iter().find(|r| r.first_dead == first_dead)
    }
}

pub fn run(lab: &Lab, plan: &ApiPlan, start_timeout: Duration, exe: &Path) -> Result<ApiBench> {
    let resolvers = (0..2)
        .map(|i| lab.start_resolver_unlogged(i))
        .collect::<Result<Vec<_>>>()?;
    let app = lab.create_cgroup("api-app")?;
    let mut toml = String::new();
    for i in 0..2 {
        let net = lab.network(i);
        toml += &format!(
            "[[pvd]]\nname = {:?}\ndns = [\"{}\"]\n",
            net.name, net.gateway_v4
        );
    }
    toml += &format!(
        "[[policy]]\ncgroup = \"{}/api-app\"\nprefer = [\"wwan0\", \"wlan0\"]\n",
        lab.cgroup_rel()
    );
    let daemon = BenchDaemon::start(lab, &toml, start_timeout)?;
    let socket = crate::mif::control_socket_of(&daemon.instance.pin_dir);
    let mut rows = [
        ConnectRow {
            first_dead: false,
            ..Default::default()
        },
        ConnectRow {
            first_dead: true,
            ..Default::default()
        },
    ];
    let result = (|| -> Result<()> {
        for round in 0..plan.rounds {
            // Alternate which state goes first.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                super::check_interrupted()?;
                if rows[i].first_dead {
                    lab.cut_upstream(1)?;
                } else {
                    lab.restore_upstream(1)?;
                }
                for (pvd, ms) in tries(lab, &app, exe, &socket, plan.tries)? {
                    rows[i].first_byte_ms.push(ms);
                    *rows[i].won.entry(pvd).or_default() += 1;
                }
            }
        }
        Ok(())
    })();
    lab.restore_upstream(1)?;
    result?;
    daemon.stop()?;
    for resolver in resolvers {
        resolver.stop()?;
    }
    for row in &mut rows {
        row.first_byte_ms.sort_by(f64::total_cmp);
    }
    Ok(ApiBench {
        rows: rows.to_vec(),
    })
}

/// One round: `mif-bench api-connect` in `cgroup`, `n` connections.
fn tries(
    lab: &Lab,
    cgroup: &Path,
    exe: &Path,
    socket: &Path,
    n: usize,
) -> Result<Vec<(String, f64)>> {
    let args = [
        "api-connect".to_string(),
        "--socket".into(),
        socket.display().to_string(),
        "--host".into(),
        CONNECTIVITY_NAME.into(),
        "--port".into(),
        PEER_PORT.to_string(),
        "--tries".into(),
        n.to_string(),
    ];
    let cmd = lab.command_in(Some(cgroup), exe, &args)?;
    let out = lab.output(cmd, Duration::from_secs(30 + 5 * n as u64))?;
    if !out.status.success() {
        bail!(
            "mif-bench api-connect failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let (pvd, ms) = line
                .split_once(' ')
                .with_context(|| format!("odd line {line:?}"))?;
            Ok((pvd.to_owned(), ms.parse()?))
        })
        .collect()
}

/// `mif-bench api-connect --socket S --host H --port P --tries N`: N times
/// `mif_api::connect` (Happy Eyeballs, the default options), then the
/// peer's first line; prints `PVD MS` per try, MS from the call to that
/// line.
pub fn connect_main(argv: &[String]) -> Result<()> {
    let value = |key: &str| -> Result<&str> {
        let at = argv
            .iter()
            .position(|a| a == key)
            .with_context(|| format!("{key} is required"))?;
        argv.get(at + 1)
            .map(String::as_str)
            .with_context(|| format!("{key} needs a value"))
    };
    mif_api::use_socket(value("--socket")?.into());
    let host = value("--host")?;
    let port: u16 = value("--port")?.parse()?;
    let tries: usize = value("--tries")?.parse()?;
    let options = mif_api::ConnectOptions {
        attempt_delay: Duration::from_millis(ATTEMPT_DELAY_MS),
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    for _ in 0..tries {
        let start = Instant::now();
        let won = mif_api::connect(host, port, &options)?;
        let mut line = String::new();
        won.stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        BufReader::new(&won.stream).read_line(&mut line)?;
        if line.is_empty() {
            bail!("the peer over {} sent nothing", won.pvd);
        }
        println!("{} {:.3}", won.pvd, start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}
