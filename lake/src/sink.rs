//! The lake writer and the `lake` pipeline sink around it.
//!
//! Events are gathered per table and Kafka partition (events not read from Kafka: per table);
//! when the gathered events reach `roll_rows` or `roll_bytes`, or the first has waited
//! `roll_age_ms`, they are written as a roll: one Parquet file per hour they fall in, each
//! stored whole before the next (`layout`). Only then are the events acknowledged, so the Kafka
//! source commits offsets the lake already holds. Rolls are encoded on the `encoders` threads
//! (one per core) while the next are gathered, rolls of one partition too; but a partition's
//! rolls are stored one at a time, in order, so only its newest roll can be cut short by a
//! crash. A roll is encoded chunk by chunk while it is gathered (`GatheredFile`), and one that
//! is encoded and waits for the one before it holds no encoder; as many rolls as there are
//! encoder threads (two at least) are in memory once gathered (gathering waits for one to be
//! stored).
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
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use trib_pipelines::config::sinks::LakeSink;
use trib_pipelines::event::{now_ms, Event};
use trib_pipelines::metrics::ComponentMetrics;
use trib_pipelines::runtime::{Sink, SinkContext};

use crate::encoders;
use crate::layout::{self, roll_file};
use crate::parquet_file::{Encoding, FileEncoder, ENCODE_CHUNK};
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
    files: BTreeMap<i64, GatheredFile>,
    rows: usize,
    bytes: usize,
    opened: Instant,
    offsets: Option<(i64, i64)>,
}

/// The events of one file of a roll being gathered. Once a file has `ENCODE_CHUNK` events, they
/// go to a task that encodes them while the next are gathered (`encode_chunks`), and so on
/// chunk by chunk; a file that never fills a chunk is encoded whole when its roll is.
#[derive(Default)]
struct GatheredFile {
    /// Events not yet handed to the encoder.
    pending: Vec<Event>,
    /// All the file's events so far.
    rows: usize,
    /// Where full chunks go, and the task encoding them; None until the first chunk is full.
    stream: Option<(mpsc::UnboundedSender<Vec<Event>>, JoinHandle<Streamed>)>,
}

/// A file's encoder after its chunks, with its events in the chunks they were encoded in; None
/// when a chunk's encoding failed (panicked): the file's events are then abandoned.
type Streamed = Option<(FileEncoder, Vec<Vec<Event>>)>;

impl GatheredFile {
    /// Adds an event; hands a full chunk to the encoder, started on the first.
    fn push(&mut self, e: Event, enc: &Arc<Encoding>) {
        self.pending.push(e);
        self.rows += 1;
        if self.pending.len() < ENCODE_CHUNK {
            return;
        }
        // This file is busy: its next chunks are sized for a whole chunk from the start.
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(ENCODE_CHUNK));
        let (tx, _) = self.stream.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(encode_chunks(enc.clone(), rx));
            (tx, task)
        });
        // A send fails only once the encoder has failed; the chunk is then abandoned with the
        // rest of the file's events (counted when the roll is stored).
        let _ = tx.send(chunk);
    }

    /// The file's encoder and events once the last chunk is encoded (the pending events are
    /// the last chunk); None when its encoding failed.
    async fn close(self, enc: &Arc<Encoding>) -> Streamed {
        match self.stream {
            Some((tx, task)) => {
                if !self.pending.is_empty() {
                    let _ = tx.send(self.pending);
                }
                drop(tx);
                task.await.ok().flatten()
            }
            None => Some((FileEncoder::new(enc.clone()), vec![self.pending])),
        }
    }
}

/// Encodes the chunks of one file as they come, each on an encoder thread once one is free.
async fn encode_chunks(
    enc: Arc<Encoding>,
    mut chunks: mpsc::UnboundedReceiver<Vec<Event>>,
) -> Streamed {
    let mut file = FileEncoder::new(enc);
    let mut done = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        let (f, chunk) = encoders::run(move || {
            file.add(&chunk);
            (file, chunk)
        })
        .await?;
        file = f;
        done.push(chunk);
    }
    Some((file, done))
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
    /// Rolls that may be held in memory at once, from their roll until they are stored.
    held: Arc<Semaphore>,
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
            // One per encoder thread, two at least, so a roll waiting for the one before it
            // does not stop gathering.
            held: Arc::new(Semaphore::new(encoders::count().max(2))),
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
        g.files.entry(hour).or_default().push(e, &self.enc);
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

    /// Hands a roll on once `held` has room (one roll per encoder thread, two at least); its
    /// files are stored once the previous roll of its partition is stored, so rolls of one
    /// partition are encoded side by side but stored in order. Encoding waits for a free encoder
    /// thread; waiting for the previous roll holds none.
    async fn roll(&mut self, key: Key, g: Gathered) {
        let Ok(held) = self.held.clone().acquire_owned().await else {
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
            for (file, key) in g.files.into_values().zip(names) {
                let rows = file.rows;
                let streamed = file.close(&enc).await;
                encoded.push(encode_file(&store, &metrics, key, streamed, rows).await);
            }
            if let Some(previous) = previous {
                wait_stored(previous).await;
            }
            let mut delivered = Vec::with_capacity(encoded.len());
            for file in encoded {
                delivered.push(store_file(&store, &metrics, file).await);
            }
            drop(held);
            let events = delivered.into_iter().flatten().flatten();
            let mut count = 0;
            for e in events {
                count += 1;
                e.deliver();
            }
            metrics.events_out.inc_by(count);
        });
        self.storing.insert(key, task);
    }
}

