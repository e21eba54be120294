"""kafkajs (node) against trib: the scripts in node/ print one JSON result on stdout and this side
checks it. Producer (gzip is kafkajs' only built-in codec, plus idempotence), the admin API, and a
group consumer (kafkajs has no group-less consumer)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from helpers import CODEC_IDS, TS0, ck_consume, ck_create_topic, stored_batches

NODE_DIR = Path(__file__).parent / "node"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None or not (NODE_DIR / "node_modules" / "kafkajs").is_dir(),
    reason="node or kafkajs missing (run scripts/test-env.sh)",
)


def node(script: str, args: dict, timeout_s: float = 25, expect_ok=True) -> dict:
    """Runs node/<script> with a hard timeout inside the script and one outside it."""
    args = {"timeoutMs": int(timeout_s * 1000), **args}
    proc = subprocess.run(
        [NODE, str(NODE_DIR / script), json.dumps(args)],
        capture_output=True,
        timeout=timeout_s + 10,
        cwd=NODE_DIR,
        env={"PATH": "/usr/bin:/bin", "KAFKAJS_NO_PARTITIONER_WARNING": "1"},
    )
    stderr = proc.stderr.decode(errors="replace")
    lines = proc.stdout.decode().strip().splitlines()
    assert lines, f"{script} printed nothing (exit {proc.returncode}):\n{stderr}"
    result = json.loads(lines[-1])
    if expect_ok:
        assert proc.returncode == 0, f"{script} exited {proc.returncode}: {result}\n{stderr}"
    return result


def text(b):
    return None if b is None else b.decode()


def test_producer_gzip_round_trip(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=2)
    batches = []
    for b in range(4):
        batch = []
        for i in range(25):
            n = b * 25 + i
            batch.append({
                "key": None if n % 8 == 3 else f"key-{n % 5}",
                "value": None if n % 10 == 9 else f"kafkajs ünïcødé ✓ {n} " * (1 + n % 7),
                "headers": {"n": str(n), "kind": "test"} if n % 2 else {},
                "timestamp": TS0 + n * 10,
                "partition": n % 2,
            })
        batches.append(batch)
    res = node("produce.js", {"bootstrap": broker.bootstrap, "topic": topic,
                              "compression": "gzip", "batches": batches})
    # kafkajs reports each partition's base offset per send: dense, in send order.
    sent = {0: 0, 1: 0}
    for batch, per_send in zip(batches, res["results"], strict=True):
        assert sorted((r["partition"], int(r["baseOffset"]), r["errorCode"]) for r in per_send) \
            == [(0, sent[0], 0), (1, sent[1], 0)]
        for m in batch:
            sent[m["partition"]] += 1
    flat = [m for batch in batches for m in batch]
    for part in (0, 1):
        expect = [m for m in flat if m["partition"] == part]
        got = ck_consume(broker, topic, part, 0)
        assert [g.offset for g in got] == list(range(len(expect)))
        assert [(text(g.key), text(g.value)) for g in got] == [
            (m["key"], m["value"]) for m in expect]
        assert [dict((k, v.decode()) for k, v in g.headers) for g in got] == [
            m["headers"] for m in expect]
        assert [g.timestamp for g in got] == [m["timestamp"] for m in expect]
        codecs = {b.codec for b in stored_batches(broker.data_dir, topic, part)}
        assert codecs == {CODEC_IDS["gzip"]}


def test_idempotent_producer(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=1)
    batches = [[{"key": f"k{b}-{i}", "value": f"v{b}-{i}", "partition": 0} for i in range(20)]
               for b in range(3)]
    res = node("produce.js", {"bootstrap": broker.bootstrap, "topic": topic, "idempotent": True,
                              "compression": "none", "batches": batches})
    assert [int(r[0]["baseOffset"]) for r in res["results"]] == [0, 20, 40]
    stored = stored_batches(broker.data_dir, topic, 0)
    assert {b.producer_id for b in stored} != {-1} and len({b.producer_id for b in stored}) == 1
    assert [b.base_sequence for b in stored] == [0, 20, 40]
    got = ck_consume(broker, topic, 0, 0)
    assert [text(g.value) for g in got] == [m["value"] for batch in batches for m in batch]


def test_admin_api(broker, topic_name):
    topic = topic_name()
    deltas = [-1, 0, 1, 4500, 9000, 9001]
    out = node("admin.js", {"bootstrap": broker.bootstrap, "topic": topic, "ts0": TS0,
                            "timestampDeltas": deltas}, timeout_s=40)

    assert out["createValidateOnly"] == {"ok": True}
    assert topic not in out["listAfterValidateOnly"]
    assert out["create"] == {"ok": True}
    # kafkajs turns TOPIC_ALREADY_EXISTS into a `false` result.
    assert out["createAgain"] == {"ok": False}
    assert out["createInvalidName"]["error"]["type"] == "INVALID_TOPIC_EXCEPTION"
    assert out["createUnknownConfig"]["error"]["type"] == "INVALID_CONFIG"
    assert topic in out["listTopics"] and f"{topic}-cfg" not in out["listTopics"]

    [md] = out["metadata"]["topics"]
    assert md["name"] == topic
    assert [(p["partitionId"], p["leader"], p["replicas"], p["isr"], p["partitionErrorCode"])
            for p in sorted(md["partitions"], key=lambda p: p["partitionId"])] == [
        (0, 1, [1], [1], 0), (1, 1, [1], [1], 0)]

    def offsets(rows):
        return sorted((r["partition"], int(r["low"]), int(r["high"]), int(r["offset"]))
                      for r in rows)

    assert offsets(out["offsets"]) == [(0, 0, 10, 10), (1, 0, 10, 10)]
    for d in deltas:
        expect = next((i for i in range(10) if i * 1000 >= d), None)
        rows = sorted(out["offsetsByTimestamp"][str(d)], key=lambda r: r["partition"])
        # kafkajs maps "no record at or after the timestamp" to the high watermark.
        want = 10 if expect is None else expect
        assert [(r["partition"], int(r["offset"])) for r in rows] == [(0, want), (1, want)], d

    def entries(desc):
        [res] = desc["resources"]
        assert res["errorCode"] == 0 and res["resourceName"] == topic
        return {e["configName"]: e for e in res["configEntries"]}

    cfg = entries(out["describe"])
    assert cfg["retention.ms"]["configValue"] == "7200000"
    assert cfg["retention.ms"]["isDefault"] is False
    assert cfg["segment.bytes"]["configValue"] == str(1 << 30)
    assert cfg["segment.bytes"]["isDefault"] is True
    assert out["alterValidateOnly"]["ok"]["resources"][0]["errorCode"] == 0
    assert out["alter"]["ok"]["resources"][0]["errorCode"] == 0
    cfg = entries(out["describeAfterAlter"])
    assert cfg["retention.ms"]["configValue"] == "60000"
    assert cfg["segment.bytes"]["configValue"] == "2097152"
    assert cfg["segment.bytes"]["isDefault"] is False
    assert out["alterUnknown"]["error"]["type"] == "INVALID_CONFIG"

    assert out["createPartitions"] == {"ok": None}
    [md] = out["metadataAfterPartitions"]["topics"]
    assert sorted(p["partitionId"] for p in md["partitions"]) == [0, 1, 2, 3]
    assert out["createPartitionsShrink"]["error"]["type"] == "INVALID_PARTITIONS"

    assert "ok" in out["deleteRecords"], out["deleteRecords"]
    assert offsets(out["offsetsAfterDeleteRecords"]) == [
        (0, 4, 10, 10), (1, 0, 10, 10), (2, 0, 0, 0), (3, 0, 0, 0)]

    assert out["deleteTopics"] == {"ok": None}
    assert topic not in out["listAfterDelete"]
    assert out["deleteMissing"]["error"]["type"] == "UNKNOWN_TOPIC_OR_PARTITION"


def test_group_consumer(broker, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=3)
    batches = [[{"key": f"k{i}", "value": f"v{i}", "partition": i % 3, "headers": {"i": str(i)},
                 "timestamp": TS0 + i} for i in range(30)]]
    node("produce.js", {"bootstrap": broker.bootstrap, "topic": topic, "compression": "gzip",
                        "batches": batches})
    group = f"kafkajs-{uuid.uuid4().hex[:8]}"
    out = node("consume.js", {"bootstrap": broker.bootstrap, "topic": topic, "groupId": group,
                              "count": 30}, timeout_s=40)
    got = sorted(out["messages"], key=lambda m: int(m["value"]["utf8"][1:]))
    assert [(m["partition"], m["key"]["utf8"], m["value"]["utf8"], m["timestamp"])
            for m in got] == [(i % 3, f"k{i}", f"v{i}", TS0 + i) for i in range(30)]
    assert all(m["headers"] == [["i", {"utf8": str(i), "hex": str(i).encode().hex()}]]
               for i, m in enumerate(got))
    for p in range(3):
        offs = [m["offset"] for m in out["messages"] if m["partition"] == p]
        assert offs == list(range(10))
    [committed] = out["committed"]
    assert sorted((p["partition"], int(p["offset"])) for p in committed["partitions"]) == [
        (0, 10), (1, 10), (2, 10)]
