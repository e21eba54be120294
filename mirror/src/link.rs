//! One source cluster copied to the target: the sync step (topics selected, created at the
//! target (as mirror topics in offset-preserving mode), partitions added, configs followed, log
//! starts moved, group offsets carried) and the offset-preserving copy loop, which fetches raw
//! record batches from the source and writes them, undecoded, at the same offsets in the same
//! partitions. Translating mode's copy loop is in `translate`.
//!
//! The loop keeps one write in flight while it fetches the next data. Each write says where the
//! mirror expects the target log to end ([`MirrorMark`]), so a lost write is refused instead of
//! leaving a hole; the partition then restarts from the target's end. The target's log end is
//! the mirror's only checkpoint: after a crash the mirror resumes there, and batches the target
//! already holds are skipped by the broker, so nothing is doubled or missed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{join_all, BoxFuture};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use regex::Regex;
use tokio::sync::watch;
use trib_broker::log::batch::BatchHeader;
use trib_broker::mirror_topic::{MirrorMark, MIRROR_WRITE_TAG};
use trib_broker::topic_config::{MIRROR_CLUSTER_KEY, MIRROR_TOPIC_KEY};

use crate::cluster::{Cluster, ClusterError};
use crate::config::{MirrorConfig, MirrorSource, Mode, Selection};
use crate::metrics::{Metrics, PartitionStatus};
use crate::offset_map::{Maps, Translation};
use crate::throttle::Throttle;

const FETCH_VERSION: i16 = 11;
const PRODUCE_VERSION: i16 = 9;
const FETCH_MAX_WAIT_MS: i32 = 250;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const POLICY_VIOLATION: i16 = 44;
/// How long a partition waits after an error that an immediate retry would repeat.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(5);

/// (source topic, partition).
pub(crate) type Key = (String, i32);

/// One mirrored partition.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    pub(crate) target_topic: String,
    source_leader: i32,
    pub(crate) target_leader: Option<i32>,
    /// Next offset fetched from the source.
    pub(crate) next: i64,
    /// Where the target log ends once every write sent so far succeeds.
    expected_end: i64,
    /// Where the target log ends, as last acknowledged (translating mode: the source offset
    /// copied through, as committed).
    pub(crate) acked_end: i64,
    pub(crate) source_end: i64,
    pub(crate) source_start: i64,
    target_start: i64,
    pub(crate) lag_seconds: f64,
    /// The target topic was promoted (or is not a mirror topic): no longer copied.
    promoted: bool,
    /// The position must be read again (from the target or the checkpoint) before fetching.
    pub(crate) needs_reset: bool,
    /// Not fetched before this (after an error that retrying at once would only repeat).
    pub(crate) retry_at: Option<Instant>,
}

/// What a fetch returned for one partition.
pub(crate) enum Fetched {
    Data {
        records: Bytes,
        /// The high watermark, or for a read_committed fetch the last stable offset.
        high_watermark: i64,
        log_start: i64,
        /// Aborted transactions in the records (read_committed fetches).
        aborted: Vec<(i64, i64)>,
    },
    Error {
        code: i16,
        message: String,
    },
}

/// What a write did for one partition: the target log end and start, or the error.
type Written = Vec<(Key, Result<(i64, i64), (i16, String)>)>;

/// A source cluster, its selection, and the partitions being copied.
pub struct Link {
    pub name: String,
    mode: Mode,
    selection: Selection,
    groups: Vec<Regex>,
    group_sync: bool,
    pub(crate) source: Arc<Cluster>,
    pub(crate) target: Arc<Cluster>,
    pub(crate) source_cluster_id: String,
    pub(crate) target_cluster_id: String,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) throttle: Option<Arc<Throttle>>,
    pub(crate) sync_interval: Duration,
    pub(crate) fetch_max_bytes: i32,
    pub(crate) partition_max_bytes: i32,
    pub(crate) parts: BTreeMap<Key, Part>,
    /// Translating mode: the transactional id, the checkpoint topic and its leader, the
    /// batch size cap, and the offset map of this link's partitions.
    pub(crate) txn_id: String,
    pub(crate) checkpoint_topic: String,
    pub(crate) checkpoint_leader: Option<i32>,
    pub(crate) batch_max_bytes: usize,
    pub(crate) maps: Maps,
    /// Topics reported as not copied (logged once).
    skipped: HashSet<String>,
    synced_groups: crate::groups::Synced,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The mirror keys are the mirror's own, never copied as configs.
