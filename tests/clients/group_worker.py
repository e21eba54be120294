"""A confluent-kafka group consumer run as its own process by test_groups.py (so a test can
SIGKILL it). Usage: python group_worker.py '<json settings>'.

Settings: bootstrap, topic, group, conf (extra librdkafka settings), commit_every (commit after
this many processed records, and whenever a poll returns nothing), sleep_per_record (seconds of
"processing" per record), max_seconds (the worker stops by itself after this long).

It reports on stdout, one JSON object a line, flushed at once:
  {"ev": "assignment", "parts": [..]}          whenever consumer.assignment() changed
  {"ev": "recs", "recs": [[partition, offset, value], ..]}
                                               records processed (reported before any commit
                                               covers them)
  {"ev": "commit-begin", "offsets": {p: o}}    a synchronous commit is about to be sent
  {"ev": "commit-done", "offsets": {p: o}}     the broker acknowledged it
  {"ev": "commit-failed", "error": ".."}  (commits also happen when partitions are revoked)
  {"ev": "closed"}                             after a clean close (SIGTERM or max_seconds)
"""

from __future__ import annotations

import json
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition


def main() -> int:
    cfg = json.loads(sys.argv[1])
    stop = False

    def on_term(_sig, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)

    def emit(obj) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    conf = {
        "bootstrap.servers": cfg["bootstrap"],
        "broker.address.family": "v4",
        "group.id": cfg["group"],
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.wait.max.ms": 100,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
    }
    conf.update(cfg.get("conf", {}))
    c = Consumer(conf)
    commit_every = int(cfg.get("commit_every", 1))
    sleep_per_record = float(cfg.get("sleep_per_record", 0))
    deadline = time.monotonic() + float(cfg.get("max_seconds", 50))
    last_assignment = None
    pending: dict[int, int] = {}  # partition -> next offset, processed but not committed
    since_commit = 0

    def commit() -> None:
        nonlocal pending, since_commit
        if not pending:
            return
        offsets = {str(p): o for p, o in sorted(pending.items())}
        emit({"ev": "commit-begin", "offsets": offsets})
        try:
            c.commit(offsets=[TopicPartition(cfg["topic"], p, o) for p, o in pending.items()],
                     asynchronous=False)
            emit({"ev": "commit-done", "offsets": offsets})
        except KafkaException as e:
            emit({"ev": "commit-failed", "offsets": offsets, "error": str(e)})
        pending = {}
        since_commit = 0

    def on_revoke(_consumer, _partitions):
        commit()  # what was processed, before the partitions go

    c.subscribe([cfg["topic"]], on_revoke=on_revoke)
    while not stop and time.monotonic() < deadline:
        msgs = c.consume(num_messages=50, timeout=0.1)
        assignment = sorted(tp.partition for tp in c.assignment())
        if assignment != last_assignment:
            last_assignment = assignment
            emit({"ev": "assignment", "parts": assignment})
        recs = []
        for m in msgs:
            if m.error():
                emit({"ev": "error", "error": str(m.error())})
                continue
            if sleep_per_record:
                time.sleep(sleep_per_record)
            recs.append([m.partition(), m.offset(), m.value().decode()])
        if recs:
            emit({"ev": "recs", "recs": recs})
            for p, o, _ in recs:
                pending[p] = o + 1
            since_commit += len(recs)
        if since_commit >= commit_every or (not msgs and pending):
            commit()
    commit()
    c.close()
    emit({"ev": "closed"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
