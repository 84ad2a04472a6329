"""Render herald's Helm chart with several value sets and validate the result.

Run through .ci/check-helm.sh, which installs the two tools this needs:
helm-python-sdk (Helm's own Go engine behind a C ABI, so rendering, schema
validation and lint are Helm's, with no helm binary) and kubernetes-validate
(the Kubernetes OpenAPI schemas as JSON Schema).

Rendered manifests land in artifacts/helm/<value set>/. The last line is
"helm: N passed, N failed"; the exit status is 1 when anything failed.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "herald"
OUT = ROOT / "artifacts" / "helm"
RELEASE, NAMESPACE = "herald", "herald"

# The chart's floor (Chart.yaml kubeVersion) and a recent release: an API that
# is too new for the floor or removed by now fails one of the two.
KUBE_VERSIONS = os.environ.get("HELM_CHECK_KUBE_VERSIONS", "1.30.0 1.34.0").split()

# No Kubernetes schema knows custom resources; these are checked by
# check_service_monitor below instead of by kubernetes-validate.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

# Keys of herald.toml that the chart sets itself (from the Secret, the pod
# env or the mounted key files), so they must not appear in values.config.
# Keys of array-of-tables entries are written "section.list[].key".
CHART_MANAGED_KEYS = {
    "server.listen", "server.ops_listen", "server.api_key", "auth.secret", "auth.public_key",
    "auth.public_key_file", "auth.private_key_file", "engine.password",
    # A kid key's public key is inline in values; HS kid keys (secret) are refused.
    "auth.keys[].secret", "auth.keys[].public_key_file", "auth.keys[].private_key_file",
}
# Secrets that must never be written into the ConfigMap.
SECRET_KEYS = {"server.api_key", "auth.secret", "engine.password", "auth.keys[].secret"}
# Where the chart mounts the Secret's key files (the `config` volume).
KEY_DIR = "/etc/herald"
# Keys that src/ defines but herald.example.toml lost when commit 0b57dc1
# truncated it (its [auth] ends at a comment, and [limits], [websocket],
# [heartbeat], [outbox] are gone), with herald's defaults from src/. A key
# the example documents again takes its default from the example instead;
# "herald.example.toml covers src/'s config keys" lists entries to drop.
NO_DEFAULT = object()  # an Option that is None: nothing to compare
EXAMPLE_GAPS = {
    "auth.allow_anonymous": False, "auth.timeout_ms": 5000,
    "auth.expiry_warning_ms": 60000, "auth.expiry_grace_ms": 5000,
    "auth.access_ttl_secs": 900, "auth.refresh_ttl_secs": 604800,
    "auth.private_key_file": NO_DEFAULT, "auth.signing_kid": NO_DEFAULT, "auth.keys": [],
    **{f"auth.keys[].{k}": NO_DEFAULT for k in (
        "kid", "algorithm", "secret", "public_key", "public_key_file", "private_key_file")},
    "limits.max_connections": 50000, "limits.max_subscriptions": 128,
    "limits.max_message_size": 65536, "limits.max_channel_length": 128,
    "limits.max_data_size": 61440,
    "websocket.read_buffer_size": 1024, "websocket.write_buffer_size": 16384,
    "websocket.write_timeout_ms": 10000,
    "heartbeat.interval_ms": 25000, "heartbeat.timeout_ms": 20000,
    "outbox.max_messages": 1024, "outbox.max_bytes": 1048576,
}
# Chart defaults that differ from herald's on purpose.
INTENTIONAL_DEFAULTS = {
    "log.format": "json",  # log collectors parse JSON lines
    "engine.url": "",  # a pod has no Redis on localhost: the redis engine must be given a URL
    "limits.max_connections": 12000,  # fits the chart's 512Mi memory limit (MEMORY_BASE + MEMORY_PER_CONNECTION)
}
# The chart README's sizing rule (README.md, "Resources and sizing"): a pod needs this much
# memory besides its connections (runtime, pending HTTP connections, Redis
# buffers) ...
MEMORY_BASE = 64 * 2**20
# ... plus this much per busy connection: about 31 KiB measured after bursts
# of pushes with the default 16 KiB write buffer (docs/OPERATIONS.md, "Sizing").
MEMORY_PER_CONNECTION = 32 * 2**10
# Paths that must never be reachable through the Ingress (docs/OPERATIONS.md,
# "Security"): metrics and the demo page are for the cluster only.
PRIVATE_PATHS = ("/metrics", "/demo", "/demo/herald.js")
# Metrics the dashboard charts ahead of src/metrics.rs (none at the moment).
PENDING_METRICS: set[str] = set()

# (name, values, text the error must contain): each must fail to render, and
# for the reason given, not by accident.
NEGATIVE = [
    ("replicaCount is a string", {"replicaCount": "three"}, "replicaCount"),
    ("unknown top-level key", {"replicas": 3}, "replicas"),
    ("unknown config key", {"config": {"limits": {"max_subscritions": 3}}}, "max_subscritions"),
    ("config value of the wrong type", {"config": {"heartbeat": {"interval_ms": "25s"}}}, "interval_ms"),
    ("unknown engine kind", {"config": {"engine": {"kind": "kafka"}}}, "kind"),
    ("memory engine with 3 replicas", {"replicaCount": 3}, "memory engine"),
    ("memory engine with autoscaling", {"autoscaling": {"enabled": True}}, "memory engine"),
    ("redis engine without a URL", {"config": {"engine": {"kind": "redis"}}}, "config.engine.url"),
    ("password inside the Redis URL",
     {"config": {"engine": {"kind": "redis", "url": "redis://:hunter2@redis:6379/0"}}}, "secret.redisPassword"),
    ("RS256 without a public key", {"config": {"auth": {"algorithm": "RS256"}}}, "public key"),
    ("grace period shorter than the drain", {"terminationGracePeriodSeconds": 15}, "must exceed"),
    ("PDB that blocks node drains",
     {"podDisruptionBudget": {"enabled": True, "minAvailable": 1}}, "node drains"),
    ("numeric Redis password (herald reads env values as TOML-like values)",
     {"secret": {"redisPassword": "123456"}}, "secret.redisPassword"),
    ("outbox smaller than one message",
     {"config": {"outbox": {"max_bytes": 1024}}}, "outbox.max_bytes"),
    ("max_data_size leaving no room in a message",
     {"config": {"limits": {"max_data_size": 65536}}}, "max_data_size"),
    ("outbox without a message's headroom",
     {"config": {"outbox": {"max_bytes": 61440}}}, "outbox.max_bytes"),
    ("unknown namespace access",
     {"config": {"channels": {"namespaces": [{"pattern": "a.*", "access": "everyone"}]}}}, "namespaces/0/access"),
    ("namespace key herald does not know",
     {"config": {"channels": {"namespaces": [{"pattern": "a.*", "public": True}]}}}, "'public' not allowed"),
    ("personal namespace without a prefix pattern",
     {"config": {"channels": {"namespaces": [{"pattern": "inbox", "access": "personal"}]}}}, "personal"),
    ("origin with a path (browsers send none)",
     {"config": {"server": {"allowed_origins": ["https://app.example.com/"]}}}, "allowed_origins/0"),
    ("HS256 kid key (its secret would land in the ConfigMap)",
     {"config": {"auth": {"keys": [{"kid": "old", "algorithm": "HS256"}]}}}, "RS256 and ES256 kid keys only"),
    ("kid key with a secret", {"config": {"auth": {"keys": [
        {"kid": "old", "algorithm": "HS256", "secret": "s3cret-value"}]}}}, "'secret' not allowed"),
    ("kid key without a public key",
     {"config": {"auth": {"keys": [{"kid": "k1", "algorithm": "ES256"}]}}}, "needs public_key"),
    ("signing_kid naming no key",
     {"config": {"auth": {"signing_kid": "k9"}}, "secret": {"signing": True, "existingSecret": "s"}},
     "names no key"),
    ("signing_kid without a private key", {"config": {"auth": {"signing_kid": "k1", "keys": [
        {"kid": "k1", "algorithm": "RS256", "public_key": "-----BEGIN PUBLIC KEY-----\nx\n"}]}}},
     "needs its private key"),
    ("secret.signing with an HS256 default key and no signing_kid",
     {"secret": {"signing": True, "existingSecret": "s"}}, "would sign with the default key"),
    ("secret.signing without a private key",
     {"config": {"auth": {"algorithm": "ES256"}}, "secret": {"signing": True, "jwtPublicKey": "-----BEGIN PUBLIC KEY-----\nx\n"}},
     "needs the private key"),
    ("private key given but unused",
     {"secret": {"jwtPrivateKey": "-----BEGIN PRIVATE KEY-----\nx\n"}}, "set but unused"),
]


class Report:
    """Counts checks; a failing check prints why and the run goes on."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, fn, *args) -> None:
        try:
            fn(*args)
        except AssertionError as err:
            self._fail(name, str(err))
        except Exception:  # a crash in a check is a failure too, with its trace
            self._fail(name, traceback.format_exc())
        else:
            self.passed += 1
            print(f"  ok    {name}")

    def _fail(self, name: str, why: str) -> None:
        self.failed.append(name)
        print(f"  FAIL  {name}\n        " + why.strip().replace("\n", "\n        "))


