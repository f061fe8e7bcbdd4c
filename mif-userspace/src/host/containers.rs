//! Finding the cgroup of a container or a Kubernetes pod from its id, so a
//! policy can name `docker ps`'s id instead of a cgroup path.
//!
//! Runtimes name their cgroups after the container id in a few known layouts
//! (systemd driver: `docker-<id>.scope` units in slices; cgroupfs driver:
//! plain directories), so the search walks only those layouts' top-level
//! directories, to a bounded depth, and recognizes containers by name. No
//! runtime is asked: it works with none of their sockets reachable, and the
//! answer is the cgroup the kernel programs will really see.
use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use nix::errno::Errno;

use crate::host::subdirs::Subdirs;

/// Which runtime created the cgroup, as its name tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Podman,
    /// Kubernetes' containerd (`cri-containerd-<id>.scope`, or a bare id under
    /// `/kubepods`, which cri-dockerd also uses: the layouts do not say).
    Containerd,
    #[serde(rename = "cri-o")]
    CriO,
    /// A Kubernetes pod (all its containers), named by its UID.
    Kubernetes,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Kubernetes => "kubernetes pod",
        })
    }
}

/// A container's (or pod's) cgroup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContainerCgroup {
    pub runtime: Runtime,
    /// The full id: 64 hexadecimal digits, or for a pod its UID with dashes.
    pub id: String,
    /// Path relative to the cgroup2 root, starting with `/`.
    pub rel: String,
}

impl fmt::Display for ContainerCgroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} at {}", self.runtime, self.id, self.rel)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("malformed container id {id:?}: {reason}")]
    MalformedId { id: String, reason: String },
    #[error(
        "no container or pod {id:?} in the cgroup2 hierarchy at {}: looked for {}{}",
        mount.display(),
        searched.join(", "),
        present_note(roots_present)
    )]
    NotFound {
        id: String,
        mount: PathBuf,
        /// The layouts looked for, `<id>` standing for the id.
        searched: Vec<String>,
        /// The layouts' top-level directories that exist on this host.
        roots_present: Vec<String>,
    },
    #[error(
        "container id prefix {id:?} is ambiguous: it matches {}; give more digits",
        list(matches)
    )]
    Ambiguous {
        id: String,
        matches: Vec<ContainerCgroup>,
    },
    #[error("cannot read cgroup directory {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn present_note(roots: &[String]) -> String {
    if roots.is_empty() {
        " (none of their top-level cgroups exists: is a runtime running?)".into()
    } else {
        format!(" (top-level cgroups present: {})", roots.join(", "))
    }
}

fn list(matches: &[ContainerCgroup]) -> String {
    let items: Vec<String> = matches.iter().map(ToString::to_string).collect();
    items.join(", ")
}

/// Shortest prefix accepted: `docker ps` shows 12 digits, and fewer would
/// make accidental matches likely on busy hosts.
pub const MIN_PREFIX: usize = 12;
/// Full container ids are 256 bits in hex.
pub const FULL_ID: usize = 64;
/// Deepest cgroup examined (rootless podman is at 5, pods' containers at 4).
pub const MAX_DEPTH: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// systemd driver: containers are `.scope` units inside `.slice` units
    /// (and `user@UID.service` for rootless ones).
    Systemd,
    /// cgroupfs driver: plain directories named by the runtime.
    Cgroupfs,
}

/// The only top-level cgroups searched.
const ROOTS: [(&str, Driver); 7] = [
    ("system.slice", Driver::Systemd),
    ("machine.slice", Driver::Systemd),
    ("user.slice", Driver::Systemd),
    ("kubepods.slice", Driver::Systemd),
    ("docker", Driver::Cgroupfs),
    ("libpod_parent", Driver::Cgroupfs),
    ("kubepods", Driver::Cgroupfs),
];

const CONTAINER_LAYOUTS: [&str; 10] = [
    "/system.slice/docker-<id>.scope",
    "/docker/<id>",
    "/machine.slice/libpod-<id>.scope",
    "/user.slice/user-<uid>.slice/user@<uid>.service/user.slice/libpod-<id>.scope",
    "/libpod_parent/libpod-<id>",
    "/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/cri-containerd-<id>.scope",
    "/kubepods.slice/kubepods-pod<uid>.slice/cri-containerd-<id>.scope",
    "/kubepods.slice/.../crio-<id>.scope",
    "/kubepods/<qos>/pod<uid>/<id>",
    "/kubepods/<qos>/pod<uid>/crio-<id>",
];

