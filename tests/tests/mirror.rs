//! The mirror between two real brokers on loopback (two "regions"): offsets, batches and gaps
//! kept through kill -9 of the mirror and of the source broker; a consumer group that moves
//! regions after failover; an active-active pair without loops; source transactions; and
//! translating mode against a broker that refuses mirror writes (exactly once through kill -9,
//! group offsets translated).

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use trib_broker::log::batch::BatchHeader;
use trib_e2e::wire::call;
use trib_e2e::{poll_until, TestBroker, TestRun};

fn mirror_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write mirror file");
    p
}

/// A mirror file copying `topics_yaml` (e.g. `topics: [orders]`) from `a` to `b`, source `name`.
fn one_source(
    dir: &tempfile::TempDir,
    name: &str,
    a: &TestBroker,
    b: &TestBroker,
    topics_yaml: &str,
) -> PathBuf {
    mirror_file(
        dir,
        "mirror.yaml",
        &format!(
            "sources:\n  - name: {name}\n    brokers: {}\n    {topics_yaml}\ntarget:\n  brokers: {}\nsync_interval_ms: 300\n",
            a.bootstrap(),
            b.bootstrap()
        ),
    )
}

/// Runs `trib mirror failover --config FILE ARGS` and checks it succeeded.
fn failover(file: &Path, args: &[&str]) {
    let out = std::process::Command::new(trib_e2e::trib_bin())
        .args(["mirror", "failover", "--config"])
        .arg(file)
        .args(args)
        .output()
        .expect("trib mirror failover");
    assert!(
        out.status.success(),
        "failover: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_mirror(file: &Path) -> TestRun {
    TestRun::command(
        &["mirror".as_ref(), "--config".as_ref(), file.as_os_str()],
        &[],
    )
}

/// ListOffsets (-1 latest, -2 earliest) of one partition.
fn offset(b: &TestBroker, topic: &str, partition: i32, ts: i64) -> i64 {
    list_offset(b, topic, partition, ts, 0)
}

/// The last stable offset of one partition (ListOffsets latest, read_committed).
fn lso(b: &TestBroker, topic: &str, partition: i32) -> i64 {
    list_offset(b, topic, partition, -1, 1)
}

fn list_offset(b: &TestBroker, topic: &str, partition: i32, ts: i64, isolation: i8) -> i64 {
    let Ok(mut s) = TcpStream::connect(b.addr) else {
        return -1;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = ts;
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.into()));
    t.partitions.push(p);
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.isolation_level = isolation;
    req.topics.push(t);
    let r: ListOffsetsResponse = call(&mut s, ApiKey::ListOffsets, 4, &req);
    r.topics
        .first()
        .and_then(|t| t.partitions.first())
        .filter(|p| p.error_code == 0)
        .map_or(-1, |p| p.offset)
}

/// Every stored batch of a partition, as (base offset, bytes), read with raw Fetches.
fn raw_log(b: &TestBroker, topic: &str, partition: i32) -> Vec<(i64, Vec<u8>)> {
    let mut s = TcpStream::connect(b.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let end = offset(b, topic, partition, -1);
    let mut next = offset(b, topic, partition, -2);
    let mut out = Vec::new();
    while next < end {
        let mut fp = FetchPartition::default();
        fp.partition = partition;
        fp.fetch_offset = next;
        fp.partition_max_bytes = 1 << 20;
        fp.log_start_offset = -1;
        let mut t = FetchTopic::default();
        t.topic = TopicName(StrBytes::from_string(topic.into()));
        t.partitions.push(fp);
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_bytes = 4 << 20;
        req.session_epoch = -1;
        req.topics.push(t);
        let r: FetchResponse = call(&mut s, ApiKey::Fetch, 11, &req);
        let records = r.responses[0].partitions[0]
            .records
            .clone()
            .unwrap_or_default();
        let mut at = 0;
        let before = next;
        while at < records.len() {
            let Ok(h) = BatchHeader::parse(&records[at..]) else {
                break;
            };
            if at + h.total_len() > records.len() {
                break;
            }
            out.push((h.base_offset, records[at..at + h.total_len()].to_vec()));
            next = h.last_offset() + 1;
            at += h.total_len();
        }
        assert!(
            next > before,
            "fetch at {before} of {topic}/{partition} made no progress"
        );
    }
    out
}

/// A busy producer (keys, headers, lz4 batches) on its own thread, going on through kills.
struct Feeder {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Feeder {
    fn start(b: &TestBroker, topic: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let bootstrap = b.bootstrap();
        let topic = topic.to_string();
        let (stop2, acked2) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let p: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("enable.idempotence", "true")
                .set("compression.type", "lz4")
                .set("linger.ms", "5")
                .set("message.timeout.ms", "120000")
                .set("log_level", "0")
                .create()
                .expect("producer");
            let mut i = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let key = format!("k{}", i % 97);
                let payload = format!("order-{i}");
                let headers = OwnedHeaders::new().insert(Header {
                    key: "n",
                    value: Some(&i.to_string()),
                });
                match p.send(
                    BaseRecord::to(&topic)
                        .key(&key)
                        .payload(&payload)
                        .headers(headers),
                ) {
                    Ok(()) => i += 1,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
                if i.is_multiple_of(200) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            p.flush(Duration::from_secs(120)).expect("final flush");
            acked2.store(i, Ordering::Relaxed);
        });
        Self {
            stop,
            acked,
            thread,
        }
    }

    /// Stops, waits for every record to be acknowledged, and returns how many were sent.
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("feeder");
        self.acked.load(Ordering::Relaxed)
    }
}

