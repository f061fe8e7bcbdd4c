//! The hooks attached only once a policy needs them
//! ([`names::ON_DEMAND_HOOKS`]): verified with the others at start, so a
//! kernel that refuses one stops the start as before, and attached to the
//! attach cgroup by the first pass that writes a policy using their
//! feature, before it writes that policy. Once attached they stay until
//! the daemon stops: a reload that drops the last `dns = "pvd"` policy
//! must still translate the replies of queries already redirected.
use std::{fs::File, os::fd::AsFd as _};

use aya::programs::ProgramFd;
use mif_common::names;

use crate::{
    apply::{
        loader::{self, LoadError},
        pins::PinDir,
    },
    model::config::{DnsMode, PolicyTerms},
};

/// What the policies in force use of the on-demand hooks' features.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookNeeds {
    /// Some policy has `dns = "pvd"`: redirected queries' replies and
    /// peer names are translated back (recvmsg, getpeername).
    pub dns_replies: bool,
    /// Some policy is strict: binds to other networks' addresses are
    /// refused (bind).
    pub strict_binds: bool,
}

impl HookNeeds {
    /// Of a set of policies' terms.
    pub fn of<'a>(terms: impl IntoIterator<Item = &'a PolicyTerms>) -> Self {
        let mut needs = Self::default();
        for t in terms {
            needs.dns_replies |= t.dns == DnsMode::Pvd;
            needs.strict_binds |= t.strict;
            if needs == Self::all() {
                break;
            }
        }
        needs
    }

    /// Every feature (what a daemon without this knowledge attached).
    pub fn all() -> Self {
        Self {
            dns_replies: true,
            strict_binds: true,
        }
    }

    /// Whether hook `program` is needed: every hook outside
    /// [`names::ON_DEMAND_HOOKS`] always is.
    pub fn wants(&self, program: &str) -> bool {
        match program {
            names::PROG_RECVMSG4
            | names::PROG_RECVMSG6
            | names::PROG_GETPEER4
            | names::PROG_GETPEER6 => self.dns_replies,
            names::PROG_BIND4 | names::PROG_BIND6 => self.strict_binds,
            _ => true,
        }
    }
}

/// A verified hook waiting for a policy to need it.
pub struct Waiting {
    pub program: &'static str,
    pub fd: ProgramFd,
    /// uapi `enum bpf_attach_type` of its link.
    pub attach_type: u32,
}

/// The on-demand hooks not attached yet, and where to attach them.
pub struct OnDemandHooks {
    pins: PinDir,
    cgroup: File,
    waiting: Vec<Waiting>,
}

impl OnDemandHooks {
    pub fn new(pins: PinDir, cgroup: File, waiting: Vec<Waiting>) -> Self {
        Self {
            pins,
            cgroup,
            waiting,
        }
    }

    /// Attaches (and pins) each waiting hook that `needs` wants. One that
    /// fails stays waiting, for the next pass to try again.
    pub fn attach_needed(&mut self, needs: HookNeeds) -> Result<(), LoadError> {
        let mut result = Ok(());
        self.waiting.retain(|hook| {
            if result.is_err() || !needs.wants(hook.program) {
                return true;
            }
            let attached =
                loader::raw::link_create(hook.fd.as_fd(), self.cgroup.as_fd(), hook.attach_type)
                    .map_err(|e| LoadError::Program {
                        program: hook.program,
                        action: "attach",
                        source: Box::new(aya::programs::ProgramError::IOError(e)),
                    })
                    .and_then(|link| loader::pin_link(link, hook.program, &self.pins));
            match attached {
                Ok(()) => {
                    log::info!("{}: attached (a policy needs it now)", hook.program);
                    false
                }
                Err(e) => {
                    result = Err(e);
                    true
                }
            }
        });
        result
    }

    /// The hooks still waiting, for `mif status`.
    pub fn waiting(&self) -> Vec<&'static str> {
        self.waiting.iter().map(|h| h.program).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(dns: DnsMode, strict: bool) -> PolicyTerms {
        PolicyTerms {
            prefer: vec!["wlan0".into()],
            strict,
            dns,
            ..Default::default()
        }
    }

    #[test]
    fn needs_follow_the_policies_terms() {
        let plain = terms(DnsMode::System, false);
        assert_eq!(HookNeeds::of([&plain]), HookNeeds::default());
        let dns = terms(DnsMode::Pvd, false);
        let strict = terms(DnsMode::System, true);
        let both = HookNeeds::of([&plain, &dns, &strict]);
        assert_eq!(both, HookNeeds::all());
        let only_dns = HookNeeds::of([&plain, &dns]);
        assert!(only_dns.wants(names::PROG_RECVMSG4) && only_dns.wants(names::PROG_GETPEER6));
        assert!(!only_dns.wants(names::PROG_BIND4));
    }

    #[test]
    fn every_other_hook_is_always_wanted() {
        let none = HookNeeds::default();
        for program in names::HOOKS {
            assert_eq!(
                none.wants(program),
                !names::ON_DEMAND_HOOKS.contains(&program),
                "{program}"
            );
        }
        for program in names::ON_DEMAND_HOOKS {
            assert!(HookNeeds::all().wants(program), "{program}");
        }
    }
}
