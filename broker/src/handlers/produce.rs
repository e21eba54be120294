//! Produce: appends each partition's batches in request order while the connection's next
//! request waits, then (acks 1/all) answers once every append is visible under the topic's flush
//! policy, or ResponseError::RequestTimedOut.code() after the request's timeout. acks=0 gets no response.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};

use super::{sb, Reply};
use crate::broker::Broker;
use crate::log::batch;
use crate::log::partition::{AppendError, Appended, Partition};
use crate::mirror_topic;
use crate::txn::{Caller, INVALID_PRODUCER_EPOCH};
use bytes::Bytes;
use kafka_protocol::error::ResponseError;

/// A partition waiting for its append to become visible before it is acknowledged.
struct Waiter {
    topic: usize,
    slot: usize,
    partition: Arc<Partition>,
    end_offset: i64,
}

pub fn handle(b: &Arc<Broker>, req: ProduceRequest) -> Reply {
    let acks = req.acks;
    let mut resp = ProduceResponse::default();
    let mut waiters = Vec::new();
    let txn_id = req.transactional_id.as_ref().map(|s| s.to_string());
    for (ti, topic) in req.topic_data.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        let found = b.resolve(&name, topic.topic_id);
        let mut tr = TopicProduceResponse::default();
        tr.name = topic.name.clone();
        tr.topic_id = topic.topic_id;
        for (slot, pd) in topic.partition_data.into_iter().enumerate() {
            let mut pr = PartitionProduceResponse::default();
            pr.index = pd.index;
            pr.base_offset = -1;
            pr.log_append_time_ms = -1;
            pr.log_start_offset = -1;
            let partition = found.as_ref().and_then(|t| t.partition(pd.index));
            let mark = mirror_topic::write_mark(&pd.unknown_tagged_fields).transpose();
            let allowed = mark.clone().and_then(|mark| {
                found
                    .as_ref()
                    .map_or(Ok(()), |t| mirror_topic::check_produce(t, mark.as_ref()))
            });
            let outcome = if !matches!(acks, -1..=1) {
                Err((
                    ResponseError::InvalidRequiredAcks.code(),
                    "acks must be -1, 0 or 1".to_string(),
                ))
            } else if let Err(e) = allowed {
                Err(e)
            } else if let Some(p) = partition {
                match pd.records {
                    None => Err((
                        ResponseError::CorruptMessage.code(),
                        "no records".to_string(),
                    )),
                    Some(records) => {
                        let len = records.len() as u64;
                        let appended = if let Ok(Some(m)) = &mark {
                            append_mirrored(b, &p, &records, m.expected_end)
                        } else {
                            append(b, txn_id.as_deref(), &p, &records)
                        };
                        match appended {
                            Ok(a) => {
                                b.metrics.produced(len);
                                pr.base_offset = a.base_offset;
                                pr.log_append_time_ms = a.log_append_time;
                                pr.log_start_offset = a.log_start;
                                waiters.push(Waiter {
                                    topic: ti,
                                    slot,
                                    partition: p,
                                    end_offset: a.end_offset,
                                });
                                Ok(())
                            }
                            Err((code, e)) => {
                                tracing::debug!(topic = %name, partition = pd.index, error = %e, "produce refused");
                                Err((code, format!("{e} (topic {name}, partition {})", pd.index)))
                            }
                        }
                    }
                }
            } else {
                let code = if name.is_empty() {
                    ResponseError::UnknownTopicId.code()
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                };
                Err((
                    code,
                    format!("unknown topic or partition {name}/{}", pd.index),
                ))
            };
            if let Err((code, msg)) = outcome {
                b.metrics.produce_error();
                pr.error_code = code;
                pr.error_message = Some(sb(msg));
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    if acks == 0 {
        return Reply::None;
    }
    if waiters
        .iter()
        .all(|w| w.partition.high_watermark() >= w.end_offset)
    {
        return Reply::Now(ResponseKind::Produce(resp));
    }
    let timeout = Duration::from_millis(req.timeout_ms.clamp(1, 300_000) as u64);
    Reply::Later(Box::pin(async move {
        for w in waiters {
            if !w.partition.wait_visible(w.end_offset, timeout).await {
                let pr = &mut resp.responses[w.topic].partition_responses[w.slot];
                pr.error_code = ResponseError::RequestTimedOut.code();
                pr.error_message = Some(sb("timed out waiting for the flush"));
            }
        }
        ResponseKind::Produce(resp)
    }))
}

/// Appends a mirror's batches at the source's offsets, keeping this broker's producer ids above
/// the mirrored ones.
fn append_mirrored(
    b: &Broker,
    p: &Partition,
    records: &Bytes,
    expected_end: i64,
) -> Result<Appended, (i16, String)> {
    let refuse = |e: AppendError| (e.kafka_code(), e.to_string());
    let headers = batch::validate_produce(records, u32::MAX).map_err(|e| refuse(e.into()))?;
    if let Some(max_pid) = headers
        .iter()
        .map(|h| h.producer_id)
        .max()
        .filter(|&p| p >= 0)
    {
        b.topics
            .observe_producer_id(max_pid)
            .map_err(|e| (e.kafka_code(), e.to_string()))?;
    }
    p.append_mirrored(records, &headers, expected_end)
        .map_err(refuse)
}

/// Appends one partition's batches. Transactional batches (which need the request's
/// transactional id, and it them) go through the transaction coordinator, which checks the
/// partition is in the producer's ongoing transaction.
fn append(
    b: &Broker,
    txn_id: Option<&str>,
    p: &Partition,
    records: &Bytes,
) -> Result<Appended, (i16, String)> {
    let refuse = |e: AppendError| (e.kafka_code(), e.to_string());
    let first = batch::BatchHeader::parse(records).map_err(|e| refuse(e.into()))?;
    let transactional = batch::all_transactional(records);
    match (txn_id, transactional) {
        (None, Some(false)) => p.append(records).map_err(refuse),
        (Some(id), Some(true)) => {
            let caller = Caller {
                producer_id: first.producer_id,
                epoch: first.producer_epoch,
                fenced_code: INVALID_PRODUCER_EPOCH,
            };
            b.txns
                .produce(id, caller, &p.topic, p.index, || p.append(records))
                .map_err(|e| (e.code, e.message))?
                .map_err(refuse)
        }
        (Some(_), _) => Err((
            ResponseError::InvalidRecord.code(),
            "a produce request with a transactional id must hold only transactional batches"
                .to_string(),
        )),
        (None, _) => Err((
            ResponseError::InvalidRecord.code(),
            "transactional batches need the request's transactional id".to_string(),
        )),
    }
}
