"""Shared helpers of the client suite: polling, confluent-kafka produce/consume wrappers, and a
reader of the broker's segment files (to check what was actually stored)."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# Kafka error codes used across the suite.
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
MESSAGE_TOO_LARGE = 10
INVALID_TOPIC_EXCEPTION = 17
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_REPLICATION_FACTOR = 38
INVALID_CONFIG = 40

CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

# Base of the explicit record timestamps the tests use: an hour ago, so no record is older than
# the broker's default retention (7 days) and retention never runs into a test.
TS0 = (int(time.time()) - 3600) * 1000


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class Rec:
    """A record as a client saw it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple = ()
    timestamp: int | None = None


# --- confluent-kafka ------------------------------------------------------------------------


def ck_conf(broker, **extra) -> dict:
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "broker.address.family": "v4",
        "socket.connection.setup.timeout.ms": 5000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
    }
    conf.update(extra)
    return conf


def ck_admin(broker, **extra):
    from confluent_kafka.admin import AdminClient

    return AdminClient(ck_conf(broker, **extra))


def ck_create_topic(broker, name: str, partitions: int = 1, config: dict | None = None, admin=None):
    from confluent_kafka.admin import NewTopic

    admin = admin or ck_admin(broker)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=10,
        request_timeout=15,
    )
    futures[name].result(timeout=15)
    return name


def ck_produce(broker, topic: str, records, flush_every: int | None = None, **conf) -> list[Rec]:
    """Produces `records` (dicts of produce() kwargs) and returns their delivery reports in
    produce order. Fails the test on any delivery error."""
    from confluent_kafka import Producer

    p = Producer(ck_conf(broker, **conf))
    reports: list = [None] * len(records)

    def on_delivery(i):
        def cb(err, msg):
            reports[i] = (err, msg)

        return cb

    for i, r in enumerate(records):
        while True:
            try:
                p.produce(topic, on_delivery=on_delivery(i), **r)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        if flush_every and (i + 1) % flush_every == 0:
            assert p.flush(20) == 0, "flush timed out"
    assert p.flush(30) == 0, "flush timed out"
    out = []
    for i, rep in enumerate(reports):
        assert rep is not None, f"no delivery report for record {i}"
        err, msg = rep
        assert err is None, f"delivery of record {i} failed: {err}"
        out.append(
            Rec(
                msg.partition(),
                msg.offset(),
                msg.key(),
                msg.value(),
                tuple(msg.headers() or ()),
                msg.timestamp()[1],
            )
        )
    return out


def ck_consumer(broker, **extra):
    from confluent_kafka import Consumer

    conf = ck_conf(
        broker,
        **{
            # librdkafka insists on a group.id, but assign() never uses the group: no
            # subscribe(), no commits (consumer groups are not built in the broker yet).
            "group.id": "tributary-client-tests-unused",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            "fetch.wait.max.ms": 100,
            "enable.partition.eof": True,
        },
    )
    conf.update(extra)
    return Consumer(conf)


def ck_consume(broker, topic: str, partition: int, offset: int, count: int | None = None,
               timeout: float = 20, **extra) -> list[Rec]:
    """Reads a partition from `offset` with assign(): `count` records, or (count=None) every
    record up to the end of the partition (librdkafka's partition EOF event at the high
    watermark). Fails the test on a consume error or when `timeout` passes."""
    from confluent_kafka import KafkaError, TopicPartition

    c = ck_consumer(broker, **extra)
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        out: list[Rec] = []
        deadline = time.monotonic() + timeout
        while count is None or len(out) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"read {len(out)} of {count} records of {topic}/{partition} "
                            f"in {timeout}s")
            want = 500 if count is None else min(500, count - len(out))
            eof = False
            for m in c.consume(num_messages=want, timeout=0.1):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof = True
                        continue
                    pytest.fail(f"consume error on {topic}/{partition}: {m.error()}")
                out.append(
                    Rec(
                        m.partition(),
                        m.offset(),
                        m.key(),
                        m.value(),
                        tuple(m.headers() or ()),
                        m.timestamp()[1],
                    )
                )
            if eof and count is None:
                break
        return out
    finally:
        c.close()


def ck_consume_partitions(broker, topic: str, partitions, timeout: float = 30,
                          **extra) -> dict[int, list[Rec]]:
    """Reads every record of each partition in `partitions` (from offset 0 to the end) with one
    assign()ed consumer."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    partitions = list(partitions)
    c = ck_consumer(broker, **extra)
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out: dict[int, list[Rec]] = {p: [] for p in partitions}
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                pytest.fail(f"partitions {sorted(set(partitions) - at_end)} of {topic} did not "
                            f"reach their end in {timeout}s")
            for m in c.consume(num_messages=500, timeout=0.1):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition())
                        continue
                    pytest.fail(f"consume error on {topic}/{m.partition()}: {m.error()}")
                at_end.discard(m.partition())
                out[m.partition()].append(
                    Rec(m.partition(), m.offset(), m.key(), m.value(),
                        tuple(m.headers() or ()), m.timestamp()[1])
                )
        return out
    finally:
        c.close()


def ck_watermarks(broker, topic: str, partition: int) -> tuple[int, int]:
    from confluent_kafka import TopicPartition

    c = ck_consumer(broker)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        c.close()


def api_versions(broker, timeout: float = 10) -> dict[int, tuple[int, int]]:
    """The broker's ApiVersions (v0) answer: api key -> (min, max)."""
    client_id = b"tributary-tests"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    with socket.create_connection((broker.host, broker.port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack_from(">i", buf)[0]:
            chunk = s.recv(65536)
            assert chunk, "connection closed during ApiVersions"
            buf += chunk
    _corr, err, n = struct.unpack_from(">ihi", buf, 4)
    assert err == 0, f"ApiVersions error {err}"
    out = {}
    for i in range(n):
        key, lo, hi = struct.unpack_from(">hhh", buf, 14 + 6 * i)
        out[key] = (lo, hi)
    return out


FIND_COORDINATOR = 10


# --- the broker's files ---------------------------------------------------------------------


@dataclass(frozen=True)
class StoredBatch:
    segment: str
    base_offset: int
    last_offset: int
    codec: int
    max_timestamp: int
    record_count: int
    producer_id: int
    base_sequence: int


def stored_batches(data_dir: Path, topic: str, partition: int) -> list[StoredBatch]:
    """Walks the v2 batch headers of every segment of a partition as stored on disk."""
    out = []
    for seg in sorted((Path(data_dir) / f"{topic}-{partition}").glob("*.log")):
        data = seg.read_bytes()
        at = 0
        while at + 61 <= len(data):
            base, length = struct.unpack_from(">qi", data, at)
            attrs, last_delta, _first_ts, max_ts = struct.unpack_from(">hiqq", data, at + 21)
            pid, _epoch, seq, count = struct.unpack_from(">qhii", data, at + 43)
            out.append(StoredBatch(seg.name, base, base + last_delta, attrs & 7, max_ts, count,
                                   pid, seq))
            at += 12 + length
    return out
