"""kcat (Debian's, on librdkafka 2.0.2) against trib: keyed produce with headers, every -z codec,
the -f output format, -L metadata (text and JSON), -Q time lookups and -o s@timestamp."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from helpers import (
    CODEC_IDS,
    FIND_COORDINATOR,
    TS0,
    api_versions,
    ck_consume,
    ck_create_topic,
    ck_produce,
    stored_batches,
)

KCAT = shutil.which("kcat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed (scripts/test-env.sh)")


def kcat(broker, *args, stdin: str | bytes | None = None, timeout=30, stderr_to=None) -> str:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [KCAT, "-b", broker.bootstrap, "-X", "broker.address.family=v4", *args],
        input=data,
        capture_output=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"kcat {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}"
    )
    if stderr_to is not None:
        stderr_to.append(proc.stderr.decode(errors="replace"))
    return proc.stdout.decode()


def test_keys_headers_and_output_format(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=1)
    lines = ["alpha:first value", "beta:second:with:colons", "alpha:third", "gamma:"]
    kcat(broker, "-P", "-t", topic, "-p", "0", "-K:", "-H", "h1=v1", "-H", "trace=abc=def",
         stdin="\n".join(lines) + "\n")
    # -Z: empty key and empty value are sent as NULL (a tombstone here).
    kcat(broker, "-P", "-t", topic, "-p", "0", "-K:", "-Z", stdin="delta:\n:orphan\n")

    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q",
               "-f", "%t|%p|%o|%k|%s|%h|%K|%S\\n")
    assert out.splitlines() == [
        f"{topic}|0|0|alpha|first value|h1=v1,trace=abc=def|5|11",
        f"{topic}|0|1|beta|second:with:colons|h1=v1,trace=abc=def|4|18",
        f"{topic}|0|2|alpha|third|h1=v1,trace=abc=def|5|5",
        f"{topic}|0|3|gamma||h1=v1,trace=abc=def|5|0",
        f"{topic}|0|4|delta|||5|-1",
        f"{topic}|0|5||orphan||-1|6",
    ]

    # What kcat wrote is what another client reads: bytes, nulls and headers.
    got = ck_consume(broker, topic, 0, 0)
    assert [(g.key, g.value) for g in got] == [
        (b"alpha", b"first value"),
        (b"beta", b"second:with:colons"),
        (b"alpha", b"third"),
        (b"gamma", b""),
        (b"delta", None),
        (None, b"orphan"),
    ]
    assert got[0].headers == (("h1", b"v1"), ("trace", b"abc=def"))
    assert got[4].headers == ()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_codec(broker, topic_name, codec):
    topic = ck_create_topic(broker, topic_name(), partitions=1)
    lines = [f"key{i % 5}:{codec} line {i} " + "padding " * (i % 40) for i in range(500)]
    log: list[str] = []
    kcat(broker, "-P", "-t", topic, "-p", "0", "-K:", "-z", codec, "-d", "msg",
         "-X", "linger.ms=50", stdin="\n".join(lines) + "\n", stderr_to=log)
    refused = [line for line in log[0].splitlines() if "not compressing" in line]
    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q",
               "-f", "%k:%s\\n")
    assert out.splitlines() == lines
    batches = stored_batches(broker.data_dir, topic, 0)
    assert sum(b.record_count for b in batches) == 500 and len(batches) < 500
    # librdkafka < 2.11.1 compresses with gzip, snappy or lz4 only when ApiVersions lists
    # Produce v0 (else it logs "Broker does not support compression type gzip: not compressing
    # batch" and sends the batch uncompressed): see test_apiversions_lists_produce_v0.
    assert {b.codec for b in batches} == {CODEC_IDS[codec]}, (
        f"kcat -z {codec} batches were stored with codecs {sorted({b.codec for b in batches})}; "
        f"librdkafka said: {refused[:1]}"
    )
    assert not refused


def test_apiversions_lists_produce_v0(broker):
    """Kafka 4.0 refuses Produce v0-v2 requests (KIP-896) but still lists Produce from v0 in
    ApiVersions (KAFKA-18659), because librdkafka before 2.11.1 (Debian's kcat is on 2.0.2)
    only compresses with gzip, snappy or lz4 when the broker's Produce range includes v0.
    It also needs FindCoordinator v0 listed for lz4, and Produce v7 for zstd."""
    versions = api_versions(broker)
    assert versions[FIND_COORDINATOR][0] == 0
    assert versions[0][1] >= 7
    assert versions[0][0] == 0, f"Produce listed as v{versions[0][0]}..v{versions[0][1]}"


def test_metadata_listing(broker, topic_name):
    a = ck_create_topic(broker, topic_name("a"), partitions=3)
    b = ck_create_topic(broker, topic_name("b"), partitions=1)
    text = kcat(broker, "-L")
    assert f"broker 1 at 127.0.0.1:{broker.port} (controller)" in text
    assert f'topic "{a}" with 3 partitions:' in text
    assert f'topic "{b}" with 1 partitions:' in text
    for p in range(3):
        assert f"partition {p}, leader 1, replicas: 1, isrs: 1" in text

    md = json.loads(kcat(broker, "-L", "-J", "-t", a))
    assert md["controllerid"] == 1
    assert md["brokers"] == [{"id": 1, "name": f"127.0.0.1:{broker.port}"}]
    [t] = md["topics"]
    assert t["topic"] == a and "error" not in t
    assert [(p["partition"], p["leader"], p["replicas"], p["isrs"]) for p in t["partitions"]] == [
        (i, 1, [{"id": 1}], [{"id": 1}]) for i in range(3)
    ]


def test_time_lookup_and_start_by_timestamp(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=2)
    stamps = [TS0 + i * 1000 + (500 if i > 20 else 0) for i in range(40)]
    ck_produce(broker, topic, [{"key": f"k{i}".encode(), "value": f"v{i}".encode(),
                                "timestamp": t, "partition": 1} for i, t in enumerate(stamps)],
               **{"linger.ms": 5})

    def expect(ts):
        return next((i for i, t in enumerate(stamps) if t >= ts), -1)

    for ts in [TS0 - 1, TS0, TS0 + 1, stamps[20], stamps[20] + 1, stamps[21] - 1, stamps[-1],
               stamps[-1] + 1]:
        out = kcat(broker, "-Q", "-t", f"{topic}:1:{ts}")
        assert out.split() == [topic, "[1]", "offset", str(expect(ts))], ts

    # Several partitions at once, JSON output; the empty partition has no answer (-1).
    res = json.loads(kcat(broker, "-Q", "-J", "-t", f"{topic}:1:{stamps[10]}",
                          "-t", f"{topic}:0:{TS0}"))
    assert res[topic]["1"]["offset"] == 10
    assert res[topic]["0"]["offset"] == -1

    # Consume starting from a timestamp, and the last N records.
    out = kcat(broker, "-C", "-t", topic, "-p", "1", "-o", f"s@{stamps[30]}", "-e", "-q",
               "-f", "%o %k %T\\n")
    assert out.splitlines() == [f"{i} k{i} {stamps[i]}" for i in range(30, 40)]
    out = kcat(broker, "-C", "-t", topic, "-p", "1", "-o", "-3", "-e", "-q", "-f", "%o\\n")
    assert out.splitlines() == ["37", "38", "39"]
