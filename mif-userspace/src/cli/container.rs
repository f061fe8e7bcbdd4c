//! `--container ID`: the cgroup of a container, found in cgroupfs below the
//! cgroup the daemon steers (the cgroup2 root in production).
use super::common::{unexpected, ClientArgs};
use crate::{
    control::protocol::{Request, Response},
    host::cgroup::Cgroup2,
    host::containers::resolve_container,
};

pub fn cgroup_of(client: &ClientArgs, id: &str) -> anyhow::Result<String> {
    let attach = match client.request(&Request::Status)? {
        Response::Status(status) => status.attach_cgroup,
        other => return Err(unexpected(other)),
    };
    let cgroup2 = Cgroup2::find()?;
    let base = cgroup2.mount().join(attach.trim_start_matches('/'));
    let found = resolve_container(&base, id)?;
    Ok(format!("{}{}", attach.trim_end_matches('/'), found.rel))
}
