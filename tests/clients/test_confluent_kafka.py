"""confluent-kafka (librdkafka 2.x) against trib: produce/consume with every codec, record
details (keys, headers, nulls, timestamps), size limits, many partitions, time lookups across
segments, and the AdminClient. Consumers use assign() with explicit offsets and no commits (no
consumer group)."""

from __future__ import annotations

import os
import random

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from helpers import (
    CODEC_IDS,
    INVALID_CONFIG,
    INVALID_PARTITIONS,
    INVALID_REPLICATION_FACTOR,
    INVALID_TOPIC_EXCEPTION,
    MESSAGE_TOO_LARGE,
    TOPIC_ALREADY_EXISTS,
    TS0,
    UNKNOWN_TOPIC_OR_PARTITION,
    ck_admin,
    ck_consume,
    ck_consume_partitions,
    ck_consumer,
    ck_create_topic,
    ck_produce,
    ck_watermarks,
    stored_batches,
    wait_until,
)


def record_set(n: int) -> list[dict]:
    """Records exercising what users rely on: keys, null keys, empty keys, null values
    (tombstones), empty values, binary values, several and repeated headers, null header values,
    and explicit timestamps."""
    rnd = random.Random(n)
    out = []
    for i in range(n):
        r: dict = {"timestamp": TS0 + i * 7, "partition": 0}
        kind = i % 10
        r["key"] = None if kind == 1 else b"" if kind == 2 else f"key-{i % 13}".encode()
        if kind == 3:
            r["value"] = None  # tombstone
        elif kind == 4:
            r["value"] = b""
        elif kind == 5:
            r["value"] = bytes(rnd.getrandbits(8) for _ in range(300))
        else:
            r["value"] = (f"value {i} " * (1 + i % 20)).encode()
        if kind == 6:
            r["headers"] = [("h1", b"one"), ("h2", b"\x00\xff"), ("h1", b"again")]
        elif kind == 7:
            r["headers"] = [("null-header", None), ("empty", b"")]
        elif kind == 8:
            r["headers"] = [("trace-id", f"{i:032x}".encode())]
        out.append(r)
    return out


def assert_same_records(got, records, first_offset=0):
    assert len(got) == len(records)
    for i, (g, r) in enumerate(zip(got, records, strict=True)):
        assert g.offset == first_offset + i, f"record {i}"
        assert g.key == r.get("key"), f"key of record {i}"
        assert g.value == r.get("value"), f"value of record {i}"
        assert list(g.headers) == list(r.get("headers") or []), f"headers of record {i}"
        assert g.timestamp == r["timestamp"], f"timestamp of record {i}"


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_round_trip_every_codec(broker, topic_name, codec):
    topic = ck_create_topic(broker, topic_name(), partitions=1)
    records = record_set(400)
    reports = ck_produce(
        broker,
        topic,
        records,
        flush_every=100,
        **{"compression.type": codec, "linger.ms": 20, "batch.num.messages": 50},
    )
    # Offsets are assigned densely and in produce order within the partition.
    assert [r.offset for r in reports] == list(range(len(records)))
    assert all(r.partition == 0 for r in reports)

    got = ck_consume(broker, topic, 0, 0)
    assert_same_records(got, records)
    # Reading from the middle of a (compressed) batch starts exactly at the asked offset.
    tail = ck_consume(broker, topic, 0, 123)
    assert_same_records(tail, records[123:], first_offset=123)

    # The broker stored the batches as the producer compressed them, several records per batch.
    # (librdkafka silently sends uncompressed batches when it thinks the broker lacks the codec,
    # e.g. lz4 when ApiVersions does not list FindCoordinator.)
    batches = stored_batches(broker.data_dir, topic, 0)
    assert {b.codec for b in batches} == {CODEC_IDS[codec]}
    assert len(batches) < len(records)
    assert sum(b.record_count for b in batches) == len(records)
    assert [b.base_offset for b in batches] == sorted(b.base_offset for b in batches)
    assert batches[-1].last_offset == len(records) - 1


