#!/bin/bash
# The benchmark runs behind docs/BENCHMARKS.md; every run is bounded by a timeout.
# Needs redis-server. Results: one JSON line per scenario in artifacts/bench/.
set -u
cd "$(dirname "$0")/.."
cargo build --release --bin herald --example loadgen
H=target/release/herald
L=target/release/examples/loadgen
mkdir -p artifacts/bench
OUT=artifacts/bench/results.jsonl
: > $OUT
export HERALD_LIMITS__MAX_CONNECTIONS=100000 HERALD_RATE_LIMITS__UPGRADES_PER_IP_PER_SECOND=0 HERALD_RATE_LIMITS__CONNECTIONS_PER_IP=0 HERALD_SERVER__MAX_PENDING_PER_IP=0 HERALD_RATE_LIMITS__MESSAGES_PER_SECOND=0 HERALD_RATE_LIMITS__API_PUBLISHES_PER_SECOND=0 HERALD_LOG__LEVEL=warn
hub() { env "$@" $H --listen 127.0.0.1:$PORT >artifacts/bench/hub-$PORT.log 2>&1 & echo $!; }
redis() { redis-server --port 39379 --save '' --appendonly no --daemonize no >/dev/null 2>&1 & echo $!; }
run() { echo "== $1" >&2; shift; timeout 300 "$@" 2>>artifacts/bench/loadgen.err | tee -a $OUT; }

# idle: 15k connections, one subscription each, heartbeats on, held 60 s
PORT=39601; P=$(hub); sleep 1
run idle $L --url ws://127.0.0.1:$PORT --connections 15000 --procs 2 --connect-rate 3000 --hold 60 --server-pid $P --label idle
kill $P; sleep 2

# connect: 15k as fast as the hub accepts
PORT=39602; P=$(hub); sleep 1
run connect $L --url ws://127.0.0.1:$PORT --connections 15000 --procs 2 --connect-rate 0 --server-pid $P --label connect
kill $P; sleep 2

# fanout: 10k subscribers, 10 publications/s through Redis, 60 s
R=$(redis); sleep 1
PORT=39603; P=$(hub HERALD_ENGINE__KIND=redis HERALD_ENGINE__URL=redis://127.0.0.1:39379); sleep 2
run fanout $L --url ws://127.0.0.1:$PORT --connections 10000 --connect-rate 5000 --publish-rate 10 --duration 60 --via redis --redis-url redis://127.0.0.1:39379 --server-pid $P --label fanout-redis
kill $P; sleep 2

# userchannels: 5000 connections on their own channel, 1 publication per channel per second through Redis
PORT=39604; P=$(hub HERALD_ENGINE__KIND=redis HERALD_ENGINE__URL=redis://127.0.0.1:39379); sleep 2
run userchannels $L --url ws://127.0.0.1:$PORT --connections 5000 --channel-mode own --connect-rate 5000 --publish-rate 5000 --duration 30 --via redis --redis-url redis://127.0.0.1:39379 --server-pid $P --label userchannels-redis
redis-cli -p 39379 PUBSUB NUMSUB herald:bench.0 herald:bench.4999 >&2
kill $P; sleep 2; kill $R

# throughput: 1000 subscribers, 100 → 3000 publications/s, 10 s each
PORT=39605; P=$(hub); sleep 1
run throughput $L --url ws://127.0.0.1:$PORT --connections 1000 --steps 100,300,1000,2000,3000 --step-secs 10 --server-pid $P --label throughput
kill $P; sleep 1
echo done >&2
