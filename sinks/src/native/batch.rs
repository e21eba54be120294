//! Kafka v2 record batches built straight from events: each record is encoded into the
//! partition's open batch as it arrives (the broker's `BatchWriter`, no per-record allocation),
//! and the batch is framed, compressed and checksummed once when it is sealed. Also Kafka's
//! murmur2 partitioner.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use trib_broker::log::batch_writer::{self as bw, BatchWriter, ProducerStamp};
use trib_pipelines::config::sinks::Compression;
use trib_pipelines::event::Event;

/// A partition's batch being filled.
pub struct Builder {
    writer: BatchWriter,
    /// The events whose records are in the batch, finalized when it is acknowledged.
    pub events: Vec<Event>,
    pub opened: Instant,
}

/// A batch ready to send: its bytes (with the sequence already set) and its events.
pub struct Sealed {
    pub bytes: Bytes,
    pub events: Vec<Event>,
    pub records: i32,
}

/// The codec id a batch's attributes carry for `c`.
fn codec(c: Compression) -> i16 {
    match c {
        Compression::None => bw::CODEC_NONE,
        Compression::Gzip => bw::CODEC_GZIP,
        Compression::Snappy => bw::CODEC_SNAPPY,
        Compression::Lz4 => bw::CODEC_LZ4,
        Compression::Zstd => bw::CODEC_ZSTD,
    }
}

impl Builder {
    /// A batch whose records go into `records` (a cleared buffer, reused across batches).
    pub fn new(records: BytesMut) -> Self {
        Self {
            writer: BatchWriter::new(records),
            events: Vec::new(),
            opened: Instant::now(),
        }
    }

    /// Uncompressed bytes so far.
    pub fn size(&self) -> usize {
        self.writer.size()
    }

    pub fn count(&self) -> i32 {
        self.writer.count()
    }

    /// Appends one record (the event's body as value) and keeps the event.
    pub fn push(&mut self, e: Event, key: Option<&[u8]>, value: &[u8]) {
        let headers = e.headers.iter().map(|(k, v)| (k.as_bytes(), Some(&v[..])));
        self.writer.push(e.timestamp_ms, key, Some(value), headers);
        self.events.push(e);
    }

    /// Frames, compresses and checksums the batch; gives back the records buffer for reuse.
    pub fn seal(
        mut self,
        compression: Compression,
        producer_id: i64,
        epoch: i16,
        sequence: i32,
    ) -> anyhow::Result<(Sealed, BytesMut)> {
        let records = self.writer.count();
        let stamp = ProducerStamp {
            producer_id,
            epoch,
            base_sequence: sequence,
            transactional: false,
        };
        let bytes = self.writer.seal(codec(compression), stamp)?;
        Ok((
            Sealed {
                bytes,
                events: self.events,
                records,
            },
            self.writer.into_buffer(),
        ))
    }
}

/// A sealed batch with another producer id, epoch and base sequence (after the broker lost the
/// producer's state): the header fields are rewritten and the checksum recomputed.
pub fn restamp(bytes: &Bytes, producer_id: i64, epoch: i16, sequence: i32) -> Bytes {
    let mut b = BytesMut::from(&bytes[..]);
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// The base sequence written in a sealed batch.
pub fn base_sequence(bytes: &Bytes) -> i32 {
    bytes
        .get(53..57)
        .map_or(-1, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Kafka's murmur2 (the Java client's default partitioner for keyed records).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a key among `n`, as the Java client picks it.
pub fn key_partition(key: &[u8], n: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Vectors from Kafka's UtilsTest.
        assert_eq!(murmur2(b""), 275_646_681);
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn sealed_batches_decode_with_every_codec() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut b = Builder::new(BytesMut::new());
            for i in 0..50 {
                let mut e = Event::raw(format!("value {i}"));
                e.timestamp_ms = 1_000 + i;
                if i % 2 == 0 {
                    e.headers = vec![("file".into(), Bytes::from_static(b"/var/log/x"))];
                }
                let body = e.body();
                let key = format!("k{i}");
                b.push(e, (i % 3 != 0).then_some(key.as_bytes()), &body);
            }
            let (sealed, _) = b.seal(codec, 7, 1, 100).unwrap();
            let mut bytes = sealed.bytes.clone();
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            assert_eq!(set.records.len(), 50, "{codec:?}");
            let r = &set.records[4];
            assert_eq!(r.value.as_deref(), Some(&b"value 4"[..]));
            assert_eq!(r.key.as_deref(), Some(&b"k4"[..]));
            assert_eq!(r.timestamp, 1_004);
            assert_eq!(r.producer_id, 7);
            assert_eq!(r.sequence, 104);
            assert_eq!(r.headers.len(), 1);
            assert!(set.records[3].key.is_none());
            assert_eq!(sealed.events.len(), 50);
            let mut again = restamp(&sealed.bytes, 9, 2, 0);
            let set = RecordBatchDecoder::decode(&mut again).unwrap();
            assert_eq!(
                (set.records[1].producer_id, set.records[1].sequence),
                (9, 1)
            );
        }
    }
}
