//! A transactional producer on the target cluster, for translating mode: InitProducerId under
//! the link's transactional id (which fences a previous instance and aborts its open
//! transaction), AddPartitionsToTxn, Produce with per-partition sequences, EndTxn. Any failure
//! leaves the producer needing `init` again, which aborts whatever the failed transaction wrote.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use trib_broker::log::batch_writer::ProducerStamp;

use crate::cluster::{Cluster, ClusterError};

const TXN_TIMEOUT_MS: i32 = 60_000;
/// Errors after which the same call is tried again shortly.
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const CONCURRENT_TRANSACTIONS: i16 = 51;
const RETRIES: u32 = 50;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn retriable(code: i16) -> bool {
    matches!(
        code,
        COORDINATOR_LOAD_IN_PROGRESS
            | COORDINATOR_NOT_AVAILABLE
            | NOT_COORDINATOR
            | CONCURRENT_TRANSACTIONS
    )
}

/// One batch to write: target topic, partition, the node leading it, and the sealed batch.
pub struct Write {
    pub topic: String,
    pub partition: i32,
    pub leader: Option<i32>,
    pub batch: Bytes,
}

/// The transactional producer of one link.
pub struct TxnProducer {
    target: std::sync::Arc<Cluster>,
    id: String,
    coordinator: Option<i32>,
    producer_id: i64,
    epoch: i16,
    sequences: HashMap<(String, i32), i32>,
}

impl TxnProducer {
    pub fn new(target: std::sync::Arc<Cluster>, id: String) -> Self {
        Self {
            target,
            id,
            coordinator: None,
            producer_id: -1,
            epoch: -1,
            sequences: HashMap::new(),
        }
    }

    fn failed(&self, what: &str, code: i16) -> ClusterError {
        ClusterError::Kafka {
            cluster: self.target.name.clone(),
            what: format!("{what} (transactional id {})", self.id),
            code,
            message: None,
        }
    }

