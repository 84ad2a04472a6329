#!/usr/bin/env bash
# Browser end-to-end test of the /demo page (after the quick unit tests of herald.js in
# client.test.mjs): installs what is missing (Chromium from
# apt, playwright-core from npm — never a browser download), starts a herald hub on a
# free port, mints a token and runs demo.test.mjs with node. Then recovery.test.mjs: its
# own redis-server and two Redis-engine hubs on free ports, the demo's shipment feed across
# a hub restart. Every process started is killed at the end.
#
#   tests/browser/run.sh
#
# Environment:
#   HERALD_BIN   herald binary (default target/release/herald, else target/debug/herald,
#                relative to the repository root)
#   DEMO_ORIGIN  unset: test herald's own /demo (the files compiled into the binary);
#                "local": serve examples/browser from the test (no rebuild needed);
#                or an origin serving examples/browser, e.g. http://127.0.0.1:8000
#   DEMO_FORMAT  json (default) or msgpack
#   REDIS_SERVER redis-server binary for recovery.test.mjs (default: on PATH)
# Artifacts: artifacts/browser/demo.png (screenshot), herald.log, failure.png on failure;
# recovery.log, recovery-failure.png.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

# shellcheck source=../herald-bin.sh
source "$root/tests/herald-bin.sh"

# herald takes every HERALD_<SECTION>__<KEY> variable as configuration and refuses the
# others (HERALD_BIN among them): run it without those.
hub_env=(env)
while IFS= read -r name; do
  case "$name" in HERALD_CONFIG | HERALD_*__*) ;; *) hub_env+=(-u "$name") ;; esac
done < <(compgen -e | grep '^HERALD_' || true)

if [[ ! -x /usr/bin/chromium ]]; then
  echo "run.sh: installing chromium (apt-get)"
  sudo=""
  if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

if [[ ! -d "$here/node_modules/playwright-core" ]]; then
  echo "run.sh: installing playwright-core (npm)"
  # playwright-core never downloads browsers; the variable is a second guard.
  if [[ -f "$here/package-lock.json" ]]; then npm_cmd=ci; else npm_cmd=install; fi
  (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm "$npm_cmd" --no-audit --no-fund --loglevel=error)
fi

mkdir -p artifacts/browser
log="$root/artifacts/browser/herald.log"
workdir="$(mktemp -d)"
pidfile="$workdir/herald.pid"
export DEMO_HUB_PID_FILE="$pidfile"
# The tests append the pid of every process they start (hubs, redis-server) here.
export DEMO_PIDS_FILE="$workdir/pids"

stop_pid() {
  local pid="$1"
  # Only a process of ours that is still alive (pids are reused).
  if kill -0 "$pid" 2>/dev/null && grep -qaE 'herald|redis-server' "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

cleanup() {
  # The test replaces the hub it kills and writes the new pid here; kill whichever is current.
  if [[ -s "$pidfile" ]]; then stop_pid "$(cat "$pidfile")"; fi
  # Whatever the tests started and did not stop (they kill their own on a normal exit).
  if [[ -s "$DEMO_PIDS_FILE" ]]; then
    while read -r pid; do stop_pid "$pid"; done <"$DEMO_PIDS_FILE"
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
export DEMO_HUB_PORT="$port"

: >"$log"
"${hub_env[@]}" "$HERALD_BIN" --listen "127.0.0.1:$port" >>"$log" 2>&1 &
first_pid=$!
disown "$first_pid" # the test kills it; no "Killed" job notice from bash
echo "$first_pid" >"$pidfile"

for _ in $(seq 100); do
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$first_pid" 2>/dev/null; then
    echo "run.sh: herald exited at startup:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done

DEMO_TOKEN="$("${hub_env[@]}" "$HERALD_BIN" token --user demo)"
export DEMO_TOKEN

echo "run.sh: unit tests of examples/browser/herald.js (fake WebSocket)"
node --test "$here/client.test.mjs"

echo "run.sh: herald $("${hub_env[@]}" "$HERALD_BIN" --version 2>/dev/null | head -1) on 127.0.0.1:$port (pid $first_pid)"
node "$here/demo.test.mjs"

echo "run.sh: the demo's shipment feed across a hub restart (redis-server + 2 hubs, history on tracking.*)"
node "$here/recovery.test.mjs"
