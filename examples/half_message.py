#!/usr/bin/env python3
"""RocketMQ-style transactional messages on Tributary (Kafka transactions), with confluent-kafka.

RocketMQ's flow is: send a *half message* (stored, invisible to consumers) -> run the local
transaction -> commit or roll back the half message -> if the producer never said which, the
broker *checks back* with the producer, which answers from its local transaction's state.

Here (docs/transactions.md has the full mapping):
  half message   = the record produced inside an open Kafka transaction: stored, but
                   read_committed consumers do not see it
  commit/rollback = commit_transaction() / abort_transaction()
  check-back     = at start, init_transactions() aborts whatever a crashed instance left open
                   (so no half message stays pending), then `recover` compares the local
                   database with what the topic holds and sends again every order whose local
                   transaction committed but whose message did not.

The local database is SQLite (the `orders` table). Usage:

  half_message.py BOOTSTRAP DB TOPIC place ORDER_ID [--fail-local] [--crash-before-commit]
  half_message.py BOOTSTRAP DB TOPIC recover

`--fail-local` makes the local transaction fail (the message is rolled back).
`--crash-before-commit` kills the process after the local commit, before the Kafka commit
(the case RocketMQ's check-back exists for); run `recover` afterwards.
"""

from __future__ import annotations

import os
import sqlite3
import sys

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

TXN_ID = "orders-service"  # one per producer instance; a restart reuses it and fences the old one


def producer(bootstrap: str) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": TXN_ID,
                  "transaction.timeout.ms": 10000})
    # Fences any previous instance and aborts the transaction it left open: no half message of
    # a crashed instance stays pending (RocketMQ would keep it until its check-back).
    p.init_transactions(15)
    return p


def local_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, amount INTEGER)")
    return db


def place(bootstrap: str, db_path: str, topic: str, order_id: str, fail_local: bool,
          crash_before_commit: bool) -> int:
    p = producer(bootstrap)
    db = local_db(db_path)
    p.begin_transaction()
    # 1. The half message: written to the log, invisible to read_committed consumers.
    p.produce(topic, key=order_id.encode(), value=f'{{"order": "{order_id}"}}'.encode())
    p.flush(15)
    # 2. The local transaction.
    try:
        db.execute("BEGIN")
        db.execute("INSERT INTO orders VALUES (?, ?)", (order_id, 100))
        if fail_local:
            raise RuntimeError("payment declined")
        db.execute("COMMIT")
    except Exception as e:  # noqa: BLE001 - any failure rolls the message back
        db.execute("ROLLBACK")
        # 3a. Rollback: the half message is never delivered.
        p.abort_transaction(15)
        print(f"order {order_id}: local transaction failed ({e}); message rolled back")
        return 1
    if crash_before_commit:
        print(f"order {order_id}: crashing between the local commit and the message commit")
        sys.stdout.flush()
        os._exit(3)
    # 3b. Commit: consumers see the message now.
    p.commit_transaction(15)
    print(f"order {order_id}: committed")
    return 0


def published_keys(bootstrap: str, topic: str) -> set[str]:
    """Keys of every committed message of the topic (read_committed, start to end)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "orders-check-back",
                  "enable.auto.commit": False, "isolation.level": "read_committed",
                  "enable.partition.eof": True})
    try:
        parts = c.list_topics(topic, timeout=15).topics[topic].partitions
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        keys, at_end = set(), set()
        while len(at_end) < len(parts):
            for m in c.consume(num_messages=500, timeout=1):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition())
                        continue
                    raise RuntimeError(str(m.error()))
                keys.add(m.key().decode())
        return keys
    finally:
        c.close()


def recover(bootstrap: str, db_path: str, topic: str) -> int:
    """The check-back: after init_transactions() settled the crashed instance's transaction,
    every locally committed order missing from the topic is sent again, in one transaction."""
    p = producer(bootstrap)
    db = local_db(db_path)
    have = published_keys(bootstrap, topic)
    missing = [oid for (oid,) in db.execute("SELECT id FROM orders ORDER BY id")
               if oid not in have]
    if missing:
        p.begin_transaction()
        for oid in missing:
            p.produce(topic, key=oid.encode(), value=f'{{"order": "{oid}"}}'.encode())
        p.commit_transaction(15)
    print(f"check-back: re-sent {len(missing)} order(s): {', '.join(missing) or '-'}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[4] not in ("place", "recover"):
        print(__doc__)
        return 2
    bootstrap, db, topic, cmd = argv[1:5]
    if cmd == "recover":
        return recover(bootstrap, db, topic)
    if len(argv) < 6:
        print("place needs an ORDER_ID")
        return 2
    return place(bootstrap, db, topic, argv[5], "--fail-local" in argv,
                 "--crash-before-commit" in argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
