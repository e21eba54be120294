//! InitProducerId: hands out durable producer ids. Without a transactional id (idempotent
//! producers: kafka-python 3 and librdkafka with enable.idempotence ask for one) a fresh id at
//! epoch 0; with one, the transaction coordinator's id for it at a new epoch, which fences older
//! producers of the same transactional id.

use std::sync::Arc;

use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, ResponseKind,
};

use super::Reply;
use crate::broker::Broker;

pub fn handle(b: &Arc<Broker>, version: i16, req: InitProducerIdRequest) -> Reply {
    let mut r = InitProducerIdResponse::default();
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    if let Some(id) = req.transactional_id {
        let b = b.clone();
        return Reply::Later(Box::pin(async move {
            match super::txn::init_transactional(
                &b,
                version,
                &id,
                req.transaction_timeout_ms,
                req.producer_id.0,
                req.producer_epoch,
            )
            .await
            {
                Ok((pid, epoch)) => {
                    r.producer_id = ProducerId(pid);
                    r.producer_epoch = epoch;
                }
                Err(code) => r.error_code = code,
            }
            ResponseKind::InitProducerId(r)
        }));
    }
    match b.topics.allocate_producer_id() {
        Ok(id) => {
            r.producer_id = ProducerId(id);
            r.producer_epoch = 0;
        }
        Err(e) => r.error_code = e.kafka_code(),
    }
    Reply::Now(ResponseKind::InitProducerId(r))
}