const POD_LAYOUTS: [&str; 4] = [
    "/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<id>.slice",
    "/kubepods.slice/kubepods-pod<id>.slice",
    "/kubepods/<qos>/pod<id>",
    "/kubepods/pod<id>",
];

/// What the user asked for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Query {
    /// Lowercase hex, 12 to 64 digits.
    Container(String),
    /// Lowercase, with dashes.
    Pod(String),
}

impl Query {
    fn is_exact(&self) -> bool {
        match self {
            Query::Container(prefix) => prefix.len() == FULL_ID,
            Query::Pod(_) => true,
        }
    }
}

/// Kubernetes reports container ids as `<runtime>://<id>`; the scheme says
/// nothing the cgroup name does not, so it is dropped.
const SCHEMES: [&str; 3] = ["docker://", "containerd://", "cri-o://"];

fn parse_id(id: &str) -> Result<Query, ContainerError> {
    let malformed = |reason: String| ContainerError::MalformedId {
        id: id.into(),
        reason,
    };
    let bare = SCHEMES
        .iter()
        .find_map(|s| id.strip_prefix(s))
        .unwrap_or(id);
    if bare.is_empty() {
        return Err(malformed("empty".into()));
    }
    if bare.contains(['-', '_']) {
        return parse_uid(bare)
            .map(Query::Pod)
            .ok_or_else(|| malformed("not a pod uid (8-4-4-4-12 hexadecimal digits)".into()));
    }
    if let Some(c) = bare.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(malformed(format!(
            "{c:?} is not a hexadecimal digit (a container id is hexadecimal, a pod uid 8-4-4-4-12)"
        )));
    }
    if bare.len() < MIN_PREFIX {
        return Err(malformed(format!(
            "a container id prefix needs at least {MIN_PREFIX} hexadecimal digits, this has {}",
            bare.len()
        )));
    }
    if bare.len() > FULL_ID {
        return Err(malformed(format!(
            "a container id has {FULL_ID} hexadecimal digits, this has {}",
            bare.len()
        )));
    }
    Ok(Query::Container(bare.to_ascii_lowercase()))
}

