//! Translating mode's copy loop, for targets that do not take offset-preserving writes (any
//! Kafka cluster, or a Tributary broker with `mirror_writes: false`).
//!
//! Each round fetches the source as a read_committed consumer (only committed records, no
//! markers), re-encodes each partition's records into one batch (keys, values, headers and
//! timestamps kept, plus a `trib.mirror.source` provenance header naming the source cluster),
//! and writes them in one transaction at the target together with the checkpoint records of
//! the exact offset map (`offset_map`). The transactional id is the link's own: a restarted
//! mirror fences the old one and aborts what it left open, then resumes from the committed
//! checkpoint, so nothing is missing or doubled. A record that already carries the target
//! cluster in a provenance header came from there and is never copied back.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::watch;
use trib_broker::log::batch::for_each_record;
use trib_broker::log::batch_writer::BatchWriter;

use crate::cluster::ClusterError;
use crate::committed::committed_batches;
use crate::link::{now_ms, Fetched, Key, Link};
use crate::offset_map::{self, push_run, Checkpoint, Run};
use crate::txn_producer::{TxnProducer, Write};

/// The header each copied record gains: the cluster id it was copied from.
pub const PROVENANCE_HEADER: &str = "trib.mirror.source";

/// Bytes a record adds to a batch beyond its key and value, for the size cap.
const RECORD_OVERHEAD: usize = 96;

/// A committed partition of a round: (source key, target partition, its checkpoint, records,
/// bytes, batches).
type Done = (Key, (String, i32), Checkpoint, u64, u64, u64);

/// Up to `batch_max_bytes` of a partition's records, re-encoded into one batch.
struct Chunk {
    writer: BatchWriter,
    /// (source offset, index in the batch, count) runs.
    runs: Vec<Run>,
}

impl Chunk {
    fn new() -> Self {
        Self {
            writer: BatchWriter::new(BytesMut::new()),
            runs: Vec::new(),
        }
    }
}

/// One partition's share of a round: every record of its fetch, in batches of at most
/// `batch_max_bytes`.
struct Planned {
    key: Key,
    target_topic: String,
    leader: Option<i32>,
    from: i64,
    next: i64,
    chunks: Vec<Chunk>,
    codec: i16,
    records: u64,
    bytes: u64,
}

/// A fetch started before the round it feeds: the offset each partition was fetched from, and
/// the answers.
type Prefetched = (HashMap<Key, i64>, Vec<(Key, Fetched)>);

