//! Round trips through librdkafka (the rdkafka crate): every codec with keys, headers and null
//! values; a long-poll fetch that wakes on produce; timestamp lookups across segments against a
//! brute-force answer; retention and DeleteRecords moving the log start.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use trib_e2e::TestBroker;

fn cfg(b: &TestBroker) -> ClientConfig {
    b.client_config()
}

fn consumer(b: &TestBroker, topic: &str, partition: i32, from: Offset) -> BaseConsumer {
    let c: BaseConsumer = cfg(b)
        .set("group.id", "rt")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, from).unwrap();
    c.assign(&tpl).unwrap();
    c
}

fn poll_n(c: &BaseConsumer, n: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(Instant::now() < deadline, "got {} of {n}", out.len());
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            out.push(m.unwrap().detach());
        }
    }
    out
}

async fn create(b: &TestBroker, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    b.create_topic(name, partitions, configs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips_keys_headers_and_nulls() {
    let b = TestBroker::start(&[]);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        create(&b, &topic, 1, &[]).await;
        let p: FutureProducer = cfg(&b)
            .set("compression.type", codec)
            .set("linger.ms", "20")
            .create()
            .unwrap();
        let mut futs = Vec::new();
        for i in 0..200 {
            let value = format!("{codec}-value-{i}-{}", "abc".repeat(i % 50));
            let key = format!("key-{i}");
            let h = OwnedHeaders::new().insert(Header {
                key: "n",
                value: Some(&i.to_string()),
            });
            let mut rec = FutureRecord::to(&topic).key(&key).headers(h);
            if i % 10 != 3 {
                rec = rec.payload(&value);
            }
            futs.push(p.send_result(rec).map_err(|(e, _)| e).unwrap());
        }
        for f in futs {
            f.await.unwrap().unwrap();
        }
        let c = consumer(&b, &topic, 0, Offset::Beginning);
        let msgs = poll_n(&c, 200);
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.offset(), i as i64, "{codec}");
            assert_eq!(m.key(), Some(format!("key-{i}").as_bytes()));
            if i % 10 == 3 {
                assert!(m.payload().is_none(), "{codec}: null value stays null");
            } else {
                assert_eq!(
                    m.payload(),
                    Some(format!("{codec}-value-{i}-{}", "abc".repeat(i % 50)).as_bytes())
                );
            }
            let h = m.headers().unwrap().get(0);
            assert_eq!((h.key, h.value), ("n", Some(i.to_string().as_bytes())));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fetch_wakes_on_produce() {
    let b = TestBroker::start(&[]);
    create(&b, "lp", 1, &[]).await;
    let c: BaseConsumer = cfg(&b)
        .set("group.id", "lp")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5000")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("lp", 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    // Let the consumer park in a long poll, then produce.
    let _ = c.poll(Duration::from_millis(1500));
    let p: FutureProducer = cfg(&b).create().unwrap();
    let sent = Instant::now();
    p.send(
        FutureRecord::to("lp").key("k").payload("wake"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let m = poll_n(&c, 1);
    assert_eq!(m[0].payload(), Some(&b"wake"[..]));
    // With a 5 s max wait, arriving well before it proves the fetch woke on the append.
    assert!(
        sent.elapsed() < Duration::from_millis(2500),
        "fetch waited {:?}",
        sent.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_lookup_matches_brute_force_across_segments() {
    let b = TestBroker::start(&["--segment-bytes", "2048"]);
    create(&b, "ts", 1, &[]).await;
    let p: FutureProducer = cfg(&b).set("linger.ms", "0").create().unwrap();
    // Skewed, out-of-order timestamps.
    let base = 1_700_000_000_000i64;
    let stamps: Vec<i64> = (0..300i64)
        .map(|i| base + i * 10 + if i % 7 == 0 { -35 } else { 0 } + (i % 3) * 4)
        .collect();
    for (i, ts) in stamps.iter().enumerate() {
        p.send(
            FutureRecord::to("ts")
                .key("k")
                .payload(&format!("{i}"))
                .timestamp(*ts),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    let segments = std::fs::read_dir(b.data_dir().join("ts-0"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
        })
        .count();
    assert!(segments > 5, "the data spans many segments ({segments})");
    let c: BaseConsumer = cfg(&b).set("group.id", "ts").create().unwrap();
    for target in [
        base - 100,
        base,
        base + 1,
        base + 695,
        base + 1234,
        base + 2990,
        base + 5000,
    ] {
        let mut q = TopicPartitionList::new();
        q.add_partition_offset("ts", 0, Offset::Offset(target))
            .unwrap();
        let r = c.offsets_for_times(q, Duration::from_secs(10)).unwrap();
        let got = r.elements()[0].offset();
        let expect = stamps
            .iter()
            .position(|t| *t >= target)
            .map_or(Offset::End, |i| Offset::Offset(i as i64));
        assert_eq!(got, expect, "lookup of {target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_delete_records_move_the_log_start() {
    let b = TestBroker::start(&["--retention-check-interval-ms", "200"]);
    create(
        &b,
        "ret",
        1,
        &[("segment.bytes", "1024"), ("retention.bytes", "4096")],
    )
    .await;
    create(&b, "del", 1, &[]).await;
    let p: FutureProducer = cfg(&b).set("linger.ms", "0").create().unwrap();
    for i in 0..200 {
        p.send(
            FutureRecord::to("ret")
                .key("k")
                .payload(&format!("value-{i:05}")),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        p.send(
            FutureRecord::to("del").key("k").payload(&format!("{i}")),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    let c: BaseConsumer = cfg(&b).set("group.id", "ret").create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (lo, hi) = c
            .fetch_watermarks("ret", 0, Duration::from_secs(5))
            .unwrap();
        assert_eq!(hi, 200);
        if lo > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention never moved the log start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin: AdminClient<DefaultClientContext> = cfg(&b).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("del", 0, Offset::Offset(150))
        .unwrap();
    let r = admin
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .unwrap();
    assert_eq!(r.elements()[0].offset(), Offset::Offset(150));
    let (lo, _) = c
        .fetch_watermarks("del", 0, Duration::from_secs(5))
        .unwrap();
    assert_eq!(lo, 150);
    let from_start = consumer(&b, "del", 0, Offset::Beginning);
    assert_eq!(poll_n(&from_start, 1)[0].payload(), Some(&b"150"[..]));
}
