//! Building v2 record batches on the client side: records are encoded one by one into a reused
//! buffer (no per-record allocation), and the batch is framed, compressed and checksummed once
//! when it is sealed. Used by the native Kafka sink and the mirror's translating mode.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::Compressor;

use super::batch::{ATTR_TRANSACTIONAL, HEADER_LEN};

/// Codec ids as written in a batch's attributes.
pub const CODEC_NONE: i16 = 0;
pub const CODEC_GZIP: i16 = 1;
pub const CODEC_SNAPPY: i16 = 2;
pub const CODEC_LZ4: i16 = 3;
pub const CODEC_ZSTD: i16 = 4;

/// Who writes a batch: producer id, epoch, the first record's sequence, and whether it is part
/// of a transaction. `PLAIN` is a producer without idempotence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
}

impl ProducerStamp {
    pub const PLAIN: ProducerStamp = ProducerStamp {
        producer_id: -1,
        epoch: -1,
        base_sequence: -1,
        transactional: false,
    };
}

/// Why a batch could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("unknown compression codec {0}")]
    Codec(i16),
    #[error("compressing the batch failed: {0}")]
    Compress(String),
}

/// One batch being filled.
#[derive(Debug, Default)]
pub struct BatchWriter {
    records: BytesMut,
    count: i32,
    base_ts: i64,
    max_ts: i64,
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

impl BatchWriter {
    /// A batch whose records go into `records` (a cleared buffer, reused across batches).
    pub fn new(records: BytesMut) -> Self {
        Self {
            records,
            ..Self::default()
        }
    }

    /// Uncompressed bytes so far, header included.
    pub fn size(&self) -> usize {
        HEADER_LEN + self.records.len()
    }

    pub fn count(&self) -> i32 {
        self.count
    }

    /// Appends one record at the next offset delta. The first record's timestamp is the batch's
    /// base timestamp.
    pub fn push<'h, H>(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: H,
    ) where
        H: Iterator<Item = (&'h [u8], Option<&'h [u8]>)> + Clone,
    {
        if self.count == 0 {
            self.base_ts = timestamp;
            self.max_ts = timestamp;
        }
        let ts_delta = timestamp.saturating_sub(self.base_ts);
        let offset_delta = i64::from(self.count);
        let mut n_headers = 0i64;
        let mut body = 1 + zigzag_len(ts_delta) + zigzag_len(offset_delta);
        body += bytes_len(key) + bytes_len(value);
        for (k, v) in headers.clone() {
            body += bytes_len(Some(k)) + bytes_len(v);
            n_headers += 1;
        }
        body += zigzag_len(n_headers);
        let out = &mut self.records;
        out.reserve(body + 10);
        put_zigzag(out, body as i64);
        out.put_u8(0);
        put_zigzag(out, ts_delta);
        put_zigzag(out, offset_delta);
        put_bytes(out, key);
        put_bytes(out, value);
        put_zigzag(out, n_headers);
        for (k, v) in headers {
            put_bytes(out, Some(k));
            put_bytes(out, v);
        }
        self.max_ts = self.max_ts.max(timestamp);
        self.count += 1;
    }

    /// The records buffer, emptied, for reuse.
    pub fn into_buffer(mut self) -> BytesMut {
        self.records.clear();
        self.records
    }

    /// Frames, compresses and checksums the batch, and empties the writer for the next one
    /// (keeping its buffer).
    pub fn seal(&mut self, codec: i16, producer: ProducerStamp) -> Result<Bytes, SealError> {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.records.len() / 2);
        out.put_i64(0); // base offset
        out.put_i32(0); // batch length, set below
        out.put_i32(-1); // partition leader epoch
        out.put_i8(2); // magic
        out.put_u32(0); // crc, set below
        let crc_from = out.len();
        let attributes = if producer.transactional {
            codec | ATTR_TRANSACTIONAL
        } else {
            codec
        };
        out.put_i16(attributes);
        out.put_i32(self.count - 1);
        out.put_i64(self.base_ts);
        out.put_i64(self.max_ts);
        out.put_i64(producer.producer_id);
        out.put_i16(producer.epoch);
        out.put_i32(producer.base_sequence);
        out.put_i32(self.count);
        compress(codec, &self.records, &mut out)?;
        let len = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&out[crc_from..]);
        out[crc_from - 4..crc_from].copy_from_slice(&crc.to_be_bytes());
        self.records.clear();
        self.count = 0;
        Ok(out.freeze())
    }
}

/// Appends `records` compressed with `codec` to `out`. LZ4 uses the fast mode (level 0) and
/// no content checksum (the batch's CRC covers it), as librdkafka does; zstd level 3.
fn compress(codec: i16, records: &[u8], out: &mut BytesMut) -> Result<(), SealError> {
    use kafka_protocol::compression as c;
    use std::io::Write;
    let copy = |tmp: &mut BytesMut| {
        tmp.extend_from_slice(records);
        Ok(())
    };
    let failed = |e: &dyn std::fmt::Display| SealError::Compress(e.to_string());
    match codec {
        CODEC_NONE => out.extend_from_slice(records),
        CODEC_LZ4 => {
            let mut enc = lz4::EncoderBuilder::new()
                .level(0)
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .build(out.writer())
                .map_err(|e| failed(&e))?;
            enc.write_all(records).map_err(|e| failed(&e))?;
            let (_, r) = enc.finish();
            r.map_err(|e| failed(&e))?;
        }
        CODEC_ZSTD => {
            let compressed = zstd::bulk::compress(records, 3).map_err(|e| failed(&e))?;
            out.extend_from_slice(&compressed);
        }
        CODEC_GZIP => c::Gzip::compress(out, copy).map_err(|e| failed(&e))?,
        CODEC_SNAPPY => c::Snappy::compress(out, copy).map_err(|e| failed(&e))?,
        other => return Err(SealError::Codec(other)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{for_each_record, BatchHeader};

    #[test]
    fn sealed_batches_read_back_with_every_codec() {
        for codec in [CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD] {
            let mut w = BatchWriter::new(BytesMut::new());
            let h: [(&[u8], Option<&[u8]>); 2] = [(b"a", Some(b"1")), (b"a", None)];
            w.push(1_000, Some(b"k"), Some(b"v1"), h.iter().copied());
            w.push(990, None, None, std::iter::empty());
            let stamp = ProducerStamp {
                producer_id: 7,
                epoch: 2,
                base_sequence: 40,
                transactional: true,
            };
            let b = w.seal(codec, stamp).expect("seals");
            assert_eq!(w.count(), 0);
            let hd = BatchHeader::parse(&b).expect("parses");
            assert_eq!(
                (hd.record_count, hd.base_sequence, hd.producer_id),
                (2, 40, 7)
            );
            assert!(hd.is_transactional());
            assert_eq!(hd.compression(), codec);
            assert_eq!((hd.base_timestamp, hd.max_timestamp), (1_000, 1_000));
            let mut seen = Vec::new();
            for_each_record(&b, |r| {
                let headers: Vec<(Vec<u8>, Option<Vec<u8>>)> = r
                    .headers()
                    .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                    .collect();
                seen.push((r.offset, r.timestamp, r.key.map(<[u8]>::to_vec), headers));
            })
            .expect("reads");
            assert_eq!(seen.len(), 2, "codec {codec}");
            assert_eq!(seen[0].3.len(), 2, "duplicate header names are kept");
            assert_eq!((seen[1].0, seen[1].1, seen[1].2.clone()), (1, 990, None));
        }
    }
}
