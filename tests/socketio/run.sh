#!/usr/bin/env bash
# End-to-end test of the Socket.IO transport with real clients: installs what is
# missing (socket.io-client and socket.io-msgpack-parser with `npm ci` from the
# committed package-lock.json; python-socketio with pip, into a virtualenv under
# target/), starts a herald hub on a free port with a small config (a namespace that
# allows client publishing), mints tokens and runs socketio.test.mjs, then
# python_client.py. The hub is always stopped; the run is bounded in time.
#
#   tests/socketio/run.sh
#
# Environment:
#   HERALD_BIN       herald binary (default target/release/herald, else target/debug/herald)
#   SIO_SKIP_PYTHON  1: skip the python-socketio check
# Artifacts: artifacts/socketio/herald.log
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

if [[ -z "${HERALD_BIN:-}" ]]; then
  if [[ -x target/release/herald ]]; then
    HERALD_BIN=target/release/herald
  elif [[ -x target/debug/herald ]]; then
    HERALD_BIN=target/debug/herald
  else
    echo "run.sh: no herald binary in target/release or target/debug: build it or set HERALD_BIN" >&2
    exit 1
  fi
fi
case "$HERALD_BIN" in /*) ;; *) HERALD_BIN="$root/$HERALD_BIN" ;; esac
if [[ ! -x "$HERALD_BIN" ]]; then
  echo "run.sh: $HERALD_BIN is not an executable" >&2
  exit 1
fi

# herald takes every HERALD_<SECTION>__<KEY> variable as configuration and refuses the
# others (HERALD_BIN among them): run it without those, and without HERALD_CONFIG
# (this test brings its own).
hub_env=(env -u HERALD_CONFIG)
while IFS= read -r name; do
  case "$name" in HERALD_*__*) ;; *) hub_env+=(-u "$name") ;; esac
done < <(compgen -e | grep '^HERALD_' || true)

if [[ ! -d "$here/node_modules/socket.io-client" ]]; then
  echo "run.sh: installing socket.io-client (npm ci)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

mkdir -p artifacts/socketio
log="$root/artifacts/socketio/herald.log"
workdir="$(mktemp -d)"
hub_pid=""

cleanup() {
  if [[ -n "$hub_pid" ]] && kill -0 "$hub_pid" 2>/dev/null; then
    kill -TERM "$hub_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$hub_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$hub_pid" 2>/dev/null || true
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$workdir/herald.toml" <<'EOF'
[[channels.namespaces]]
pattern = "chat.*"
access = "authenticated"
client_publish = true

# Short heartbeats, so the test sees Engine.IO pings keep idle clients alive.
[heartbeat]
interval_ms = 1000
timeout_ms = 1000

[shutdown]
drain_ms = 100
grace_ms = 500
EOF

port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
: >"$log"
"${hub_env[@]}" "$HERALD_BIN" --config "$workdir/herald.toml" --listen "127.0.0.1:$port" >>"$log" 2>&1 &
hub_pid=$!

for _ in $(seq 100); do
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$hub_pid" 2>/dev/null; then
    echo "run.sh: herald exited at startup:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done

export SIO_URL="http://127.0.0.1:$port"
export SIO_API_KEY="${HERALD_SERVER__API_KEY:-herald-insecure-development-api-key}"
SIO_TOKEN_ALICE="$("${hub_env[@]}" "$HERALD_BIN" --config "$workdir/herald.toml" token --user alice)"
SIO_TOKEN_BOB="$("${hub_env[@]}" "$HERALD_BIN" --config "$workdir/herald.toml" token --user bob)"
export SIO_TOKEN_ALICE SIO_TOKEN_BOB

echo "run.sh: socket.io-client against herald on 127.0.0.1:$port (pid $hub_pid)"
if ! timeout 180 node "$here/socketio.test.mjs"; then
  echo "run.sh: failed; the hub's log is $log" >&2
  exit 1
fi

if [[ "${SIO_SKIP_PYTHON:-}" != 1 && -f "$here/python_client.py" ]]; then
  venv="$root/target/socketio-venv"
  if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import socketio' 2>/dev/null; then
    echo "run.sh: installing python-socketio[client] (pip, into $venv)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  fi
  echo "run.sh: python-socketio against the same hub"
  if ! timeout 60 "$venv/bin/python" "$here/python_client.py"; then
    echo "run.sh: python client failed; the hub's log is $log" >&2
    exit 1
  fi
fi
