//! Policies by what users think in (a systemd unit, a desktop application,
//! a user) instead of by cgroup path, which on a real machine is not known
//! in advance: desktop environments start each application in a transient
//! unit named after it with a random suffix, and services live at depths
//! that depend on their slices.
//!
//! A selector is kept as a key of its own in place of a cgroup path
//! (`unit:backup.service`, `app:org.mozilla.firefox`, `user:1000`) and is
//! matched as a [`CgroupPattern`] is: against every cgroup that exists and
//! each one that appears, so a policy whose application is not running is
//! pending, and applies when it starts.
//!
//! Naming, after systemd's "Desktop Environment Integration" document:
//! applications run in `app[-<launcher>]-<ApplicationID>-<RANDOM>.scope` or
//! `app[-<launcher>]-<ApplicationID>[@<RANDOM>].service`, under the user's
//! manager (`/user.slice/user-UID.slice/user@UID.service/...`, at whatever
//! depth its slices put them); neither
//! the launcher nor the id contains a `-` (systemd escapes it as `\x2d`), so
//! the id is found exactly, and `org.mozilla.firefoxHelper` is never
//! `org.mozilla.firefox`. A user's processes are all in `user-UID.slice`.
//!
//! [`CgroupPattern`]: crate::host::cgroup_pattern::CgroupPattern
use std::fmt;

use mif_common::{SelectorKey, SELECTOR_APP, SELECTOR_UNIT, SELECTOR_USER};

/// The key prefixes, one per kind.
const UNIT: &str = "unit:";
const APP: &str = "app:";
const USER: &str = "user:";

/// Unit types a `unit` selector may name (those that have cgroups).
const UNIT_SUFFIXES: [&str; 6] = [".service", ".scope", ".slice", ".socket", ".mount", ".swap"];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// A systemd unit's cgroup, wherever it lives.
    Unit(String),
    /// Every cgroup systemd's desktop naming gives this application id.
    App(String),
    /// Everything the user runs: `/user.slice/user-UID.slice`.
    User(u32),
}

/// Whether `key` is a selector's key rather than a cgroup path.
pub fn is_selector(key: &str) -> bool {
    [UNIT, APP, USER].iter().any(|p| key.starts_with(p))
}

impl Selector {
    /// Parses a key (`unit:NAME`, `app:ID`, `user:UID`).
    pub fn parse(key: &str) -> Result<Self, String> {
        if let Some(unit) = key.strip_prefix(UNIT) {
            return Self::unit(unit);
        }
        if let Some(app) = key.strip_prefix(APP) {
            return Self::app(app);
        }
        if let Some(uid) = key.strip_prefix(USER) {
            return uid
                .parse()
                .map(Selector::User)
                .map_err(|_| format!("{key:?}: a user selector's key holds a uid"));
        }
        Err(format!("{key:?} is not a selector (unit:, app: or user:)"))
    }

    /// A unit selector, checked as systemd names units.
    pub fn unit(name: &str) -> Result<Self, String> {
        let chars_ok = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '\\' | '-' | '@'));
        if !chars_ok || name.len() > 255 || name.starts_with('.') {
            return Err(format!(
                "{name:?} is not a systemd unit name (letters, digits, ':', '_', '.', '\\', '-', '@')"
            ));
        }
        if !UNIT_SUFFIXES
            .iter()
            .any(|s| name.len() > s.len() && name.ends_with(s))
        {
            return Err(format!(
                "{name:?}: name the unit with its type ({})",
                UNIT_SUFFIXES.join(", ")
            ));
        }
        Ok(Selector::Unit(name.into()))
    }

    /// An application selector by its id (reverse DNS, as in its
    /// `.desktop` file's name: `org.mozilla.firefox`).
    pub fn app(id: &str) -> Result<Self, String> {
        let ok = !id.is_empty()
            && id.len() <= 255
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(format!(
                "{id:?} is not an application id (letters, digits, '.', '_', '-': org.mozilla.firefox)"
            ));
        }
        Ok(Selector::App(id.into()))
    }

    /// A user selector by name or uid; a name must exist (it is looked up
    /// now, as the uid is what the cgroup is named by).
    pub fn user(user: &str) -> Result<Self, String> {
        if let Ok(uid) = user.parse::<u32>() {
            return Ok(Selector::User(uid));
        }
        match nix::unistd::User::from_name(user) {
            Ok(Some(u)) => Ok(Selector::User(u.uid.as_raw())),
            Ok(None) => Err(format!(
                "no user named {user:?} (a uid works for users not yet created)"
            )),
            Err(e) => Err(format!("looking up user {user:?}: {e}")),
        }
    }

    /// The key the policy is kept under.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// The key the kernel finds this selector by when a cgroup is made
    /// (mif-ebpf's `cgroup_naming`, which reads names as [`app_id_of`]
    /// does and as [`crate::host::cgroup_pattern`] matches selectors):
    /// the unit's name, the user's slice (below `user.slice`), the escaped
    /// application id. `None` when longer than the key holds
    /// ([`mif_common::SELECTOR_NAME_MAX`]): the daemon's watcher still
    /// matches it.
    pub fn kernel_key(&self) -> Option<SelectorKey> {
        match self {
            Selector::Unit(unit) => SelectorKey::new(SELECTOR_UNIT, unit.as_bytes()),
            Selector::App(id) => {
                SelectorKey::new(SELECTOR_APP, Self::escaped_app_id(id).as_bytes())
            }
            Selector::User(uid) => {
                SelectorKey::new(SELECTOR_USER, format!("user-{uid}.slice").as_bytes())
            }
        }
    }

    /// The application id as it appears in unit names (`-` escaped).
    pub fn escaped_app_id(id: &str) -> String {
        id.replace('-', "\\x2d")
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Unit(u) => write!(f, "{UNIT}{u}"),
            Selector::App(a) => write!(f, "{APP}{a}"),
            Selector::User(uid) => write!(f, "{USER}{uid}"),
        }
    }
}

