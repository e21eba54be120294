"""kafka-python against trib: the producer with its defaults (idempotent, acks=all in 3.x),
every codec, keys/headers/timestamps, KafkaConsumer without a group (assign + seek), offset
lookups, and KafkaAdminClient."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as Errors
from kafka.admin import ConfigResource
from kafka.partitioner.default import murmur2

from helpers import CODEC_IDS, TS0, ck_consume, ck_produce, stored_batches


def producer(broker, **conf) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000, **conf)


def consumer(broker, **conf) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=15000,
        fetch_max_wait_ms=100,
        **conf,
    )


def admin(broker) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)


def create(adm, name, partitions=1, configs=None):
    adm.create_topics({name: {"num_partitions": partitions, "replication_factor": 1,
                              "configs": configs or {}}})
    return name


def read(c: KafkaConsumer, tp: TopicPartition, offset: int, count: int, timeout=20.0):
    """assign + seek, then poll until `count` records of `tp` arrived."""
    c.assign([tp])
    c.seek(tp, offset)
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        assert time.monotonic() < deadline, f"read {len(out)} of {count} records of {tp}"
        for _tp, recs in c.poll(timeout_ms=200, max_records=1000).items():
            out.extend(recs)
    return out


def records(n, partitions=1):
    out = []
    for i in range(n):
        r = {
            "partition": i % partitions,
            "key": None if i % 7 == 3 else f"key-{i % 11}".encode(),
            # kafka-python refuses a record with neither key nor value.
            "value": None if i % 9 == 4 and i % 7 != 3 else f"value-{i}-".encode() * (1 + i % 30),
            "headers": [("seq", str(i).encode()), ("empty", b"")] if i % 2 else [],
            "timestamp_ms": TS0 + i * 5,
        }
        out.append(r)
    return out


def send_all(p: KafkaProducer, topic, recs):
    futs = [p.send(topic, **r) for r in recs]
    p.flush(timeout=20)
    return [f.get(timeout=20) for f in futs]


def check_read_back(broker, topic, recs, metas, partitions):
    c = consumer(broker)
    try:
        for part in range(partitions):
            mine = [(r, m) for r, m in zip(recs, metas, strict=True) if m.partition == part]
            assert [m.offset for _, m in mine] == list(range(len(mine)))
            got = read(c, TopicPartition(topic, part), 0, len(mine))
            assert len(got) == len(mine)
            for g, (r, m) in zip(got, mine, strict=True):
                assert (g.offset, g.key, g.value) == (m.offset, r["key"], r["value"])
                assert list(g.headers) == r["headers"]
                assert g.timestamp == r["timestamp_ms"] and g.timestamp_type == 0
    finally:
        c.close()


def test_default_producer_is_idempotent_and_round_trips(broker, topic_name):
    adm = admin(broker)
    topic = create(adm, topic_name(), partitions=3)
    p = producer(broker)  # kafka-python 3 defaults: enable_idempotence=True, acks=all
    try:
        assert p.config["enable_idempotence"] is True and p.config["acks"] == -1
        recs = records(600, partitions=3)
        metas = send_all(p, topic, recs)
    finally:
        p.close()
    check_read_back(broker, topic, recs, metas, 3)
    # The batches carry the producer id the broker handed out (InitProducerId) and sequences.
    for part in range(3):
        batches = stored_batches(broker.data_dir, topic, part)
        assert batches and all(b.producer_id >= 0 for b in batches)
        assert len({b.producer_id for b in batches}) == 1
        seqs = [b.base_sequence for b in batches]
        assert seqs[0] == 0 and seqs == sorted(seqs)
    adm.close()


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_every_codec(broker, topic_name, codec):
    adm = admin(broker)
    topic = create(adm, topic_name(), partitions=1)
    p = producer(broker, compression_type=codec, linger_ms=20, batch_size=16384)
    try:
        recs = records(300)
        metas = send_all(p, topic, recs)
    finally:
        p.close()
    check_read_back(broker, topic, recs, metas, 1)
    batches = stored_batches(broker.data_dir, topic, 0)
    assert {b.codec for b in batches} == {CODEC_IDS[codec or "none"]}
    assert sum(b.record_count for b in batches) == 300
    # Another client reads kafka-python's compressed batches identically.
    got = ck_consume(broker, topic, 0, 0)
    assert [(g.key, g.value) for g in got] == [(r["key"], r["value"]) for r in recs]
    adm.close()


def test_keyed_records_use_the_java_partitioner(broker, topic_name):
    adm = admin(broker)
    topic = create(adm, topic_name(), partitions=32)
    p = producer(broker)
    try:
        keys = [f"account-{i}".encode() for i in range(100)]
        metas = send_all(p, topic, [{"key": k, "value": b"kp"} for k in keys])
    finally:
        p.close()
    for k, m in zip(keys, metas, strict=True):
        assert m.partition == (murmur2(k) & 0x7FFFFFFF) % 32, k
    # librdkafka with murmur2_random puts the same keys on the same partitions.
    reports = ck_produce(broker, topic, [{"key": k, "value": b"ck"} for k in keys],
                         partitioner="murmur2_random")
    assert [r.partition for r in reports] == [m.partition for m in metas]
    adm.close()


def test_consumer_offset_lookups_and_seek(broker, topic_name):
    adm = admin(broker)
    topic = create(adm, topic_name(), partitions=2)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    p = producer(broker, linger_ms=5)
    try:
        stamps = [TS0 + (i // 3) * 100 for i in range(300)]  # runs of equal timestamps
        metas = send_all(p, topic, [{"partition": 0, "value": f"v{i}".encode(),
                                     "timestamp_ms": t} for i, t in enumerate(stamps)])
        send_all(p, topic, [{"partition": 1, "value": b"x", "timestamp_ms": TS0}] * 5)
    finally:
        p.close()
    assert [m.offset for m in metas] == list(range(300))

    c = consumer(broker)
    try:
        assert c.beginning_offsets([tp0, tp1]) == {tp0: 0, tp1: 0}
        assert c.end_offsets([tp0, tp1]) == {tp0: 300, tp1: 5}
        for t in [TS0 - 1, TS0, TS0 + 1, TS0 + 150, TS0 + 5000, stamps[-1], stamps[-1] + 1]:
            expect = next((i for i, s in enumerate(stamps) if s >= t), None)
            found = c.offsets_for_times({tp0: t})[tp0]
            if expect is None:
                assert found is None, t
            else:
                assert (found.offset, found.timestamp) == (expect, stamps[expect]), t

        # seek into the middle, to the beginning, to the end.
        got = read(c, tp0, 250, 50)
        assert [g.offset for g in got] == list(range(250, 300))
        assert [g.value for g in got] == [f"v{i}".encode() for i in range(250, 300)]
        c.seek_to_beginning(tp0)
        assert c.position(tp0) == 0
        c.seek_to_end(tp0)
        assert c.position(tp0) == 300
        assert c.poll(timeout_ms=300) == {}
    finally:
        c.close()
    adm.close()


def test_consumer_at_the_end_gets_new_records(broker, topic_name):
    adm = admin(broker)
    topic = create(adm, topic_name(), partitions=1)
    tp = TopicPartition(topic, 0)
    c = consumer(broker)
    p = producer(broker)
    try:
        c.assign([tp])
        c.seek_to_end(tp)
        assert c.position(tp) == 0
        assert c.poll(timeout_ms=300) == {}
        send_all(p, topic, [{"partition": 0, "value": b"late"}])
        started = time.monotonic()
        got = []
        while not got and time.monotonic() - started < 10:
            for recs in c.poll(timeout_ms=200).values():
                got.extend(recs)
        assert [(g.offset, g.value) for g in got] == [(0, b"late")]
        assert time.monotonic() - started < 5
    finally:
        p.close()
        c.close()
        adm.close()


def test_admin_client(broker, topic_name):
    adm = admin(broker)
    try:
        topic, dry = topic_name("t"), topic_name("dry")
        adm.create_topics({dry: {"num_partitions": 2, "replication_factor": 1}},
                          validate_only=True)
        res = adm.create_topics({topic: {"num_partitions": 2, "replication_factor": 1,
                                         "configs": {"retention.ms": "123456"}}})
        [t] = res["topics"]
        assert (t["name"], t["error_code"], t["num_partitions"]) == (topic, 0, 2)
        assert t["configs"]["retention.ms"]["value"] == "123456"
        assert t["configs"]["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        names = adm.list_topics()
        assert topic in names and dry not in names

        [desc] = adm.describe_topics([topic])
        assert desc["name"] == topic
        assert sorted(p["partition_index"] for p in desc["partitions"]) == [0, 1]
        assert all(p["leader_id"] == 1 for p in desc["partitions"])

        cfg = adm.describe_configs([ConfigResource("TOPIC", topic)])["topic"][topic]
        assert set(cfg) == {"retention.ms"}  # the default filter: modified keys only
        assert cfg["retention.ms"]["value"] == "123456"
        assert cfg["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        everything = adm.describe_configs([ConfigResource("TOPIC", topic)],
                                          config_filter="all")["topic"][topic]
        assert everything["segment.bytes"]["value"] == str(1 << 30)
        assert everything["segment.bytes"]["config_source"] == "DEFAULT_CONFIG"

        # Incremental (the default on this broker) keeps other overrides...
        res = adm.alter_configs([ConfigResource("TOPIC", topic, {"retention.bytes": "999999"})])
        assert res == {"topic": {topic: "OK"}}
        cfg = adm.describe_configs([ConfigResource("TOPIC", topic)])["topic"][topic]
        assert {k: v["value"] for k, v in cfg.items()} == {"retention.ms": "123456",
                                                           "retention.bytes": "999999"}
        # ...and so does the legacy AlterConfigs, which kafka-python fills in itself.
        res = adm.alter_configs([ConfigResource("TOPIC", topic, {"segment.ms": "600000"})],
                                incremental=False)
        assert res == {"topic": {topic: "OK"}}
        cfg = adm.describe_configs([ConfigResource("TOPIC", topic)])["topic"][topic]
        assert {k: v["value"] for k, v in cfg.items()} == {
            "retention.ms": "123456", "retention.bytes": "999999", "segment.ms": "600000"}
        adm.reset_configs([ConfigResource("TOPIC", topic, ["retention.bytes"])])
        cfg = adm.describe_configs([ConfigResource("TOPIC", topic)])["topic"][topic]
        assert set(cfg) == {"retention.ms", "segment.ms"}

        adm.create_partitions({topic: 4})
        [desc] = adm.describe_topics([topic])
        assert len(desc["partitions"]) == 4

        p = producer(broker)
        try:
            send_all(p, topic, [{"partition": 3, "value": f"r{i}".encode()} for i in range(10)])
        finally:
            p.close()
        tp = TopicPartition(topic, 3)
        res = adm.delete_records({tp: 6})
        assert res[tp]["low_watermark"] == 6 and res[tp]["error_code"] == 0
        c = consumer(broker)
        try:
            assert c.beginning_offsets([tp]) == {tp: 6}
            got = read(c, tp, 6, 4)
            assert [g.value for g in got] == [b"r6", b"r7", b"r8", b"r9"]
        finally:
            c.close()

        # Error cases come back as kafka-python's typed errors.
        with pytest.raises(Errors.TopicAlreadyExistsError):
            create(adm, topic)
        with pytest.raises(Errors.InvalidTopicError):
            create(adm, "no spaces allowed")
        with pytest.raises(Errors.InvalidConfigurationError):
            create(adm, topic_name("cfg"), configs={"retention.forever": "yes"})
        with pytest.raises(Errors.InvalidPartitionsError):
            adm.create_partitions({topic: 2})
        with pytest.raises(Errors.OffsetOutOfRangeError):
            adm.delete_records({tp: 11})

        res = adm.delete_topics([topic])
        assert [(t["name"], t["error_code"]) for t in res["topics"]] == [(topic, 0)]
        assert topic not in adm.list_topics()
        with pytest.raises(Errors.UnknownTopicOrPartitionError):
            adm.delete_topics([topic])

        cluster = adm.describe_cluster()
        assert cluster["controller_id"] == 1
        assert [(b["broker_id"], b["host"], b["port"]) for b in cluster["brokers"]] == [
            (1, "127.0.0.1", broker.port)]
    finally:
        adm.close()


def test_concurrent_producers_from_different_clients(broker, topic_name):
    """kafka-python and librdkafka producers appending to the same partition at once: every
    record gets its own offset, the log is dense, and each producer's order is kept."""
    import threading

    adm = admin(broker)
    topic = create(adm, topic_name(), partitions=1)
    adm.close()
    results = {}

    def kp():
        p = producer(broker, linger_ms=1)
        try:
            results["kp"] = send_all(p, topic, [{"partition": 0, "value": f"kp-{i}".encode()}
                                                for i in range(1500)])
        finally:
            p.close()

    def ck():
        results["ck"] = ck_produce(broker, topic, [{"partition": 0, "value": f"ck-{i}".encode()}
                                                   for i in range(1500)], flush_every=100)

    threads = [threading.Thread(target=kp), threading.Thread(target=ck)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    offsets = [m.offset for m in results["kp"]] + [r.offset for r in results["ck"]]
    assert sorted(offsets) == list(range(3000))
    assert [m.offset for m in results["kp"]] == sorted(m.offset for m in results["kp"])
    assert [r.offset for r in results["ck"]] == sorted(r.offset for r in results["ck"])
    got = ck_consume(broker, topic, 0, 0)
    by_offset = {m.offset: f"kp-{i}".encode() for i, m in enumerate(results["kp"])}
    by_offset |= {r.offset: r.value for r in results["ck"]}
    assert [g.value for g in got] == [by_offset[o] for o in range(3000)]
