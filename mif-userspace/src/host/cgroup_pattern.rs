//! Glob patterns over cgroup paths, so one policy can cover cgroups that do
//! not exist yet and whose names are not known in advance (containers,
//! pods): `/system.slice/docker-*.scope`, `/kubepods.slice/**`.
//!
//! Syntax, per path component (glob(7) without escapes):
//! - `*` any run of characters, possibly empty, never `/`;
//! - `?` exactly one character;
//! - `[abc]`, `[a-f0-9]`, `[!x]` (or `[^x]`) one character of (not of) a set;
//!   `]` first in the set is literal, so `[]]` matches `]`;
//! - `**` as a whole component: zero or more components.
//!
//! There is no escape character because systemd puts literal backslashes in
//! cgroup names (`\x2d`); a literal `*`, `?` or `[` is written `[*]`, `[?]`,
//! `[[]`.
//!
//! Matching is pure; [`existing_matches`] walks a mounted hierarchy.
use std::{fmt, fs, path::Path};

use crate::host::selector::{app_id_of, is_selector, Selector};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty cgroup pattern")]
    Empty,
    #[error(
        "cgroup pattern {pattern:?} must start with / (paths are relative to the cgroup2 root)"
    )]
    NotAbsolute { pattern: String },
    #[error(
        "cgroup pattern {pattern:?} has a {component:?} component; name cgroups from the root"
    )]
    DotComponent { pattern: String, component: String },
    #[error("cgroup pattern {pattern:?}: ** must be a whole path component, found {component:?}")]
    PartialDoubleStar { pattern: String, component: String },
    #[error("{0}")]
    Selector(String),
    #[error("cgroup pattern {pattern:?}: unterminated [ in component {component:?}")]
    UnterminatedClass { pattern: String, component: String },
    #[error(
        "cgroup pattern {pattern:?}: range {from}-{to} is reversed in component {component:?}"
    )]
    ReversedRange {
        pattern: String,
        component: String,
        from: char,
        to: char,
    },
}

/// Whether `s` is meant as a pattern rather than a literal cgroup path: a
/// glob, or a selector (`unit:`, `app:`, `user:`, see
/// [`crate::host::selector`]), which is matched the same way.
pub fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '[']) || is_selector(s)
}

