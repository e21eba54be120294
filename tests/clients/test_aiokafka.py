"""aiokafka (which opens with ApiVersions v0) against trib: acks=all produce with each codec and
with idempotence, a consumer without a group (assign + seek), and offset lookups."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from helpers import CODEC_IDS, TS0, ck_consume, ck_create_topic, stored_batches


async def read(c: AIOKafkaConsumer, tp: TopicPartition, offset: int, count: int, timeout=20.0):
    c.assign([tp])
    c.seek(tp, offset)
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        assert time.monotonic() < deadline, f"read {len(out)} of {count} records of {tp}"
        for recs in (await c.getmany(tp, timeout_ms=200, max_records=1000)).values():
            out.extend(recs)
    return out


def consumer(broker) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                            enable_auto_commit=False, fetch_max_wait_ms=100,
                            request_timeout_ms=15000)


def records(n):
    return [
        {
            "key": None if i % 6 == 5 else f"k{i % 17}".encode(),
            # aiokafka refuses a record with neither key nor value.
            "value": (None if i % 10 == 7 and i % 6 != 5
                      else f"aiokafka record {i} ".encode() * (1 + i % 25)),
            "headers": [("n", str(i).encode())] if i % 3 == 0 else None,
            "timestamp_ms": TS0 + i * 11,
        }
        for i in range(n)
    ]


async def produce(broker, topic, recs, **conf):
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=10,
                         request_timeout_ms=15000, **conf)
    await p.start()
    try:
        futs = [await p.send(topic, partition=0, **r) for r in recs]
        return [await f for f in futs]
    finally:
        await p.stop()


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_acks_all_produce_and_consume(broker, topic_name, codec):
    topic = ck_create_topic(broker, topic_name(), partitions=1)
    recs = records(250)

    async def run():
        metas = await produce(broker, topic, recs, compression_type=codec)
        assert [m.offset for m in metas] == list(range(len(recs)))
        # CreateTime topic: the broker answers log_append_time -1, so aiokafka reports
        # CREATE_TIME. (aiokafka then copies the first record's timestamp into the metadata of
        # every later record of the batch, a client quirk, so only consumed timestamps are
        # compared record by record.)
        assert {m.timestamp_type for m in metas} == {0}
        assert metas[0].timestamp == recs[0]["timestamp_ms"]
        c = consumer(broker)
        await c.start()
        try:
            got = await read(c, TopicPartition(topic, 0), 0, len(recs))
        finally:
            await c.stop()
        return got

    got = asyncio.run(run())
    assert len(got) == len(recs)
    for i, (g, r) in enumerate(zip(got, recs, strict=True)):
        assert (g.offset, g.key, g.value) == (i, r["key"], r["value"])
        assert list(g.headers) == (r["headers"] or [])
        assert g.timestamp == r["timestamp_ms"] and g.timestamp_type == 0
    assert {b.codec for b in stored_batches(broker.data_dir, topic, 0)} == {
        CODEC_IDS[codec or "none"]
    }
    # librdkafka reads aiokafka's batches identically.
    assert [(g.key, g.value) for g in ck_consume(broker, topic, 0, 0)] == [
        (r["key"], r["value"]) for r in recs
    ]


def test_idempotent_producer(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=1)
    recs = records(300)
    metas = asyncio.run(produce(broker, topic, recs, enable_idempotence=True,
                                compression_type="gzip"))
    assert [m.offset for m in metas] == list(range(300))
    batches = stored_batches(broker.data_dir, topic, 0)
    assert all(b.producer_id >= 0 for b in batches)
    assert [b.base_sequence for b in batches] == [b.base_offset for b in batches]


def test_offset_lookups(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=2)
    recs = records(120)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)

    async def run():
        await produce(broker, topic, recs)
        c = consumer(broker)
        await c.start()
        try:
            assert await c.beginning_offsets([tp0, tp1]) == {tp0: 0, tp1: 0}
            assert await c.end_offsets([tp0, tp1]) == {tp0: 120, tp1: 0}
            for t in [TS0 - 5, TS0, TS0 + 1, TS0 + 11 * 60, TS0 + 11 * 60 + 3, TS0 + 11 * 119,
                      TS0 + 11 * 119 + 1]:
                expect = next((i for i, r in enumerate(recs) if r["timestamp_ms"] >= t), None)
                found = (await c.offsets_for_times({tp0: t}))[tp0]
                if expect is None:
                    assert found is None, t
                else:
                    assert (found.offset, found.timestamp) == (expect,
                                                               recs[expect]["timestamp_ms"]), t
            # An empty partition has no answer.
            assert (await c.offsets_for_times({tp1: TS0}))[tp1] is None
            got = await read(c, tp0, 100, 20)
            assert [g.offset for g in got] == list(range(100, 120))
            await c.seek_to_end(tp0)
            assert await c.position(tp0) == 120
        finally:
            await c.stop()

    asyncio.run(run())
