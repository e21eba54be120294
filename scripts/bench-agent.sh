#!/usr/bin/env bash
# Agent benchmarks (BENCHMARKS.md, "Agent"): builds the release binary, starts a broker on
# loopback, then
#   1. file -> broker: N lines of 200 bytes already in a log file; `trib agent` tails it from the
#      beginning into a topic, with the Kafka sink's native client (agent pinned to one core,
#      broker to the other) and with librdkafka. Time from the agent's start until its Kafka
#      sink has N records acknowledged (read from /metrics); the agent's CPU time and peak RSS.
#   2. many applications -> the agent's Kafka endpoint -> broker: P applications, each sending
#      one record per Produce request at R records/s for D seconds (`trib bench producers`);
#      the broker's produce requests per second, from its /metrics, against the applications'.
# Usage: scripts/bench-agent.sh [N] [P] [R] [D]   (default 5,000,000 lines, 0 skips part 1;
#        1000 applications x 10 records/s for 30 s)
N="${1:-5000000}"; P="${2:-1000}"; R="${3:-10}"; D="${4:-30}"
source "$(dirname "$0")/bench-common.sh" abench
PORT=29392; BHTTP=29393; AHTTP=29394; EP=29395
export TRIB_BROKERS="127.0.0.1:$PORT"
hwm_kib() { awk '/VmHWM/{print $2}' "/proc/$1/status"; }
metric() { # metric <name> <component>
    curl -s "http://127.0.0.1:$AHTTP/metrics" | awk -v n="trib_pipeline_$1_total" -v c="component=\"$2\"" \
        'index($0, n"{") == 1 && index($0, c) { print $NF }' | head -1
}
broker_produce_requests() {
    curl -s "http://127.0.0.1:$BHTTP/metrics" | awk '/^tributary_broker_requests_total\{api="produce"\}/ { print $NF }'
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB"
"$T" broker --listen "127.0.0.1:$PORT" --data-dir "$WORK/broker" --http "127.0.0.1:$BHTTP" >"$WORK/broker.log" 2>&1 &
PIDS+=($!); BROKER=$!
sleep 1
"$T" topic create apps -p 3 >/dev/null

if [ "$N" -gt 0 ]; then
echo "== 1. file -> broker, $N lines of 200 bytes"
mkdir -p "$WORK/logs"
python3 - "$N" "$WORK/logs/app.log" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
pad = "x" * 180
with open(path, "w", buffering=1 << 20) as f:
    for i in range(n):
        f.write(f"{i:012d} {pad}      \n")
PY
BYTES=$(stat -c %s "$WORK/logs/app.log")
for client in native librdkafka; do
# The native client runs on one core (taskset) with the broker on the other; librdkafka is
# left on both cores (it needs more than one).
pin=(); [ "$client" = native ] && pin=(taskset -c 0)
cat >"$WORK/agent1.yaml" <<EOF2
sources:
  logs: {type: file, include: ["$WORK/logs/*.log"], state_dir: "$WORK/state-$client"}
sinks:
  broker: {type: kafka, client: $client, inputs: [logs], brokers: "$TRIB_BROKERS", topic: logs-$client, compression: lz4, linger_ms: 20}
EOF2
"$T" topic create "logs-$client" -p 4 >/dev/null
[ "$client" = native ] && taskset -apc 1 "$BROKER" >/dev/null
start=$(date +%s.%N)
"${pin[@]}" "$T" agent --config "$WORK/agent1.yaml" --http "127.0.0.1:$AHTTP" >"$WORK/agent1.log" 2>&1 &
AGENT=$!; PIDS+=($AGENT)
b0=$(cpu_ms "$BROKER")
for _ in $(seq 1 24000); do
    v=$(metric events_out broker); v=${v:-0}
    if [ "${v%.*}" -ge "$N" ]; then break; fi
    sleep 0.05
done
secs=$(echo "$(date +%s.%N) - $start" | bc)
acpu=$(cpu_ms $AGENT)
echo "client $client${pin:+ (agent pinned to one core)}: $N lines ($(( BYTES / 1048576 )) MiB) in ${secs}s: $(echo "$BYTES / 1048576 / $secs" | bc) MiB/s, $(echo "$N / $secs" | bc) lines/s;" \
     "agent CPU ${acpu} ms ($(echo "scale=2; $acpu / 1000 / $secs" | bc) cores), peak RSS $(( $(hwm_kib $AGENT) / 1024 )) MiB;" \
     "broker CPU $(( $(cpu_ms $BROKER) - b0 )) ms"
taskset -apc 0,1 "$BROKER" >/dev/null
kill -TERM $AGENT; wait $AGENT || true
done
fi

echo "== 2. $P applications x $R records/s -> the agent's Kafka endpoint -> broker, ${D}s"
cat >"$WORK/agent2.yaml" <<EOF2
sources:
  apps: {type: kafka_endpoint, address: "127.0.0.1:$EP"}
sinks:
  broker: {type: kafka, client: native, inputs: [apps], brokers: "$TRIB_BROKERS", topic: unused, compression: zstd, linger_ms: 200}
EOF2
"$T" agent --config "$WORK/agent2.yaml" --http "127.0.0.1:$AHTTP" >"$WORK/agent2.log" 2>&1 &
AGENT=$!; PIDS+=($AGENT)
sleep 1
r0=$(broker_produce_requests); r0=${r0:-0}
a0=$(cpu_ms $AGENT)
"$T" bench producers -b "127.0.0.1:$EP" -t apps --producers "$P" --rate "$R" --duration "${D}s"
r1=$(broker_produce_requests)
echo "broker produce requests: $(( ${r1%.*} - ${r0%.*} )) in ${D}s = $(echo "scale=1; (${r1%.*} - ${r0%.*}) / $D" | bc)/s;" \
     "application requests $(metric requests_in apps); agent CPU $(( $(cpu_ms $AGENT) - a0 )) ms, peak RSS $(( $(hwm_kib $AGENT) / 1024 )) MiB"
