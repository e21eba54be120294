//! Fetch: reads stored batches for each requested partition within the partition and response
//! byte limits, and long-polls: when fewer than `min_bytes` are available it waits until an
//! append makes data visible or `max_wait_ms` passes. read_committed fetches stop at the last
//! stable offset and carry the aborted transactions their records may hold. Sessions (KIP-227) are not kept: every
//! answer carries session id 0, which tells clients to send full fetches.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ProducerId, ResponseKind, TopicName,
};
use tokio::time::Instant;
use uuid::Uuid;

use super::Reply;
use crate::broker::Broker;
use crate::log::partition::Partition;
use kafka_protocol::error::ResponseError;

/// One requested partition, resolved.
struct Want {
    topic: usize,
    index: i32,
    offset: i64,
    max_bytes: usize,
    partition: Option<Arc<Partition>>,
    unknown_code: i16,
}

pub fn handle(b: &Arc<Broker>, version: i16, req: FetchRequest) -> Reply {
    if req.session_id != 0 && req.session_epoch > 0 {
        let mut r = FetchResponse::default();
        r.error_code = ResponseError::FetchSessionIdNotFound.code();
        return Reply::Now(ResponseKind::Fetch(r));
    }
    let mut topics: Vec<(TopicName, Uuid)> = Vec::with_capacity(req.topics.len());
    let mut wants = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let topic = b.resolve(&t.topic.0, t.topic_id);
        topics.push((t.topic.clone(), t.topic_id));
        for p in &t.partitions {
            wants.push(Want {
                topic: ti,
                index: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                partition: topic.as_ref().and_then(|t| t.partition(p.partition)),
                unknown_code: if version >= 13 {
                    ResponseError::UnknownTopicId.code()
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                },
            });
        }
    }
    let max_bytes = if req.max_bytes <= 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };
    let min_bytes = req.min_bytes.max(0) as usize;
    let committed = req.isolation_level == 1;
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.clamp(0, 60_000) as u64);
    let broker = b.clone();
    Reply::Later(Box::pin(async move {
        loop {
            // Subscribe before reading so an append between the read and the wait is not missed.
            let mut rxs: Vec<_> = wants
                .iter()
                .filter_map(|w| w.partition.as_ref().map(|p| p.subscribe()))
                .collect();
            let (resp, bytes, errors) = read_all(&wants, &topics, max_bytes, committed);
            if bytes >= min_bytes || errors || Instant::now() >= deadline || rxs.is_empty() {
                broker.metrics.fetched(bytes as u64);
                return ResponseKind::Fetch(resp);
            }
            let changed = select_all(rxs.iter_mut().map(|rx| Box::pin(rx.changed())));
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }))
}

fn read_all(
    wants: &[Want],
    topics: &[(TopicName, Uuid)],
    max_bytes: usize,
    committed: bool,
) -> (FetchResponse, usize, bool) {
    let mut resp = FetchResponse::default();
    resp.responses = topics
        .iter()
        .map(|(name, id)| {
            let mut t = FetchableTopicResponse::default();
            t.topic = name.clone();
            t.topic_id = *id;
            t
        })
        .collect();
    let mut budget = max_bytes;
    let mut total = 0usize;
    let mut errors = false;
    for w in wants {
        let mut pd = PartitionData::default();
        pd.partition_index = w.index;
        pd.high_watermark = -1;
        pd.last_stable_offset = -1;
        pd.log_start_offset = -1;
        pd.preferred_read_replica = BrokerId(-1);
        match &w.partition {
            None => {
                pd.error_code = w.unknown_code;
                errors = true;
            }
            Some(p) => {
                // The first partition with data may exceed the response budget by one batch (KIP-74).
                let limit = if total == 0 {
                    w.max_bytes.min(max_bytes)
                } else {
                    w.max_bytes.min(budget)
                };
                let read = if limit == 0 && total > 0 {
                    Ok(None)
                } else if committed {
                    p.read_committed(w.offset, limit.max(1)).map(Some)
                } else {
                    p.read(w.offset, limit.max(1))
                        .map(|r| Some((r, p.last_stable_offset(), Vec::new())))
                };
                match read {
                    Ok(Some((r, lso, aborted))) => {
                        pd.high_watermark = r.high_watermark;
                        pd.last_stable_offset = lso;
                        pd.log_start_offset = r.log_start;
                        total += r.records.len();
                        budget = budget.saturating_sub(r.records.len());
                        pd.records = Some(r.records);
                        if committed {
                            pd.aborted_transactions = Some(
                                aborted
                                    .into_iter()
                                    .map(|(pid, first)| {
                                        let mut a = AbortedTransaction::default();
                                        a.producer_id = ProducerId(pid);
                                        a.first_offset = first;
                                        a
                                    })
                                    .collect(),
                            );
                        }
                    }
                    Ok(None) => {
                        pd.high_watermark = p.high_watermark();
                        pd.last_stable_offset = p.last_stable_offset();
                        pd.log_start_offset = p.log_start();
                        pd.records = Some(Bytes::new());
                    }
                    Err(e) => {
                        pd.error_code = e.kafka_code();
                        pd.high_watermark = p.high_watermark();
                        pd.last_stable_offset = p.last_stable_offset();
                        pd.log_start_offset = p.log_start();
                        errors = true;
                        tracing::debug!(topic = %p.topic, partition = p.index, error = %e, "fetch error");
                    }
                }
            }
        }
        resp.responses[w.topic].partitions.push(pd);
    }
    (resp, total, errors)
}
