//! Per-topic configuration under Kafka's key names (`retention.ms`, `segment.bytes`, ...):
//! parsing and validating overrides, and listing every key with its value and source for
//! DescribeConfigs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// When a produce is acknowledged, and so what survives kill -9 or power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushPolicy {
    /// Acknowledge after the write reached the OS page cache (survives a process crash).
    Os,
    /// Acknowledge after fdatasync; concurrent producers share one fsync (group commit).
    Fsync,
}

/// Which timestamp a record keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The effective settings of one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub index_interval_bytes: u32,
    pub max_message_bytes: u32,
    pub timestamp_type: TimestampType,
    pub flush: FlushPolicy,
    pub flush_ms: Option<u64>,
    pub producer_id_expiration_ms: i64,
    /// The fields the broker indexes (`index.fields`); empty: none.
    pub index_fields: std::sync::Arc<crate::index::spec::IndexSpec>,
    /// Set on a mirror topic (`mirror.source.cluster`, `mirror.source.topic`): the topic is
    /// written only by the mirror, at the source's offsets, until promoted (docs/mirror.md).
    pub mirror: Option<MirrorSource>,
}

/// Where a mirror topic's records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSource {
    /// The source cluster's id (Metadata `cluster_id`).
    pub cluster: String,
    /// The topic's name at the source.
    pub topic: String,
}

/// The topic config keys that make a topic a mirror topic.
pub const MIRROR_CLUSTER_KEY: &str = "mirror.source.cluster";
pub const MIRROR_TOPIC_KEY: &str = "mirror.source.topic";

/// A topic config override that is unknown or has a bad value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TopicConfigError {
    #[error("unknown topic config `{0}`")]
    Unknown(String),
    #[error("invalid value `{value}` for topic config `{key}`: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

/// Kafka's config value types (DescribeConfigs `config_type`).
#[derive(Debug, Clone, Copy)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    List = 7,
}

/// One row of DescribeConfigs.
#[derive(Debug, Clone)]
pub struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    /// true when the topic sets it itself (DYNAMIC_TOPIC_CONFIG), false for the broker default.
    pub overridden: bool,
    pub config_type: ConfigType,
    pub read_only: bool,
    pub doc: &'static str,
}

struct Key {
    name: &'static str,
    config_type: ConfigType,
    read_only: bool,
    doc: &'static str,
}

const KEYS: &[Key] = &[
    Key {
        name: "cleanup.policy",
        config_type: ConfigType::List,
        read_only: false,
        doc: "delete: old segments are removed by retention (compact is not built yet)",
    },
    Key {
        name: "compression.type",
        config_type: ConfigType::String,
        read_only: false,
        doc: "producer: batches are stored as the producer compressed them",
    },
    Key {
        name: "retention.ms",
        config_type: ConfigType::Long,
        read_only: false,
        doc: "delete segments whose newest record is older than this; -1 keeps forever",
    },
    Key {
        name: "retention.bytes",
        config_type: ConfigType::Long,
        read_only: false,
        doc: "delete oldest segments while the partition is larger; -1 unbounded",
    },
    Key {
        name: "segment.bytes",
        config_type: ConfigType::Int,
        read_only: false,
        doc: "roll a new segment after this many bytes",
    },
    Key {
        name: "segment.ms",
        config_type: ConfigType::Long,
        read_only: false,
        doc: "roll a new segment after this many milliseconds",
    },
    Key {
        name: "index.interval.bytes",
        config_type: ConfigType::Int,
        read_only: false,
        doc: "bytes between two sparse offset/time index entries",
    },
    Key {
        name: "max.message.bytes",
        config_type: ConfigType::Int,
        read_only: false,
        doc: "largest record batch accepted",
    },
    Key {
        name: "message.timestamp.type",
        config_type: ConfigType::String,
        read_only: false,
        doc: "CreateTime or LogAppendTime",
    },
    Key {
        name: "flush.messages",
        config_type: ConfigType::Long,
        read_only: false,
        doc: "1: acknowledge only after fsync (group commit); any other value: after the OS write",
    },
    Key {
        name: "flush.ms",
        config_type: ConfigType::Long,
        read_only: false,
        doc: "background fsync interval; 9223372036854775807 disables it",
    },
    Key {
        name: "producer.id.expiration.ms",
        config_type: ConfigType::Long,
        read_only: false,
        doc: "forget an idempotent producer's state after this long without writes",
    },
    Key {
        name: "index.fields",
        config_type: ConfigType::List,
        read_only: false,
        doc: "fields to index, comma separated name=source; source: key, header:<name> or value:<json path> (docs/index.md)",
    },
    Key {
        name: MIRROR_CLUSTER_KEY,
        config_type: ConfigType::String,
        read_only: false,
        doc: "set on a mirror topic: the source cluster id; the topic is read-only to producers until this is removed (trib mirror failover)",
    },
    Key {
        name: MIRROR_TOPIC_KEY,
        config_type: ConfigType::String,
        read_only: false,
        doc: "set on a mirror topic: the topic's name at the source cluster",
    },
    Key {
        name: "min.insync.replicas",
        config_type: ConfigType::Int,
        read_only: true,
        doc: "single-node broker: always 1",
    },
    Key {
        name: "unclean.leader.election.enable",
        config_type: ConfigType::Boolean,
        read_only: true,
        doc: "single-node broker: always false",
    },
];

