//! `trib bench produce|consume`: throughput and latency against any Kafka-protocol broker, in
//! the spirit of Kafka's producer-perf-test, with a progress bar and p50/p99/p99.9 figures.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::client::{ClientArgs, TIMEOUT};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Produce fixed-size records as fast as possible (or at --rate) and report throughput and latency.
    Produce(ProduceBench),
    /// Read records from the beginning of a topic and report throughput.
    Consume(ConsumeBench),
    /// Time for a group of N members to converge on P partitions, and to rebalance after one more joins.
    Rebalance(RebalanceBench),
    /// Offset commits per second from one group member.
    Commit(CommitBench),
    /// Many small applications, one record per request each (the agent's Kafka endpoint load).
    Producers(crate::bench_producers::ProducersBench),
    /// Transactions per second: begin, N records, commit, from several transactional producers.
    Txn(crate::bench_txn::TxnBench),
}

#[derive(Args)]
pub struct RebalanceBench {
    #[arg(long, short = 't', default_value = "bench-rebalance")]
    topic: String,
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// Partitions of the topic (created if missing).
    #[arg(long, default_value_t = 100)]
    partitions: i32,
    /// classic or consumer (KIP-848).
    #[arg(long, default_value = "classic")]
    protocol: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct CommitBench {
    #[arg(long, short = 't', default_value = "bench-commit")]
    topic: String,
    #[arg(long, default_value = "bench-commit-group")]
    group: String,
    /// Offsets to commit in all.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    commits: u64,
    /// Target offsets committed per second (0: as fast as acknowledged).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Partitions per commit request (partitions 0..K of the topic, as a consumer owning K
    /// partitions commits them together); requests per second are `rate / K`.
    #[arg(long, default_value_t = 1)]
    partitions: u64,
    /// Commit asynchronously (pipelined, as consumers' auto-commit does) instead of waiting for each.
    #[arg(long)]
    r#async: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct ProduceBench {
    #[arg(long, short = 't', default_value = "bench")]
    topic: String,
    /// Records to send.
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    records: u64,
    /// Bytes per record value.
    #[arg(long, short = 's', default_value_t = 1024)]
    record_size: usize,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "1")]
    acks: String,
    /// Target records per second (0: unlimited).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Client-side batching delay (librdkafka linger.ms); latency figures include it.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Send to this partition only (default: partition 0).
    #[arg(long, default_value_t = 0)]
    partition: i32,
    /// Print the result as one JSON line too.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct ConsumeBench {
    #[arg(long, short = 't', default_value = "bench")]
    topic: String,
    /// Records to read.
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    records: u64,
    #[arg(long, default_value_t = 0)]
    partition: i32,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

struct LatencyContext {
    hist: Mutex<Histogram<u64>>,
    errors: std::sync::atomic::AtomicU64,
}

impl ClientContext for LatencyContext {}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, result: &DeliveryResult<'_>, sent: Self::DeliveryOpaque) {
        if result.is_err() {
            self.errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let us = sent.elapsed().as_micros() as u64;
        if let Ok(mut h) = self.hist.lock() {
            let _ = h.record(us.max(1));
        }
    }
}

/// Sleeps until the `i`-th event is due at `rate` per second since `start` (0: no limit).
fn pace(start: Instant, i: u64, rate: u64) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(i as f64 / rate as f64);
    let elapsed = start.elapsed();
    if due > elapsed {
        std::thread::sleep(due - elapsed);
    }
}

pub(crate) fn bar(total: u64) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} records ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Produce(a) => tokio::task::spawn_blocking(move || produce(a)).await?,
        BenchCommand::Consume(a) => tokio::task::spawn_blocking(move || consume(a)).await?,
        BenchCommand::Rebalance(a) => rebalance(a).await,
        BenchCommand::Commit(a) => tokio::task::spawn_blocking(move || commit(a)).await?,
        BenchCommand::Producers(a) => crate::bench_producers::run(a).await,
        BenchCommand::Txn(a) => {
            tokio::task::spawn_blocking(move || crate::bench_txn::run(a)).await?
        }
    }
}

