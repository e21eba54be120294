//! The lake writer and the `lake` pipeline sink around it.
//!
//! Events are gathered per table and Kafka partition (events not read from Kafka: per table);
//! when the gathered events reach `roll_rows` or `roll_bytes`, or the first has waited
//! `roll_age_ms`, they are written as a roll: one Parquet file per hour they fall in, each
//! stored whole before the next (`layout`). Only then are the events acknowledged, so the Kafka
//! source commits offsets the lake already holds. Rolls are encoded at the same time, as many as
//! there are cores (at most `MAX_STORING`), while the next are gathered, rolls of one partition
//! too; but a partition's rolls are stored one at a time, in order, so only its newest roll can
//! be cut short by a crash.
//!
//! At start the lake's own file names say which offsets it holds (`layout::holdings`); what a
//! crash left half-done is removed, and events at or below the held offsets are acknowledged
//! without being written again, which makes a restart after a crash at any point leave exactly
//! one copy. `trib lake export` drives the same writer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use trib_pipelines::config::sinks::LakeSink;
use trib_pipelines::event::{deliver_all, now_ms, Event};
use trib_pipelines::metrics::ComponentMetrics;
use trib_pipelines::runtime::{Sink, SinkContext};

use crate::layout::{self, roll_file};
use crate::parquet_file::{self, Encoding};
use crate::store::LakeStore;

/// The `lake` sink of a pipeline.
pub struct LakeSinkRunner {
    cfg: LakeSink,
}

impl LakeSinkRunner {
    pub fn new(c: &LakeSink) -> anyhow::Result<Self> {
        validate(c)?;
        Ok(Self { cfg: c.clone() })
    }
}

/// Checks a lake sink's settings, naming the field at fault.
pub fn validate(c: &LakeSink) -> anyhow::Result<()> {
    anyhow::ensure!(c.roll_rows > 0, "roll_rows: must be at least 1");
    anyhow::ensure!(c.roll_bytes > 0, "roll_bytes: must be at least 1");
    anyhow::ensure!(!c.path.is_empty(), "path: must not be empty");
    anyhow::ensure!(
        !c.table.is_empty() && !c.table.contains(['/', '\\']) && c.table != "." && c.table != "..",
        "table: `{}` is not a folder name",
        c.table
    );
    let mut seen = std::collections::HashSet::new();
    for (i, col) in c.schema.iter().enumerate() {
        anyhow::ensure!(
            !col.name.is_empty() && !col.name.starts_with('_'),
            "schema[{i}].name: `{}` must be non-empty and not start with `_` (kept for metadata columns)",
            col.name
        );
        anyhow::ensure!(
            seen.insert(col.name.as_str()),
            "schema[{i}].name: `{}` is declared twice",
            col.name
        );
    }
    anyhow::ensure!(
        c.schema.is_empty() || c.mode == trib_pipelines::config::sinks::LakeMode::Json,
        "schema: declared columns are for `mode: json`"
    );
    Ok(())
}

impl Sink for LakeSinkRunner {
    fn run(self: Box<Self>, mut cx: SinkContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let mut w = LakeWriter::open(&self.cfg, cx.metrics.clone()).await?;
            loop {
                let batch = match w.next_due() {
                    Some(due) => tokio::select! {
                        b = cx.input.recv() => b,
                        _ = tokio::time::sleep_until(due.into()) => {
                            w.roll_due().await;
                            continue;
                        }
                    },
                    None => cx.input.recv().await,
                };
                let Some(batch) = batch else { break };
                for e in batch {
                    w.push(e).await;
                }
            }
            w.finish().await;
            Ok(())
        })
    }
}

/// Events gathered for one roll.
struct Gathered {
    /// Per hour of event time (hours since the epoch: one folder each), in time order.
    files: BTreeMap<i64, Vec<Event>>,
    rows: usize,
    bytes: usize,
    opened: Instant,
    offsets: Option<(i64, i64)>,
}

/// Table and Kafka partition (None: events not from Kafka).
type Key = (Arc<str>, Option<i32>);

const HOUR_MS: i64 = 3_600_000;

/// Writes events into the lake in rolls, exactly once for events from Kafka.
pub struct LakeWriter {
    store: LakeStore,
    enc: Arc<Encoding>,
    roll_rows: usize,
    roll_bytes: usize,
    age: Duration,
    default_table: Arc<str>,
    /// The highest offset in the lake per table and Kafka partition (keyed by shared table
    /// names, so the per-event lookup allocates nothing).
    committed: HashMap<(Arc<str>, i32), i64>,
    gathered: HashMap<Key, Gathered>,
    /// The roll being stored, per table and partition.
    storing: HashMap<Key, JoinHandle<()>>,
    /// Rolls that may be encoded and stored at once.
    slots: Arc<Semaphore>,
    counter: u64,
    metrics: ComponentMetrics,
}

