//! `mif_set_process_pvd` (the MIF API's `setprocnetwork`): the pure part.
//! The daemon moves the asking process into `mif-pvd-<PvD>`, a cgroup
//! below its own, whose policy is *derived* from the policy above it (the
//! process's *origin*): the chosen PvD first, then the rest of the origin's
//! preference, and its strictness, DNS mode, exclusions and `allow` list.
//!
//! A derived policy is never an authority of its own: it is derived again
//! from its origin whenever the policies change, and removed when the
//! origin no longer allows its PvD (the process then falls back to the
//! origin's policy, which the kernel's walk finds above it). So an admin
//! who tightens a policy tightens its processes' choices too.
use crate::model::config::{PolicyTerms, ALLOW_ANY};

/// The leaf name of the cgroups the daemon makes, before the PvD's name.
pub const PREFIX: &str = "mif-pvd-";

/// Most derived policies at once: the control socket is open to every
/// local user, and without a bound they could fill the policy map.
pub const MAX_PROCESS_POLICIES: usize = 1024;

/// The cgroup a process's choices are judged from: its own, or, for one
/// already in a `mif-pvd-*` cgroup, that cgroup's parent.
pub fn base_of(own: &str) -> String {
    match own.rsplit_once('/') {
        Some((parent, leaf)) if leaf.starts_with(PREFIX) => {
            if parent.is_empty() { "/" } else { parent }.to_owned()
        }
        _ => own.to_owned(),
    }
}

/// The `mif-pvd-*` cgroup for `pvd` below `base`.
pub fn cgroup_for(base: &str, pvd: &str) -> String {
    format!("{}/{PREFIX}{pvd}", base.trim_end_matches('/'))
}

/// For a derived policy's cgroup, its base and PvD.
pub fn parse(cgroup: &str) -> Option<(String, &str)> {
    let (parent, leaf) = cgroup.rsplit_once('/')?;
    let pvd = leaf.strip_prefix(PREFIX)?;
    Some((if parent.is_empty() { "/" } else { parent }.to_owned(), pvd))
}

/// Whether a PvD name may stand in a cgroup's name as it is: the config's
/// PvD name characters, so no pattern characters and no `/`.
pub fn is_plain_name(pvd: &str) -> bool {
    !pvd.is_empty()
        && pvd
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The derived policy for choosing `pvd` under `origin` (`None`: no
/// policy covers the process), or why the origin does not allow it, in
/// the terms of the per-socket choice (whose errno the words carry).
pub fn derive(origin: Option<&PolicyTerms>, pvd: &str) -> Result<PolicyTerms, String> {
    let Some(t) = origin else {
        // Under no policy the process could choose any PvD: it still may.
        return Ok(PolicyTerms {
            prefer: vec![pvd.to_owned()],
            allow: vec![ALLOW_ANY.to_owned()],
            ..Default::default()
        });
    };
    let allowed = !t.strict && t.allow.iter().any(|n| n == pvd || n == ALLOW_ANY);
    if !t.prefer.iter().any(|n| n == pvd) && !allowed {
        return Err(format!(
            "PvD {pvd:?} is not one this process's policy allows it to choose (EPERM)"
        ));
    }
    let mut prefer = vec![pvd.to_owned()];
    prefer.extend(t.prefer.iter().filter(|n| *n != pvd).cloned());
    // A PvD from `allow` in front of a full preference list pushes the
    // last one out of it, into `allow`, where it stays choosable (strict
    // policies cannot get here: their PvD is one of `prefer`).
    let mut allow = t.allow.clone();
    for pushed in prefer.split_off(prefer.len().min(mif_common::MAX_PREFER)) {
        if !allow.contains(&pushed) {
            allow.push(pushed);
        }
    }
    Ok(PolicyTerms {
        prefer,
        allow,
        ..t.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(prefer: &[&str], allow: &[&str], strict: bool) -> PolicyTerms {
        PolicyTerms {
            prefer: prefer.iter().map(|s| s.to_string()).collect(),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            strict,
            ..Default::default()
        }
    }

    #[test]
    fn a_derived_policy_puts_the_choice_first_and_keeps_the_rest() {
        let origin = terms(&["wlan0", "wwan0"], &["vpn"], false);
        let d = derive(Some(&origin), "wwan0").unwrap();
        assert_eq!(
            (d.prefer, d.allow),
            (vec!["wwan0".into(), "wlan0".into()], vec!["vpn".into()])
        );
        let d = derive(Some(&origin), "vpn").unwrap();
        assert_eq!(d.prefer, ["vpn", "wlan0", "wwan0"]);
        assert!(derive(Some(&origin), "tun9").unwrap_err().contains("EPERM"));
        let any = terms(&["wlan0"], &[ALLOW_ANY], false);
        assert_eq!(
            derive(Some(&any), "tun9").unwrap().prefer,
            ["tun9", "wlan0"]
        );
        let none = derive(None, "tun9").unwrap();
        assert_eq!(
            (none.prefer, none.allow),
            (vec!["tun9".into()], vec![ALLOW_ANY.into()])
        );
    }

    #[test]
    fn a_strict_origin_allows_its_prefer_list_only_and_stays_strict() {
        let origin = terms(&["wwan0", "vpn"], &[], true);
        let d = derive(Some(&origin), "vpn").unwrap();
        assert!(d.strict);
        assert_eq!(d.prefer, ["vpn", "wwan0"]);
        assert!(derive(Some(&origin), "wlan0").is_err());
    }

    #[test]
    fn a_full_preference_list_pushes_its_last_pvd_into_allow() {
        let full: Vec<String> = (0..mif_common::MAX_PREFER)
            .map(|i| format!("p{i}"))
            .collect();
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let origin = terms(&full, &["extra"], false);
        let d = derive(Some(&origin), "extra").unwrap();
        assert_eq!(d.prefer.len(), mif_common::MAX_PREFER);
        assert_eq!(d.prefer[0], "extra");
        assert!(d.allow.contains(&"p7".to_string()), "{:?}", d.allow);
    }

    #[test]
    fn cgroups_are_named_and_read_back() {
        assert_eq!(base_of("/a/b"), "/a/b");
        assert_eq!(base_of("/a/b/mif-pvd-wwan0"), "/a/b");
        assert_eq!(base_of("/mif-pvd-wwan0"), "/");
        assert_eq!(cgroup_for("/a/b", "wwan0"), "/a/b/mif-pvd-wwan0");
        assert_eq!(cgroup_for("/", "wwan0"), "/mif-pvd-wwan0");
        assert_eq!(parse("/a/b/mif-pvd-wwan0"), Some(("/a/b".into(), "wwan0")));
        assert_eq!(parse("/a/b/c"), None);
        assert!(is_plain_name("wwan0") && is_plain_name("vpn.corp-1"));
        assert!(!is_plain_name("eth*") && !is_plain_name("a/b") && !is_plain_name(""));
    }
}
