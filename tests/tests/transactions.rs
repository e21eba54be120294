//! Transactions through librdkafka (the rdkafka crate) against the real broker: commit and
//! abort seen through read_committed and read_uncommitted consumers, the last stable offset,
//! zombie fencing, timeout aborts, consume-transform-produce with offsets in the transaction,
//! the admin views, and a bounded randomized test with kill -9 restarts checked for no aborted
//! reads, no lost commits, no duplicates and per-producer order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest,
    DescribeTransactionsResponse, ListTransactionsRequest, ListTransactionsResponse, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use trib_e2e::wire::call;
use trib_e2e::TestBroker;

type TxnProducer = ThreadedProducer<DefaultProducerContext>;

const T: Duration = Duration::from_secs(15);

fn txn_producer(b: &TestBroker, id: &str, extra: &[(&str, &str)]) -> TxnProducer {
    let mut c = b.client_config();
    c.set("transactional.id", id).set("linger.ms", "1");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let p: TxnProducer = c.create().expect("transactional producer");
    p.init_transactions(T).expect("init_transactions");
    p
}

fn send(p: &TxnProducer, topic: &str, partition: i32, value: &str) {
    p.send(
        BaseRecord::<str, str>::to(topic)
            .partition(partition)
            .key(value)
            .payload(value),
    )
    .map_err(|(e, _)| e)
    .expect("enqueue");
}

/// Every value in `topic` (all `partitions`) up to the end as `isolation` sees it, per partition.
fn read(
    b: &TestBroker,
    topic: &str,
    partitions: i32,
    isolation: &str,
) -> BTreeMap<i32, Vec<String>> {
    let c: BaseConsumer = b
        .client_config()
        .set("group.id", "txn-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out: BTreeMap<i32, Vec<String>> = (0..partitions).map(|p| (p, vec![])).collect();
    let mut eof = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while eof.len() < partitions as usize {
        assert!(Instant::now() < deadline, "reading {topic} stalled");
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                eof.remove(&m.partition());
                out.entry(m.partition())
                    .or_default()
                    .push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("consume failed: {e}"),
            None => {}
        }
    }
    out
}

