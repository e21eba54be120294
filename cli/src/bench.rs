//! `trib bench produce|consume`: throughput and latency against any Kafka-protocol broker, in
//! the spirit of Kafka's producer-perf-test, with a progress bar and p50/p99/p99.9 figures.

use std::sync::Mutex;
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

fn bar(total: u64) -> ProgressBar {
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
        if a.rate > 0 {
            let due = Duration::from_secs_f64(i as f64 / a.rate as f64);
            let el = start.elapsed();
            if due > el {
                std::thread::sleep(due - el);
            }
        }
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
        if n % 4096 == 0 {
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
