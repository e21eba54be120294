#!/usr/bin/env bash
# Field index and time lookup benchmarks (BENCHMARKS.md, "Index"): builds the release binary,
# starts a broker on loopback with its HTTP endpoint, creates a topic of 4 partitions that
# indexes a high-cardinality field (`req`, unique per record) and a user id (100 records per
# user at the default size), produces GIB GiB of ~1 KiB JSON records with rising timestamps, then
#   1. indexing rate: `trib index rebuild`, then the time until every partition is indexed to
#      its end (bytes of log / seconds);
#   2. index size: the .fidx files against the .log files;
#   3. key lookups: 50 random `req=` (1 record) and 50 random `user=` (≤ 100 records) queries:
#      the broker's own time per query (`took_ms`) and the round trip, median and max;
#   4. timestamp lookups: 50 random ListOffsets by time (confluent-kafka offsets_for_times, all
#      4 partitions in one request), median and max round trip.
# Usage: scripts/bench-index.sh [GIB]   (default 10; BATCH_BYTES sets the producer's batch.size,
#        default 65536: a lookup reads each hit's whole batch)
GIB="${1:-10}"
source "$(dirname "$0")/bench-common.sh" ibench
bench_python
PORT=29494
HTTP=29495

"$T" broker --listen "127.0.0.1:$PORT" --data-dir "$WORK/broker" --http "127.0.0.1:$HTTP" \
    >"$WORK/broker.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do "$T" topic list -b "127.0.0.1:$PORT" >/dev/null 2>&1 && break; sleep 0.1; done
"$T" topic create ib -p 4 -b "127.0.0.1:$PORT" -c retention.ms=-1 \
    -c 'index.fields=req=value:$.req,user=value:$.user' >/dev/null

"$PY" - "$PORT" "$HTTP" "$GIB" "$WORK/broker" <<'PYEOF'
import json, os, random, statistics, sys, time, urllib.request
from pathlib import Path
from confluent_kafka import Producer, Consumer, TopicPartition

port, http, gib, data = sys.argv[1], sys.argv[2], float(sys.argv[3]), Path(sys.argv[4])
boot = f"127.0.0.1:{port}"
pad = "x" * 900
n = int(gib * (1 << 30) / 1024)
users = max(1, n // 100)
t0 = 1_714_557_600_000
print(f"== producing {n} records of ~1 KiB ({gib} GiB), {users} users, batches of {int(os.environ.get('BATCH_BYTES', 65536))} bytes")
batch = int(os.environ.get("BATCH_BYTES", 65536))
p = Producer({"bootstrap.servers": boot, "linger.ms": 20, "batch.size": batch,
              "compression.type": "none", "queue.buffering.max.kbytes": 1 << 20})
start = time.time()
for i in range(n):
    v = f'{{"req":"r-{i:010d}","user":{i % users},"ts":{t0 + i},"pad":"{pad}"}}'
    while True:
        try:
            p.produce("ib", value=v, timestamp=t0 + i)
            break
        except BufferError:
            p.poll(0.05)
    if i % 100000 == 0:
        p.poll(0)
p.flush(600)
print(f"   produced in {time.time() - start:.1f} s")

def get(path, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{http}{path}", method=method)
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())

def lag():
    s = get("/index/status?topic=ib")
    return sum(p["lag"] for p in s["topics"][0]["partitions"])

deadline = time.time() + 3600
while lag() > 0 and time.time() < deadline:
    time.sleep(0.5)
logs = sum(f.stat().st_size for f in data.rglob("*.log"))
print(f"== indexing rate (rebuild of {logs / (1 << 30):.2f} GiB of log)")
start = time.time()
get("/index/rebuild?topic=ib", "POST")
time.sleep(0.05)
while lag() > 0 and time.time() < deadline:
    time.sleep(0.05)
took = time.time() - start
print(f"   {took:.2f} s: {logs / took / (1 << 20):.0f} MiB/s, {n / took:.0f} records/s")
idx = sum(f.stat().st_size for f in data.rglob("*.fidx"))
print(f"== index size: {idx / (1 << 20):.1f} MiB for {logs / (1 << 20):.0f} MiB of log = {100 * idx / logs:.2f}% (2 fields)")

rng = random.Random(7)
def timed(path):
    s = time.perf_counter()
    r = get(path)
    return r, (time.perf_counter() - s) * 1000

for name, make in [("req (1 record)", lambda: f"req%3Dr-{rng.randrange(n):010d}"),
                   ("user (<= 100 records)", lambda: f"user%3D{rng.randrange(users)}")]:
    own, rtt, hits = [], [], []
    for _ in range(50):
        r, ms = timed(f"/index/query?topic=ib&where={make()}&limit=100")
        own.append(r["took_ms"]); rtt.append(ms); hits.append(len(r["hits"]))
    print(f"== key lookup {name}: broker {statistics.median(own):.2f} ms median, {max(own):.2f} max;"
          f" round trip {statistics.median(rtt):.2f} ms median, {max(rtt):.2f} max; {statistics.median(hits):.0f} records each")

c = Consumer({"bootstrap.servers": boot, "group.id": "ib"})
c.offsets_for_times([TopicPartition("ib", i, t0) for i in range(4)], timeout=10)  # connect
rtt = []
for _ in range(50):
    t = t0 + rng.randrange(n)
    s = time.perf_counter()
    r = c.offsets_for_times([TopicPartition("ib", i, t) for i in range(4)], timeout=10)
    rtt.append((time.perf_counter() - s) * 1000)
    assert any(x.offset >= 0 for x in r), r
print(f"== timestamp lookup (4 partitions per request): {statistics.median(rtt):.2f} ms median, {max(rtt):.2f} ms max")
c.close()
PYEOF
