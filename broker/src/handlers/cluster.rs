//! DescribeCluster and DescribeTopicPartitions (the paginated topic description of KIP-966).

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeTopicPartitionsRequest,
    DescribeTopicPartitionsResponse,
};

use super::{sb, topic_name};
use crate::broker::Broker;

pub fn describe_cluster(b: &Arc<Broker>, _req: DescribeClusterRequest) -> DescribeClusterResponse {
    let (host, port) = b.config.advertised_host_port();
    let mut r = DescribeClusterResponse::default();
    r.cluster_id = sb(b.topics.cluster_id());
    r.controller_id = BrokerId(b.config.node_id);
    r.cluster_authorized_operations = i32::MIN;
    r.endpoint_type = 1;
    let mut broker = DescribeClusterBroker::default();
    broker.broker_id = BrokerId(b.config.node_id);
    broker.host = sb(host);
    broker.port = port;
    r.brokers = vec![broker];
    r
}

pub fn describe_topic_partitions(
    b: &Arc<Broker>,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let node = BrokerId(b.config.node_id);
    let mut resp = DescribeTopicPartitionsResponse::default();
    let names: Vec<String> = if req.topics.is_empty() {
        b.topics.list().iter().map(|t| t.name.to_string()).collect()
    } else {
        let mut v: Vec<String> = req.topics.iter().map(|t| t.name.0.to_string()).collect();
        v.sort();
        v
    };
    let limit = req.response_partition_limit.clamp(1, 2000) as usize;
    let (start_topic, start_partition) = req.cursor.as_ref().map_or((String::new(), 0), |c| {
        (c.topic_name.0.to_string(), c.partition_index)
    });
    let mut budget = limit;
    for name in names.into_iter().filter(|n| *n >= start_topic) {
        let mut t = DescribeTopicPartitionsResponseTopic::default();
        t.name = Some(topic_name(&name));
        t.topic_authorized_operations = i32::MIN;
        match b.topics.get(&name) {
            None => t.error_code = 3,
            Some(topic) => {
                t.topic_id = topic.id;
                t.is_internal = name.starts_with("__");
                let first = if name == start_topic {
                    start_partition
                } else {
                    0
                };
                for i in first..topic.partition_count() {
                    if budget == 0 {
                        let mut c = Cursor::default();
                        c.topic_name = topic_name(&name);
                        c.partition_index = i;
                        resp.next_cursor = Some(c);
                        break;
                    }
                    let mut p = DescribeTopicPartitionsResponsePartition::default();
                    p.partition_index = i;
                    p.leader_id = node;
                    p.replica_nodes = vec![node];
                    p.isr_nodes = vec![node];
                    p.eligible_leader_replicas = Some(vec![]);
                    p.last_known_elr = Some(vec![]);
                    t.partitions.push(p);
                    budget -= 1;
                }
            }
        }
        resp.topics.push(t);
        if resp.next_cursor.is_some() {
            break;
        }
    }
    resp
}
