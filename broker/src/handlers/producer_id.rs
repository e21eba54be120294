//! InitProducerId: hands out durable producer ids for idempotent producers (kafka-python 3 and
//! librdkafka with enable.idempotence ask for one). Sequence checking and transactions belong to
//! the exactly-once work and are not built yet: a transactional id is refused.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;
use kafka_protocol::error::ResponseError;

pub fn handle(b: &Arc<Broker>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default();
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    if req.transactional_id.is_some() {
        tracing::warn!(
            "refused InitProducerId with a transactional id: transactions are not built yet"
        );
        r.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return r;
    }
    match b.topics.allocate_producer_id() {
        Ok(id) => {
            r.producer_id = ProducerId(id);
            r.producer_epoch = 0;
        }
        Err(e) => r.error_code = e.kafka_code(),
    }
    r
}
