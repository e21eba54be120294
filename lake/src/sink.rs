//! The `lake` sink. Events are gathered per table and Kafka partition (events not read from
//! Kafka: per table); when the gathered events reach `roll_rows` or `roll_bytes`, or the first
//! has waited `roll_age_ms`, they are written as a roll: one Parquet file per time partition,
//! each written whole before the next (`layout`). Only then are the events acknowledged, so the
//! Kafka source commits offsets the lake already holds. At start the lake's own file names say
//! which offsets it holds; events at or below them are acknowledged without being written
//! again, which makes a restart after a crash at any point leave exactly one copy.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use trib_pipelines::config::sinks::LakeSink;
use trib_pipelines::event::{deliver_all, now_ms, Event};
use trib_pipelines::runtime::{Sink, SinkContext};

use crate::layout::{self, RollFile};

pub struct LakeSinkRunner {
    cfg: LakeSink,
}

impl LakeSinkRunner {
    pub fn new(c: &LakeSink) -> anyhow::Result<Self> {
        anyhow::ensure!(c.roll_rows > 0, "roll_rows: must be at least 1");
        anyhow::ensure!(c.roll_bytes > 0, "roll_bytes: must be at least 1");
        anyhow::ensure!(!c.path.is_empty(), "path: must not be empty");
        anyhow::ensure!(
            !c.table.is_empty() && !c.table.contains(['/', '\\']),
            "table: `{}` is not a folder name",
            c.table
        );
        Ok(Self { cfg: c.clone() })
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

/// The highest offset in the lake per table and Kafka partition.
type Committed = HashMap<(Arc<str>, i32), i64>;

const HOUR_MS: i64 = 3_600_000;

impl Sink for LakeSinkRunner {
    fn run(self: Box<Self>, mut cx: SinkContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let root = PathBuf::from(&self.cfg.path);
            let scan_root = root.clone();
            // Keyed by shared table names, so the per-event lookup allocates nothing.
            let mut committed: Committed =
                tokio::task::spawn_blocking(move || layout::committed_offsets(&scan_root))
                    .await?
                    .map_err(|e| anyhow::anyhow!("lake {}: {e}", root.display()))?
                    .into_iter()
                    .map(|((t, p), o)| ((Arc::from(t), p), o))
                    .collect();
            let default_table: Arc<str> = self.cfg.table.as_str().into();
            let age = Duration::from_millis(self.cfg.roll_age_ms);
            let mut gathered: HashMap<Key, Gathered> = HashMap::new();
            let mut counter = 0u64;
            loop {
                let next_due = gathered.values().map(|g| g.opened + age).min();
                let batch = tokio::select! {
                    b = cx.input.recv() => b,
                    _ = tokio::time::sleep_until(next_due.unwrap_or_else(|| Instant::now() + age).into()), if next_due.is_some() => {
                        let due: Vec<Key> = gathered
                            .iter()
                            .filter(|(_, g)| g.opened.elapsed() >= age)
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in due {
                            if let Some(g) = gathered.remove(&k) {
                                self.write_roll(&cx, &k, g, &mut committed, &mut counter).await;
                            }
                        }
                        continue;
                    }
                };
                let Some(batch) = batch else { break };
                for e in batch {
                    let table: Arc<str> = e
                        .meta
                        .topic
                        .clone()
                        .unwrap_or_else(|| default_table.clone());
                    let kafka = e.meta.partition.zip(e.meta.offset);
                    if let Some((p, o)) = kafka {
                        if committed.get(&(table.clone(), p)).is_some_and(|c| o <= *c) {
                            // Already in the lake (read again after a restart).
                            e.deliver();
                            continue;
                        }
                    }
                    let key = (table.clone(), kafka.map(|(p, _)| p));
                    let hour = e.timestamp_ms.div_euclid(HOUR_MS);
                    let g = gathered.entry(key.clone()).or_insert_with(|| Gathered {
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
                    if g.rows >= self.cfg.roll_rows || g.bytes >= self.cfg.roll_bytes {
                        if let Some(g) = gathered.remove(&key) {
                            self.write_roll(&cx, &key, g, &mut committed, &mut counter)
                                .await;
                        }
                    }
                }
            }
            for (k, g) in std::mem::take(&mut gathered) {
                self.write_roll(&cx, &k, g, &mut committed, &mut counter)
                    .await;
            }
            Ok(())
        })
    }
}

impl LakeSinkRunner {
    fn root(&self) -> PathBuf {
        PathBuf::from(&self.cfg.path)
    }

    /// Writes a roll's files one after the other (retrying with backoff until stored), then
    /// acknowledges its events.
    async fn write_roll(
        &self,
        cx: &SinkContext,
        key: &Key,
        g: Gathered,
        committed: &mut Committed,
        counter: &mut u64,
    ) {
        let count = g.files.len();
        let mut delivered = Vec::with_capacity(g.rows);
        for (index, (hour, events)) in g.files.into_iter().enumerate() {
            let dir = layout::partition_dir(&self.root(), &key.0, hour * HOUR_MS);
            let name = match (key.1, g.offsets) {
                (Some(partition), Some((first, last))) => RollFile {
                    partition,
                    first,
                    last,
                    index,
                    count,
                }
                .name(),
                _ => {
                    *counter += 1;
                    format!("t{}-{:06}.parquet", now_ms(), counter)
                }
            };
            let mode = self.cfg.mode;
            let mut backoff = Duration::from_millis(100);
            let events = Arc::new(events);
            loop {
                let (dir2, name2, ev) = (dir.clone(), name.clone(), events.clone());
                let r = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
                    let bytes = crate::parquet_file::encode(&ev, mode)?;
                    layout::write_file(&dir2, &name2, &bytes)?;
                    Ok(bytes.len() as u64)
                })
                .await;
                match r {
                    Ok(Ok(n)) => {
                        cx.metrics.bytes_out.inc_by(n);
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(sink = %cx.name, file = %dir.join(&name).display(), error = %e, retry_in = ?backoff, "lake file not written; retrying");
                    }
                    Err(e) => {
                        tracing::warn!(sink = %cx.name, error = %e, "lake writer task failed; retrying");
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            match Arc::try_unwrap(events) {
                Ok(ev) => delivered.extend(ev),
                Err(_) => tracing::error!("lake: events still shared after their file was written"),
            }
        }
        if let (Some(p), Some((_, last))) = (key.1, g.offsets) {
            committed.insert((key.0.clone(), p), last);
        }
        cx.metrics.events_out.inc_by(delivered.len() as u64);
        deliver_all(delivered);
    }
}
