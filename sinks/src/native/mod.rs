//! The Kafka sink's native producer (`client: native`): record batches are built straight from
//! events, per partition, by bytes, count and linger time (`batch`), compressed once per batch,
//! and sent as Produce requests with acks=all, one request in flight per broker. With an
//! idempotent producer id (InitProducerId) every batch carries its sequence, so a batch sent
//! again after a lost answer or a leader change is written once. Events are delivered when
//! their batch is acknowledged; records the broker refuses (too large, invalid topic) go to
//! `dead_letter`; everything else is retried with backoff, in order per partition.
//!
//! It skips librdkafka's per-message path (allocation, copy, delivery report per record), which
//! is what the agent's file → broker throughput is bound by (BENCHMARKS.md).

mod batch;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rand::Rng;
use trib_pipelines::config::sinks::{KafkaSink, Partitioner};
use trib_pipelines::event::{get_path, value_text, Event};
use trib_pipelines::runtime::{Batch, Sink, SinkContext};

use batch::{key_partition, restamp, Builder, Sealed};
use trib_broker::wire_client::{CallError, Conn};

const PRODUCE_VERSION: i16 = 7;
const METADATA_VERSION: i16 = 7;
const INIT_PRODUCER_ID_VERSION: i16 = 1;
/// Records accepted and not yet acknowledged.
const MAX_PENDING_RECORDS: usize = 16_384;
/// Largest Produce request assembled (one batch per partition).
const MAX_REQUEST_BYTES: usize = 16 << 20;

pub struct NativeKafka {
    cfg: KafkaSink,
    bootstrap: Vec<String>,
}

impl NativeKafka {
    pub fn new(c: &KafkaSink) -> anyhow::Result<Self> {
        anyhow::ensure!(
            c.partitioner != Partitioner::Crc32,
            "partitioner: crc32 needs `client: librdkafka` (the native client has murmur2 and random)"
        );
        anyhow::ensure!(
            c.options.is_empty(),
            "options: librdkafka properties need `client: librdkafka`"
        );
        let bootstrap: Vec<String> = c
            .brokers
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        anyhow::ensure!(!bootstrap.is_empty(), "brokers: none given");
        Ok(Self {
            cfg: c.clone(),
            bootstrap,
        })
    }
}

impl Sink for NativeKafka {
    fn run(self: Box<Self>, cx: SinkContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let mut p = Producer {
                default_topic: self.cfg.topic.as_str().into(),
                cfg: self.cfg,
                bootstrap: self.bootstrap,
                brokers: HashMap::new(),
                topics: HashMap::new(),
                parts: HashMap::new(),
                idle: HashMap::new(),
                busy: HashSet::new(),
                retry_at: HashMap::new(),
                backoff: HashMap::new(),
                producer_id: -1,
                epoch: -1,
                pending: 0,
                spare: Vec::new(),
                stale: false,
                last_refresh: None,
                sending: HashSet::new(),
                unresolved: HashMap::new(),
                dead: Vec::new(),
                cx,
            };
            p.init_producer_id().await;
            p.run().await
        })
    }
}

/// A topic's partitions: the leader of each (-1: none known), and the sticky partition for
/// keyless records.
struct Topic {
    leaders: Vec<i32>,
    sticky: i32,
}

/// A partition's open batch, its sealed batches waiting to be sent, and its next sequence.
#[derive(Default)]
struct Part {
    open: Option<Builder>,
    sealed: VecDeque<Sealed>,
    next_sequence: i32,
}

type Key = (Arc<str>, i32);

/// What a finished request gives back.
struct Done {
    broker: i32,
    conn: Option<Conn>,
    result: Result<ProduceResponse, CallError>,
    batches: Vec<(Key, Sealed)>,
}

struct Producer {
    cfg: KafkaSink,
    default_topic: Arc<str>,
    bootstrap: Vec<String>,
    brokers: HashMap<i32, String>,
    topics: HashMap<Arc<str>, Topic>,
    parts: HashMap<Key, Part>,
    /// Connections with no request in flight.
    idle: HashMap<i32, Conn>,
    busy: HashSet<i32>,
    retry_at: HashMap<i32, Instant>,
    backoff: HashMap<i32, Duration>,
    producer_id: i64,
    epoch: i16,
    /// Records taken and not yet acknowledged or refused.
    pending: usize,
    /// Record buffers of sealed batches, reused by the next ones.
    spare: Vec<BytesMut>,
    /// Leaders changed or a request failed: refresh metadata before sending again.
    stale: bool,
    last_refresh: Option<Instant>,
    /// Partitions with a batch in flight: one at a time each, so their batches stay in order
    /// even when their leader moves.
    sending: HashSet<Key>,
    /// Topics the cluster could not give partitions for, with when to ask again and why.
    unresolved: HashMap<Arc<str>, (Instant, String)>,
    /// Refused events waiting to go to dead_letter.
    dead: Vec<Event>,
    cx: SinkContext,
}