def value_sets() -> dict[str, dict]:
    sets = {"defaults": {}, "production": load_yaml(CHART / "values-production.yaml")}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        sets[path.name.removesuffix("-values.yaml")] = load_yaml(path)
    return sets


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def documents(rendered: dict[str, str]) -> list[dict]:
    docs = []
    for name, text in sorted(rendered.items()):
        if name.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def find(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


# ---------------------------------------------------------------- per value set


def check_value_set(report: Report, chart: helm.Chart, name: str, values: dict) -> None:
    print(f"value set: {name}")
    outdir = OUT / name
    outdir.mkdir(parents=True)
    lint = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSIONS[0]}")
    report.check(f"{name}: helm lint --strict", check_lint, lint)
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    for template, text in rendered.items():
        if text.strip():
            (outdir / Path(template).name).write_text(text)
    docs = documents(rendered)
    merged = chart.merge_values(values)
    (outdir / "all.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    kube_docs = [d for d in docs if (d["apiVersion"], d["kind"]) not in CRD_KINDS]
    kube_file = outdir / "kubernetes-validate-input.yaml"
    kube_file.write_text(yaml.safe_dump_all(kube_docs, sort_keys=False))
    for version in KUBE_VERSIONS:
        report.check(f"{name}: kubernetes-validate --strict -k {version} ({len(kube_docs)} objects)",
                     check_kubernetes_validate, kube_file, version)
    for sm in find(docs, "ServiceMonitor"):
        report.check(f"{name}: ServiceMonitor structure (CRD, no schema)", check_service_monitor, sm, docs)
    report.check(f"{name}: Deployment shutdown, probes and hardening", check_deployment, docs, merged)
    report.check(f"{name}: herald.toml keys and secrets", check_config, docs, merged, outdir)
    report.check(f"{name}: replicas match the engine", check_scaling, docs, merged)
    if merged["ingress"]["enabled"]:
        report.check(f"{name}: Ingress WebSocket timeouts, no private paths", check_ingress, docs, merged)
    if merged["dashboard"]["enabled"]:
        report.check(f"{name}: dashboard ConfigMap ships dashboards/herald.json", check_dashboard_cm, docs)
    if os.environ.get("HERALD_BIN"):
        report.check(f"{name}: herald check-config accepts the rendered config", check_with_herald, docs, outdir)


def check_lint(lint: dict) -> None:
    problems = [f"{m['path']}: {m['error'].strip()}" for m in lint["messages"] if m["severity"] >= 2]
    assert not problems and not lint["errors"], "\n".join(problems + lint["errors"])


def check_kubernetes_validate(path: Path, version: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True, text=True,
    )
    # WARN is what kubernetes-validate prints for an apiVersion/kind it has no
    # schema for; outside CRD_KINDS that is a typo or a removed API: fail.
    lines = [l for l in (run.stdout + run.stderr).splitlines() if l.strip()]
    bad = [l for l in lines if l.startswith(("ERROR", "WARN", "FATAL", "Traceback"))]
    assert run.returncode == 0 and not bad, "\n".join(bad or lines)


SM_SPEC_FIELDS = {"jobLabel", "namespaceSelector", "selector", "endpoints", "podTargetLabels",
                  "targetLabels", "sampleLimit", "attachMetadata", "labelLimit"}
SM_ENDPOINT_FIELDS = {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout",
                      "relabelings", "metricRelabelings", "honorLabels", "tlsConfig", "params"}
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")


def seconds(duration: str) -> float:
    match = DURATION.match(duration)
    assert match and duration, f"not a Prometheus duration: {duration!r}"
    h, m, s, ms = (int(g or 0) for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def check_service_monitor(sm: dict, docs: list[dict]) -> None:
    assert sm["metadata"].get("name"), "metadata.name missing"
    spec = sm["spec"]
    assert set(spec) <= SM_SPEC_FIELDS, f"unknown spec fields {set(spec) - SM_SPEC_FIELDS}"
    wanted = spec["selector"]["matchLabels"]
    services = [s for s in find(docs, "Service")
                if wanted.items() <= s["metadata"].get("labels", {}).items()]
    assert len(services) == 1, f"selector {wanted} matches {len(services)} Services, want exactly 1"
    assert NAMESPACE in spec["namespaceSelector"]["matchNames"], "namespaceSelector misses the release namespace"
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    assert spec["endpoints"], "no endpoints"
    for ep in spec["endpoints"]:
        assert set(ep) <= SM_ENDPOINT_FIELDS, f"unknown endpoint fields {set(ep) - SM_ENDPOINT_FIELDS}"
        assert ep["port"] in port_names, f"endpoint port {ep['port']} is not a Service port {port_names}"
        assert ep["path"] == "/metrics", ep["path"]
        assert seconds(ep["scrapeTimeout"]) <= seconds(ep["interval"]), "scrapeTimeout exceeds interval"


def herald_container(docs: list[dict]) -> tuple[dict, dict]:
    (deploy,) = find(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "herald"]
    return pod, container


def check_deployment(docs: list[dict], values: dict) -> None:
    pod, c = herald_container(docs)
    shutdown = values["config"]["shutdown"]
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    needed = pre_stop + (shutdown["drain_ms"] + shutdown["grace_ms"]) / 1000
    assert pod["terminationGracePeriodSeconds"] > needed, \
        f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} <= preStop + drain + grace ({needed})"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    # Probes on the ops port, which a flood on the main port cannot fill.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports.get("ops") == values["opsPort"], ports
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] == "ops", f"{probe} is not on the ops port"
    assert c["resources"]["limits"]["memory"], "no memory limit"
    limit = memory_bytes(c["resources"]["limits"]["memory"])
    connections = values["config"]["limits"]["max_connections"]
    needed = MEMORY_BASE + connections * MEMORY_PER_CONNECTION
    assert needed <= limit, (f"limits.max_connections {connections} needs {needed // 2**20}Mi "
                             f"(64Mi + 32Ki each), the memory limit is {c['resources']['limits']['memory']}")
    sc, psc = c["securityContext"], pod["securityContext"]
    assert psc["runAsNonRoot"] and sc["runAsNonRoot"], "may run as root"
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"], sc["capabilities"]
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["enableServiceLinks"] is False, "service links would inject unknown HERALD_* variables"
    assert not pod["automountServiceAccountToken"]
    assert "checksum/config" in pod_annotations(docs)


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (512Mi, 1G, 1073741824) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", str(quantity))
    assert match and match.group(2) in units.keys() | {""}, f"unsupported memory quantity {quantity!r}"
    return int(match.group(1)) * units.get(match.group(2), 1)


