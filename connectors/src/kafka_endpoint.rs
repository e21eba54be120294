//! The Kafka endpoint source: a local listener speaking the Kafka protocol (ApiVersions,
//! Metadata, InitProducerId, Produce), so applications keep their Kafka client and hand their
//! records to the agent. Every record becomes an event bound for the topic it was produced to;
//! the producer is answered once the request's events are delivered downstream (or, with
//! `ack: received`, once the pipeline accepted them). Batches an idempotent producer retries are
//! recognised by their sequence numbers and answered without being forwarded again.
//!
//! Offsets in the answers are the endpoint's own per-partition counters, not the broker's: the
//! agent re-partitions records when it forwards them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, BrokerId, InitProducerIdResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, ProducerId, RequestKind, ResponseKind,
};
use kafka_protocol::records::RecordBatchDecoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use trib_broker::handlers::api_versions::VersionTable;
use trib_broker::handlers::metadata::{single_node, single_node_topic};
use trib_broker::handlers::{sb, topic_name};
use trib_broker::wire::{self, RequestStart};
use trib_pipelines::config::sources::{EndpointAck, KafkaEndpointSource};
use trib_pipelines::event::{now_ms, Event};
use trib_pipelines::finalize::{BatchNotifier, Status};
use trib_pipelines::metrics::ComponentMetrics;
use trib_pipelines::runtime::{Fanout, Source, SourceContext};

/// The APIs the endpoint answers. Produce and Metadata stop at v12: v13 addresses topics by id.
/// Fetch v4 is listed but never served (a Fetch closes the connection with a log line):
/// librdkafka writes v2 record batches only to a server that lists Produce v3 *and* Fetch v4,
/// and falls back to legacy message sets otherwise.
const ENDPOINT: VersionTable = VersionTable(&[
    (ApiKey::Produce, 12),
    (ApiKey::Fetch, 4),
    (ApiKey::Metadata, 12),
    (ApiKey::ApiVersions, 4),
    (ApiKey::InitProducerId, 5),
]);

/// The endpoint presents itself as this node.
const NODE: BrokerId = BrokerId(0);

/// Answers that may be owed on one connection before it stops reading (clients pipeline up
/// to 5 by default).
const PIPELINED: usize = 16;

/// Idempotent-producer sequences remembered; beyond this the table starts over (a retry across
/// the reset is forwarded again: at-least-once).
const MAX_SEQUENCES: usize = 100_000;

/// Records accepted per batch header, before anything is allocated for them.
const MAX_BATCH_RECORDS: i32 = 1_000_000;

/// Topics one endpoint takes (each keeps a name and offset counters).
const MAX_TOPICS: usize = 10_000;

/// Decompresses a batch's records for the record decoder, refusing to produce more than
/// `limit` bytes (the broker's bounded decompression, shared with every record walker).
fn bounded_decompress(
    buf: &mut Bytes,
    codec: kafka_protocol::records::Compression,
    limit: u64,
) -> anyhow::Result<Bytes> {
    let input = buf.split_to(buf.len());
    Ok(trib_broker::log::batch::decompress_bounded(
        codec as i16,
        input,
        limit,
    )?)
}

pub struct KafkaEndpoint {
    cfg: KafkaEndpointSource,
    host: String,
    port: i32,
}

impl KafkaEndpoint {
    pub fn new(c: &KafkaEndpointSource) -> anyhow::Result<Self> {
        c.address
            .parse::<SocketAddr>()
            .map_err(|e| anyhow::anyhow!("address: `{}` is not host:port: {e}", c.address))?;
        let advertised = c.advertised_address.as_deref().unwrap_or(&c.address);
        let (host, port) = trib_broker::config::split_host_port(advertised).ok_or_else(|| {
            anyhow::anyhow!("advertised_address: `{advertised}` is not host:port")
        })?;
        anyhow::ensure!(
            (1..=10_000).contains(&c.partitions),
            "partitions: {} is not between 1 and 10000",
            c.partitions
        );
        for t in &c.topics {
            trib_broker::topics::validate_topic_name(t)
                .map_err(|e| anyhow::anyhow!("topics: {e}"))?;
        }
        anyhow::ensure!(
            c.max_request_bytes >= 1024,
            "max_request_bytes: {} is below 1024",
            c.max_request_bytes
        );
        Ok(Self {
            cfg: c.clone(),
            host,
            port,
        })
    }
}

