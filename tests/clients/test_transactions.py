"""Transactions with confluent-kafka (librdkafka) and kafka-python 3 against trib: commit and
abort seen through read_committed and read_uncommitted consumers, a zombie producer fenced by a
new instance with the same transactional.id, a transaction past its timeout aborted by the
broker, and consume-transform-produce with the input offsets committed in the transaction."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition
from kafka.structs import OffsetAndMetadata

from helpers import ck_conf, ck_consume_partitions, ck_create_topic, wait_until


def values(by_partition) -> list[bytes]:
    return sorted(r.value for recs in by_partition.values() for r in recs)


def ck_txn_producer(broker, txn_id: str, **extra) -> Producer:
    p = Producer(ck_conf(broker, **{"transactional.id": txn_id, "linger.ms": 1, **extra}))
    p.init_transactions(15)
    return p


# --- confluent-kafka -------------------------------------------------------------------------


def test_ck_commit_and_abort_by_isolation_level(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=2)
    p = ck_txn_producer(broker, "ck-views")
    p.begin_transaction()
    for i in range(6):
        p.produce(topic, f"kept-{i}".encode(), partition=i % 2)
    p.commit_transaction(15)
    p.begin_transaction()
    for i in range(4):
        p.produce(topic, f"dropped-{i}".encode(), partition=i % 2)
    p.flush(15)
    p.abort_transaction(15)

    committed = ck_consume_partitions(broker, topic, [0, 1], **{"isolation.level": "read_committed"})
    assert values(committed) == sorted(f"kept-{i}".encode() for i in range(6))
    everything = ck_consume_partitions(broker, topic, [0, 1],
                                       **{"isolation.level": "read_uncommitted"})
    assert values(everything) == sorted(
        [f"kept-{i}".encode() for i in range(6)] + [f"dropped-{i}".encode() for i in range(4)])


def test_ck_zombie_is_fenced(broker, topic_name):
    topic = ck_create_topic(broker, topic_name())
    zombie = ck_txn_producer(broker, "ck-fence")
    zombie.begin_transaction()
    zombie.produce(topic, b"zombie", partition=0)
    zombie.flush(15)
    fresh = ck_txn_producer(broker, "ck-fence")
    with pytest.raises(KafkaException) as e:
        zombie.produce(topic, b"zombie-2", partition=0)
        zombie.commit_transaction(15)
    assert e.value.args[0].fatal(), f"fencing must be fatal: {e.value}"
    fresh.begin_transaction()
    fresh.produce(topic, b"fresh", partition=0)
    fresh.commit_transaction(15)
    seen = ck_consume_partitions(broker, topic, [0], **{"isolation.level": "read_committed"})
    assert values(seen) == [b"fresh"]


def test_ck_timed_out_transaction_is_aborted(broker, topic_name):
    topic = ck_create_topic(broker, topic_name())
    p = ck_txn_producer(broker, "ck-timeout", **{"transaction.timeout.ms": 1500})
    p.begin_transaction()
    p.produce(topic, b"late", partition=0)
    p.flush(15)
    wait_until(lambda: broker.log_lines("transaction timed out"), timeout=20,
               what="the broker aborting the transaction")
    with pytest.raises(KafkaException):
        p.commit_transaction(15)
    seen = ck_consume_partitions(broker, topic, [0], **{"isolation.level": "read_committed"})
    assert values(seen) == []


def test_ck_consume_transform_produce(broker, topic_name):
    src = ck_create_topic(broker, topic_name("in"))
    dst = ck_create_topic(broker, topic_name("out"))
    plain = Producer(ck_conf(broker))
    for i in range(20):
        plain.produce(src, f"{i:02}".encode(), partition=0)
    assert plain.flush(15) == 0
    group = "ck-ctp"

    def consumer():
        c = Consumer(ck_conf(broker, **{"group.id": group, "enable.auto.commit": False,
                                        "auto.offset.reset": "earliest",
                                        "isolation.level": "read_committed"}))
        c.subscribe([src])
        return c

    c = consumer()
    p = ck_txn_producer(broker, "ck-ctp-app")
    done, steps = 0, 0
    deadline = time.monotonic() + 60
    while done < 20:
        assert time.monotonic() < deadline, "consume-transform-produce stalled"
        msgs = [m for m in c.consume(num_messages=5, timeout=1) if not m.error()]
        if not msgs:
            continue
        p.begin_transaction()
        for m in msgs:
            p.produce(dst, b"out-" + m.value(), partition=0)
        nxt = msgs[-1].offset() + 1
        p.send_offsets_to_transaction([TopicPartition(src, 0, nxt)],
                                      c.consumer_group_metadata(), 15)
        if steps == 1:
            p.flush(15)
            p.abort_transaction(15)
            committed = c.committed([TopicPartition(src, 0)], timeout=15)[0].offset
            assert committed == 5, "the aborted step committed no offsets"
            c.seek(TopicPartition(src, 0, committed))
        else:
            p.commit_transaction(15)
            done = nxt
        steps += 1
    c.close()
    out = ck_consume_partitions(broker, dst, [0], **{"isolation.level": "read_committed"})
    assert [r.value for r in out[0]] == [f"out-{i:02}".encode() for i in range(20)]
    c = consumer()
    assert c.committed([TopicPartition(src, 0)], timeout=15)[0].offset == 20
    c.close()


# --- kafka-python ----------------------------------------------------------------------------


def kp_read(broker, topic, isolation: str) -> list[bytes]:
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                      enable_auto_commit=False, isolation_level=isolation,
                      request_timeout_ms=15000, fetch_max_wait_ms=100)
    try:
        tp = KTopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        end = c.end_offsets([tp])[tp]
        out = []
        deadline = time.monotonic() + 20
        while c.position(tp) < end:
            assert time.monotonic() < deadline, f"read stalled at {c.position(tp)} of {end}"
            for recs in c.poll(timeout_ms=200).values():
                out.extend(r.value for r in recs)
        return sorted(out)
    finally:
        c.close()


def kp_txn_producer(broker, txn_id: str, **extra) -> KafkaProducer:
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=txn_id,
                      request_timeout_ms=15000, **extra)
    p.init_transactions()
    return p


def test_kp_commit_and_abort_by_isolation_level(broker, topic_name):
    topic = ck_create_topic(broker, topic_name())
    p = kp_txn_producer(broker, "kp-views")
    p.begin_transaction()
    for i in range(5):
        p.send(topic, f"kept-{i}".encode(), partition=0)
    p.commit_transaction()
    p.begin_transaction()
    for i in range(3):
        p.send(topic, f"dropped-{i}".encode(), partition=0)
    p.flush()
    p.abort_transaction()
    p.close()
    assert kp_read(broker, topic, "read_committed") == sorted(
        f"kept-{i}".encode() for i in range(5))
    assert kp_read(broker, topic, "read_uncommitted") == sorted(
        [f"kept-{i}".encode() for i in range(5)] + [f"dropped-{i}".encode() for i in range(3)])


def test_kp_zombie_is_fenced(broker, topic_name):
    topic = ck_create_topic(broker, topic_name())
    zombie = kp_txn_producer(broker, "kp-fence")
    zombie.begin_transaction()
    zombie.send(topic, b"zombie", partition=0)
    zombie.flush()
    fresh = kp_txn_producer(broker, "kp-fence")
    with pytest.raises(Exception) as e:
        zombie.commit_transaction()
    assert "Fenced" in type(e.value).__name__ or "fenced" in str(e.value).lower(), repr(e.value)
    zombie.close(timeout=1)
    fresh.begin_transaction()
    fresh.send(topic, b"fresh", partition=0)
    fresh.commit_transaction()
    fresh.close()
    assert kp_read(broker, topic, "read_committed") == [b"fresh"]


def test_kp_offsets_commit_with_the_transaction(broker, topic_name):
    src = ck_create_topic(broker, topic_name("in"))
    dst = ck_create_topic(broker, topic_name("out"))
    p = kp_txn_producer(broker, "kp-ctp")
    group = "kp-ctp-group"
    tp = KTopicPartition(src, 0)
    p.begin_transaction()
    p.send(dst, b"first", partition=0)
    p.send_offsets_to_transaction({tp: OffsetAndMetadata(7, "", -1)}, group)
    p.commit_transaction()
    p.begin_transaction()
    p.send(dst, b"second", partition=0)
    p.send_offsets_to_transaction({tp: OffsetAndMetadata(9, "", -1)}, group)
    p.flush()
    p.abort_transaction()
    p.close()
    c = Consumer(ck_conf(broker, **{"group.id": group}))
    try:
        assert c.committed([TopicPartition(src, 0)], timeout=15)[0].offset == 7
    finally:
        c.close()
    assert kp_read(broker, dst, "read_committed") == [b"first"]


# --- the RocketMQ half-message example -------------------------------------------------------


def test_half_message_example(broker, topic_name, tmp_path):
    """examples/half_message.py: a committed order is delivered, a failed local transaction
    rolls its message back, and an order whose process died between the local commit and the
    message commit is delivered exactly once by the check-back (`recover`)."""
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "half_message.py"
    topic = ck_create_topic(broker, topic_name(), partitions=3)
    db = str(tmp_path / "orders.db")

    def run(*args):
        return subprocess.run([sys.executable, str(example), broker.bootstrap, db, topic, *args],
                              capture_output=True, text=True, timeout=60)

    assert run("place", "A").returncode == 0
    failed = run("place", "B", "--fail-local")
    assert failed.returncode == 1 and "rolled back" in failed.stdout
    crashed = run("place", "C", "--crash-before-commit")
    assert crashed.returncode == 3, crashed.stdout + crashed.stderr
    # C's half message is in the log but invisible; the check-back settles it.
    seen = ck_consume_partitions(broker, topic, [0, 1, 2], **{"isolation.level": "read_committed"})
    assert sorted(r.key for recs in seen.values() for r in recs) == [b"A"]
    rec = run("recover")
    assert rec.returncode == 0 and "re-sent 1 order(s): C" in rec.stdout, rec.stdout + rec.stderr
    again = run("recover")
    assert "re-sent 0 order(s)" in again.stdout, "the check-back is idempotent"
    seen = ck_consume_partitions(broker, topic, [0, 1, 2], **{"isolation.level": "read_committed"})
    assert sorted(r.key for recs in seen.values() for r in recs) == [b"A", b"C"]
    everything = ck_consume_partitions(broker, topic, [0, 1, 2],
                                       **{"isolation.level": "read_uncommitted"})
    assert sorted(r.key for recs in everything.values() for r in recs) == [b"A", b"B", b"C", b"C"]


def test_kp_timed_out_transaction_is_aborted(broker, topic_name):
    topic = ck_create_topic(broker, topic_name())
    p = kp_txn_producer(broker, "kp-timeout", transaction_timeout_ms=1500)
    p.begin_transaction()
    p.send(topic, b"late", partition=0)
    p.flush()
    wait_until(lambda: broker.log_lines("transaction timed out"), timeout=20,
               what="the broker aborting the transaction")
    with pytest.raises(Exception):
        p.commit_transaction()
    p.close(timeout=1)
    assert kp_read(broker, topic, "read_committed") == []
    assert kp_read(broker, topic, "read_uncommitted") == [b"late"]
