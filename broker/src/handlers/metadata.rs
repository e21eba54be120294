//! Metadata: brokers, cluster id, topics with their partitions and ids; auto-creates topics a
//! client asks for when the broker allows it (Kafka's `auto.create.topics.enable`).

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};

use super::{sb, topic_name};
use crate::broker::Broker;
use crate::topics::Topic;

pub fn handle(b: &Arc<Broker>, version: i16, req: MetadataRequest) -> MetadataResponse {
    let node = BrokerId(b.config.node_id);
    let (host, port) = b.config.advertised_host_port();
    let mut r = single_node(node, &host, port, &b.topics.cluster_id());
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let all =
        req.topics.is_none() || (version == 0 && req.topics.as_ref().is_some_and(|t| t.is_empty()));
    let allow_create = version < 4 || req.allow_auto_topic_creation;
    if all {
        r.topics = b.topics.list().iter().map(|t| describe(b, t)).collect();
        return r;
    }
    for want in req.topics.unwrap_or_default() {
        let name = want
            .name
            .as_ref()
            .map(|n| n.0.to_string())
            .unwrap_or_default();
        let found = if name.is_empty() {
            b.resolve("", want.topic_id).ok_or(None)
        } else {
            b.topic_or_create(&name, allow_create).map_err(Some)
        };
        match found {
            Ok(t) => r.topics.push(describe(b, &t)),
            Err(err) => {
                let mut t = MetadataResponseTopic::default();
                t.name = if name.is_empty() {
                    None
                } else {
                    Some(topic_name(&name))
                };
                t.topic_id = want.topic_id;
                // UNKNOWN_TOPIC_ID for a lookup by id, else the registry's code.
                t.error_code = err.map_or(100, |e| e.kafka_code());
                t.topic_authorized_operations = i32::MIN;
                r.topics.push(t);
            }
        }
    }
    r
}

fn describe(b: &Broker, t: &Topic) -> MetadataResponseTopic {
    single_node_topic(
        &t.name,
        t.id,
        t.partition_count(),
        BrokerId(b.config.node_id),
    )
}

/// A topic whose partitions all lead on one node (this broker, or the agent's endpoint).
pub fn single_node_topic(
    name: &str,
    id: uuid::Uuid,
    partitions: i32,
    node: BrokerId,
) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(topic_name(name));
    out.topic_id = id;
    out.is_internal = name.starts_with("__");
    out.topic_authorized_operations = i32::MIN;
    out.partitions = (0..partitions)
        .map(|i| {
            let mut p = MetadataResponsePartition::default();
            p.partition_index = i;
            p.leader_id = node;
            p.leader_epoch = 0;
            p.replica_nodes = vec![node];
            p.isr_nodes = vec![node];
            p
        })
        .collect();
    out
}

/// The one-broker list and cluster fields of a single-node answer.
pub fn single_node(node: BrokerId, host: &str, port: i32, cluster_id: &str) -> MetadataResponse {
    let mut r = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = node;
    broker.host = sb(host.to_string());
    broker.port = port;
    r.brokers = vec![broker];
    r.cluster_id = Some(sb(cluster_id.to_string()));
    r.controller_id = node;
    r.cluster_authorized_operations = i32::MIN;
    r
}