def test_null_and_empty_keys_and_values_are_distinct(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=1)
    records = [
        {"key": None, "value": b"null key", "timestamp": TS0, "partition": 0},
        {"key": b"", "value": b"empty key", "timestamp": TS0 + 1, "partition": 0},
        {"key": b"tomb", "value": None, "timestamp": TS0 + 2, "partition": 0},
        {"key": b"empty", "value": b"", "timestamp": TS0 + 3, "partition": 0},
        {"key": None, "value": None, "timestamp": TS0 + 4, "partition": 0},
    ]
    ck_produce(broker, topic, records)
    got = ck_consume(broker, topic, 0, 0)
    assert [(g.key, g.value) for g in got] == [(r["key"], r["value"]) for r in records]


def test_large_record_near_limit_and_too_large(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=1)
    big = os.urandom(900_000)
    [rep] = ck_produce(broker, topic, [{"key": b"big", "value": big, "partition": 0}])
    assert rep.offset == 0
    [got] = ck_consume(broker, topic, 0, 0, count=1)
    assert got.key == b"big" and got.value == big

    # The producer's own limit (message.max.bytes 1000000 by default) refuses it before sending.
    p = Producer({"bootstrap.servers": broker.bootstrap})
    with pytest.raises(KafkaException) as e:
        p.produce(topic, value=os.urandom(1_100_000), partition=0)
    assert e.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE

    # With the producer's limit raised, the broker's max.message.bytes (1048588) refuses it.
    errors = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 5_000_000,
                  "retries": 0})
    p.produce(topic, value=os.urandom(1_100_000), partition=0,
              on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(20) == 0
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE == MESSAGE_TOO_LARGE
    assert ck_watermarks(broker, topic, 0) == (0, 1), "the refused record was not stored"
    # The partition keeps working: the next record gets the next offset.
    [rep] = ck_produce(broker, topic, [{"value": b"after", "partition": 0}])
    assert rep.offset == 1


def test_max_message_bytes_boundary_is_exact(broker, topic_name):
    """A batch of exactly max.message.bytes (1048588 including the 12-byte log overhead) is
    accepted; one byte more is refused."""
    topic = ck_create_topic(broker, topic_name(), partitions=1)
    # One record, no key, no headers, uncompressed: 61-byte batch header + 3-byte length varint +
    # attributes, timestamp delta, offset delta, key length (1 byte each) + 3-byte value length
    # varint + value + header count (1 byte) = value + 72.
    fits = 1_048_588 - 72
    conf = {"message.max.bytes": 5_000_000, "retries": 0, "enable.idempotence": False}
    [rep] = ck_produce(broker, topic, [{"value": b"x" * fits, "partition": 0}], **conf)
    assert rep.offset == 0
    [b] = stored_batches(broker.data_dir, topic, 0)
    seg = broker.data_dir / f"{topic}-0" / b.segment
    assert seg.stat().st_size == 1_048_588, "the boundary arithmetic above no longer holds"

    errors = []
    p = Producer({"bootstrap.servers": broker.bootstrap, **conf})
    p.produce(topic, value=b"x" * (fits + 1), partition=0,
              on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(20) == 0
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE


def murmur2_partition(key: bytes, partitions: int) -> int:
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_32_partitions_keyed_records_land_consistently(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=32)
    md = ck_admin(broker).list_topics(topic, timeout=10)
    assert sorted(md.topics[topic].partitions) == list(range(32))

    keys = [f"user-{i}".encode() for i in range(64)]
    records = [{"key": k, "value": f"{k.decode()}#{round_}".encode()}
               for round_ in range(5) for k in keys]
    # murmur2_random is the Java client's partitioner: every Kafka client agrees on it.
    reports = ck_produce(broker, topic, records, partitioner="murmur2_random", **{"linger.ms": 5})
    by_key: dict[bytes, set[int]] = {}
    for rep in reports:
        by_key.setdefault(rep.key, set()).add(rep.partition)
    for k, parts in by_key.items():
        assert parts == {murmur2_partition(k, 32)}, k
    assert len({p for s in by_key.values() for p in s}) > 16, "keys spread over the partitions"

    # Each partition holds exactly the records reported there, per-key in produce order.
    stored = ck_consume_partitions(broker, topic, range(32))
    for part in range(32):
        expect = sorted((r for r in reports if r.partition == part), key=lambda r: r.offset)
        got = stored[part]
        assert [(g.offset, g.key, g.value) for g in got] == [
            (r.offset, r.key, r.value) for r in expect
        ]
        for k in {g.key for g in got}:
            rounds = [int(g.value.split(b"#")[1]) for g in got if g.key == k]
            assert rounds == sorted(rounds)


def brute_force_offset(records, ts):
    """Kafka's answer: the first offset whose timestamp is >= ts, else -1."""
    return next((r.offset for r in records if r.timestamp >= ts), -1)


@pytest.mark.broker_args("--segment-bytes", "16384")
def test_offsets_for_times_across_segments(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=1)
    # Increasing timestamps with runs of equal ones and gaps, in many batches over many segments.
    records = []
    ts = TS0
    for i in range(1500):
        ts += 0 if i % 4 == 1 else (50 if i % 97 == 0 else 3)
        records.append({"value": f"r{i:05d}".encode() * 8, "timestamp": ts, "partition": 0})
    reports = ck_produce(broker, topic, records, flush_every=40, **{"linger.ms": 20})
    segments = {b.segment for b in stored_batches(broker.data_dir, topic, 0)}
    assert len(segments) >= 5, f"expected many segments, got {len(segments)}"
    # The brute-force answers come from a scan of what a consumer reads back.
    scanned = ck_consume(broker, topic, 0, 0)
    assert [(r.offset, r.timestamp) for r in scanned] == [(r.offset, r.timestamp) for r in reports]
    assert [r.timestamp for r in scanned] == [r["timestamp"] for r in records]
    reports = scanned

    stamps = sorted({r.timestamp for r in reports})
    probes = {0, TS0, stamps[0] - 1, stamps[-1], stamps[-1] + 1, stamps[-1] + 10_000}
    probes |= set(stamps[::37]) | {t + 1 for t in stamps[::41]} | {t - 1 for t in stamps[::43]}
    probes = sorted(probes)

    # One timestamp per request: a request holds one timestamp per partition.
    c = ck_consumer(broker)
    try:
        for t in probes:
            [tp] = c.offsets_for_times([TopicPartition(topic, 0, t)], timeout=15)
            assert tp.error is None, tp.error
            assert tp.offset == brute_force_offset(reports, t), f"timestamp {t}"
    finally:
        c.close()

    # The AdminClient's ListOffsets agrees, and answers earliest / latest / max timestamp.
    admin = ck_admin(broker)
    tp = TopicPartition(topic, 0)
    for t in probes[::5]:
        res = admin.list_offsets({tp: OffsetSpec.for_timestamp(t)})[tp].result(timeout=15)
        assert res.offset == brute_force_offset(reports, t), f"timestamp {t}"
        if res.offset >= 0:
            assert res.timestamp == reports[res.offset].timestamp
    assert admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result(timeout=15).offset == 0
    assert admin.list_offsets({tp: OffsetSpec.latest()})[tp].result(timeout=15).offset == 1500
    mx = admin.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(timeout=15)
    assert mx.timestamp == stamps[-1]
    assert mx.offset == brute_force_offset(reports, stamps[-1])


@pytest.mark.broker_args("--segment-bytes", "4096")
def test_offsets_for_times_with_out_of_order_timestamps(broker, topic_name):
    """Producers may send timestamps out of order: the answer is still the first offset whose
    timestamp is >= the one asked, not a binary-search guess."""
    topic = ck_create_topic(broker, topic_name(), partitions=1)
    rnd = random.Random(7)
    records = [
        {"value": b"v" * 60, "timestamp": TS0 + rnd.randrange(0, 100_000), "partition": 0}
        for _ in range(400)
    ]
    reports = ck_produce(broker, topic, records, flush_every=25, **{"linger.ms": 20})
    c = ck_consumer(broker)
    try:
        probes = sorted({r.timestamp for r in reports[::9]} | {TS0, TS0 + 50_000, TS0 + 99_999})
        for t in probes:
            [tp] = c.offsets_for_times([TopicPartition(topic, 0, t)], timeout=15)
            assert tp.offset == brute_force_offset(reports, t), f"timestamp {t}"
    finally:
        c.close()


# --- AdminClient ----------------------------------------------------------------------------


def describe(admin, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([res])[res].result(timeout=15)


def test_admin_create_topics_with_configs_and_validate_only(broker, topic_name):
    admin = ck_admin(broker)
    dry, real = topic_name("dry"), topic_name("real")
    fs = admin.create_topics(
        [NewTopic(dry, num_partitions=4, replication_factor=1,
                  config={"retention.ms": "3600000"})],
        validate_only=True,
        operation_timeout=10,
    )
    assert fs[dry].result(timeout=15) is None
    assert dry not in admin.list_topics(timeout=10).topics, "validate_only must not create"

    fs = admin.create_topics(
        [NewTopic(real, num_partitions=4, replication_factor=1,
                  config={"retention.ms": "3600000", "segment.bytes": "1048576",
                          "message.timestamp.type": "LogAppendTime"})],
        operation_timeout=10,
    )
    fs[real].result(timeout=15)
    md = admin.list_topics(timeout=10)
    assert sorted(md.topics[real].partitions) == [0, 1, 2, 3]
    assert md.topics[real].error is None
    assert list(md.brokers) == [1]
    assert md.brokers[1].host == "127.0.0.1" and md.brokers[1].port == broker.port
    for p in md.topics[real].partitions.values():
        assert p.leader == 1 and p.replicas == [1] and p.isrs == [1]

    cfg = describe(admin, real)
    assert cfg["retention.ms"].value == "3600000"
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert not cfg["retention.ms"].is_default
    assert cfg["segment.bytes"].value == "1048576"
    assert cfg["message.timestamp.type"].value == "LogAppendTime"
    assert cfg["retention.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert cfg["retention.bytes"].value == "-1"

    # LogAppendTime: the broker's clock replaces the producer's timestamp.
    import time

    before = int(time.time() * 1000)
    [rep] = ck_produce(broker, real, [{"value": b"x", "timestamp": TS0, "partition": 2}])
    [got] = ck_consume(broker, real, 2, 0)
    assert got.timestamp >= before - 1000 and got.timestamp != TS0


def test_admin_alter_and_incremental_alter_configs(broker, topic_name):
    admin = ck_admin(broker)
    topic = ck_create_topic(broker, topic_name(), partitions=1,
                            config={"retention.ms": "86400000"}, admin=admin)

    # AlterConfigs replaces the whole set of overrides (Kafka's semantics).
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.bytes": "1048576"})
    admin.alter_configs([res])[res].result(timeout=15)
    cfg = describe(admin, topic)
    assert cfg["retention.bytes"].value == "1048576"
    assert cfg["retention.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert cfg["retention.ms"].value == str(7 * 24 * 3600 * 1000)

    # validate_only changes nothing.
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.bytes": "5"})
    admin.alter_configs([res], validate_only=True)[res].result(timeout=15)
    assert describe(admin, topic)["retention.bytes"].value == "1048576"

    # IncrementalAlterConfigs: SET one key, DELETE another, leave the rest.
    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "5000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("max.message.bytes", "2000000",
                        incremental_operation=AlterConfigOpType.SET),
        ],
    )
    admin.incremental_alter_configs([res])[res].result(timeout=15)
    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.bytes", None, incremental_operation=AlterConfigOpType.DELETE)
        ],
    )
    admin.incremental_alter_configs([res])[res].result(timeout=15)
    cfg = describe(admin, topic)
    assert cfg["retention.ms"].value == "5000"
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["max.message.bytes"].value == "2000000"
    assert cfg["retention.bytes"].value == "-1"
    assert cfg["retention.bytes"].source == ConfigSource.DEFAULT_CONFIG.value

    # The new max.message.bytes is in force: a 1.5 MB record now fits, and a consumer with the
    # default max.partition.fetch.bytes (1 MiB) still gets it whole (KIP-74).
    big = os.urandom(1_500_000)
    [rep] = ck_produce(broker, topic, [{"value": big, "partition": 0}],
                       **{"message.max.bytes": 5_000_000})
    [got] = ck_consume(broker, topic, 0, rep.offset, count=1)
    assert got.value == big

    # Unknown keys and bad values are refused with INVALID_CONFIG, naming the key.
    for entries in (
        [ConfigEntry("no.such.key", "1", incremental_operation=AlterConfigOpType.SET)],
        [ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)],
    ):
        res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
        with pytest.raises(KafkaException) as e:
            admin.incremental_alter_configs([res])[res].result(timeout=15)
        assert e.value.args[0].code() == INVALID_CONFIG
        assert entries[0].name in e.value.args[0].str()
    assert describe(admin, topic)["retention.ms"].value == "5000"


