"""The agent's local Kafka endpoint: applications keep their Kafka client (confluent-kafka,
kafka-python) and point it at `trib agent`; their records reach the broker intact, each once,
in far fewer and larger produce requests (counted on both sides from /metrics)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, trib_bin
from helpers import api_versions, ck_consume_partitions, ck_create_topic, wait_until


def all_records(broker, topic):
    by_partition = ck_consume_partitions(broker, topic, range(PARTITIONS), timeout=30)
    return [r for recs in by_partition.values() for r in recs]

PARTITIONS = 3


class Agent:
    """One `trib agent` process with a kafka_endpoint source and a Kafka sink to `broker`."""

    def __init__(self, broker, tmp: Path, linger_ms: int = 200, client: str = "librdkafka"):
        self.host = "127.0.0.1"
        self.port = free_port()
        self.bootstrap = f"{self.host}:{self.port}"
        self.http = f"127.0.0.1:{free_port()}"
        self.config = tmp / "agent.yaml"
        self.config.write_text(
            f"""
sources:
  apps:
    type: kafka_endpoint
    address: {self.bootstrap}
sinks:
  to_broker:
    type: kafka
    inputs: [apps]
    brokers: {broker.bootstrap}
    topic: unused   # records keep the topic they were produced to
    linger_ms: {linger_ms}
    client: {client}
"""
        )
        self.log_path = tmp / "agent.log"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, NO_COLOR="1", RUST_LOG="info")
        self.proc = subprocess.Popen(
            [str(trib_bin()), "agent", "--config", str(self.config), "--http", self.http],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, f"agent exited:\n{self.log()}"
            try:
                api_versions(self, timeout=1.0)
                return
            except (OSError, AssertionError):
                assert time.monotonic() < deadline, f"agent endpoint not up:\n{self.log()}"
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def metric(self, name: str, component: str) -> float:
        return scrape(f"http://{self.http}/metrics", rf'{name}_total\{{[^}}]*component="{component}"[^}}]*\}}')

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._log.close()


def scrape(url: str, pattern: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if re.match(pattern, line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def murmur2(data: bytes) -> int:
    """Kafka's murmur2, as the Java client computes it (unsigned 32-bit)."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    whole = len(data) // 4
    for i in range(whole):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    rest = data[4 * whole:]
    if len(rest) >= 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if rest:
        h = ((h ^ rest[0]) * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    return h ^ (h >> 15)


def broker_produce_requests(broker) -> float:
    return scrape(f"http://127.0.0.1:{broker.http_port}/metrics",
                  r'tributary_broker_requests_total\{api="produce"\}')


@pytest.fixture
def agent(broker, tmp_path, request):
    a = Agent(broker, tmp_path, client=getattr(request, "param", "librdkafka"))
    try:
        yield a
    finally:
        code = a.stop()
        log = a.log()
        assert code == 0, f"agent exited with {code}:\n{log}"
        assert "closing connection" not in log, f"the agent dropped a client connection:\n{log}"


@pytest.mark.broker_http
@pytest.mark.parametrize("agent", ["librdkafka", "native"], indirect=True)
def test_confluent_kafka_producers_batch_through_the_agent(broker, agent, topic_name):
    topic = ck_create_topic(broker, topic_name(), partitions=PARTITIONS)
    from confluent_kafka import Producer

    producers, per_producer = 50, 10
    errors: list = []

    def app(n: int):
        # One record per request: no client-side linger, and each send waits for its ack.
        p = Producer({"bootstrap.servers": agent.bootstrap, "broker.address.family": "v4",
                      "linger.ms": 0, "acks": "all"})
        for i in range(per_producer):
            done = []
            p.produce(topic, key=f"user-{(n * per_producer + i) % 17}".encode(),
                      value=f"app {n} record {i}".encode(), headers=[("app", str(n).encode())],
                      on_delivery=lambda err, msg: done.append(err))
            p.flush(30)
            if done != [None]:
                errors.append((n, i, done))

    before = broker_produce_requests(broker)
    threads = [threading.Thread(target=app, args=(n,)) for n in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, f"deliveries failed: {errors[:5]}"
    total = producers * per_producer

    records = all_records(broker, topic)
    values = sorted(r.value for r in records)
    expected = sorted(f"app {n} record {i}".encode()
                      for n in range(producers) for i in range(per_producer))
    assert values == expected, "every record arrives exactly once"
    for r in records:
        n = int(r.value.split()[1])
        assert r.headers == (("app", str(n).encode()),), "headers are kept"
    # Keys are partitioned as the Java client does: murmur2(key) mod partitions.
    assert len({r.key for r in records}) == 17
    for r in records:
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % PARTITIONS, r.key

    # Requests: the applications sent one per record; the agent forwarded far fewer.
    wait_until(lambda: agent.metric("trib_pipeline_requests_in", "apps") >= total,
               what="the endpoint's request count")
    received = agent.metric("trib_pipeline_requests_in", "apps")
    sent_to_broker = broker_produce_requests(broker) - before
    wait_until(lambda: agent.metric("trib_pipeline_requests_out", "to_broker") > 0,
               timeout=10, what="the sink's produce-request count (librdkafka statistics)")
    reported = agent.metric("trib_pipeline_requests_out", "to_broker")
    print(f"application produce requests {received:.0f}, broker produce requests {sent_to_broker:.0f}, "
          f"sink reported {reported:.0f}")
    assert received >= total
    assert 0 < sent_to_broker <= total / 5, \
        f"{sent_to_broker} broker requests for {total} application requests"
    assert reported <= sent_to_broker


@pytest.mark.broker_http
def test_kafka_python_idempotent_producer_through_the_agent(broker, agent, topic_name):
    from kafka import KafkaProducer

    topic = ck_create_topic(broker, topic_name(), partitions=PARTITIONS)
    # kafka-python 3 enables idempotence by default: InitProducerId, then sequenced batches.
    p = KafkaProducer(bootstrap_servers=agent.bootstrap, acks="all", linger_ms=5,
                      compression_type="gzip", request_timeout_ms=30000)
    futures = [p.send(topic, key=f"k{i % 7}".encode(), value=f"kp {i}".encode(),
                      headers=[("n", str(i).encode())])
               for i in range(300)]
    p.flush(60)
    for f in futures:
        f.get(timeout=30)
    # The endpoint handed out a producer id, so the batches carried sequence numbers.
    tm = p._transaction_manager
    assert tm is not None and tm.producer_id_and_epoch.producer_id >= 0
    p.close(10)
    records = all_records(broker, topic)
    assert sorted(r.value for r in records) == sorted(f"kp {i}".encode() for i in range(300))
    assert all(r.headers == (("n", r.value.split()[1]),) for r in records)


@pytest.mark.broker_http
def test_bad_topic_and_partition_get_kafka_errors(broker, agent, topic_name):
    from confluent_kafka import KafkaError, Producer

    p = Producer({"bootstrap.servers": agent.bootstrap, "broker.address.family": "v4",
                  "message.timeout.ms": 5000})
    got = []
    p.produce("bad topic!", value=b"x", on_delivery=lambda err, msg: got.append(err))
    p.produce(topic_name(), value=b"y", partition=PARTITIONS + 5,
              on_delivery=lambda err, msg: got.append(err))
    p.flush(15)
    codes = sorted(e.code() for e in got if e is not None)
    assert len(codes) == 2, got
    assert KafkaError.TOPIC_EXCEPTION in codes or KafkaError._UNKNOWN_TOPIC in codes \
        or KafkaError._UNKNOWN_PARTITION in codes, got