/// A parsed, normalized pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupPattern {
    /// Normalized text: leading `/`, single separators, no trailing `/`,
    /// runs of `**` collapsed; a selector's key.
    text: String,
    components: Vec<Component>,
    /// The leading whole literal components, as a path (`/` when none).
    prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Component {
    Literal(String),
    Glob(Vec<Token>),
    AnyDepth,
    /// A cgroup systemd's desktop naming gives this (escaped) application
    /// id.
    App(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Token {
    Char(char),
    AnyRun,
    AnyOne,
    Class {
        negated: bool,
        /// Inclusive ranges; a single character is `(c, c)`.
        ranges: Vec<(char, char)>,
    },
}

impl CgroupPattern {
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if is_selector(pattern) {
            return Self::of_selector(pattern);
        }
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if !pattern.starts_with('/') {
            return Err(PatternError::NotAbsolute {
                pattern: pattern.into(),
            });
        }
        let mut components = Vec::new();
        let mut texts: Vec<&str> = Vec::new();
        for part in pattern.split('/').filter(|c| !c.is_empty()) {
            if part == "." || part == ".." {
                return Err(PatternError::DotComponent {
                    pattern: pattern.into(),
                    component: part.into(),
                });
            }
            let component = if part == "**" {
                // `**/**` means the same as `**`; keeping one bounds the
                // matcher's state set.
                if components.last() == Some(&Component::AnyDepth) {
                    continue;
                }
                Component::AnyDepth
            } else if part.contains("**") {
                return Err(PatternError::PartialDoubleStar {
                    pattern: pattern.into(),
                    component: part.into(),
                });
            } else if is_pattern(part) {
                Component::Glob(parse_glob(pattern, part)?)
            } else {
                Component::Literal(part.into())
            };
            components.push(component);
            texts.push(part);
        }
        let literal = components
            .iter()
            .take_while(|c| matches!(c, Component::Literal(_)))
            .count();
        let text = format!("/{}", texts.join("/"));
        let prefix = format!("/{}", texts[..literal].join("/"));
        Ok(Self {
            text,
            components,
            prefix,
        })
    }

    /// A selector as a pattern: `unit:NAME` is `/**/NAME`; `app:ID` is any
    /// cgroup named as ID's unit, at any depth; `user:UID` is
    /// `/**/user.slice/user-UID.slice`. At any depth because what counts is
    /// below the cgroup mif attaches to (the root on a host; a test's or a
    /// systemd container's own tree elsewhere).
    fn of_selector(key: &str) -> Result<Self, PatternError> {
        let selector = Selector::parse(key).map_err(PatternError::Selector)?;
        let literal = |s: &str| Component::Literal(s.into());
        let components = match &selector {
            Selector::Unit(unit) => vec![Component::AnyDepth, literal(unit)],
            Selector::App(id) => vec![
                Component::AnyDepth,
                Component::App(Selector::escaped_app_id(id)),
            ],
            Selector::User(uid) => vec![
                Component::AnyDepth,
                literal("user.slice"),
                literal(&format!("user-{uid}.slice")),
            ],
        };
        Ok(Self {
            text: selector.key(),
            components,
            prefix: "/".into(),
        })
    }

    /// The normalized pattern.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has no wildcard at all (it names one cgroup).
    pub fn is_literal(&self) -> bool {
        self.components
            .iter()
            .all(|c| matches!(c, Component::Literal(_)))
    }

    /// The leading whole components without wildcards (`/` when the first
    /// has one): every match lies at or below it, so that is the directory to
    /// walk and watch.
    pub fn literal_prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the cgroup at `rel` (relative to the cgroup2 root) matches.
    pub fn matches(&self, rel: &str) -> bool {
        self.states_after(rel)[self.components.len()]
    }

    /// Whether some cgroup strictly below `rel` could match: a walker that
    /// gets `false` need not descend into `rel`.
    pub fn could_match_below(&self, rel: &str) -> bool {
        let states = self.states_after(rel);
        states[..self.components.len()].iter().any(|&s| s)
    }

    /// Simulates the pattern as an automaton over the path's components:
    /// state `i` means the first `i` pattern components are consumed. A set
    /// of states rather than backtracking keeps several `**` linear.
    fn states_after(&self, rel: &str) -> Vec<bool> {
        let n = self.components.len();
        let mut states = vec![false; n + 1];
        states[0] = true;
        self.close(&mut states);
        for part in rel.split('/').filter(|c| !c.is_empty()) {
            let mut next = vec![false; n + 1];
            for i in (0..n).filter(|&i| states[i]) {
                match &self.components[i] {
                    Component::AnyDepth => next[i] = true,
                    Component::Literal(l) if l == part => next[i + 1] = true,
                    Component::Glob(tokens) if glob_matches(tokens, part) => next[i + 1] = true,
                    Component::App(id) if app_id_of(part) == Some(id.as_str()) => {
                        next[i + 1] = true
                    }
                    _ => {}
                }
            }
            self.close(&mut next);
            if !next.iter().any(|&s| s) {
                return next;
            }
            states = next;
        }
        states
    }

    /// `**` may match zero components: being before it is being after it.
    fn close(&self, states: &mut [bool]) {
        for i in 0..self.components.len() {
            if states[i] && self.components[i] == Component::AnyDepth {
                states[i + 1] = true;
            }
        }
    }
}

impl fmt::Display for CgroupPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_glob(pattern: &str, part: &str) -> Result<Vec<Token>, PatternError> {
    let mut tokens = Vec::new();
    let mut chars = part.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            '*' => {
                // `a*` then `*` again is the same run; one token keeps the
                // matcher's backtracking simple.
                if tokens.last() == Some(&Token::AnyRun) {
                    continue;
                }
                Token::AnyRun
            }
            '?' => Token::AnyOne,
            '[' => {
                let negated = chars.next_if(|&c| c == '!' || c == '^').is_some();
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let Some(c) = chars.next() else {
                        return Err(PatternError::UnterminatedClass {
                            pattern: pattern.into(),
                            component: part.into(),
                        });
                    };
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    // `-` is a range only between two characters; first or
                    // last in the set it is literal.
                    let is_range = chars.peek() == Some(&'-') && {
                        let mut ahead = chars.clone();
                        ahead.next();
                        ahead.peek().is_some_and(|&e| e != ']')
                    };
                    if is_range {
                        chars.next();
                        let to = chars.next().expect("checked above");
                        if to < c {
                            return Err(PatternError::ReversedRange {
                                pattern: pattern.into(),
                                component: part.into(),
                                from: c,
                                to,
                            });
                        }
                        ranges.push((c, to));
                    } else {
                        ranges.push((c, c));
                    }
                }
                Token::Class { negated, ranges }
            }
            c => Token::Char(c),
        };
        tokens.push(token);
    }
    Ok(tokens)
}