impl LakeWriter {
    /// Opens the lake: reads what it holds and removes what a crash left half-done.
    pub async fn open(cfg: &LakeSink, metrics: ComponentMetrics) -> anyhow::Result<Self> {
        validate(cfg)?;
        let store = LakeStore::open(&cfg.path, &cfg.storage_options)?;
        let h = layout::holdings(&store.list("").await?);
        for key in &h.leftovers {
            tracing::info!(lake = %store.location(), key = %key, "removing a file a crash left half-done");
            store.delete(key).await?;
        }
        Ok(Self {
            store,
            enc: Arc::new(Encoding {
                mode: cfg.mode,
                schema: cfg.schema.clone(),
            }),
            roll_rows: cfg.roll_rows,
            roll_bytes: cfg.roll_bytes,
            age: Duration::from_millis(cfg.roll_age_ms),
            default_table: cfg.table.as_str().into(),
            committed: h
                .committed
                .into_iter()
                .map(|((t, p), o)| ((Arc::from(t), p), o))
                .collect(),
            gathered: HashMap::new(),
            storing: HashMap::new(),
            slots: Arc::new(Semaphore::new(
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(MAX_STORING),
            )),
            counter: 0,
            metrics,
        })
    }

    /// The highest offset of `table`'s `partition` in the lake.
    pub fn committed(&self, table: &str, partition: i32) -> Option<i64> {
        self.committed.get(&(Arc::from(table), partition)).copied()
    }

    /// When the oldest gathered roll is due by age.
    pub fn next_due(&self) -> Option<Instant> {
        self.gathered.values().map(|g| g.opened + self.age).min()
    }

    /// Takes one event; stores a roll when one is full.
    pub async fn push(&mut self, e: Event) {
        let table = e
            .meta
            .topic
            .clone()
            .unwrap_or_else(|| self.default_table.clone());
        let kafka = e.meta.partition.zip(e.meta.offset);
        if let Some((p, o)) = kafka {
            if self
                .committed
                .get(&(table.clone(), p))
                .is_some_and(|c| o <= *c)
            {
                // Already in the lake (read again after a restart).
                e.deliver();
                return;
            }
        }
        let key = (table, kafka.map(|(p, _)| p));
        let hour = e.timestamp_ms.div_euclid(HOUR_MS);
        let g = self
            .gathered
            .entry(key.clone())
            .or_insert_with(|| Gathered {
                files: BTreeMap::new(),
                rows: 0,
                bytes: 0,
                opened: Instant::now(),
                offsets: None,
            });
        if let Some((_, o)) = kafka {
            g.offsets = Some(g.offsets.map_or((o, o), |(a, b)| (a.min(o), b.max(o))));
        }
        g.rows += 1;
        g.bytes += e.raw.as_ref().map_or(256, |r| r.len());
        g.files.entry(hour).or_default().push(e);
        if g.rows >= self.roll_rows || g.bytes >= self.roll_bytes {
            if let Some(g) = self.gathered.remove(&key) {
                self.roll(key, g).await;
            }
        }
    }

