//! Waiting for a condition with a deadline: scenarios are ready when what
//! a user would check is true (an address is there, a route appeared, a
//! connection gets through), not after a fixed sleep.

use std::fmt;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

/// How often a condition is checked again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// An error that makes further waiting pointless (say, the program that
/// should bring the condition about has exited): [`wait_until`] returns it
/// at once instead of polling until its deadline.
#[derive(Debug)]
pub(crate) struct GaveUp(pub(crate) String);

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GaveUp {}

/// Calls `check` until it succeeds and returns its value. An error from
/// `check` means "not yet", unless it is a [`GaveUp`]; after `timeout`,
/// fails with `what` and the last reason `check` gave.
pub(crate) fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(why) if why.is::<GaveUp>() => return Err(why.context(what.to_owned())),
            Err(why) if Instant::now() >= deadline => {
                return Err(anyhow!("{what}: not within {timeout:?}; last: {why:#}"));
            }
            Err(_) => sleep(POLL_INTERVAL),
        }
    }
}
