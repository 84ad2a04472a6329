#!/usr/bin/env bash
# Render herald's Helm chart with several value sets and validate every object:
# helm lint --strict, values.schema.json, kubernetes-validate --strict against
# two Kubernetes versions, structural checks for the ServiceMonitor CRD and the
# Grafana dashboard, chart invariants (shutdown grace, hardening, engine vs
# replicas, herald.toml against herald.example.toml and src/, key files), and
# invalid values that must be refused. See .ci/check_helm.py.
#
# Usage: .ci/check-helm.sh
#   HELM_CHECK_KUBE_VERSIONS="1.30.0 1.34.0"   Kubernetes schema versions
#   HERALD_BIN=target/release/herald           also run `herald check-config` on each rendered config,
#                                              with its key files (openssl makes test keys for an existingSecret)
# Output: artifacts/helm/<value set>/; exit status 1 on any failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"

# Pinned so that a new Helm engine or schema set changes results only on purpose.
# helm-python-sdk bundles Helm's Go engine (no helm binary to download);
# kubernetes-validate bundles the Kubernetes JSON schemas.
requirements=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML)

missing="$("$python" - "${requirements[@]}" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
for req in sys.argv[1:]:
    name, _, want = req.partition("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have is None or (want and have != want):
        print(req)
if sys.version_info < (3, 11):
    try:
        version("tomli")
    except PackageNotFoundError:
        print("tomli")
PY
)"
if [[ -n "$missing" ]]; then
    echo "installing: $(echo $missing)"
    # shellcheck disable=SC2086 # one requirement per word
    "$python" -m pip install --quiet --disable-pip-version-check $missing
fi

cd "$root"
exec "$python" .ci/check_helm.py
