"""The lake end to end with real readers: a topic produced with confluent-kafka, exported by
`trib lake export` into a local folder and into a real S3-compatible server (moto's server
mode on loopback), read back with DuckDB and pyarrow and compared row for row with what was
produced; exports killed with -9 at random points and rerun leave every record exactly once;
`trib sql` (command line and HTTP endpoint) answers as DuckDB does on the same files; and
compaction keeps every row once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, trib_bin
from helpers import ck_create_topic, ck_produce, wait_until

PARTITIONS = 3
# 2024-05-01T10:00:00Z; records spread over three hours.
T0 = 1_714_557_600_000


def produce_orders(broker, topic: str, n: int, config: dict | None = None) -> dict[tuple[int, int], dict]:
    """Produces n JSON orders; returns each record's value by (partition, offset)."""
    ck_create_topic(broker, topic, partitions=PARTITIONS, config=config)
    records = []
    for i in range(n):
        v = {"id": i, "status": [200, 404, 500][i % 3], "amount": round(i * 1.5, 2), "path": f"/p/{i % 17}"}
        if i >= n // 2:
            v["coupon"] = f"C{i % 5}"  # a field that appears later (schema evolution)
        records.append(
            {
                "key": f"k{i}".encode(),
                "value": json.dumps(v).encode(),
                "timestamp": T0 + i * (3 * 3_600_000 // n),
            }
        )
    reps = ck_produce(broker, topic, records, **{"linger.ms": 20})
    return {(r.partition, r.offset): json.loads(r.value) for r in reps}


def trib(*args, timeout=120, env=None, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [str(trib_bin()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert p.returncode == 0, f"trib {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"
    return p


def duck_rows(glob: str) -> list[tuple]:
    """(_partition, _offset, id, status, amount, coupon) of every row, by DuckDB."""
    import duckdb

    con = duckdb.connect()
    return con.execute(
        f"SELECT _partition, _offset, id, status, amount, coupon FROM "
        f"read_parquet('{glob}', hive_partitioning = true, union_by_name = true) "
        f"ORDER BY _partition, _offset"
    ).fetchall()


def expected_rows(produced: dict) -> list[tuple]:
    return sorted(
        (p, o, v["id"], v["status"], v["amount"], v.get("coupon")) for (p, o), v in produced.items()
    )


def test_export_reads_back_identically_with_duckdb_and_pyarrow(broker, tmp_path):
    import pyarrow.dataset as ds

    produced = produce_orders(broker, "orders", 3000)
    lake = tmp_path / "lake"
    out = trib("lake", "export", "orders", "-b", broker.bootstrap, "--path", str(lake), "--roll-rows", "400")
    assert "exported 3000 records" in out.stdout, out.stdout
    assert duck_rows(f"{lake}/orders/**/*.parquet") == expected_rows(produced)
    # Hive folders by event time, names carrying partition and offsets.
    hours = sorted(p.name for p in (lake / "orders" / "date=2024-05-01").iterdir())
    assert hours == ["hour=10", "hour=11", "hour=12"], hours
    t = ds.dataset(lake / "orders", format="parquet", partitioning="hive").to_table()
    assert t.num_rows == 3000
    assert sorted(t.column("id").to_pylist()) == list(range(3000))
    # A second run finds everything already there and writes nothing.
    again = trib("lake", "export", "orders", "-b", broker.bootstrap, "--path", str(lake))
    assert "nothing to export" in again.stdout, again.stdout
    # New records are picked up after the old ones, once.
    more = ck_produce(broker, "orders", [{"value": json.dumps({"id": 3000 + i, "status": 200, "amount": 1.0, "path": "/"}).encode(), "timestamp": T0} for i in range(30)])
    trib("lake", "export", "orders", "-b", broker.bootstrap, "--path", str(lake))
    for r in more:
        produced[(r.partition, r.offset)] = json.loads(r.value)
    assert duck_rows(f"{lake}/orders/**/*.parquet") == expected_rows(produced)


def test_export_takes_only_committed_transactions_and_honours_ranges(broker, tmp_path):
    """Aborted transactions and transaction markers never reach the lake; --partitions,
    --from-offset/--to-offset and --from-time/--to-time bound what is exported."""
    from confluent_kafka import Producer

    from helpers import ck_conf

    ck_create_topic(broker, "txns", partitions=2)
    p = Producer(ck_conf(broker, **{"transactional.id": "lake-txn", "linger.ms": 1}))
    p.init_transactions(30)

    def txn(ids, commit):
        p.begin_transaction()
        for i in ids:
            p.produce("txns", json.dumps({"id": i}).encode(), key=b"k", partition=i % 2,
                      timestamp=T0 + i * 1000, headers=[("h", b"v")])
        p.flush(30)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)

    txn(range(0, 40), True)
    txn(range(40, 80), False)
    txn(range(80, 120), True)
    plain = ck_produce(broker, "txns", [{"value": json.dumps({"id": 120 + i}).encode(), "partition": i % 2, "timestamp": T0 + (120 + i) * 1000} for i in range(20)])
    assert len(plain) == 20
    committed = sorted(list(range(0, 40)) + list(range(80, 140)))

    import duckdb

    def ids(lake):
        return sorted(r[0] for r in duckdb.connect().execute(f"SELECT id FROM read_parquet('{lake}/txns/**/*.parquet')").fetchall())

    lake = tmp_path / "all"
    out = trib("lake", "export", "txns", "-b", broker.bootstrap, "--path", str(lake), "--roll-rows", "16")
    assert f"exported {len(committed)} records" in out.stdout, out.stdout
    assert ids(lake) == committed

    # One partition only.
    one = tmp_path / "one"
    trib("lake", "export", "txns", "-b", broker.bootstrap, "--path", str(one), "--partitions", "1")
    assert ids(one) == [i for i in committed if i % 2 == 1]

    # A time range: ids 10..=99 by timestamp, committed ones only.
    window = tmp_path / "window"
    trib("lake", "export", "txns", "-b", broker.bootstrap, "--path", str(window),
         "--from-time", str(T0 + 10_000), "--to-time", str(T0 + 99_000))
    assert ids(window) == [i for i in committed if 10 <= i <= 99]

    # An offset range on each partition: the first 10 offsets are the first 10 records there.
    head = tmp_path / "head"
    trib("lake", "export", "txns", "-b", broker.bootstrap, "--path", str(head), "--to-offset", "10")
    assert ids(head) == sorted(i for i in range(20))

    # -X settings cannot be honoured by the native reader: a clear error, nothing written.
    bad = trib("lake", "export", "txns", "-b", broker.bootstrap, "--path", str(tmp_path / "x"), "-X", "security.protocol=ssl", check=False)
    assert bad.returncode != 0 and "-X `security.protocol=ssl`" in bad.stderr, bad.stderr
    p.flush(5)


def test_export_killed_at_random_points_leaves_each_record_once(broker, tmp_path):
    produced = produce_orders(broker, "kills", 20000)
    lake = tmp_path / "lake"
    args = [str(trib_bin()), "lake", "export", "kills", "-b", broker.bootstrap, "--path", str(lake), "--roll-rows", "25"]
    rng = random.Random(7)
    kills = 0
    for _ in range(4):
        before = len(list(lake.rglob("*.parquet"))) if lake.exists() else 0
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Once this run has stored a few files, kill it a random moment later.
        wait_until(
            lambda: p.poll() is not None or len(list(lake.rglob("*.parquet"))) >= before + 3,
            timeout=60,
            interval=0.005,
            what="export progress",
        )
        time.sleep(rng.uniform(0, 0.15))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(timeout=30)
    assert kills >= 2, "the export finished before the kills: make it bigger"
    trib("lake", "export", "kills", "-b", broker.bootstrap, "--path", str(lake))
    assert not list(lake.rglob("*.tmp")), "partial files are cleaned up"
    assert duck_rows(f"{lake}/kills/**/*.parquet") == expected_rows(produced)


class Moto:
    """moto's S3 server on a loopback port."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        venv_bin = Path(os.environ.get("VIRTUAL_ENV", "")) / "bin"
        exe = venv_bin / "moto_server" if (venv_bin / "moto_server").exists() else Path(os.sys.executable).parent / "moto_server"
        self.log = open(tmp / "moto.log", "wb")
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT)

        def up():
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
                return True
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False

        wait_until(up, timeout=30, what="moto server up")

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )

    def options(self) -> list[str]:
        opts = {
            "aws_endpoint": self.endpoint,
            "aws_allow_http": "true",
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
            "aws_region": "us-east-1",
        }
        return [x for k, v in opts.items() for x in ("--storage-option", f"{k}={v}")]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def moto(tmp_path):
    m = Moto(tmp_path)
    yield m
    m.stop()


def test_export_to_s3_exactly_once_and_sql_over_it(broker, moto, tmp_path):
    import pyarrow.parquet as pq
    import io

    s3 = moto.client()
    s3.create_bucket(Bucket="lake")
    produced = produce_orders(broker, "orders", 6000)
    url = "s3://lake/prod"
    args = [str(trib_bin()), "lake", "export", "orders", "-b", broker.bootstrap, "--path", url, "--roll-rows", "20", *moto.options()]

    def keys():
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix="prod/")
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    # Killed in the middle (once some objects are stored), then run to the end.
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: p.poll() is not None or len(keys()) >= 5, timeout=60, what="objects stored")
    assert p.poll() is None, "the export finished before the kill: make it bigger"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    trib(*args[1:])
    keys = keys()
    assert keys and all(k.startswith("prod/orders/date=2024-05-01/hour=") and k.endswith(".parquet") for k in keys), keys[:5]
    # Every object read with pyarrow: each record once.
    seen = []
    for k in keys:
        body = s3.get_object(Bucket="lake", Key=k)["Body"].read()
        t = pq.read_table(io.BytesIO(body))
        seen += list(zip(t.column("_partition").to_pylist(), t.column("_offset").to_pylist(), t.column("id").to_pylist()))
    assert sorted(seen) == sorted((p, o, v["id"]) for (p, o), v in produced.items())
    # DuckDB reads the same objects (copied out: DuckDB's S3 support is an extension it
    # downloads, and this machine has no route to its server).
    copy = tmp_path / "copy"
    for k in keys:
        dest = copy / k
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(s3.get_object(Bucket="lake", Key=k)["Body"].read())
    assert duck_rows(f"{copy}/prod/orders/**/*.parquet") == expected_rows(produced)
    # trib sql over S3.
    out = trib("sql", "--path", url, *moto.options(), "--format", "json", "-e", "SELECT count(*) AS n, sum(id) AS s FROM orders")
    assert json.loads(out.stdout) == {"n": 6000, "s": sum(range(6000))}


QUERIES = [
    # scan
    "SELECT count(*) AS n, sum(id) AS s, min(amount) AS lo, max(amount) AS hi FROM orders",
    # filter
    "SELECT id FROM orders WHERE status = 404 AND path = '/p/3' ORDER BY id",
    # group-by
    "SELECT status, count(*) AS n, sum(amount) AS total FROM orders GROUP BY status ORDER BY status",
    # time range
    "SELECT count(*) AS n FROM orders WHERE _timestamp >= TIMESTAMP '2024-05-01 11:00:00+00:00' AND _timestamp < TIMESTAMP '2024-05-01 11:30:00+00:00'",
    # partition columns
    "SELECT hour, count(*) AS n FROM orders GROUP BY hour ORDER BY hour",
    # schema evolution
    "SELECT coupon, count(*) AS n FROM orders WHERE coupon IS NOT NULL GROUP BY coupon ORDER BY coupon",
]


def test_sql_answers_as_duckdb_does_and_compaction_keeps_every_row(broker, tmp_path):
    import duckdb

    produce_orders(broker, "orders", 3000)
    lake = tmp_path / "lake"
    trib("lake", "export", "orders", "-b", broker.bootstrap, "--path", str(lake), "--roll-rows", "200")
    con = duckdb.connect()
    con.execute(
        f"CREATE VIEW orders AS SELECT * FROM read_parquet('{lake}/orders/**/*.parquet', hive_partitioning = true, union_by_name = true)"
    )

    def compare():
        for q in QUERIES:
            ours = [json.loads(line) for line in trib("sql", "--path", str(lake), "--format", "json", "-e", q).stdout.splitlines()]
            cur = con.execute(q)
            cols = [d[0] for d in cur.description]
            theirs = [dict(zip(cols, row)) for row in cur.fetchall()]
            norm = lambda rows: [{k: (round(v, 6) if isinstance(v, float) else int(v) if k == "hour" else v) for k, v in r.items()} for r in rows]
            assert norm(ours) == norm(theirs), q

    compare()
    files_before = len(list(lake.rglob("*.parquet")))
    out = trib("lake", "compact", "--path", str(lake), "--grace-ms", "0")
    assert "compacted" in out.stdout
    files_after = len(list(lake.rglob("*.parquet")))
    assert files_after < files_before, (files_before, files_after)
    compare()


def test_http_endpoint_answers_json_and_arrow(broker, tmp_path):
    import pyarrow.ipc

    produce_orders(broker, "orders", 300)
    lake = tmp_path / "lake"
    trib("lake", "export", "orders", "-b", broker.bootstrap, "--path", str(lake))
    port = free_port()
    log = open(tmp_path / "sql.log", "wb")
    p = subprocess.Popen([str(trib_bin()), "sql", "--path", str(lake), "--serve", f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def healthy():
            try:
                return urllib.request.urlopen(f"{base}/health", timeout=1).status == 200
            except OSError:
                return False

        wait_until(healthy, timeout=30, what="sql endpoint up")
        q = urllib.parse.quote("SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status")
        rows = json.load(urllib.request.urlopen(f"{base}/query?sql={q}", timeout=30))
        assert rows == [{"status": 200, "n": 100}, {"status": 404, "n": 100}, {"status": 500, "n": 100}]
        req = urllib.request.Request(
            f"{base}/query",
            data=json.dumps({"sql": "SELECT id FROM orders ORDER BY id", "format": "arrow"}).encode(),
            headers={"content-type": "application/json"},
        )
        body = urllib.request.urlopen(req, timeout=30).read()
        t = pyarrow.ipc.open_stream(body).read_all()
        assert t.column("id").to_pylist() == list(range(300))
        # A bad query is a 400 naming the problem.
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{base}/query?sql={urllib.parse.quote('SELECT nope FROM orders')}", timeout=30)
        assert e.value.code == 400 and "nope" in json.load(e.value)["error"]
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert "trib_sql_queries_total 3" in metrics, metrics
    finally:
        p.terminate()
        p.wait(timeout=10)
        log.close()


def test_tail_reads_what_the_lake_lacks_from_the_broker(broker, tmp_path):
    produced = produce_orders(broker, "orders", 600)
    lake = tmp_path / "lake"
    trib("lake", "export", "orders", "-b", broker.bootstrap, "--path", str(lake))
    # 90 more records, one hour after the others, not exported yet.
    later = T0 + 5 * 3_600_000
    more = ck_produce(
        broker,
        "orders",
        [{"value": json.dumps({"id": 600 + i, "status": 200, "amount": 2.5, "path": "/t"}).encode(), "timestamp": later + i * 1000} for i in range(90)],
    )
    sql = lambda q: [json.loads(l) for l in trib("sql", "--path", str(lake), "-b", broker.bootstrap, "--format", "json", "-e", q).stdout.splitlines()]
    assert sql("SELECT count(*) AS n, min(id) AS lo FROM tail('orders')") == [{"n": 90, "lo": 600}]
    # History and tail in one query, without overlap.
    assert sql("SELECT count(*) AS n, count(DISTINCT id) AS d FROM (SELECT id FROM orders UNION ALL SELECT id FROM tail('orders'))") == [{"n": 690, "d": 690}]
    # A time bound starts each partition at the broker's timestamp index.
    bound = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(later / 1000 + 60))
    rows = sql(f"SELECT count(*) AS n FROM tail('orders') WHERE _timestamp >= TIMESTAMP '{bound}'")
    assert rows == [{"n": 30}], rows
    # The partition columns are there, as in the lake table.
    assert sql("SELECT DISTINCT hour FROM tail('orders')") == [{"hour": 15}]
    # A topic the lake does not have is a clear error.
    p = trib("sql", "--path", str(lake), "-b", broker.bootstrap, "-e", "SELECT * FROM tail('nope')", check=False)
    assert p.returncode != 0 and "no table `nope`" in p.stderr, p.stderr
    assert len(produced) + len(more) == 690


@pytest.mark.broker_http
def test_tail_answers_equalities_from_the_field_index(broker, tmp_path):
    from confluent_kafka import KafkaException

    # A bad definition is refused with a message that names the problem.
    with pytest.raises(KafkaException) as e:
        ck_create_topic(broker, "badidx", config={"index.fields": "p=value:"})
    assert "JSON path is empty" in str(e.value), str(e.value)

    config = {"index.fields": "p=value:$.path,st=value:$.status", "retention.ms": "-1"}
    produce_orders(broker, "idx", 600, config=config)
    lake = tmp_path / "lake"
    trib("lake", "export", "idx", "-b", broker.bootstrap, "--path", str(lake))
    later = T0 + 5 * 3_600_000
    tail = [{"id": 600 + i, "status": [200, 404][i % 2], "amount": 1.0, "path": f"/p/{i % 17}"} for i in range(90)]
    ck_produce(broker, "idx", [{"value": json.dumps(v).encode(), "timestamp": later + i * 1000} for i, v in enumerate(tail)])
    http = f"127.0.0.1:{broker.http_port}"

    def sql(q, *extra):
        p = trib("sql", "--path", str(lake), "-b", broker.bootstrap, "--format", "json", *extra, "-e", q)
        return [json.loads(l) for l in p.stdout.splitlines()], p.stderr

    q = "SELECT count(*) AS n, min(id) AS lo FROM tail('idx') WHERE path = '/p/3'"
    want = [r for r in tail if r["path"] == "/p/3"]
    rows, err = sql(q, "--broker-http", http)
    assert rows == [{"n": len(want), "lo": min(r["id"] for r in want)}], rows
    assert "found by the broker's field index" in err, err
    # The same answer without the index (the tail read whole).
    rows2, err2 = sql(q)
    assert rows2 == rows and "field index" not in err2
    # Two indexed columns and a time bound; the number is compared as text, as indexed.
    bound = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(later / 1000 + 30))
    q = f"SELECT id FROM tail('idx') WHERE path = '/p/5' AND status = 404 AND _timestamp >= TIMESTAMP '{bound}' ORDER BY id"
    rows, err = sql(q, "--broker-http", http)
    want = [{"id": 600 + i} for i, r in enumerate(tail) if r["path"] == "/p/5" and r["status"] == 404 and i >= 30]
    assert rows == want and "field index" in err, (rows, want, err)
    # A column that is not indexed reads the tail.
    rows, err = sql("SELECT count(*) AS n FROM tail('idx') WHERE amount = 1.0", "--broker-http", http)
    assert rows == [{"n": 90}] and "field index" not in err