def pod_annotations(docs: list[dict]) -> dict:
    (deploy,) = find(docs, "Deployment")
    return deploy["spec"]["template"]["metadata"].get("annotations", {})


def rendered_toml(docs: list[dict]) -> str:
    (cm,) = [d for d in find(docs, "ConfigMap") if "herald.toml" in d.get("data", {})]
    return cm["data"]["herald.toml"]


def check_config(docs: list[dict], values: dict, outdir: Path) -> None:
    text = rendered_toml(docs)
    (outdir / "herald.toml").write_text(text)
    config = tomllib.loads(text)
    known = herald_keys()[0]
    keys = set(flatten_keys(config))
    assert keys <= known, f"keys herald does not know: {sorted(keys - known)}"
    for secret in sorted(SECRET_KEYS | {"auth.public_key"}):
        assert secret not in keys, f"{secret} must come from the Secret, not the ConfigMap"
    for cm in find(docs, "ConfigMap"):
        assert "PRIVATE KEY" not in json.dumps(cm.get("data", {})), f"a private key in ConfigMap {cm['metadata']['name']}"
    pod, c = herald_container(docs)
    env = {e["name"]: e for e in c["env"]}
    for name in env:
        assert name == "HERALD_CONFIG" or re.fullmatch(r"HERALD_[A-Z]+__[A-Z_]+", name), f"odd env {name}"
        section = name.removeprefix("HERALD_").split("__")[0].lower()
        assert name == "HERALD_CONFIG" or section in config, f"{name}: no [{section}] in herald.toml"
    assert env["HERALD_SERVER__LISTEN"]["value"] == f"0.0.0.0:{values['containerPort']}"
    assert env["HERALD_SERVER__OPS_LISTEN"]["value"] == f"0.0.0.0:{values['opsPort']}"
    secret_ref = env["HERALD_SERVER__API_KEY"]["valueFrom"]["secretKeyRef"]["name"]
    chart_secrets = {s["metadata"]["name"]: s.get("data", {}) for s in find(docs, "Secret")}
    assert secret_ref in chart_secrets.keys() | {values["secret"]["existingSecret"]}, f"Secret {secret_ref} is nowhere"
    algorithm = config["auth"].get("algorithm", "HS256")
    assert ("HERALD_AUTH__SECRET" in env) == algorithm.startswith("HS"), "HS* secret env mismatch"
    if not algorithm.startswith("HS"):
        assert config["auth"]["public_key_file"] == f"{KEY_DIR}/jwt.pub.pem"  # as in herald.example.toml
    # Every key file herald.toml names is mounted from the Secret, and nothing else is.
    named = {path for key, path in key_files(config)}
    items = mounted_key_items(docs)
    mounted = {f"{KEY_DIR}/{item['path']}" for _, item in items}
    assert named == mounted, f"herald.toml names {sorted(named)}, the pod mounts {sorted(mounted)}"
    for name, item in items:
        assert name == secret_ref, f"{item['path']} comes from Secret {name}, not {secret_ref}"
        if name in chart_secrets:
            assert item["key"] in chart_secrets[name], f"Secret {name} has no key {item['key']}"
        if "PRIVATE" in item["key"].upper() or item["path"].endswith(".key.pem"):
            assert item.get("mode") == 0o440, f"{item['path']}: private key mode {item.get('mode')!r}, want 0440"
    if config["engine"]["kind"] == "redis":
        assert config["engine"].get("url") or config["engine"].get("cluster_urls")


