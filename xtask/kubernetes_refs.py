"""What the Kubernetes schemas cannot see in dist/kubernetes: references
between the objects, and what mif itself needs of them.

Run by `cargo xtask kubernetes` (and `cargo xtask test`) with the Python of
the kubernetes-validate virtualenv, which has PyYAML. Prints one line per
problem and exits 1 if there is any.
"""
import sys
import tomllib

import yaml

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


docs = []
for filename in sys.argv[1:]:
    with open(filename) as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                docs.append((filename, doc))


def named(kind):
    return {d["metadata"]["name"]: (f, d) for f, d in docs if d.get("kind") == kind}


namespaces = named("Namespace")
config_maps = named("ConfigMap")
accounts = named("ServiceAccount")
daemon_sets = named("DaemonSet")

if len(namespaces) != 1:
    problem("manifests", f"expected one Namespace, found {len(namespaces)}")
for f, d in docs:
    meta = d.get("metadata", {})
    if d.get("kind") != "Namespace" and meta.get("namespace") not in namespaces:
        problem(f, f"{d.get('kind')}/{meta.get('name')} is in namespace "
                f"{meta.get('namespace')!r}, not one of {sorted(namespaces)}")

if len(daemon_sets) != 1:
    problem("manifests", f"expected one DaemonSet, found {len(daemon_sets)}")
for name, (f, ds) in daemon_sets.items():
    where = f"{f}: daemonset/{name}"
    spec = ds["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    for key, value in spec["selector"].get("matchLabels", {}).items():
        if labels.get(key) != value:
            problem(where, f"selector {key}={value} does not select its own pods ({labels})")

    account = pod.get("serviceAccountName")
    if account is not None and account not in accounts:
        problem(where, f"serviceAccountName {account!r} is not defined")

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounted = set()
    for container in pod["containers"]:
        privileged = container.get("securityContext", {}).get("privileged", False)
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volumes:
                problem(where, f"volumeMount {mount['name']!r} names no volume "
                        f"(volumes: {sorted(volumes)})")
            mounted.add(mount["name"])
            if mount.get("mountPropagation") == "Bidirectional" and not privileged:
                problem(where, f"volumeMount {mount['name']!r}: Bidirectional "
                        "propagation is refused for unprivileged containers")
    for unused in sorted(set(volumes) - mounted):
        problem(where, f"volume {unused!r} is never mounted")
    for vname, volume in volumes.items():
        if "configMap" in volume and volume["configMap"]["name"] not in config_maps:
            problem(where, f"volume {vname!r} names ConfigMap "
                    f"{volume['configMap']['name']!r}, which is not defined")

    # What mif needs (see the comments in daemonset.yaml).
    if not pod.get("hostNetwork"):
        problem(where, "hostNetwork must be true: mif steers the node's namespace")
    if not pod.get("hostPID"):
        problem(where, "hostPID must be true: mif reads the pods' /proc/PID/ns/net")
    tolerations = pod.get("tolerations", [])
    if {"operator": "Exists"} not in tolerations:
        problem(where, "a toleration {operator: Exists} is needed to run on every node")
    mif = pod["containers"][0]
    mounts = {m["mountPath"]: m for m in mif.get("volumeMounts", [])}
    host_paths = {volumes[m["name"]]["hostPath"]["path"]: path
                  for path, m in mounts.items()
                  if m["name"] in volumes and "hostPath" in volumes[m["name"]]}
    for path in ["/sys/fs/bpf", "/sys/fs/cgroup", "/run/mif", "/var/lib/mif"]:
        if host_paths.get(path) != path:
            problem(where, f"the node's {path} must be mounted at {path}")
    command = mif.get("command", []) + mif.get("args", [])
    if command[:2] != ["/usr/bin/mif", "daemon"]:
        problem(where, f"the container must run /usr/bin/mif daemon, not {command}")
    config = None
    if "--config" in command[:-1]:
        config = command[command.index("--config") + 1]
    if config is None or not config.startswith("/etc/mif/"):
        problem(where, f"--config must name a file in /etc/mif, not {config!r}")
    config_mount = mounts.get("/etc/mif")
    config_volume = volumes.get(config_mount["name"], {}) if config_mount else {}
    if "configMap" not in config_volume:
        problem(where, "a ConfigMap must be mounted at /etc/mif")
    elif config is not None:
        _, cm = config_maps.get(config_volume["configMap"]["name"], (None, {}))
        key = config.removeprefix("/etc/mif/")
        if key not in cm.get("data", {}):
            problem(where, f"the ConfigMap has no key {key!r} for --config {config}")
    probe = mif.get("readinessProbe", {}).get("exec", {}).get("command")
    if probe != ["/usr/bin/mif", "status"]:
        problem(where, f"the readiness probe must run mif status, not {probe}")

# The shipped policy must start on any node: valid TOML, no policy (a
# literal cgroup that a node lacks would stop its daemon from starting).
for name, (f, cm) in config_maps.items():
    for key, text in cm.get("data", {}).items():
        if not key.endswith(".toml"):
            continue
        try:
            parsed = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            problem(f"{f}: configmap/{name}", f"{key} is not TOML: {e}")
            continue
        if parsed.get("policy"):
            problem(f"{f}: configmap/{name}",
                    f"{key} has active policies; the shipped one must steer nothing")

for p in problems:
    print(p)
sys.exit(1 if problems else 0)
