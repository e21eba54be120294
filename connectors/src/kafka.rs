//! The Kafka source: a consumer-group member on any Kafka-protocol cluster (librdkafka). Each
//! polled batch carries a batch notifier; offsets are committed in poll order, and only up to
//! the last batch the pipeline has fully delivered. A batch that comes back abandoned stops
//! the source with an error, so a restart reads it again from the last commit. `event_of` is how
//! every consumer of Tributary (this source, `trib lake export`, SQL's `tail()`) turns a record
//! into an event.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use trib_pipelines::config::sources::{KafkaSource, StartFrom};
use trib_pipelines::event::Event;
use trib_pipelines::finalize::{BatchNotifier, Status};
use trib_pipelines::runtime::{Source, SourceContext};

pub struct Kafka {
    cfg: KafkaSource,
    consumer: BaseConsumer,
}

impl Kafka {
    pub fn new(name: &str, c: &KafkaSource) -> anyhow::Result<Self> {
        anyhow::ensure!(!c.topics.is_empty(), "topics: name at least one topic");
        anyhow::ensure!(c.batch > 0, "batch: must be at least 1");
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &c.brokers)
            .set("group.id", &c.group_id)
            .set("client.id", format!("trib-source-{name}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // librdkafka prefetches up to 64 MiB per partition by default; the pipeline's own
            // buffers already keep it busy.
            .set("queued.max.messages.kbytes", "16384")
            // When that local queue is full librdkafka waits this long before fetching again
            // (default 1 s), which capped a pipeline at ~150,000 events/s; 10 ms keeps the
            // queue topped up (1,000,000 events/s, BENCHMARKS.md).
            .set("fetch.queue.backoff.ms", "10")
            .set(
                "auto.offset.reset",
                match c.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            );
        for (k, v) in &c.options {
            cc.set(k, v);
        }
        let consumer: BaseConsumer = cc
            .create()
            .map_err(|e| anyhow::anyhow!("cannot create the consumer: {e}"))?;
        Ok(Self {
            cfg: c.clone(),
            consumer,
        })
    }
}

/// The last offset read per (topic, partition).
type Offsets = HashMap<(Arc<str>, i32), i64>;

/// Batches handed to the pipeline and not yet delivered, in poll order.
struct Unacked {
    queue: VecDeque<(Offsets, oneshot::Receiver<Status>)>,
}

impl Unacked {
    /// Commits the delivered prefix. Errors if a batch was abandoned.
    fn commit_ready(&mut self, consumer: &BaseConsumer, wait: bool) -> anyhow::Result<()> {
        let mut offsets: HashMap<(Arc<str>, i32), i64> = HashMap::new();
        loop {
            let status = match self.queue.front_mut() {
                None => break,
                Some((_, rx)) if !wait => match rx.try_recv() {
                    Ok(s) => s,
                    Err(oneshot::error::TryRecvError::Empty) => break,
                    Err(oneshot::error::TryRecvError::Closed) => Status::Abandoned,
                },
                Some(_) => Status::Delivered,
            };
            let Some((batch, rx)) = self.queue.pop_front() else {
                break;
            };
            let status = if wait {
                rx.blocking_recv().unwrap_or(Status::Abandoned)
            } else {
                status
            };
            if status != Status::Delivered {
                self.commit(consumer, &offsets, wait)?;
                anyhow::bail!("a batch was not delivered; stopping so that it is read again from the last committed offset");
            }
            for (tp, o) in batch {
                let e = offsets.entry(tp).or_insert(o);
                *e = (*e).max(o);
            }
        }
        self.commit(consumer, &offsets, wait)
    }

    fn commit(
        &self,
        consumer: &BaseConsumer,
        offsets: &HashMap<(Arc<str>, i32), i64>,
        wait: bool,
    ) -> anyhow::Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(o + 1))?;
        }
        // A commit refused during a rebalance is not fatal: the partition's new owner reads
        // from the last commit, which at-least-once delivery allows.
        // Asynchronous while running (the next commit supersedes a lost one); synchronous for
        // the last one, at stop.
        let mode = if wait {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        if let Err(e) = consumer.commit(&tpl, mode) {
            tracing::warn!(error = %e, "offset commit failed; those records may be read again");
        }
        Ok(())
    }
}