def flatten_keys(config: dict) -> dict[str, object]:
    """section.key for each key of herald.toml, and section.list[].key for the
    keys of array-of-tables entries."""
    flat = {}
    for section, table in config.items():
        for key, value in table.items():
            flat[f"{section}.{key}"] = value
            if isinstance(value, list) and value and isinstance(value[0], dict):
                for entry in value:
                    flat.update({f"{section}.{key}[].{k}": v for k, v in entry.items()})
    return flat


def key_files(config: dict) -> list[tuple[str, str]]:
    """(where, path) of every key file herald.toml names."""
    auth = config.get("auth", {})
    files = [(f"auth.{k}", auth[k]) for k in ("public_key_file", "private_key_file") if k in auth]
    for i, key in enumerate(auth.get("keys", [])):
        files += [(f"auth.keys[{i}].{k}", key[k]) for k in ("public_key_file", "private_key_file") if k in key]
    return files


def mounted_key_items(docs: list[dict]) -> list[tuple[str, dict]]:
    """(Secret name, item) of each Secret file in the config volume at KEY_DIR."""
    pod, c = herald_container(docs)
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "config"]
    assert mount["mountPath"] == KEY_DIR and mount["readOnly"], mount
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    return [(s["secret"]["name"], item) for s in volume["projected"]["sources"] if "secret" in s
            for item in s["secret"]["items"]]


