//! DeleteRecords (move a partition's log start) and OffsetForLeaderEpoch (single leader, epoch 0).

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};

use crate::broker::Broker;

pub fn delete_records(b: &Arc<Broker>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut resp = DeleteRecordsResponse::default();
    for t in req.topics {
        let topic = b.topics.get(&t.name.0);
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            pr.low_watermark = -1;
            match topic.as_ref().and_then(|t| t.partition(p.partition_index)) {
                None => pr.error_code = 3,
                Some(part) => match part.delete_records(p.offset) {
                    Ok(low) => pr.low_watermark = low,
                    Err(e) => pr.error_code = e.kafka_code(),
                },
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

pub fn offset_for_leader_epoch(
    b: &Arc<Broker>,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in req.topics {
        let topic = b.topics.get(&t.topic.0);
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        for p in t.partitions {
            let mut e = EpochEndOffset::default();
            e.partition = p.partition;
            e.leader_epoch = -1;
            e.end_offset = -1;
            match topic.as_ref().and_then(|t| t.partition(p.partition)) {
                None => e.error_code = 3,
                // The only leader epoch is 0: a client claiming a newer one is ahead of us.
                Some(_) if p.current_leader_epoch > 0 => e.error_code = 76, // UNKNOWN_LEADER_EPOCH
                Some(part) if p.leader_epoch >= 0 => {
                    // Every batch was written under epoch 0, so epoch 0 ends at the log end.
                    e.leader_epoch = 0;
                    e.end_offset = part.high_watermark();
                }
                Some(_) => {}
            }
            tr.partitions.push(e);
        }
        resp.topics.push(tr);
    }
    resp
}