impl Source for KafkaEndpoint {
    fn run(self: Box<Self>, mut cx: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let l = tokio::net::TcpListener::bind(&self.cfg.address)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", self.cfg.address))?;
            tracing::info!(source = %cx.name, address = %self.cfg.address, "kafka endpoint listening");
            let shared = Arc::new(Shared {
                name: cx.name.clone(),
                out: cx.out.clone(),
                metrics: cx.metrics.clone(),
                host: self.host,
                port: self.port,
                cfg: self.cfg,
                state: Mutex::new(State::default()),
                // Ids from the clock, so a restarted agent does not hand out an id again.
                next_producer_id: AtomicI64::new(now_ms().saturating_mul(1000)),
            });
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let (stream, peer) = tokio::select! {
                    r = l.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(source = %cx.name, error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = cx.stopped() => break,
                };
                conns.spawn(serve(shared.clone(), stream, peer, cx.shutdown.clone()));
                // Reap finished connections so the set stays small.
                while conns.try_join_next().is_some() {}
            }
            // Connections answer what they have read, then close; the pipeline drains after.
            while conns.join_next().await.is_some() {}
            Ok(())
        })
    }
}

struct Shared {
    cfg: KafkaEndpointSource,
    name: Arc<str>,
    out: Fanout,
    metrics: ComponentMetrics,
    host: String,
    port: i32,
    state: Mutex<State>,
    next_producer_id: AtomicI64,
}

#[derive(Default)]
struct State {
    /// Topic names seen, shared by the events bound for them.
    topics: HashMap<String, Arc<str>>,
    /// The next offset each partition hands out.
    offsets: HashMap<(Arc<str>, i32), i64>,
    /// Sequences per idempotent producer and partition.
    sequences: HashMap<SeqKey, Sequences>,
}

type SeqKey = (i64, Arc<str>, i32);

/// An idempotent producer's sequences on one partition.
#[derive(Debug, Clone, Copy)]
struct Sequences {
    /// The next sequence expected (everything before was taken into the pipeline).
    next: i32,
    /// Everything before this was delivered (acknowledged to the producer).
    confirmed: i32,
}