def check_scaling(docs: list[dict], values: dict) -> None:
    (deploy,) = find(docs, "Deployment")
    hpas = find(docs, "HorizontalPodAutoscaler")
    if hpas:
        assert "replicas" not in deploy["spec"], "replicas would fight the HPA on every upgrade"
        assert hpas[0]["spec"]["behavior"]["scaleDown"], "scale-down should be damped"
    if values["config"]["engine"]["kind"] == "memory":
        assert not hpas and deploy["spec"]["replicas"] == 1, "memory engine must run one pod"


def check_ingress(docs: list[dict], values: dict) -> None:
    (ing,) = find(docs, "Ingress")
    notes = ing["metadata"].get("annotations", {})
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        value = notes.get(f"nginx.ingress.kubernetes.io/{key}")
        assert value and int(value) >= 3600, f"{key} is {value!r}; WebSockets need a long idle timeout"
    paths = [p for r in ing["spec"]["rules"] for p in r["http"]["paths"]]
    backends = [p["backend"]["service"] for p in paths]
    service_names = {s["metadata"]["name"] for s in find(docs, "Service")}
    assert all(b["name"] in service_names for b in backends), backends
    exposed = [(p["path"], private) for p in paths for private in PRIVATE_PATHS if routes(p, private)]
    assert not exposed, f"the Ingress routes private paths (path, what it reaches): {exposed}"
    assert all(b["port"].get("name") == "http" for b in backends), "the Ingress must route to the http port only"
    sio = values["ingress"].get("socketio") or {}
    if sio.get("enabled"):
        missing = set(sio["paths"]) - {p["path"] for p in paths}
        assert not missing, f"Socket.IO paths not routed: {sorted(missing)}"
        if sio.get("stickySessions"):
            affinity = notes.get("nginx.ingress.kubernetes.io/affinity")
            assert affinity == "cookie", f"long-polling needs cookie affinity; affinity is {affinity!r}"


def routes(path: dict, target: str) -> bool:
    """Whether an Ingress path sends requests for `target` to herald. Prefix
    matches whole path elements (Kubernetes rules); ImplementationSpecific is
    taken as a plain string prefix, the widest reading."""
    rule, kind = path["path"], path.get("pathType", "Prefix")
    if kind == "Exact":
        return rule == target
    if kind == "Prefix":
        rule = rule.rstrip("/")
        return target == rule or target.startswith(rule + "/")
    return target.startswith(rule)


