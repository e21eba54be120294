//! The field index end to end against the real broker: answers checked against a brute-force
//! scan of everything consumed (several fields, conditions combined, time windows, out-of-order
//! timestamps, many segments); the index rebuilt after its files are deleted or damaged, after
//! kill -9 while indexing, and on request; retention removing a segment's index with it; bad
//! definitions refused; `trib query` by window, offset range and field.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use trib_e2e::{http_get, trib_bin, TestBroker};

const FIELDS: &str = "user=value:$.user.id,rid=header:rid,k=key,city=value:$.geo.city";
const CITIES: [&str; 5] = ["Paris", "Lagos", "Lima", "Osaka", "Oslo"];
const BASE_TS: i64 = 1_700_000_000_000;

fn cfg(b: &TestBroker) -> ClientConfig {
    b.client_config()
}

/// Creates a topic; the records' timestamps are from 2023, so the default 7-day retention is
/// turned off unless `configs` says otherwise.
async fn create(b: &TestBroker, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut all = vec![("retention.ms", "-1")];
    all.extend_from_slice(configs);
    b.create_topic(name, partitions, &all).await;
}

/// Record `i`'s timestamp: rising, with every 7th one 500 ms early (out of order).
fn ts_of(i: i64) -> i64 {
    BASE_TS + i * 10 - if i % 7 == 0 { 500 } else { 0 }
}

/// Produces records `from..to` with keys, a header and JSON values, and waits for delivery.
fn produce(b: &TestBroker, topic: &str, from: i64, to: i64) {
    let p: ThreadedProducer<DefaultProducerContext> = cfg(b)
        .set("linger.ms", "5")
        .set("batch.size", "4096")
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    for i in from..to {
        let value = format!(
            r#"{{"user": {{"id": {}}}, "geo": {{"city": "{}"}}, "n": {i}}}"#,
            i % 200,
            CITIES[(i % 5) as usize]
        );
        let key = format!("k{}", i % 97);
        let rid = format!("r{}", i % 13);
        let mut rec = BaseRecord::to(topic)
            .key(&key)
            .payload(&value)
            .timestamp(ts_of(i))
            .headers(OwnedHeaders::new().insert(Header {
                key: "rid",
                value: Some(&rid),
            }));
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// One stored record as the brute-force scan saw it.
#[derive(Debug, Clone)]
struct Rec {
    partition: i32,
    offset: i64,
    ts: i64,
    key: String,
    rid: String,
    value: Value,
}

/// Every record of `topic`, read from the start.
fn scan(b: &TestBroker, topic: &str, partitions: i32) -> Vec<Rec> {
    let c: BaseConsumer = cfg(b)
        .set("group.id", "scan")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut total = 0;
    for p in 0..partitions {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        total += high - low;
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as i64) < total {
        assert!(
            Instant::now() < deadline,
            "scanned {} of {total}",
            out.len()
        );
        let Some(m) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap();
        let rid = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "rid").and_then(|h| h.value))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        out.push(Rec {
            partition: m.partition(),
            offset: m.offset(),
            ts: m.timestamp().to_millis().unwrap(),
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            rid,
            value: serde_json::from_slice(m.payload().unwrap()).unwrap(),
        });
    }
    out
}

fn status(b: &TestBroker, topic: &str) -> Value {
    let body = http_get(b.http.unwrap(), &format!("/index/status?topic={topic}"));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("status `{body}`: {e}"))
}

