//! The reading side of `trib lake export`: a topic's partitions, each over an offset range, read
//! as a read_committed consumer with the native wire client (`trib_mirror::cluster`), turned
//! into events whose keys and values share the fetched (decompressed) batches instead of being
//! copied record by record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::mpsc;
use trib_broker::log::batch::for_each_record;
use trib_mirror::cluster::Cluster;
use trib_mirror::committed::committed_batches;
use trib_pipelines::event::Event;

/// Bytes asked of one partition per Fetch: small enough that the fetches read ahead of the
/// writer (`READ_AHEAD`) hold little memory, large enough that a fetch costs little per record.
const FETCH_BYTES: i32 = 2 << 20;

/// Fetches' events read ahead of the writer, at most, besides the one being read.
pub const READ_AHEAD: usize = 2;

/// How long a partition may return nothing before the export gives up.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// One partition's range to export: [start, end).
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

/// Where in a partition `TopicReader::offsets` looks.
#[derive(Debug, Clone, Copy)]
pub enum At {
    /// The first offset still held.
    LogStart,
    /// Where a read_committed consumer stops: the last stable offset.
    StableEnd,
    /// The first record at or after this time (epoch ms); -1 when there is none.
    Time(i64),
}

/// A topic on a cluster, with its partitions' leaders.
pub struct TopicReader {
    cluster: Cluster,
    topic: String,
    leaders: BTreeMap<i32, i32>,
}

impl TopicReader {
    /// Connects to `brokers` (comma separated) and reads `topic`'s partitions and leaders.
    pub async fn connect(brokers: &str, topic: &str) -> anyhow::Result<Self> {
        let cluster = Cluster::new(
            "source",
            brokers.split(',').map(|b| b.trim().to_string()).collect(),
        );
        let meta = cluster
            .metadata(Some(&[topic.to_string()]))
            .await
            .with_context(|| format!("cannot reach {brokers}"))?;
        let Some(t) = meta.topics.get(topic) else {
            bail!("topic {topic} not found");
        };
        Ok(Self {
            leaders: t.leaders.clone(),
            cluster,
            topic: topic.to_string(),
        })
    }

    /// The topic's partitions, or `wanted` after checking that each exists.
    pub fn partitions(&self, wanted: &[i32]) -> anyhow::Result<Vec<i32>> {
        if wanted.is_empty() {
            return Ok(self.leaders.keys().copied().collect());
        }
        for p in wanted {
            if !self.leaders.contains_key(p) {
                bail!("topic {} has no partition {p}", self.topic);
            }
        }
        Ok(wanted.to_vec())
    }

    /// Each partition's offset at `at` (ListOffsets, grouped by leader).
    pub async fn offsets(&self, parts: &[i32], at: At) -> anyhow::Result<BTreeMap<i32, i64>> {
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in parts {
            by_leader
                .entry(self.leaders.get(p).copied().unwrap_or(-1))
                .or_default()
                .push(*p);
        }
        let mut out = BTreeMap::new();
        for (leader, ps) in by_leader {
            let node = (leader >= 0).then_some(leader);
            let found = match at {
                At::LogStart => self.cluster.list_offsets(node, &self.topic, &ps, -2).await,
                At::StableEnd => self.cluster.stable_ends(node, &self.topic, &ps).await,
                At::Time(ms) => self.cluster.list_offsets(node, &self.topic, &ps, ms).await,
            };
            out.extend(
                found.with_context(|| format!("{} partitions {ps:?}: offsets", self.topic))?,
            );
        }
        Ok(out)
    }

    /// Reads every span's committed records in order and sends them as events, one `Events`
    /// per fetch, stopping a partition at its span's end or at its first record after
    /// `to_time`, then sending its `End`. Partitions are read one after the other, so the
    /// writer's rolls fill (and are encoded) one at a time from the start instead of all at
    /// once.
    pub async fn read(
        &self,
        spans: Vec<Span>,
        to_time: Option<i64>,
        source: Arc<str>,
        tx: mpsc::Sender<Chunk>,
    ) -> anyhow::Result<()> {
        let topic: Arc<str> = self.topic.as_str().into();
        for mut span in spans {
            let p = span.partition;
            let mut idle = Instant::now();
            let mut done = span.start >= span.end;
            // Each fetch's events are gathered in a vector sized like the previous fetch's.
            let mut expected = 0;
            while !done {
                let pos = span.start;
                let f = self
                    .cluster
                    .fetch_one(
                        self.leaders.get(&p).copied(),
                        &self.topic,
                        p,
                        pos,
                        FETCH_BYTES,
                        true,
                    )
                    .await
                    .with_context(|| format!("{topic} partition {p}: fetch at offset {pos}"))?;
                let mut events = Vec::with_capacity(expected);
                let mut bad = None;
                let next = committed_batches(&f.records, &f.aborted, pos, |b, h| {
                    if done || bad.is_some() {
                        return;
                    }
                    let walked = for_each_record(b, |r| {
                        if done || r.offset < pos {
                            return;
                        }
                        if r.offset >= span.end || to_time.is_some_and(|t| r.timestamp > t) {
                            done = true;
                            return;
                        }
                        let headers = r
                            .headers()
                            .map(|(k, v)| {
                                (
                                    String::from_utf8_lossy(k).into_owned().into(),
                                    v.map(|v| r.share(v)).unwrap_or_default(),
                                )
                            })
                            .collect();
                        events.push(Event::from_record_bytes(
                            &source,
                            &topic,
                            p,
                            r.offset,
                            r.timestamp,
                            r.key_bytes(),
                            r.value_bytes(),
                            headers,
                        ));
                    });
                    if let Err(e) = walked {
                        bad = Some(format!(
                            "{topic} partition {p}: the batch at offset {} cannot be read: {e}",
                            h.base_offset
                        ));
                    }
                });
                if let Some(e) = bad {
                    bail!(e);
                }
                span.start = next;
                done |= next >= span.end;
                expected = events.len();
                if !events.is_empty() && tx.send(Chunk::Events(events)).await.is_err() {
                    return Ok(());
                }
                if next > pos {
                    idle = Instant::now();
                } else if !done {
                    if idle.elapsed() > IDLE_LIMIT {
                        bail!(
                            "{topic} partition {p}: nothing to read at offset {pos} for {} s",
                            IDLE_LIMIT.as_secs()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            if tx.send(Chunk::End(p)).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// What the reader hands the writer.
pub enum Chunk {
    /// Events of one fetch, of one partition, in offset order.
    Events(Vec<Event>),
    /// A partition's range is read.
    End(i32),
}