def check_routes_rule() -> None:
    """The private-path check itself: it must catch a catch-all route."""
    assert routes({"path": "/", "pathType": "Prefix"}, "/metrics")
    assert routes({"path": "/demo/", "pathType": "Prefix"}, "/demo/herald.js")
    assert routes({"path": "/de", "pathType": "ImplementationSpecific"}, "/demo")
    assert not routes({"path": "/me", "pathType": "Prefix"}, "/metrics")
    assert not routes({"path": "/ws", "pathType": "Exact"}, "/metrics")


def check_dashboard_cm(docs: list[dict]) -> None:
    (cm,) = [d for d in find(docs, "ConfigMap") if "herald.json" in d.get("data", {})]
    assert cm["metadata"]["labels"].get("grafana_dashboard") == "1", "the Grafana sidecar would not find it"
    shipped = json.loads(cm["data"]["herald.json"])
    assert shipped == json.loads((CHART / "dashboards" / "herald.json").read_text())


def check_with_herald(docs: list[dict], outdir: Path) -> None:
    """Optional (HERALD_BIN=path/to/herald): herald itself loads the config,
    with the Deployment's environment and the key files of its config volume:
    from the chart's Secret, or, for an existingSecret, test keys of the right
    algorithm made here. Paths under /etc/herald are moved into outdir."""
    pod, c = herald_container(docs)
    env = {"PATH": os.environ.get("PATH", "")}
    for e in c["env"]:
        # Secrets from a Secret stand in at 48 bytes: herald refuses HS keys and
        # API keys under 32 bytes off loopback (RFC 7518 §3.2).
        env[e["name"]] = e.get("value", "x-check-" + hashlib.sha1(e["name"].encode()).hexdigest())
    text = rendered_toml(docs)
    config = tomllib.loads(text)
    keydir = outdir / "etc-herald"
    keydir.mkdir()
    secrets = {s["metadata"]["name"]: s.get("data", {}) for s in find(docs, "Secret")}
    for name, item in mounted_key_items(docs):
        target = keydir / item["path"]
        if name in secrets:
            target.write_bytes(base64.b64decode(secrets[name][item["key"]]))
        else:
            target.write_text(test_key(config, f"{KEY_DIR}/{item['path']}", outdir))
    (outdir / "herald.check.toml").write_text(text.replace(f'"{KEY_DIR}/', f'"{keydir}/'))
    env["HERALD_CONFIG"] = str(outdir / "herald.check.toml")
    run = subprocess.run([os.environ["HERALD_BIN"], "check-config"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_key(config: dict, path: str, outdir: Path) -> str:
    """A PEM for the key file at `path` (public or private half of a fresh key
    of that key's algorithm), standing in for an existingSecret's key."""
    assert shutil.which("openssl"), "openssl is needed to make test keys standing in for an existingSecret's"
    auth = config["auth"]
    owners = [auth] + auth.get("keys", [])
    (owner,) = [k for k in owners if path in (k.get("public_key_file"), k.get("private_key_file"))]
    algorithm = owner.get("algorithm", "HS256")
    private = outdir / f"test-key-{hashlib.sha1(path.encode()).hexdigest()[:8]}.pem"
    options = {"RS256": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
               "ES256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]}[algorithm]
    subprocess.run(["openssl", "genpkey", *options, "-out", str(private)], check=True, capture_output=True)
    if path == owner.get("private_key_file"):
        return private.read_text()
    return subprocess.run(["openssl", "pkey", "-in", str(private), "-pubout"],
                          check=True, capture_output=True, text=True).stdout


# ---------------------------------------------------------------- whole chart


def example_keys() -> tuple[set[str], dict]:
    """Keys of herald.example.toml and its defaults.

    Commented-out keys count when written "# key = value" (one space after the
    #); indented prose such as "#   access = ..." does not. Keys under a
    [[section.list]] header, real or commented out, are "section.list[].key";
    those entries are examples, so the list's default is herald's: empty.
    """
    text = (ROOT / "herald.example.toml").read_text()
    keys, lists, section, doc_section = set(), set(), "", None
    for line in text.splitlines():
        if m := re.match(r"^(# ?)?\[\[([\w.]+)\]\]", line):
            lists.add(m.group(2))
            if m.group(1):
                doc_section = f"{m.group(2)}[]"
            else:
                section, doc_section = f"{m.group(2)}[]", None
        elif m := re.match(r"^\[([\w.]+)\]", line):
            section, doc_section = m.group(1), None
        elif m := re.match(r"^([a-z_]+)\s*=", line):
            keys.add(f"{section}.{m.group(1)}")
        elif m := re.match(r"^# ([a-z_]+)\s*=", line):
            keys.add(f"{doc_section or section}.{m.group(1)}")
    defaults = {f"{s}.{k}": v for s, t in tomllib.loads(text).items() for k, v in t.items()}
    defaults.update({key: [] for key in lists})
    return keys | lists, defaults


def herald_keys() -> tuple[set[str], dict]:
    """herald.example.toml's keys and defaults, with EXAMPLE_GAPS for what it lacks."""
    keys, defaults = example_keys()
    gaps = {k: v for k, v in EXAMPLE_GAPS.items() if k not in keys}
    defaults |= {k: v for k, v in gaps.items() if v is not NO_DEFAULT}
    return keys | gaps.keys(), defaults


def src_keys() -> set[str]:
    """Config keys from src/: the fields of the structs under `Config`, and of
    the structs of Vec<...> fields as "section.list[].key"."""
    text = "\n".join(p.read_text() for p in sorted((ROOT / "src").rglob("*.rs")))
    structs: dict[str, str] = {}
    for m in re.finditer(r"^pub struct (\w+) \{\n(.*?)^\}", text, re.M | re.S):
        structs.setdefault(m.group(1), []).append(m.group(2))

    def fields(name: str) -> list[tuple[str, str]]:
        assert len(structs.get(name, [])) == 1, f"src/ defines struct {name} {len(structs.get(name, []))} times"
        return re.findall(r"^\s+(?:pub(?:\([\w:]+\))? )?(\w+): ([^\n]+),$", structs[name][0], re.M)

    keys = set()
    for section, section_type in fields("Config"):
        for key, key_type in fields(section_type):
            keys.add(f"{section}.{key}")
            if (m := re.fullmatch(r"Vec<(\w+)>", key_type)) and m.group(1) in structs:
                keys |= {f"{section}.{key}[].{k}" for k, _ in fields(m.group(1))}
    return keys


def check_example_covers_src() -> None:
    example, _ = example_keys()
    src = src_keys()
    gaps = set(EXAMPLE_GAPS)
    problems = [f"src/ defines {k}; herald.example.toml lacks it (document it there)"
                for k in sorted(src - example - gaps)]
    problems += [f"herald.example.toml has {k}, which is no config field in src/" for k in sorted(example - src)]
    problems += [f"EXAMPLE_GAPS has {k}, which is no config field in src/" for k in sorted(gaps - src)]
    assert not problems, "\n".join(problems)
    if stale := sorted(gaps & example):
        print(f"  note  herald.example.toml documents these again; drop them from EXAMPLE_GAPS: {stale}")
    if missing := sorted(gaps - example):
        print(f"  note  herald.example.toml still lacks {len(missing)} keys of src/ (EXAMPLE_GAPS): "
              + ", ".join(missing))


def check_values_mirror_example(values: dict, schema: dict) -> None:
    keys, defaults = herald_keys()
    top = {k for k in keys if "[]" not in k}
    ours = {f"{s}.{k}": v for s, t in values["config"].items() for k, v in t.items()}
    source = lambda k: "herald.example.toml" if k in example_keys()[0] else "src/ (EXAMPLE_GAPS)"
    problems = [f"{k} is set by the chart and must not be in values.config" for k in ours if k in CHART_MANAGED_KEYS]
    problems += [f"{source(k)} has {k}; values.config lacks it"
                 for k in sorted(top - CHART_MANAGED_KEYS - set(ours))]
    problems += [f"values.config.{k} is not in herald.example.toml" for k in sorted(set(ours) - top)]
    for key, default in defaults.items():
        want = INTENTIONAL_DEFAULTS.get(key, default)
        if key in ours and ours[key] != want:
            problems.append(f"values.config.{key} = {ours[key]!r}, herald's default is {default!r}")
    # Entries of lists of tables: the schema's item keys are herald's, less the chart's own.
    for key in sorted(k for k in top if any(x.startswith(f"{k}[].") for x in keys)):
        herald_items = {x.split("[].")[1] for x in keys if x.startswith(f"{key}[].")}
        herald_items -= {x.split("[].")[1] for x in CHART_MANAGED_KEYS if x.startswith(f"{key}[].")}
        section, name = key.split(".")
        item_schema = schema["properties"]["config"]["properties"][section]["properties"][name]["items"]
        if set(item_schema["properties"]) != herald_items:
            problems.append(f"values.config.{key} entries take {sorted(item_schema['properties'])}; "
                            f"herald's are {sorted(herald_items)}")
    assert not problems, "\n".join(problems)


def schema_leaves(schema: dict, prefix: str = "") -> list[str]:
    leaves = []
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        leaves += schema_leaves(sub, path + ".") if "properties" in sub else [path]
    return leaves


def check_values_documented(leaves: list[str]) -> None:
    """Every leaf value has a comment above it in values.yaml and a README row."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    found, uncommented, list_indent = set(), [], None
    for n, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if list_indent is not None and indent > list_indent:
            continue
        list_indent = indent if line.lstrip().startswith("- ") else None
        m = re.match(r"^\s*([A-Za-z_][\w-]*):", line)
        if not m:
            continue
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, m.group(1))]
        path = ".".join(k for _, k in stack)
        if path in leaves:
            found.add(path)
            previous = next(l for l in reversed(lines[:n]) if l.strip())
            if not previous.lstrip().startswith("#"):
                uncommented.append(path)
    readme = (CHART / "README.md").read_text()
    problems = [f"{p}: in the schema, not in values.yaml" for p in leaves if p not in found and p != "global"]
    problems += [f"{p}: no comment above it in values.yaml" for p in uncommented]
    problems += [f"{p}: no row in README.md" for p in leaves if p != "global" and f"| `{p}` |" not in readme]
    rows = re.findall(r"^\| `([^`]+)` \|", readme, re.M)
    problems += [f"{r}: a README.md row for a value the schema does not have" for r in rows if r not in leaves]
    assert not problems, "\n".join(problems)


def metric_names(exprs: list[str]) -> set[str]:
    names = set()
    for expr in exprs:
        for name in re.findall(r"\bherald_[a-z_]+", expr):
            names.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return names


def check_dashboard_file() -> None:
    dash = json.loads((CHART / "dashboards" / "herald.json").read_text())
    assert dash.get("uid") and dash.get("title") and dash.get("schemaVersion")
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    exprs = []
    for p in panels:
        assert p.get("targets") and p.get("datasource") and p.get("gridPos"), p["title"]
        exprs += [t["expr"] for t in p["targets"]]
    source = (ROOT / "src" / "metrics.rs").read_text()
    defined = set(re.findall(r'pub const \w+: &str = "(herald_[a-z_]+)";', source))
    used = metric_names(exprs)
    unknown = used - defined - PENDING_METRICS
    assert not unknown, f"the dashboard queries metrics src/metrics.rs does not define: {sorted(unknown)}"
    unused = defined - used
    assert not unused, f"src/metrics.rs defines metrics the dashboard does not show: {sorted(unused)}"


def check_schema_closed(schema: dict, path: str = "values") -> None:
    """Objects with named properties refuse others, so a typo is an error."""
    if "properties" in schema:
        assert schema.get("additionalProperties") is False, f"{path} accepts unknown keys"
        for key, sub in schema["properties"].items():
            check_schema_closed(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        check_schema_closed(schema["items"], f"{path}[]")


def check_negative(chart: helm.Chart, values: dict, expected: str) -> None:
    try:
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as err:
        assert expected in str(err), f"failed, but not for the expected reason ({expected!r}):\n{err}"
        return
    raise AssertionError("rendered; it must be refused")


def main() -> int:
    report = Report()
    if OUT.exists():
        for path in sorted(OUT.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"helm engine {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}); "
          f"Kubernetes schemas {', '.join(KUBE_VERSIONS)}")
    with helm.Chart.load(CHART) as chart:
        print("chart")
        assert chart.metadata["apiVersion"] == "v2"
        schema = chart.schema
        report.check("values.schema.json rejects unknown keys", check_schema_closed, schema)
        report.check("values.yaml passes its own schema", chart.validate_schema, {})
        report.check("herald.example.toml covers src/'s config keys", check_example_covers_src)
        report.check("values.config mirrors herald.example.toml", check_values_mirror_example, chart.values, schema)
        report.check("every value is commented and in README.md", check_values_documented, schema_leaves(schema))
        report.check("dashboards/herald.json is a dashboard of herald's metrics", check_dashboard_file)
        report.check("the Ingress private-path check catches a catch-all route", check_routes_rule)
        for name, values in value_sets().items():
            check_value_set(report, chart, name, values)
        print("invalid values must fail")
        for name, values, expected in NEGATIVE:
            report.check(f"refused: {name}", check_negative, chart, copy.deepcopy(values), expected)
    print(f"\nrendered manifests: {OUT.relative_to(ROOT)}/")
    if report.failed:
        print("failed: " + "; ".join(report.failed))
    print(f"helm: {report.passed} passed, {len(report.failed)} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