    /// Stores the rolls whose first event has waited `roll_age_ms`.
    pub async fn roll_due(&mut self) {
        let due: Vec<Key> = self
            .gathered
            .iter()
            .filter(|(_, g)| g.opened.elapsed() >= self.age)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some(g) = self.gathered.remove(&k) {
                self.roll(k, g).await;
            }
        }
    }

    /// Stores everything gathered and waits until it is stored.
    pub async fn finish(mut self) {
        for (k, g) in std::mem::take(&mut self.gathered) {
            self.roll(k, g).await;
        }
        for (_, t) in std::mem::take(&mut self.storing) {
            wait_stored(t).await;
        }
    }

    /// Rolls what is gathered for `table`'s Kafka `partition` now (an export calls it when a
    /// partition's range is read, so its last roll is encoded while the next partition is read).
    pub async fn roll_partition(&mut self, table: &str, partition: i32) {
        let key = (Arc::from(table), Some(partition));
        if let Some(g) = self.gathered.remove(&key) {
            self.roll(key, g).await;
        }
    }

    /// Starts encoding a roll once a slot is free; its files are stored once the previous roll
    /// of its partition is stored, so rolls of one partition are encoded side by side but
    /// stored in order.
    async fn roll(&mut self, key: Key, g: Gathered) {
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return; // The semaphore is never closed.
        };
        let previous = self.storing.remove(&key);
        if let (Some(p), Some((_, last))) = (key.1, g.offsets) {
            self.committed.insert((key.0.clone(), p), last);
        }
        let mut names = Vec::with_capacity(g.files.len());
        let count = g.files.len();
        for (index, hour) in g.files.keys().enumerate() {
            let name = match (key.1, g.offsets) {
                (Some(partition), Some((first, last))) => {
                    roll_file(partition, first, last, index, count).name()
                }
                _ => {
                    self.counter += 1;
                    format!("t{}-{:06}.parquet", now_ms(), self.counter)
                }
            };
            names.push(format!(
                "{}/{name}",
                layout::partition_dir(&key.0, hour * HOUR_MS)
            ));
        }
        let (store, enc, metrics) = (self.store.clone(), self.enc.clone(), self.metrics.clone());
        let task = tokio::spawn(async move {
            let mut encoded = Vec::with_capacity(names.len());
            for (events, key) in g.files.into_values().zip(names) {
                encoded.push(encode_file(&store, &enc, &metrics, key, events).await);
            }
            if let Some(previous) = previous {
                wait_stored(previous).await;
            }
            let mut delivered = Vec::with_capacity(g.rows);
            for file in encoded {
                delivered.extend(store_file(&store, &metrics, file).await);
            }
            drop(slot);
            metrics.events_out.inc_by(delivered.len() as u64);
            deliver_all(delivered);
        });
        self.storing.insert(key, task);
    }
}

/// Rolls encoded and stored at once, at most (each holds its events and their encoding).
const MAX_STORING: usize = 4;

async fn wait_stored(t: JoinHandle<()>) {
    if let Err(e) = t.await {
        tracing::error!(error = %e, "lake: the task storing a roll failed");
    }
}

/// One file of a roll: its name, its events and its Parquet bytes (None: it could not be
/// encoded; its events are then abandoned, already counted as errors, and `events` is empty).
struct EncodedFile {
    key: String,
    events: Vec<Event>,
    bytes: Option<Bytes>,
}

/// Encodes one file on a blocking thread; events that cannot be encoded are counted as errors
/// and dropped, never acknowledged.
async fn encode_file(
    store: &LakeStore,
    enc: &Arc<Encoding>,
    metrics: &ComponentMetrics,
    key: String,
    events: Vec<Event>,
) -> EncodedFile {
    let (en, count) = (enc.clone(), events.len());
    let encoded = tokio::task::spawn_blocking(move || {
        let r = parquet_file::encode(&events, &en);
        (events, r)
    })
    .await;
    let (events, r) = match encoded {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(lake = %store.location(), key, error = %e, "lake encoder task failed; its events are abandoned");
            metrics.errors.inc_by(count as u64);
            return EncodedFile {
                key,
                events: Vec::new(),
                bytes: None,
            };
        }
    };
    let bytes = match r {
        Ok(e) => {
            metrics.errors.inc_by(e.rejected);
            if e.rejected > 0 {
                tracing::warn!(lake = %store.location(), key, values = e.rejected, "values that do not fit the declared schema were written as null");
            }
            Some(Bytes::from(e.bytes))
        }
        // Encoding does not fail on events (json falls back to raw); if it does, the events
        // are abandoned, not acknowledged, so their source does not count them as stored.
        Err(e) => {
            tracing::error!(lake = %store.location(), key, error = %e, "lake file cannot be encoded; its events are abandoned");
            metrics.errors.inc_by(count as u64);
            return EncodedFile {
                key,
                events: Vec::new(),
                bytes: None,
            };
        }
    };
    EncodedFile { key, events, bytes }
}

/// Stores one encoded file, retrying with backoff until it is stored; returns its events
/// (none when it could not be encoded).
async fn store_file(store: &LakeStore, metrics: &ComponentMetrics, f: EncodedFile) -> Vec<Event> {
    let Some(bytes) = f.bytes else {
        return Vec::new(); // Not encoded: counted as errors by `encode_file`.
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        match store.put(&f.key, bytes.clone()).await {
            Ok(()) => {
                metrics.bytes_out.inc_by(bytes.len() as u64);
                metrics.batches_out.inc();
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "lake file not stored; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    f.events
}
