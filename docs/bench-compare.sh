#!/bin/bash
# Ports are below 32768, outside Linux's ephemeral range: a port in it may be
# taken by any outgoing connection (a loadgen socket, say) when a server starts.
# Before/after comparison of two herald binaries in one sitting, alternating
# them so that drift on the machine hits both alike (docs/BENCHMARKS.md,
# "Core redesign" and "Performance round"). Usage:
#   docs/bench-compare.sh <before-herald> <after-herald> <loadgen> [rounds] [scenarios]
# scenarios: a comma list of idle, fanout, userchannels, throughput (HTTP API)
# and tpredis (throughput published through Redis); default idle,fanout,throughput.
# Needs redis-server. Every run is bounded by a timeout. One JSON line per
# run in artifacts/bench/compare.jsonl, labelled <scenario>-<before|after>-<round>.
set -u
cd "$(dirname "$0")/.."
BEFORE=$1 AFTER=$2 L=$3 ROUNDS=${4:-2} SCEN=${5:-idle,fanout,throughput}
mkdir -p artifacts/bench
OUT=artifacts/bench/compare.jsonl
: > $OUT
export HERALD_LIMITS__MAX_CONNECTIONS=100000 HERALD_RATE_LIMITS__UPGRADES_PER_IP_PER_SECOND=0 HERALD_RATE_LIMITS__CONNECTIONS_PER_IP=0 HERALD_SERVER__MAX_PENDING_PER_IP=0 HERALD_RATE_LIMITS__MESSAGES_PER_SECOND=0 HERALD_RATE_LIMITS__API_PUBLISHES_PER_SECOND=0 HERALD_LOG__LEVEL=warn
REDIS=redis://127.0.0.1:7379
hub() { local bin=$1; shift; env "$@" $bin --listen 127.0.0.1:$PORT >artifacts/bench/hub-$PORT.log 2>&1 & echo $!; }
stop() { kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null; sleep 1; }
run() { echo "== $1" >&2; shift; timeout 300 "$@" 2>>artifacts/bench/loadgen.err | tee -a $OUT; }
has() { case ,$SCEN, in *,$1,*) return 0 ;; *) return 1 ;; esac; }
redis-server --port 7379 --save '' --appendonly no --daemonize no >/dev/null 2>&1 & R=$!
trap 'kill $R 2>/dev/null' EXIT
sleep 1
redis-cli -p 7379 ping >/dev/null || { echo "redis-server did not start on 7379" >&2; exit 1; }
for round in $(seq 1 "$ROUNDS"); do
  for which in before after; do
    if [ $which = before ]; then BIN=$BEFORE; else BIN=$AFTER; fi
    if has fanout; then # 10k subscribers of one channel, 10 publications/s through Redis, 20 s
      PORT=7612; P=$(hub $BIN HERALD_ENGINE__KIND=redis HERALD_ENGINE__URL=$REDIS); sleep 2
      run fanout $L --url ws://127.0.0.1:$PORT --connections 10000 --connect-rate 5000 --publish-rate 10 --duration 20 --via redis --redis-url $REDIS --server-pid $P --label fanout-$which-$round
      stop $P
    fi
    if has userchannels; then # 5000 connections on their own channel, 5000 publications/s through Redis, 20 s
      PORT=7614; P=$(hub $BIN HERALD_ENGINE__KIND=redis HERALD_ENGINE__URL=$REDIS); sleep 2
      run userchannels $L --url ws://127.0.0.1:$PORT --connections 5000 --channel-mode own --connect-rate 5000 --publish-rate 5000 --duration 20 --via redis --redis-url $REDIS --server-pid $P --label userchannels-$which-$round
      stop $P
    fi
    if has idle; then # 15k connections, one subscription each, heartbeats on, held 15 s
      PORT=7611; P=$(hub $BIN); sleep 1
      run idle $L --url ws://127.0.0.1:$PORT --connections 15000 --procs 2 --connect-rate 3000 --hold 15 --server-pid $P --label idle-$which-$round
      stop $P
    fi
    if has tpredis; then # 1000 subscribers, 1000 then 3000 publications/s through Redis, 10 s each
      PORT=7615; P=$(hub $BIN HERALD_ENGINE__KIND=redis HERALD_ENGINE__URL=$REDIS); sleep 2
      run tpredis $L --url ws://127.0.0.1:$PORT --connections 1000 --steps 1000,3000 --step-secs 10 --via redis --redis-url $REDIS --server-pid $P --label tpredis-$which-$round
      stop $P
    fi
    if has throughput; then # 1000 subscribers, 1000 then 3000 publications/s through the HTTP API, 10 s each
      PORT=7613; P=$(hub $BIN); sleep 1
      run throughput $L --url ws://127.0.0.1:$PORT --connections 1000 --steps 1000,3000 --step-secs 10 --server-pid $P --label throughput-$which-$round
      stop $P
    fi
  done
done
echo done >&2
