//! Tributary's broker: a single-node server speaking the Kafka wire protocol over a durable,
//! segmented log.
//!
//! Where things go: `server` accepts connections → `connection` frames requests (with `wire`) and keeps
//! responses in order → `handlers` has one module per Kafka API → `broker` is the shared state,
//! `topics` the registry and metadata, and `log` the partitions, segments and batches.
//! `config` and `topic_config` are the settings; `metrics` and `http` serve Prometheus metrics
//! and the health endpoint.

pub mod broker;
pub mod config;
pub mod connection;
pub mod fsutil;
pub mod group;
pub mod handlers;
pub mod http;
pub mod index;
pub mod keyed_log;
pub mod log;
pub mod metrics;
pub mod mirror_topic;
pub mod server;
pub mod topic_config;
pub mod topics;
pub mod txn;
pub mod wire;
pub mod wire_client;