fn all(m: &BTreeMap<i32, Vec<String>>) -> Vec<String> {
    let mut v: Vec<String> = m.values().flatten().cloned().collect();
    v.sort();
    v
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_abort_and_the_two_isolation_levels() {
    let b = TestBroker::start(&[]);
    b.create_topic("tx", 2, &[]).await;
    let p = txn_producer(&b, "views", &[]);
    p.begin_transaction().unwrap();
    for i in 0..10 {
        send(&p, "tx", i % 2, &format!("committed-{i:03}"));
    }
    p.commit_transaction(T).expect("commit");
    p.begin_transaction().unwrap();
    for i in 0..6 {
        send(&p, "tx", i % 2, &format!("aborted-{i:03}"));
    }
    p.flush(T).unwrap();
    p.abort_transaction(T).expect("abort");
    // A transaction left open holds back read_committed readers at its first offset.
    p.begin_transaction().unwrap();
    for i in 0..4 {
        send(&p, "tx", i % 2, &format!("open-{i:03}"));
    }
    p.flush(T).unwrap();

    let committed = read(&b, "tx", 2, "read_committed");
    assert_eq!(all(&committed), names("committed", 10));
    let uncommitted = read(&b, "tx", 2, "read_uncommitted");
    let mut expect = names("committed", 10);
    expect.extend(names("aborted", 6));
    expect.extend(names("open", 4));
    expect.sort();
    assert_eq!(all(&uncommitted), expect);

    // ListOffsets latest: the LSO for read_committed, the high watermark otherwise.
    let wm = |iso: &str| {
        let c: BaseConsumer = b
            .client_config()
            .set("isolation.level", iso)
            .create()
            .unwrap();
        c.fetch_watermarks("tx", 0, T).unwrap().1
    };
    // Partition 0: 5 committed + marker, 3 aborted + marker, then the open transaction.
    assert_eq!(wm("read_committed"), 10);
    assert_eq!(wm("read_uncommitted"), 12);

    p.commit_transaction(T).expect("commit the open one");
    let committed = read(&b, "tx", 2, "read_committed");
    let mut expect = names("committed", 10);
    expect.extend(names("open", 4));
    expect.sort();
    assert_eq!(all(&committed), expect);
    // Order within a partition is the send order.
    assert_eq!(
        committed[&0],
        vec![
            "committed-000",
            "committed-002",
            "committed-004",
            "committed-006",
            "committed-008",
            "open-000",
            "open-002"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_producer_fences_the_zombie_and_aborts_its_transaction() {
    let b = TestBroker::start(&[]);
    b.create_topic("zombie", 1, &[]).await;
    let old = txn_producer(&b, "worker-1", &[]);
    old.begin_transaction().unwrap();
    send(&old, "zombie", 0, "from-zombie");
    old.flush(T).unwrap();
    let new = txn_producer(&b, "worker-1", &[]);
    // The zombie can neither write nor commit any more.
    send(&old, "zombie", 0, "zombie-again");
    let e = old
        .commit_transaction(T)
        .expect_err("the zombie must be fenced");
    match &e {
        KafkaError::Transaction(t) => assert!(t.is_fatal(), "fencing is fatal: {e}"),
        other => panic!("unexpected error {other}"),
    }
    new.begin_transaction().unwrap();
    send(&new, "zombie", 0, "from-new");
    new.commit_transaction(T).unwrap();
    let seen = read(&b, "zombie", 1, "read_committed");
    assert_eq!(all(&seen), vec!["from-new".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let b = TestBroker::start(&[]);
    b.create_topic("slow", 1, &[]).await;
    let p = txn_producer(&b, "slowpoke", &[("transaction.timeout.ms", "1500")]);
    p.begin_transaction().unwrap();
    send(&p, "slow", 0, "too-late");
    p.flush(T).unwrap();
    // The broker aborts it: the LSO moves past it without a commit.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let states = describe(&b, "slowpoke");
        if states.transaction_states[0].transaction_state.as_str() == "CompleteAbort" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the transaction was never aborted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        p.commit_transaction(T).is_err(),
        "the timed-out producer cannot commit"
    );
    assert!(all(&read(&b, "slow", 1, "read_committed")).is_empty());
    assert_eq!(
        all(&read(&b, "slow", 1, "read_uncommitted")),
        vec!["too-late"]
    );
    assert!(b.log_text().contains("transaction timed out"));
}

fn describe(b: &TestBroker, id: &str) -> DescribeTransactionsResponse {
    let mut s = TcpStream::connect(b.addr).unwrap();
    let mut req = DescribeTransactionsRequest::default();
    req.transactional_ids = vec![TransactionalId(StrBytes::from_string(id.into()))];
    call(&mut s, ApiKey::DescribeTransactions, 0, &req)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_list_transactions_and_producers() {
    let b = TestBroker::start(&[]);
    b.create_topic("admin-tx", 2, &[]).await;
    let p = txn_producer(&b, "described", &[("transaction.timeout.ms", "60000")]);
    p.begin_transaction().unwrap();
    send(&p, "admin-tx", 1, "v");
    p.flush(T).unwrap();

    let d = describe(&b, "described");
    let s = &d.transaction_states[0];
    assert_eq!(s.error_code, 0);
    assert_eq!(s.transaction_state.as_str(), "Ongoing");
    assert_eq!(s.transaction_timeout_ms, 60_000);
    assert!(s.producer_id.0 >= 0);
    assert_eq!(s.topics.len(), 1);
    assert_eq!(s.topics[0].topic.0.as_str(), "admin-tx");
    assert_eq!(s.topics[0].partitions, vec![1]);
    assert_eq!(describe(&b, "nobody").transaction_states[0].error_code, 105);

    let mut conn = TcpStream::connect(b.addr).unwrap();
    let mut req = ListTransactionsRequest::default();
    req.state_filters = vec![StrBytes::from_static_str("Ongoing")];
    req.duration_filter = -1;
    let l: ListTransactionsResponse = call(&mut conn, ApiKey::ListTransactions, 1, &req);
    assert_eq!(l.transaction_states.len(), 1);
    assert_eq!(
        l.transaction_states[0].transactional_id.0.as_str(),
        "described"
    );
    req.state_filters = vec![StrBytes::from_static_str("Bogus")];
    let l: ListTransactionsResponse = call(&mut conn, ApiKey::ListTransactions, 1, &req);
    assert_eq!(l.unknown_state_filters.len(), 1);

    let mut req = DescribeProducersRequest::default();
    let mut t = kafka_protocol::messages::describe_producers_request::TopicRequest::default();
    t.name = TopicName(StrBytes::from_static_str("admin-tx"));
    t.partition_indexes = vec![1];
    req.topics = vec![t];
    let r: DescribeProducersResponse = call(&mut conn, ApiKey::DescribeProducers, 0, &req);
    let ps = &r.topics[0].partitions[0].active_producers;
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].producer_id, s.producer_id);
    assert_eq!(
        ps[0].current_txn_start_offset, 0,
        "its open transaction starts at 0"
    );

    p.commit_transaction(T).unwrap();
    assert_eq!(
        describe(&b, "described").transaction_states[0]
            .transaction_state
            .as_str(),
        "CompleteCommit"
    );
    let r: DescribeProducersResponse = call(&mut conn, ApiKey::DescribeProducers, 0, &req);
    assert_eq!(
        r.topics[0].partitions[0].active_producers[0].current_txn_start_offset,
        -1
    );
}

/// Consume-transform-produce: each transaction carries its output and the input offsets, so
/// an aborted step neither shows its output nor moves the group's offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_commits_offsets_with_the_output() {
    let b = TestBroker::start(&[]);
    b.create_topic("ctp-in", 1, &[]).await;
    b.create_topic("ctp-out", 1, &[]).await;
    let plain: ThreadedProducer<DefaultProducerContext> = b.client_config().create().unwrap();
    for i in 0..30 {
        send_plain(&plain, "ctp-in", &format!("{i:03}"));
    }
    plain.flush(T).unwrap();

    let consumer = |b: &TestBroker| -> BaseConsumer {
        let c: BaseConsumer = b
            .client_config()
            .set("group.id", "ctp")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        c.subscribe(&["ctp-in"]).unwrap();
        c
    };
    let c = consumer(&b);
    let p = txn_producer(&b, "ctp-app", &[]);
    let mut step = 0;
    let mut consumed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed < 30 {
        assert!(
            Instant::now() < deadline,
            "consume-transform-produce stalled"
        );
        let mut batch = vec![];
        while batch.len() < 10 {
            match c.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => batch.push((
                    m.offset(),
                    String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string(),
                )),
                Some(Err(e)) => panic!("consume: {e}"),
                None => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        p.begin_transaction().unwrap();
        for (_, v) in &batch {
            send(&p, "ctp-out", 0, &format!("out-{v}"));
        }
        let next = batch.last().unwrap().0 + 1;
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("ctp-in", 0, Offset::Offset(next))
            .unwrap();
        p.send_offsets_to_transaction(&offsets, &c.group_metadata().unwrap(), T)
            .unwrap();
        if step == 1 {
            // This step fails after its output was written: abort, and rewind the consumer
            // to the last committed offset.
            p.flush(T).unwrap();
            p.abort_transaction(T).unwrap();
            let committed = c.committed(T).unwrap();
            let at = committed.elements()[0].offset();
            assert_eq!(
                at,
                Offset::Offset(10),
                "the aborted step committed no offsets"
            );
            c.seek("ctp-in", 0, at, T).unwrap();
        } else {
            p.commit_transaction(T).unwrap();
            consumed = next;
        }
        step += 1;
    }
    let out = read(&b, "ctp-out", 1, "read_committed");
    let expect: Vec<String> = (0..30).map(|i| format!("out-{i:03}")).collect();
    assert_eq!(
        out[&0], expect,
        "each input once, in order, despite the aborted step"
    );
    let uncommitted = read(&b, "ctp-out", 1, "read_uncommitted");
    assert_eq!(
        uncommitted[&0].len(),
        40,
        "the aborted step's 10 outputs are in the log"
    );
    drop(c);
    let c = consumer(&b);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("ctp-in", 0);
    assert_eq!(
        c.committed_offsets(tpl, T).unwrap().elements()[0].offset(),
        Offset::Offset(30)
    );
}

fn send_plain(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, value: &str) {
    p.send(
        BaseRecord::<str, str>::to(topic)
            .partition(0)
            .payload(value),
    )
    .map_err(|(e, _)| e)
    .expect("enqueue");
}

/// What one transaction of the randomized test wrote and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Committed,
    Aborted,
    /// The commit's answer was lost (the broker died): all or nothing is allowed.
    Unknown,
}

/// Jepsen-style: producers run transactions of random size over random partitions, committing
/// or aborting at random, while the broker is killed with -9 and restarted. Then a checker
/// reads everything read_committed: no record of an aborted transaction, every record of a
/// committed one, unknown ones all or nothing, no duplicates, each producer's records in
/// transaction order in every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_transactions_through_kill9_keep_every_guarantee() {
    const PRODUCERS: usize = 3;
    const PARTITIONS: i32 = 3;
    let mut b = TestBroker::start(&["--num-partitions", "3"]);
    b.create_topic("jepsen", PARTITIONS, &[]).await;
    let bootstrap = b.bootstrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = vec![];
    for w in 0..PRODUCERS {
        let bootstrap = bootstrap.clone();
        let stop = stop.clone();
        workers.push(std::thread::spawn(move || run_worker(w, &bootstrap, &stop)));
    }
    // A read_committed consumer runs through the kills too: nothing it ever sees may come from
    // an aborted transaction.
    let live_reader = {
        let bootstrap = bootstrap.clone();
        let stop = stop.clone();
        std::thread::spawn(move || live_read(&bootstrap, PARTITIONS, &stop))
    };
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ std::process::id() as u64;
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1500 + (next(&mut rng) % 1000)));
        b.kill9();
        std::thread::sleep(Duration::from_millis(200));
        b.restart();
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut txns: HashMap<String, (Outcome, Vec<(i32, String)>)> = HashMap::new();
    for w in workers {
        txns.extend(w.join().expect("worker"));
    }
    let live = live_reader.join().expect("live reader");
    let committed = txns.values().filter(|t| t.0 == Outcome::Committed).count();
    let aborted = txns.values().filter(|t| t.0 == Outcome::Aborted).count();
    eprintln!(
        "transactions: {committed} committed, {aborted} aborted, {} unknown",
        txns.len() - committed - aborted
    );
    assert!(
        committed >= 10,
        "too few committed transactions: {committed}"
    );
    assert!(aborted >= 3, "too few aborted transactions: {aborted}");

    let seen = read(&b, "jepsen", PARTITIONS, "read_committed");
    let mut where_seen: HashMap<String, i32> = HashMap::new();
    for (p, values) in &seen {
        // Per partition, each producer's transactions appear in order.
        let mut last: HashMap<String, (u64, u64)> = HashMap::new();
        for v in values {
            assert!(where_seen.insert(v.clone(), *p).is_none(), "{v} read twice");
            let (producer, txn, rec) = parse(v);
            if let Some(prev) = last.get(&producer) {
                assert!(
                    (txn, rec) > *prev,
                    "{v} after txn {} record {} in partition {p}",
                    prev.0,
                    prev.1
                );
            }
            last.insert(producer, (txn, rec));
        }
    }
    for (id, (outcome, records)) in &txns {
        let present = records
            .iter()
            .filter(|(p, v)| where_seen.get(v) == Some(p))
            .count();
        match outcome {
            Outcome::Committed => assert_eq!(
                present,
                records.len(),
                "committed transaction {id} lost records"
            ),
            Outcome::Aborted => assert_eq!(present, 0, "aborted transaction {id} was read"),
            Outcome::Unknown => assert!(
                present == 0 || present == records.len(),
                "transaction {id} was half applied ({present} of {})",
                records.len()
            ),
        }
    }
    let aborted_values: HashSet<&String> = txns
        .values()
        .filter(|t| t.0 == Outcome::Aborted)
        .flat_map(|t| t.1.iter().map(|r| &r.1))
        .collect();
    assert!(!live.is_empty(), "the live reader saw nothing");
    for v in &live {
        assert!(
            !aborted_values.contains(v),
            "the live read_committed reader saw {v} of an aborted transaction"
        );
    }
    let known: HashSet<&String> = txns
        .values()
        .flat_map(|t| t.1.iter().map(|r| &r.1))
        .collect();
    for v in where_seen.keys() {
        assert!(known.contains(v), "{v} was never sent");
    }
}

