//! The Kafka sink: produces to any Kafka-protocol cluster with librdkafka (acks=all,
//! idempotent), and acknowledges an event once the broker has acknowledged its record.

use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use trib_pipelines::config::sinks::{Batch, Compression, KafkaSink, Retry};
use trib_pipelines::event::{get_path, value_text, Event};
use trib_pipelines::runtime::{Sink, SinkContext};

use crate::batching::{self, BatchWriter, WriteError};

pub struct Kafka {
    cfg: KafkaSink,
    producer: FutureProducer,
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
            .set("queue.buffering.max.messages", "1000000")
            .set("message.timeout.ms", "30000");
        for (k, v) in &c.options {
            cc.set(k, v);
        }
        let producer: FutureProducer = cc
            .create()
            .map_err(|e| anyhow::anyhow!("cannot create the producer: {e}"))?;
        Ok(Self {
            cfg: c.clone(),
            producer,
        })
    }
}

impl Sink for Kafka {
    fn run(self: Box<Self>, cx: SinkContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let batch = Batch {
                max_events: 50_000,
                max_bytes: 32 << 20,
                timeout_ms: 20,
            };
            let w = Writer {
                cfg: self.cfg,
                producer: self.producer,
                metrics: cx.metrics.clone(),
            };
            batching::run(cx, &batch, &Retry::default(), w).await
        })
    }
}

struct Writer {
    cfg: KafkaSink,
    producer: FutureProducer,
    metrics: trib_pipelines::metrics::ComponentMetrics,
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

impl BatchWriter for Writer {
    fn write<'a>(
        &'a mut self,
        events: &'a [Event],
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>, WriteError>> {
        Box::pin(async move {
            let mut pending = Vec::with_capacity(events.len());
            let mut rejected = Vec::new();
            let mut bytes = 0u64;
            for (i, e) in events.iter().enumerate() {
                let topic = e.meta.target_topic.as_deref().unwrap_or(&self.cfg.topic);
                let key_from_field = match (&e.key, &self.cfg.key_field) {
                    (None, Some(f)) => get_path(&e.fields, f).map(value_text),
                    _ => None,
                };
                let key: Option<&[u8]> = e
                    .key
                    .as_deref()
                    .or(key_from_field.as_deref().map(str::as_bytes));
                let body = e.body();
                bytes += body.len() as u64;
                let mut headers = OwnedHeaders::new_with_capacity(e.headers.len());
                for (k, v) in &e.headers {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(&v[..]),
                    });
                }
                let mut rec = FutureRecord::to(topic)
                    .payload(&body[..])
                    .timestamp(e.timestamp_ms)
                    .headers(headers);
                if let Some(k) = key {
                    rec = rec.key(k);
                }
                if let Some(p) = e.meta.target_partition {
                    rec = rec.partition(p);
                }
                loop {
                    match self.producer.send_result(rec) {
                        Ok(f) => {
                            pending.push((i, f));
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            rec = r;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err((e, _)) if refused(&e) => {
                            rejected.push((i, e.to_string()));
                            break;
                        }
                        Err((e, _)) => return Err(WriteError::Transient(e.to_string())),
                    }
                }
            }
            let mut transient = None;
            for (i, f) in pending {
                match f.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) if refused(&e) => rejected.push((i, e.to_string())),
                    Ok(Err((e, _))) => transient = Some(e.to_string()),
                    Err(_) => transient = Some("the producer went away".into()),
                }
            }
            if let Some(m) = transient {
                // The batch is written again: records that did go through are duplicated,
                // which at-least-once delivery allows.
                return Err(WriteError::Transient(m));
            }
            self.metrics.bytes_out.inc_by(bytes);
            Ok(rejected)
        })
    }
}
