//! `cargo xtask kubernetes`: dist/kubernetes checked against the
//! Kubernetes API schemas, offline, and for the references between its
//! objects that no schema sees.
//!
//! The validator is kubernetes-validate (PyPI), which bundles the schemas
//! of every Kubernetes release it supports; `cargo xtask setup` installs it,
//! pinned with everything it imports (xtask/kubernetes-validate.txt), into
//! a virtualenv of Debian's Python under the target directory. The check
//! runs it in a network namespace of its own, with no interface up, so a
//! validator that tried to fetch anything would fail here rather than pass
//! by downloading. And it feeds it broken manifests, which must fail: a
//! validator that accepts everything would otherwise look like success.
use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{bail, ensure, Context as _};

use crate::{run_command, target_dir, workspace_root};

/// The oldest and the newest Kubernetes the bundled schemas cover.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];
/// Debian's Python (python3-venv): the same on every Debian machine,
/// whatever else is first on PATH.
const PYTHON: &str = "/usr/bin/python3";

fn venv() -> PathBuf {
    target_dir().join("tools/kubernetes-validate")
}

fn requirements() -> PathBuf {
    workspace_root().join("xtask/kubernetes-validate.txt")
}

fn validator() -> PathBuf {
    venv().join("bin/kubernetes-validate")
}

/// Installs the pinned validator unless the virtualenv already holds
/// exactly these pins (a copy of the requirements is kept there).
pub fn install_validator() -> anyhow::Result<()> {
    let wanted = std::fs::read_to_string(requirements())
        .with_context(|| format!("reading {}", requirements().display()))?;
    let stamp = venv().join("mif-requirements.txt");
    if validator().is_file() && std::fs::read_to_string(&stamp).ok().as_ref() == Some(&wanted) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing kubernetes-validate into {}",
        venv().display()
    );
    let _ = std::fs::remove_dir_all(venv());
    run_command(Command::new(PYTHON).args(["-m", "venv"]).arg(venv()))
        .context("creating the virtualenv (Debian's python3-venv)")?;
    // --no-deps: the file pins every dependency, so nothing unpinned comes
    // in; wheels only: nothing is compiled (rpds-py would need Rust).
    run_command(
        Command::new(venv().join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(["--no-deps", "--only-binary", ":all:", "--requirement"])
            .arg(requirements()),
    )?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}

/// The manifests kustomization.yaml lists, which must be every other YAML
/// file of the directory (a file left out would never be applied, nor
/// checked).
fn manifests(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml"))
        .with_context(|| format!("reading {}/kustomization.yaml", dir.display()))?;
    let mut listed = Vec::new();
    let mut in_resources = false;
    for line in kustomization.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') {
            in_resources = line.trim_end() == "resources:";
        } else if in_resources {
            if let Some(item) = line.trim().strip_prefix("- ") {
                listed.push(dir.join(item.trim()));
            }
        }
    }
    let mut present: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    present.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    ensure!(
        sorted == present,
        "kustomization.yaml lists {listed:?}, but the directory holds {present:?}"
    );
    Ok(listed)
}

