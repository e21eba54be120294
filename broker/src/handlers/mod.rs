//! Request dispatch: one module per Kafka API (or a small family of admin APIs), the table of
//! supported versions, and the `Reply` a handler gives back (now, later, or none for acks=0).

pub mod api_versions;
pub mod cluster;
pub mod configs;
pub mod consumer_group;
pub mod fetch;
pub mod groups;
pub mod list_offsets;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producer_id;
pub mod records_admin;
pub mod topics_admin;
pub mod txn;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;

/// What a handler answers. It lives only until the response is written; boxing the ready
/// response would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    /// The response is ready.
    Now(ResponseKind),
    /// The response comes when the future resolves (durability wait, fetch long-poll).
    Later(Pin<Box<dyn Future<Output = ResponseKind> + Send>>),
    /// No response at all (Produce with acks=0).
    None,
}

/// Why a request could not be dispatched; the connection is closed with a log line.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("api key {0} is not supported")]
    UnknownApi(i16),
    #[error("{api:?} v{version} is not supported (supported {min}..={max})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// Who sent a request (for group membership descriptions).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub client_id: String,
    /// `/ip` of the peer, as Kafka reports member hosts.
    pub client_host: String,
}

/// Decodes the body of a request and runs its handler.
pub fn dispatch(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    api: ApiKey,
    version: i16,
    mut body: Bytes,
) -> Result<Reply, DispatchError> {
    let Some((min, max)) = api_versions::BROKER.supported_range(api) else {
        return Err(DispatchError::UnknownApi(api as i16));
    };
    if version < min || version > max {
        return Err(DispatchError::UnsupportedVersion {
            api,
            version,
            min,
            max,
        });
    }
    let request =
        RequestKind::decode(api, &mut body, version).map_err(|e| DispatchError::Malformed {
            api,
            version,
            reason: e.to_string(),
        })?;
    let b = broker;
    Ok(match request {
        RequestKind::ApiVersions(_) => {
            Reply::Now(ResponseKind::ApiVersions(api_versions::BROKER.response()))
        }
        RequestKind::Metadata(r) => {
            Reply::Now(ResponseKind::Metadata(metadata::handle(b, version, r)))
        }
        RequestKind::Produce(r) => produce::handle(b, r),
        RequestKind::Fetch(r) => fetch::handle(b, version, r),
        RequestKind::ListOffsets(r) => Reply::Now(ResponseKind::ListOffsets(list_offsets::handle(
            b, version, r,
        ))),
        RequestKind::CreateTopics(r) => Reply::Now(ResponseKind::CreateTopics(
            topics_admin::create(b, version, r),
        )),
        RequestKind::DeleteTopics(r) => Reply::Now(ResponseKind::DeleteTopics(
            topics_admin::delete(b, version, r),
        )),
        RequestKind::CreatePartitions(r) => Reply::Now(ResponseKind::CreatePartitions(
            topics_admin::create_partitions(b, r),
        )),
        RequestKind::DescribeConfigs(r) => {
            Reply::Now(ResponseKind::DescribeConfigs(configs::describe(b, r)))
        }
        RequestKind::AlterConfigs(r) => {
            Reply::Now(ResponseKind::AlterConfigs(configs::alter(b, r)))
        }
        RequestKind::IncrementalAlterConfigs(r) => Reply::Now(
            ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(b, r)),
        ),
        RequestKind::DescribeCluster(r) => Reply::Now(ResponseKind::DescribeCluster(
            cluster::describe_cluster(b, r),
        )),
        RequestKind::DescribeTopicPartitions(r) => Reply::Now(
            ResponseKind::DescribeTopicPartitions(cluster::describe_topic_partitions(b, r)),
        ),
        RequestKind::DeleteRecords(r) => Reply::Now(ResponseKind::DeleteRecords(
            records_admin::delete_records(b, r),
        )),
        RequestKind::OffsetForLeaderEpoch(r) => Reply::Now(ResponseKind::OffsetForLeaderEpoch(
            records_admin::offset_for_leader_epoch(b, r),
        )),
        RequestKind::InitProducerId(r) => producer_id::handle(b, version, r),
        RequestKind::AddPartitionsToTxn(r) => txn::add_partitions(b, version, r),
        RequestKind::AddOffsetsToTxn(r) => txn::add_offsets(b, version, r),
        RequestKind::TxnOffsetCommit(r) => txn::txn_offset_commit(b, version, r),
        RequestKind::EndTxn(r) => txn::end_txn(b, version, r),
        RequestKind::DescribeTransactions(r) => Reply::Now(ResponseKind::DescribeTransactions(
            txn::describe_transactions(b, r),
        )),
        RequestKind::ListTransactions(r) => {
            Reply::Now(ResponseKind::ListTransactions(txn::list_transactions(b, r)))
        }
        RequestKind::DescribeProducers(r) => Reply::Now(ResponseKind::DescribeProducers(
            txn::describe_producers(b, r),
        )),
        RequestKind::FindCoordinator(r) => Reply::Now(ResponseKind::FindCoordinator(
            groups::find_coordinator(b, version, r),
        )),
        RequestKind::JoinGroup(r) => groups::join(b, ctx, version, r),
        RequestKind::SyncGroup(r) => groups::sync(b, r),
        RequestKind::Heartbeat(r) => Reply::Now(ResponseKind::Heartbeat(groups::heartbeat(b, r))),
        RequestKind::LeaveGroup(r) => {
            Reply::Now(ResponseKind::LeaveGroup(groups::leave(b, version, r)))
        }
        RequestKind::ListGroups(r) => Reply::Now(ResponseKind::ListGroups(groups::list(b, r))),
        RequestKind::DescribeGroups(r) => Reply::Now(ResponseKind::DescribeGroups(
            groups::describe(b, version, r),
        )),
        RequestKind::DeleteGroups(r) => groups::delete(b, r),
        RequestKind::OffsetCommit(r) => offsets::commit(b, r),
        RequestKind::OffsetFetch(r) => {
            Reply::Now(ResponseKind::OffsetFetch(offsets::fetch(b, version, r)))
        }
        RequestKind::OffsetDelete(r) => offsets::delete(b, r),
        RequestKind::ConsumerGroupHeartbeat(r) => Reply::Now(ResponseKind::ConsumerGroupHeartbeat(
            consumer_group::heartbeat(b, ctx, r),
        )),
        RequestKind::ConsumerGroupDescribe(r) => Reply::Now(ResponseKind::ConsumerGroupDescribe(
            consumer_group::describe(b, r),
        )),
        _ => return Err(DispatchError::UnknownApi(api as i16)),
    })
}

/// A protocol string from a Rust string.
pub fn sb(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A topic name for a response.
pub fn topic_name(s: &str) -> TopicName {
    TopicName(sb(s))
}
