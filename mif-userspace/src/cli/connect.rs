//! `mif connect`: a netcat-like front end of the MIF API's Happy Eyeballs
//! across PvDs (`mif_connect`), for scripts: it connects to HOST PORT over
//! whichever PvD the caller may use answers first (or the one named), says
//! which won on stderr, then copies stdin to the connection and the
//! connection to stdout. Any user may run it: the kernel bounds the choice
//! by the caller's policy.
use std::{
    io::{self, Read as _, Write as _},
    net::Shutdown,
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;

use super::common::ClientArgs;
use crate::control;

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Only this PvD (else the PvDs the caller's policy allows, in its
    /// order, raced).
    #[arg(long, value_name = "PVD")]
    pub pvd: Option<String>,
    /// Milliseconds between the starts of two attempts (RFC 8305's
    /// Connection Attempt Delay).
    #[arg(long, default_value_t = 250, value_name = "MS")]
    pub attempt_delay: u64,
    /// Seconds before giving up.
    #[arg(long, default_value_t = 30, value_name = "S")]
    pub timeout: u64,
    /// Say nothing on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    /// A name (resolved through each PvD's own resolvers) or an address.
    pub host: String,
    pub port: u16,
}

impl ConnectArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        mif_api::use_socket(control::socket_path(&self.client.pin_dir));
        let options = mif_api::ConnectOptions {
            pvds: self.pvd.clone().map(|p| vec![p]),
            attempt_delay: Duration::from_millis(self.attempt_delay),
            timeout: Duration::from_secs(self.timeout),
            ..Default::default()
        };
        let won = mif_api::connect(&self.host, self.port, &options)?;
        if !self.quiet {
            eprintln!(
                "mif: connected to {} over {} ({} attempt{})",
                won.address,
                won.pvd,
                won.attempts,
                if won.attempts == 1 { "" } else { "s" }
            );
        }
        relay(won.stream)
    }
}

/// stdin → `stream` on a thread (half-closing it at EOF, so the peer sees
/// the end), `stream` → stdout here, until the peer closes.
fn relay(stream: std::net::TcpStream) -> anyhow::Result<()> {
    let mut upstream = stream.try_clone().context("cloning the connection")?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        let mut stdin = io::stdin().lock();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || upstream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = upstream.shutdown(Shutdown::Write);
    });
    let mut downstream = stream;
    let mut stdout = io::stdout().lock();
    io::copy(&mut downstream, &mut stdout).context("reading the connection")?;
    stdout.flush().context("writing stdout")?;
    Ok(())
}
