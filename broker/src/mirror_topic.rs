//! Mirror topics on the target side of `trib mirror`: the rules for the `mirror.source.*` topic
//! configs (set only at creation, removed to promote), the mark a mirror's Produce request
//! carries, and what promotion does (open transactions no local producer owns are aborted).
//!
//! A mirror topic is read-only to producers: only Produce requests carrying [`MIRROR_WRITE_TAG`]
//! on the partition, naming the topic's source cluster, write to it, and they write each batch
//! at its own base offset (`Partition::append_mirrored`), so offsets match the source.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use crate::broker::Broker;
use crate::topic_config::{MIRROR_CLUSTER_KEY, MIRROR_TOPIC_KEY};
use crate::topics::Topic;

/// The Produce tagged field (on a partition's data, Produce v9+) that marks a mirror write: its
/// value is [`MirrorMark`] encoded. Kafka assigns tags from 0 upward; this one is far above them.
pub const MIRROR_WRITE_TAG: i32 = 10_000;

/// What a mirror write claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorMark {
    /// Where the mirror believes the target log ends before this write: everything below it is
    /// there (or never existed at the source). A log that ends lower lost an earlier write, and
    /// the write is refused rather than leaving a hole the source does not have.
    pub expected_end: i64,
    /// The source cluster id; must be the topic's `mirror.source.cluster`.
    pub cluster: String,
}

impl MirrorMark {
    /// 8 bytes of `expected_end` (big-endian), then the cluster id.
    pub fn encode(&self) -> Bytes {
        let mut v = Vec::with_capacity(8 + self.cluster.len());
        v.extend_from_slice(&self.expected_end.to_be_bytes());
        v.extend_from_slice(self.cluster.as_bytes());
        Bytes::from(v)
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let (end, cluster) = b.split_at_checked(8)?;
        Some(Self {
            expected_end: i64::from_be_bytes(end.try_into().ok()?),
            cluster: std::str::from_utf8(cluster).ok()?.to_string(),
        })
    }
}

fn mirror_keys(configs: &BTreeMap<String, String>) -> Option<(&str, &str)> {
    configs.get(MIRROR_CLUSTER_KEY).map(|c| {
        (
            c.as_str(),
            configs.get(MIRROR_TOPIC_KEY).map_or("", String::as_str),
        )
    })
}

/// Checks a topic's new config overrides against the mirror rules: the keys need
/// `mirror_writes`, are set only when the topic is created, and may only be removed afterwards.
pub fn check_configs(
    b: &Broker,
    existing: Option<&Topic>,
    new: &BTreeMap<String, String>,
) -> Result<(), (i16, String)> {
    let invalid = |msg: String| Err((ResponseError::InvalidConfig.code(), msg));
    let wanted = mirror_keys(new);
    let has_topic_key = new.contains_key(MIRROR_TOPIC_KEY);
    if (wanted.is_some() || has_topic_key) && !b.config.mirror_writes {
        return invalid(format!(
            "`{MIRROR_CLUSTER_KEY}`: mirror topics are disabled on this broker (mirror_writes: false)"
        ));
    }
    if wanted.is_none() && has_topic_key {
        return invalid(format!(
            "`{MIRROR_TOPIC_KEY}` needs `{MIRROR_CLUSTER_KEY}` as well"
        ));
    }
    if let Some(t) = existing {
        let old = t.overrides();
        if wanted.is_some() && mirror_keys(&old) != wanted {
            return invalid(format!(
                "`{MIRROR_CLUSTER_KEY}` of topic {} can only be set when the topic is created, and only removed afterwards (promotion)",
                t.name
            ));
        }
    }
    Ok(())
}

/// After a topic's configs changed: when it stopped being a mirror topic (promotion), aborts the
/// transactions still open in its partitions, which came from the source and will never end.
pub fn after_configs_changed(b: &Broker, t: &Topic, was_mirror: bool) {
    if was_mirror && t.config().mirror.is_none() {
        tracing::info!(topic = %t.name, "mirror topic promoted: writable by producers");
        b.txns.abort_unowned(&t.partitions());
    }
}

/// The mirror mark on a partition's Produce data: `None` for an ordinary write, `Some(Err)` for
/// a mark that does not decode.
pub fn write_mark(tags: &BTreeMap<i32, Bytes>) -> Option<Result<MirrorMark, (i16, String)>> {
    tags.get(&MIRROR_WRITE_TAG).map(|b| {
        MirrorMark::decode(b).ok_or((
            ResponseError::InvalidRequest.code(),
            format!("mirror write mark (tagged field {MIRROR_WRITE_TAG}) does not decode"),
        ))
    })
}

/// Whether a Produce to `t` is allowed: ordinary producers may not write a mirror topic, and a
/// mirror write needs a mirror topic of the same source cluster.
pub fn check_produce(t: &Topic, mark: Option<&MirrorMark>) -> Result<(), (i16, String)> {
    let cfg = t.config();
    match (&cfg.mirror, mark) {
        (None, None) => Ok(()),
        (Some(m), None) => Err((
            ResponseError::PolicyViolation.code(),
            format!(
                "topic {} is a mirror of {} at cluster {}: read-only until promoted (trib mirror failover)",
                t.name, m.topic, m.cluster
            ),
        )),
        (None, Some(_)) => Err((
            ResponseError::PolicyViolation.code(),
            format!(
                "topic {} is not a mirror topic (promoted, or created by something else): mirror writes refused",
                t.name
            ),
        )),
        (Some(m), Some(mark)) if mark.cluster != m.cluster => Err((
            ResponseError::PolicyViolation.code(),
            format!(
                "topic {} mirrors cluster {}, not {}",
                t.name, m.cluster, mark.cluster
            ),
        )),
        (Some(_), Some(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_round_trips_and_rejects_short_values() {
        let m = MirrorMark {
            expected_end: 1234,
            cluster: "abc".into(),
        };
        assert_eq!(MirrorMark::decode(&m.encode()), Some(m));
        assert_eq!(MirrorMark::decode(b"1234"), None);
    }
}