/// A pod UID in canonical form (lowercase, dashes), from either its own form
/// or the underscored one of systemd slice names.
fn parse_uid(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let dash_at = [8, 13, 18, 23];
    let ok = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| {
            if dash_at.contains(&i) {
                b == b'-' || b == b'_'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    ok.then(|| s.replace('_', "-").to_ascii_lowercase())
}

fn full_hex_id(s: &str) -> Option<&str> {
    (s.len() == FULL_ID && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(s)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Container(Runtime, String),
    Pod(String),
}

/// What a cgroup directory named `name`, somewhere below the top-level cgroup
/// `top`, is. Helper units (`libpod-conmon-<id>.scope`, `crio-conmon-…`) are
/// not containers and fall through because their id part is not bare hex.
fn classify(top: &str, name: &str) -> Option<Found> {
    let container =
        |rt: Runtime, id: &str| full_hex_id(id).map(|id| Found::Container(rt, id.into()));
    if let Some(unit) = name.strip_suffix(".scope") {
        let scopes = [
            ("docker-", Runtime::Docker),
            ("libpod-", Runtime::Podman),
            ("cri-containerd-", Runtime::Containerd),
            ("crio-", Runtime::CriO),
        ];
        return scopes
            .iter()
            .find_map(|(prefix, rt)| container(*rt, unit.strip_prefix(prefix)?));
    }
    if let Some(slice) = name.strip_suffix(".slice") {
        // kubepods-pod<uid>.slice (guaranteed) or kubepods-<qos>-pod<uid>.slice.
        let rest = slice.strip_prefix("kubepods-")?;
        let uid = rest.rsplit_once("pod").map(|(_, uid)| uid)?;
        return parse_uid(uid).map(Found::Pod);
    }
    if let Some(uid) = name.strip_prefix("pod") {
        if let Some(uid) = parse_uid(uid) {
            return Some(Found::Pod(uid));
        }
    }
    if let Some(id) = name.strip_prefix("libpod-") {
        return container(Runtime::Podman, id);
    }
    if let Some(id) = name.strip_prefix("crio-") {
        return container(Runtime::CriO, id);
    }
    match top {
        "docker" => container(Runtime::Docker, name),
        "kubepods" => container(Runtime::Containerd, name),
        _ => None,
    }
}

/// Whether a walk goes into `name`: under systemd only slices and services
/// hold other units' cgroups (scopes are leaves as far as we care); cgroupfs
/// directories have no suffix to tell.
fn descends(driver: Driver, name: &str) -> bool {
    match driver {
        Driver::Systemd => name.ends_with(".slice") || name.ends_with(".service"),
        Driver::Cgroupfs => true,
    }
}

/// Finds the cgroup of container `id` (a full 64-digit id or a unique prefix
/// of at least 12, optionally as `docker://…`, `containerd://…`, `cri-o://…`)
/// or of a Kubernetes pod (its UID, 8-4-4-4-12) under the cgroup2 hierarchy
/// mounted at `cgroup2_mount`. The id is checked before the file system is
/// touched.
pub fn resolve_container(
    cgroup2_mount: &Path,
    id: &str,
) -> Result<ContainerCgroup, ContainerError> {
    let query = parse_id(id)?;
    fs::metadata(cgroup2_mount).map_err(|source| ContainerError::Io {
        path: cgroup2_mount.into(),
        source,
    })?;
    let mut matches = Vec::new();
    let mut roots_present = Vec::new();
    'roots: for (top, driver) in ROOTS {
        let mut stack = vec![(format!("/{top}"), 1)];
        let mut present = false;
        while let Some((rel, depth)) = stack.pop() {
            let Some(entries) = read_subdirs(cgroup2_mount, &rel)? else {
                continue;
            };
            present = true;
            for (name, _) in entries.iter() {
                let child = format!("{rel}/{name}");
                match (classify(top, name), &query) {
                    (Some(Found::Container(runtime, full)), Query::Container(prefix)) => {
                        if full.starts_with(prefix.as_str()) {
                            matches.push(ContainerCgroup {
                                runtime,
                                id: full,
                                rel: child,
                            });
                        }
                        // A container's own sub-cgroups are not other
                        // containers (nested runtimes aside).
                        continue;
                    }
                    (Some(Found::Container(..)), Query::Pod(_)) => continue,
                    (Some(Found::Pod(uid)), Query::Pod(want)) => {
                        if &uid == want {
                            matches.push(ContainerCgroup {
                                runtime: Runtime::Kubernetes,
                                id: uid,
                                rel: child,
                            });
                        }
                        continue;
                    }
                    _ => {}
                }
                if depth + 1 < MAX_DEPTH && descends(driver, name) {
                    stack.push((child, depth + 1));
                }
            }
            // A full id or a pod UID cannot be ambiguous: stop at the first.
            if query.is_exact() && !matches.is_empty() {
                break 'roots;
            }
        }
        if present {
            roots_present.push(format!("/{top}"));
        }
    }
    match matches.len() {
        0 => Err(ContainerError::NotFound {
            id: id.into(),
            mount: cgroup2_mount.into(),
            searched: match query {
                Query::Container(_) => &CONTAINER_LAYOUTS[..],
                Query::Pod(_) => &POD_LAYOUTS[..],
            }
            .iter()
            .map(|s| s.to_string())
            .collect(),
            roots_present,
        }),
        1 => Ok(matches.remove(0)),
        _ => {
            matches.sort_by(|a, b| a.rel.cmp(&b.rel));
            Err(ContainerError::Ambiguous {
                id: id.into(),
                matches,
            })
        }
    }
}

/// The subdirectories of cgroup `rel`; `None` if it does not exist (any
/// more: cgroups vanish while we walk).
fn read_subdirs(mount: &Path, rel: &str) -> Result<Option<Subdirs>, ContainerError> {
    let path = mount.join(rel.trim_start_matches('/'));
    match Subdirs::read(&path) {
        Ok(listing) => Ok(Some(listing)),
        Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
        Err(e) => Err(ContainerError::Io {
            path,
            source: e.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const ID2: &str = "0123456789abffff0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "12345678-9abc-def0-1234-56789abcdef0";
    const UID_: &str = "12345678_9abc_def0_1234_56789abcdef0";

    /// A directory tree standing in for the cgroup2 mount, with the files a
    /// real cgroup has so the walk must skip them.
    fn tree(dirs: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for d in dirs {
            let path = root.path().join(d.trim_start_matches('/'));
            fs::create_dir_all(&path).unwrap();
            fs::write(path.join("cgroup.procs"), "").unwrap();
        }
        root
    }

    fn resolve(root: &tempfile::TempDir, id: &str) -> Result<ContainerCgroup, ContainerError> {
        resolve_container(root.path(), id)
    }

    fn assert_found(dirs: &[&str], id: &str, runtime: Runtime, rel: &str) {
        let root = tree(dirs);
        let found = resolve(&root, id).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(found.runtime, runtime);
        assert_eq!(found.rel, rel);
        assert!(found.id == ID || found.id == UID, "{}", found.id);
    }

    #[test]
    fn docker_systemd() {
        let rel = format!("/system.slice/docker-{ID}.scope");
        assert_found(
            &[
                &rel,
                "/system.slice/ssh.service",
                "/system.slice/docker.service",
            ],
            ID,
            Runtime::Docker,
            &rel,
        );
    }

    #[test]
    fn docker_cgroupfs() {
        let rel = format!("/docker/{ID}");
        assert_found(&[&rel, &format!("{rel}/init")], ID, Runtime::Docker, &rel);
    }

    #[test]
    fn podman_rootful_systemd() {
        let rel = format!("/machine.slice/libpod-{ID}.scope");
        let conmon = format!("/machine.slice/libpod-conmon-{ID}.scope");
        assert_found(
            &[&conmon, &rel, &format!("{rel}/container")],
            ID,
            Runtime::Podman,
            &rel,
        );
    }

    #[test]
    fn podman_pod_systemd() {
        let rel = format!("/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope");
        assert_found(&[&rel], ID, Runtime::Podman, &rel);
    }

    #[test]
    fn podman_rootless_systemd() {
        let rel =
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope");
        assert_found(
            &[
                &rel,
                "/user.slice/user-1000.slice/session-2.scope",
                "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service",
            ],
            ID,
            Runtime::Podman,
            &rel,
        );
    }

    #[test]
    fn podman_cgroupfs() {
        let rel = format!("/libpod_parent/libpod-{ID}");
        assert_found(&[&rel], ID, Runtime::Podman, &rel);
    }

    #[test]
    fn containerd_systemd() {
        let pod =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        let rel = format!("{pod}/cri-containerd-{ID}.scope");
        let pause = format!("{pod}/cri-containerd-{ID2}.scope");
        assert_found(&[&rel, &pause], ID, Runtime::Containerd, &rel);
    }

    #[test]
    fn containerd_systemd_guaranteed_pod() {
        let rel = format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope");
        assert_found(&[&rel], ID, Runtime::Containerd, &rel);
    }

    #[test]
    fn containerd_cgroupfs() {
        let rel = format!("/kubepods/besteffort/pod{UID}/{ID}");
        assert_found(
            &[&rel, &format!("/kubepods/besteffort/pod{UID}/{ID2}")],
            ID,
            Runtime::Containerd,
            &rel,
        );
        let guaranteed = format!("/kubepods/pod{UID}/{ID}");
        assert_found(&[&guaranteed], ID, Runtime::Containerd, &guaranteed);
    }

    #[test]
    fn crio_systemd_and_cgroupfs() {
        let pod = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"
        );
        let rel = format!("{pod}/crio-{ID}.scope");
        let conmon = format!("{pod}/crio-conmon-{ID}.scope");
        assert_found(
            &[&conmon, &rel, &format!("{rel}/container")],
            ID,
            Runtime::CriO,
            &rel,
        );
        let rel = format!("/kubepods/burstable/pod{UID}/crio-{ID}");
        assert_found(&[&rel], ID, Runtime::CriO, &rel);
    }

    #[test]
    fn pods_by_uid() {
        let pod =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        let with_container = format!("{pod}/cri-containerd-{ID}.scope");
        assert_found(&[&with_container], UID, Runtime::Kubernetes, &pod);
        let guaranteed = format!("/kubepods.slice/kubepods-pod{UID_}.slice");
        assert_found(&[&guaranteed], UID, Runtime::Kubernetes, &guaranteed);
        let cgroupfs = format!("/kubepods/besteffort/pod{UID}");
        assert_found(&[&cgroupfs], UID, Runtime::Kubernetes, &cgroupfs);
        // The underscored form and upper case are the same UID.
        assert_found(
            &[&cgroupfs],
            &UID_.to_uppercase(),
            Runtime::Kubernetes,
            &cgroupfs,
        );
        // A pod UID never matches a container by prefix, nor the reverse.
        let root = tree(&[&with_container]);
        assert!(matches!(
            resolve(&root, "12345678-9abc-def0-1234-56789abcdeff"),
            Err(ContainerError::NotFound { .. })
        ));
    }

    #[test]
    fn unique_prefixes_and_schemes_resolve() {
        let rel = format!("/system.slice/docker-{ID}.scope");
        let root = tree(&[&rel]);
        for id in [
            &ID[..12],
            &ID[..40],
            &ID.to_uppercase(),
            &format!("docker://{ID}"),
            &format!("containerd://{}", &ID[..12]),
        ] {
            let found = resolve(&root, id).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(found.id, ID);
            assert_eq!(found.rel, rel);
        }
    }

    #[test]
    fn ambiguous_prefixes_list_every_match() {
        let a = format!("/system.slice/docker-{ID}.scope");
        let b = format!("/docker/{ID2}");
        let root = tree(&[&a, &b]);
        let err = resolve(&root, &ID[..12]).unwrap_err();
        let ContainerError::Ambiguous { matches, .. } = &err else {
            panic!("{err}");
        };
        let rels: Vec<&str> = matches.iter().map(|m| m.rel.as_str()).collect();
        assert_eq!(rels, [b.as_str(), a.as_str()]);
        assert!(err.to_string().contains("is ambiguous"), "{err}");
        // One more digit settles it.
        assert_eq!(resolve(&root, &ID[..13]).unwrap().rel, a);
        assert_eq!(resolve(&root, &ID2[..13]).unwrap().rel, b);
    }

    #[test]
    fn not_found_lists_the_layouts() {
        let root = tree(&["/system.slice/ssh.service"]);
        let err = resolve(&root, ID).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ContainerError::NotFound { .. }));
        assert!(text.contains("/docker/<id>"), "{text}");
        assert!(text.contains("present: /system.slice"), "{text}");
        let empty = tree(&[]);
        let text = resolve(&empty, UID).unwrap_err().to_string();
        assert!(text.contains("/kubepods/pod<id>"), "{text}");
        assert!(
            text.contains("none of their top-level cgroups exists"),
            "{text}"
        );
    }

    #[test]
    fn walk_is_bounded() {
        // Outside the known roots, and too deep inside one: not searched.
        let elsewhere = format!("/other/docker-{ID}.scope");
        let too_deep =
            format!("/user.slice/a.slice/b.slice/c.slice/d.slice/e.slice/docker-{ID}.scope");
        let in_a_scope = format!("/system.slice/foo.scope/docker-{ID}.scope");
        let root = tree(&[&elsewhere, &too_deep, &in_a_scope]);
        assert!(matches!(
            resolve(&root, ID),
            Err(ContainerError::NotFound { .. })
        ));
        let deepest = format!("/user.slice/a.slice/b.slice/c.slice/d.slice/docker-{ID}.scope");
        let root = tree(&[&deepest]);
        assert_eq!(resolve(&root, ID).unwrap().rel, deepest);
    }

    #[test]
    fn malformed_ids_are_refused_before_the_walk() {
        let missing = Path::new("/nonexistent-mif-cgroup2");
        for (id, reason) in [
            ("", "empty"),
            ("0123456789a", "at least 12"),
            ("0123456789ag", "'g' is not a hexadecimal digit"),
            (&format!("{ID}0"), "has 65"),
            ("1234-5678", "not a pod uid"),
            ("12345678-9abc-def0-1234-56789abcdefg", "not a pod uid"),
            ("docker://", "empty"),
        ] {
            let err = resolve_container(missing, id).unwrap_err();
            let ContainerError::MalformedId { reason: r, .. } = &err else {
                panic!("{id:?}: {err}");
            };
            assert!(r.contains(reason), "{id:?}: {r}");
            assert!(
                err.to_string()
                    .starts_with(&format!("malformed container id {id:?}")),
                "{err}"
            );
        }
        // Well-formed, then the missing mount is the error.
        assert!(matches!(
            resolve_container(missing, ID),
            Err(ContainerError::Io { .. })
        ));
    }

    #[test]
    fn classify_names() {
        assert_eq!(
            classify("system.slice", &format!("docker-{ID}.scope")),
            Some(Found::Container(Runtime::Docker, ID.into()))
        );
        assert_eq!(
            classify("system.slice", &format!("docker-{}.scope", &ID[..63])),
            None
        );
        assert_eq!(
            classify(
                "system.slice",
                &format!("docker-{}.scope", ID.to_uppercase())
            ),
            None
        );
        assert_eq!(classify("system.slice", ID), None);
        assert_eq!(
            classify("docker", ID),
            Some(Found::Container(Runtime::Docker, ID.into()))
        );
        assert_eq!(
            classify("kubepods", ID),
            Some(Found::Container(Runtime::Containerd, ID.into()))
        );
        assert_eq!(
            classify("machine.slice", &format!("libpod-conmon-{ID}.scope")),
            None
        );
        assert_eq!(
            classify(
                "kubepods.slice",
                &format!("kubepods-besteffort-pod{UID_}.slice")
            ),
            Some(Found::Pod(UID.into()))
        );
        assert_eq!(
            classify("kubepods.slice", "kubepods-besteffort.slice"),
            None
        );
        assert_eq!(
            classify("kubepods", &format!("pod{UID}")),
            Some(Found::Pod(UID.into()))
        );
        assert_eq!(classify("kubepods", "besteffort"), None);
    }
}
