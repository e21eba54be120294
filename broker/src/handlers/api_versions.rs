//! ApiVersions: a table of APIs and version ranges (the broker's here; the agent's produce
//! endpoint has its own), its answer, and the errored v0 reply for versions it does not know
//! (clients decode any errored ApiVersions reply as v0).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// APIs a server answers, each with the highest version it implements (the lowest is the
/// codec's, which matches Kafka 4.0's floors).
#[derive(Debug, Clone, Copy)]
pub struct VersionTable(pub &'static [(ApiKey, i16)]);

/// The broker's APIs.
pub const BROKER: VersionTable = VersionTable(&[
    (ApiKey::Produce, 13),
    (ApiKey::Fetch, 17),
    (ApiKey::ListOffsets, 10),
    (ApiKey::Metadata, 13),
    (ApiKey::ApiVersions, 4),
    (ApiKey::CreateTopics, 7),
    (ApiKey::DeleteTopics, 6),
    (ApiKey::DeleteRecords, 2),
    (ApiKey::InitProducerId, 5),
    // Transaction version 1 (no server-side partition adds, KIP-890 part 2): the client-facing
    // versions before it.
    (ApiKey::AddPartitionsToTxn, 3),
    (ApiKey::AddOffsetsToTxn, 3),
    (ApiKey::EndTxn, 4),
    (ApiKey::TxnOffsetCommit, 4),
    (ApiKey::DescribeProducers, 0),
    (ApiKey::DescribeTransactions, 0),
    (ApiKey::ListTransactions, 1),
    (ApiKey::OffsetForLeaderEpoch, 4),
    (ApiKey::DescribeConfigs, 4),
    (ApiKey::AlterConfigs, 2),
    (ApiKey::CreatePartitions, 3),
    (ApiKey::IncrementalAlterConfigs, 1),
    (ApiKey::DescribeCluster, 1),
    (ApiKey::DescribeTopicPartitions, 0),
    (ApiKey::FindCoordinator, 6),
    (ApiKey::JoinGroup, 9),
    (ApiKey::SyncGroup, 5),
    (ApiKey::Heartbeat, 4),
    (ApiKey::LeaveGroup, 5),
    (ApiKey::OffsetCommit, 9),
    (ApiKey::OffsetFetch, 9),
    (ApiKey::ListGroups, 5),
    (ApiKey::DescribeGroups, 5),
    (ApiKey::DeleteGroups, 2),
    (ApiKey::OffsetDelete, 0),
    (ApiKey::ConsumerGroupHeartbeat, 1),
    (ApiKey::ConsumerGroupDescribe, 1),
]);

impl VersionTable {
    /// The range advertised in ApiVersions. Produce is listed from v0 although v0-v2 requests
    /// are refused: librdkafka before 2.11.1 only compresses with gzip, snappy or lz4 when the
    /// broker lists Produce v0 (Kafka 4.0 does the same, KAFKA-18659).
    pub fn advertised_range(&self, api: ApiKey) -> Option<(i16, i16)> {
        let (min, max) = self.supported_range(api)?;
        Some(if api == ApiKey::Produce {
            (0, max)
        } else {
            (min, max)
        })
    }

    /// The (min, max) versions served for `api`, or `None` when the API is not served.
    pub fn supported_range(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.0.iter().find(|(k, _)| *k == api).map(|(k, max)| {
            let codec = k.valid_versions();
            (codec.min, (*max).min(codec.max))
        })
    }

    /// The normal ApiVersions answer.
    pub fn response(&self) -> ApiVersionsResponse {
        let mut r = ApiVersionsResponse::default();
        r.api_keys = self
            .0
            .iter()
            .filter_map(|(k, _)| {
                let (min, max) = self.advertised_range(*k)?;
                let mut v = ApiVersion::default();
                v.api_key = *k as i16;
                v.min_version = min;
                v.max_version = max;
                Some(v)
            })
            .collect();
        r
    }

    /// The answer to an ApiVersions request of a version this server does not know: error 35
    /// (UNSUPPORTED_VERSION), to be encoded as v0 with a v0 header.
    pub fn unsupported(&self) -> ApiVersionsResponse {
        let mut r = self.response();
        r.error_code = 35;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_respect_kafka_4_floors_and_client_needs() {
        assert_eq!(BROKER.supported_range(ApiKey::Produce), Some((3, 13)));
        assert_eq!(
            BROKER.advertised_range(ApiKey::Produce),
            Some((0, 13)),
            "listed from v0 for old librdkafka"
        );
        assert!(BROKER
            .response()
            .api_keys
            .iter()
            .any(|k| k.api_key == 0 && k.min_version == 0));
        assert_eq!(BROKER.supported_range(ApiKey::Fetch).map(|r| r.0), Some(4));
        // kafkajs uses Produce <= 7 and Fetch <= 11; Debian's librdkafka Metadata <= 4, ListOffsets <= 2.
        assert!(BROKER
            .supported_range(ApiKey::Metadata)
            .is_some_and(|(lo, _)| lo == 0));
        assert!(BROKER
            .supported_range(ApiKey::ListOffsets)
            .is_some_and(|(lo, hi)| lo <= 1 && hi >= 2));
        assert_eq!(BROKER.supported_range(ApiKey::ApiVersions), Some((0, 4)));
        assert!(BROKER.supported_range(ApiKey::SaslHandshake).is_none());
        assert_eq!(BROKER.unsupported().error_code, 35);
        assert!(!BROKER.unsupported().api_keys.is_empty());
    }
}
