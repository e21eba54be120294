//! OffsetCommit, OffsetFetch (single- and multi-group forms) and OffsetDelete.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;

use super::{sb, topic_name, Reply};
use crate::broker::Broker;
use crate::group::{Committed, OffsetToCommit};

pub fn commit(b: &Arc<Broker>, req: OffsetCommitRequest) -> Reply {
    let b = b.clone();
    Reply::Later(Box::pin(async move {
        let mut offsets = Vec::new();
        for t in &req.topics {
            for p in &t.partitions {
                offsets.push(OffsetToCommit {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                });
            }
        }
        let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
        let codes = b
            .groups
            .commit(
                &b.topics,
                &req.group_id,
                req.generation_id_or_member_epoch,
                &req.member_id,
                instance.as_deref(),
                offsets,
                None,
            )
            .await;
        let mut codes = codes.into_iter();
        let mut r = OffsetCommitResponse::default();
        for t in req.topics {
            let mut tr = OffsetCommitResponseTopic::default();
            tr.name = t.name.clone();
            for p in t.partitions {
                let mut pr = OffsetCommitResponsePartition::default();
                pr.partition_index = p.partition_index;
                pr.error_code = codes.next().unwrap_or(0);
                tr.partitions.push(pr);
            }
            r.topics.push(tr);
        }
        ResponseKind::OffsetCommit(r)
    }))
}

/// Kafka's UNSTABLE_OFFSET_COMMIT: an offset committed in a transaction still in progress.
const UNSTABLE_OFFSET_COMMIT: i16 = 88;

/// The partitions to answer UNSTABLE_OFFSET_COMMIT (only when the client asked for stable ones).
fn unstable_set(
    b: &Arc<Broker>,
    group: &str,
    require_stable: bool,
) -> std::collections::HashSet<(String, i32)> {
    if require_stable {
        b.groups.unstable(group)
    } else {
        Default::default()
    }
}

fn committed_fields(
    c: &Option<Committed>,
) -> (i64, i32, Option<kafka_protocol::protocol::StrBytes>) {
    match c {
        Some(c) => (
            c.offset,
            c.leader_epoch,
            Some(sb(c.metadata.clone().unwrap_or_default())),
        ),
        None => (-1, -1, Some(sb(""))),
    }
}

/// Groups the flat (topic, partition, committed) list by topic, keeping order.
/// One topic's committed offsets: (partition, committed).
type TopicOffsets = (String, Vec<(i32, Option<Committed>)>);

fn by_topic(rows: Vec<(String, i32, Option<Committed>)>) -> Vec<TopicOffsets> {
    let mut out: Vec<TopicOffsets> = Vec::new();
    for (t, p, c) in rows {
        match out.last_mut() {
            Some((name, ps)) if *name == t => ps.push((p, c)),
            _ => out.push((t, vec![(p, c)])),
        }
    }
    out
}

pub fn fetch(b: &Arc<Broker>, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let mut r = OffsetFetchResponse::default();
    if version >= 8 {
        for g in req.groups {
            let wanted: Option<Vec<(String, Vec<i32>)>> = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let rows = b.groups.fetch_offsets(&g.group_id, wanted.as_deref());
            let unstable = unstable_set(b, &g.group_id, req.require_stable);
            let mut gr = OffsetFetchResponseGroup::default();
            gr.group_id = g.group_id.clone();
            gr.topics = by_topic(rows)
                .into_iter()
                .map(|(t, ps)| {
                    let mut tr = OffsetFetchResponseTopics::default();
                    tr.name = topic_name(&t);
                    tr.partitions = ps
                        .into_iter()
                        .map(|(p, c)| {
                            let unstable = unstable.contains(&(t.clone(), p));
                            let (offset, epoch, meta) = committed_fields(&c.filter(|_| !unstable));
                            let mut pr = OffsetFetchResponsePartitions::default();
                            pr.partition_index = p;
                            pr.committed_offset = offset;
                            pr.committed_leader_epoch = epoch;
                            pr.metadata = meta;
                            if unstable {
                                pr.error_code = UNSTABLE_OFFSET_COMMIT;
                            }
                            pr
                        })
                        .collect();
                    tr
                })
                .collect();
            r.groups.push(gr);
        }
        return r;
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let rows = b.groups.fetch_offsets(&req.group_id, wanted.as_deref());
    let unstable = unstable_set(b, &req.group_id, req.require_stable);
    r.topics = by_topic(rows)
        .into_iter()
        .map(|(t, ps)| {
            let mut tr = OffsetFetchResponseTopic::default();
            tr.name = topic_name(&t);
            tr.partitions = ps
                .into_iter()
                .map(|(p, c)| {
                    let unstable = unstable.contains(&(t.clone(), p));
                    let (offset, epoch, meta) = committed_fields(&c.filter(|_| !unstable));
                    let mut pr = OffsetFetchResponsePartition::default();
                    pr.partition_index = p;
                    pr.committed_offset = offset;
                    pr.committed_leader_epoch = epoch;
                    pr.metadata = meta;
                    if unstable {
                        pr.error_code = UNSTABLE_OFFSET_COMMIT;
                    }
                    pr
                })
                .collect();
            tr
        })
        .collect();
    r
}

pub fn delete(b: &Arc<Broker>, req: OffsetDeleteRequest) -> Reply {
    let b = b.clone();
    Reply::Later(Box::pin(async move {
        let parts: Vec<(String, i32)> = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.to_string(), p.partition_index))
            })
            .collect();
        let mut r = OffsetDeleteResponse::default();
        match b.groups.delete_offsets(&req.group_id, &parts).await {
            Err(code) => r.error_code = code,
            Ok(codes) => {
                let mut codes = codes.into_iter();
                for t in req.topics {
                    let mut tr = OffsetDeleteResponseTopic::default();
                    tr.name = t.name.clone();
                    for p in t.partitions {
                        let mut pr = OffsetDeleteResponsePartition::default();
                        pr.partition_index = p.partition_index;
                        pr.error_code = codes.next().unwrap_or(0);
                        tr.partitions.push(pr);
                    }
                    r.topics.push(tr);
                }
            }
        }
        ResponseKind::OffsetDelete(r)
    }))
}
