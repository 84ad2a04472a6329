#!/bin/bash
# The benchmark runs behind docs/BENCHMARKS.md; every run is bounded by a timeout.
# Needs redis-server; node/npm for the peer servers (examples/peers).
#
#   docs/bench-run.sh
#       herald's own suite (idle, connect, fanout, userchannels, throughput),
#       one JSON line per scenario in artifacts/bench/results.jsonl.
#   docs/bench-run.sh SCENARIOS TARGETS
#       the same scenarios against other servers, targets alternating within
#       each round, one JSON line per run in artifacts/bench/peers.jsonl
#       (OUT=… to change), then the summary table (docs/bench-summary.py).
#       SCENARIOS: comma list of idle, connect, fanout, userchannels, throughput, or all
#       TARGETS:   comma list of
#         herald       native protocol, Redis engine, publications via Redis PUBLISH
#         herald-sio   herald's Socket.IO front door (loadgen --target socketio), via Redis
#         uws          examples/peers/uws-hub.mjs (uWebSockets.js), via Redis
#         socketio     examples/peers/socketio-hub.mjs (Socket.IO 4.8 + redis adapter), via Redis
#         herald-http  native, Redis engine, history off, publications via the HTTP API
#         herald-hist  as herald-http with history on for bench and bench.* (history_size)
#         or: all (the first four), history (the last two)
#       e.g. docs/bench-run.sh fanout herald,uws
#            docs/bench-run.sh fanout,userchannels history
#            ROUNDS=3 docs/bench-run.sh all all
#       The history targets run fanout, userchannels and throughput only: a
#       publication straight into Redis bypasses the history stream, so both
#       publish through herald's API.
#   Sizes (defaults are the full scenarios; small values make a smoke test):
#     ROUNDS=1 IDLE_CONNS=15000 HOLD=60 CONNECT_CONNS=15000 FANOUT_CONNS=10000
#     FANOUT_RATE=10 DURATION=60 USER_CONNS=5000 USER_DURATION=30 TP_CONNS=1000
#     TP_STEPS=100,300,1000,2000,3000 STEP_SECS=10 HISTORY_SIZE=100 RUN_TIMEOUT=300
#
# Server CPU and RSS are the hub's process (for the peers, the node process);
# Redis CPU (utime+stime of redis-server over the whole loadgen run) is added
# to every line as redis_cpu_secs, with scenario, target and round (the
# loadgen's own `target` field, its client protocol, becomes `protocol`).
set -u
cd "$(dirname "$0")/.."
cargo build --release --bin herald --example loadgen || exit 1
H=target/release/herald
L=target/release/examples/loadgen
mkdir -p artifacts/bench
ERR=artifacts/bench/loadgen.err
export HERALD_LIMITS__MAX_CONNECTIONS=100000 HERALD_RATE_LIMITS__UPGRADES_PER_IP_PER_SECOND=0 HERALD_RATE_LIMITS__CONNECTIONS_PER_IP=0 HERALD_SERVER__MAX_PENDING_PER_IP=0 HERALD_RATE_LIMITS__MESSAGES_PER_SECOND=0 HERALD_RATE_LIMITS__API_PUBLISHES_PER_SECOND=0 HERALD_LOG__LEVEL=warn
ulimit -n "$(ulimit -Hn)" 2>/dev/null # the node peers hold 15k sockets too

