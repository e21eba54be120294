//! Transactions on the wire: AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and EndTxn
//! (handed to the transaction coordinator, `crate::txn`, and for offsets the group
//! coordinator), and the admin views DescribeTransactions, ListTransactions and
//! DescribeProducers.

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, ResponseKind, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};

use super::{sb, topic_name, Reply};
use crate::broker::Broker;
use crate::group::OffsetToCommit;
use crate::txn::{
    Caller, Phase, INVALID_PRODUCER_EPOCH, PRODUCER_FENCED, TRANSACTIONAL_ID_NOT_FOUND,
};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const OPERATION_NOT_ATTEMPTED: i16 = 55;

/// The producer a request names. A stale epoch gets PRODUCER_FENCED from the request version
/// that knows it (KIP-588, `first_with_fenced`), INVALID_PRODUCER_EPOCH before.
fn caller(producer_id: i64, epoch: i16, version: i16, first_with_fenced: i16) -> Caller {
    Caller {
        producer_id,
        epoch,
        fenced_code: if version >= first_with_fenced {
            PRODUCER_FENCED
        } else {
            INVALID_PRODUCER_EPOCH
        },
    }
}

pub fn add_partitions(b: &Arc<Broker>, version: i16, req: AddPartitionsToTxnRequest) -> Reply {
    let b = b.clone();
    Reply::Later(Box::pin(async move {
        let id = req.v3_and_below_transactional_id.to_string();
        let caller = caller(
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            version,
            2,
        );
        let mut wanted = Vec::new();
        let mut missing = false;
        for t in &req.v3_and_below_topics {
            for p in &t.partitions {
                let exists = b.topics.get(&t.name.0).and_then(|x| x.partition(*p));
                missing |= exists.is_none();
                wanted.push((t.name.to_string(), *p));
            }
        }
        let outcome = if missing {
            None
        } else {
            Some(b.txns.add_partitions(&id, caller, &wanted).await)
        };
        if let Some(Err(e)) = &outcome {
            tracing::debug!(transactional_id = %id, error = %e, "AddPartitionsToTxn refused");
        }
        let mut r = AddPartitionsToTxnResponse::default();
        for t in req.v3_and_below_topics {
            let mut tr = AddPartitionsToTxnTopicResult::default();
            tr.name = t.name.clone();
            for p in t.partitions {
                let mut pr = AddPartitionsToTxnPartitionResult::default();
                pr.partition_index = p;
                pr.partition_error_code = match &outcome {
                    None if b
                        .topics
                        .get(&t.name.0)
                        .and_then(|x| x.partition(p))
                        .is_none() =>
                    {
                        UNKNOWN_TOPIC_OR_PARTITION
                    }
                    None => OPERATION_NOT_ATTEMPTED,
                    Some(Ok(())) => 0,
                    Some(Err(e)) => e.code,
                };
                tr.results_by_partition.push(pr);
            }
            r.results_by_topic_v3_and_below.push(tr);
        }
        ResponseKind::AddPartitionsToTxn(r)
    }))
}

pub fn add_offsets(b: &Arc<Broker>, version: i16, req: AddOffsetsToTxnRequest) -> Reply {
    let b = b.clone();
    Reply::Later(Box::pin(async move {
        let caller = caller(req.producer_id.0, req.producer_epoch, version, 2);
        let mut r = AddOffsetsToTxnResponse::default();
        if let Err(e) = b
            .txns
            .add_offsets(&req.transactional_id, caller, &req.group_id)
            .await
        {
            tracing::debug!(transactional_id = %req.transactional_id.0, error = %e, "AddOffsetsToTxn refused");
            r.error_code = e.code;
        }
        ResponseKind::AddOffsetsToTxn(r)
    }))
}

pub fn txn_offset_commit(b: &Arc<Broker>, version: i16, req: TxnOffsetCommitRequest) -> Reply {
    let b = b.clone();
    Reply::Later(Box::pin(async move {
        let caller = caller(req.producer_id.0, req.producer_epoch, version, 3);
        let n: usize = req.topics.iter().map(|t| t.partitions.len()).sum();
        let codes = match b
            .txns
            .check_offsets(&req.transactional_id, caller, &req.group_id)
        {
            Err(e) => {
                tracing::debug!(transactional_id = %req.transactional_id.0, error = %e, "TxnOffsetCommit refused");
                vec![e.code; n]
            }
            Ok(()) => {
                let offsets = req
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(|p| OffsetToCommit {
                            topic: t.name.to_string(),
                            partition: p.partition_index,
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        })
                    })
                    .collect();
                let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
                b.groups
                    .commit(
                        &b.topics,
                        &req.group_id,
                        req.generation_id,
                        &req.member_id,
                        instance.as_deref(),
                        offsets,
                        Some(req.producer_id.0),
                    )
                    .await
            }
        };
        let mut codes = codes.into_iter();
        let mut r = TxnOffsetCommitResponse::default();
        for t in req.topics {
            let mut tr = TxnOffsetCommitResponseTopic::default();
            tr.name = t.name.clone();
            for p in t.partitions {
                let mut pr = TxnOffsetCommitResponsePartition::default();
                pr.partition_index = p.partition_index;
                pr.error_code = codes.next().unwrap_or(0);
                tr.partitions.push(pr);
            }
            r.topics.push(tr);
        }
        ResponseKind::TxnOffsetCommit(r)
    }))
}

