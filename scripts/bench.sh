#!/usr/bin/env bash
# Reproduces the figures in BENCHMARKS.md: builds the release binary, starts brokers on loopback
# with throw-away data folders, and runs `trib bench` (librdkafka as the client) for throughput,
# latency, RSS, restart time after kill -9, rebalance time and offset-commit cost.
# Usage: scripts/bench.sh [quick]    ("quick" skips the 10 GiB restart measurement)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary/target}"
cargo build --release --locked -p trib >/dev/null
T="$CARGO_TARGET_DIR/release/trib"
WORK="$(mktemp -d /tmp/trib-bench.XXXXXX)"
PORT=29192
export TRIB_BROKERS="127.0.0.1:$PORT"
PID=""
cleanup() { [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

start() { # start <data-dir> [flags...]
    local dir=$1; shift
    "$T" broker --listen "127.0.0.1:$PORT" --data-dir "$dir" --no-http "$@" >>"$WORK/broker.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 500); do
        kcat -b "$TRIB_BROKERS" -L -m 1 >/dev/null 2>&1 && return 0
        sleep 0.02
    done
    echo "broker did not start" >&2; exit 1
}
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }
cpu_ms() { awk '{print ($14+$15)*10}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, $(uname -r)"
echo "== throughput, 1 KiB records, one partition, no compression"
start "$WORK/d1"
"$T" topic create t-os -p 1 >/dev/null
"$T" bench produce -t t-os -n 1000000 -s 1024 --acks 1 | tail -1
"$T" bench consume -t t-os -n 1000000 | tail -1
"$T" topic create t-fsync -p 1 -c flush.messages=1 >/dev/null
"$T" bench produce -t t-fsync -n 1000000 -s 1024 --acks all | tail -1
echo "== latency at 50 MB/s offered (48,828 records/s of 1 KiB)"
"$T" topic create t-lat -p 1 >/dev/null
"$T" bench produce -t t-lat -n 300000 -s 1024 --acks 1 --rate 48828 --linger-ms 1 | tail -1
"$T" bench produce -t t-lat -n 300000 -s 1024 --acks 1 --rate 48828 --linger-ms 5 | tail -1
"$T" topic create t-lat-fsync -p 1 -c flush.messages=1 >/dev/null
"$T" bench produce -t t-lat-fsync -n 300000 -s 1024 --acks all --rate 48828 --linger-ms 1 | tail -1
stop

echo "== memory"
start "$WORK/d2"
sleep 1
echo "idle RSS: $(rss_kib "$PID") KiB"
"$T" topic create p1000 -p 1000 >/dev/null
seq 1 20000 | "$T" produce p1000 2>/dev/null
sleep 1
echo "RSS with 1000 partitions holding data: $(rss_kib "$PID") KiB"
stop

echo "== consumer groups"
printf 'group_consumer_heartbeat_interval_ms: 5000\n' >"$WORK/g.yaml"
start "$WORK/d3" -c "$WORK/g.yaml"
"$T" bench rebalance --members 10 --partitions 100 --protocol classic -t rb-classic | tail -1
"$T" bench rebalance --members 10 --partitions 100 --protocol consumer -t rb-consumer | tail -1
"$T" topic create bench-commit -p 100 >/dev/null
for k in 1 10 100; do
    c0=$(cpu_ms "$PID"); s=$(date +%s%N)
    "$T" bench commit -n 100000 --rate 10000 --partitions "$k" | tail -1
    e=$(date +%s%N); c1=$(cpu_ms "$PID")
    echo "broker CPU for 100,000 offsets, $k per request: $((c1 - c0)) ms over $(((e - s) / 1000000)) ms wall"
done
c0=$(cpu_ms "$PID")
python3 scripts/request_floor.py "$TRIB_BROKERS" 100000 10000
c1=$(cpu_ms "$PID")
echo "broker CPU for 100,000 bare ApiVersions round trips: $((c1 - c0)) ms"
stop

if [ "${1:-}" != quick ]; then
    echo "== restart after kill -9 with ~11 GiB (page cache dropped)"
    start "$WORK/d4"
    "$T" topic create big -p 1 >/dev/null
    "$T" bench produce -t big -n 11300000 -s 1024 --acks 1 | tail -1
    ls -la "$WORK/d4/big-0" | tail -2
    kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || echo "(could not drop the page cache: not root)"
    s=$(date +%s%N)
    start "$WORK/d4"
    e=$(date +%s%N)
    echo "kill -9 -> answering Metadata after $(((e - s) / 1000000)) ms; $(du -sh "$WORK/d4" | cut -f1) of data"
    grep "broker ready" "$WORK/broker.log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g' | grep -o 'recovery_ms=[0-9]*'
    stop
fi
