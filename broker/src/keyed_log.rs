//! A durable keyed log on one internal partition (`__consumer_offsets-0`,
//! `__transaction_state-0`): keyed records appended as one batch per call under the broker's
//! flush policy, replayed in order at start, and compacted by writing the live set again and
//! dropping everything before it. What the keys and values mean belongs to the owner.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

use crate::log::batch::plain_record;
use crate::log::partition::{now_ms, Partition};
use crate::topic_config::TopicConfig;

/// A key and its value (`None` deletes the key).
pub type KeyedRecord = (Bytes, Option<Bytes>);

#[derive(Debug)]
pub struct KeyedLog {
    name: &'static str,
    partition: Arc<Partition>,
    records_since_rewrite: u64,
}

impl KeyedLog {
    /// Opens `<data_dir>/<name>-0` and returns every record from the log start, in order.
    pub fn open(
        data_dir: &Path,
        name: &'static str,
        mut config: TopicConfig,
    ) -> io::Result<(Self, Vec<KeyedRecord>)> {
        config.segment_bytes = 8 << 20;
        config.retention_ms = -1;
        config.retention_bytes = -1;
        config.max_message_bytes = 64 << 20;
        config.index_fields = Default::default();
        let dir = data_dir.join(format!("{name}-0"));
        let (partition, truncations) = Partition::open(name.into(), 0, dir, Arc::new(config))?;
        if !truncations.is_empty() {
            tracing::warn!(
                log = %name,
                count = truncations.len(),
                "truncated a torn tail"
            );
        }
        let mut records = Vec::new();
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
                    if let Some(key) = r.key {
                        records.push((key, r.value));
                    }
                }
            }
        }
        let n = records.len() as u64;
        Ok((
            Self {
                name,
                partition,
                records_since_rewrite: n,
            },
            records,
        ))
    }

    /// Appends records as one batch; returns the offset that makes them durable once visible.
    pub fn append(&mut self, entries: &[KeyedRecord]) -> io::Result<i64> {
        let now = now_ms();
        let records: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, (k, v))| plain_record(i as i64, now, Some(k.clone()), v.clone()))
            .collect();
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

    /// Writes the live set again and drops everything before it once the copy is durable.
    pub fn rewrite(&mut self, live: &[KeyedRecord]) -> io::Result<()> {
        let start = self.partition.log_end();
        let mut end = start;
        for chunk in live.chunks(1000) {
            end = self.append(chunk)?;
        }
        let p = self.partition.clone();
        let name = self.name;
        tokio::spawn(async move {
            if p.wait_visible(end, Duration::from_secs(60)).await {
                match p.delete_records(start) {
                    Ok(_) => {
                        tracing::info!(log = %name, records_kept = end - start, "keyed log compacted")
                    }
                    Err(e) => {
                        tracing::warn!(log = %name, error = %e, "keyed log compaction failed")
                    }
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
