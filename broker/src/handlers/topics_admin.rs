//! CreateTopics, DeleteTopics and CreatePartitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse,
};

use super::{sb, topic_name};
use crate::broker::Broker;
use crate::topics::TopicError;
use kafka_protocol::error::ResponseError;

pub fn create(b: &Arc<Broker>, _version: i16, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut resp = CreateTopicsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        r.num_partitions = -1;
        r.replication_factor = -1;
        let configs: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let partitions = if t.num_partitions == -1 {
            b.config.num_partitions
        } else {
            t.num_partitions
        };
        let assigned_elsewhere = t
            .assignments
            .iter()
            .any(|a| a.broker_ids.iter().any(|id| id.0 != b.config.node_id));
        let result = if assigned_elsewhere {
            Err((
                ResponseError::InvalidReplicaAssignment.code(),
                format!(
                    "replicas may only be assigned to broker {}",
                    b.config.node_id
                ),
            ))
        } else if let Err(e) = crate::mirror_topic::check_configs(b, None, &configs) {
            Err(e)
        } else {
            let partitions = if t.assignments.is_empty() {
                partitions
            } else {
                t.assignments.len() as i32
            };
            b.topics
                .create(
                    &name,
                    partitions,
                    t.replication_factor,
                    configs.clone(),
                    req.validate_only,
                )
                .map(|(id, cfg)| (id, cfg, partitions))
                .map_err(|e| (e.kafka_code(), e.to_string()))
        };
        match result {
            Ok((id, cfg, partitions)) => {
                r.topic_id = id;
                r.num_partitions = partitions;
                r.replication_factor = 1;
                r.configs = Some(
                    cfg.describe(&configs)
                        .into_iter()
                        .map(|e| {
                            let mut c = CreatableTopicConfigs::default();
                            c.name = sb(e.name);
                            c.value = Some(sb(e.value));
                            c.read_only = e.read_only;
                            c.config_source = if e.overridden { 1 } else { 5 };
                            c
                        })
                        .collect(),
                );
            }
            Err((code, msg)) => {
                r.error_code = code;
                r.error_message = Some(sb(msg));
            }
        }
        resp.topics.push(r);
    }
    resp
}

pub fn delete(b: &Arc<Broker>, _version: i16, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut resp = DeleteTopicsResponse::default();
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
        .collect();
    targets.extend(
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    for (name, id) in targets {
        let mut r = DeletableTopicResult::default();
        r.topic_id = id;
        let resolved = match &name {
            Some(n) => Some(n.clone()),
            None => b.topics.get_by_id(id).map(|t| t.name.to_string()),
        };
        r.name = name.as_deref().or(resolved.as_deref()).map(topic_name);
        let result = match resolved {
            Some(n) => {
                let deleted = b.topics.delete(&n);
                b.index.forget(&n);
                deleted
            }
            None => Err(TopicError::Unknown(id.to_string())),
        };
        match result {
            Ok(id) => r.topic_id = id,
            Err(e) => {
                r.error_code = if name.is_none() { 100 } else { e.kafka_code() };
                r.error_message = Some(sb(e.to_string()));
            }
        }
        resp.responses.push(r);
    }
    resp
}

pub fn create_partitions(
    b: &Arc<Broker>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut resp = CreatePartitionsResponse::default();
    for t in req.topics {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        if let Err(e) = b
            .topics
            .add_partitions(&t.name.0, t.count, req.validate_only)
        {
            r.error_code = e.kafka_code();
            r.error_message = Some(sb(e.to_string()));
        }
        resp.results.push(r);
    }
    resp
}