fn copied_configs(c: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    c.map(|c| {
        c.iter()
            .filter(|(k, _)| k.as_str() != MIRROR_CLUSTER_KEY && k.as_str() != MIRROR_TOPIC_KEY)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

impl Link {
    pub fn new(
        cfg: &MirrorSource,
        all: &MirrorConfig,
        mode: Mode,
        target: Arc<Cluster>,
        metrics: Arc<Metrics>,
        throttle: Option<Arc<Throttle>>,
    ) -> Result<Self, String> {
        Ok(Self {
            name: cfg.name.clone(),
            mode,
            selection: cfg.selection()?,
            groups: cfg.group_selection()?,
            group_sync: !cfg.no_group_sync,
            source: Arc::new(Cluster::new(
                &cfg.name,
                crate::config::broker_list(&cfg.brokers),
            )),
            target,
            source_cluster_id: String::new(),
            target_cluster_id: String::new(),
            metrics,
            throttle,
            sync_interval: Duration::from_millis(all.sync_interval_ms),
            fetch_max_bytes: all.fetch_max_bytes,
            partition_max_bytes: all.partition_max_bytes,
            parts: BTreeMap::new(),
            txn_id: format!("{}{}", all.transactional_id_prefix, cfg.name),
            checkpoint_topic: all.checkpoint_topic.clone(),
            checkpoint_leader: None,
            batch_max_bytes: all.batch_max_bytes,
            maps: Maps::new(),
            skipped: HashSet::new(),
            synced_groups: HashMap::new(),
        })
    }

    /// Copies until `stop` turns true.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        if self.mode == Mode::Translate {
            self.run_translating(stop).await
        } else {
            self.run_preserving(stop).await
        }
    }

    /// The partitions to fetch now: (key, source leader, offset).
    pub(crate) fn wanted(&self) -> Vec<(Key, i32, i64)> {
        let now = Instant::now();
        self.parts
            .iter()
            .filter(|(_, p)| !p.promoted && !p.needs_reset && p.retry_at.is_none_or(|t| t <= now))
            .map(|(k, p)| (k.clone(), p.source_leader, p.next))
            .collect()
    }

    /// Fetches `wanted` with the link's size limits (`fetch_all`); `committed`: read_committed.
    /// The future owns what it needs, so it can run while the link does other work.
    pub(crate) fn fetch(
        &self,
        wanted: Vec<(Key, i32, i64)>,
        committed: bool,
    ) -> impl std::future::Future<Output = Vec<(Key, Fetched)>> + Send + 'static {
        fetch_all(
            self.source.clone(),
            wanted,
            self.fetch_max_bytes,
            self.partition_max_bytes,
            committed,
        )
    }

    /// Runs the sync step when `next_sync` has passed (a failure is logged, counted and retried
    /// at the next interval).
    pub(crate) async fn sync_if_due(&mut self, next_sync: &mut Instant) {
        if Instant::now() < *next_sync {
            return;
        }
        if let Err(e) = self.sync().await {
            tracing::warn!(source = %self.name, error = %e, "mirror sync failed; retrying");
            self.metrics.error(&self.name);
        }
        *next_sync = Instant::now() + self.sync_interval;
    }

    /// Translating mode: a partition's copy reached source offset `next` (committed, or only
    /// markers and skipped records since); its position and lag follow.
    pub(crate) fn copied_through(&mut self, key: &Key, next: i64) {
        if let Some(p) = self.parts.get_mut(key) {
            p.next = next;
            p.acked_end = next;
            if p.acked_end >= p.source_end {
                p.lag_seconds = 0.0;
            }
            self.metrics.position(status(&self.name, key, p));
        }
    }

    async fn run_preserving(mut self, mut stop: watch::Receiver<bool>) {
        let mut next_sync = Instant::now();
        let mut inflight: Option<BoxFuture<'static, Written>> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            self.sync_if_due(&mut next_sync).await;
            self.reset_positions().await;
            let wanted = self.wanted();
            if wanted.is_empty() && inflight.is_none() {
                tokio::select! {
                    _ = tokio::time::sleep(self.sync_interval.min(Duration::from_millis(500))) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let fetch = self.fetch(wanted, false);
            let pending = inflight.take();
            let written = async move {
                match pending {
                    Some(w) => Some(w.await),
                    None => None,
                }
            };
            let (fetched, written) = tokio::select! {
                r = futures::future::join(fetch, written) => r,
                _ = stop.changed() => break,
            };
            let mut failed = HashSet::new();
            if let Some(w) = written {
                failed = self.apply_written(w);
            }
            let fetch_failed = fetched
                .iter()
                .all(|(_, f)| matches!(f, Fetched::Error { .. }));
            let writes = self.apply_fetched(fetched, &failed).await;
            if !writes.is_empty() {
                let bytes: usize = writes.iter().map(|(_, r)| r.len()).sum();
                if let Some(t) = &self.throttle {
                    t.take(bytes).await;
                }
                inflight = Some(Box::pin(write_all(
                    self.target.clone(),
                    writes,
                    self.source_cluster_id.clone(),
                )));
            } else if fetch_failed && inflight.is_none() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        if let Some(w) = inflight {
            let w = w.await;
            self.apply_written(w);
        }
        tracing::info!(source = %self.name, "mirror link stopped");
    }

    /// Topics, partitions, configs, log starts and group offsets.
    pub(crate) async fn sync(&mut self) -> Result<(), ClusterError> {
        let smeta = self.source.metadata(None).await?;
        self.source_cluster_id = smeta.cluster_id.clone();
        let selected: Vec<String> = smeta
            .topics
            .keys()
            .filter(|t| self.selection.selects(t) && **t != self.checkpoint_topic)
            .cloned()
            .collect();
        let sconf = if selected.is_empty() {
            BTreeMap::new()
        } else {
            self.source.topic_configs(&selected).await?
        };
        let names: Vec<String> = selected
            .iter()
            .map(|t| self.selection.target_name(t))
            .collect();
        let mut tmeta = self.target.metadata(Some(&names)).await?;
        self.target_cluster_id = tmeta.cluster_id.clone();
        let existing: Vec<String> = names
            .iter()
            .filter(|n| tmeta.topics.contains_key(*n))
            .cloned()
            .collect();
        let tconf = if existing.is_empty() {
            BTreeMap::new()
        } else {
            self.target.topic_configs(&existing).await?
        };
        let mut copied: BTreeMap<String, String> = BTreeMap::new();
        let mut created = false;
        for (topic, tname) in selected.iter().zip(&names) {
            let Some(sm) = smeta.topics.get(topic) else {
                continue;
            };
            let src_cfg = sconf.get(topic);
            if src_cfg.and_then(|c| c.get(MIRROR_CLUSTER_KEY)) == Some(&self.target_cluster_id) {
                self.skip(
                    topic,
                    "it is a mirror of the target cluster: copying it back would loop",
                );
                continue;
            }
            let desired = copied_configs(src_cfg);
            let count = sm.leaders.len() as i32;
            match tmeta.topics.get(tname) {
                None => {
                    let mut c = desired.clone();
                    if self.mode == Mode::Preserve {
                        c.insert(MIRROR_CLUSTER_KEY.into(), self.source_cluster_id.clone());
                        c.insert(MIRROR_TOPIC_KEY.into(), topic.clone());
                    }
                    if let Err(e) = self.target.create_topic(tname, count, &c).await {
                        tracing::warn!(source = %self.name, topic = %tname, error = %e, "cannot create the mirror topic");
                        self.metrics.error(&self.name);
                        continue;
                    }
                    tracing::info!(source = %self.name, topic = %tname, partitions = count, "mirror topic created");
                    created = true;
                }
                Some(tm) => {
                    let tc = tconf.get(tname);
                    let mirror_of = tc.and_then(|c| c.get(MIRROR_CLUSTER_KEY));
                    if self.mode == Mode::Preserve && mirror_of != Some(&self.source_cluster_id) {
                        let why = if mirror_of.is_none() {
                            "the target topic is not a mirror topic (promoted, or created by something else)"
                        } else {
                            "the target topic mirrors another cluster"
                        };
                        // Its partitions leave `parts` below: it is not in `copied`.
                        self.skip(topic, why);
                        continue;
                    }
                    if (tm.leaders.len() as i32) < count {
                        self.target.create_partitions(tname, count).await?;
                        tracing::info!(source = %self.name, topic = %tname, partitions = count, "partitions added at the target");
                        created = true;
                    }
                    let current = copied_configs(tc);
                    let set: BTreeMap<String, String> = desired
                        .iter()
                        .filter(|(k, v)| current.get(*k) != Some(*v))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let delete: Vec<String> = current
                        .keys()
                        .filter(|k| !desired.contains_key(*k))
                        .cloned()
                        .collect();
                    if !set.is_empty() || !delete.is_empty() {
                        match self.target.alter_topic_configs(tname, &set, &delete).await {
                            Ok(()) => {
                                tracing::info!(source = %self.name, topic = %tname, ?set, ?delete, "topic configs synced")
                            }
                            Err(e) => {
                                tracing::warn!(source = %self.name, topic = %tname, error = %e, "cannot sync topic configs");
                                self.metrics.error(&self.name);
                            }
                        }
                    }
                }
            }
            self.skipped.remove(topic);
            copied.insert(topic.clone(), tname.clone());
        }
        if created {
            tmeta = self.target.metadata(Some(&names)).await?;
        }
        // Partitions: new ones start where the target ends; leaders follow Metadata.
        self.parts.retain(|k, _| copied.contains_key(&k.0));
        for (topic, tname) in &copied {
            let Some(sm) = smeta.topics.get(topic) else {
                continue;
            };
            for (&partition, &leader) in &sm.leaders {
                let target_leader = tmeta
                    .topics
                    .get(tname)
                    .and_then(|t| t.leaders.get(&partition))
                    .copied();
                let key = (topic.clone(), partition);
                match self.parts.get_mut(&key) {
                    Some(p) => {
                        p.source_leader = leader;
                        p.target_leader = target_leader;
                    }
                    None => {
                        self.parts.insert(
                            key,
                            Part {
                                target_topic: tname.clone(),
                                source_leader: leader,
                                target_leader,
                                next: 0,
                                expected_end: 0,
                                acked_end: 0,
                                source_end: 0,
                                source_start: 0,
                                target_start: 0,
                                lag_seconds: 0.0,
                                promoted: false,
                                needs_reset: true,
                                retry_at: None,
                            },
                        );
                    }
                }
            }
        }
        if self.mode == Mode::Preserve {
            self.sync_log_starts().await;
        }
        if self.group_sync {
            let maps = &self.maps;
            let translate = |t: &str, p: i32, o: i64| match self.mode {
                Mode::Translate => translate_offset(maps, t, p, o),
                _ => Some(o),
            };
            let n = crate::groups::sync(
                &self.source,
                &self.target,
                &self.groups,
                &copied,
                &translate,
                &mut self.synced_groups,
            )
            .await?;
            if n > 0 {
                tracing::info!(source = %self.name, groups = n, "consumer group offsets synced");
            }
        }
        Ok(())
    }

    fn skip(&mut self, topic: &str, why: &str) {
        if self.skipped.insert(topic.to_string()) {
            tracing::warn!(source = %self.name, topic, reason = why, "topic not mirrored");
        }
    }

    /// Moves target log starts up to the source's (records the source deleted are deleted at
    /// the target too, once copied past).
    async fn sync_log_starts(&mut self) {
        for ((_, partition), p) in self.parts.iter_mut() {
            if p.promoted || p.source_start <= p.target_start || p.source_start > p.acked_end {
                continue;
            }
            match self
                .target
                .delete_records(p.target_leader, &p.target_topic, *partition, p.source_start)
                .await
            {
                Ok(()) => p.target_start = p.source_start,
                Err(e) => {
                    tracing::warn!(topic = %p.target_topic, partition, error = %e, "cannot move the target log start")
                }
            }
        }
    }

    /// Where partitions that (re)start resume: the target's log end (offset-preserving), or
    /// the committed checkpoint, else the source's log start (translating).
    pub(crate) async fn reset_positions(&mut self) {
        if self.mode == Mode::Translate {
            self.reset_from_checkpoint().await;
            return;
        }
        let now = Instant::now();
        let keys: Vec<Key> = self
            .parts
            .iter()
            .filter(|(_, p)| p.needs_reset && !p.promoted && p.retry_at.is_none_or(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(p) = self.parts.get(&key) else {
                continue;
            };
            let (topic, leader) = (p.target_topic.clone(), p.target_leader);
            let end = self.target.list_offsets(leader, &topic, &[key.1], -1).await;
            let start = self.target.list_offsets(leader, &topic, &[key.1], -2).await;
            match (end, start) {
                (Ok(end), Ok(start)) => {
                    if let (Some(p), Some(&end)) = (self.parts.get_mut(&key), end.get(&key.1)) {
                        p.next = end;
                        p.expected_end = end;
                        p.acked_end = end;
                        p.target_start = start.get(&key.1).copied().unwrap_or(0);
                        p.needs_reset = false;
                        tracing::info!(source = %self.name, topic = %key.0, partition = key.1, offset = end, "copying from the target's log end");
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(source = %self.name, topic = %topic, partition = key.1, error = %e, "cannot read the target's log end");
                    self.metrics.error(&self.name);
                    if let Some(p) = self.parts.get_mut(&key) {
                        p.retry_at = Some(Instant::now() + RETRY_AFTER);
                    }
                }
            }
        }
    }

    async fn reset_from_checkpoint(&mut self) {
        let now = Instant::now();
        let keys: Vec<Key> = self
            .parts
            .iter()
            .filter(|(_, p)| p.needs_reset && p.retry_at.is_none_or(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(p) = self.parts.get(&key) else {
                continue;
            };
            let from_map = self
                .maps
                .get(&(p.target_topic.clone(), key.1))
                .map(|m| m.next);
            let next = match from_map {
                Some(n) => Ok(n),
                None => self
                    .source
                    .list_offsets(Some(p.source_leader), &key.0, &[key.1], -2)
                    .await
                    .map(|s| s.get(&key.1).copied().unwrap_or(0)),
            };
            let Some(p) = self.parts.get_mut(&key) else {
                continue;
            };
            match next {
                Ok(n) => {
                    p.next = n;
                    p.acked_end = n;
                    p.needs_reset = false;
                    p.retry_at = None;
                    let from = if from_map.is_some() {
                        "the checkpoint"
                    } else {
                        "the source's log start"
                    };
                    tracing::info!(source = %self.name, topic = %key.0, partition = key.1, offset = n, "copying from {from}");
                }
                Err(e) => {
                    tracing::warn!(source = %self.name, topic = %key.0, partition = key.1, error = %e, "cannot read the source's log start");
                    self.metrics.error(&self.name);
                    p.retry_at = Some(Instant::now() + RETRY_AFTER);
                }
            }
        }
    }

    /// Takes a write's outcome; returns the partitions that failed (their fetched data is
    /// dropped and they restart from the target's end).
    fn apply_written(&mut self, written: Written) -> HashSet<Key> {
        let mut failed = HashSet::new();
        for (key, r) in written {
            let Some(p) = self.parts.get_mut(&key) else {
                continue;
            };
            match r {
                Ok((end, start)) => {
                    p.acked_end = end;
                    p.target_start = start;
                    if p.acked_end >= p.source_end {
                        p.lag_seconds = 0.0;
                    }
                    self.metrics.position(status(&self.name, &key, p));
                }
                Err((code, msg))
                    if code == POLICY_VIOLATION && msg.contains("not a mirror topic") =>
                {
                    tracing::info!(source = %self.name, topic = %p.target_topic, partition = key.1, "target topic promoted: no longer copied");
                    p.promoted = true;
                    self.metrics.position(status(&self.name, &key, p));
                    failed.insert(key);
                }
                Err((code, msg)) => {
                    tracing::warn!(source = %self.name, topic = %p.target_topic, partition = key.1, code, error = %msg, "mirror write failed; restarting the partition from the target's end");
                    self.metrics.error(&self.name);
                    p.needs_reset = true;
                    failed.insert(key);
                }
            }
        }
        failed
    }

    /// Takes a fetch's data: advances positions and returns the writes to make, per partition.
    async fn apply_fetched(
        &mut self,
        fetched: Vec<(Key, Fetched)>,
        failed: &HashSet<Key>,
    ) -> Vec<(WriteTo, Bytes)> {
        let mut writes = Vec::new();
        let now = now_ms();
        for (key, f) in fetched {
            if failed.contains(&key) {
                continue;
            }
            if self
                .parts
                .get(&key)
                .is_none_or(|p| p.needs_reset || p.promoted)
            {
                continue;
            }
            if let Fetched::Error { code, message } = &f {
                self.fetch_error(&key, *code, message).await;
                continue;
            }
            let Some(p) = self.parts.get_mut(&key) else {
                continue;
            };
            match f {
                Fetched::Error { .. } => {}
                Fetched::Data {
                    records,
                    high_watermark,
                    log_start,
                    ..
                } => {
                    p.source_end = high_watermark;
                    p.source_start = log_start;
                    let (whole, last_end, counts, first_ts) = whole_batches(&records, p.next);
                    if whole == 0 {
                        if p.acked_end >= p.source_end {
                            p.lag_seconds = 0.0;
                        }
                        self.metrics.position(status(&self.name, &key, p));
                        continue;
                    }
                    if let Some(ts) = first_ts {
                        p.lag_seconds = ((now - ts).max(0) as f64) / 1000.0;
                    }
                    self.metrics
                        .copied(&self.name, whole as u64, counts.0, counts.1);
                    writes.push((
                        WriteTo {
                            key: key.clone(),
                            topic: p.target_topic.clone(),
                            leader: p.target_leader,
                            expected_end: p.expected_end,
                            end: last_end,
                        },
                        records.slice(..whole),
                    ));
                    p.next = last_end;
                    p.expected_end = last_end;
                }
            }
        }
        writes
    }

    /// A partition's fetch failed. OFFSET_OUT_OF_RANGE below the source's log start (retention
    /// took records not yet copied) moves on to the log start, keeping the gap; above its end
    /// the source lost records the target has, which the mirror cannot mend: paused.
    pub(crate) async fn fetch_error(&mut self, key: &Key, code: i16, message: &str) {
        let Some(p) = self.parts.get(key) else {
            return;
        };
        if code != OFFSET_OUT_OF_RANGE {
            tracing::debug!(source = %self.name, topic = %key.0, partition = key.1, code, error = %message, "fetch failed");
            self.metrics.error(&self.name);
            return;
        }
        let start = self
            .source
            .list_offsets(Some(p.source_leader), &key.0, &[key.1], -2)
            .await;
        let Some(p) = self.parts.get_mut(key) else {
            return;
        };
        match start.ok().and_then(|s| s.get(&key.1).copied()) {
            Some(s) if p.next < s => {
                tracing::warn!(source = %self.name, topic = %key.0, partition = key.1, from = p.next, to = s,
                    "records deleted at the source before they were copied: the target keeps the gap");
                p.next = s;
            }
            _ => {
                tracing::error!(source = %self.name, topic = %key.0, partition = key.1, offset = p.next, error = %message,
                    "the source does not have offsets the target has; partition paused");
                self.metrics.error(&self.name);
                p.needs_reset = true;
                p.retry_at = Some(Instant::now() + RETRY_AFTER);
            }
        }
    }

    /// Every partition's position (for status and failover).
    pub fn statuses(&self) -> Vec<PartitionStatus> {
        self.parts
            .iter()
            .map(|(k, p)| status(&self.name, k, p))
            .collect()
    }
}

pub(crate) fn status(source: &str, key: &Key, p: &Part) -> PartitionStatus {
    PartitionStatus {
        source: source.to_string(),
        source_topic: key.0.clone(),
        target_topic: p.target_topic.clone(),
        partition: key.1,
        source_end: p.source_end,
        target_end: p.acked_end,
        lag_records: (p.source_end - p.acked_end).max(0),
        lag_seconds: p.lag_seconds,
        promoted: p.promoted,
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The length of the whole batches at the start of `records` that end past `from`, the offset
/// after the last, (records, batches) counted, and the first timestamp of a batch past `from`.
/// A batch cut short by the fetch size is left for the next fetch.
fn whole_batches(records: &[u8], from: i64) -> (usize, i64, (u64, u64), Option<i64>) {
    let mut at = 0usize;
    let mut end = from;
    let mut counts = (0u64, 0u64);
    let mut first_ts = None;
    while let Ok(h) = BatchHeader::parse(&records[at..]) {
        let len = h.total_len();
        if len > records.len() - at {
            break;
        }
        at += len;
        let last = h.last_offset() + 1;
        if last > end {
            end = last;
            counts.0 += u64::try_from(h.record_count).unwrap_or(0);
            counts.1 += 1;
            first_ts.get_or_insert(h.base_timestamp);
        }
        if at >= records.len() {
            break;
        }
    }
    (at, end, counts, first_ts)
}

/// Where one partition's write goes.
struct WriteTo {
    key: Key,
    topic: String,
    leader: Option<i32>,
    expected_end: i64,
    /// Where the target log ends after this write.
    end: i64,
}

/// Where a source group offset lands at the target, from the offset map.
pub(crate) fn translate_offset(
    maps: &Maps,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Option<i64> {
    match maps.get(&(topic.to_string(), partition))?.translate(offset) {
        Translation::At(t) => Some(t),
        Translation::NotYet | Translation::Before => None,
    }
}

/// Fetches every wanted partition, one request per source leader, all leaders at once;
/// `committed`: as a read_committed consumer.
async fn fetch_all(
    source: Arc<Cluster>,
    wanted: Vec<(Key, i32, i64)>,
    max_bytes: i32,
    partition_max_bytes: i32,
    committed: bool,
) -> Vec<(Key, Fetched)> {
    let mut by_leader: BTreeMap<i32, Vec<(Key, i64)>> = BTreeMap::new();
    for (key, leader, next) in wanted {
        by_leader.entry(leader).or_default().push((key, next));
    }
    let calls = by_leader.into_iter().map(|(leader, parts)| {
        let source = source.clone();
        async move {
            let mut req = FetchRequest::default();
            req.replica_id = BrokerId(-1);
            req.max_wait_ms = FETCH_MAX_WAIT_MS;
            req.min_bytes = 1;
            req.max_bytes = max_bytes;
            req.isolation_level = i8::from(committed);
            req.session_id = 0;
            req.session_epoch = -1;
            let mut topics: BTreeMap<&str, FetchTopic> = BTreeMap::new();
            for ((topic, partition), next) in &parts {
                let t = topics.entry(topic).or_insert_with(|| {
                    let mut t = FetchTopic::default();
                    t.topic = TopicName(sb(topic));
                    t
                });
                let mut fp = FetchPartition::default();
                fp.partition = *partition;
                fp.current_leader_epoch = -1;
                fp.fetch_offset = *next;
                fp.log_start_offset = -1;
                fp.partition_max_bytes = partition_max_bytes;
                t.partitions.push(fp);
            }
            req.topics = topics.into_values().collect();
            let resp: Result<FetchResponse, ClusterError> = source
                .call(Some(leader), ApiKey::Fetch, FETCH_VERSION, &req)
                .await;
            match resp {
                Ok(r) => {
                    let mut out = Vec::new();
                    for t in r.responses {
                        for p in t.partitions {
                            let key = (t.topic.to_string(), p.partition_index);
                            out.push((
                                key,
                                if p.error_code == 0 {
                                    Fetched::Data {
                                        records: p.records.unwrap_or_default(),
                                        high_watermark: if committed {
                                            p.last_stable_offset
                                        } else {
                                            p.high_watermark
                                        },
                                        log_start: p.log_start_offset,
                                        aborted: crate::cluster::aborted_list(
                                            p.aborted_transactions.as_deref(),
                                        ),
                                    }
                                } else {
                                    Fetched::Error {
                                        code: p.error_code,
                                        message: format!("fetch error {}", p.error_code),
                                    }
                                },
                            ));
                        }
                    }
                    out
                }
                Err(e) => parts
                    .into_iter()
                    .map(|(key, _)| {
                        (
                            key,
                            Fetched::Error {
                                code: -1,
                                message: e.to_string(),
                            },
                        )
                    })
                    .collect(),
            }
        }
    });
    join_all(calls).await.into_iter().flatten().collect()
}

/// Writes each partition's batches at the target, one Produce per target leader, each marked
/// as a mirror write with the log end it expects.
async fn write_all(
    target: Arc<Cluster>,
    writes: Vec<(WriteTo, Bytes)>,
    source_cluster: String,
) -> Written {
    let mut by_leader: BTreeMap<Option<i32>, Vec<(WriteTo, Bytes)>> = BTreeMap::new();
    for w in writes {
        by_leader.entry(w.0.leader).or_default().push(w);
    }
    let calls = by_leader.into_iter().map(|(leader, ws)| {
        let target = target.clone();
        let source_cluster = source_cluster.clone();
        async move {
            let mut req = ProduceRequest::default();
            req.acks = -1;
            req.timeout_ms = 30_000;
            let mut topics: BTreeMap<String, TopicProduceData> = BTreeMap::new();
            let mut slots: HashMap<(String, i32), (Key, i64)> = HashMap::new();
            for (to, records) in ws {
                let t = topics.entry(to.topic.clone()).or_insert_with(|| {
                    let mut t = TopicProduceData::default();
                    t.name = TopicName(sb(&to.topic));
                    t
                });
                let mut pd = PartitionProduceData::default();
                pd.index = to.key.1;
                pd.records = Some(records);
                let mark = MirrorMark {
                    expected_end: to.expected_end,
                    cluster: source_cluster.clone(),
                };
                pd.unknown_tagged_fields
                    .insert(MIRROR_WRITE_TAG, mark.encode());
                t.partition_data.push(pd);
                slots.insert((to.topic.clone(), to.key.1), (to.key, to.end));
            }
            req.topic_data = topics.into_values().collect();
            let resp: Result<ProduceResponse, ClusterError> = target
                .call(leader, ApiKey::Produce, PRODUCE_VERSION, &req)
                .await;
            let mut out: Written = Vec::new();
            match resp {
                Ok(r) => {
                    for t in r.responses {
                        for p in t.partition_responses {
                            let Some((key, end)) = slots.remove(&(t.name.to_string(), p.index))
                            else {
                                continue;
                            };
                            out.push((
                                key,
                                if p.error_code == 0 {
                                    Ok((end, p.log_start_offset))
                                } else {
                                    Err((
                                        p.error_code,
                                        p.error_message.map(|m| m.to_string()).unwrap_or_default(),
                                    ))
                                },
                            ));
                        }
                    }
                    // Partitions the answer left out failed.
                    for (_, (key, _)) in slots {
                        out.push((key, Err((-1, "not in the produce response".into()))));
                    }
                }
                Err(e) => {
                    for (_, (key, _)) in slots {
                        out.push((key, Err((-1, e.to_string()))));
                    }
                }
            }
            out
        }
    });
    join_all(calls).await.into_iter().flatten().collect()
}