impl Producer {
    async fn run(&mut self) -> anyhow::Result<()> {
        let linger = Duration::from_millis(self.cfg.linger_ms);
        let mut inflight: FuturesUnordered<BoxFuture<'static, Done>> = FuturesUnordered::new();
        let mut input_open = true;
        loop {
            self.seal_due(linger, !input_open)?;
            let refresh_due = self
                .last_refresh
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
            if self.stale && refresh_due {
                self.stale = false;
                self.last_refresh = Some(Instant::now());
                let names: Vec<Arc<str>> = self.topics.keys().cloned().collect();
                if let Err(e) = self.refresh(&names).await {
                    tracing::warn!(sink = %self.cx.name, error = %e, "metadata refresh failed");
                    self.stale = true;
                }
            }
            self.dispatch(&mut inflight);
            if !self.dead.is_empty() {
                let dead = std::mem::take(&mut self.dead);
                self.cx.dead_letter.send(dead).await;
            }
            if !input_open && self.pending == 0 && inflight.is_empty() {
                return Ok(());
            }
            let next = self.next_wakeup(linger);
            tokio::select! {
                b = self.cx.input.recv(), if input_open && self.pending < MAX_PENDING_RECORDS => match b {
                    Some(batch) => self.accept(batch).await?,
                    None => input_open = false,
                },
                Some(done) = inflight.next(), if !inflight.is_empty() => self.complete(done),
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
    }

    /// When something is due: the oldest open batch's linger, or a broker's retry time.
    fn next_wakeup(&self, linger: Duration) -> Instant {
        let now = Instant::now();
        let lingers = self
            .parts
            .values()
            .filter_map(|p| p.open.as_ref().map(|b| b.opened + linger));
        let retries = self.retry_at.values().copied().filter(|t| *t > now);
        lingers
            .chain(retries)
            .min()
            .unwrap_or(now + Duration::from_millis(100))
            .max(now + Duration::from_millis(1))
    }

    async fn init_producer_id(&mut self) {
        let mut req = InitProducerIdRequest::default();
        req.transaction_timeout_ms = 60_000;
        for addr in self.bootstrap.clone() {
            let Ok(mut c) = Conn::connect(&addr, "trib-native-producer").await else {
                continue;
            };
            match c
                .call::<_, InitProducerIdResponse>(
                    ApiKey::InitProducerId,
                    INIT_PRODUCER_ID_VERSION,
                    &req,
                )
                .await
            {
                Ok(r) if r.error_code == 0 => {
                    self.producer_id = r.producer_id.0;
                    self.epoch = r.producer_epoch;
                    return;
                }
                Ok(r) => {
                    tracing::warn!(sink = %self.cx.name, code = r.error_code, "no producer id: sending without idempotence");
                    return;
                }
                Err(e) => {
                    tracing::debug!(sink = %self.cx.name, error = %e, "InitProducerId failed")
                }
            }
        }
        tracing::warn!(sink = %self.cx.name, "no broker answered InitProducerId at start: sending without idempotence");
    }

    /// Asks any broker for the leaders of `names` (creating topics where the cluster does).
    async fn refresh(&mut self, names: &[Arc<str>]) -> Result<(), String> {
        let mut req = MetadataRequest::default();
        req.allow_auto_topic_creation = true;
        req.topics = Some(
            names
                .iter()
                .map(|n| {
                    let mut t = MetadataRequestTopic::default();
                    t.name = Some(TopicName(StrBytes::from_string(n.to_string())));
                    t
                })
                .collect(),
        );
        let mut addrs: Vec<String> = self.brokers.values().cloned().collect();
        addrs.extend(self.bootstrap.iter().cloned());
        let mut last = String::from("no broker to ask");
        for addr in addrs {
            let mut c = match Conn::connect(&addr, "trib-native-producer").await {
                Ok(c) => c,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match c
                .call::<_, MetadataResponse>(ApiKey::Metadata, METADATA_VERSION, &req)
                .await
            {
                Ok(r) => {
                    self.learn(r);
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    fn learn(&mut self, r: MetadataResponse) {
        for b in r.brokers {
            self.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        for t in r.topics {
            let Some(name) = t.name else { continue };
            let name: Arc<str> = name.0.as_str().into();
            if t.error_code != 0 || t.partitions.is_empty() {
                tracing::debug!(topic = %name, code = t.error_code, "topic not ready");
                continue;
            }
            let n = t
                .partitions
                .iter()
                .map(|p| p.partition_index + 1)
                .max()
                .unwrap_or(0);
            let mut leaders = vec![-1; n.max(0) as usize];
            for p in &t.partitions {
                if let Some(l) = leaders.get_mut(p.partition_index as usize) {
                    *l = if p.error_code == 0 { p.leader_id.0 } else { -1 };
                }
            }
            let sticky = self.topics.get(&name).map_or_else(
                || rand::rng().random_range(0..n.max(1)),
                |t| t.sticky % n.max(1),
            );
            self.topics.insert(name, Topic { leaders, sticky });
        }
    }

    /// The partitions of a topic, asking the cluster when it is not known yet. `Err` when the
    /// topic cannot be written (its events go to dead_letter).
    async fn partitions(&mut self, topic: &Arc<str>) -> Result<i32, String> {
        if let Some(t) = self.topics.get(topic) {
            return Ok(t.leaders.len() as i32);
        }
        if let Some((until, why)) = self.unresolved.get(topic) {
            if Instant::now() < *until {
                return Err(why.clone());
            }
        }
        if let Err(e) = trib_broker::topics::validate_topic_name(topic) {
            return Err(e.to_string());
        }
        let mut wait = Duration::from_millis(50);
        for _ in 0..8 {
            if let Err(e) = self.refresh(std::slice::from_ref(topic)).await {
                tracing::warn!(sink = %self.cx.name, topic = %topic, error = %e, "metadata request failed; retrying");
            }
            if let Some(t) = self.topics.get(topic) {
                self.unresolved.remove(topic);
                return Ok(t.leaders.len() as i32);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
        // Remembered for a while, so later events of this topic do not stall the sink again.
        let why = format!("topic {topic} has no partitions the cluster reports (does it exist?)");
        self.unresolved.insert(
            topic.clone(),
            (Instant::now() + Duration::from_secs(10), why.clone()),
        );
        Err(why)
    }

    async fn accept(&mut self, batch: Batch) -> anyhow::Result<()> {
        for e in batch {
            let topic = e
                .meta
                .target_topic
                .clone()
                .unwrap_or_else(|| self.default_topic.clone());
            let n = match self.partitions(&topic).await {
                Ok(n) => n,
                Err(reason) => {
                    self.dead.push(trib_pipelines::transforms::dead_letter(
                        e,
                        &self.cx.name,
                        reason,
                    ));
                    continue;
                }
            };
            let key_field = match (&e.key, &self.cfg.key_field) {
                (None, Some(f)) => get_path(&e.fields, f).map(value_text).map(Bytes::from),
                _ => None,
            };
            let key = e.key.clone().or(key_field);
            let partition = match (e.meta.target_partition, &key, self.cfg.partitioner) {
                (Some(p), _, _) if (0..n).contains(&p) => p,
                (Some(p), _, _) => {
                    let reason =
                        format!("partition {p} of topic {topic} does not exist ({n} partitions)");
                    self.dead.push(trib_pipelines::transforms::dead_letter(
                        e,
                        &self.cx.name,
                        reason,
                    ));
                    continue;
                }
                (None, Some(k), Partitioner::Murmur2) => key_partition(k, n),
                (None, _, Partitioner::Random) => rand::rng().random_range(0..n),
                (None, _, _) => self.topics.get(&topic).map_or(0, |t| t.sticky),
            };
            let body = e.body();
            let key_bytes = key.as_deref();
            let slot = (topic.clone(), partition);
            let max_bytes = self.cfg.batch_max_bytes;
            let full = self
                .parts
                .get(&slot)
                .and_then(|p| p.open.as_ref())
                .is_some_and(|b| {
                    b.count() > 0
                        && b.size() + body.len() + key_bytes.map_or(0, <[u8]>::len) + 64 > max_bytes
                });
            if full {
                self.seal(&slot)?;
            }
            let part = self.parts.entry(slot.clone()).or_default();
            let spare = &mut self.spare;
            let open = part.open.get_or_insert_with(|| {
                let buf = spare
                    .pop()
                    .unwrap_or_else(|| BytesMut::with_capacity(max_bytes.min(1 << 20)));
                Builder::new(buf)
            });
            open.push(e, key_bytes, &body);
            self.pending += 1;
            if open.count() as usize >= self.cfg.batch_max_records || open.size() >= max_bytes {
                self.seal(&slot)?;
            }
        }
        Ok(())
    }

    /// Closes a partition's open batch: sequence assigned, compressed, queued to send.
    fn seal(&mut self, slot: &Key) -> anyhow::Result<()> {
        let Some(part) = self.parts.get_mut(slot) else {
            return Ok(());
        };
        let Some(open) = part.open.take() else {
            return Ok(());
        };
        let count = open.count();
        let sequence = if self.producer_id >= 0 {
            part.next_sequence
        } else {
            -1
        };
        part.next_sequence = part.next_sequence.wrapping_add(count) & i32::MAX;
        let (sealed, buf) =
            open.seal(self.cfg.compression, self.producer_id, self.epoch, sequence)?;
        part.sealed.push_back(sealed);
        if self.spare.len() < 2 {
            self.spare.push(buf);
        }
        // Keyless records stick to a partition for one batch, then move on.
        if let Some(t) = self.topics.get_mut(&slot.0) {
            if t.sticky == slot.1 && t.leaders.len() > 1 {
                t.sticky = (t.sticky + 1 + rand::rng().random_range(0..t.leaders.len() as i32 - 1))
                    % t.leaders.len() as i32;
            }
        }
        Ok(())
    }

    /// Seals open batches that have waited `linger` (all of them when the input has ended).
    fn seal_due(&mut self, linger: Duration, all: bool) -> anyhow::Result<()> {
        let due: Vec<Key> = self
            .parts
            .iter()
            .filter(|(_, p)| {
                p.open
                    .as_ref()
                    .is_some_and(|b| all || b.opened.elapsed() >= linger)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.seal(&k)?;
        }
        Ok(())
    }

    /// Sends, to every broker with no request in flight, the first sealed batch of each
    /// partition it leads.
    fn dispatch(&mut self, inflight: &mut FuturesUnordered<BoxFuture<'static, Done>>) {
        let now = Instant::now();
        self.retry_at.retain(|_, t| *t > now);
        let mut per_broker: HashMap<i32, Vec<Key>> = HashMap::new();
        for (k, p) in &self.parts {
            if p.sealed.is_empty() || self.sending.contains(k) {
                continue;
            }
            let leader = self
                .topics
                .get(&k.0)
                .and_then(|t| t.leaders.get(k.1 as usize).copied())
                .unwrap_or(-1);
            if leader < 0 {
                self.stale = true;
                continue;
            }
            per_broker.entry(leader).or_default().push(k.clone());
        }
        for (broker, keys) in per_broker {
            if self.busy.contains(&broker) || self.retry_at.get(&broker).is_some_and(|t| *t > now) {
                continue;
            }
            let Some(addr) = self.brokers.get(&broker).cloned() else {
                self.stale = true;
                continue;
            };
            let mut batches = Vec::new();
            let mut size = 0;
            for k in keys {
                if size >= MAX_REQUEST_BYTES {
                    break;
                }
                if let Some(s) = self.parts.get_mut(&k).and_then(|p| p.sealed.pop_front()) {
                    size += s.bytes.len();
                    self.sending.insert(k.clone());
                    batches.push((k, s));
                }
            }
            let req = produce_request(&batches);
            let conn = self.idle.remove(&broker);
            self.busy.insert(broker);
            inflight.push(Box::pin(async move {
                let mut conn = match conn {
                    Some(c) => c,
                    None => match Conn::connect(&addr, "trib-native-producer").await {
                        Ok(c) => c,
                        Err(e) => {
                            return Done {
                                broker,
                                conn: None,
                                result: Err(e),
                                batches,
                            }
                        }
                    },
                };
                let result = conn
                    .call::<_, ProduceResponse>(ApiKey::Produce, PRODUCE_VERSION, &req)
                    .await;
                Done {
                    broker,
                    conn: result.is_ok().then_some(conn),
                    result,
                    batches,
                }
            }));
        }
    }

    fn complete(&mut self, done: Done) {
        self.busy.remove(&done.broker);
        for (k, _) in &done.batches {
            self.sending.remove(k);
        }
        let codes: HashMap<(String, i32), i16> = match &done.result {
            Ok(r) => {
                self.cx.metrics.requests_out.inc();
                r.responses
                    .iter()
                    .flat_map(|t| {
                        t.partition_responses
                            .iter()
                            .map(move |p| ((t.name.0.to_string(), p.index), p.error_code))
                    })
                    .collect()
            }
            Err(e) => {
                tracing::warn!(sink = %self.cx.name, error = %e, "produce request failed; sending again");
                HashMap::new()
            }
        };
        if let Some(c) = done.conn {
            self.idle.insert(done.broker, c);
        }
        let mut failed = false;
        // Back in reverse, so each partition's batches keep their order at the front.
        for (key, sealed) in done.batches.into_iter().rev() {
            let code = if done.result.is_ok() {
                codes
                    .get(&(key.0.to_string(), key.1))
                    .copied()
                    .unwrap_or(ResponseError::UnknownServerError.code())
            } else {
                ResponseError::NetworkException.code()
            };
            match code {
                0 | 46 => {
                    // Written (46: a duplicate of a batch already written).
                    self.pending -= sealed.records as usize;
                    self.cx.metrics.events_out.inc_by(sealed.records as u64);
                    self.cx.metrics.batches_out.inc();
                    self.cx.metrics.bytes_out.inc_by(sealed.bytes.len() as u64);
                    trib_pipelines::event::deliver_all(sealed.events);
                }
                45 | 59 => {
                    // The broker lost this producer's sequences (OUT_OF_ORDER_SEQUENCE_NUMBER,
                    // UNKNOWN_PRODUCER_ID): carry on without idempotence rather than loop.
                    if self.producer_id >= 0 {
                        tracing::warn!(sink = %self.cx.name, code, "the broker lost the producer's state; sending without idempotence from now on");
                        self.producer_id = -1;
                        self.epoch = -1;
                    }
                    failed = true;
                    let bytes = restamp(&sealed.bytes, -1, -1, -1);
                    self.parts
                        .entry(key)
                        .or_default()
                        .sealed
                        .push_front(Sealed { bytes, ..sealed });
                }
                c if retriable(c) => {
                    failed = true;
                    self.stale = true;
                    self.parts.entry(key).or_default().sealed.push_front(sealed);
                }
                c => {
                    let reason = format!(
                        "the broker refused the batch for {}/{}: error {c} ({:?})",
                        key.0,
                        key.1,
                        ResponseError::try_from_code(c)
                    );
                    self.pending -= sealed.records as usize;
                    self.renumber(&key, &sealed);
                    for e in sealed.events {
                        self.dead.push(trib_pipelines::transforms::dead_letter(
                            e,
                            &self.cx.name,
                            reason.clone(),
                        ));
                    }
                }
            }
        }
        let backoff = self.backoff.entry(done.broker).or_insert(Duration::ZERO);
        if failed {
            *backoff = (*backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
            self.retry_at.insert(done.broker, Instant::now() + *backoff);
        } else {
            *backoff = Duration::ZERO;
            self.retry_at.remove(&done.broker);
        }
    }
}

impl Producer {
    /// A refused batch never took its sequence numbers: the partition's queued batches move
    /// down to fill the gap, so the broker sees no hole in the sequence.
    fn renumber(&mut self, key: &Key, refused: &Sealed) {
        if self.producer_id < 0 {
            return;
        }
        let Some(part) = self.parts.get_mut(key) else {
            return;
        };
        let base = batch::base_sequence(&refused.bytes);
        let mut next = base;
        for s in part.sealed.iter_mut() {
            s.bytes = restamp(&s.bytes, self.producer_id, self.epoch, next);
            next = next.wrapping_add(s.records) & i32::MAX;
        }
        part.next_sequence = next;
    }
}

/// Errors after which the same batch is sent again (after a metadata refresh and backoff).
fn retriable(code: i16) -> bool {
    matches!(
        ResponseError::try_from_code(code),
        Some(
            ResponseError::NotLeaderOrFollower
                | ResponseError::UnknownTopicOrPartition
                | ResponseError::LeaderNotAvailable
                | ResponseError::RequestTimedOut
                | ResponseError::NotEnoughReplicas
                | ResponseError::NotEnoughReplicasAfterAppend
                | ResponseError::KafkaStorageError
                | ResponseError::NetworkException
                | ResponseError::NotController
                | ResponseError::UnknownServerError
                | ResponseError::ConcurrentTransactions
                | ResponseError::ThrottlingQuotaExceeded
        )
    )
}

fn produce_request(batches: &[(Key, Sealed)]) -> ProduceRequest {
    let mut by_topic: Vec<TopicProduceData> = Vec::new();
    for ((topic, partition), s) in batches {
        let mut pd = PartitionProduceData::default();
        pd.index = *partition;
        pd.records = Some(s.bytes.clone());
        match by_topic.iter_mut().find(|t| t.name.0.as_str() == &**topic) {
            Some(t) => t.partition_data.push(pd),
            None => {
                let mut t = TopicProduceData::default();
                t.name = TopicName(StrBytes::from_string(topic.to_string()));
                t.partition_data = vec![pd];
                by_topic.push(t);
            }
        }
    }
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 30_000;
    req.topic_data = by_topic;
    req
}