/// Runs `cmd` with no network: a network namespace of its own (as root;
/// otherwise inside a user namespace too).
fn offline<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> anyhow::Result<Output> {
    let mut unshare = Command::new("unshare");
    if !is_root() {
        unshare.args(["--user", "--map-root-user"]);
    }
    unshare.arg("--net").arg("--").arg(program).args(args);
    unshare
        .output()
        .with_context(|| format!("cannot start {unshare:?} (util-linux)"))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Validates `files` against one Kubernetes version's strict schemas (no
/// field the schema does not know). The validator only warns about a kind
/// it has no schema for (a typo in `kind` or `apiVersion`) and still exits
/// 0, so anything but an "INFO ... passed" line is a failure here, and
/// every file must have passed at least once.
fn validate(files: &[PathBuf], version: &str) -> anyhow::Result<()> {
    let mut args: Vec<&OsStr> = vec![
        "--strict".as_ref(),
        "--kubernetes-version".as_ref(),
        version.as_ref(),
    ];
    args.extend(files.iter().map(|f| f.as_os_str()));
    let out = offline(&validator(), &args)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failures: Vec<&str> = stdout
        .lines()
        .filter(|l| !(l.starts_with("INFO ") && l.contains(" passed for resource ")))
        .collect();
    let unvalidated: Vec<&PathBuf> = files
        .iter()
        .filter(|f| !stdout.contains(&format!("INFO {} passed", f.display())))
        .collect();
    if !out.status.success() || !failures.is_empty() || !unvalidated.is_empty() {
        bail!(
            "Kubernetes {version}: {} ({}):\n{}{stderr}{}",
            "the manifests do not validate",
            out.status,
            failures.join("\n"),
            if unvalidated.is_empty() {
                String::new()
            } else {
                format!("\nnot validated at all: {unvalidated:?}")
            }
        );
    }
    Ok(())
}

/// The references between the objects and mif's own needs
/// (xtask/kubernetes_refs.py), with the virtualenv's Python and PyYAML.
fn check_references(files: &[PathBuf]) -> anyhow::Result<()> {
    let script = workspace_root().join("xtask/kubernetes_refs.py");
    let python = venv().join("bin/python3");
    let mut args: Vec<&OsStr> = vec![script.as_os_str()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    let out = offline(&python, &args)?;
    if !out.status.success() {
        bail!(
            "the manifests do not fit together ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Every check on one set of files.
fn check_files(files: &[PathBuf]) -> anyhow::Result<()> {
    for version in KUBERNETES_VERSIONS {
        validate(files, version)?;
    }
    check_references(files)
}

/// Manifests broken on purpose, each of which the checks must refuse:
/// (file, text to replace, replacement, what the error must mention).
const BROKEN: [(&str, &str, &str, &str); 5] = [
    // A typo'd field: only strict schemas refuse unknown fields.
    (
        "daemonset.yaml",
        "      hostNetwork: true\n",
        "      hostNetwrok: true\n",
        "hostNetwrok",
    ),
    // A wrong type.
    (
        "daemonset.yaml",
        "      hostPID: true\n",
        "      hostPID: \"yes\"\n",
        "hostPID",
    ),
    // A typo'd kind: the validator only warns that it has no schema.
    (
        "serviceaccount.yaml",
        "kind: ServiceAccount\n",
        "kind: ServiceAcount\n",
        "ServiceAcount",
    ),
    // A mount of a volume that does not exist: valid to the schema.
    (
        "daemonset.yaml",
        "            - name: bpffs\n              mountPath: /sys/fs/bpf\n",
        "            - name: bpfs\n              mountPath: /sys/fs/bpf\n",
        "bpfs",
    ),
    // A shipped policy: a node without that cgroup would not start mif.
    (
        "configmap.yaml",
        "    # [[policy]]\n    # cgroup = \"/kubepods.slice/kubepods-besteffort.slice/**\"\n",
        "    [[policy]]\n    cgroup = \"/kubepods.slice/kubepods-besteffort.slice/**\"\n    prefer = [\"eth0\"]\n",
        "active policies",
    ),
];

pub fn check() -> anyhow::Result<()> {
    let dir = workspace_root().join("dist/kubernetes");
    let files = manifests(&dir)?;
    check_files(&files).context("dist/kubernetes")?;

    let scratch = target_dir().join("tools/kubernetes-broken");
    for (i, (file, from, to, mention)) in BROKEN.iter().enumerate() {
        let case = scratch.join(i.to_string());
        let _ = std::fs::remove_dir_all(&case);
        std::fs::create_dir_all(&case)?;
        let mut copies = Vec::new();
        for f in &files {
            let name = f.file_name().context("manifest name")?;
            let mut text = std::fs::read_to_string(f)?;
            if name == *file {
                ensure!(
                    text.contains(from),
                    "negative case {i}: {file} no longer contains {from:?}; update xtask/src/kubernetes.rs"
                );
                text = text.replacen(from, to, 1);
            }
            let copy = case.join(name);
            std::fs::write(&copy, text)?;
            copies.push(copy);
        }
        match check_files(&copies) {
            Ok(()) => bail!(
                "the checks accepted {file} with {from:?} changed to {to:?}: they can no longer fail"
            ),
            Err(e) => {
                let message = format!("{e:#}");
                ensure!(
                    message.contains(mention),
                    "negative case {i} ({file}) failed, but not for {mention:?}: {message}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    eprintln!(
        "xtask: dist/kubernetes validates against Kubernetes {} (offline, strict); {} broken copies are refused",
        KUBERNETES_VERSIONS.join(" and "),
        BROKEN.len()
    );
    Ok(())
}