impl TopicConfig {
    /// Applies `overrides` (Kafka key → value) on top of `self`, rejecting unknown keys and bad values.
    pub fn with_overrides(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, TopicConfigError> {
        let mut c = self.clone();
        for (k, v) in overrides {
            c.set(k, v)?;
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), TopicConfigError> {
        let bad = |key: &str, value: String, reason: &str| {
            Err(TopicConfigError::Invalid {
                key: key.into(),
                value,
                reason: reason.into(),
            })
        };
        if self.segment_bytes < 1024 || self.segment_bytes > i32::MAX as u64 {
            return bad(
                "segment.bytes",
                self.segment_bytes.to_string(),
                "must be between 1024 and 2147483647",
            );
        }
        if self.segment_ms < 1 {
            return bad(
                "segment.ms",
                self.segment_ms.to_string(),
                "must be at least 1",
            );
        }
        if self.max_message_bytes < 64 {
            return bad(
                "max.message.bytes",
                self.max_message_bytes.to_string(),
                "must be at least 64",
            );
        }
        if self.retention_ms < -1 {
            return bad(
                "retention.ms",
                self.retention_ms.to_string(),
                "must be -1 or more",
            );
        }
        if self.retention_bytes < -1 {
            return bad(
                "retention.bytes",
                self.retention_bytes.to_string(),
                "must be -1 or more",
            );
        }
        if let Some(m) = &self.mirror {
            if m.cluster.is_empty() {
                return bad(
                    MIRROR_CLUSTER_KEY,
                    String::new(),
                    "a mirror topic needs the source cluster id",
                );
            }
        }
        Ok(())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), TopicConfigError> {
        let invalid = |reason: &str| TopicConfigError::Invalid {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let long = || {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| invalid("not a whole number"))
        };
        match key {
            "cleanup.policy" => match value.trim() {
                "delete" => {}
                _ => {
                    return Err(invalid(
                        "only `delete` is supported; log compaction is not built yet",
                    ))
                }
            },
            "compression.type" => match value.trim() {
                "producer" => {}
                _ => {
                    return Err(invalid(
                        "only `producer` is supported: batches are stored as produced",
                    ))
                }
            },
            "retention.ms" => self.retention_ms = long()?,
            "retention.bytes" => self.retention_bytes = long()?,
            "segment.bytes" => {
                self.segment_bytes =
                    u64::try_from(long()?).map_err(|_| invalid("must be positive"))?
            }
            "segment.ms" => self.segment_ms = long()?,
            "index.interval.bytes" => {
                self.index_interval_bytes =
                    u32::try_from(long()?).map_err(|_| invalid("must be 0 to 4294967295"))?
            }
            "max.message.bytes" => {
                self.max_message_bytes =
                    u32::try_from(long()?).map_err(|_| invalid("must be 0 to 4294967295"))?
            }
            "message.timestamp.type" => {
                self.timestamp_type = match value.trim() {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(invalid("must be CreateTime or LogAppendTime")),
                }
            }
            "flush.messages" => {
                self.flush = if long()? == 1 {
                    FlushPolicy::Fsync
                } else {
                    FlushPolicy::Os
                };
            }
            "flush.ms" => {
                let v = long()?;
                self.flush_ms = match v {
                    i64::MAX => None,
                    v if v >= 1 => Some(v as u64),
                    _ => return Err(invalid("must be at least 1")),
                };
            }
            "producer.id.expiration.ms" => {
                self.producer_id_expiration_ms = long()?;
                if self.producer_id_expiration_ms < 1 {
                    return Err(invalid("must be at least 1"));
                }
            }
            "min.insync.replicas" => {
                if long()? != 1 {
                    return Err(invalid(
                        "a single-node broker has one replica: only 1 is possible",
                    ));
                }
            }
            "index.fields" => {
                self.index_fields = std::sync::Arc::new(
                    crate::index::spec::IndexSpec::parse(value).map_err(|e| invalid(&e))?,
                )
            }
            "unclean.leader.election.enable" => {}
            MIRROR_CLUSTER_KEY => {
                self.mirror
                    .get_or_insert_with(|| MirrorSource {
                        cluster: String::new(),
                        topic: String::new(),
                    })
                    .cluster = value.trim().to_string()
            }
            MIRROR_TOPIC_KEY => {
                self.mirror
                    .get_or_insert_with(|| MirrorSource {
                        cluster: String::new(),
                        topic: String::new(),
                    })
                    .topic = value.trim().to_string()
            }
            _ => return Err(TopicConfigError::Unknown(key.to_string())),
        }
        Ok(())
    }

    /// Every supported key with its effective value; `overrides` marks which the topic sets itself.
    pub fn describe(&self, overrides: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
        KEYS.iter()
            .map(|k| ConfigEntry {
                name: k.name,
                value: self.value_of(k.name),
                overridden: overrides.contains_key(k.name),
                config_type: k.config_type,
                read_only: k.read_only,
                doc: k.doc,
            })
            .collect()
    }

    fn value_of(&self, key: &str) -> String {
        match key {
            "cleanup.policy" => "delete".into(),
            "compression.type" => "producer".into(),
            "retention.ms" => self.retention_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.type" => match self.timestamp_type {
                TimestampType::CreateTime => "CreateTime".into(),
                TimestampType::LogAppendTime => "LogAppendTime".into(),
            },
            "flush.messages" => match self.flush {
                FlushPolicy::Fsync => "1".into(),
                FlushPolicy::Os => i64::MAX.to_string(),
            },
            "flush.ms" => self.flush_ms.map_or(i64::MAX, |v| v as i64).to_string(),
            "producer.id.expiration.ms" => self.producer_id_expiration_ms.to_string(),
            "index.fields" => self.index_fields.to_string(),
            "min.insync.replicas" => "1".into(),
            "unclean.leader.election.enable" => "false".into(),
            MIRROR_CLUSTER_KEY => self
                .mirror
                .as_ref()
                .map_or(String::new(), |m| m.cluster.clone()),
            MIRROR_TOPIC_KEY => self
                .mirror
                .as_ref()
                .map_or(String::new(), |m| m.topic.clone()),
            _ => String::new(),
        }
    }

    /// Whether `key` names a topic config this broker knows.
    pub fn is_known(key: &str) -> bool {
        KEYS.iter().any(|k| k.name == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_apply_and_describe_marks_them() {
        let base = BrokerConfig::default().topic_defaults();
        let o = map(&[
            ("retention.ms", "5000"),
            ("flush.messages", "1"),
            ("message.timestamp.type", "LogAppendTime"),
        ]);
        let c = base.with_overrides(&o).unwrap();
        assert_eq!(c.retention_ms, 5000);
        assert_eq!(c.flush, FlushPolicy::Fsync);
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);
        let d = c.describe(&o);
        let r = d.iter().find(|e| e.name == "retention.ms").unwrap();
        assert!(r.overridden);
        assert_eq!(r.value, "5000");
        assert!(
            !d.iter()
                .find(|e| e.name == "segment.bytes")
                .unwrap()
                .overridden
        );
    }

    #[test]
    fn bad_overrides_name_key_and_value() {
        let base = BrokerConfig::default().topic_defaults();
        let e = base
            .with_overrides(&map(&[("retention.mss", "1")]))
            .unwrap_err();
        assert!(e.to_string().contains("retention.mss"));
        let e = base
            .with_overrides(&map(&[("segment.bytes", "abc")]))
            .unwrap_err();
        assert!(e.to_string().contains("segment.bytes") && e.to_string().contains("abc"));
        let e = base
            .with_overrides(&map(&[("cleanup.policy", "compact")]))
            .unwrap_err();
        assert!(e.to_string().contains("compaction is not built"));
        assert!(base
            .with_overrides(&map(&[("segment.bytes", "10")]))
            .is_err());
    }
}