impl Link {
    /// Copies until `stop` turns true. The fetch for the next round runs while the current
    /// round's transaction is written and committed.
    pub(crate) async fn run_translating(mut self, mut stop: watch::Receiver<bool>) {
        let mut producer = TxnProducer::new(self.target.clone(), self.txn_id.clone());
        let mut ready = false;
        let mut next_sync = Instant::now();
        let mut prefetched: Option<Prefetched> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            self.sync_if_due(&mut next_sync).await;
            if !ready {
                prefetched = None;
                match self.start_translating(&mut producer).await {
                    Ok(()) => ready = true,
                    Err(e) => {
                        tracing::warn!(source = %self.name, error = %e, "cannot start the transactional copy; retrying");
                        self.metrics.error(&self.name);
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stop.changed() => {}
                        }
                        continue;
                    }
                }
            }
            self.reset_positions().await;
            let fetched = match prefetched.take() {
                Some((starts, mut fetched)) => {
                    // Only answers fetched from where each partition now stands.
                    fetched.retain(|(k, _)| {
                        let p = self.parts.get(k);
                        p.is_some_and(|p| !p.needs_reset && starts.get(k) == Some(&p.next))
                    });
                    fetched
                }
                None => {
                    let wanted = self.wanted();
                    if wanted.is_empty() {
                        tokio::select! {
                            _ = tokio::time::sleep(self.sync_interval.min(Duration::from_millis(500))) => {}
                            _ = stop.changed() => {}
                        }
                        continue;
                    }
                    let fetch = self.fetch(wanted, true);
                    tokio::select! {
                        f = fetch => f,
                        _ = stop.changed() => break,
                    }
                }
            };
            let fetch_failed = !fetched.is_empty()
                && fetched
                    .iter()
                    .all(|(_, f)| matches!(f, Fetched::Error { .. }));
            let plan = self.plan(fetched).await;
            if plan.is_empty() {
                if fetch_failed {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                continue;
            }
            if let Some(t) = &self.throttle {
                t.take(plan.iter().map(|p| p.bytes as usize).sum()).await;
            }
            // Fetch what follows this round while it commits; used only if the commit succeeds.
            let mut wanted = self.wanted();
            let planned: HashMap<&Key, i64> = plan.iter().map(|p| (&p.key, p.next)).collect();
            for (key, _, next) in &mut wanted {
                if let Some(n) = planned.get(key) {
                    *next = *n;
                }
            }
            drop(planned);
            let starts: HashMap<Key, i64> =
                wanted.iter().map(|(k, _, n)| (k.clone(), *n)).collect();
            let fetch = self.fetch(wanted, true);
            let (result, next_fetched) =
                futures::future::join(self.commit(&mut producer, plan), fetch).await;
            match result {
                Ok(done) => {
                    self.committed(done);
                    prefetched = Some((starts, next_fetched));
                }
                Err(e) => {
                    tracing::warn!(source = %self.name, error = %e, "mirror transaction failed; resuming from the committed checkpoint");
                    self.metrics.error(&self.name);
                    ready = false;
                }
            }
        }
        tracing::info!(source = %self.name, "mirror link stopped");
    }

    /// Takes the transactional id (completing or aborting what a previous instance left), then
    /// reads the committed checkpoint: every partition resumes where it says.
    async fn start_translating(&mut self, producer: &mut TxnProducer) -> Result<(), ClusterError> {
        self.ensure_checkpoint_topic().await?;
        producer.init().await?;
        self.maps = offset_map::load(&self.target, &self.checkpoint_topic).await?;
        for p in self.parts.values_mut() {
            p.needs_reset = true;
        }
        tracing::info!(source = %self.name, transactional_id = %self.txn_id, partitions = self.maps.len(), "transactional copy ready");
        Ok(())
    }

    async fn ensure_checkpoint_topic(&mut self) -> Result<(), ClusterError> {
        let name = self.checkpoint_topic.clone();
        let meta = self
            .target
            .metadata(Some(std::slice::from_ref(&name)))
            .await?;
        if !meta.topics.contains_key(&name) {
            let configs: BTreeMap<String, String> = [
                ("retention.ms".to_string(), "-1".to_string()),
                ("retention.bytes".to_string(), "-1".to_string()),
            ]
            .into();
            self.target.create_topic(&name, 1, &configs).await?;
            tracing::info!(topic = %name, "checkpoint topic created");
        }
        let meta = self
            .target
            .metadata(Some(std::slice::from_ref(&name)))
            .await?;
        self.checkpoint_leader = meta
            .topics
            .get(&name)
            .and_then(|t| t.leaders.get(&0))
            .copied();
        Ok(())
    }

    /// Re-encodes each partition's committed records into batches of at most
    /// `batch_max_bytes`.
    async fn plan(&mut self, fetched: Vec<(Key, Fetched)>) -> Vec<Planned> {
        let mut plan = Vec::new();
        let now = now_ms();
        let cap = self.batch_max_bytes;
        let target_cluster = self.target_cluster_id.clone();
        let source_cluster = self.source_cluster_id.clone();
        for (key, f) in fetched {
            let Some(p) = self.parts.get(&key) else {
                continue;
            };
            if p.needs_reset {
                continue;
            }
            let (records, high_watermark, log_start, aborted) = match f {
                Fetched::Error { code, message } => {
                    self.fetch_error(&key, code, &message).await;
                    continue;
                }
                Fetched::Data {
                    records,
                    high_watermark,
                    log_start,
                    aborted,
                } => (records, high_watermark, log_start, aborted),
            };
            let from = p.next;
            let mut chunks = vec![Chunk::new()];
            let mut codec = None;
            let mut next = from;
            let mut looped = 0u64;
            let mut copied = 0u64;
            let mut bytes = 0u64;
            let mut first_ts = None;
            let mut bad = None;
            let end = committed_batches(&records, &aborted, from, |batch, h| {
                if bad.is_some() {
                    return;
                }
                codec.get_or_insert(h.compression());
                let walked = for_each_record(batch, |r| {
                    if r.offset < from {
                        return;
                    }
                    next = r.offset + 1;
                    let provenance = r
                        .headers()
                        .filter(|(k, _)| *k == PROVENANCE_HEADER.as_bytes());
                    if provenance
                        .clone()
                        .any(|(_, v)| v == Some(target_cluster.as_bytes()))
                    {
                        looped += 1;
                        return;
                    }
                    let size = r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len);
                    let full = chunks.last().is_some_and(|c| {
                        c.writer.count() > 0 && c.writer.size() + size + RECORD_OVERHEAD > cap
                    });
                    if full {
                        chunks.push(Chunk::new());
                    }
                    let Some(chunk) = chunks.last_mut() else {
                        return;
                    };
                    first_ts.get_or_insert(r.timestamp);
                    let index = i64::from(chunk.writer.count());
                    let headers = r.headers().chain(std::iter::once((
                        PROVENANCE_HEADER.as_bytes(),
                        Some(source_cluster.as_bytes()),
                    )));
                    chunk.writer.push(r.timestamp, r.key, r.value, headers);
                    copied += 1;
                    bytes += size as u64;
                    push_run(&mut chunk.runs, Run(r.offset, index, 1));
                });
                if let Err(e) = walked {
                    bad.get_or_insert(e);
                }
            });
            let Some(p) = self.parts.get_mut(&key) else {
                continue;
            };
            p.source_end = high_watermark;
            p.source_start = log_start;
            if let Some(e) = bad {
                tracing::error!(source = %self.name, topic = %key.0, partition = key.1, offset = next, error = %e,
                    "a source batch cannot be read; partition paused");
                self.metrics.error(&self.name);
                p.needs_reset = true;
                p.retry_at = Some(Instant::now() + crate::link::RETRY_AFTER);
                continue;
            }
            next = next.max(end);
            if looped > 0 {
                tracing::debug!(source = %self.name, topic = %key.0, partition = key.1, records = looped,
                    "records that came from the target cluster were not copied back");
            }
            if let Some(ts) = first_ts {
                p.lag_seconds = ((now - ts).max(0) as f64) / 1000.0;
            }
            if copied == 0 {
                // Only markers, aborted or looped records: nothing to write, the position moves.
                self.copied_through(&key, next);
                continue;
            }
            plan.push(Planned {
                key: key.clone(),
                target_topic: p.target_topic.clone(),
                leader: p.target_leader,
                from,
                next,
                chunks,
                codec: codec.unwrap_or(0),
                records: copied,
                bytes,
            });
        }
        plan
    }

    /// Writes a round in one transaction: the batches (in waves, one batch per partition per
    /// wave), then the checkpoint records that map them, then the commit. Returns the
    /// checkpoints (now committed) by partition.
    async fn commit(
        &self,
        producer: &mut TxnProducer,
        plan: Vec<Planned>,
    ) -> Result<Vec<Done>, ClusterError> {
        let failed = |what: String, message: String| ClusterError::Kafka {
            cluster: self.target.name.clone(),
            what,
            code: -1,
            message: Some(message),
        };
        let mut parts: Vec<(String, i32)> = plan
            .iter()
            .map(|p| (p.target_topic.clone(), p.key.1))
            .collect();
        parts.push((self.checkpoint_topic.clone(), 0));
        producer.add_partitions(&parts).await?;
        let mut waves: Vec<Vec<Write>> = Vec::new();
        let mut rest = Vec::with_capacity(plan.len());
        for p in plan {
            let mut runs = Vec::with_capacity(p.chunks.len());
            for (i, mut chunk) in p.chunks.into_iter().enumerate() {
                let stamp = producer.stamp(&p.target_topic, p.key.1, chunk.writer.count());
                let batch = chunk
                    .writer
                    .seal(p.codec, stamp)
                    .map_err(|e| failed("sealing a batch".into(), e.to_string()))?;
                if waves.len() <= i {
                    waves.push(Vec::new());
                }
                waves[i].push(Write {
                    topic: p.target_topic.clone(),
                    partition: p.key.1,
                    leader: p.leader,
                    batch,
                });
                runs.push(chunk.runs);
            }
            rest.push((
                p.key,
                p.target_topic,
                p.from,
                p.next,
                runs,
                p.records,
                p.bytes,
            ));
        }
        let bases = producer.produce(waves).await?;
        let mut cp_writer = BatchWriter::new(BytesMut::new());
        let mut done = Vec::with_capacity(rest.len());
        let now = now_ms();
        for (key, target_topic, from, next, chunk_runs, records, bytes) in rest {
            let tkey = (target_topic, key.1);
            let batches = chunk_runs.len() as u64;
            let mut runs = Vec::new();
            for (wave, chunk) in chunk_runs.into_iter().enumerate() {
                let base = bases
                    .get(wave)
                    .and_then(|b| b.get(&tkey))
                    .copied()
                    .filter(|b| *b >= 0)
                    .ok_or_else(|| {
                        failed(
                            format!("producing to {}/{}", tkey.0, tkey.1),
                            "no base offset in the answer".into(),
                        )
                    })?;
                for r in chunk {
                    push_run(&mut runs, Run(r.0, base + r.1, r.2));
                }
            }
            let c = Checkpoint {
                source: self.name.clone(),
                source_cluster: self.source_cluster_id.clone(),
                source_topic: key.0.clone(),
                from,
                next,
                runs,
            };
            let value = serde_json::to_vec(&c)
                .map_err(|e| failed("encoding a checkpoint".into(), e.to_string()))?;
            let k = offset_map::key(&tkey.0, tkey.1);
            cp_writer.push(
                now,
                Some(k.as_bytes()),
                Some(&value),
                std::iter::empty::<(&[u8], Option<&[u8]>)>(),
            );
            done.push((key, tkey, c, records, bytes, batches));
        }
        let stamp = producer.stamp(&self.checkpoint_topic, 0, cp_writer.count());
        let batch = cp_writer
            .seal(0, stamp)
            .map_err(|e| failed("sealing a batch".into(), e.to_string()))?;
        producer
            .produce(vec![vec![Write {
                topic: self.checkpoint_topic.clone(),
                partition: 0,
                leader: self.checkpoint_leader,
                batch,
            }]])
            .await?;
        producer.end(true).await?;
        Ok(done)
    }

    /// A committed round: maps and positions move on.
    fn committed(&mut self, done: Vec<Done>) {
        for (key, tkey, c, records, bytes, batches) in done {
            self.metrics.copied(&self.name, bytes, records, batches);
            self.maps.entry(tkey).or_default().apply(&c);
            self.copied_through(&key, c.next);
        }
    }
}
