//! Kafka v2 record batches built straight from events: each record is encoded into the
//! partition's open batch as it arrives (no per-record allocation), and the batch is framed,
//! compressed and checksummed once when it is sealed. Also Kafka's murmur2 partitioner.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::Compressor;
use trib_pipelines::config::sinks::Compression;
use trib_pipelines::event::Event;

/// Bytes of the v2 batch header before the records.
const HEADER: usize = 61;

/// A partition's batch being filled.
pub struct Builder {
    records: BytesMut,
    count: i32,
    base_ts: i64,
    max_ts: i64,
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

fn zigzag_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn put_zigzag(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        Some(b) => zigzag_len(b.len() as i64) + b.len(),
        None => zigzag_len(-1),
    }
}

fn put_bytes(out: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_zigzag(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_zigzag(out, -1),
    }
}

impl Builder {
    /// A batch whose records go into `records` (a cleared buffer, reused across batches).
    pub fn new(timestamp: i64, records: BytesMut) -> Self {
        Self {
            records,
            count: 0,
            base_ts: timestamp,
            max_ts: timestamp,
            events: Vec::new(),
            opened: Instant::now(),
        }
    }

    /// Uncompressed bytes so far.
    pub fn size(&self) -> usize {
        HEADER + self.records.len()
    }

    pub fn count(&self) -> i32 {
        self.count
    }

    /// Appends one record (the event's body as value) and keeps the event.
    pub fn push(&mut self, e: Event, key: Option<&[u8]>, value: &[u8]) {
        let ts_delta = e.timestamp_ms - self.base_ts;
        let offset_delta = i64::from(self.count);
        let mut body = 1 + zigzag_len(ts_delta) + zigzag_len(offset_delta);
        body += bytes_len(key) + bytes_len(Some(value));
        body += zigzag_len(e.headers.len() as i64);
        for (k, v) in &e.headers {
            body += bytes_len(Some(k.as_bytes())) + bytes_len(Some(v));
        }
        let out = &mut self.records;
        out.reserve(body + 5);
        put_zigzag(out, body as i64);
        out.put_u8(0);
        put_zigzag(out, ts_delta);
        put_zigzag(out, offset_delta);
        put_bytes(out, key);
        put_bytes(out, Some(value));
        put_zigzag(out, e.headers.len() as i64);
        for (k, v) in &e.headers {
            put_bytes(out, Some(k.as_bytes()));
            put_bytes(out, Some(v));
        }
        self.max_ts = self.max_ts.max(e.timestamp_ms);
        self.count += 1;
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
        let mut out = BytesMut::with_capacity(HEADER + self.records.len() / 2);
        out.put_i64(0); // base offset
        out.put_i32(0); // batch length, set below
        out.put_i32(-1); // partition leader epoch
        out.put_i8(2); // magic
        out.put_u32(0); // crc, set below
        let crc_from = out.len();
        let codec: i16 = match compression {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        };
        out.put_i16(codec);
        out.put_i32(self.count - 1);
        out.put_i64(self.base_ts);
        out.put_i64(self.max_ts);
        out.put_i64(producer_id);
        out.put_i16(epoch);
        out.put_i32(sequence);
        out.put_i32(self.count);
        compress(compression, &self.records, &mut out)?;
        let len = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&out[crc_from..]);
        out[crc_from - 4..crc_from].copy_from_slice(&crc.to_be_bytes());
        let mut records = std::mem::take(&mut self.records);
        records.clear();
        Ok((
            Sealed {
                bytes: out.freeze(),
                events: self.events,
                records: self.count,
            },
            records,
        ))
    }
}

/// Appends `records` compressed with `codec` to `out`. LZ4 uses the fast mode (level 0) and
/// no content checksum (the batch's CRC covers it), as librdkafka does; zstd level 3.
fn compress(codec: Compression, records: &[u8], out: &mut BytesMut) -> anyhow::Result<()> {
    use std::io::Write;
    let copy = |tmp: &mut BytesMut| {
        tmp.extend_from_slice(records);
        Ok(())
    };
    use kafka_protocol::compression as c;
    match codec {
        Compression::None => out.extend_from_slice(records),
        Compression::Lz4 => {
            let mut enc = lz4::EncoderBuilder::new()
                .level(0)
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .build(out.writer())?;
            enc.write_all(records)?;
            let (_, r) = enc.finish();
            r?;
        }
        Compression::Zstd => {
            let compressed = zstd::bulk::compress(records, 3)?;
            out.extend_from_slice(&compressed);
        }
        Compression::Gzip => c::Gzip::compress(out, copy)?,
        Compression::Snappy => c::Snappy::compress(out, copy)?,
    }
    Ok(())
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
            let mut b = Builder::new(1_000, BytesMut::new());
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
