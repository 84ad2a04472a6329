#!/usr/bin/env bash
# End-to-end test of the Socket.IO transport with real clients: installs what is
# missing (socket.io-client and socket.io-msgpack-parser with `npm ci` from the
# committed package-lock.json; python-socketio with pip into target/socketio-pylib),
# starts a herald hub on a free port with a small config (a namespace that allows
# client publishing, 1 s heartbeats), plus a redis-server and two herald nodes on it, mints
# tokens and runs socketio.test.mjs, seed.test.mjs (the seed app's socketService),
# browser.test.mjs and restart.test.mjs (headless Chromium, the system's; the latter
# kills and restarts hubs of its own) and python_client.py. Every process it started
# is stopped; the run is bounded in time.
#
#   tests/socketio/run.sh
#
# Environment:
#   HERALD_BIN       herald binary (default target/release/herald, else target/debug/herald)
#   SIO_SKIP_PYTHON  1: skip the python-socketio check
#   SIO_SKIP_BROWSER 1: skip the headless Chromium check
#   CHROMIUM         browser binary (default /usr/bin/chromium)
# Artifacts: artifacts/socketio/herald.log, herald-a.log, herald-b.log, redis.log,
# restart-memory.log, restart-node-c.log
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

# shellcheck source=../herald-bin.sh
source "$root/tests/herald-bin.sh"

# herald takes every HERALD_<SECTION>__<KEY> variable as configuration and refuses the
# others (HERALD_BIN among them): run it without those, and without HERALD_CONFIG
# (this test brings its own).
hub_env=(env -u HERALD_CONFIG)
while IFS= read -r name; do
  case "$name" in HERALD_*__*) ;; *) hub_env+=(-u "$name") ;; esac
done < <(compgen -e | grep '^HERALD_' || true)