fn produce(a: ProduceBench) -> anyhow::Result<()> {
    let ctx = LatencyContext {
        hist: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        errors: Default::default(),
    };
    let producer: ThreadedProducer<LatencyContext> = a
        .client
        .config()?
        .set("acks", &a.acks)
        .set("linger.ms", a.linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(ctx)
        .context("cannot create producer")?;
    let payload = vec![b'x'; a.record_size];
    let pb = bar(a.records);
    let start = Instant::now();
    for i in 0..a.records {
        pace(start, i, a.rate);
        let mut rec: BaseRecord<'_, (), [u8], Box<Instant>> =
            BaseRecord::with_opaque_to(&a.topic, Box::new(Instant::now()))
                .payload(&payload[..])
                .partition(a.partition);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, r))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    rec = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => anyhow::bail!("send failed: {e}"),
            }
        }
        if i % 4096 == 0 {
            pb.set_position(i);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let ctx = producer.context();
    let h = ctx
        .hist
        .lock()
        .map_err(|_| anyhow::anyhow!("latency histogram poisoned"))?;
    let errors = ctx.errors.load(std::sync::atomic::Ordering::Relaxed);
    let mb = (a.records as f64 * a.record_size as f64) / secs / 1e6;
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "produced {} records of {} B in {secs:.2} s: {:.0} records/s, {mb:.1} MB/s; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}; errors {errors}",
        a.records,
        a.record_size,
        a.records as f64 / secs,
        q(0.5),
        q(0.99),
        q(0.999),
        h.max() as f64 / 1000.0
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({"kind":"produce","records":a.records,"record_size":a.record_size,"seconds":secs,
                "mb_per_s":mb,"p50_ms":q(0.5),"p99_ms":q(0.99),"p999_ms":q(0.999),"errors":errors})
        );
    }
    if errors > 0 {
        anyhow::bail!("{errors} record(s) failed");
    }
    Ok(())
}

fn consume(a: ConsumeBench) -> anyhow::Result<()> {
    let consumer: BaseConsumer = a
        .client
        .config()?
        .set("group.id", "trib-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("queued.max.messages.kbytes", "1048576")
        .create()
        .context("cannot create consumer")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&a.topic, a.partition, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let _ = consumer.fetch_metadata(Some(&a.topic), TIMEOUT)?;
    let pb = bar(a.records);
    let mut n = 0u64;
    let mut bytes = 0u64;
    let mut start = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while n < a.records {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {n} of {} records arrived",
            a.records
        );
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m?;
        start.get_or_insert_with(Instant::now);
        bytes += m.payload_len() as u64;
        n += 1;
        if n.is_multiple_of(4096) {
            pb.set_position(n);
        }
    }
    pb.finish_and_clear();
    let secs = start
        .map_or(0.0, |s: Instant| s.elapsed().as_secs_f64())
        .max(1e-9);
    let mb = bytes as f64 / secs / 1e6;
    println!(
        "consumed {n} records ({bytes} B) in {secs:.2} s: {:.0} records/s, {mb:.1} MB/s",
        n as f64 / secs
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({"kind":"consume","records":n,"bytes":bytes,"seconds":secs,"mb_per_s":mb})
        );
    }
    Ok(())
}

/// A group member polling in its own thread and publishing its assignment.
struct Member {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

fn spawn_member(
    a: &RebalanceBench,
    slot: usize,
    shared: Arc<Mutex<Vec<BTreeSet<i32>>>>,
) -> anyhow::Result<Member> {
    let mut cfg = a.client.config()?;
    cfg.set("group.id", format!("{}-group", a.topic))
        .set("enable.auto.commit", "false");
    if a.protocol == "consumer" {
        cfg.set("group.protocol", "consumer");
    } else {
        cfg.set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "300");
    }
    let c: BaseConsumer = cfg.create()?;
    c.subscribe(&[&a.topic])?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let handle = std::thread::spawn(move || {
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = c.poll(Duration::from_millis(10));
            let now: BTreeSet<i32> = c
                .assignment()
                .map(|t| t.elements().iter().map(|e| e.partition()).collect())
                .unwrap_or_default();
            if let Ok(mut v) = shared.lock() {
                v[slot] = now;
            }
        }
    });
    Ok(Member { stop, handle })
}

