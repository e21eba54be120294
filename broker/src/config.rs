//! Broker configuration: the YAML file and flags of `trib broker`, with defaults and validation.
//!
//! Every field is documented here and in docs/broker-config.md; unknown keys are rejected so a
//! typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::topic_config::{FlushPolicy, TimestampType, TopicConfig};

/// Everything `trib broker` needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// This broker's id in Metadata and DescribeCluster responses.
    pub node_id: i32,
    /// Address the Kafka listener binds to.
    pub listen: SocketAddr,
    /// `host:port` given to clients in Metadata; defaults to `listen`.
    pub advertised: Option<String>,
    /// Address of the HTTP endpoint serving `/metrics` and `/health`; `None` disables it.
    pub http: Option<SocketAddr>,
    /// Folder holding topic metadata and partition logs.
    pub data_dir: PathBuf,
    /// Cluster id reported to clients; generated once and stored in the data folder when unset.
    pub cluster_id: Option<String>,
    /// Create a topic when a client asks for its metadata (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, and of CreateTopics asking for the default (`num.partitions`).
    pub num_partitions: i32,
    /// Largest request frame accepted, in bytes (`socket.request.max.bytes`); larger frames close the connection.
    pub max_request_bytes: usize,
    /// Most client connections served at once; further ones wait in the accept queue.
    pub max_connections: usize,
    /// Most requests read ahead on one connection while earlier responses are pending.
    pub max_inflight_per_connection: usize,
    /// How often retention runs, in milliseconds (`log.retention.check.interval.ms`).
    pub retention_check_interval_ms: u64,
    /// How long a new consumer group waits for more members before its first generation, in
    /// milliseconds (`group.initial.rebalance.delay.ms`; Kafka's default is 3000).
    pub group_initial_rebalance_delay_ms: u64,
    /// Smallest session timeout a group member may ask for (`group.min.session.timeout.ms`).
    pub group_min_session_timeout_ms: u64,
    /// Largest session timeout a group member may ask for (`group.max.session.timeout.ms`).
    pub group_max_session_timeout_ms: u64,
    /// KIP-848 consumer groups: a member silent this long is removed (`group.consumer.session.timeout.ms`).
    pub group_consumer_session_timeout_ms: u64,
    /// KIP-848 consumer groups: heartbeat interval handed to members (`group.consumer.heartbeat.interval.ms`).
    pub group_consumer_heartbeat_interval_ms: u64,
    /// Longest transaction timeout a producer may ask for (`transaction.max.timeout.ms`).
    pub transaction_max_timeout_ms: i32,
    /// A transactional id idle this long (no transaction in progress) is forgotten
    /// (`transactional.id.expiration.ms`).
    pub transactional_id_expiration_ms: i64,
    /// Accept mirror topics (`mirror.source.*` topic configs) and the mirror's writes at the
    /// source's offsets (`trib mirror` offset-preserving mode). Off, the broker looks like any
    /// other Kafka cluster to a mirror, which then translates offsets (docs/mirror.md).
    pub mirror_writes: bool,
    /// Defaults for every topic; a topic's own configs override them.
    pub log: LogDefaults,
}

/// Broker-wide defaults of the per-topic log settings (Kafka's `log.*` broker configs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogDefaults {
    /// Roll a new segment after this many bytes (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll a new segment after this many milliseconds (`segment.ms`).
    pub segment_ms: i64,
    /// Delete segments whose newest record is older than this; -1 keeps forever (`retention.ms`).
    pub retention_ms: i64,
    /// Delete oldest segments while the partition is larger than this; -1 is unbounded (`retention.bytes`).
    pub retention_bytes: i64,
    /// Bytes between two sparse index entries (`index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// Largest record batch accepted, in bytes (`max.message.bytes`).
    pub max_message_bytes: u32,
    /// `CreateTime` keeps the producer's timestamps, `LogAppendTime` stamps the broker's clock.
    pub message_timestamp_type: TimestampType,
    /// `os`: acknowledge once written to the OS; `fsync`: once on disk, many producers sharing one fsync.
    pub flush: FlushPolicy,
    /// Also fsync in the background at this interval in milliseconds (`flush.ms`); none when unset.
    pub flush_ms: Option<u64>,
    /// Forget an idempotent producer's state after this long without writes (`producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised: None,
            http: Some(SocketAddr::from(([127, 0, 0, 1], 9644))),
            data_dir: PathBuf::from("./data"),
            cluster_id: None,
            auto_create_topics: true,
            num_partitions: 1,
            max_request_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            max_inflight_per_connection: 64,
            retention_check_interval_ms: 60_000,
            group_initial_rebalance_delay_ms: 300,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            mirror_writes: true,
            log: LogDefaults::default(),
        }
    }
}