def test_admin_describe_broker_configs_and_cluster(broker):
    admin = ck_admin(broker)
    res = ConfigResource(ResourceType.BROKER, "1")
    cfg = admin.describe_configs([res])[res].result(timeout=15)
    assert cfg["num.partitions"].value == "3"
    assert cfg["broker.id"].value == "1"
    assert cfg["num.partitions"].is_read_only
    cluster = admin.describe_cluster(request_timeout=15).result(timeout=15)
    assert [n.id for n in cluster.nodes] == [1]
    assert cluster.nodes[0].host == "127.0.0.1" and cluster.nodes[0].port == broker.port
    assert cluster.controller.id == 1
    assert cluster.cluster_id and cluster.cluster_id == admin.list_topics(timeout=10).cluster_id


def test_admin_create_partitions(broker, topic_name):
    admin = ck_admin(broker)
    topic = ck_create_topic(broker, topic_name(), partitions=2, admin=admin)
    ck_produce(broker, topic, [{"value": b"p1", "partition": 1}])

    fs = admin.create_partitions([NewPartitions(topic, 5)], validate_only=True)
    fs[topic].result(timeout=15)
    assert len(admin.list_topics(timeout=10).topics[topic].partitions) == 2

    fs = admin.create_partitions([NewPartitions(topic, 5)])
    fs[topic].result(timeout=15)
    assert sorted(admin.list_topics(topic, timeout=10).topics[topic].partitions) == [0, 1, 2, 3, 4]

    # New partitions take records; old ones keep theirs.
    [rep] = ck_produce(broker, topic, [{"value": b"p4", "partition": 4}])
    assert (rep.partition, rep.offset) == (4, 0)
    assert [g.value for g in ck_consume(broker, topic, 4, 0)] == [b"p4"]
    assert [g.value for g in ck_consume(broker, topic, 1, 0)] == [b"p1"]

    # Shrinking (or keeping the count) is refused.
    with pytest.raises(KafkaException) as e:
        admin.create_partitions([NewPartitions(topic, 3)])[topic].result(timeout=15)
    assert e.value.args[0].code() == INVALID_PARTITIONS