# Ports are below 32768, outside the ephemeral range (see bench-compare.sh).
RPORT=${REDIS_PORT:-7379}
REDIS_URL=redis://127.0.0.1:$RPORT
PIDS=()
R=
LG=
TMPDIR_BENCH=$(mktemp -d)
cleanup() {
  [ -n "$LG" ] && kill "$LG" 2>/dev/null # timeout passes it on to the loadgen
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  [ -n "$R" ] && kill "$R" 2>/dev/null
  rm -rf "$TMPDIR_BENCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_port PORT LOG: until something listens on PORT (ss, not a connect: a
# connect to a closed port can pick that port as its source and connect to itself).
wait_port() { for _ in $(seq 1 300); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done
  echo "port $1 never opened; the end of $2:" >&2; tail -5 "$2" >&2; return 1; }
stop() { [ -n "$1" ] || return 0; kill "$1" 2>/dev/null; for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done; kill -9 "$1" 2>/dev/null; sleep 1; }
# hub PORT [ENV=…] [-- herald args]: starts herald, sets P.
hub() { local port=$1; shift; local envs=(); while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done; [ $# -gt 0 ] && shift
  env "${envs[@]}" $H --listen 127.0.0.1:"$port" "$@" >>artifacts/bench/hub-"$port".log 2>&1 & P=$!; PIDS+=("$P"); wait_port "$port" artifacts/bench/hub-"$port".log; }
# peer PORT FILE: starts a node peer, sets P (the node process itself).
peer() { node examples/peers/"$2" "$1" "$REDIS_URL" >>artifacts/bench/peer-"$1".log 2>&1 & P=$!; PIDS+=("$P"); wait_port "$1" artifacts/bench/peer-"$1".log; }
start_redis() { redis-server --port $RPORT --save '' --appendonly no --daemonize no >artifacts/bench/redis.log 2>&1 & R=$!; wait_port $RPORT artifacts/bench/redis.log; }
ticks() { [ -r "/proc/$1/stat" ] && awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat" || echo 0; }

# run SCENARIO TARGET ROUND loadgen-args…: one loadgen run, its JSON line
# annotated with scenario, target, round and Redis CPU, appended to $OUT.
run() {
  local scenario=$1 target=$2 round=$3; shift 3
  echo "== $scenario $target round $round" >&2
  local r0 r1 line rc
  r0=$(ticks "$R")
  # In the background and waited for, so that a signal reaches the trap at once.
  timeout "${RUN_TIMEOUT:-300}" "$L" "$@" >"$TMPDIR_BENCH/line" 2>>$ERR & LG=$!
  wait $LG; rc=$?; LG=
  line=$(cat "$TMPDIR_BENCH/line")
  r1=$(ticks "$R")
  local redis_cpu
  redis_cpu=$(awk -v a="$r0" -v b="$r1" 'BEGIN{printf "%.2f", (b-a)/100}')
  [ -n "$R" ] || redis_cpu=null
  if [ $rc -eq 0 ] && [ -n "$line" ]; then
    jq -c --arg s "$scenario" --arg t "$target" --argjson r "$round" --argjson c "$redis_cpu" \
      '{scenario:$s, target:$t, round:$r, redis_cpu_secs:$c} + (. | .protocol = .target | del(.target))' <<<"$line" | tee -a "$OUT"
  else
    jq -nc --arg s "$scenario" --arg t "$target" --argjson r "$round" --arg e "loadgen exit $rc (see $ERR)" \
      '{scenario:$s, target:$t, round:$r, error:$e}' | tee -a "$OUT"
  fi
}

# ---------------------------------------------------------------------------
# herald's own suite (no arguments): the scenarios of BENCHMARKS.md's table.
if [ $# -eq 0 ]; then
  OUT=artifacts/bench/results.jsonl
  : >$OUT
  # idle: 15k connections, one subscription each, heartbeats on, held 60 s
  PORT=7601; hub $PORT
  run idle herald 1 --url ws://127.0.0.1:$PORT --connections 15000 --procs 2 --connect-rate 3000 --hold 60 --server-pid $P --label idle
  stop $P
  # connect: 15k as fast as the hub accepts
  PORT=7602; hub $PORT
  run connect herald 1 --url ws://127.0.0.1:$PORT --connections 15000 --procs 2 --connect-rate 0 --server-pid $P --label connect
  stop $P
  # fanout: 10k subscribers, 10 publications/s through Redis, 60 s
  start_redis
  PORT=7603; hub $PORT HERALD_ENGINE__KIND=redis HERALD_ENGINE__URL=$REDIS_URL
  run fanout herald 1 --url ws://127.0.0.1:$PORT --connections 10000 --connect-rate 5000 --publish-rate 10 --duration 60 --via redis --redis-url $REDIS_URL --server-pid $P --label fanout-redis
  stop $P
  # userchannels: 5000 connections on their own channel, 1 publication per channel per second through Redis
  PORT=7604; hub $PORT HERALD_ENGINE__KIND=redis HERALD_ENGINE__URL=$REDIS_URL
  run userchannels herald 1 --url ws://127.0.0.1:$PORT --connections 5000 --channel-mode own --connect-rate 5000 --publish-rate 5000 --duration 30 --via redis --redis-url $REDIS_URL --server-pid $P --label userchannels-redis
  redis-cli -p $RPORT PUBSUB NUMSUB herald:bench.0 herald:bench.4999 >&2
  stop $P; kill $R; R=
  # throughput: 1000 subscribers, 100 → 3000 publications/s, 10 s each
  PORT=7605; hub $PORT
  run throughput herald 1 --url ws://127.0.0.1:$PORT --connections 1000 --steps 100,300,1000,2000,3000 --step-secs 10 --server-pid $P --label throughput
  stop $P
  echo done >&2
  exit 0
fi

# ---------------------------------------------------------------------------
# Comparison mode.
SCENARIOS=$1 TARGETS=${2:-herald}
[ "$SCENARIOS" = all ] && SCENARIOS=idle,connect,fanout,userchannels,throughput
case $TARGETS in
  all) TARGETS=herald,herald-sio,uws,socketio ;;
  history) TARGETS=herald-http,herald-hist ;;
esac
IFS=, read -ra SCN <<<"$SCENARIOS"
IFS=, read -ra TGT <<<"$TARGETS"
for s in "${SCN[@]}"; do case $s in idle|connect|fanout|userchannels|throughput) ;; *) echo "unknown scenario $s" >&2; exit 2 ;; esac; done
for t in "${TGT[@]}"; do case $t in herald|herald-sio|uws|socketio|herald-http|herald-hist) ;; *) echo "unknown target $t" >&2; exit 2 ;; esac; done
if [[ ",$TARGETS," =~ ,(uws|socketio), ]] && [ ! -d examples/peers/node_modules ]; then
  (cd examples/peers && npm ci --no-audit --no-fund) || exit 1