/// Waits until `n` members hold disjoint assignments covering every partition; returns the time.
fn wait_converged(
    shared: &Mutex<Vec<BTreeSet<i32>>>,
    n: usize,
    partitions: i32,
    start: Instant,
) -> anyhow::Result<Duration> {
    let deadline = start + Duration::from_secs(120);
    loop {
        if let Ok(v) = shared.lock() {
            let total: usize = v[..n].iter().map(|s| s.len()).sum();
            let union: BTreeSet<i32> = v[..n].iter().flatten().copied().collect();
            if total == partitions as usize
                && union.len() == partitions as usize
                && v[..n].iter().all(|s| !s.is_empty())
            {
                return Ok(start.elapsed());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the group did not converge within 120 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

async fn rebalance(a: RebalanceBench) -> anyhow::Result<()> {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        a.client.config()?.create()?;
    let t = rdkafka::admin::NewTopic::new(
        &a.topic,
        a.partitions,
        rdkafka::admin::TopicReplication::Fixed(1),
    );
    let _ = admin
        .create_topics([&t], &rdkafka::admin::AdminOptions::new())
        .await?;
    tokio::task::spawn_blocking(move || {
        let shared = Arc::new(Mutex::new(vec![BTreeSet::new(); a.members + 1]));
        let start = Instant::now();
        let mut members = Vec::new();
        for i in 0..a.members {
            members.push(spawn_member(&a, i, shared.clone())?);
        }
        let first = wait_converged(&shared, a.members, a.partitions, start)?;
        std::thread::sleep(Duration::from_millis(500));
        let join = Instant::now();
        members.push(spawn_member(&a, a.members, shared.clone())?);
        let again = wait_converged(&shared, a.members + 1, a.partitions, join)?;
        println!(
            "{} protocol, {} partitions: {} members converged in {} ms (incl. initial delay); after member {} joined, rebalanced in {} ms",
            a.protocol,
            a.partitions,
            a.members,
            first.as_millis(),
            a.members + 1,
            again.as_millis()
        );
        for m in members {
            m.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = m.handle.join();
        }
        Ok(())
    })
    .await?
}

fn commit(a: CommitBench) -> anyhow::Result<()> {
    let c: BaseConsumer = a
        .client
        .config()?
        .set("group.id", &a.group)
        .set("enable.auto.commit", "false")
        .create()?;
    let md = c.fetch_metadata(Some(&a.topic), TIMEOUT)?;
    anyhow::ensure!(
        md.topics()
            .iter()
            .any(|t| t.name() == a.topic && t.error().is_none()),
        "topic {} not found: create it first",
        a.topic
    );
    let k = a.partitions.max(1);
    let have = md.topics().first().map_or(0, |t| t.partitions().len()) as u64;
    anyhow::ensure!(
        have >= k,
        "topic {} has {have} partitions; --partitions {k} needs at least {k}",
        a.topic
    );
    let requests = a.commits.div_ceil(k);
    let request_rate = if a.rate == 0 { 0 } else { (a.rate / k).max(1) };
    let pb = bar(requests);
    let start = Instant::now();
    for i in 0..requests {
        pace(start, i, request_rate);
        let mut tpl = TopicPartitionList::new();
        for p in 0..k as i32 {
            tpl.add_partition_offset(&a.topic, p, Offset::Offset(i as i64))?;
        }
        let mode = if a.r#async {
            rdkafka::consumer::CommitMode::Async
        } else {
            rdkafka::consumer::CommitMode::Sync
        };
        c.commit(&tpl, mode)?;
        if a.r#async && i % 64 == 0 {
            let _ = c.poll(Duration::ZERO);
        }
        if i % 1024 == 0 {
            pb.set_position(i);
        }
    }
    if a.r#async {
        // Wait until the last commit is stored.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let _ = c.poll(Duration::from_millis(10));
            let done = c
                .committed(TIMEOUT)
                .ok()
                .and_then(|t| {
                    t.find_partition(&a.topic, 0)
                        .and_then(|e| e.offset().to_raw())
                })
                .is_some_and(|o| o == requests as i64 - 1);
            if done || Instant::now() > deadline {
                break;
            }
        }
    }
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "committed {} offsets in {requests} requests in {secs:.2} s: {:.0} offsets/s, {:.0} requests/s",
        requests * k,
        (requests * k) as f64 / secs,
        requests as f64 / secs
    );
    Ok(())
}