pub fn end_txn(b: &Arc<Broker>, version: i16, req: EndTxnRequest) -> Reply {
    let b = b.clone();
    Reply::Later(Box::pin(async move {
        let caller = caller(req.producer_id.0, req.producer_epoch, version, 2);
        let mut r = EndTxnResponse::default();
        r.producer_id = ProducerId(-1);
        r.producer_epoch = -1;
        if let Err(e) = b
            .txns
            .end_txn(&b, &req.transactional_id, caller, req.committed)
            .await
        {
            tracing::debug!(transactional_id = %req.transactional_id.0, error = %e, "EndTxn refused");
            r.error_code = e.code;
        }
        ResponseKind::EndTxn(r)
    }))
}

pub fn describe_transactions(
    b: &Arc<Broker>,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut r = DescribeTransactionsResponse::default();
    for id in req.transactional_ids {
        let mut s = TransactionState::default();
        s.transactional_id = id.clone();
        s.producer_id = ProducerId(-1);
        s.producer_epoch = -1;
        s.transaction_start_time_ms = -1;
        match b.txns.describe(&id) {
            None => s.error_code = TRANSACTIONAL_ID_NOT_FOUND,
            Some(m) => {
                s.transaction_state = sb(m.phase.name());
                s.transaction_timeout_ms = m.timeout_ms;
                s.transaction_start_time_ms = m.start_ms;
                s.producer_id = ProducerId(m.producer_id);
                s.producer_epoch = m.epoch;
                let mut topics: Vec<TopicData> = Vec::new();
                for (t, p) in &m.partitions {
                    match topics.last_mut() {
                        Some(td) if td.topic.0.as_str() == t => td.partitions.push(*p),
                        _ => {
                            let mut td = TopicData::default();
                            td.topic = topic_name(t);
                            td.partitions.push(*p);
                            topics.push(td);
                        }
                    }
                }
                s.topics = topics;
            }
        }
        r.transaction_states.push(s);
    }
    r
}

pub fn list_transactions(
    b: &Arc<Broker>,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut r = ListTransactionsResponse::default();
    let mut states = Vec::new();
    for f in &req.state_filters {
        match Phase::ALL.iter().find(|p| p.name() == f.as_str()) {
            Some(p) => states.push(*p),
            None => r.unknown_state_filters.push(f.clone()),
        }
    }
    let now = crate::log::partition::now_ms();
    for (id, m) in b.txns.list() {
        let state_ok = req.state_filters.is_empty() || states.contains(&m.phase);
        let pid_ok = req.producer_id_filters.is_empty()
            || req.producer_id_filters.contains(&ProducerId(m.producer_id));
        // KIP-994: only transactions running longer than the duration filter (v1).
        let duration_ok = req.duration_filter < 0
            || (m.phase == Phase::Ongoing && now - m.start_ms > req.duration_filter);
        if state_ok && pid_ok && duration_ok {
            let mut s = ListedState::default();
            s.transactional_id = TransactionalId(sb(id));
            s.producer_id = ProducerId(m.producer_id);
            s.transaction_state = sb(m.phase.name());
            r.transaction_states.push(s);
        }
    }
    r
}

pub fn describe_producers(
    b: &Arc<Broker>,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut r = DescribeProducersResponse::default();
    for t in req.topics {
        let topic = b.topics.get(&t.name.0);
        let mut tr = TopicResponse::default();
        tr.name = t.name.clone();
        for index in t.partition_indexes {
            let mut pr = PartitionResponse::default();
            pr.partition_index = index;
            match topic.as_ref().and_then(|x| x.partition(index)) {
                None => {
                    pr.error_code = UNKNOWN_TOPIC_OR_PARTITION;
                    pr.error_message = Some(sb(format!("unknown partition {}/{index}", t.name.0)));
                }
                Some(p) => {
                    pr.active_producers = p
                        .producers()
                        .into_iter()
                        .map(|v| {
                            let mut s = ProducerState::default();
                            s.producer_id = ProducerId(v.producer_id);
                            s.producer_epoch = i32::from(v.epoch);
                            s.last_sequence = v.last_sequence;
                            s.last_timestamp = v.last_ms;
                            s.coordinator_epoch = -1;
                            s.current_txn_start_offset = v.txn_first.unwrap_or(-1);
                            s
                        })
                        .collect();
                }
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

/// The outcome of an InitProducerId with a transactional id, for `producer_id::handle`.
pub async fn init_transactional(
    b: &Arc<Broker>,
    version: i16,
    id: &str,
    timeout_ms: i32,
    producer_id: i64,
    epoch: i16,
) -> Result<(i64, i16), i16> {
    let expected = (producer_id >= 0).then(|| caller(producer_id, epoch, version, 4));
    b.txns
        .init_producer(b, id, timeout_ms, expected)
        .await
        .map_err(|e| {
            tracing::debug!(transactional_id = id, error = %e, "InitProducerId refused");
            e.code
        })
}