/// Reads `jepsen` read_committed until `stop`, riding through broker restarts.
fn live_read(
    bootstrap: &str,
    partitions: i32,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<String> {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "jepsen-live")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("log_level", "0")
        .create()
        .expect("live consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset("jepsen", p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut seen = vec![];
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
        }
    }
    seen
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `w{producer}-t{txn}-r{record}` → (producer, txn, record).
fn parse(v: &str) -> (String, u64, u64) {
    let mut it = v.split('-');
    let w = it.next().unwrap_or_default().to_string();
    let t = it.next().and_then(|s| s[1..].parse().ok()).unwrap_or(0);
    let r = it.next().and_then(|s| s[1..].parse().ok()).unwrap_or(0);
    (w, t, r)
}

/// One producer's loop; returns every transaction it began, with its records and outcome.
fn run_worker(
    w: usize,
    bootstrap: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> HashMap<String, (Outcome, Vec<(i32, String)>)> {
    let mut rng = 0x2545_f491_4f6c_dd1du64.wrapping_mul(w as u64 + 1);
    let mut out = HashMap::new();
    let make = || -> Option<TxnProducer> {
        let p: TxnProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("transactional.id", format!("jepsen-{w}"))
            .set("linger.ms", "2")
            .set("transaction.timeout.ms", "10000")
            .set("message.timeout.ms", "9000")
            .set("log_level", "0")
            .create()
            .ok()?;
        p.init_transactions(Duration::from_secs(10)).ok()?;
        Some(p)
    };
    let mut producer = None;
    let mut txn = 0u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
        let p = match producer.take().or_else(make) {
            Some(p) => p,
            None => {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        if p.begin_transaction().is_err() {
            continue; // drop it and make a new one (fences whatever it left open)
        }
        txn += 1;
        let id = format!("w{w}-t{txn:05}");
        let n = 1 + next(&mut rng) % 8;
        let mut records = vec![];
        let mut enqueued = true;
        for r in 0..n {
            let partition = (next(&mut rng) % 3) as i32;
            let v = format!("{id}-r{r:03}");
            if p.send(
                BaseRecord::<str, str>::to("jepsen")
                    .partition(partition)
                    .payload(&v),
            )
            .is_err()
            {
                enqueued = false;
                break;
            }
            records.push((partition, v));
        }
        let want_commit = enqueued && !next(&mut rng).is_multiple_of(4);
        let outcome = if want_commit {
            match p.commit_transaction(Duration::from_secs(10)) {
                Ok(()) => Outcome::Committed,
                Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => {
                    if p.abort_transaction(Duration::from_secs(10)).is_ok() {
                        Outcome::Aborted
                    } else {
                        Outcome::Unknown
                    }
                }
                Err(_) => Outcome::Unknown,
            }
        } else {
            match p.abort_transaction(Duration::from_secs(10)) {
                Ok(()) => Outcome::Aborted,
                Err(_) => Outcome::Unknown,
            }
        };
        let healthy = outcome != Outcome::Unknown;
        out.insert(id, (outcome, records));
        if healthy {
            producer = Some(p);
        }
        // An unknown outcome drops the producer; the next one's InitProducerId fences it.
    }
    out
}
