//! ListOffsets: earliest (-2, -4), latest (-1, -5; the last stable offset for read_committed),
//! max timestamp (-3) and by timestamp, the last found through each segment's time index and a
//! scan of only the batches after its entry.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::broker::Broker;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub fn handle(b: &Arc<Broker>, version: i16, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for t in req.topics {
        let topic = b.topics.get(&t.name.0);
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            if version >= 4 {
                pr.leader_epoch = 0;
            }
            match topic.as_ref().and_then(|t| t.partition(p.partition_index)) {
                None => pr.error_code = 3,
                Some(part) => {
                    let found = match p.timestamp {
                        LATEST | LATEST_TIERED if req.isolation_level == 1 => {
                            Ok(Some((part.last_stable_offset(), -1)))
                        }
                        LATEST | LATEST_TIERED => Ok(Some((part.high_watermark(), -1))),
                        EARLIEST | EARLIEST_LOCAL => Ok(Some((part.log_start(), -1))),
                        MAX_TIMESTAMP => part.max_timestamp(),
                        ts if ts >= 0 => part.offset_for_timestamp(ts),
                        _ => Ok(None),
                    };
                    match found {
                        Ok(Some((offset, ts))) => {
                            pr.offset = offset;
                            pr.timestamp = ts;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(topic = %part.topic, partition = part.index, error = %e, "offset lookup failed");
                            pr.error_code = e.kafka_code();
                        }
                    }
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