async fn wait_stored(t: JoinHandle<()>) {
    if let Err(e) = t.await {
        tracing::error!(error = %e, "lake: the task storing a roll failed");
    }
}

/// One file of a roll: its name, its events and its Parquet bytes (None: it could not be
/// encoded; its events are then abandoned, already counted as errors, and `events` is empty).
struct EncodedFile {
    key: String,
    events: Vec<Vec<Event>>,
    bytes: Option<Bytes>,
}

/// Finishes encoding one file on an encoder thread (the last chunk's row group and the footer,
/// or the whole file when it was not streamed); events that cannot be encoded are counted as
/// errors and dropped, never acknowledged. `streamed` is `GatheredFile::close`'s; `rows` is the
/// file's count of events.
async fn encode_file(
    store: &LakeStore,
    metrics: &ComponentMetrics,
    key: String,
    streamed: Streamed,
    rows: usize,
) -> EncodedFile {
    let abandoned = |count: usize| {
        metrics.errors.inc_by(count as u64);
        EncodedFile {
            key: key.clone(),
            events: Vec::new(),
            bytes: None,
        }
    };
    let Some((file, chunks)) = streamed else {
        tracing::error!(lake = %store.location(), key, "lake encoder task failed; its events are abandoned");
        return abandoned(rows);
    };
    let encoded = encoders::run(move || {
        if !file.needs_events() {
            let r = file.finish(&[]);
            return (chunks, r);
        }
        let all: Vec<Event> = chunks.into_iter().flatten().collect();
        let r = file.finish(&all);
        (vec![all], r)
    })
    .await;
    let Some((events, r)) = encoded else {
        tracing::error!(lake = %store.location(), key, "lake encoder task failed; its events are abandoned");
        return abandoned(rows);
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
            return abandoned(rows);
        }
    };
    EncodedFile { key, events, bytes }
}

/// Stores one encoded file, retrying with backoff until it is stored; returns its events
/// (none when it could not be encoded).
async fn store_file(
    store: &LakeStore,
    metrics: &ComponentMetrics,
    f: EncodedFile,
) -> Vec<Vec<Event>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use trib_pipelines::finalize::{BatchNotifier, Status};

    /// Every Parquet file under `dir`, as (`_offset`, `id`, `extra`) rows.
    fn rows_under(dir: &std::path::Path, files: &mut usize) -> Vec<(i64, i64, Option<i64>)> {
        let mut rows = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rows.extend(rows_under(&path, files));
                continue;
            }
            *files += 1;
            let file = std::fs::File::open(&path).unwrap();
            for b in ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
            {
                let b = b.unwrap();
                let int = |name: &str| {
                    b.column_by_name(name)
                        .map(|c| c.as_primitive::<Int64Type>().clone())
                };
                let (offset, id, extra) =
                    (int("_offset").unwrap(), int("id").unwrap(), int("extra"));
                for i in 0..b.num_rows() {
                    let extra = extra.as_ref().filter(|c| c.is_valid(i)).map(|c| c.value(i));
                    rows.push((offset.value(i), id.value(i), extra));
                }
            }
        }
        rows
    }

    /// Rolls several chunks long, with a field that first shows up in a late chunk (so that
    /// file is encoded whole after all) and a few events of the hour before (a small second file
    /// per roll): every event is in the lake once, with its values, and delivered.
    #[tokio::test]
    async fn streamed_rolls_hold_every_event_once_and_deliver_it() {
        let dir = tempfile::tempdir().unwrap();
        let cfg: LakeSink = serde_json::from_value(serde_json::json!({
            "type": "lake",
            "inputs": ["in"],
            "path": dir.path().to_str().unwrap(),
            "roll_rows": 20_000,
        }))
        .unwrap();
        let metrics = ComponentMetrics::default();
        let mut w = LakeWriter::open(&cfg, metrics.clone()).await.unwrap();
        let (batch, delivered) = BatchNotifier::new();
        let (source, topic) = (Arc::<str>::from("test"), Arc::<str>::from("t"));
        let hour = 490_000 * HOUR_MS;
        let total = 45_000i64;
        for offset in 0..total {
            let body = if offset >= 37_000 {
                format!(
                    r#"{{"id": {offset}, "text": "row {offset}", "extra": {}}}"#,
                    offset * 2
                )
            } else {
                format!(r#"{{"id": {offset}, "text": "row {offset}"}}"#)
            };
            let ts = if offset % 1000 == 999 {
                hour - 1
            } else {
                hour + offset
            };
            let e = Event::from_record_bytes(
                &source,
                &topic,
                0,
                offset,
                ts,
                None,
                Some(Bytes::from(body)),
                Vec::new(),
            );
            w.push(e.with_finalizer(batch.finalizer())).await;
        }
        drop(batch);
        w.finish().await;
        assert_eq!(metrics.errors.get(), 0);
        assert_eq!(metrics.events_out.get(), total as u64);
        assert_eq!(delivered.await.ok(), Some(Status::Delivered));

        let mut files = 0;
        let mut rows = rows_under(dir.path(), &mut files);
        assert_eq!(
            files, 6,
            "three rolls, each with a file for each of two hours"
        );
        rows.sort();
        assert_eq!(rows.len(), total as usize);
        for (i, (offset, id, extra)) in rows.into_iter().enumerate() {
            assert_eq!((offset, id), (i as i64, i as i64));
            assert_eq!(
                extra,
                (offset >= 37_000).then_some(offset * 2),
                "offset {offset}"
            );
        }
    }
}
