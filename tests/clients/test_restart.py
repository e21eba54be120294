"""Durability across restarts: a clean stop (SIGTERM) keeps everything exactly, and a SIGKILL
keeps every record that was acknowledged with acks=all."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType

from helpers import (
    TS0,
    ck_admin,
    ck_conf,
    ck_consume_partitions,
    ck_consumer,
    ck_create_topic,
    ck_produce,
    ck_watermarks,
    stored_batches,
    wait_until,
)


def describe_topic(admin, topic):
    from confluent_kafka import TopicCollection

    return admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=15)


def snapshot(broker, topic, partitions):
    """Everything a client can observe about a topic: records, watermarks, time lookups."""
    records = ck_consume_partitions(broker, topic, range(partitions))
    marks = {p: ck_watermarks(broker, topic, p) for p in range(partitions)}
    c = ck_consumer(broker)
    try:
        lookups = {}
        for p in range(partitions):
            for ts in [TS0 - 1, TS0 + 5_000, TS0 + 17_777, TS0 + 10**9]:
                [tp] = c.offsets_for_times([TopicPartition(topic, p, ts)], timeout=15)
                lookups[(p, ts)] = tp.offset
    finally:
        c.close()
    return records, marks, lookups


@pytest.mark.broker_args("--segment-bytes", "4096")
def test_clean_restart_keeps_everything(broker, topic_name):
    admin = ck_admin(broker)
    topic = ck_create_topic(broker, topic_name(), partitions=3,
                            config={"retention.ms": "86400000"}, admin=admin)
    records = [
        {
            "key": f"key-{i % 50}".encode(),
            "value": f"restart record {i} ".encode() * (1 + i % 9),
            "headers": [("i", str(i).encode())],
            "timestamp": TS0 + i * 10,
            "partition": i % 3,
        }
        for i in range(3000)
    ]
    reports = ck_produce(broker, topic, records, flush_every=250,
                         **{"acks": "all", "enable.idempotence": True,
                            "compression.type": "zstd", "linger.ms": 5})
    tp = TopicPartition(topic, 2, 120)
    assert admin.delete_records([tp])[tp].result(timeout=15).low_watermark == 120
    assert len({b.segment for b in stored_batches(broker.data_dir, topic, 0)}) > 2
    pids_before = {b.producer_id for b in stored_batches(broker.data_dir, topic, 0)}
    topic_id = describe_topic(admin, topic).topic_id
    before = snapshot(broker, topic, 3)

    assert broker.restart() == 0, "SIGTERM must stop the broker cleanly (exit 0)"
    ready = broker.log_lines(r"broker ready")
    assert len(ready) == 2 and "truncated_segments=0" in ready[-1], ready

    after = snapshot(broker, topic, 3)
    assert after[1] == before[1], "watermarks changed across a clean restart"
    assert after[2] == before[2], "time lookups changed across a clean restart"
    assert after[0] == before[0], "records changed across a clean restart"
    # And they are exactly what was acknowledged.
    sent = {(rep.partition, rep.offset): rec for rep, rec in zip(reports, records, strict=True)}
    for p, recs in after[0].items():
        first = 120 if p == 2 else 0
        assert [r.offset for r in recs] == list(range(first, 1000))
        for r in recs:
            a = sent[(p, r.offset)]
            assert (r.key, r.value, list(r.headers), r.timestamp) == (
                a["key"], a["value"], a["headers"], a["timestamp"])

    # Topic metadata and configs survive too.
    desc = describe_topic(admin, topic)
    assert str(desc.topic_id) == str(topic_id)
    assert len(desc.partitions) == 3
    res = ConfigResource(ResourceType.TOPIC, topic)
    cfg = admin.describe_configs([res])[res].result(timeout=15)
    assert cfg["retention.ms"].value == "86400000"
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    # Appends continue at the old log end; a new idempotent producer gets a new producer id.
    more = ck_produce(broker, topic, [{"value": b"after restart", "partition": 0}],
                      **{"enable.idempotence": True})
    assert more[0].offset == 1000
    pids_after = {b.producer_id for b in stored_batches(broker.data_dir, topic, 0)} - pids_before
    assert pids_after and min(pids_after) > max(pids_before), (pids_before, pids_after)


@pytest.mark.parametrize("flush", ["os", "fsync"])
def test_sigkill_keeps_every_acknowledged_record(broker, topic_name, flush):
    admin = ck_admin(broker)
    topic = ck_create_topic(broker, topic_name(), partitions=3,
                            config={"segment.bytes": "65536"} | (
                                {"flush.messages": "1"} if flush == "fsync" else {}),
                            admin=admin)
    acked: dict[tuple[int, int], bytes] = {}
    failed = []
    sent = 0
    stop = threading.Event()
    p = Producer(ck_conf(broker, **{"acks": "all", "linger.ms": 2, "retries": 0,
                                    "message.timeout.ms": 10000, "compression.type": "gzip"}))

    def on_delivery(err, msg):
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()
        else:
            failed.append(err)

    def produce_forever(p):
        nonlocal sent
        while not stop.is_set():
            try:
                p.produce(topic, key=f"k{sent}".encode(), value=f"value-{sent:07d}".encode(),
                          partition=sent % 3, timestamp=TS0 + sent, on_delivery=on_delivery)
                sent += 1
            except BufferError:
                pass
            p.poll(0 if sent % 50 else 0.001)

    t = threading.Thread(target=produce_forever, args=(p,), daemon=True)
    t.start()
    try:
        wait_until(lambda: len(acked) >= 3000, timeout=30, what="3000 acknowledged records")
        broker.kill()  # mid-stream: more records are queued and in flight
        acked_at_kill = dict(acked)
    finally:
        stop.set()
        t.join(10)
    # Whatever was not acknowledged by now is abandoned.
    p.purge(in_queue=True, in_flight=True)
    p.flush(5)
    del p  # destroys the producer: no reconnect attempts to the dead broker
    assert len(acked_at_kill) >= 3000 and sent > len(acked_at_kill)
    acked_now = dict(acked)

    broker.start()
    stored = ck_consume_partitions(broker, topic, range(3))
    for part, recs in stored.items():
        # The log is dense from 0, holds only records that were sent, each at most once.
        assert [r.offset for r in recs] == list(range(len(recs)))
        values = [r.value for r in recs]
        assert len(set(values)) == len(values)
        assert all(v.startswith(b"value-") and int(v[6:]) % 3 == part for v in values)
    got = {(part, r.offset): r.value for part, recs in stored.items() for r in recs}
    missing = {k: v for k, v in acked_now.items() if got.get(k) != v}
    assert not missing, f"{len(missing)} acknowledged records lost or changed, e.g. " \
        f"{sorted(missing.items())[:5]}"
    # Time lookups work on the recovered (rescanned) segments.
    c = ck_consumer(broker)
    try:
        for part, recs in stored.items():
            for r in recs[:: max(1, len(recs) // 7)]:
                [tp] = c.offsets_for_times([TopicPartition(topic, part, r.timestamp)], timeout=15)
                expect = next(x.offset for x in recs if x.timestamp >= r.timestamp)
                assert tp.offset == expect, (part, r.timestamp)
    finally:
        c.close()
    # Appends resume after the recovered log end.
    ends = {part: len(recs) for part, recs in stored.items()}
    reports = ck_produce(broker, topic,
                         [{"value": b"after kill", "partition": q} for q in range(3)])
    assert {r.partition: r.offset for r in reports} == ends


def test_clients_ride_through_a_clean_restart(broker, topic_name):
    """A producer (idempotent, acks=all) and an assign()ed consumer keep running while the
    broker restarts: nothing acknowledged is lost, and the consumer resumes where it was
    (no offset reset, no gap, no record delivered twice)."""
    from confluent_kafka import KafkaError

    topic = ck_create_topic(broker, topic_name(), partitions=2)
    acked: dict[tuple[int, int], bytes] = {}
    errors = []
    stop_producing = threading.Event()
    p = Producer(ck_conf(broker, **{"acks": "all", "enable.idempotence": True,
                                    "linger.ms": 5, "message.timeout.ms": 30000}))

    def on_delivery(err, msg):
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()
        else:
            errors.append(err)

    def produce():
        n = 0
        while not stop_producing.is_set():
            try:
                p.produce(topic, value=f"ride-{n:06d}".encode(), partition=n % 2,
                          on_delivery=on_delivery)
                n += 1
            except BufferError:
                pass
            p.poll(0.0005)
        p.flush(30)

    seen: dict[int, list[tuple[int, bytes]]] = {0: [], 1: []}
    consumer_errors = []
    stop_consuming = threading.Event()
    c = ck_consumer(broker, **{"enable.partition.eof": False})
    c.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])

    def consume():
        while not stop_consuming.is_set():
            for m in c.consume(500, timeout=0.1):
                if m.error():
                    if m.error().code() != KafkaError._TRANSPORT:
                        consumer_errors.append(m.error())
                    continue
                seen[m.partition()].append((m.offset(), m.value()))

    threads = [threading.Thread(target=produce, daemon=True),
               threading.Thread(target=consume, daemon=True)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 1000, timeout=20, what="1000 acks before the restart")
        assert broker.restart() == 0
        target = len(acked) + 1000
        wait_until(lambda: len(acked) >= target, timeout=30, what="1000 acks after the restart")
    finally:
        stop_producing.set()
        threads[0].join(40)
    assert not errors, errors[:5]
    ends = {q: ck_watermarks(broker, topic, q)[1] for q in (0, 1)}
    try:
        wait_until(lambda: all(len(seen[q]) and seen[q][-1][0] + 1 >= ends[q] for q in (0, 1)),
                   timeout=30, what="the consumer to reach the end")
    finally:
        stop_consuming.set()
        threads[1].join(10)
        c.close()
    assert not consumer_errors, consumer_errors[:5]
    for q in (0, 1):
        offsets = [o for o, _ in seen[q]]
        assert offsets == list(range(ends[q])), f"partition {q}: gap or repeat at the consumer"
    got = {(q, o): v for q in (0, 1) for o, v in seen[q]}
    missing = {k for k, v in acked.items() if got.get(k) != v}
    assert not missing, f"{len(missing)} acknowledged records missing, e.g. {sorted(missing)[:5]}"
