//! Tributary's broker: a single-node server speaking the Kafka wire protocol over a durable,
//! segmented log.
//!
//! Where things go: `server` accepts connections → `connection` frames requests and keeps
//! responses in order → `handlers` has one module per Kafka API → `topics` (registry, metadata)
//! and `log` (partitions, segments, batches) hold the data. `config` and `topic_config` are the
//! settings; `metrics` and `http` serve Prometheus metrics and the health endpoint.

pub mod config;
pub mod fsutil;
pub mod log;
pub mod topic_config;
pub mod topics;