impl Source for Kafka {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        let handle = tokio::runtime::Handle::current();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || consume(self, cx, handle))
                .await
                .map_err(|e| anyhow::anyhow!("consumer thread failed: {e}"))?
        })
    }
}

fn consume(s: Box<Kafka>, cx: SourceContext, rt: tokio::runtime::Handle) -> anyhow::Result<()> {
    let topics: Vec<&str> = s.cfg.topics.iter().map(String::as_str).collect();
    s.consumer
        .subscribe(&topics)
        .map_err(|e| anyhow::anyhow!("cannot subscribe to {topics:?}: {e}"))?;
    let mut unacked = Unacked {
        queue: VecDeque::new(),
    };
    let mut topic_names: HashMap<String, Arc<str>> = HashMap::new();
    let mut last_lag = Instant::now();
    let result = loop {
        if cx.is_stopping() {
            break Ok(());
        }
        let mut batch = Vec::new();
        let mut offsets: HashMap<(Arc<str>, i32), i64> = HashMap::new();
        let mut timeout = Duration::from_millis(100);
        let (notifier, rx) = BatchNotifier::new();
        while batch.len() < s.cfg.batch {
            let Some(m) = s.consumer.poll(timeout) else {
                break;
            };
            timeout = Duration::ZERO;
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(source = %cx.name, error = %e, "consumer error");
                    break;
                }
            };
            let topic = match topic_names.get(m.topic()) {
                Some(t) => t.clone(),
                None => {
                    let t: Arc<str> = m.topic().into();
                    topic_names.insert(m.topic().to_string(), t.clone());
                    t
                }
            };
            let e = event_of(&cx.name, &topic, &m).with_finalizer(notifier.finalizer());
            cx.metrics.bytes_in.inc_by(m.payload_len() as u64);
            offsets.insert((topic.clone(), m.partition()), m.offset());
            batch.push(e);
        }
        drop(notifier);
        if !batch.is_empty() {
            cx.metrics.events_in.inc_by(batch.len() as u64);
            unacked.queue.push_back((offsets, rx));
            if !rt.block_on(cx.out.send(batch)) {
                break Ok(());
            }
        }
        if let Err(e) = unacked.commit_ready(&s.consumer, false) {
            break Err(e);
        }
        if last_lag.elapsed() >= Duration::from_secs(5) {
            last_lag = Instant::now();
            cx.metrics.lag.set(lag(&s.consumer));
        }
    };
    // Let the pipeline drain what it holds, then commit what it delivered.
    let SourceContext { out, .. } = cx;
    drop(out);
    let tail = unacked.commit_ready(&s.consumer, true);
    s.consumer.unsubscribe();
    result.and(tail)
}

/// Records between each assigned partition's position and its end, summed.
fn lag(c: &BaseConsumer) -> i64 {
    let Ok(pos) = c.position() else { return 0 };
    pos.elements()
        .iter()
        .filter_map(|e| {
            let (_, high) = c
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(1))
                .ok()?;
            match e.offset() {
                Offset::Offset(o) => Some((high - o).max(0)),
                _ => None,
            }
        })
        .sum()
}

/// A consumed Kafka record as an event (value, key, headers, timestamp; topic, partition and
/// offset in its meta). The record's time is now when the broker gave none.
pub fn event_of(source: &Arc<str>, topic: &Arc<str>, m: &impl Message) -> Event {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_string().into(),
                        Bytes::copy_from_slice(x.value.unwrap_or_default()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Event::from_record(
        source,
        topic,
        m.partition(),
        m.offset(),
        m.timestamp()
            .to_millis()
            .unwrap_or_else(trib_pipelines::event::now_ms),
        m.key(),
        m.payload(),
        headers,
    )
}
