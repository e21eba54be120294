//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (dynamic, stored in the
//! registry) and the broker (static: read from the config file, reported read-only).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::sb;
use crate::broker::Broker;
use crate::topic_config::{ConfigType, TopicConfig};
use crate::topics::TopicError;
use kafka_protocol::error::ResponseError;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

struct Row {
    name: String,
    value: String,
    source: i8,
    read_only: bool,
    config_type: i8,
    doc: String,
    default: Option<String>,
}

pub fn describe(b: &Arc<Broker>, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut resp = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let rows = match res.resource_type {
            TOPIC => topic_rows(b, &res.resource_name),
            BROKER => Ok(broker_rows(b)),
            other => Err((
                ResponseError::InvalidRequest.code(),
                format!("resource type {other} is not supported"),
            )),
        };
        match rows {
            Ok(rows) => {
                let keys: Option<Vec<String>> = res
                    .configuration_keys
                    .as_ref()
                    .map(|ks| ks.iter().map(|k| k.to_string()).collect());
                out.configs = rows
                    .into_iter()
                    .filter(|r| keys.as_ref().is_none_or(|ks| ks.contains(&r.name)))
                    .map(|r| to_result(r, req.include_synonyms, req.include_documentation))
                    .collect();
            }
            Err((code, msg)) => {
                out.error_code = code;
                out.error_message = Some(sb(msg));
            }
        }
        resp.results.push(out);
    }
    resp
}

fn to_result(r: Row, synonyms: bool, docs: bool) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default();
    c.name = sb(r.name.clone());
    c.value = Some(sb(r.value.clone()));
    c.read_only = r.read_only;
    c.config_source = r.source;
    c.config_type = r.config_type;
    if docs {
        c.documentation = Some(sb(r.doc));
    }
    if synonyms {
        let mut own = DescribeConfigsSynonym::default();
        own.name = sb(r.name.clone());
        own.value = Some(sb(r.value));
        own.source = r.source;
        c.synonyms.push(own);
        if let Some(d) = r.default {
            let mut def = DescribeConfigsSynonym::default();
            def.name = sb(r.name);
            def.value = Some(sb(d));
            def.source = SOURCE_DEFAULT;
            c.synonyms.push(def);
        }
    }
    c
}

fn topic_rows(b: &Broker, name: &str) -> Result<Vec<Row>, (i16, String)> {
    let t = b
        .topics
        .get(name)
        .ok_or_else(|| (3, format!("topic '{name}' does not exist")))?;
    let overrides = t.overrides();
    let defaults: BTreeMap<&str, String> = b
        .topics
        .defaults()
        .describe(&BTreeMap::new())
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    Ok(t.config()
        .describe(&overrides)
        .into_iter()
        .map(|e| Row {
            name: e.name.to_string(),
            default: e
                .overridden
                .then(|| defaults.get(e.name).cloned())
                .flatten(),
            value: e.value,
            source: if e.overridden {
                SOURCE_DYNAMIC_TOPIC
            } else {
                SOURCE_DEFAULT
            },
            read_only: e.read_only,
            config_type: e.config_type as i8,
            doc: e.doc.to_string(),
        })
        .collect())
}

/// The broker config row a mirror reads to choose offset-preserving mode.
pub const MIRROR_WRITES_KEY: &str = "tributary.mirror.writes";

fn broker_rows(b: &Broker) -> Vec<Row> {
    let c = &b.config;
    let d = &c.log;
    let fsync = d.flush == crate::topic_config::FlushPolicy::Fsync;
    let table: [(&str, String, ConfigType, &str); 12] = [
        (
            MIRROR_WRITES_KEY,
            c.mirror_writes.to_string(),
            ConfigType::Boolean,
            "accepts mirror topics written at the source's offsets (trib mirror)",
        ),
        (
            "broker.id",
            c.node_id.to_string(),
            ConfigType::Int,
            "node id",
        ),
        (
            "log.dirs",
            c.data_dir.display().to_string(),
            ConfigType::String,
            "data folder",
        ),
        (
            "num.partitions",
            c.num_partitions.to_string(),
            ConfigType::Int,
            "partitions of auto-created topics",
        ),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            ConfigType::Boolean,
            "auto-create topics",
        ),
        (
            "socket.request.max.bytes",
            c.max_request_bytes.to_string(),
            ConfigType::Int,
            "largest request",
        ),
        (
            "log.segment.bytes",
            d.segment_bytes.to_string(),
            ConfigType::Int,
            "segment size",
        ),
        (
            "log.roll.ms",
            d.segment_ms.to_string(),
            ConfigType::Long,
            "segment age",
        ),
        (
            "log.retention.ms",
            d.retention_ms.to_string(),
            ConfigType::Long,
            "retention by time",
        ),
        (
            "log.retention.bytes",
            d.retention_bytes.to_string(),
            ConfigType::Long,
            "retention by size",
        ),
        (
            "message.max.bytes",
            d.max_message_bytes.to_string(),
            ConfigType::Int,
            "largest batch",
        ),
        (
            "log.flush.interval.messages",
            if fsync {
                "1".into()
            } else {
                i64::MAX.to_string()
            },
            ConfigType::Long,
            "1: fsync before acknowledging",
        ),
    ];
    table
        .into_iter()
        .map(|(name, value, t, doc)| Row {
            name: name.to_string(),
            value,
            source: SOURCE_STATIC_BROKER,
            read_only: true,
            config_type: t as i8,
            doc: doc.to_string(),
            default: None,
        })
        .collect()
}

