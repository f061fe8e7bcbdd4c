//! What the client verbs share: finding the daemon, printing JSON or tables.
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::{
    apply::kernel_maps::KernelMaps,
    apply::pins::PinDir,
    control::{
        self,
        client::{Client, ClientError},
        protocol::{Request, Response},
    },
};

/// Options of every verb that talks to a daemon.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The daemon's pin directory (names its control socket and maps).
    #[arg(
        long,
        default_value = "/sys/fs/bpf/mif",
        value_name = "DIR",
        global = true
    )]
    pub pin_dir: PathBuf,

    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientArgs {
    pub fn connect(&self) -> Result<Client, ClientError> {
        Client::connect(&control::socket_path(&self.pin_dir))
    }

    /// Sends one request to the daemon.
    pub fn request(&self, request: &Request) -> Result<Response, ClientError> {
        self.connect()?.request(request)
    }

    /// The pinned maps, for reading when the daemon is down.
    pub fn maps(&self) -> anyhow::Result<KernelMaps> {
        Ok(KernelMaps::open(&PinDir::new(&self.pin_dir))?)
    }

    pub fn print<T: Serialize>(
        &self,
        value: &T,
        table: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            print!("{}", table());
        }
        Ok(())
    }
}

/// Says on stderr that the answer comes from the pins, not the daemon.
pub fn note_daemon_down(e: &ClientError) {
    eprintln!("mif: {e}; showing the kernel's state from the pinned maps");
}

pub fn unexpected(response: Response) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from the daemon: {response:?}")
}

pub fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}
