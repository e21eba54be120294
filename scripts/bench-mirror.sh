#!/usr/bin/env bash
# Mirror benchmarks (BENCHMARKS.md, "Mirror"): builds the release binary, starts two brokers on
# loopback as two regions (A source, B target), then
#   1. the pair's own capacity for 1 KiB records: `trib bench produce` into A (this also loads
#      the topic the mirror copies), `trib bench consume` from A, `trib bench produce` into B;
#   2. mirror throughput: `trib mirror` copies the loaded topic from A to B; the time from start
#      until B's end equals A's, polled every 50 ms through ListOffsets;
#   3. replication lag at 50 MB/s: `trib bench produce --rate 48828` (1 KiB records) into a topic
#      the running mirror copies, while `trib mirror status --json` samples the lag in seconds
#      (age of the oldest record at A not yet at B) every 250 ms; max and 99th percentile.
# Usage: scripts/bench-mirror.sh [RECORDS]   (default 1000000, about 1 GiB; TRIB_BIN=path skips the build)
# MODE=translate runs B with --no-mirror-writes, so the mirror re-produces records in
# transactions with its offset map (translating mode); catching up is then read from
# `trib mirror status` (B's offsets differ from A's).
N="${1:-1000000}"
MODE="${MODE:-preserve}"
source "$(dirname "$0")/bench-common.sh" mbench
bench_python
A=127.0.0.1:29601
B=127.0.0.1:29602

for side in A B; do
    addr=${!side}
    extra=()
    if [ "$side" = B ] && [ "$MODE" = translate ]; then extra=(--no-mirror-writes); fi
    "$T" broker --listen "$addr" --data-dir "$WORK/$side" --no-http "${extra[@]}" >"$WORK/$side.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do "$T" topic list -b "$addr" >/dev/null 2>&1 && break; sleep 0.1; done
done
"$T" topic create m1 -p 1 -b "$A" >/dev/null
"$T" topic create live -p 1 -b "$A" >/dev/null
"$T" topic create p1 -p 1 -b "$B" >/dev/null

mbs() { "$PY" -c 'import json,sys; print(round(json.loads(sys.stdin.read().strip().splitlines()[-1])["mb_per_s"],1))'; }
echo "== 1. the pair's capacity, $N records of 1 KiB"
PA=$("$T" bench produce -t m1 -n "$N" -s 1024 --acks 1 --json -b "$A" 2>/dev/null | mbs)
CA=$("$T" bench consume -t m1 -n "$N" --json -b "$A" 2>/dev/null | mbs)
PB=$("$T" bench produce -t p1 -n "$N" -s 1024 --acks 1 --json -b "$B" 2>/dev/null | mbs)
echo "produce into A: $PA MB/s; consume from A: $CA MB/s; produce into B: $PB MB/s"
"$PY" -c "c,p=$CA,$PB; print(f'consume-then-produce through one client (1/(1/c+1/p)): {1/(1/c+1/p):.1f} MB/s; the slower of the two: {min(c,p):.1f} MB/s')"

cat >"$WORK/mirror.yaml" <<YAML
sources:
  - name: a
    brokers: $A
    topics: [m1, live]
target:
  brokers: $B
sync_interval_ms: 1000
YAML
echo "== 2. mirror throughput ($MODE)"
START=$("$PY" -c 'import time; print(time.time())')
"$T" mirror --config "$WORK/mirror.yaml" >"$WORK/mirror.log" 2>&1 &
MPID=$!
PIDS+=($MPID)
"$PY" - "$A" "$B" "$START" "$N" "$MODE" "$T" "$WORK/mirror.yaml" <<'PYEOF'
import json, subprocess, sys, time
from confluent_kafka import Consumer, TopicPartition
a, b, start, n, mode, t, cfg = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
ca = Consumer({"bootstrap.servers": a, "group.id": "x"})
cb = Consumer({"bootstrap.servers": b, "group.id": "x"})
end = ca.get_watermark_offsets(TopicPartition("m1", 0), timeout=10)[1]

def copied():
    if mode != "translate":
        return cb.get_watermark_offsets(TopicPartition("m1", 0), timeout=10)[1]
    out = subprocess.run([t, "mirror", "status", "--json", "-c", cfg], capture_output=True, text=True)
    for s in json.loads(out.stdout or "[]"):
        if s["source_topic"] == "m1":
            return s["target_end"]
    return -1

deadline = time.time() + 600
while time.time() < deadline:
    try:
        got = copied()
    except Exception:
        got = -1
    if got >= end:
        break
    time.sleep(0.05)
secs = time.time() - start
print(f"mirror copied {end} records ({end*1024/1e6:.0f} MB of values) in {secs:.2f} s: {end*1024/1e6/secs:.1f} MB/s")
PYEOF
echo "mirror process CPU (user+sys): $(cpu_ms "$MPID") ms"

echo "== 3. lag at 50 MB/s offered (48,828 records/s of 1 KiB for 20 s)"
"$T" bench produce -t live -n 976560 -s 1024 --acks 1 --rate 48828 --linger-ms 5 -b "$A" >"$WORK/live.txt" 2>&1 &
BP=$!
"$PY" - "$T" "$WORK/mirror.yaml" "$BP" <<'PYEOF'
import json, os, subprocess, sys, time
t, cfg, bp = sys.argv[1], sys.argv[2], int(sys.argv[3])
lags = []
while True:
    alive = os.path.exists(f"/proc/{bp}") and open(f"/proc/{bp}/stat").read().split()[2] != "Z"
    out = subprocess.run([t, "mirror", "status", "--json", "-c", cfg], capture_output=True, text=True)
    try:
        for s in json.loads(out.stdout):
            if s["source_topic"] == "live":
                lags.append(s["lag_seconds"])
    except Exception:
        pass
    if not alive:
        break
    time.sleep(0.25)
lags.sort()
if lags:
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    print(f"lag samples: {len(lags)}; median {lags[len(lags)//2]:.3f} s, p99 {p99:.3f} s, max {lags[-1]:.3f} s")
PYEOF
wait "$BP" || true
tail -1 "$WORK/live.txt"
