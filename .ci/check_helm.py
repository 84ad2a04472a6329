"""Render herald's Helm chart with several value sets and validate the result.

Run through .ci/check-helm.sh, which installs the two tools this needs:
helm-python-sdk (Helm's own Go engine behind a C ABI, so rendering, schema
validation and lint are Helm's, with no helm binary) and kubernetes-validate
(the Kubernetes OpenAPI schemas as JSON Schema).

Rendered manifests land in artifacts/helm/<value set>/. The last line is
"helm: N passed, N failed"; the exit status is 1 when anything failed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
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
# env or the mounted key), so they must not appear in values.config.
CHART_MANAGED_KEYS = {
    "server.listen", "server.api_key", "auth.secret", "auth.public_key",
    "auth.public_key_file", "engine.password",
}
# Redis engine keys the chart supports ahead of herald.example.toml (issue 6).
PENDING_KEYS = {f"engine.{key}" for key in (
    "url", "cluster_urls", "prefix", "reader_shards", "unsubscribe_linger_ms", "default_event",
    "ready_requires_connection", "reconnect_min_ms", "reconnect_max_ms", "command_timeout_ms",
    "announce_interval_ms",
)}
# Chart defaults that differ from herald's on purpose.
INTENTIONAL_DEFAULTS = {"log.format": "json"}  # log collectors parse JSON lines
# Redis engine metrics the dashboard charts ahead of src/metrics.rs (issue 6).
PENDING_METRICS = {
    "herald_engine_reconnects_total",
    "herald_engine_resubscribe_duration_seconds",
    "herald_engine_pubsub_lag_seconds",
}

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
        report.check(f"{name}: Ingress WebSocket timeouts", check_ingress, docs, merged)
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
    assert c["resources"]["limits"]["memory"], "no memory limit"
    sc, psc = c["securityContext"], pod["securityContext"]
    assert psc["runAsNonRoot"] and sc["runAsNonRoot"], "may run as root"
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"], sc["capabilities"]
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["enableServiceLinks"] is False, "service links would inject unknown HERALD_* variables"
    assert not pod["automountServiceAccountToken"]
    assert "checksum/config" in pod_annotations(docs)


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
    known = example_keys()[0] | PENDING_KEYS | {"auth.public_key_file"}
    keys = {f"{section}.{key}" for section, table in config.items() for key in table}
    assert keys <= known, f"keys herald does not know: {sorted(keys - known)}"
    for secret in ("server.api_key", "auth.secret", "auth.public_key", "engine.password"):
        assert secret not in keys, f"{secret} must come from the Secret, not the ConfigMap"
    pod, c = herald_container(docs)
    env = {e["name"]: e for e in c["env"]}
    for name in env:
        assert name == "HERALD_CONFIG" or re.fullmatch(r"HERALD_[A-Z]+__[A-Z_]+", name), f"odd env {name}"
        section = name.removeprefix("HERALD_").split("__")[0].lower()
        assert name == "HERALD_CONFIG" or section in config, f"{name}: no [{section}] in herald.toml"
    assert env["HERALD_SERVER__LISTEN"]["value"] == f"0.0.0.0:{values['containerPort']}"
    secret_ref = env["HERALD_SERVER__API_KEY"]["valueFrom"]["secretKeyRef"]["name"]
    chart_secrets = {s["metadata"]["name"] for s in find(docs, "Secret")}
    assert secret_ref in chart_secrets | {values["secret"]["existingSecret"]}, f"Secret {secret_ref} is nowhere"
    algorithm = config["auth"].get("algorithm", "HS256")
    assert ("HERALD_AUTH__SECRET" in env) == (algorithm == "HS256"), "HS256 secret env mismatch"
    if algorithm != "HS256":
        assert config["auth"]["public_key_file"] == "/etc/herald/jwt.pub.pem"
        (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
        items = [i for s in volume["projected"]["sources"] if "secret" in s for i in s["secret"]["items"]]
        assert [i["path"] for i in items] == ["jwt.pub.pem"], "public key is not mounted"
    if config["engine"]["kind"] == "redis":
        assert config["engine"].get("url") or config["engine"].get("cluster_urls")


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
    backends = [p["backend"]["service"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]]
    service_names = {s["metadata"]["name"] for s in find(docs, "Service")}
    assert all(b["name"] in service_names for b in backends), backends


def check_dashboard_cm(docs: list[dict]) -> None:
    (cm,) = [d for d in find(docs, "ConfigMap") if "herald.json" in d.get("data", {})]
    assert cm["metadata"]["labels"].get("grafana_dashboard") == "1", "the Grafana sidecar would not find it"
    shipped = json.loads(cm["data"]["herald.json"])
    assert shipped == json.loads((CHART / "dashboards" / "herald.json").read_text())


def check_with_herald(docs: list[dict], outdir: Path) -> None:
    """Optional (HERALD_BIN=path/to/herald): herald itself parses the config."""
    pod, c = herald_container(docs)
    env = {"PATH": os.environ.get("PATH", "")}
    for e in c["env"]:
        env[e["name"]] = e.get("value", "x-check-" + hashlib.sha1(e["name"].encode()).hexdigest()[:12])
    env["HERALD_CONFIG"] = str(outdir / "herald.toml")
    run = subprocess.run([os.environ["HERALD_BIN"], "check-config"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


# ---------------------------------------------------------------- whole chart


def example_keys() -> tuple[set[str], dict]:
    """Keys of herald.example.toml, commented-out ones included, and its defaults."""
    text = (ROOT / "herald.example.toml").read_text()
    keys, section = set(), ""
    for line in text.splitlines():
        if m := re.match(r"^\[(\w+)\]", line):
            section = m.group(1)
        elif m := re.match(r"^#?\s*([a-z_]+)\s*=", line):
            keys.add(f"{section}.{m.group(1)}")
    defaults = {f"{s}.{k}": v for s, t in tomllib.loads(text).items() for k, v in t.items()}
    return keys, defaults


def check_values_mirror_example(values: dict) -> None:
    keys, defaults = example_keys()
    ours = {f"{s}.{k}": v for s, t in values["config"].items() for k, v in t.items()}
    problems = [f"{k} is set by the chart and must not be in values.config" for k in ours if k in CHART_MANAGED_KEYS]
    problems += [f"herald.example.toml has {k}; values.config lacks it"
                 for k in sorted(keys - CHART_MANAGED_KEYS - set(ours))]
    problems += [f"values.config.{k} is not in herald.example.toml"
                 for k in sorted(set(ours) - keys - PENDING_KEYS)]
    for key, default in defaults.items():
        want = INTENTIONAL_DEFAULTS.get(key, default)
        if key in ours and ours[key] != want:
            problems.append(f"values.config.{key} = {ours[key]!r}, herald's default is {default!r}")
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
        report.check("values.config mirrors herald.example.toml", check_values_mirror_example, chart.values)
        report.check("every value is commented and in README.md", check_values_documented, schema_leaves(schema))
        report.check("dashboards/herald.json is a dashboard of herald's metrics", check_dashboard_file)
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