@pytest.mark.broker_args("--segment-bytes", "4096")
def test_admin_delete_records_moves_log_start(broker, topic_name):
    admin = ck_admin(broker)
    topic = ck_create_topic(broker, topic_name(), partitions=1, admin=admin)
    records = [{"key": f"k{i}".encode(), "value": b"x" * 100, "timestamp": TS0 + i,
                "partition": 0} for i in range(200)]
    ck_produce(broker, topic, records, flush_every=20)
    before = {b.segment for b in stored_batches(broker.data_dir, topic, 0)}

    tp = TopicPartition(topic, 0, 150)
    res = admin.delete_records([tp], request_timeout=15)[tp].result(timeout=15)
    assert res.low_watermark == 150
    assert ck_watermarks(broker, topic, 0) == (150, 200)
    after = {b.segment for b in stored_batches(broker.data_dir, topic, 0)}
    assert len(after) < len(before), "whole segments below the log start are removed"

    # Below the low watermark is out of range...
    c = ck_consumer(broker, **{"auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, 0, 10)])
        err = None
        for _ in range(40):
            m = c.poll(0.5)
            if m is not None:
                assert m.error() is not None, f"got a record at offset {m.offset()}"
                if m.error().code() != KafkaError._PARTITION_EOF:
                    err = m.error()
                    break
        assert err is not None and err.code() == KafkaError._AUTO_OFFSET_RESET
        assert "out of range" in err.str().lower()
    finally:
        c.close()
    # ...and an earliest reset starts at the new log start, with the original contents.
    got = ck_consume(broker, topic, 0, 10, **{"auto.offset.reset": "earliest"})
    assert [g.offset for g in got] == list(range(150, 200))
    assert [g.key for g in got] == [r["key"] for r in records[150:]]
    # Time lookups never answer a deleted offset.
    c = ck_consumer(broker)
    try:
        [t] = c.offsets_for_times([TopicPartition(topic, 0, TS0)], timeout=15)
        assert t.offset == 150
    finally:
        c.close()

    # Deleting past the high watermark is refused; -1 means "up to the high watermark".
    tp = TopicPartition(topic, 0, 201)
    with pytest.raises(KafkaException) as e:
        admin.delete_records([tp], request_timeout=15)[tp].result(timeout=15)
    assert e.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE
    tp = TopicPartition(topic, 0, -1)
    res = admin.delete_records([tp], request_timeout=15)[tp].result(timeout=15)
    assert res.low_watermark == 200
    assert ck_watermarks(broker, topic, 0) == (200, 200)


def test_admin_list_and_delete_topics(broker, topic_name):
    admin = ck_admin(broker)
    a = ck_create_topic(broker, topic_name("a"), partitions=1, admin=admin)
    b = ck_create_topic(broker, topic_name("b"), partitions=2, admin=admin)
    ck_produce(broker, a, [{"value": b"x", "partition": 0}])
    md = admin.list_topics(timeout=10)
    assert {a, b} <= set(md.topics)
    assert (broker.data_dir / f"{a}-0").is_dir()

    admin.delete_topics([a], operation_timeout=10)[a].result(timeout=15)
    md = admin.list_topics(timeout=10)
    assert a not in md.topics and b in md.topics
    assert not (broker.data_dir / f"{a}-0").exists(), "deleted topic's files are removed"

    with pytest.raises(KafkaException) as e:
        admin.delete_topics([a], operation_timeout=10)[a].result(timeout=15)
    assert e.value.args[0].code() == UNKNOWN_TOPIC_OR_PARTITION

    # A topic of the same name can be created again, empty.
    ck_create_topic(broker, a, partitions=3, admin=admin)
    assert ck_watermarks(broker, a, 0) == (0, 0)
    assert len(admin.list_topics(timeout=10).topics[a].partitions) == 3


def test_admin_error_cases(broker, topic_name):
    admin = ck_admin(broker)
    topic = ck_create_topic(broker, topic_name(), partitions=1, admin=admin)

    def create_error(new_topic):
        fs = admin.create_topics([new_topic], operation_timeout=10)
        with pytest.raises(KafkaException) as e:
            fs[new_topic.topic].result(timeout=15)
        return e.value.args[0]

    err = create_error(NewTopic(topic, num_partitions=1, replication_factor=1))
    assert err.code() == KafkaError.TOPIC_ALREADY_EXISTS == TOPIC_ALREADY_EXISTS

    err = create_error(NewTopic("bad name!", num_partitions=1, replication_factor=1))
    assert err.code() == KafkaError.TOPIC_EXCEPTION == INVALID_TOPIC_EXCEPTION
    err = create_error(NewTopic("x" * 250, num_partitions=1, replication_factor=1))
    assert err.code() == INVALID_TOPIC_EXCEPTION

    err = create_error(NewTopic(topic_name("cfg"), num_partitions=1, replication_factor=1,
                                config={"no.such.config": "1"}))
    assert err.code() == KafkaError.INVALID_CONFIG == INVALID_CONFIG
    err = create_error(NewTopic(topic_name("cfg2"), num_partitions=1, replication_factor=1,
                                config={"cleanup.policy": "compact"}))
    assert err.code() == INVALID_CONFIG

    err = create_error(NewTopic(topic_name("rf"), num_partitions=1, replication_factor=3))
    assert err.code() == KafkaError.INVALID_REPLICATION_FACTOR == INVALID_REPLICATION_FACTOR
    err = create_error(NewTopic(topic_name("parts"), num_partitions=0, replication_factor=1))
    assert err.code() == INVALID_PARTITIONS

    res = ConfigResource(ResourceType.TOPIC, topic_name("missing"))
    with pytest.raises(KafkaException) as e:
        admin.describe_configs([res])[res].result(timeout=15)
    assert e.value.args[0].code() == UNKNOWN_TOPIC_OR_PARTITION

    # None of the refused topics exist.
    names = set(admin.list_topics(timeout=10).topics)
    assert names == {topic}


# --- more of what users rely on -------------------------------------------------------------


def test_auto_create_on_produce_uses_num_partitions(broker, topic_name):
    topic = topic_name()
    [rep] = ck_produce(broker, topic, [{"key": b"k", "value": b"auto"}])
    md = ck_admin(broker).list_topics(timeout=10)
    assert len(md.topics[topic].partitions) == 3  # --num-partitions 3
    assert [g.value for g in ck_consume(broker, topic, rep.partition, 0)] == [b"auto"]


def test_acks_0_and_acks_1_records_are_stored(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=1)
    ck_produce(broker, topic, [{"value": f"a0-{i}".encode(), "partition": 0} for i in range(100)],
               acks=0)
    reports = ck_produce(broker, topic, [{"value": b"a1", "partition": 0}], acks=1)
    # acks=0 gets no response, so the next (acks=1) answer proves the order was kept.
    assert reports[0].offset == 100
    got = ck_consume(broker, topic, 0, 0)
    assert [g.value for g in got] == [f"a0-{i}".encode() for i in range(100)] + [b"a1"]


def test_log_append_time_topic(broker, topic_name):
    import time

    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

    topic = ck_create_topic(broker, topic_name(), partitions=1,
                            config={"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    ck_produce(broker, topic, [{"value": f"{i}".encode(), "timestamp": TS0, "partition": 0}
                               for i in range(50)], flush_every=10)
    after = int(time.time() * 1000)
    c = ck_consumer(broker)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        msgs = []
        while len(msgs) < 50:
            msgs += [m for m in c.consume(50, timeout=1) if not m.error()]
        kinds = {m.timestamp()[0] for m in msgs}
        stamps = [m.timestamp()[1] for m in msgs]
        assert kinds == {TIMESTAMP_LOG_APPEND_TIME}
        assert all(before - 1000 <= s <= after + 1000 for s in stamps)
        assert stamps == sorted(stamps)
        # Time lookups use the broker's timestamps, not the producer's.
        [tp] = c.offsets_for_times([TopicPartition(topic, 0, TS0)], timeout=15)
        assert tp.offset == 0
        for i in (0, 10, 25, 49):
            [tp] = c.offsets_for_times([TopicPartition(topic, 0, stamps[i])], timeout=15)
            assert tp.offset == stamps.index(stamps[i]), i
        [tp] = c.offsets_for_times([TopicPartition(topic, 0, stamps[-1] + 1)], timeout=15)
        assert tp.offset == -1
    finally:
        c.close()


@pytest.mark.broker_args("--retention-check-interval-ms", "100")
def test_retention_by_time_deletes_old_segments(broker, topic_name):
    """retention.ms removes whole segments whose newest record is older than the limit; the
    log start moves to the first kept segment, and it stays there across a restart."""
    import time

    topic = ck_create_topic(broker, topic_name(), partitions=1,
                            config={"retention.ms": "1800000", "segment.bytes": "4096"})
    now = int(time.time() * 1000)
    old = [{"value": b"o" * 200, "timestamp": now - 3_600_000 + i, "partition": 0}
           for i in range(100)]
    new = [{"value": f"new-{i}".encode(), "timestamp": now + i, "partition": 0}
           for i in range(50)]
    ck_produce(broker, topic, old + new, flush_every=10)

    low, high = wait_until(lambda: (w := ck_watermarks(broker, topic, 0))[0] > 0 and w,
                           timeout=15, what="retention to move the log start")
    assert high == 150
    first_segment = min(b.base_offset for b in stored_batches(broker.data_dir, topic, 0))
    assert low == first_segment and 0 < low <= 100
    got = ck_consume(broker, topic, 0, low)
    assert [g.offset for g in got] == list(range(low, 150))
    assert [g.value for g in got][-50:] == [r["value"] for r in new]
    assert broker.log_lines("retention deleted segments")

    broker.restart()
    assert ck_watermarks(broker, topic, 0) == (low, 150)


def test_consumers_do_not_auto_create_topics(broker, topic_name):
    """Consumers ask for metadata with allow_auto_topic_creation=false: assigning a missing
    topic must not create it (producers, which allow it, do: see above)."""
    topic = topic_name("missing")
    c = ck_consumer(broker, **{"topic.metadata.refresh.interval.ms": 200})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        for _ in range(8):
            m = c.poll(0.1)
            assert m is None or m.error() is not None
    finally:
        c.close()
    assert topic not in ck_admin(broker).list_topics(timeout=10).topics
    assert not (broker.data_dir / f"{topic}-0").exists()


def test_small_fetch_limits_over_many_partitions(broker, topic_name):
    """Fetch responses bounded by fetch.max.bytes / max.partition.fetch.bytes still deliver every
    record of every partition, in order, with nothing skipped or repeated."""
    topic = ck_create_topic(broker, topic_name(), partitions=8)
    records = [{"key": f"{i}".encode(), "value": os.urandom(500), "partition": i % 8}
               for i in range(2000)]
    reports = ck_produce(broker, topic, records, flush_every=400, **{"linger.ms": 5})
    stored = ck_consume_partitions(
        broker, topic, range(8),
        **{"fetch.max.bytes": 20_000, "max.partition.fetch.bytes": 6_000,
           "message.max.bytes": 10_000, "queued.max.messages.kbytes": 64},
    )
    for part in range(8):
        expect = [(r.offset, r.key, r.value) for r in reports if r.partition == part]
        assert [(g.offset, g.key, g.value) for g in stored[part]] == expect


@pytest.mark.broker_args("--segment-bytes", "4096")
def test_records_larger_than_a_segment(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=1)
    records = [{"value": os.urandom(10_000 + i), "partition": 0} for i in range(20)]
    ck_produce(broker, topic, records, flush_every=1)
    assert len({b.segment for b in stored_batches(broker.data_dir, topic, 0)}) == 20
    got = ck_consume(broker, topic, 0, 0)
    assert [g.value for g in got] == [r["value"] for r in records]
    got = ck_consume(broker, topic, 0, 13)
    assert [g.offset for g in got] == list(range(13, 20))