/// The refusal for altering anything but a topic: broker configs are static here.
fn refuse_non_topic(b: &Broker, resource_type: i8, name: &str) -> (i16, String) {
    match resource_type {
        BROKER if name.is_empty() || name == b.config.node_id.to_string() => (
            ResponseError::InvalidConfig.code(),
            "broker configs are static: change the broker config file and restart".to_string(),
        ),
        BROKER => (
            ResponseError::InvalidRequest.code(),
            format!("unknown broker {name}"),
        ),
        other => (
            ResponseError::InvalidRequest.code(),
            format!("resource type {other} is not supported"),
        ),
    }
}

fn topic_error(e: TopicError) -> (i16, String) {
    (e.kafka_code(), e.to_string())
}

/// Replaces a topic's overrides after the mirror-topic rules allow it; promotes a mirror topic
/// whose `mirror.source.cluster` went away.
fn set_topic_configs(
    b: &Broker,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let existing = b.topics.get(name);
    crate::mirror_topic::check_configs(b, existing.as_deref(), &configs)?;
    let was_mirror = existing
        .as_ref()
        .is_some_and(|t| t.config().mirror.is_some());
    b.topics
        .set_configs(name, configs, validate_only)
        .map_err(topic_error)?;
    if let (Some(t), false) = (existing, validate_only) {
        crate::mirror_topic::after_configs_changed(b, &t, was_mirror);
    }
    Ok(())
}

pub fn alter(b: &Arc<Broker>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut resp = AlterConfigsResponse::default();
    for res in req.resources {
        let mut r = AlterConfigsResourceResponse::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let result = match res.resource_type {
            TOPIC => {
                let configs: BTreeMap<String, String> = res
                    .configs
                    .iter()
                    .filter_map(|c| {
                        c.value
                            .as_ref()
                            .map(|v| (c.name.to_string(), v.to_string()))
                    })
                    .collect();
                set_topic_configs(b, &res.resource_name, configs, req.validate_only)
            }
            other => Err(refuse_non_topic(b, other, &res.resource_name)),
        };
        if let Err((code, msg)) = result {
            r.error_code = code;
            r.error_message = Some(sb(msg));
        }
        resp.responses.push(r);
    }
    resp
}

pub fn incremental_alter(
    b: &Arc<Broker>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut resp = IncrementalAlterConfigsResponse::default();
    for res in req.resources {
        let mut r = IncrementalResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let result = match res.resource_type {
            TOPIC => match b.topics.get(&res.resource_name) {
                None => Err((3, format!("topic '{}' does not exist", &*res.resource_name))),
                Some(t) => {
                    let mut overrides = t.overrides();
                    let ops: Vec<(StrBytes, i8, Option<StrBytes>)> = res
                        .configs
                        .iter()
                        .map(|c| (c.name.clone(), c.config_operation, c.value.clone()))
                        .collect();
                    apply_ops(&mut overrides, &ops).and_then(|()| {
                        set_topic_configs(b, &res.resource_name, overrides, req.validate_only)
                    })
                }
            },
            other => Err(refuse_non_topic(b, other, &res.resource_name)),
        };
        if let Err((code, msg)) = result {
            r.error_code = code;
            r.error_message = Some(sb(msg));
        }
        resp.responses.push(r);
    }
    resp
}

/// Applies SET (0), DELETE (1), APPEND (2) and SUBTRACT (3) to a topic's overrides.
fn apply_ops(
    overrides: &mut BTreeMap<String, String>,
    ops: &[(StrBytes, i8, Option<StrBytes>)],
) -> Result<(), (i16, String)> {
    for (name, op, value) in ops {
        let name = name.to_string();
        if !TopicConfig::is_known(&name) {
            return Err((
                ResponseError::InvalidConfig.code(),
                format!("unknown topic config `{name}`"),
            ));
        }
        match op {
            0 => {
                let v = value.as_ref().ok_or((
                    ResponseError::InvalidRequest.code(),
                    format!("SET of `{name}` needs a value"),
                ))?;
                overrides.insert(name, v.to_string());
            }
            1 => {
                overrides.remove(&name);
            }
            2 | 3 => {
                return Err((
                    ResponseError::InvalidConfig.code(),
                    format!("`{name}` is not a list config this broker can append to"),
                ));
            }
            other => {
                return Err((
                    ResponseError::InvalidRequest.code(),
                    format!("unknown config operation {other}"),
                ))
            }
        }
    }
    Ok(())
}
