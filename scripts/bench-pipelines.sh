#!/usr/bin/env bash
# Pipeline benchmarks (BENCHMARKS.md, "Pipelines"): builds the release binary, starts a broker
# on loopback, loads JSON records into a topic with kcat, then times
#   1. topic -> parse_json -> filter -> topic      (events/s through the pipeline)
#   2. topic -> parse_json -> PostgreSQL (COPY)    (rows/s; a throwaway cluster)
#   3. a stalled sink: RSS of `trib run` while its HTTP sink never answers
# Each pipeline's time runs from `trib run` starting to its sink's events_out reaching N
# (read from /metrics).
# Usage: scripts/bench-pipelines.sh [N]   (default 2,000,000 records)
N="${1:-2000000}"
source "$(dirname "$0")/bench-common.sh" pbench
PORT=29292
HTTP=29293
export TRIB_BROKERS="127.0.0.1:$PORT"
bench_cleanup() {
    [ -n "${PGDATA:-}" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true
}
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
metric() { # metric <name> <component>
    curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v n="trib_pipeline_$1_total" -v c="component=\"$2\"" \
        'index($0, n"{") == 1 && index($0, c) { print $NF }' | head -1
}
wait_out() { # wait_out <component> <count> -> prints seconds
    local s; s=$(date +%s.%N)
    for _ in $(seq 1 12000); do
        local v; v=$(metric events_out "$1"); v=${v:-0}
        if [ "${v%.*}" -ge "$2" ]; then break; fi
        sleep 0.05
    done
    echo "$(date +%s.%N) - $s" | bc
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB"
"$T" broker --listen "127.0.0.1:$PORT" --data-dir "$WORK/broker" --no-http >"$WORK/broker.log" 2>&1 &
PIDS+=($!); BROKER=$!
sleep 1
"$T" topic create in -p 1 >/dev/null
python3 - "$N" >"$WORK/records.ndjson" <<'PY'
import json, sys
n = int(sys.argv[1])
out = sys.stdout
for i in range(n):
    out.write(json.dumps({"id": i, "client": f"10.0.{i % 256}.{i % 199}", "method": "GET",
        "path": f"/api/orders/{i % 1000}", "status": 503 if i % 10 == 0 else 200,
        "bytes": i % 50000, "timestamp": "2026-11-22T10:00:00Z"}, separators=(",", ":")) + "\n")
PY
kcat -P -b "$TRIB_BROKERS" -t in -l "$WORK/records.ndjson" -X linger.ms=20 -X batch.num.messages=10000
echo "loaded $N JSON records ($(du -h "$WORK/records.ndjson" | cut -f1)) into topic 'in'"

echo "== 1. topic -> parse_json -> filter -> topic"
cat >"$WORK/p1.yaml" <<EOF2
sources:
  input: {type: kafka, brokers: "$TRIB_BROKERS", topics: [in], group_id: bench-p1, batch: 5000}
transforms:
  decode: {type: parse_json, inputs: [input]}
  keep: {type: filter, inputs: [decode], condition: "status >= 200"}
sinks:
  output: {type: kafka, inputs: [keep], brokers: "$TRIB_BROKERS", topic: out, compression: lz4}
EOF2
"$T" run "$WORK/p1.yaml" --http "127.0.0.1:$HTTP" >"$WORK/p1.log" 2>&1 &
RUN=$!; PIDS+=($RUN)
b0=$(cpu_ms "$BROKER")
secs=$(wait_out output "$N")
echo "$N events in ${secs}s: $(echo "$N / $secs" | bc) events/s; trib run CPU $(cpu_ms $RUN) ms, broker CPU $(( $(cpu_ms $BROKER) - b0 )) ms, RSS $(rss_kib $RUN) KiB"
kill -TERM $RUN; wait $RUN || true

if [ -d /usr/lib/postgresql ]; then
    echo "== 2. topic -> parse_json -> PostgreSQL"
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PGDATA="$WORK/pg"; mkdir -p "$PGDATA"; chown postgres "$WORK" "$PGDATA"; chmod 755 "$WORK"
    runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -o "-p 29294 -k $PGDATA -c listen_addresses=127.0.0.1" -w start >/dev/null
    psql -h 127.0.0.1 -p 29294 -U postgres -qc "CREATE TABLE web (id bigint, client text, method text, path text, status int, bytes bigint, ts timestamptz)"
    cat >"$WORK/p2.yaml" <<EOF2
sources:
  input: {type: kafka, brokers: "$TRIB_BROKERS", topics: [in], group_id: bench-p2, batch: 5000}
transforms:
  decode: {type: parse_json, inputs: [input]}
sinks:
  table:
    type: postgres
    inputs: [decode]
    url: host=127.0.0.1 port=29294 user=postgres dbname=postgres
    table: web
    columns: {id: id, client: client, method: method, path: path, status: status, bytes: bytes, ts: timestamp}
    batch: {max_events: 20000, timeout_ms: 200}
EOF2
    "$T" run "$WORK/p2.yaml" --http "127.0.0.1:$HTTP" >"$WORK/p2.log" 2>&1 &
    RUN=$!; PIDS+=($RUN)
    secs=$(wait_out table "$N")
    rows=$(psql -h 127.0.0.1 -p 29294 -U postgres -Atc "SELECT count(*) FROM web")
    echo "$rows rows in ${secs}s: $(echo "$N / $secs" | bc) rows/s; trib run CPU $(cpu_ms $RUN) ms, RSS $(rss_kib $RUN) KiB"
    kill -TERM $RUN; wait $RUN || true
fi

echo "== 3. stalled sink: RSS of trib run while the HTTP sink's server never answers"
python3 -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 29295)); s.listen(100)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)
" &
PIDS+=($!)
cat >"$WORK/p3.yaml" <<EOF2
sources:
  input: {type: kafka, brokers: "$TRIB_BROKERS", topics: [in], group_id: bench-p3, batch: 5000}
transforms:
  decode: {type: parse_json, inputs: [input]}
sinks:
  stalled: {type: http, inputs: [decode], url: "http://127.0.0.1:29295/", batch: {max_events: 10000}}
EOF2
"$T" run "$WORK/p3.yaml" --http "127.0.0.1:$HTTP" >"$WORK/p3.log" 2>&1 &
RUN=$!; PIDS+=($RUN)
for t in 2 5 10 20; do
    sleep $(( t - ${prev:-0} )); prev=$t
    echo "after ${t}s: RSS $(rss_kib $RUN) KiB, events in at the source $(metric events_in input)"
done