fi
OUT=${OUT:-artifacts/bench/peers.jsonl}
: >"$OUT"

HISTORY_CONFIG=$TMPDIR_BENCH/history.toml
cat >"$HISTORY_CONFIG" <<EOF
# History on for the benchmark channels: bench (fanout, throughput) and bench.<i> (userchannels).
[[channels.namespaces]]
pattern = "bench"
history_size = ${HISTORY_SIZE:-100}

[[channels.namespaces]]
pattern = "bench.*"
history_size = ${HISTORY_SIZE:-100}
EOF

IDLE_CONNS=${IDLE_CONNS:-15000} HOLD=${HOLD:-60} CONNECT_CONNS=${CONNECT_CONNS:-15000}
FANOUT_CONNS=${FANOUT_CONNS:-10000} FANOUT_RATE=${FANOUT_RATE:-10} DURATION=${DURATION:-60}
USER_CONNS=${USER_CONNS:-5000} USER_DURATION=${USER_DURATION:-30}
TP_CONNS=${TP_CONNS:-1000} TP_STEPS=${TP_STEPS:-100,300,1000,2000,3000} STEP_SECS=${STEP_SECS:-10}
procs() { if [ "$1" -gt 9000 ]; then echo 2; else echo 1; fi; }

# start TARGET PORT: starts the server for TARGET, sets P and TARGET_ARGS
# (the loadgen arguments that select its protocol and publish path).
start() {
  local t=$1 port=$2 engine=(HERALD_ENGINE__KIND=redis HERALD_ENGINE__URL=$REDIS_URL)
  P=
  if ss -Hltn "sport = :$port" | grep -q .; then echo "port $port is taken by another process" >&2; return 1; fi
  case $t in
    herald) TARGET_ARGS=(--target herald --via redis); hub "$port" "${engine[@]}" ;;
    herald-sio) TARGET_ARGS=(--target socketio --via redis); hub "$port" "${engine[@]}" ;;
    herald-http) TARGET_ARGS=(--target herald --via http); hub "$port" "${engine[@]}" ;;
    herald-hist) TARGET_ARGS=(--target herald --via http); hub "$port" "${engine[@]}" -- --config "$HISTORY_CONFIG" ;;
    uws) TARGET_ARGS=(--target uws --via redis); peer "$port" uws-hub.mjs ;;
    socketio) TARGET_ARGS=(--target socketio --via redis); peer "$port" socketio-hub.mjs ;;
  esac
}

start_redis
for round in $(seq 1 "${ROUNDS:-1}"); do
  for s in "${SCN[@]}"; do
    for i in "${!TGT[@]}"; do
      t=${TGT[$i]}
      if [[ $t == herald-h* ]] && [[ $s == idle || $s == connect ]]; then
        echo "== $s $t: skipped (the history targets differ only when publishing)" >&2; continue
      fi
      PORT=$((7700 + i))
      if ! start "$t" $PORT; then
        stop "$P"
        jq -nc --arg s "$s" --arg t "$t" --argjson r "$round" '{scenario:$s, target:$t, round:$r, error:"the server did not start"}' | tee -a "$OUT"
        continue
      fi
      U=(--url ws://127.0.0.1:$PORT --redis-url "$REDIS_URL" --server-pid "$P" --label "$s-$t-$round" "${TARGET_ARGS[@]}")
      case $s in
        # idle: connections with one subscription each, heartbeats on, held; memory per connection
        idle) run "$s" "$t" "$round" "${U[@]}" --connections "$IDLE_CONNS" --procs "$(procs "$IDLE_CONNS")" --connect-rate 3000 --hold "$HOLD" ;;
        # connect: as fast as the server accepts
        connect) run "$s" "$t" "$round" "${U[@]}" --connections "$CONNECT_CONNS" --procs "$(procs "$CONNECT_CONNS")" --connect-rate 0 ;;
        # fanout: subscribers of one channel, FANOUT_RATE publications/s
        fanout) run "$s" "$t" "$round" "${U[@]}" --connections "$FANOUT_CONNS" --procs "$(procs "$FANOUT_CONNS")" --connect-rate 5000 --publish-rate "$FANOUT_RATE" --duration "$DURATION" ;;
        # userchannels: each connection on its own channel, one publication per channel per second
        userchannels) run "$s" "$t" "$round" "${U[@]}" --connections "$USER_CONNS" --channel-mode own --connect-rate 5000 --publish-rate "$USER_CONNS" --duration "$USER_DURATION" ;;
        # throughput: subscribers of one channel, the publication rate stepped up
        throughput) run "$s" "$t" "$round" "${U[@]}" --connections "$TP_CONNS" --steps "$TP_STEPS" --step-secs "$STEP_SECS" ;;
      esac
      stop "$P"
    done
  done
done
python3 docs/bench-summary.py "$OUT"
echo done >&2
