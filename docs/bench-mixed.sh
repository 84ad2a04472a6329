#!/bin/bash
# The mixed-load scenario of docs/BENCHMARKS.md (issue "Performance",
# target 6): 50,000 sockets over three herald nodes on one Redis, each on its
# own tracking channel and on the shared "prices" channel; 10,000 tracking
# updates/s plus a price broadcast every 5 s, all published through Redis.
# Usage:
#   docs/bench-mixed.sh [duration-secs (120)] [herald binary] [loadgen binary]
# Prints the loadgen's JSON line (tracking latency is `latency_ms_main`, the
# broadcast's `latency_ms_extra`) and appends it to artifacts/bench/mixed.jsonl;
# every node's RSS is sampled every 10 s into artifacts/bench/mixed-rss.txt.
# Ports are below 32768, outside the ephemeral range. Bounded: the loadgen
# runs under a timeout, and every process is killed at the end.
set -u
cd "$(dirname "$0")/.."
DUR=${1:-120} BIN=${2:-target/release/herald} L=${3:-target/release/examples/loadgen}
[ -x "$BIN" ] && [ -x "$L" ] || cargo build --release --bin herald --example loadgen || exit 1
mkdir -p artifacts/bench
export HERALD_LIMITS__MAX_CONNECTIONS=100000 HERALD_RATE_LIMITS__UPGRADES_PER_IP_PER_SECOND=0 \
  HERALD_RATE_LIMITS__CONNECTIONS_PER_IP=0 HERALD_SERVER__MAX_PENDING_PER_IP=0 \
  HERALD_RATE_LIMITS__MESSAGES_PER_SECOND=0 HERALD_RATE_LIMITS__API_PUBLISHES_PER_SECOND=0 \
  HERALD_LOG__LEVEL=warn HERALD_ENGINE__KIND=redis HERALD_ENGINE__URL=redis://127.0.0.1:7380
PIDS=()
cleanup() { kill -9 "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; }
trap cleanup EXIT
redis-server --port 7380 --save '' --appendonly no --daemonize no >/dev/null 2>&1 & PIDS+=($!)
sleep 1
redis-cli -p 7380 ping >/dev/null || { echo "redis-server did not start on 7380" >&2; exit 1; }
NODES=()
for port in 7801 7802 7803; do
  $BIN --listen 127.0.0.1:$port >artifacts/bench/mixed-$port.log 2>&1 & PIDS+=($!) NODES+=($!)
done
sleep 2
: >artifacts/bench/mixed-rss.txt
(
  for _ in $(seq 1 $(((DUR + 60) / 10))); do
    echo "$(date +%s) $(for p in "${NODES[@]}"; do awk '/VmRSS/ {printf "%s ", $2}' /proc/$p/status 2>/dev/null; done)" >>artifacts/bench/mixed-rss.txt
    sleep 10
  done
) & PIDS+=($!)
timeout $((DUR + 200)) $L --connections 50000 --procs 3 --connect-rate 5000 \
  --url ws://127.0.0.1:7801 --url ws://127.0.0.1:7802 --url ws://127.0.0.1:7803 \
  --channel-mode own --channel tracking --extra-channel prices --extra-rate 0.2 \
  --via redis --redis-url redis://127.0.0.1:7380 --publish-rate 10000 --duration "$DUR" \
  --server-pid "${NODES[0]}" --server-pid "${NODES[1]}" --server-pid "${NODES[2]}" \
  --label "mixed-$DUR" 2>>artifacts/bench/loadgen.err | tee -a artifacts/bench/mixed.jsonl
