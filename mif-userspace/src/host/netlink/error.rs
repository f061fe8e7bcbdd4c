//! Errors of the rtnetlink layer, and the errno checks that decide which
//! kernel refusals are fine for an idempotent install or remove.

use rtnetlink::packet_core::ErrorMessage;

/// What can go wrong talking rtnetlink. Each variant names the PvD and the
/// object involved, since one daemon manages many tables and the kernel's
/// errno alone ("File exists") does not say which.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("no tokio runtime to run the rtnetlink connection on")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),

    #[error("cannot open an rtnetlink socket")]
    Connect(#[source] std::io::Error),

    #[error("cannot dump {what}")]
    Dump {
        what: &'static str,
        #[source]
        source: rtnetlink::Error,
    },

    #[error("pvd {pvd}: invalid routing plan: {reason}")]
    InvalidPlan { pvd: String, reason: String },

    #[error("pvd {pvd}: cannot add route {route} to table {table}")]
    AddRoute {
        pvd: String,
        table: u32,
        route: String,
        #[source]
        source: rtnetlink::Error,
    },

    #[error("pvd {pvd}: cannot delete route {route} from table {table}")]
    DeleteRoute {
        pvd: String,
        table: u32,
        route: String,
        #[source]
        source: rtnetlink::Error,
    },

    #[error("pvd {pvd}: cannot add rule {rule}")]
    AddRule {
        pvd: String,
        rule: String,
        #[source]
        source: rtnetlink::Error,
    },

    #[error("pvd {pvd}: cannot delete rule {rule}")]
    DeleteRule {
        pvd: String,
        rule: String,
        #[source]
        source: rtnetlink::Error,
    },
}

impl NetlinkError {
    /// The kernel's errno behind this error (positive, e.g. `libc::ENODEV`
    /// when the interface went away), if the kernel refused a request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Dump { source, .. }
            | Self::AddRoute { source, .. }
            | Self::DeleteRoute { source, .. }
            | Self::AddRule { source, .. }
            | Self::DeleteRule { source, .. } => errno(source),
            Self::Connect(err) => err.raw_os_error(),
            Self::NoRuntime(_) | Self::InvalidPlan { .. } => None,
        }
    }
}

/// The positive errno of a kernel refusal. The kernel sends it negated in
/// `nlmsgerr.error`, and rtnetlink passes it on unchanged.
pub(crate) fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(ErrorMessage {
            code: Some(code), ..
        }) => Some(code.get().abs()),
        _ => None,
    }
}

/// An add that finds its object already there: fine when installing again.
pub(crate) fn is_exists(err: &rtnetlink::Error) -> bool {
    errno(err) == Some(libc::EEXIST)
}

/// A delete that finds nothing to delete: fine when removing again. IPv4
/// routes report ESRCH, IPv6 routes and rules ENOENT.
pub(crate) fn is_missing(err: &rtnetlink::Error) -> bool {
    matches!(errno(err), Some(libc::ENOENT | libc::ESRCH))
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroI32;

    use super::*;

    fn kernel_error(code: i32) -> rtnetlink::Error {
        let mut msg = ErrorMessage::default();
        msg.code = NonZeroI32::new(code);
        rtnetlink::Error::NetlinkError(msg)
    }

    #[test]
    fn errno_is_positive() {
        assert_eq!(errno(&kernel_error(-libc::EEXIST)), Some(libc::EEXIST));
        assert_eq!(errno(&rtnetlink::Error::RequestFailed), None);
    }

    #[test]
    fn tolerated_errors() {
        assert!(is_exists(&kernel_error(-libc::EEXIST)));
        assert!(!is_exists(&kernel_error(-libc::ENOENT)));
        assert!(is_missing(&kernel_error(-libc::ENOENT)));
        assert!(is_missing(&kernel_error(-libc::ESRCH)));
        assert!(!is_missing(&kernel_error(-libc::EPERM)));
        assert!(!is_missing(&rtnetlink::Error::RequestFailed));
    }
}