/// Waits until every partition of `topic` is indexed to its end.
fn wait_indexed(b: &TestBroker, topic: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(b, topic);
        let parts = s["topics"][0]["partitions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !parts.is_empty() && parts.iter().all(|p| p["lag"] == 0) {
            return s;
        }
        assert!(Instant::now() < deadline, "index did not catch up: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (partition, offset) of the hits of an index query.
fn query(b: &TestBroker, q: &str) -> (BTreeSet<(i32, i64)>, Value) {
    let body = http_get(b.http.unwrap(), &format!("/index/query?{q}&limit=100000"));
    let v: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("query {q}: `{body}`: {e}"));
    let hits = v["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("query {q}: {v}"))
        .iter()
        .map(|h| {
            (
                h["partition"].as_i64().unwrap() as i32,
                h["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    (hits, v)
}

fn brute(recs: &[Rec], keep: impl Fn(&Rec) -> bool) -> BTreeSet<(i32, i64)> {
    recs.iter()
        .filter(|r| keep(r))
        .map(|r| (r.partition, r.offset))
        .collect()
}

fn city(r: &Rec) -> &str {
    r.value["geo"]["city"].as_str().unwrap_or("")
}

/// The index's answers for a fixed set of questions, each checked against the scan.
fn check_answers(b: &TestBroker, topic: &str, recs: &[Rec]) {
    let user = |r: &Rec| r.value["user"]["id"].as_i64().unwrap();
    let (t1, t2) = (BASE_TS + 5_000, BASE_TS + 20_000);
    let cases: Vec<(String, BTreeSet<(i32, i64)>)> = vec![
        (
            format!("topic={topic}&where=user%3D7"),
            brute(recs, |r| user(r) == 7),
        ),
        (
            format!("topic={topic}&where=user%3D7&where=rid%3Dr3"),
            brute(recs, |r| user(r) == 7 && r.rid == "r3"),
        ),
        (
            format!("topic={topic}&where=k%3Dk5"),
            brute(recs, |r| r.key == "k5"),
        ),
        (
            format!("topic={topic}&where=city%3DLima&from={t1}&to={t2}"),
            brute(recs, |r| city(r) == "Lima" && r.ts >= t1 && r.ts <= t2),
        ),
        (
            format!("topic={topic}&where=user%3D199&where=city%3DOslo&from={t1}"),
            brute(recs, |r| user(r) == 199 && city(r) == "Oslo" && r.ts >= t1),
        ),
        (
            format!("topic={topic}&where=user%3D100000"),
            BTreeSet::new(),
        ),
        (
            format!("topic={topic}&where=user%3D3&partition=1"),
            brute(recs, |r| user(r) == 3 && r.partition == 1),
        ),
    ];
    for (q, want) in cases {
        let (got, v) = query(b, &q);
        assert_eq!(got, want, "{q}");
        assert_eq!(v["complete"], true, "{q}: {v}");
    }
}

fn fidx_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            out.extend(fidx_files(&e.path()));
        } else if e.path().extension().is_some_and(|x| x == "fidx") {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_index_answers_match_a_brute_force_scan() {
    let b = TestBroker::start_http(&[]);
    create(
        &b,
        "ev",
        3,
        &[("index.fields", FIELDS), ("segment.bytes", "16384")],
    )
    .await;
    produce(&b, "ev", 0, 6000);
    let s = wait_indexed(&b, "ev");
    let parts = s["topics"][0]["partitions"].as_array().unwrap();
    let segments: u64 = parts.iter().map(|p| p["segments"].as_u64().unwrap()).sum();
    assert!(segments > 10, "many segments: {s}");
    assert!(
        parts.iter().all(|p| p["index_bytes"].as_u64().unwrap() > 0),
        "{s}"
    );
    assert_eq!(s["topics"][0]["fields"][0]["source"], "value:$.user.id");
    let recs = scan(&b, "ev", 3);
    assert_eq!(recs.len(), 6000);
    check_answers(&b, "ev", &recs);

    // Errors name the problem.
    let bad = http_get(b.http.unwrap(), "/index/query?topic=ev&where=nope%3D1");
    assert!(
        bad.contains("does not index field `nope`") && bad.contains("user, rid, k, city"),
        "{bad}"
    );
    let bad = http_get(b.http.unwrap(), "/index/query?topic=missing&where=user%3D1");
    assert!(bad.contains("unknown topic `missing`"), "{bad}");

    // `trib query --where` prints the same records as JSON lines.
    let out = Command::new(trib_bin())
        .args([
            "query", "ev", "--where", "user=7", "--where", "rid=r3", "--limit", "1000",
        ])
        .args(["--http", &b.http.unwrap().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want = brute(&recs, |r| r.value["user"]["id"] == 7 && r.rid == "r3");
    assert_eq!(lines.len(), want.len());
    for l in &lines {
        assert_eq!(l["headers"]["rid"], "r3");
        let v: Value = serde_json::from_str(l["value"].as_str().unwrap()).unwrap();
        assert_eq!(v["user"]["id"], 7);
    }
    // Sorted by timestamp.
    let stamps: Vec<i64> = lines
        .iter()
        .map(|l| l["timestamp"].as_i64().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trib_query_reads_time_windows_and_offset_ranges() {
    let b = TestBroker::start(&[]);
    create(&b, "win", 2, &[("segment.bytes", "8192")]).await;
    produce(&b, "win", 0, 3000);
    let recs = scan(&b, "win", 2);
    let run = |args: &[&str]| -> BTreeSet<(i32, i64)> {
        let out = Command::new(trib_bin())
            .args(["query", "win", "-b", &b.bootstrap(), "--limit", "100000"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["partition"].as_i64().unwrap() as i32,
                    v["offset"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    // The window's offsets are Kafka's: from the first record at or after t1 to the first after
    // t2 (ListOffsets by time); of those, the records whose timestamps are in the window.
    let (t1, t2) = (BASE_TS + 7_777, BASE_TS + 12_345);
    let window = |r: &Rec| {
        let first = |t: i64| {
            recs.iter()
                .filter(|x| x.partition == r.partition && x.ts >= t)
                .map(|x| x.offset)
                .min()
                .unwrap_or(i64::MAX)
        };
        r.offset >= first(t1) && r.offset < first(t2 + 1) && r.ts >= t1 && r.ts <= t2
    };
    let got = run(&["--from", &t1.to_string(), "--to", &t2.to_string()]);
    assert_eq!(got, brute(&recs, window), "time window");
    assert!(got.len() > 300, "{}", got.len());
    assert_eq!(
        run(&["--offset", "100..=250", "-p", "1"]),
        brute(&recs, |r| r.partition == 1
            && (100..=250).contains(&r.offset)),
        "offset range"
    );
    // An RFC 3339 bound and a window after the data.
    assert!(run(&["--from", "2030-01-01T00:00:00Z"]).is_empty());
    let out = Command::new(trib_bin())
        .args(["query", "win", "-b", &b.bootstrap(), "--offset", "9..3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--offset `9..3`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_is_rebuilt_after_deletion_damage_kill9_and_on_request() {
    let mut b = TestBroker::start_http(&[]);
    create(
        &b,
        "rb",
        2,
        &[("index.fields", FIELDS), ("segment.bytes", "8192")],
    )
    .await;
    produce(&b, "rb", 0, 3000);
    wait_indexed(&b, "rb");
    let files = fidx_files(&b.data_dir());
    assert!(files.len() > 4, "{files:?}");

    // Deleted while stopped: queries are right at once (the unindexed part is scanned) and the
    // files come back.
    b.stop();
    for f in &files {
        std::fs::remove_file(f).unwrap();
    }
    b.restart();
    let recs = scan(&b, "rb", 2);
    check_answers(&b, "rb", &recs);
    wait_indexed(&b, "rb");
    check_answers(&b, "rb", &recs);
    for f in &files {
        assert!(f.exists(), "{f:?} rebuilt");
    }

    // A damaged file is noticed and rebuilt.
    b.stop();
    let victim = &files[0];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(victim, &bytes).unwrap();
    b.restart();
    wait_indexed(&b, "rb");
    check_answers(&b, "rb", &recs);
    assert!(
        b.log_text().contains("field index file unusable"),
        "{}",
        b.log_text()
    );

    // kill -9 right after bursts of produce (the indexer wakes every 100 ms, so it is
    // mid-way), three times; the index then catches up and answers exactly.
    let mut mid_way = 0;
    for (from, to) in [(3000, 9000), (9000, 15000), (15000, 20000)] {
        produce(&b, "rb", from, to);
        let s = status(&b, "rb");
        let lag: i64 = s["topics"][0]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["lag"].as_i64().unwrap())
            .sum();
        mid_way += usize::from(lag > 0);
        b.kill9();
        b.restart();
    }
    eprintln!("killed with records still to index {mid_way} of 3 times");
    let recs = scan(&b, "rb", 2);
    assert_eq!(recs.len(), 20000);
    wait_indexed(&b, "rb");
    check_answers(&b, "rb", &recs);

    // On request.
    let out = Command::new(trib_bin())
        .args([
            "index",
            "rebuild",
            "rb",
            "--http",
            &b.http.unwrap().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed"));
    check_answers(&b, "rb", &recs);
    wait_indexed(&b, "rb");
    check_answers(&b, "rb", &recs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_a_segments_index_with_it() {
    let b = TestBroker::start_http(&["--retention-check-interval-ms", "200"]);
    create(
        &b,
        "ret",
        1,
        &[
            ("index.fields", FIELDS),
            ("segment.bytes", "8192"),
            ("retention.bytes", "40000"),
        ],
    )
    .await;
    produce(&b, "ret", 0, 4000);
    let dir = b.data_dir().join("ret-0");
    // Retention leaves only the newest segments; every index file left has its log.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = wait_indexed(&b, "ret");
        let logs: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.extension()? == "log")
                    .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
            })
            .collect();
        let fidx: BTreeSet<String> = fidx_files(&dir)
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        let start = s["topics"][0]["partitions"][0]["indexed_to"]
            .as_i64()
            .unwrap();
        if logs.len() <= 8 && fidx.is_subset(&logs) && !fidx.is_empty() {
            assert!(
                !logs.contains("00000000000000000000"),
                "oldest segment gone: {logs:?}"
            );
            assert!(start > 0);
            break;
        }
        assert!(Instant::now() < deadline, "logs {logs:?} index {fidx:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing below the log start is returned.
    let c: BaseConsumer = cfg(&b).set("group.id", "x").create().unwrap();
    let (low, _) = c
        .fetch_watermarks("ret", 0, Duration::from_secs(10))
        .unwrap();
    assert!(low > 0);
    let (hits, _) = query(&b, "topic=ret&where=city%3DParis");
    assert!(!hits.is_empty());
    assert!(hits.iter().all(|(_, o)| *o >= low), "{low} {hits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_index_definitions_are_refused() {
    let b = TestBroker::start_http(&[]);
    let admin: AdminClient<DefaultClientContext> = cfg(&b).create().unwrap();
    for bad in ["user=value:", "user", "a=key,a=key", "x=body"] {
        let t = NewTopic::new("bad", 1, TopicReplication::Fixed(1)).set("index.fields", bad);
        let r = admin
            .create_topics([&t], &AdminOptions::new())
            .await
            .unwrap();
        match &r[0] {
            Err((_, code)) => assert_eq!(
                *code,
                rdkafka::types::RDKafkaErrorCode::InvalidConfig,
                "{bad}"
            ),
            Ok(_) => panic!("`{bad}` accepted"),
        }
    }
    create(&b, "good", 2, &[]).await;
    let out = Command::new(trib_bin())
        .args([
            "topic",
            "alter",
            "good",
            "-c",
            "index.fields=u=value:a..b",
            "-b",
            &b.bootstrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("JSON path `a..b` has an empty key"), "{err}");
    // A topic without an index says so.
    let body = http_get(b.http.unwrap(), "/index/query?topic=good&where=u%3D1");
    assert!(body.contains("indexes no fields"), "{body}");
    // Declared later on a topic with data: the existing log is indexed.
    produce(&b, "good", 0, 500);
    let alter = AlterConfig::new(ResourceSpecifier::Topic("good")).set("index.fields", FIELDS);
    let r = admin
        .alter_configs([&alter], &AdminOptions::new())
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    wait_indexed(&b, "good");
    let recs = scan(&b, "good", 2);
    check_answers(&b, "good", &recs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_lookups_match_the_broker_stamps() {
    let b = TestBroker::start(&[]);
    create(
        &b,
        "lat",
        1,
        &[
            ("message.timestamp.type", "LogAppendTime"),
            ("segment.bytes", "4096"),
        ],
    )
    .await;
    // Bursts 30 ms apart: the broker's clock stamps them, not the producer's (2023) times.
    for burst in 0..8 {
        produce(&b, "lat", burst * 50, burst * 50 + 50);
        std::thread::sleep(Duration::from_millis(30));
    }
    let recs = scan(&b, "lat", 1);
    assert!(
        recs.iter().all(|r| r.ts > BASE_TS + 100_000_000),
        "broker time, not create time"
    );
    let c: BaseConsumer = cfg(&b).set("group.id", "lat").create().unwrap();
    let mut stamps: Vec<i64> = recs.iter().map(|r| r.ts).collect();
    stamps.dedup();
    for target in stamps.iter().flat_map(|t| [t - 1, *t, t + 1]) {
        let mut q = TopicPartitionList::new();
        q.add_partition_offset("lat", 0, Offset::Offset(target))
            .unwrap();
        let got = c
            .offsets_for_times(q, Duration::from_secs(10))
            .unwrap()
            .elements()[0]
            .offset();
        let want = recs
            .iter()
            .find(|r| r.ts >= target)
            .map_or(Offset::End, |r| Offset::Offset(r.offset));
        assert_eq!(got, want, "lookup of {target}");
    }
}
