//! The Kafka sink: produces to any Kafka-protocol cluster with librdkafka (acks=all,
//! idempotent, per-partition batches by bytes, count and linger time), and acknowledges an event
//! once the broker has acknowledged its record. librdkafka's statistics feed the count of produce
//! requests sent, so the batching gain is visible next to the requests a source received.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use trib_pipelines::config::sinks::{Compression, KafkaSink, Partitioner};
use trib_pipelines::event::{get_path, value_text, Event};
use trib_pipelines::metrics::ComponentMetrics;
use trib_pipelines::runtime::{Sink, SinkContext};

type Producer = FutureProducer<StatsContext>;

pub struct Kafka {
    cfg: KafkaSink,
    producer: Producer,
    requests: Arc<OnceLock<ComponentMetrics>>,
}

/// Counts the produce requests librdkafka reports having sent.
struct StatsContext {
    requests: Arc<OnceLock<ComponentMetrics>>,
    seen: AtomicI64,
}

impl ClientContext for StatsContext {
    fn stats(&self, s: Statistics) {
        let total: i64 = s
            .brokers
            .values()
            .filter_map(|b| b.req.get("Produce"))
            .sum();
        let before = self.seen.fetch_max(total, Ordering::AcqRel);
        if let Some(c) = self.requests.get() {
            c.requests_out
                .inc_by(total.saturating_sub(before).max(0) as u64);
        }
    }
}

impl Kafka {
    pub fn new(name: &str, c: &KafkaSink) -> anyhow::Result<Self> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &c.brokers)
            .set("client.id", format!("trib-sink-{name}"))
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", c.linger_ms.to_string())
            .set(
                "compression.type",
                match c.compression {
                    Compression::None => "none",
                    Compression::Gzip => "gzip",
                    Compression::Snappy => "snappy",
                    Compression::Lz4 => "lz4",
                    Compression::Zstd => "zstd",
                },
            )
            .set("batch.size", c.batch_max_bytes.to_string())
            .set("batch.num.messages", c.batch_max_records.to_string())
            .set(
                "partitioner",
                match c.partitioner {
                    Partitioner::Murmur2 => "murmur2_random",
                    Partitioner::Crc32 => "consistent_random",
                    Partitioner::Random => "random",
                },
            )
            .set("statistics.interval.ms", "1000")
            .set("queue.buffering.max.messages", "100000")
            .set("queue.buffering.max.kbytes", "32768")
            .set("message.timeout.ms", "30000");
        for (k, v) in &c.options {
            cc.set(k, v);
        }
        let requests = Arc::new(OnceLock::new());
        let producer: Producer = cc
            .create_with_context(StatsContext {
                requests: requests.clone(),
                seen: AtomicI64::new(0),
            })
            .map_err(|e| anyhow::anyhow!("cannot create the producer: {e}"))?;
        Ok(Self {
            cfg: c.clone(),
            producer,
            requests,
        })
    }
}

impl Sink for Kafka {
    fn run(self: Box<Self>, mut cx: SinkContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let _ = self.requests.set(cx.metrics.clone());
            // Batches are enqueued as they arrive; an acknowledger task awaits the broker's
            // answers in order, so several batches are in flight at once, bounded by records
            // (many small batches, as from the Kafka endpoint, fit as well as a few big ones).
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<InFlight>();
            let room = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_RECORDS));
            let acker = tokio::spawn(acknowledge(
                rx,
                self.producer.clone(),
                self.cfg.clone(),
                cx.metrics.clone(),
            ));
            let mut dead_letter = Vec::new();
            while let Some(batch) = cx.input.recv().await {
                let permits = batch.len().clamp(1, IN_FLIGHT_RECORDS) as u32;
                let Ok(permit) = room.clone().acquire_many_owned(permits).await else {
                    break;
                };
                let mut pending = Vec::with_capacity(batch.len());
                let mut bytes = 0u64;
                let mut events = Vec::with_capacity(batch.len());
                for e in batch {
                    match enqueue(&self.producer, &self.cfg, &e).await {
                        Ok((f, n)) => {
                            bytes += n;
                            pending.push(f);
                            events.push(e);
                        }
                        Err(reason) => dead_letter
                            .push(trib_pipelines::transforms::dead_letter(e, &cx.name, reason)),
                    }
                }
                if !dead_letter.is_empty() {
                    cx.dead_letter.send(std::mem::take(&mut dead_letter)).await;
                }
                let flight = InFlight {
                    events,
                    pending,
                    bytes,
                    _room: permit,
                };
                if tx.send(flight).is_err() {
                    break;
                }
            }
            drop(tx);
            let rejected = acker
                .await
                .map_err(|e| anyhow::anyhow!("acknowledger failed: {e}"))?;
            for (e, reason) in rejected {
                dead_letter.push(trib_pipelines::transforms::dead_letter(e, &cx.name, reason));
            }
            cx.dead_letter.send(dead_letter).await;
            Ok(())
        })
    }
}

