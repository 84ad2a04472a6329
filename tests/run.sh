#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls it).
# Installs what a fresh Debian machine lacks, then runs every check:
# formatting, lints, unit + integration tests (real sockets, real Redis),
# the k6 smoke test, the browser test, the Socket.IO client test and the Helm
# chart checks.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

step "cargo test"
cargo test --locked

# The smoke and browser tests drive the debug binary that `cargo test` built.
export HERALD_BIN="${HERALD_BIN:-target/debug/herald}"
for check in k6/run-smoke.sh tests/browser/run.sh tests/socketio/run.sh .ci/check-helm.sh; do
  step "$check"
  "$check"
done

step "all checks passed"