/// A small random source (xorshift, seeded by the clock): `rand(n)` is in 0..n.
fn rng() -> impl FnMut(u64) -> u64 {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64)
        | 1;
    move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

fn producer(b: &TestBroker) -> ThreadedProducer<DefaultProducerContext> {
    b.client_config()
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .set("retry.backoff.ms", "50")
        .create()
        .expect("producer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_keeps_offsets_and_batches_through_kill9_of_mirror_and_source() {
    let mut a = TestBroker::start(&[]);
    let b = TestBroker::start(&[]);
    a.create_topic("orders", 3, &[("retention.ms", "86400000")])
        .await;
    // A gap at the start of partition 0: the source deleted records before the mirror started.
    {
        let p = producer(&a);
        for i in 0..50 {
            p.send(
                BaseRecord::to("orders")
                    .partition(0)
                    .key("early")
                    .payload(&format!("e{i}")),
            )
            .expect("send");
        }
        p.flush(Duration::from_secs(30)).expect("flush");
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            a.client_config().create().expect("admin");
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset("orders", 0, rdkafka::Offset::Offset(20))
            .expect("tpl");
        admin
            .delete_records(&tpl, &rdkafka::admin::AdminOptions::new())
            .await
            .expect("delete records");
    }
    let dir = tempfile::tempdir().expect("dir");
    let file = one_source(&dir, "east", &a, &b, "topics: [orders]");
    let mut mirror = start_mirror(&file);

    let feeder = Feeder::start(&a, "orders");
    // Kill -9 the mirror and the source broker at random points.
    let mut rand = rng();
    for round in 0..6 {
        std::thread::sleep(Duration::from_millis(300 + rand(900)));
        if round % 2 == 0 {
            mirror.kill9();
            std::thread::sleep(Duration::from_millis(rand(300)));
            mirror = start_mirror(&file);
        } else {
            a.kill9();
            std::thread::sleep(Duration::from_millis(rand(300)));
            a.restart();
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(feeder.finish() > 1000, "the producer made progress");

    // The target catches up; then both logs are the same, batch for batch.
    for p in 0..3 {
        let end = offset(&a, "orders", p, -1);
        poll_until(
            Duration::from_secs(60),
            || offset(&b, "orders", p, -1),
            |e| *e == end,
            |e| {
                format!(
                    "partition {p}: target at {e}, source at {end}\n{}",
                    mirror.log_text()
                )
            },
        );
        let (src, dst) = (raw_log(&a, "orders", p), raw_log(&b, "orders", p));
        assert_eq!(src.len(), dst.len(), "partition {p}: batch count");
        for ((so, sb), (to, tb)) in src.iter().zip(&dst) {
            assert_eq!(so, to, "partition {p}: batch offsets");
            assert_eq!(sb, tb, "partition {p}: batch at {so} differs");
        }
        assert_eq!(
            offset(&a, "orders", p, -2),
            offset(&b, "orders", p, -2),
            "partition {p}: log start"
        );
    }
    assert_eq!(
        offset(&b, "orders", 0, -2),
        20,
        "the gap at the start is kept"
    );
    mirror.stop();
}

/// Reads `n` records of `topic` in group `group`, committing as it goes; returns the payloads.
fn consume_group(b: &TestBroker, topic: &str, group: &str, n: usize) -> Vec<String> {
    let c: BaseConsumer = b
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records",
            got.len()
        );
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
            c.commit_message(&m, CommitMode::Sync).expect("commit");
        }
    }
    c.unsubscribe();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_moves_regions_after_failover_without_rereading_or_skipping() {
    let a = TestBroker::start(&[]);
    let b = TestBroker::start(&[]);
    a.create_topic("events", 2, &[]).await;
    let p = producer(&a);
    for i in 0..1000 {
        p.send(
            BaseRecord::to("events")
                .key(&format!("k{i}"))
                .payload(&format!("v{i}")),
        )
        .expect("send");
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    let dir = tempfile::tempdir().expect("dir");
    let file = one_source(&dir, "west", &a, &b, "topics_regex: 'ev.*'");
    let mut mirror = start_mirror(&file);
    // The mirror topic is read-only at the target until promoted.
    poll_until(
        Duration::from_secs(30),
        || offset(&b, "events", 0, -1) + offset(&b, "events", 1, -1),
        |n| *n == 1000,
        |n| format!("target has {n} of 1000\n{}", mirror.log_text()),
    );
    let refused: rdkafka::producer::FutureProducer = b.client_config().create().expect("producer");
    let e = refused
        .send(
            rdkafka::producer::FutureRecord::to("events")
                .key("x")
                .payload("refused"),
            Duration::from_secs(10),
        )
        .await
        .expect_err("a mirror topic is read-only");
    assert!(format!("{e:?}").contains("PolicyViolation"), "{e:?}");
    // Partitions added and configs changed at the source follow at the target.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        a.client_config().create().expect("admin");
    let opts = rdkafka::admin::AdminOptions::new();
    admin
        .create_partitions([&rdkafka::admin::NewPartitions::new("events", 3)], &opts)
        .await
        .expect("add a partition");
    let mut cfg =
        rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic("events"));
    cfg = cfg.set("retention.ms", "7200000");
    admin
        .alter_configs([&cfg], &opts)
        .await
        .expect("alter configs");
    let target_admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        b.client_config().create().expect("admin");
    poll_until(
        Duration::from_secs(20),
        || {
            let parts = offset(&b, "events", 2, -1);
            let retention = futures::executor::block_on(
                target_admin
                    .describe_configs([&rdkafka::admin::ResourceSpecifier::Topic("events")], &opts),
            )
            .ok()
            .and_then(|r| r.into_iter().next())
            .and_then(|r| r.ok())
            .and_then(|r| r.get("retention.ms").and_then(|e| e.value.clone()));
            (parts, retention)
        },
        |(parts, retention)| *parts == 0 && retention.as_deref() == Some("7200000"),
        |v| {
            format!(
                "target partition 2 / retention: {v:?}\n{}",
                mirror.log_text()
            )
        },
    );
    // Region A: the group reads 400 records, committing each.
    let first = consume_group(&a, "events", "billing", 400);
    // Failover to region B: caught up, groups carried, topics promoted.
    let report_path = dir.path().join("failover.json");
    let report_arg = report_path.display().to_string();
    failover(&file, &["--wait", "20s", "--report", &report_arg]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    assert_eq!(report["promoted"], serde_json::json!(["events"]));
    let positions = report["groups"]["billing"]
        .as_object()
        .expect("billing positions");
    let total: i64 = positions.values().filter_map(|v| v.as_i64()).sum();
    assert_eq!(
        total, 400,
        "the group stands where it stopped: {positions:?}"
    );
    // The mirror stops copying the promoted topic; producers may now write it.
    mirror.wait_log("not a mirror topic", Duration::from_secs(10));
    let p = producer(&b);
    for i in 1000..1010 {
        p.send(
            BaseRecord::to("events")
                .key(&format!("k{i}"))
                .payload(&format!("v{i}")),
        )
        .expect("send");
    }
    p.flush(Duration::from_secs(30))
        .expect("flush at the target after promotion");
    // Region B: the group goes on with the 610 records it has not read.
    let rest = consume_group(&b, "events", "billing", 610);
    let all: BTreeSet<&String> = first.iter().chain(&rest).collect();
    assert_eq!(all.len(), 1010, "no record read twice or skipped");
    let expected: BTreeSet<String> = (0..1010).map(|i| format!("v{i}")).collect();
    assert_eq!(all.into_iter().cloned().collect::<BTreeSet<_>>(), expected);
    mirror.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_active_pair_does_not_loop() {
    let a = TestBroker::start(&[]);
    let b = TestBroker::start(&[]);
    a.create_topic("orders", 1, &[]).await;
    b.create_topic("orders", 1, &[]).await;
    let dir = tempfile::tempdir().expect("dir");
    let conf = |from: &TestBroker, to: &TestBroker, name: &str| {
        format!(
            "sources:\n  - name: {name}\n    brokers: {}\n    topics_regex: '.*'\n    prefix: {name}.\ntarget:\n  brokers: {}\nsync_interval_ms: 300\n",
            from.bootstrap(),
            to.bootstrap()
        )
    };
    let a_to_b = mirror_file(&dir, "a-to-b.yaml", &conf(&a, &b, "a"));
    let b_to_a = mirror_file(&dir, "b-to-a.yaml", &conf(&b, &a, "b"));
    let mut m1 = start_mirror(&a_to_b);
    let mut m2 = start_mirror(&b_to_a);
    for (broker, n) in [(&a, 100), (&b, 70)] {
        let p = producer(broker);
        for i in 0..n {
            p.send(BaseRecord::to("orders").key("k").payload(&format!("{i}")))
                .expect("send");
        }
        p.flush(Duration::from_secs(30)).expect("flush");
    }
    poll_until(
        Duration::from_secs(30),
        || (offset(&b, "a.orders", 0, -1), offset(&a, "b.orders", 0, -1)),
        |v| *v == (100, 70),
        |v| format!("copies so far {v:?}\n{}\n{}", m1.log_text(), m2.log_text()),
    );
    // Several sync rounds later, no copy of a copy exists on either side.
    m1.wait_log("copying it back would loop", Duration::from_secs(10));
    m2.wait_log("copying it back would loop", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1000));
    for (broker, name) in [
        (&a, "a.b.orders"),
        (&b, "b.a.orders"),
        (&a, "b.a.orders"),
        (&b, "a.b.orders"),
    ] {
        assert_eq!(offset(broker, name, 0, -1), -1, "{name} must not exist");
    }
    assert_eq!(offset(&a, "orders", 0, -1), 100);
    assert_eq!(offset(&b, "orders", 0, -1), 70);
    m1.stop();
    m2.stop();
}

/// One record as a read_committed consumer sees it: key, value, headers, timestamp.
type Rec = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
    i64,
);

/// Every record of one partition, read_committed, from the start to the end.
fn committed_records(b: &TestBroker, topic: &str, partition: i32) -> Vec<Rec> {
    let c: BaseConsumer = b
        .client_config()
        .set("group.id", "compare")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "reading {topic}/{partition} stalled"
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                use rdkafka::message::Headers;
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map(<[u8]>::to_vec),
                    headers,
                    m.timestamp().to_millis().unwrap_or(-1),
                ));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("consume failed: {e}"),
            None => {}
        }
    }
}