/// Records enqueued and not yet acknowledged: enough to keep librdkafka's batches full at full
/// speed, few enough to keep the agent's memory small.
const IN_FLIGHT_RECORDS: usize = 50_000;

struct InFlight {
    events: Vec<Event>,
    pending: Vec<rdkafka::producer::DeliveryFuture>,
    bytes: u64,
    /// Released when the batch is acknowledged.
    _room: tokio::sync::OwnedSemaphorePermit,
}

/// Errors that no retry can fix for this record.
fn refused(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::UnknownPartition
        )
    )
}

/// Hands one event to the producer; waits while its queue is full.
async fn enqueue(
    producer: &Producer,
    cfg: &KafkaSink,
    e: &Event,
) -> Result<(rdkafka::producer::DeliveryFuture, u64), String> {
    let topic = e.meta.target_topic.as_deref().unwrap_or(&cfg.topic);
    let key_from_field = match (&e.key, &cfg.key_field) {
        (None, Some(f)) => get_path(&e.fields, f).map(value_text),
        _ => None,
    };
    let key: Option<&[u8]> = e
        .key
        .as_deref()
        .or(key_from_field.as_deref().map(str::as_bytes));
    let body = e.body();
    let mut rec = FutureRecord::to(topic)
        .payload(&body[..])
        .timestamp(e.timestamp_ms);
    if !e.headers.is_empty() {
        let mut headers = OwnedHeaders::new_with_capacity(e.headers.len());
        for (k, v) in &e.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(&v[..]),
            });
        }
        rec = rec.headers(headers);
    }
    if let Some(k) = key {
        rec = rec.key(k);
    }
    if let Some(p) = e.meta.target_partition {
        rec = rec.partition(p);
    }
    let mut backoff = Duration::from_millis(1);
    loop {
        match producer.send_result(rec) {
            Ok(f) => return Ok((f, body.len() as u64)),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
            Err((e, _)) if refused(&e) => return Err(e.to_string()),
            Err((e, r)) => {
                tracing::warn!(error = %e, "produce failed; retrying");
                rec = r;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Awaits each batch's acknowledgements in order. Records that fail for a transient reason
/// (broker away, message timeout) are sent again together, with backoff, until acknowledged
/// (at-least-once). Returns the refused events.
async fn acknowledge(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<InFlight>,
    producer: Producer,
    cfg: KafkaSink,
    metrics: trib_pipelines::metrics::ComponentMetrics,
) -> Vec<(Event, String)> {
    let mut refused_events = Vec::new();
    while let Some(f) = rx.recv().await {
        let (mut events, mut pending) = (f.events, f.pending);
        let mut delivered = 0u64;
        let mut backoff = Duration::from_millis(100);
        loop {
            // In order, one by one: they complete about in order, and join_all would box
            // every future.
            let mut results = Vec::with_capacity(pending.len());
            for fut in pending {
                results.push(fut.await);
            }
            let mut again = Vec::new();
            let mut last_error = String::new();
            for (e, r) in events.into_iter().zip(results) {
                match r {
                    Ok(Ok(_)) => {
                        e.deliver();
                        delivered += 1;
                    }
                    Ok(Err((err, _))) if refused(&err) => {
                        refused_events.push((e, err.to_string()));
                    }
                    Ok(Err((err, _))) => {
                        last_error = err.to_string();
                        again.push(e);
                    }
                    Err(_) => {
                        last_error = "the producer went away".into();
                        again.push(e);
                    }
                }
            }
            if again.is_empty() {
                break;
            }
            tracing::warn!(records = again.len(), error = %last_error, retry_in = ?backoff, "records not acknowledged; sending them again");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
            (events, pending) = (
                Vec::with_capacity(again.len()),
                Vec::with_capacity(again.len()),
            );
            for e in again {
                match enqueue(&producer, &cfg, &e).await {
                    Ok((next, _)) => {
                        pending.push(next);
                        events.push(e);
                    }
                    Err(reason) => refused_events.push((e, reason)),
                }
            }
        }
        metrics.events_out.inc_by(delivered);
        metrics.bytes_out.inc_by(f.bytes);
    }
    refused_events
}
