//! Durable group state: committed offsets, offsets committed inside a transaction (pending
//! until it ends) and group membership snapshots are records in the broker's own keyed log
//! (`__consumer_offsets-0`), keyed like Kafka's (`offset:group/topic/partition`, `group:group`),
//! a null value deleting the key.

use std::io;
use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::state::{Committed, GroupSnapshot};
use crate::keyed_log::{KeyedLog, KeyedRecord};
use crate::topic_config::TopicConfig;

pub const TOPIC: &str = "__consumer_offsets";

/// One keyed change to group state.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<Committed>,
    },
    /// An offset committed by transactional producer `producer_id`, applied when its
    /// transaction commits and deleted when it ends.
    TxnOffset {
        group: String,
        producer_id: i64,
        topic: String,
        partition: i32,
        value: Option<Committed>,
    },
    Group {
        group: String,
        value: Option<GroupSnapshot>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "k")]
enum Key {
    #[serde(rename = "offset")]
    Offset { g: String, t: String, p: i32 },
    #[serde(rename = "txn_offset")]
    TxnOffset {
        g: String,
        pid: i64,
        t: String,
        p: i32,
    },
    #[serde(rename = "group")]
    Group { g: String },
}

impl Entry {
    fn encode(&self) -> io::Result<KeyedRecord> {
        let (key, value) = match self {
            Entry::Offset {
                group,
                topic,
                partition,
                value,
            } => (
                serde_json::to_vec(&Key::Offset {
                    g: group.clone(),
                    t: topic.clone(),
                    p: *partition,
                })?,
                value.as_ref().map(serde_json::to_vec).transpose()?,
            ),
            Entry::TxnOffset {
                group,
                producer_id,
                topic,
                partition,
                value,
            } => (
                serde_json::to_vec(&Key::TxnOffset {
                    g: group.clone(),
                    pid: *producer_id,
                    t: topic.clone(),
                    p: *partition,
                })?,
                value.as_ref().map(serde_json::to_vec).transpose()?,
            ),
            Entry::Group { group, value } => (
                serde_json::to_vec(&Key::Group { g: group.clone() })?,
                value.as_ref().map(serde_json::to_vec).transpose()?,
            ),
        };
        Ok((Bytes::from(key), value.map(Bytes::from)))
    }

    fn decode(key: &[u8], value: Option<&[u8]>) -> io::Result<Self> {
        Ok(match serde_json::from_slice::<Key>(key)? {
            Key::Offset { g, t, p } => Entry::Offset {
                group: g,
                topic: t,
                partition: p,
                value: value.map(serde_json::from_slice).transpose()?,
            },
            Key::TxnOffset { g, pid, t, p } => Entry::TxnOffset {
                group: g,
                producer_id: pid,
                topic: t,
                partition: p,
                value: value.map(serde_json::from_slice).transpose()?,
            },
            Key::Group { g } => Entry::Group {
                group: g,
                value: value.map(serde_json::from_slice).transpose()?,
            },
        })
    }
}

/// The group state log.
#[derive(Debug)]
pub struct GroupStore {
    log: KeyedLog,
}

fn encode_all(entries: &[Entry]) -> io::Result<Vec<KeyedRecord>> {
    entries.iter().map(Entry::encode).collect()
}

impl GroupStore {
    /// Opens the log and returns every entry in order, for the coordinator to replay.
    pub fn open(data_dir: &Path, config: TopicConfig) -> io::Result<(Self, Vec<Entry>)> {
        let (log, records) = KeyedLog::open(data_dir, TOPIC, config)?;
        let mut entries = Vec::with_capacity(records.len());
        for (i, (key, value)) in records.iter().enumerate() {
            match Entry::decode(key, value.as_deref()) {
                Ok(e) => entries.push(e),
                Err(e) => {
                    tracing::warn!(record = i, error = %e, "group store: skipping unreadable record")
                }
            }
        }
        Ok((Self { log }, entries))
    }

    /// Appends entries as one batch; returns the offset that makes them durable once visible.
    pub fn append(&mut self, entries: &[Entry]) -> io::Result<i64> {
        self.log.append(&encode_all(entries)?)
    }

    /// Waits until `end_offset` is durable under the flush policy.
    pub fn wait(
        &self,
        end_offset: i64,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        self.log.wait(end_offset)
    }

    /// Whether the log holds enough dead records to be worth rewriting.
    pub fn wants_rewrite(&self, live: usize) -> bool {
        self.log.wants_rewrite(live)
    }

    /// Writes the live set again and drops everything before it.
    pub fn rewrite(&mut self, live: &[Entry]) -> io::Result<()> {
        self.log.rewrite(&encode_all(live)?)
    }

    pub fn close(&self) -> io::Result<()> {
        self.log.close()
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    fn off(g: &str, p: i32, o: i64) -> Entry {
        Entry::Offset {
            group: g.into(),
            topic: "t".into(),
            partition: p,
            value: Some(Committed {
                offset: o,
                leader_epoch: 0,
                metadata: Some("m".into()),
                commit_ms: 1,
            }),
        }
    }

    #[tokio::test]
    async fn entries_replay_in_order_and_rewrite_drops_history() {
        let d = tempfile::tempdir().unwrap();
        let cfg = BrokerConfig::default().topic_defaults();
        let (mut s, replay) = GroupStore::open(d.path(), cfg.clone()).unwrap();
        assert!(replay.is_empty());
        let mut end = 0;
        for i in 0..50 {
            end = s.append(&[off("g", i % 3, i as i64)]).unwrap();
        }
        end = end.max(
            s.append(&[Entry::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 2,
                value: None,
            }])
            .unwrap(),
        );
        assert!(s.wait(end).await);
        drop(s);
        let (mut s, replay) = GroupStore::open(d.path(), cfg.clone()).unwrap();
        assert_eq!(replay.len(), 51);
        assert_eq!(replay[49], off("g", 49 % 3, 49));
        let live = vec![off("g", 0, 48), off("g", 1, 49)];
        s.rewrite(&live).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drop(s);
        let (_, replay) = GroupStore::open(d.path(), cfg).unwrap();
        assert_eq!(
            replay, live,
            "after a rewrite only the live set is replayed"
        );
    }
}