/// The application id in a cgroup's name, by systemd's desktop naming; None
/// when the name is not an application's unit.
pub fn app_id_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("app-")?;
    if let Some(scope) = rest.strip_suffix(".scope") {
        // [launcher-]id-random; a random part is a number or hex, never
        // dotted as an id is (`app-gnome-org.example.App.scope` has none).
        let parts: Vec<&str> = scope.split('-').collect();
        let random = |r: &str| !r.is_empty() && !r.contains('.');
        return match parts.as_slice() {
            [id, r] if random(r) => Some(*id),
            [_launcher, id, r] if random(r) => Some(*id),
            _ => None,
        }
        .filter(|id| !id.is_empty());
    }
    let service = rest.strip_suffix(".service")?;
    // [launcher-]id[@random]
    let named = service.split('@').next()?;
    let parts: Vec<&str> = named.split('-').collect();
    match parts.as_slice() {
        [id] => Some(*id),
        [_launcher, id] => Some(*id),
        _ => None,
    }
    .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_ids_are_found_for_every_launcher_and_suffix() {
        for (name, id) in [
            (
                "app-gnome-org.mozilla.firefox-12345.scope",
                "org.mozilla.firefox",
            ),
            ("app-org.mozilla.firefox-12345.scope", "org.mozilla.firefox"),
            (
                "app-flatpak-org.mozilla.firefox-3.scope",
                "org.mozilla.firefox",
            ),
            (
                "app-org.mozilla.firefox@9f3a.service",
                "org.mozilla.firefox",
            ),
            (
                "app-gnome-org.mozilla.firefox@9f3a.service",
                "org.mozilla.firefox",
            ),
            ("app-org.mozilla.firefox.service", "org.mozilla.firefox"),
            ("app-kde-org.kde.konsole-7f2c.scope", "org.kde.konsole"),
        ] {
            assert_eq!(app_id_of(name), Some(id), "{name}");
        }
        for name in [
            "app.slice",
            "app-.scope",
            "session-2.scope",
            "app-gnome-org.mozilla.firefox.scope",
            "app-a-b-c-d.scope",
            "firefox.service",
        ] {
            assert_eq!(app_id_of(name), None, "{name}");
        }
    }

    #[test]
    fn an_id_that_merely_shares_a_prefix_is_another_app() {
        let helper = "app-gnome-org.mozilla.firefoxHelper-12.scope";
        assert_eq!(app_id_of(helper), Some("org.mozilla.firefoxHelper"));
        assert_ne!(app_id_of(helper), Some("org.mozilla.firefox"));
    }

    #[test]
    fn keys_round_trip_and_bad_names_are_refused() {
        for key in [
            "unit:backup.service",
            "app:org.mozilla.firefox",
            "user:1000",
        ] {
            assert!(is_selector(key));
            assert_eq!(Selector::parse(key).unwrap().key(), key);
        }
        assert!(!is_selector("/system.slice/foo.service"));
        assert!(Selector::unit("backup").unwrap_err().contains("type"));
        assert!(Selector::unit("a b.service").is_err());
        assert!(Selector::app("org/evil").is_err());
        assert!(Selector::parse("user:alice").is_err(), "keys hold uids");
        assert_eq!(Selector::user("0").unwrap(), Selector::User(0));
        assert_eq!(Selector::user("root").unwrap(), Selector::User(0));
        assert!(Selector::user("no-such-user-here").is_err());
        assert_eq!(
            Selector::escaped_app_id("org.example.my-app"),
            "org.example.my\\x2dapp"
        );
    }

    #[test]
    fn kernel_keys_name_what_the_kernel_reads_from_a_new_cgroup() {
        let key = |s: &str| Selector::parse(s).unwrap().kernel_key().unwrap();
        assert_eq!(key("unit:backup.service").kind, SELECTOR_UNIT);
        assert_eq!(key("unit:backup.service").name(), b"backup.service");
        assert_eq!(key("user:1000").name(), b"user-1000.slice");
        assert_eq!(key("app:org.example.my-app").kind, SELECTOR_APP);
        assert_eq!(
            key("app:org.example.my-app").name(),
            b"org.example.my\\x2dapp"
        );
        let long = format!("app:org.{}", "a".repeat(200));
        assert_eq!(Selector::parse(&long).unwrap().kernel_key(), None);
    }
}