fn token_matches(token: &Token, c: char) -> bool {
    match token {
        Token::Char(t) => *t == c,
        Token::AnyOne => true,
        Token::Class { negated, ranges } => {
            ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&c)) != *negated
        }
        Token::AnyRun => unreachable!("runs are handled by glob_matches"),
    }
}

/// Classic wildcard matching with one backtrack point: on a mismatch, let
/// the last `*` swallow one more character. Correct because `*` matches any
/// run, and linear-ish for the short names of cgroups.
fn glob_matches(tokens: &[Token], name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    let (mut t, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        match tokens.get(t) {
            Some(Token::AnyRun) => {
                backtrack = Some((t, n));
                t += 1;
            }
            Some(token) if token_matches(token, name[n]) => {
                t += 1;
                n += 1;
            }
            _ => match backtrack {
                Some((bt, bn)) => {
                    t = bt + 1;
                    n = bn + 1;
                    backtrack = Some((bt, bn + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|t| *t == Token::AnyRun)
}

/// Where a pattern's matches below the attach cgroup `attach` can be (both
/// relative to the cgroup2 root): the deeper of its literal prefix and
/// `attach` when one contains the other, `None` when they lie apart. A
/// selector's prefix is `/`: on a host attached at the root that is the
/// whole tree, for an instance attached to a sub-tree only that sub-tree
/// (a walk and watches of the host's whole tree for an instance that can
/// steer none of it cost it seconds when another made 100,000 cgroups).
pub fn search_root<'a>(prefix: &'a str, attach: &'a str) -> Option<&'a str> {
    let within = |path: &str, ancestor: &str| {
        ancestor == "/"
            || path == ancestor
            || path
                .strip_prefix(ancestor)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if within(attach, prefix) {
        Some(attach)
    } else if within(prefix, attach) {
        Some(prefix)
    } else {
        None
    }
}

/// The cgroups (paths relative to the root) at or below `from` in the
/// cgroup2 hierarchy at `cgroup2_mount` that match `pattern`, sorted
/// (`from`: its literal prefix, or [`search_root`]). Walks only into
/// directories below which a match is possible. Directories that vanish
/// during the walk are skipped: cgroups come and go, and a watcher
/// reports what the walk missed.
pub fn existing_matches(cgroup2_mount: &Path, pattern: &CgroupPattern, from: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![from.to_string()];
    while let Some(rel) = stack.pop() {
        let path = cgroup2_mount.join(rel.trim_start_matches('/'));
        if !path.is_dir() {
            continue;
        }
        if pattern.matches(&rel) {
            found.push(rel.clone());
        }
        if !pattern.could_match_below(&rel) {
            continue;
        }
        let Ok(entries) = fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            stack.push(if rel == "/" {
                format!("/{name}")
            } else {
                format!("{rel}/{name}")
            });
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> CgroupPattern {
        CgroupPattern::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// Every match below the root, as an instance attached there finds them.
    fn all_matches(mount: &Path, pattern: &CgroupPattern) -> Vec<String> {
        existing_matches(mount, pattern, pattern.literal_prefix())
    }

    #[test]
    fn searches_stay_within_the_attach_cgroup() {
        assert_eq!(search_root("/", "/"), Some("/"));
        assert_eq!(search_root("/", "/mif-test/x"), Some("/mif-test/x"));
        assert_eq!(search_root("/kubepods.slice", "/"), Some("/kubepods.slice"));
        assert_eq!(search_root("/a", "/a/b"), Some("/a/b"));
        assert_eq!(search_root("/a/b/c", "/a/b"), Some("/a/b/c"));
        assert_eq!(search_root("/ab", "/a"), None);
        assert_eq!(search_root("/kubepods.slice", "/mif-test"), None);
    }

    #[test]
    fn star_stays_within_one_component() {
        let pat = p("/system.slice/docker-*.scope");
        assert!(pat.matches("/system.slice/docker-abc.scope"));
        assert!(pat.matches("/system.slice/docker-.scope"));
        assert!(!pat.matches("/system.slice/docker-abc.scope/child"));
        assert!(!pat.matches("/system.slice/docker-a/b.scope"));
        assert!(!pat.matches("/system.slice"));
        assert!(!pat.matches("/system.slice/podman-abc.scope"));
        assert!(!pat.matches("/other.slice/docker-abc.scope"));
        assert!(p("/a/*").matches("/a/b"));
        assert!(!p("/a/*").matches("/a"));
        assert!(!p("/a/*").matches("/a/b/c"));
    }

    #[test]
    fn star_backtracks() {
        assert!(p("/a*b*c").matches("/aXbYbZc"));
        assert!(p("/*.scope").matches("/x.scope.scope"));
        assert!(!p("/*.scope").matches("/x.scope.x"));
        assert!(p("/**").matches("/x"));
        assert!(p("/*x*").matches("/x"));
        assert!(!p("/*x*").matches("/y"));
    }

    #[test]
    fn question_mark_is_one_character() {
        let pat = p("/user-????.slice");
        assert!(pat.matches("/user-1000.slice"));
        assert!(!pat.matches("/user-100.slice"));
        assert!(!pat.matches("/user-10000.slice"));
        // One character, not one byte.
        assert!(p("/?").matches("/é"));
        assert!(!p("/?").matches("/a/b"));
    }

    #[test]
    fn classes() {
        let pat = p("/docker-[0-9a-f][0-9a-f]*.scope");
        assert!(pat.matches("/docker-1f.scope"));
        assert!(pat.matches("/docker-1f00.scope"));
        assert!(!pat.matches("/docker-1g.scope"));
        assert!(p("/[!a]").matches("/b"));
        assert!(!p("/[!a]").matches("/a"));
        assert!(p("/[^a]").matches("/b"));
        assert!(p("/[]]").matches("/]"));
        assert!(p("/[a-]").matches("/-"));
        assert!(p("/[-a]").matches("/-"));
        assert!(!p("/[a-]").matches("/b"));
        // Literal wildcard characters through classes.
        assert!(p("/a[*]").matches("/a*"));
        assert!(!p("/a[*]").matches("/ab"));
        assert!(p("/[[]x").matches("/[x"));
    }

    #[test]
    fn double_star_at_end_covers_the_directory_and_everything_below() {
        let pat = p("/kubepods.slice/**");
        assert!(pat.matches("/kubepods.slice"));
        assert!(pat.matches("/kubepods.slice/a"));
        assert!(pat.matches("/kubepods.slice/a/b/c"));
        assert!(!pat.matches("/kubepods"));
        assert!(!pat.matches("/kubepods.slicex"));
        assert!(!pat.matches("/"));
        let all = p("/**");
        assert!(all.matches("/"));
        assert!(all.matches("/a/b"));
    }

    #[test]
    fn double_star_in_the_middle() {
        let pat = p("/kubepods.slice/**/cri-containerd-*.scope");
        assert!(pat.matches("/kubepods.slice/cri-containerd-1.scope"));
        assert!(pat.matches("/kubepods.slice/a/cri-containerd-1.scope"));
        assert!(pat.matches("/kubepods.slice/a/b/c/cri-containerd-1.scope"));
        assert!(!pat.matches("/kubepods.slice/a/cri-containerd-1.scope/x"));
        assert!(!pat.matches("/kubepods.slice"));
        let two = p("/**/x/**/y");
        assert!(two.matches("/x/y"));
        assert!(two.matches("/a/x/b/c/y"));
        assert!(two.matches("/x/x/y/y"));
        assert!(!two.matches("/y/x"));
        assert!(p("/**/a").matches("/a"));
        assert!(p("/**/a").matches("/b/c/a"));
        assert!(!p("/**/a").matches("/a/b"));
    }

    #[test]
    fn paths_are_normalized_before_matching() {
        let pat = p("//system.slice//docker-*.scope/");
        assert_eq!(pat.as_str(), "/system.slice/docker-*.scope");
        assert!(pat.matches("/system.slice//docker-a.scope/"));
        assert_eq!(p("/a/**/**/b").as_str(), "/a/**/b");
        assert_eq!(p("/a/**/**/b"), p("/a/**/b"));
        assert_eq!(p("/a*b").as_str(), "/a*b");
    }

    #[test]
    fn literal_prefix_is_whole_components() {
        assert_eq!(
            p("/system.slice/docker-*.scope").literal_prefix(),
            "/system.slice"
        );
        assert_eq!(p("/kubepods.slice/**").literal_prefix(), "/kubepods.slice");
        assert_eq!(p("/a/b/*/c").literal_prefix(), "/a/b");
        assert_eq!(p("/*").literal_prefix(), "/");
        assert_eq!(p("/**").literal_prefix(), "/");
        assert_eq!(p("/a/b").literal_prefix(), "/a/b");
        assert_eq!(p("/").literal_prefix(), "/");
        assert_eq!(p("//a//b*").literal_prefix(), "/a");
        assert!(p("/a/b").is_literal());
        assert!(p("/").is_literal());
        assert!(!p("/a/?").is_literal());
        assert!(p("/").matches("/"));
        assert!(!p("/").matches("/a"));
    }

    #[test]
    fn could_match_below_prunes_walks() {
        let pat = p("/system.slice/docker-*.scope");
        assert!(pat.could_match_below("/"));
        assert!(pat.could_match_below("/system.slice"));
        assert!(!pat.could_match_below("/system.slice/docker-a.scope"));
        assert!(!pat.could_match_below("/user.slice"));
        let deep = p("/kubepods.slice/**");
        assert!(deep.could_match_below("/kubepods.slice/a/b"));
        assert!(!deep.could_match_below("/kubepods"));
        assert!(!p("/a").could_match_below("/a"));
        assert!(p("/a").could_match_below("/"));
    }

    #[test]
    fn parse_errors_name_the_pattern() {
        assert_eq!(CgroupPattern::parse(""), Err(PatternError::Empty));
        let err = CgroupPattern::parse("system.slice/*").unwrap_err();
        assert!(matches!(err, PatternError::NotAbsolute { .. }));
        assert!(err.to_string().contains("\"system.slice/*\""), "{err}");
        for bad in ["/a/../b", "/./a", "/a/.."] {
            assert!(
                matches!(
                    CgroupPattern::parse(bad),
                    Err(PatternError::DotComponent { .. })
                ),
                "{bad}"
            );
        }
        for bad in ["/a**", "/**b", "/a/x**y/c"] {
            let err = CgroupPattern::parse(bad).unwrap_err();
            assert!(
                matches!(err, PatternError::PartialDoubleStar { .. }),
                "{bad}"
            );
            assert!(err.to_string().starts_with("cgroup pattern"), "{err}");
        }
        for bad in ["/a[", "/a[bc", "/[]", "/[!]"] {
            assert!(
                matches!(
                    CgroupPattern::parse(bad),
                    Err(PatternError::UnterminatedClass { .. })
                ),
                "{bad}"
            );
        }
        // A `/` cannot hide inside a class: it splits the component first.
        assert!(CgroupPattern::parse("/a[/]").is_err());
        let err = CgroupPattern::parse("/[z-a]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cgroup pattern \"/[z-a]\": range z-a is reversed in component \"[z-a]\""
        );
    }

    #[test]
    fn is_pattern_spots_wildcards() {
        assert!(is_pattern("/a/*"));
        assert!(is_pattern("/a/?"));
        assert!(is_pattern("/a/[bc]"));
        assert!(!is_pattern("/system.slice/foo.service"));
        assert!(!is_pattern("/system.slice/dev-disk-by\\x2duuid.mount"));
    }

    #[test]
    fn existing_matches_walks_from_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "system.slice/docker-a.scope/inner",
            "system.slice/docker-b.scope",
            "system.slice/ssh.service",
            "user.slice/docker-c.scope",
        ] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        fs::write(dir.path().join("system.slice/docker-f.scope"), "").unwrap();
        assert_eq!(
            all_matches(dir.path(), &p("/system.slice/docker-*.scope")),
            [
                "/system.slice/docker-a.scope",
                "/system.slice/docker-b.scope"
            ]
        );
        assert_eq!(
            all_matches(dir.path(), &p("/**/docker-*.scope")),
            [
                "/system.slice/docker-a.scope",
                "/system.slice/docker-b.scope",
                "/user.slice/docker-c.scope"
            ]
        );
        assert_eq!(
            all_matches(dir.path(), &p("/system.slice/docker-a.scope/**")),
            [
                "/system.slice/docker-a.scope",
                "/system.slice/docker-a.scope/inner"
            ]
        );
        assert!(all_matches(dir.path(), &p("/nowhere/*")).is_empty());
        assert_eq!(all_matches(dir.path(), &p("/")), ["/"]);
        // From a sub-tree, only what is in it.
        assert_eq!(
            existing_matches(dir.path(), &p("/**/docker-*.scope"), "/user.slice"),
            ["/user.slice/docker-c.scope"]
        );
    }

    #[test]
    fn selectors_match_as_systemd_lays_cgroups_out() {
        let app = CgroupPattern::parse("app:org.mozilla.firefox").unwrap();
        assert_eq!(app.as_str(), "app:org.mozilla.firefox");
        assert_eq!(app.literal_prefix(), "/");
        let apps = "/user.slice/user-1000.slice/user@1000.service/app.slice";
        for name in [
            "app-gnome-org.mozilla.firefox-12345.scope",
            "app-flatpak-org.mozilla.firefox-3.scope",
            "app-org.mozilla.firefox@9f3a.service",
        ] {
            assert!(app.matches(&format!("{apps}/{name}")), "{name}");
        }
        // A nested slice of the desktop's own is searched too.
        assert!(app.matches(&format!(
            "{apps}/app-gnome.slice/app-gnome-org.mozilla.firefox-7.scope"
        )));
        assert!(!app.matches(&format!(
            "{apps}/app-gnome-org.mozilla.firefoxHelper-1.scope"
        )));
        assert!(!app.matches("/system.slice/org.mozilla.firefox.service"));
        assert!(app.could_match_below(apps));
        assert!(!app.is_literal());

        let unit = CgroupPattern::parse("unit:backup.service").unwrap();
        assert_eq!(unit.literal_prefix(), "/");
        for at in [
            "/system.slice/backup.service",
            "/system.slice/batch.slice/backup.service",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/backup.service",
        ] {
            assert!(unit.matches(at), "{at}");
        }
        assert!(!unit.matches("/system.slice/backup.service/child"));
        assert!(!unit.matches("/system.slice/old-backup.service"));

        let user = CgroupPattern::parse("user:1000").unwrap();
        assert!(user.matches("/user.slice/user-1000.slice"));
        assert!(user.matches("/test-parent/user.slice/user-1000.slice"));
        assert!(!user.matches("/user.slice/user-10000.slice"));
        assert!(is_pattern("user:1000"), "resolved as patterns are");
        assert!(CgroupPattern::parse("app:org/evil").is_err());
    }
}