/// A forwarded batch of an idempotent producer: its partition and sequence range.
struct Forwarded {
    key: SeqKey,
    first: i32,
    last: i32,
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Frame(#[from] wire::FrameError),
    #[error("{api:?} v{version} is not served here (the agent's endpoint answers ApiVersions, Metadata, InitProducerId and Produce)")]
    Unsupported { api: ApiKey, version: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// An answer owed, in request order; `None` when no response is sent.
type Answer = BoxFuture<'static, Option<(RequestStart, i16, ResponseKind)>>;

async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Answer>(PIPELINED);
    let writer = tokio::spawn(async move {
        let mut out = BytesMut::with_capacity(4096);
        while let Some(a) = rx.recv().await {
            let Some((start, header_version, body)) = a.await else {
                continue;
            };
            if let Err(e) = wire::encode_response(
                &mut out,
                start.correlation_id,
                header_version,
                start.version,
                &body,
            ) {
                tracing::warn!(%peer, error = %e, "cannot encode a response; closing");
                return;
            }
            if wr.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    });
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let result: Result<(), ConnError> = async {
        loop {
            while let Some(frame) = wire::next_frame(&mut buf, shared.cfg.max_request_bytes)? {
                let answer = shared.handle(frame).await?;
                if tx.send(answer).await.is_err() {
                    return Ok(());
                }
            }
            tokio::select! {
                n = rd.read_buf(&mut buf) => if n? == 0 { return Ok(()) },
                _ = shutdown.wait_for(|s| *s) => return Ok(()),
            }
        }
    }
    .await;
    drop(tx);
    let _ = writer.await;
    match result {
        Ok(()) => {}
        Err(ConnError::Io(e)) => tracing::debug!(%peer, error = %e, "connection closed"),
        Err(e) => tracing::warn!(source = %shared.name, %peer, error = %e, "closing connection"),
    }
}

fn ready(start: RequestStart, header_version: i16, body: ResponseKind) -> Answer {
    futures::future::ready(Some((start, header_version, body))).boxed()
}

impl Shared {
    /// Decodes one request and answers it (now, or when its records are delivered).
    async fn handle(self: &Arc<Self>, mut frame: Bytes) -> Result<Answer, ConnError> {
        let start = wire::request_start(&frame)?;
        let (api, version) = (start.api, start.version);
        let Some((min, max)) = ENDPOINT.supported_range(api) else {
            return Err(ConnError::Unsupported { api, version });
        };
        if api == ApiKey::ApiVersions && version > max {
            // Error 35 with a v0 body and header: clients decode errored replies as v0.
            let v0 = RequestStart {
                version: 0,
                ..start
            };
            return Ok(ready(
                v0,
                0,
                ResponseKind::ApiVersions(ENDPOINT.unsupported()),
            ));
        }
        if version < min || version > max || api == ApiKey::Fetch {
            return Err(ConnError::Unsupported { api, version });
        }
        wire::decode_header(&mut frame, start)?;
        let header_version = api.response_header_version(version);
        let request =
            RequestKind::decode(api, &mut frame, version).map_err(|e| ConnError::Malformed {
                api,
                version,
                reason: e.to_string(),
            })?;
        Ok(match request {
            RequestKind::ApiVersions(_) => ready(
                start,
                header_version,
                ResponseKind::ApiVersions(ENDPOINT.response()),
            ),
            RequestKind::Metadata(r) => ready(
                start,
                header_version,
                ResponseKind::Metadata(self.metadata(version, r)),
            ),
            RequestKind::InitProducerId(r) => {
                let mut resp = InitProducerIdResponse::default();
                if r.transactional_id.is_some() {
                    resp.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
                    resp.producer_id = ProducerId(-1);
                    resp.producer_epoch = -1;
                } else {
                    resp.producer_id =
                        ProducerId(self.next_producer_id.fetch_add(1, Ordering::Relaxed));
                }
                ready(start, header_version, ResponseKind::InitProducerId(resp))
            }
            RequestKind::Produce(r) => {
                let answer = self.produce(r).await;
                async move {
                    let body = answer?.await;
                    Some((start, header_version, ResponseKind::Produce(body)))
                }
                .boxed()
            }
            _ => return Err(ConnError::Unsupported { api, version }),
        })
    }

    /// Whether producers may use `topic`: an error code and message when not.
    fn check_topic(&self, topic: &str) -> Result<(), (i16, String)> {
        trib_broker::topics::validate_topic_name(topic)
            .map_err(|e| (ResponseError::InvalidTopicException.code(), e.to_string()))?;
        if !self.cfg.topics.is_empty() && !self.cfg.topics.iter().any(|t| t == topic) {
            return Err((
                ResponseError::TopicAuthorizationFailed.code(),
                format!("topic {topic} is not in this endpoint's `topics` list"),
            ));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared name of a topic, remembered for Metadata requests for all topics.
    /// Refuses new topics past `MAX_TOPICS`, so producers cannot grow the agent's memory
    /// without bound.
    fn topic(&self, name: &str) -> Result<Arc<str>, (i16, String)> {
        let mut st = self.lock();
        if let Some(t) = st.topics.get(name) {
            return Ok(t.clone());
        }
        if st.topics.len() >= MAX_TOPICS {
            return Err((
                ResponseError::PolicyViolation.code(),
                format!("topic {name}: this endpoint already takes {MAX_TOPICS} topics"),
            ));
        }
        let t: Arc<str> = name.into();
        st.topics.insert(name.to_string(), t.clone());
        Ok(t)
    }

    fn metadata(&self, version: i16, req: MetadataRequest) -> MetadataResponse {
        let mut r = single_node(NODE, &self.host, self.port, "trib-agent");
        let describe = |name: &str| match self.check_topic(name) {
            Ok(()) => single_node_topic(name, Default::default(), self.cfg.partitions, NODE),
            Err((code, _)) => {
                let mut t = MetadataResponseTopic::default();
                t.name = Some(topic_name(name));
                t.error_code = code;
                t
            }
        };
        // v0: an empty list means all topics; v1+: null means all.
        let all = req.topics.is_none()
            || (version == 0 && req.topics.as_ref().is_some_and(Vec::is_empty));
        if all {
            let mut names: Vec<String> = self.lock().topics.keys().cloned().collect();
            names.extend(self.cfg.topics.iter().cloned());
            names.sort();
            names.dedup();
            r.topics = names.iter().map(|n| describe(n)).collect();
        } else {
            for want in req.topics.unwrap_or_default() {
                let name = want.name.map(|n| n.0.to_string()).unwrap_or_default();
                r.topics.push(describe(&name));
            }
        }
        r
    }

    /// Turns a Produce request into events and sends them on; the returned future gives the
    /// answer (`None` for acks=0).
    async fn produce(
        self: &Arc<Self>,
        req: ProduceRequest,
    ) -> Option<BoxFuture<'static, ProduceResponse>> {
        self.metrics.requests_in.inc();
        let acks = req.acks;
        let wait = acks != 0 && self.cfg.ack == EndpointAck::Delivered;
        let (notifier, delivered) = BatchNotifier::new();
        let mut resp = ProduceResponse::default();
        let mut events = Vec::new();
        // The answer is due `ack_timeout_ms` after the request arrived.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.cfg.ack_timeout_ms);
        // Partitions whose records were forwarded: (topic slot, partition slot), and the
        // sequence ranges of idempotent producers among them.
        let mut forwarded = Vec::new();
        let mut sequenced = Vec::new();
        for (ti, td) in req.topic_data.into_iter().enumerate() {
            let name = td.name.0.to_string();
            let mut tr = TopicProduceResponse::default();
            tr.name = td.name.clone();
            let topic = if req.transactional_id.is_some() {
                Err((
                    ResponseError::TransactionalIdAuthorizationFailed.code(),
                    "the agent's endpoint does not take transactional produce".to_string(),
                ))
            } else if !matches!(acks, -1..=1) {
                Err((
                    ResponseError::InvalidRequiredAcks.code(),
                    "acks must be -1, 0 or 1".to_string(),
                ))
            } else {
                self.check_topic(&name)
            }
            .and_then(|()| self.topic(&name));
            for (pi, pd) in td.partition_data.into_iter().enumerate() {
                let mut pr = PartitionProduceResponse::default();
                pr.index = pd.index;
                pr.base_offset = -1;
                pr.log_append_time_ms = -1;
                pr.log_start_offset = -1;
                let outcome = match &topic {
                    Ok(topic) => self.accept(topic, pd.index, pd.records),
                    Err(e) => Err(e.clone()),
                };
                match outcome {
                    Ok(Accepted::Duplicate) => {}
                    Ok(Accepted::Records {
                        records,
                        base_offset,
                        sequence,
                    }) => {
                        pr.base_offset = base_offset;
                        pr.log_start_offset = 0;
                        forwarded.push((ti, pi));
                        sequenced.extend(sequence);
                        events.extend(records.into_iter().map(|e| {
                            if wait {
                                e.with_finalizer(notifier.finalizer())
                            } else {
                                e
                            }
                        }));
                    }
                    Err((code, msg)) => {
                        tracing::debug!(source = %self.name, topic = %name, partition = pd.index, error = %msg, "produce refused");
                        pr.error_code = code;
                        pr.error_message = Some(sb(msg));
                    }
                }
                tr.partition_responses.push(pr);
            }
            resp.responses.push(tr);
        }
        drop(notifier);
        let sent = events.is_empty() || self.out.send(events).await;
        // The outcome settles the sequences even if the producer has gone meanwhile, so its
        // retry on another connection is judged by what really happened.
        let (outcome_tx, outcome) = oneshot::channel();
        let me = self.clone();
        tokio::spawn(async move {
            let ok = sent
                && (!wait
                    || matches!(
                        tokio::time::timeout_at(deadline, delivered).await,
                        Ok(Ok(Status::Delivered))
                    ));
            me.settle(&sequenced, ok);
            let _ = outcome_tx.send(ok);
        });
        if acks == 0 {
            return None;
        }
        Some(
            async move {
                if !outcome.await.unwrap_or(false) {
                    for (ti, pi) in forwarded {
                        let pr = &mut resp.responses[ti].partition_responses[pi];
                        pr.error_code = ResponseError::RequestTimedOut.code();
                        pr.error_message =
                            Some(sb("the records were not delivered in time; retry"));
                        pr.base_offset = -1;
                    }
                }
                resp
            }
            .boxed(),
        )
    }

    /// Decodes one partition's batches into events and gives them offsets; a batch an
    /// idempotent producer already sent is recognised as a duplicate.
    fn accept(
        &self,
        topic: &Arc<str>,
        partition: i32,
        records: Option<Bytes>,
    ) -> Result<Accepted, (i16, String)> {
        let corrupt = |m: String| {
            (
                ResponseError::CorruptMessage.code(),
                format!("{m} (topic {topic}, partition {partition})"),
            )
        };
        if !(0..self.cfg.partitions).contains(&partition) {
            return Err((
                ResponseError::UnknownTopicOrPartition.code(),
                format!("no partition {partition} in topic {topic}"),
            ));
        }
        let mut buf = records.ok_or_else(|| corrupt("no records".into()))?;
        self.metrics.bytes_in.inc_by(buf.len() as u64);
        // Bound the record counts before the decoder reserves room for them.
        let infos = RecordBatchDecoder::decode_batch_info(&mut buf.clone())
            .map_err(|e| corrupt(format!("bad batch header: {e}")))?;
        if infos.is_empty() {
            return Err(corrupt(format!(
                "not a v2 record batch (magic byte {:?}); the endpoint takes Kafka 0.11+ batches",
                buf.get(16)
            )));
        }
        if let Some(i) = infos
            .iter()
            .find(|i| !(0..=MAX_BATCH_RECORDS).contains(&i.record_count))
        {
            return Err(corrupt(format!(
                "batch claims {} records (at most {MAX_BATCH_RECORDS})",
                i.record_count
            )));
        }
        let count: i64 = infos.iter().map(|i| i64::from(i.record_count)).sum();
        if count > i64::from(MAX_BATCH_RECORDS) {
            return Err(corrupt(format!(
                "{count} records in one partition's data (at most {MAX_BATCH_RECORDS})"
            )));
        }
        let count = count as i32;
        let (pid, first) = (infos[0].producer_id, infos[0].base_sequence);
        let sequence = (pid >= 0 && first >= 0 && count > 0).then(|| Forwarded {
            key: (pid, topic.clone(), partition),
            first,
            last: first.wrapping_add(count - 1),
        });
        if let Some(f) = &sequence {
            if let Some(s) = self.lock().sequences.get(&f.key) {
                if f.last < s.confirmed {
                    // Delivered already: the producer lost our answer and sent it again.
                    return Ok(Accepted::Duplicate);
                }
                if f.first < s.next {
                    // Still on its way: its outcome is not known yet.
                    return Err((
                        ResponseError::RequestTimedOut.code(),
                        format!("an earlier send of this batch to {topic}/{partition} is still being delivered; retry"),
                    ));
                }
            }
        }
        // Each record takes at least 7 bytes: the capacity is bounded by the bytes received.
        let mut events = Vec::with_capacity((count as usize).min(buf.len() / 7));
        let now = now_ms();
        while !buf.is_empty() {
            let set = RecordBatchDecoder::decode_with_custom_compression(
                &mut buf,
                Some(|b: &mut Bytes, c| {
                    bounded_decompress(b, c, trib_broker::log::batch::MAX_DECOMPRESSED)
                }),
            )
            .map_err(|e| corrupt(e.to_string()))?;
            for r in set.records {
                let mut e = Event::default();
                e.raw = Some(r.value.unwrap_or_default());
                e.key = r.key;
                e.timestamp_ms = if r.timestamp > 0 { r.timestamp } else { now };
                e.headers = r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string().into(), v.unwrap_or_default()))
                    .collect();
                e.meta.source = self.name.clone();
                e.meta.topic = Some(topic.clone());
                e.meta.partition = Some(partition);
                e.meta.target_topic = Some(topic.clone());
                events.push(e);
            }
        }
        // Taken: later sends of these sequences are retries.
        if let Some(f) = &sequence {
            let mut st = self.lock();
            if st.sequences.len() >= MAX_SEQUENCES {
                st.sequences.clear();
            }
            let s = st.sequences.entry(f.key.clone()).or_insert(Sequences {
                next: f.first,
                confirmed: f.first,
            });
            s.next = f.last.wrapping_add(1);
        }
        let base_offset = {
            let mut st = self.lock();
            let next = st.offsets.entry((topic.clone(), partition)).or_insert(0);
            let base = *next;
            *next += events.len() as i64;
            base
        };
        Ok(Accepted::Records {
            records: events,
            base_offset,
            sequence,
        })
    }

    /// Records what became of forwarded batches: delivered ones are confirmed (their retries
    /// are answered as duplicates); undelivered ones are forgotten (their retries are taken).
    fn settle(&self, batches: &[Forwarded], delivered: bool) {
        let mut st = self.lock();
        for f in batches {
            if let Some(s) = st.sequences.get_mut(&f.key) {
                if delivered {
                    s.confirmed = s.confirmed.max(f.last.wrapping_add(1));
                } else {
                    s.next = s.next.min(f.first);
                }
            }
        }
    }
}

/// What became of one partition's records.
enum Accepted {
    /// Already forwarded (an idempotent producer's retry): answered without forwarding.
    Duplicate,
    Records {
        records: Vec<Event>,
        base_offset: i64,
        /// The sequence range of an idempotent producer's batch.
        sequence: Option<Forwarded>,
    },
}