impl Default for LogDefaults {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1024 * 1024 + 12,
            message_timestamp_type: TimestampType::CreateTime,
            flush: FlushPolicy::Os,
            flush_ms: None,
            producer_id_expiration_ms: 24 * 3600 * 1000,
        }
    }
}

/// A configuration value that cannot work, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("invalid broker config `{field}`: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

impl BrokerConfig {
    /// Reads a YAML config file; errors name the file, line and field.
    pub fn from_yaml_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_yaml_ng::from_str(&text).map_err(|e| match e.location() {
            Some(loc) => format!("{}:{}:{}: {e}", path.display(), loc.line(), loc.column()),
            None => format!("{}: {e}", path.display()),
        })
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, reason: &str| {
            Err(ConfigError {
                field,
                reason: reason.to_string(),
            })
        };
        if self.num_partitions < 1 {
            return err("num_partitions", "must be at least 1");
        }
        if self.max_request_bytes < 1024 {
            return err("max_request_bytes", "must be at least 1024");
        }
        if self.max_connections == 0 {
            return err("max_connections", "must be at least 1");
        }
        if self.max_inflight_per_connection == 0 {
            return err("max_inflight_per_connection", "must be at least 1");
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return err(
                "group_min_session_timeout_ms",
                "must not exceed group_max_session_timeout_ms",
            );
        }
        if self.transaction_max_timeout_ms < 1 {
            return err("transaction_max_timeout_ms", "must be at least 1");
        }
        if self.transactional_id_expiration_ms < 1 {
            return err("transactional_id_expiration_ms", "must be at least 1");
        }
        if let Some(adv) = &self.advertised {
            if split_host_port(adv).is_none() {
                return err("advertised", "must be host:port");
            }
        }
        self.topic_defaults().validate().map_err(|e| ConfigError {
            field: "log",
            reason: e.to_string(),
        })
    }

    /// The advertised host and port handed to clients.
    pub fn advertised_host_port(&self) -> (String, i32) {
        self.advertised
            .as_deref()
            .and_then(split_host_port)
            .unwrap_or_else(|| (self.listen.ip().to_string(), i32::from(self.listen.port())))
    }

    /// The topic config every topic starts from.
    pub fn topic_defaults(&self) -> TopicConfig {
        let l = &self.log;
        TopicConfig {
            segment_bytes: l.segment_bytes,
            segment_ms: l.segment_ms,
            retention_ms: l.retention_ms,
            retention_bytes: l.retention_bytes,
            index_interval_bytes: l.index_interval_bytes,
            max_message_bytes: l.max_message_bytes,
            timestamp_type: l.message_timestamp_type,
            flush: l.flush,
            flush_ms: l.flush_ms,
            producer_id_expiration_ms: l.producer_id_expiration_ms,
            index_fields: Default::default(),
            mirror: None,
        }
    }
}

/// Splits `host:port`; `None` when the port is missing or invalid.
pub fn split_host_port(s: &str) -> Option<(String, i32)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host.is_empty() {
        return None;
    }
    Some((
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        i32::from(port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_rejected_with_location() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.yaml");
        std::fs::write(&p, "node_id: 3\nlisten: 127.0.0.1:9999\nnum_partiton: 4\n").unwrap();
        let e = BrokerConfig::from_yaml_file(&p).unwrap_err();
        assert!(e.contains("b.yaml:3"), "{e}");
        assert!(e.contains("num_partiton"), "{e}");
    }

    #[test]
    fn defaults_validate_and_file_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.yaml");
        std::fs::write(
            &p,
            "num_partitions: 6\nlog:\n  flush: fsync\n  retention_ms: 1000\n",
        )
        .unwrap();
        let c = BrokerConfig::from_yaml_file(&p).unwrap();
        c.validate().unwrap();
        assert_eq!(c.num_partitions, 6);
        assert_eq!(c.log.flush, FlushPolicy::Fsync);
        assert_eq!(c.log.retention_ms, 1000);
        assert_eq!(c.log.segment_bytes, 1 << 30);
    }

    #[test]
    fn bad_values_name_the_field() {
        let c = BrokerConfig {
            num_partitions: 0,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "num_partitions");
        let c = BrokerConfig {
            advertised: Some("nohost".into()),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "advertised");
    }
}
