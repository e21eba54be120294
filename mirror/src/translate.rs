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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::watch;
use trib_broker::log::batch::for_each_record;
use trib_broker::log::batch_writer::BatchWriter;

use crate::cluster::ClusterError;
use crate::committed::committed_batches;
use crate::link::{now_ms, Fetched, Key, Link};
use crate::offset_map::{self, Checkpoint, Run};
use crate::txn_producer::{TxnProducer, Write};

/// The header each copied record gains: the cluster id it was copied from.
pub const PROVENANCE_HEADER: &str = "trib.mirror.source";

/// Bytes a record adds to a batch beyond its key and value, for the size cap.
const RECORD_OVERHEAD: usize = 96;

/// A committed partition of a round: (source key, target partition, its checkpoint, records,
/// bytes).
type Done = (Key, (String, i32), Checkpoint, u64, u64);

/// One partition's share of a round.
struct Planned {
    key: Key,
    target_topic: String,
    leader: Option<i32>,
    from: i64,
    next: i64,
    writer: BatchWriter,
    codec: i16,
    /// (source offset, index in the batch) runs.
    runs: Vec<Run>,
    bytes: u64,
}

impl Link {
    /// Copies until `stop` turns true.
    pub(crate) async fn run_translating(mut self, mut stop: watch::Receiver<bool>) {
        let mut producer = TxnProducer::new(self.target.clone(), self.txn_id.clone());
        let mut ready = false;
        let mut next_sync = Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            self.sync_if_due(&mut next_sync).await;
            if !ready {
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
            let wanted = self.wanted();
            if wanted.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(self.sync_interval.min(Duration::from_millis(500))) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let fetch = crate::link::fetch_all(
                self.source.clone(),
                wanted,
                self.fetch_max_bytes,
                self.partition_max_bytes,
                true,
            );
            let fetched = tokio::select! {
                f = fetch => f,
                _ = stop.changed() => break,
            };
            let fetch_failed = fetched
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
            match self.commit(&mut producer, plan).await {
                Ok(done) => self.committed(done),
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

    /// Re-encodes each partition's committed records into one batch, up to the size cap.
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
            let mut writer = BatchWriter::new(BytesMut::new());
            let mut runs: Vec<Run> = Vec::new();
            let mut codec = None;
            let mut next = from;
            let mut full = false;
            let mut looped = 0u64;
            let mut bytes = 0u64;
            let mut first_ts = None;
            let mut bad = None;
            let end = committed_batches(&records, &aborted, from, |batch, h| {
                if full {
                    return;
                }
                codec.get_or_insert(h.compression());
                let walked = for_each_record(batch, |r| {
                    if full || r.offset < from {
                        return;
                    }
                    let size = r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len);
                    if writer.count() > 0 && writer.size() + size + RECORD_OVERHEAD > cap {
                        full = true;
                        next = r.offset;
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
                    first_ts.get_or_insert(r.timestamp);
                    let index = i64::from(writer.count());
                    let headers = r.headers().chain(std::iter::once((
                        PROVENANCE_HEADER.as_bytes(),
                        Some(source_cluster.as_bytes()),
                    )));
                    writer.push(r.timestamp, r.key, r.value, headers);
                    bytes += size as u64;
                    match runs.last_mut() {
                        Some(run) if run.0 + run.2 == r.offset && run.1 + run.2 == index => {
                            run.2 += 1
                        }
                        _ => runs.push(Run(r.offset, index, 1)),
                    }
                });
                if let Err(e) = walked {
                    bad.get_or_insert(e);
                    full = true;
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
            if !full {
                next = next.max(end);
            }
            if looped > 0 {
                tracing::debug!(source = %self.name, topic = %key.0, partition = key.1, records = looped,
                    "records that came from the target cluster were not copied back");
            }
            if let Some(ts) = first_ts {
                p.lag_seconds = ((now - ts).max(0) as f64) / 1000.0;
            }
            if writer.count() == 0 {
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
                writer,
                codec: codec.unwrap_or(0),
                runs,
                bytes,
            });
        }
        plan
    }

    /// Writes a round in one transaction: the batches, then the checkpoint records that map
    /// them, then the commit. Returns the checkpoints (now committed) by partition.
    async fn commit(
        &mut self,
        producer: &mut TxnProducer,
        plan: Vec<Planned>,
    ) -> Result<Vec<Done>, ClusterError> {
        let seal_err = |e: trib_broker::log::batch_writer::SealError| ClusterError::Kafka {
            cluster: self.target.name.clone(),
            what: "sealing a batch".into(),
            code: -1,
            message: Some(e.to_string()),
        };
        let mut parts: Vec<(String, i32)> = plan
            .iter()
            .map(|p| (p.target_topic.clone(), p.key.1))
            .collect();
        parts.push((self.checkpoint_topic.clone(), 0));
        producer.add_partitions(&parts).await?;
        let mut writes = Vec::with_capacity(plan.len());
        let mut rest = Vec::with_capacity(plan.len());
        for mut p in plan {
            let count = p.writer.count();
            let stamp = producer.stamp(&p.target_topic, p.key.1, count);
            let batch = p.writer.seal(p.codec, stamp).map_err(seal_err)?;
            writes.push(Write {
                topic: p.target_topic.clone(),
                partition: p.key.1,
                leader: p.leader,
                batch,
            });
            rest.push((p, count));
        }
        let bases = producer.produce(writes).await?;
        let mut cp_writer = BatchWriter::new(BytesMut::new());
        let mut done = Vec::with_capacity(rest.len());
        let now = now_ms();
        for (p, count) in rest {
            let tkey = (p.target_topic.clone(), p.key.1);
            let base = bases.get(&tkey).copied().unwrap_or(-1);
            if base < 0 {
                return Err(ClusterError::Kafka {
                    cluster: self.target.name.clone(),
                    what: format!("producing to {}/{}", tkey.0, tkey.1),
                    code: -1,
                    message: Some("no base offset in the answer".into()),
                });
            }
            let c = Checkpoint {
                source: self.name.clone(),
                source_cluster: self.source_cluster_id.clone(),
                source_topic: p.key.0.clone(),
                from: p.from,
                next: p.next,
                runs: p.runs.iter().map(|r| Run(r.0, base + r.1, r.2)).collect(),
            };
            let value = serde_json::to_vec(&c).map_err(|e| ClusterError::Kafka {
                cluster: self.target.name.clone(),
                what: "encoding a checkpoint".into(),
                code: -1,
                message: Some(e.to_string()),
            })?;
            let k = offset_map::key(&tkey.0, tkey.1);
            cp_writer.push(
                now,
                Some(k.as_bytes()),
                Some(&value),
                std::iter::empty::<(&[u8], Option<&[u8]>)>(),
            );
            done.push((p.key, tkey, c, u64::try_from(count).unwrap_or(0), p.bytes));
        }
        let stamp = producer.stamp(&self.checkpoint_topic, 0, cp_writer.count());
        let batch = cp_writer.seal(0, stamp).map_err(seal_err)?;
        producer
            .produce(vec![Write {
                topic: self.checkpoint_topic.clone(),
                partition: 0,
                leader: self.checkpoint_leader,
                batch,
            }])
            .await?;
        producer.end(true).await?;
        Ok(done)
    }

    /// A committed round: maps and positions move on.
    fn committed(&mut self, done: Vec<Done>) {
        for (key, tkey, c, records, bytes) in done {
            self.metrics.copied(&self.name, bytes, records, 1);
            self.maps.entry(tkey).or_default().apply(&c);
            self.copied_through(&key, c.next);
        }
    }
}
