use clap::Args;

use super::{common::ClientArgs, policy::expect_ok};
use crate::control::protocol::Request;

/// Re-read the daemon's config file (like SIGHUP), reporting why it was
/// refused if it is invalid; the running policy then stays.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

impl ReloadArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        expect_ok(self.client.request(&Request::Reload))
    }
}