# Installed once per lock file: a copy of the lock it was installed from
# marks node_modules, so a changed lock file reinstalls.
if ! cmp -s "$here/package-lock.json" "$here/node_modules/.installed-lock.json"; then
  echo "run.sh: installing the test's npm packages (npm ci)"
  # playwright-core never downloads browsers; the variable is a second guard.
  (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$here/node_modules/.installed-lock.json"
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "run.sh: redis-server is missing: apt-get install -y redis-server (tests/run.sh does this)" >&2
  exit 1
fi

mkdir -p artifacts/socketio
log="$root/artifacts/socketio/herald.log"
workdir="$(mktemp -d)"
pids=()

stop() { # pid: TERM, then KILL after 5 s
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  # Newest first: the Redis nodes before their Redis server.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[$i]}"; done
  rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# start_hub <log> <port> [VAR=value...]: a herald with this test's config, waited for.
start_hub() {
  local hub_log="$1" hub_port="$2"
  shift 2
  : >"$hub_log"
  "${hub_env[@]}" "$@" "$HERALD_BIN" --config "$workdir/herald.toml" --listen "127.0.0.1:$hub_port" >>"$hub_log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:$hub_port/ready" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run.sh: herald exited at startup:" >&2
      cat "$hub_log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "run.sh: herald on port $hub_port not ready in 10 s; its log is $hub_log" >&2
  exit 1
}

cat >"$workdir/herald.toml" <<'EOF'
[[channels.namespaces]]
pattern = "chat.*"
access = "authenticated"
client_publish = true

# Short heartbeats, so the test sees Engine.IO pings keep idle clients alive.
[heartbeat]
interval_ms = 1000
timeout_ms = 1000

# Channels with history: Socket.IO connection state recovery (on nodes a and b).
[[channels.namespaces]]
pattern = "hist.*"
access = "authenticated"
history_size = 100

[shutdown]
drain_ms = 100
grace_ms = 500
EOF

port="$(free_port)"
start_hub "$log" "$port"

# Two more nodes sharing a Redis server: a client on one, publications on the
# other, and raw (binary) payloads PUBLISHed straight into Redis.
redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$workdir" >"$root/artifacts/socketio/redis.log" 2>&1 &
pids+=("$!")
for _ in $(seq 50); do
  if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then break; fi
  sleep 0.1
done
node_a_port="$(free_port)"
node_b_port="$(free_port)"
for node in a b; do
  node_port_var="node_${node}_port"
  start_hub "$root/artifacts/socketio/herald-$node.log" "${!node_port_var}" \
    HERALD_ENGINE__KIND=redis HERALD_ENGINE__URL="redis://127.0.0.1:$redis_port" \
    HERALD_SERVER__NODE_ID="node-$node" HERALD_SOCKETIO__CONNECTION_STATE_RECOVERY=true \
    HERALD_SOCKETIO__REDIS_EMITTER=true
done
export SIO_NODE_A_URL="http://127.0.0.1:$node_a_port"
export SIO_NODE_B_URL="http://127.0.0.1:$node_b_port"
export SIO_REDIS_PORT="$redis_port"

export SIO_URL="http://127.0.0.1:$port"
export SIO_API_KEY="${HERALD_SERVER__API_KEY:-herald-insecure-development-api-key}"
SIO_TOKEN_ALICE="$("${hub_env[@]}" "$HERALD_BIN" --config "$workdir/herald.toml" token --user alice)"
SIO_TOKEN_BOB="$("${hub_env[@]}" "$HERALD_BIN" --config "$workdir/herald.toml" token --user bob)"
SIO_TOKEN_CAROL="$("${hub_env[@]}" "$HERALD_BIN" --config "$workdir/herald.toml" token --user carol)"
export SIO_TOKEN_ALICE SIO_TOKEN_BOB SIO_TOKEN_CAROL
export SIO_CONFIG="$workdir/herald.toml" SIO_ARTIFACTS="$root/artifacts/socketio"

echo "run.sh: socket.io-client against herald on 127.0.0.1:$port, and nodes a and b on Redis :$redis_port"
if ! timeout 180 node "$here/socketio.test.mjs"; then
  echo "run.sh: failed; the hub's log is $log" >&2
  exit 1
fi

echo "run.sh: the seed app's socketService (connect, subscribe, on) and its backend's three pushes"
if ! timeout 90 node "$here/seed.test.mjs"; then
  echo "run.sh: seed app test failed; the hub's log is $log" >&2
  exit 1
fi

if [[ "${SIO_SKIP_BROWSER:-}" != 1 ]]; then
  if [[ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]]; then
    echo "run.sh: chromium is missing: apt-get install -y chromium (tests/run.sh does this), or set SIO_SKIP_BROWSER=1" >&2
    exit 1
  fi
  echo "run.sh: socket.io-client's browser bundles in headless Chromium"
  if ! timeout 120 node "$here/browser.test.mjs"; then
    echo "run.sh: browser test failed; the hub's log is $log" >&2
    exit 1
  fi
  echo "run.sh: the browser bundle reconnects by itself after its hub is killed and restarted"
  if ! timeout 150 node "$here/restart.test.mjs"; then
    echo "run.sh: restart test failed; logs: artifacts/socketio/restart-*.log" >&2
    exit 1
  fi
fi

if [[ "${SIO_SKIP_PYTHON:-}" != 1 && -f "$here/python_client.py" ]]; then
  # A private --target directory instead of a virtualenv: needs only pip, not
  # the python3-venv package a fresh Debian lacks.
  pylib="$root/target/socketio-pylib"
  stamp="$pylib/.requirements.txt"
  if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
    echo "run.sh: installing python-socketio[client] (pip, into $pylib)"
    rm -rf "$pylib"
    python3 -m pip install --quiet --disable-pip-version-check --target "$pylib" -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
  fi
  echo "run.sh: python-socketio against the same hub"
  if ! PYTHONPATH="$pylib" timeout 60 python3 "$here/python_client.py"; then
    echo "run.sh: python client failed; the hub's log is $log" >&2
    exit 1
  fi
fi
