#!/usr/bin/env bash
# Lake benchmarks (BENCHMARKS.md, "Lake"): builds the release binary, starts a broker on
# loopback, produces N JSON records of about 1 KiB into a topic of 4 partitions, then
#   1. export: `trib lake export` of the whole topic into a local lake, 4 times; records per
#      second from the export's start to its exit, its CPU time and peak RSS;
#   2. SQL: scan, filter, group-by and time-range queries on the exported files, each run 7
#      times in one session by `trib sql` (DataFusion; -e repeated; the time it prints for each
#      query) and by DuckDB (Python package, one connection, time of execute + fetch), in 3
#      rounds that alternate the engines; medians of the 21 runs.
# Usage: scripts/bench-lake.sh [N]   (default 2,000,000)
N="${1:-2000000}"
source "$(dirname "$0")/bench-common.sh" lbench
bench_python
PORT=29492

"$T" broker --listen "127.0.0.1:$PORT" --data-dir "$WORK/broker" --no-http --num-partitions 4 \
    >"$WORK/broker.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do "$T" topic list -b "127.0.0.1:$PORT" >/dev/null 2>&1 && break; sleep 0.1; done
"$T" topic create bench-lake -p 4 -b "127.0.0.1:$PORT" >/dev/null

echo "== generating $N JSON records of about 1 KiB"
"$PY" - "$N" "$WORK/records.ndjson" <<'PYEOF'
import json, random, sys
n, out = int(sys.argv[1]), sys.argv[2]
rng = random.Random(1)
words = [f"w{i}" for i in range(5000)]
paths = [f"/api/v{v}/{r}/{i}" for v in (1, 2) for r in ("orders", "users", "carts", "items") for i in range(50)]
t0 = 1_714_557_600_000
with open(out, "w") as f:
    for i in range(n):
        rec = {
            "id": i,
            "ts": t0 + i * 3,
            "user": f"user-{rng.randrange(100000)}",
            "path": rng.choice(paths),
            "status": rng.choice((200, 200, 200, 201, 204, 301, 404, 500, 503)),
            "latency_ms": round(rng.expovariate(1 / 40), 3),
            "bytes": rng.randrange(100, 100000),
            "region": rng.choice(("eu-west-1", "us-east-1", "ap-south-1")),
            "agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        }
        rec["message"] = " ".join(rng.choice(words) for _ in range(130))
        f.write(json.dumps(rec, separators=(",", ":")) + "\n")
PYEOF
AVG=$(awk '{s+=length($0)} END {printf "%d", s/NR}' "$WORK/records.ndjson")
echo "   average record: $AVG bytes"
"$T" produce bench-lake -f "$WORK/records.ndjson" -b "127.0.0.1:$PORT" --compression lz4 >/dev/null

echo "== export (4 runs, each into an empty lake; the first run right after the produce)"
LAKE="$WORK/lake"
for run in 1 2 3 4; do
    rm -rf "$LAKE"
    start=$(date +%s.%N)
    /usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KiB max RSS" \
        "$T" lake export bench-lake -b "127.0.0.1:$PORT" --path "$LAKE" 2>"$WORK/export.time" >/dev/null
    end=$(date +%s.%N)
    awk -v r="$run" -v n="$N" -v s="$start" -v e="$end" -v t="$(tail -1 "$WORK/export.time")" \
        'BEGIN {printf "   run %d: %.0f records/s (%s)\n", r, n/(e-s), t}'
done
echo "   lake: $(du -sh "$LAKE" | cut -f1) in $(find "$LAKE" -name '*.parquet' | wc -l) files"

echo "== SQL: trib sql (DataFusion) vs DuckDB, each query 7 times in one session, 3 rounds alternating, medians of 21"
"$PY" - "$T" "$LAKE" <<'PYEOF'
import statistics, subprocess, sys, time, re
import duckdb
trib, lake = sys.argv[1], sys.argv[2]
queries = {
    "scan": "SELECT count(*), sum(bytes), avg(latency_ms) FROM {t}",
    "filter": "SELECT count(*) FROM {t} WHERE status = 503 AND region = 'eu-west-1' AND latency_ms > 100",
    "group-by": "SELECT path, count(*) AS n, avg(latency_ms) AS l FROM {t} GROUP BY path ORDER BY n DESC LIMIT 10",
    "time range": "SELECT count(*), max(latency_ms) FROM {t} WHERE _timestamp >= TIMESTAMP '2024-05-01 10:30:00+00:00' AND _timestamp < TIMESTAMP '2024-05-01 10:40:00+00:00'",
}
RUNS, ROUNDS = 7, 3
con = duckdb.connect()
con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{lake}/bench-lake/**/*.parquet', hive_partitioning = true, union_by_name = true)")
print(f"{'query':<12} {'trib sql':>10} {'(first)':>9} {'DuckDB':>10} {'(first)':>9} {'ratio':>7}")
for name, q in queries.items():
    # Rounds alternate the engines, so that a slow spell of the machine falls on both. In a
    # round, one trib sql process runs the query RUNS times (-e repeated), as the DuckDB
    # connection does: both sessions keep what they cache between queries.
    ours, theirs = [], []
    for _ in range(ROUNDS):
        args = [trib, "sql", "--path", lake]
        for _ in range(RUNS):
            args += ["-e", q.format(t='"bench-lake"')]
        p = subprocess.run(args, capture_output=True, text=True, check=True)
        ours += [float(x) / 1000 for x in re.findall(r"in ([0-9.]+) ms", p.stderr)]
        for _ in range(RUNS):
            t = time.perf_counter()
            con.execute(q.format(t="t")).fetchall()
            theirs.append(time.perf_counter() - t)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"{name:<12} {a:>9.4f}s {ours[0]:>8.4f}s {b:>9.4f}s {theirs[0]:>8.4f}s {a / b:>6.2f}x")
PYEOF