fn cluster_id(b: &TestBroker) -> String {
    let c: BaseConsumer = b.client_config().create().expect("client");
    c.client()
        .fetch_cluster_id(Duration::from_secs(10))
        .expect("cluster id")
}

/// `trib mirror status --json`: (target topic, partition, lag in records) per partition.
fn status(file: &Path) -> Vec<(String, i64, i64)> {
    status_with(file, &[])
}

/// [`status`] with extra environment variables (for files that interpolate them).
fn status_with(file: &Path, env: &[(&str, &str)]) -> Vec<(String, i64, i64)> {
    let out = std::process::Command::new(trib_e2e::trib_bin())
        .args(["mirror", "status", "--json", "--config"])
        .arg(file)
        .envs(env.iter().copied())
        .output()
        .expect("trib mirror status");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["target_topic"].as_str().unwrap_or_default().to_string(),
                        s["partition"].as_i64().unwrap_or(-1),
                        s["lag_records"].as_i64().unwrap_or(-1),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translating_mode_copies_exactly_once_through_kill9_and_translates_group_offsets() {
    // The target is a broker with offset preservation off: the mirror must translate.
    let mut a = TestBroker::start(&[]);
    let b = TestBroker::start(&["--no-mirror-writes"]);
    a.create_topic("orders", 2, &[]).await;
    let (a_id, b_id) = (cluster_id(&a), cluster_id(&b));
    let t = Duration::from_secs(15);
    // Source transactions on partition 0: committed, aborted, committed.
    {
        let p: ThreadedProducer<DefaultProducerContext> = a
            .client_config()
            .set("transactional.id", "orders-app")
            .set("linger.ms", "1")
            .create()
            .expect("transactional producer");
        p.init_transactions(t).expect("init");
        for (name, n, commit) in [("c1", 5, true), ("ab", 3, false), ("c2", 2, true)] {
            p.begin_transaction().expect("begin");
            for i in 0..n {
                p.send(
                    BaseRecord::<str, str>::to("orders")
                        .partition(0)
                        .payload(&format!("{name}-{i}")),
                )
                .map_err(|(e, _)| e)
                .expect("send");
            }
            if commit {
                p.commit_transaction(t).expect("commit");
            } else {
                p.abort_transaction(t).expect("abort");
            }
        }
    }
    // A record that came from the target cluster: never copied back there.
    {
        let p = producer(&a);
        p.send(
            BaseRecord::to("orders")
                .partition(1)
                .key("looped")
                .payload("from-b")
                .headers(OwnedHeaders::new().insert(Header {
                    key: "trib.mirror.source",
                    value: Some(b_id.as_bytes()),
                })),
        )
        .map_err(|(e, _)| e)
        .expect("send");
        p.flush(t).expect("flush");
    }
    let dir = tempfile::tempdir().expect("dir");
    // Small batches at the target: each round writes many batches per partition (pipelined
    // waves), and the offset map's runs span them.
    let file = mirror_file(
        &dir,
        "mirror.yaml",
        &format!(
            "sources:\n  - name: east\n    brokers: {}\n    topics: [orders]\ntarget:\n  brokers: {}\nsync_interval_ms: 300\nbatch_max_bytes: 2048\n",
            a.bootstrap(),
            b.bootstrap()
        ),
    );
    let mut mirror = start_mirror(&file);
    mirror.wait_log("transactional copy ready", Duration::from_secs(30));

    // Busy traffic, a group reading part of it at the source, and kill -9 of the mirror (and
    // once of the source) at random points.
    let feeder = Feeder::start(&a, "orders");
    let mut rand = rng();
    let mut read_at_a = Vec::new();
    for round in 0..5 {
        std::thread::sleep(Duration::from_millis(300 + rand(900)));
        if round == 1 {
            read_at_a = consume_group(&a, "orders", "billing", 400);
        }
        if round == 3 {
            a.kill9();
            std::thread::sleep(Duration::from_millis(rand(300)));
            a.restart();
        } else {
            mirror.kill9();
            std::thread::sleep(Duration::from_millis(rand(300)));
            mirror = start_mirror(&file);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(feeder.finish() > 1000, "the producer made progress");

    // Caught up: every partition's map reaches the source's stable end.
    poll_until(
        Duration::from_secs(90),
        || status(&file),
        |s| s.len() == 2 && s.iter().all(|(_, _, lag)| *lag == 0),
        |s| format!("status {s:?}\n{}", mirror.log_text()),
    );
    // Record for record: what the source committed is at the target once, in order, with
    // key, value, headers and timestamp, plus the provenance header; nothing else.
    for p in 0..2 {
        let mut src = committed_records(&a, "orders", p);
        let dst = committed_records(&b, "orders", p);
        src.retain(|r| r.0.as_deref() != Some(b"looped"));
        let stripped: Vec<Rec> = dst
            .into_iter()
            .map(|(k, v, mut h, ts)| {
                let last = h.pop();
                assert_eq!(
                    last,
                    Some((
                        "trib.mirror.source".to_string(),
                        Some(a_id.as_bytes().to_vec())
                    )),
                    "partition {p}: provenance header"
                );
                (k, v, h, ts)
            })
            .collect();
        assert_eq!(src.len(), stripped.len(), "partition {p}: record count");
        for (i, (s, d)) in src.iter().zip(&stripped).enumerate() {
            assert_eq!(s, d, "partition {p}: record {i}");
        }
    }
    let values: BTreeSet<String> = (0..2)
        .flat_map(|p| committed_records(&b, "orders", p))
        .filter_map(|r| r.1.map(|v| String::from_utf8_lossy(&v).to_string()))
        .collect();
    assert!(values.contains("c2-1") && !values.contains("ab-0") && !values.contains("from-b"));

    // The group moves regions: its position is translated through the offset map, so it
    // reads every remaining record once.
    read_at_a.retain(|v| v != "from-b");
    let total = values.len();
    failover(&file, &["--wait", "10s"]);
    mirror.stop();
    let rest = consume_group(&b, "orders", "billing", total - read_at_a.len());
    let mut all: Vec<String> = read_at_a.iter().chain(&rest).cloned().collect();
    all.sort();
    let unique: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "no record read twice across regions"
    );
    assert_eq!(unique, values, "no record skipped across regions");

    // mode: preserve refuses such a target, and the broker refuses mirror topics outright.
    let strict = mirror_file(
        &dir,
        "strict.yaml",
        &format!(
            "sources:\n  - name: east\n    brokers: {}\n    topics: [orders]\ntarget:\n  brokers: {}\nmode: preserve\n",
            a.bootstrap(),
            b.bootstrap()
        ),
    );
    let mut m = start_mirror(&strict);
    assert!(!m.wait_exit(Duration::from_secs(30)), "preserve must fail");
    assert!(
        m.log_text()
            .contains("mode: preserve needs a Tributary target"),
        "{}",
        m.log_text()
    );
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        b.client_config().create().expect("admin");
    let t = rdkafka::admin::NewTopic::new("m", 1, rdkafka::admin::TopicReplication::Fixed(1))
        .set("mirror.source.cluster", "abc");
    let r = admin
        .create_topics([&t], &rdkafka::admin::AdminOptions::new())
        .await
        .expect("create topics");
    let e = r[0].as_ref().expect_err("refused");
    assert!(format!("{e:?}").contains("InvalidConfig"), "{e:?}");
}

/// Every value of partition 0 of `topic` as a read_committed consumer sees it, to the end.
fn read_committed(b: &TestBroker, topic: &str) -> Vec<String> {
    let c: BaseConsumer = b
        .client_config()
        .set("group.id", "reader")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "reading {topic} stalled");
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string())
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("consume failed: {e}"),
            None => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_transactions_are_mirrored_and_promotion_aborts_the_open_one() {
    let a = TestBroker::start(&[]);
    let b = TestBroker::start(&[]);
    a.create_topic("payments", 1, &[]).await;
    let t = Duration::from_secs(15);
    let p: ThreadedProducer<DefaultProducerContext> = a
        .client_config()
        .set("transactional.id", "payments-app")
        .set("linger.ms", "1")
        .create()
        .expect("transactional producer");
    p.init_transactions(t).expect("init");
    let send = |prefix: &str, n: usize| {
        for i in 0..n {
            p.send(
                BaseRecord::<str, str>::to("payments")
                    .partition(0)
                    .payload(&format!("{prefix}-{i}")),
            )
            .map_err(|(e, _)| e)
            .expect("send");
        }
    };
    p.begin_transaction().expect("begin");
    send("c1", 5);
    p.commit_transaction(t).expect("commit");
    p.begin_transaction().expect("begin");
    send("ab", 3);
    p.abort_transaction(t).expect("abort");
    p.begin_transaction().expect("begin");
    send("c2", 2);
    p.commit_transaction(t).expect("commit");
    // A transaction left open at the source (its producer stays alive, silent).
    p.begin_transaction().expect("begin");
    send("open", 4);
    p.flush(t).expect("flush");
    let (end, stable) = (offset(&a, "payments", 0, -1), lso(&a, "payments", 0));
    assert!(stable < end, "the source has an open transaction");

    let dir = tempfile::tempdir().expect("dir");
    let file = one_source(&dir, "east", &a, &b, "topics: [payments]");
    let mut mirror = start_mirror(&file);
    poll_until(
        Duration::from_secs(30),
        || offset(&b, "payments", 0, -1),
        |e| *e == end,
        |e| format!("target at {e} of {end}\n{}", mirror.log_text()),
    );
    // The target knows the same transactions: same last stable offset, same committed records.
    assert_eq!(
        lso(&b, "payments", 0),
        stable,
        "the open transaction holds the target's LSO too"
    );
    // Promotion aborts the source's open transaction at the target, so readers are not held.
    failover(&file, &["--wait", "10s"]);
    poll_until(
        Duration::from_secs(10),
        || (lso(&b, "payments", 0), offset(&b, "payments", 0, -1)),
        |(l, e)| l == e && *e == end + 1,
        |v| format!("target (LSO, end) {v:?}, source end {end}"),
    );
    let mut committed = read_committed(&b, "payments");
    committed.sort();
    assert_eq!(
        committed,
        vec!["c1-0", "c1-1", "c1-2", "c1-3", "c1-4", "c2-0", "c2-1"]
    );
    mirror.stop();
    drop(p);
}

/// The mirror as a pipeline source: `trib run examples/mirror-pipeline.yaml` copies at the same
/// offsets, reports on the pipeline's /metrics, and stops cleanly with the pipeline.
#[tokio::test(flavor = "multi_thread")]
async fn mirror_runs_as_a_pipeline_source() {
    let a = TestBroker::start(&[]);
    let b = TestBroker::start(&[]);
    a.create_topic("orders", 2, &[]).await;
    a.create_topic("logs.web", 1, &[]).await;
    let p = producer(&a);
    for i in 0..300 {
        let topic = if i % 3 == 0 { "logs.web" } else { "orders" };
        p.send(
            BaseRecord::to(topic)
                .key(&format!("k{i}"))
                .payload(&format!("v{i}")),
        )
        .expect("send");
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mirror-pipeline.yaml");
    let env = [
        ("EAST_BROKERS", a.bootstrap()),
        ("WEST_BROKERS", b.bootstrap()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut run = TestRun::start(&[&example], &env);
    for (topic, partition) in [("orders", 0), ("orders", 1), ("logs.web", 0)] {
        let end = offset(&a, topic, partition, -1);
        poll_until(
            Duration::from_secs(60),
            || offset(&b, topic, partition, -1),
            |e| *e == end,
            |e| {
                format!(
                    "{topic}/{partition}: target at {e}, source at {end}\n{}",
                    run.log_text()
                )
            },
        );
        assert_eq!(
            raw_log(&a, topic, partition),
            raw_log(&b, topic, partition),
            "{topic}/{partition}: the same batches at the same offsets"
        );
    }
    poll_until(
        Duration::from_secs(30),
        || (run.metric("events_out", "dr"), run.metric("lag", "dr")),
        |(out, lag)| *out >= 300.0 && *lag == 0.0,
        |m| {
            format!(
                "pipeline metrics of `dr` (records out, lag): {m:?}\n{}",
                run.get("/metrics")
            )
        },
    );
    // `trib mirror status` reads the pipeline file's mirror.
    let mut st = status_with(&example, &env);
    st.sort();
    assert_eq!(
        st,
        vec![
            ("logs.web".to_string(), 0, 0),
            ("orders".to_string(), 0, 0),
            ("orders".to_string(), 1, 0)
        ],
        "status of the pipeline's mirror"
    );
    // Records written after the start follow.
    p.send(
        BaseRecord::to("orders")
            .partition(1)
            .key("late")
            .payload("late"),
    )
    .expect("send");
    p.flush(Duration::from_secs(30)).expect("flush");
    let end = offset(&a, "orders", 1, -1);
    poll_until(
        Duration::from_secs(30),
        || offset(&b, "orders", 1, -1),
        |e| *e == end,
        |e| format!("late record: target at {e}, source at {end}"),
    );
    assert!(
        run.stop(),
        "the pipeline stops cleanly:\n{}",
        run.log_text()
    );
    assert!(
        run.log_text().contains("mirror link stopped"),
        "{}",
        run.log_text()
    );
}
