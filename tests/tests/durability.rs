//! Durability: with `flush: fsync` and acks=all, every acknowledged record survives kill -9 of
//! the broker, in order, uncorrupted; a torn or garbage tail is truncated at restart and the
//! broker keeps serving.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use trib_e2e::TestBroker;

/// An acknowledged record: partition, offset, value.
type Acked = (i32, i64, Vec<u8>);

fn producer(b: &TestBroker) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "4000")
        .set("log_level", "0")
        .create()
        .unwrap()
}

/// Reads every record of `topic`/`partition` up to the high watermark: offset → value.
fn read_all(b: &TestBroker, topic: &str, partition: i32) -> BTreeMap<i64, Vec<u8>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "durability-check")
        .set("enable.auto.commit", "false")
        .set("check.crcs", "true")
        .set("log_level", "0")
        .create()
        .unwrap();
    let (_, hw) = c
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.last_key_value().map_or(0, |(o, _): (&i64, _)| o + 1) < hw {
        assert!(
            Instant::now() < deadline,
            "read stalled at {} of {hw}",
            out.len()
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("consume without corruption");
            out.insert(m.offset(), m.payload().unwrap_or_default().to_vec());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill9_loop_under_fsync() {
    let mut b = TestBroker::start(&[
        "--flush",
        "fsync",
        "--num-partitions",
        "3",
        "--segment-bytes",
        "65536",
    ]);
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    for round in 0..5 {
        let p = producer(&b);
        let stop = Instant::now() + Duration::from_millis(800);
        let mut sent = Vec::new();
        let mut i = 0u64;
        while Instant::now() < stop {
            let value =
                format!("round{round}-rec{i}-{}", "x".repeat((i % 200) as usize)).into_bytes();
            let key = format!("k{}", i % 17);
            let fut = p.send_result(FutureRecord::to("crash").key(&key).payload(&value));
            if let Ok(f) = fut {
                sent.push((value, f));
            }
            i += 1;
            if i.is_multiple_of(64) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        b.kill9();
        for (value, f) in sent {
            if let Ok(Ok(d)) = f.await {
                acked.lock().unwrap().push((d.partition, d.offset, value));
            }
        }
        b.restart();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the test acknowledged too little to mean anything: {}",
        acked.len()
    );
    let mut logs: BTreeMap<i32, BTreeMap<i64, Vec<u8>>> = BTreeMap::new();
    for p in 0..3 {
        logs.insert(p, read_all(&b, "crash", p));
    }
    for (p, off, value) in &acked {
        let got = logs[p].get(off);
        assert_eq!(
            got,
            Some(value),
            "acknowledged record {p}/{off} lost or changed"
        );
    }
    // Offsets are dense: nothing is half-written in between.
    for (p, log) in &logs {
        let offs: Vec<i64> = log.keys().copied().collect();
        assert!(
            offs.windows(2).all(|w| w[1] == w[0] + 1),
            "partition {p} has holes"
        );
    }
    eprintln!(
        "{} acknowledged records survived 5 kill -9 rounds",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_and_garbage_tails_are_truncated_and_serving_resumes() {
    let mut b = TestBroker::start(&["--num-partitions", "1"]);
    let p = producer(&b);
    for i in 0..100 {
        p.send(
            FutureRecord::to("torn").key("k").payload(&format!("v{i}")),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    drop(p);
    b.kill9();
    let seg = b.data_dir().join("torn-0").join(format!("{:020}.log", 0));
    let len = std::fs::metadata(&seg).unwrap().len();
    // Cut the last batch in half, then add garbage after it.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 20).unwrap();
    drop(f);
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(50)).unwrap();
    drop(f);
    b.restart();
    assert!(
        b.log_text().contains("truncated segment"),
        "recovery reports the truncation"
    );
    let log = read_all(&b, "torn", 0);
    assert_eq!(
        log.len(),
        99,
        "all whole batches before the torn one are kept"
    );
    assert_eq!(log[&98], b"v98".to_vec());
    let p = producer(&b);
    let d = p
        .send(
            FutureRecord::to("torn").key("k").payload("after"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        d.offset, 99,
        "appends continue right after the last whole batch"
    );
    assert_eq!(read_all(&b, "torn", 0)[&99], b"after".to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_restart_keeps_everything_and_skips_the_scan() {
    let mut b = TestBroker::start(&["--num-partitions", "2", "--segment-bytes", "4096"]);
    let p = producer(&b);
    for i in 0..500 {
        p.send(
            FutureRecord::to("clean")
                .key(&format!("{i}"))
                .payload(&format!("v{i}")),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    drop(p);
    let before: Vec<_> = (0..2).map(|p| read_all(&b, "clean", p)).collect();
    b.stop();
    assert!(b.log_text().contains("stopped cleanly"));
    b.restart();
    let after: Vec<_> = (0..2).map(|p| read_all(&b, "clean", p)).collect();
    assert_eq!(before, after);
    assert_eq!(before.iter().map(|l| l.len()).sum::<usize>(), 500);
}

/// librdkafka's idempotent producer through broker kill -9s: batches it retries after a crash
/// (some already in the log) are stored once, in order, and every acknowledged one is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_retries_across_kill9_store_each_record_once() {
    // Under fsync a batch is written well before it is acknowledged, so kills land in that
    // window and the producer retries batches that are already in the log.
    let mut b = TestBroker::start(&["--num-partitions", "1", "--flush", "fsync"]);
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000")
        .set("retry.backoff.ms", "50")
        .set("log_level", "0")
        .create()
        .unwrap();
    let mut futs = Vec::new();
    let mut next = 0u64;
    for _round in 0..6 {
        let stop = Instant::now() + Duration::from_millis(500);
        while Instant::now() < stop {
            let v = format!("{next:08}");
            if let Ok(f) = p.send_result(FutureRecord::to("idem").key("k").payload(&v)) {
                futs.push((v, f));
                next += 1;
            }
            if next.is_multiple_of(32) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        b.kill9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.restart();
    }
    let mut acked = Vec::new();
    for (v, f) in futs {
        if let Ok(Ok(_)) = f.await {
            acked.push(v.into_bytes());
        }
    }
    assert!(
        acked.len() > 100,
        "too few acknowledged records: {}",
        acked.len()
    );
    let log = read_all(&b, "idem", 0);
    let values: Vec<&Vec<u8>> = log.values().collect();
    let mut seen = std::collections::HashSet::new();
    for v in &values {
        assert!(
            seen.insert(*v),
            "record {} stored twice",
            String::from_utf8_lossy(v)
        );
    }
    assert!(
        values.windows(2).all(|w| w[0] < w[1]),
        "records stay in send order"
    );
    for v in &acked {
        assert!(
            seen.contains(v),
            "acknowledged record {} lost",
            String::from_utf8_lossy(v)
        );
    }
}

/// A loopback TCP proxy in front of the broker that can cut every open connection at once.
struct FlakyProxy {
    addr: std::net::SocketAddr,
    conns: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl FlakyProxy {
    fn start(upstream: std::net::SocketAddr, port: u16) -> Self {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let track = conns.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let pairs = [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ];
                if let Ok(mut t) = track.lock() {
                    t.extend(client.try_clone());
                    t.extend(server.try_clone());
                }
                for (from, to) in pairs {
                    if let (Ok(mut from), Ok(mut to)) = (from, to) {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
            }
        });
        Self { addr, conns }
    }

    /// Cuts every connection open now (requests or responses in flight are lost).
    fn cut(&self) -> usize {
        let mut conns = self.conns.lock().expect("proxy connections");
        let n = conns.len();
        for c in conns.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        n
    }
}

/// librdkafka's idempotent producer through a network that drops every connection every few
/// hundred milliseconds: requests the broker already wrote are retried after the cut, and each
/// record is still stored once, in send order, with nothing acknowledged lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_through_cut_connections_stores_each_record_once() {
    let proxy_port = trib_e2e::free_port();
    let advertised = format!("127.0.0.1:{proxy_port}");
    let b = TestBroker::start(&["--num-partitions", "1", "--advertised", &advertised]);
    let proxy = FlakyProxy::start(b.addr, proxy_port);
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", proxy.addr.to_string())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .set("retry.backoff.ms", "20")
        .set("reconnect.backoff.ms", "20")
        .set("log_level", "0")
        .create()
        .unwrap();
    // Cut every connection every 250 ms while records are sent (paced over ~2 s) and until the
    // last one is acknowledged.
    let proxy = Arc::new(proxy);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chaos = {
        let (proxy, stop) = (proxy.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut cuts = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(250));
                cuts += proxy.cut();
            }
            cuts
        })
    };
    let mut futs = Vec::new();
    for i in 0..20_000u32 {
        let v = format!("{i:08}");
        loop {
            match p.send_result(FutureRecord::to("flaky").key("k").payload(&v)) {
                Ok(f) => {
                    futs.push((v.clone(), f));
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut acked = Vec::new();
    for (v, f) in futs {
        match f.await {
            Ok(Ok(_)) => acked.push(v.into_bytes()),
            other => panic!("record {v} not delivered: {other:?}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let cuts = chaos.join().expect("chaos thread");
    assert!(cuts >= 6, "the proxy cut only {cuts} connections");
    let log = read_all(&b, "flaky", 0);
    let values: Vec<&Vec<u8>> = log.values().collect();
    assert_eq!(
        values.len(),
        acked.len(),
        "stored exactly what was acknowledged"
    );
    assert!(
        values.windows(2).all(|w| w[0] < w[1]),
        "records stored once each, in send order"
    );
}
