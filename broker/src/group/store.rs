//! Durable group state: committed offsets and group membership snapshots are records in the
//! broker's own log (`__consumer_offsets-0`, a normal partition with the broker's flush policy),
//! keyed like Kafka's (`offset:group/topic/partition`, `group:group`), a null value deleting the
//! key. Startup replays the log; when it holds far more records than live keys, the live set is
//! written again and everything before it is dropped (compaction by rewrite).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};
use serde::{Deserialize, Serialize};

use super::state::{Committed, GroupSnapshot};
use crate::log::batch::plain_record;
use crate::log::partition::{now_ms, Partition};
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
    #[serde(rename = "group")]
    Group { g: String },
}

impl Entry {
    fn encode(&self) -> io::Result<(Bytes, Option<Bytes>)> {
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
    partition: Arc<Partition>,
    records_since_rewrite: u64,
}

impl GroupStore {
    /// Opens the log and returns every entry in order, for the coordinator to replay.
    pub fn open(data_dir: &Path, mut config: TopicConfig) -> io::Result<(Self, Vec<Entry>)> {
        config.segment_bytes = 8 << 20;
        config.retention_ms = -1;
        config.retention_bytes = -1;
        config.max_message_bytes = 64 << 20;
        let dir = data_dir.join(format!("{TOPIC}-0"));
        let (partition, truncations) = Partition::open(TOPIC.into(), 0, dir, Arc::new(config))?;
        if !truncations.is_empty() {
            tracing::warn!(
                count = truncations.len(),
                "group store: truncated a torn tail"
            );
        }
        let mut entries = Vec::new();
        let start = partition.log_start();
        let mut offset = start;
        let hw = partition.high_watermark();
        while offset < hw {
            let read = partition.read(offset, 4 << 20).map_err(io::Error::other)?;
            if read.records.is_empty() {
                break;
            }
            let mut buf = read.records;
            let sets = RecordBatchDecoder::decode_all(&mut buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            for set in sets {
                for r in set.records {
                    offset = offset.max(r.offset + 1);
                    if r.offset < start {
                        continue;
                    }
                    let Some(key) = r.key else { continue };
                    match Entry::decode(&key, r.value.as_deref()) {
                        Ok(e) => entries.push(e),
                        Err(e) => {
                            tracing::warn!(offset = r.offset, error = %e, "group store: skipping unreadable record")
                        }
                    }
                }
            }
        }
        let n = entries.len() as u64;
        Ok((
            Self {
                partition,
                records_since_rewrite: n,
            },
            entries,
        ))
    }

    /// Appends entries as one batch; returns the offset that makes them durable once visible.
    pub fn append(&mut self, entries: &[Entry]) -> io::Result<i64> {
        let now = now_ms();
        let mut records = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let (key, value) = e.encode()?;
            records.push(plain_record(i as i64, now, Some(key), value));
        }
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .map_err(io::Error::other)?;
        let appended = self
            .partition
            .append(&buf.freeze())
            .map_err(io::Error::other)?;
        self.records_since_rewrite += entries.len() as u64;
        Ok(appended.end_offset)
    }

    /// Waits until `end_offset` is durable under the flush policy.
    pub fn wait(
        &self,
        end_offset: i64,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let p = self.partition.clone();
        async move { p.wait_visible(end_offset, Duration::from_secs(30)).await }
    }

    /// Whether the log holds enough dead records to be worth rewriting.
    pub fn wants_rewrite(&self, live: usize) -> bool {
        self.records_since_rewrite > 10_000 && self.records_since_rewrite > 2 * live as u64
    }

    /// Writes the live set again and drops everything before it.
    pub fn rewrite(&mut self, live: &[Entry]) -> io::Result<()> {
        let start = self.partition.log_end();
        let mut end = start;
        for chunk in live.chunks(1000) {
            end = self.append(chunk)?;
        }
        // The old records stay until the new copy is durable.
        let p = self.partition.clone();
        let target = end;
        tokio::spawn(async move {
            if p.wait_visible(target, Duration::from_secs(60)).await {
                match p.delete_records(start) {
                    Ok(_) => tracing::info!(records_kept = target - start, "group store compacted"),
                    Err(e) => tracing::warn!(error = %e, "group store compaction failed"),
                }
            }
        });
        self.records_since_rewrite = live.len() as u64;
        Ok(())
    }

    pub fn close(&self) -> io::Result<()> {
        self.partition.close()
    }

    pub fn size_bytes(&self) -> u64 {
        self.partition.size_bytes()
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
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(s);
        let (_, replay) = GroupStore::open(d.path(), cfg).unwrap();
        assert_eq!(
            replay, live,
            "after a rewrite only the live set is replayed"
        );
    }
}