    /// Finds the coordinator and takes the transactional id with a new epoch. Retries while the
    /// coordinator is busy completing the previous instance's transaction.
    pub async fn init(&mut self) -> Result<(), ClusterError> {
        self.producer_id = -1;
        self.sequences.clear();
        let mut last = 0;
        for _ in 0..RETRIES {
            let node = self.target.coordinator_of(&self.id, 1).await?;
            self.coordinator = Some(node);
            let mut req = InitProducerIdRequest::default();
            req.transactional_id = Some(TransactionalId(sb(&self.id)));
            req.transaction_timeout_ms = TXN_TIMEOUT_MS;
            req.producer_id = ProducerId(-1);
            req.producer_epoch = -1;
            let resp: InitProducerIdResponse = self
                .target
                .call(Some(node), ApiKey::InitProducerId, 3, &req)
                .await?;
            if resp.error_code == 0 {
                self.producer_id = resp.producer_id.0;
                self.epoch = resp.producer_epoch;
                return Ok(());
            }
            last = resp.error_code;
            if !retriable(last) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(self.failed("InitProducerId", last))
    }

    /// The stamp for a batch of `count` records to (topic, partition), taking its sequences.
    pub fn stamp(&mut self, topic: &str, partition: i32, count: i32) -> ProducerStamp {
        let seq = self
            .sequences
            .entry((topic.to_string(), partition))
            .or_insert(0);
        let base_sequence = *seq;
        *seq = seq.wrapping_add(count) & i32::MAX;
        ProducerStamp {
            producer_id: self.producer_id,
            epoch: self.epoch,
            base_sequence,
            transactional: true,
        }
    }

    /// Adds partitions to the transaction (beginning it).
    pub async fn add_partitions(&mut self, parts: &[(String, i32)]) -> Result<(), ClusterError> {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in parts {
            topics.entry(t).or_default().push(*p);
        }
        let mut req = AddPartitionsToTxnRequest::default();
        req.v3_and_below_transactional_id = TransactionalId(sb(&self.id));
        req.v3_and_below_producer_id = ProducerId(self.producer_id);
        req.v3_and_below_producer_epoch = self.epoch;
        req.v3_and_below_topics = topics
            .into_iter()
            .map(|(t, ps)| {
                let mut x = AddPartitionsToTxnTopic::default();
                x.name = TopicName(sb(t));
                x.partitions = ps;
                x
            })
            .collect();
        let mut last = 0;
        for _ in 0..RETRIES {
            let resp: AddPartitionsToTxnResponse = self
                .target
                .call(self.coordinator, ApiKey::AddPartitionsToTxn, 3, &req)
                .await?;
            last = resp
                .results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| &t.results_by_partition)
                .map(|p| p.partition_error_code)
                .find(|&c| c != 0)
                .unwrap_or(resp.error_code);
            if last == 0 {
                return Ok(());
            }
            if last != CONCURRENT_TRANSACTIONS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(self.failed("AddPartitionsToTxn", last))
    }

    /// Writes waves of batches and returns each batch's base offset at the target, wave by
    /// wave, by (topic, partition). A wave holds at most one batch per partition, as a Produce
    /// carries one batch per partition; each leader gets one Produce per wave, all pipelined on
    /// one connection, so a partition's batches land in wave order without waiting for each
    /// answer. Leaders are written at once.
    pub async fn produce(
        &self,
        waves: Vec<Vec<Write>>,
    ) -> Result<Vec<HashMap<(String, i32), i64>>, ClusterError> {
        let n = waves.len();
        let mut by_leader: BTreeMap<Option<i32>, Vec<(usize, Vec<Write>)>> = BTreeMap::new();
        for (i, wave) in waves.into_iter().enumerate() {
            let mut per: BTreeMap<Option<i32>, Vec<Write>> = BTreeMap::new();
            for w in wave {
                per.entry(w.leader).or_default().push(w);
            }
            for (leader, ws) in per {
                by_leader.entry(leader).or_default().push((i, ws));
            }
        }
        let calls = by_leader.into_iter().map(|(leader, waves)| async move {
            let counts: Vec<(usize, usize)> = waves.iter().map(|(i, ws)| (*i, ws.len())).collect();
            let reqs: Vec<ProduceRequest> =
                waves.into_iter().map(|(_, ws)| self.request(ws)).collect();
            let resps: Vec<ProduceResponse> = self
                .target
                .call_many(leader, ApiKey::Produce, 9, &reqs)
                .await?;
            counts
                .into_iter()
                .zip(resps)
                .map(|((wave, count), resp)| Ok((wave, self.bases(resp, count)?)))
                .collect::<Result<Vec<_>, ClusterError>>()
        });
        let mut all = vec![HashMap::new(); n];
        for r in futures::future::join_all(calls).await {
            for (wave, bases) in r? {
                if let Some(slot) = all.get_mut(wave) {
                    slot.extend(bases);
                }
            }
        }
        Ok(all)
    }

    /// One Produce carrying `ws` (one batch per partition).
    fn request(&self, ws: Vec<Write>) -> ProduceRequest {
        let mut req = ProduceRequest::default();
        req.transactional_id = Some(TransactionalId(sb(&self.id)));
        req.acks = -1;
        req.timeout_ms = 30_000;
        let mut topics: BTreeMap<String, TopicProduceData> = BTreeMap::new();
        for w in ws {
            let t = topics.entry(w.topic.clone()).or_insert_with(|| {
                let mut t = TopicProduceData::default();
                t.name = TopicName(sb(&w.topic));
                t
            });
            let mut pd = PartitionProduceData::default();
            pd.index = w.partition;
            pd.records = Some(w.batch);
            t.partition_data.push(pd);
        }
        req.topic_data = topics.into_values().collect();
        req
    }

    /// The base offsets a Produce answer gives, or its first error; `count` partitions expected.
    fn bases(
        &self,
        resp: ProduceResponse,
        count: usize,
    ) -> Result<HashMap<(String, i32), i64>, ClusterError> {
        let mut out = HashMap::new();
        for t in resp.responses {
            for p in t.partition_responses {
                if p.error_code != 0 {
                    return Err(ClusterError::Kafka {
                        cluster: self.target.name.clone(),
                        what: format!("producing to {}/{}", t.name.0, p.index),
                        code: p.error_code,
                        message: p.error_message.map(|m| m.to_string()),
                    });
                }
                out.insert((t.name.to_string(), p.index), p.base_offset);
            }
        }
        if out.len() != count {
            return Err(self.failed("Produce: partitions missing from the answer", -1));
        }
        Ok(out)
    }

    /// Commits (or aborts) the transaction.
    pub async fn end(&mut self, commit: bool) -> Result<(), ClusterError> {
        let mut req = EndTxnRequest::default();
        req.transactional_id = TransactionalId(sb(&self.id));
        req.producer_id = ProducerId(self.producer_id);
        req.producer_epoch = self.epoch;
        req.committed = commit;
        let mut last = 0;
        for _ in 0..RETRIES {
            let resp: EndTxnResponse = self
                .target
                .call(self.coordinator, ApiKey::EndTxn, 3, &req)
                .await?;
            last = resp.error_code;
            if last == 0 {
                return Ok(());
            }
            if last != CONCURRENT_TRANSACTIONS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(self.failed(
            if commit {
                "EndTxn commit"
            } else {
                "EndTxn abort"
            },
            last,
        ))
    }
}
