//! Record batches (magic v2) as bytes: the 61-byte header, validation of what producers send
//! (lengths, magic, CRC-32C, counts), the in-place header rewrite on append, and a record walker
//! used by timestamp lookups and the field index (never on the produce or fetch path).

use bytes::Bytes;

/// Bytes before the records of a v2 batch.
pub const HEADER_LEN: usize = 61;
/// Bytes covered by `base_offset` and `batch_length`, which are not counted in `batch_length`.
pub const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;

/// Attribute bits.
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
pub const ATTR_CONTROL: i16 = 0x20;

/// The fixed header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

/// Why a batch was refused; each maps to the Kafka error code clients understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: {0}")]
    Truncated(&'static str),
    #[error("record batch magic {0} is not supported (only v2)")]
    Magic(i8),
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: u32 },
    #[error("record batch invalid: {0}")]
    Invalid(&'static str),
}

impl BatchError {
    /// The Kafka error code for this refusal.
    pub fn kafka_code(&self) -> i16 {
        match self {
            BatchError::Truncated(_) | BatchError::Crc { .. } => 2, // CORRUPT_MESSAGE
            BatchError::Magic(_) => 43, // UNSUPPORTED_FOR_MESSAGE_FORMAT
            BatchError::TooLarge { .. } => 10, // MESSAGE_TOO_LARGE
            BatchError::Invalid(_) => 87, // INVALID_RECORD
        }
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl BatchHeader {
    /// Parses the header at the start of `b`; needs `HEADER_LEN` bytes.
    pub fn parse(b: &[u8]) -> Result<Self, BatchError> {
        if b.len() < LOG_OVERHEAD + 5 {
            return Err(BatchError::Truncated("header"));
        }
        let magic = b[16] as i8;
        if magic != 2 {
            return Err(BatchError::Magic(magic));
        }
        if b.len() < HEADER_LEN {
            return Err(BatchError::Truncated("header"));
        }
        Ok(Self {
            base_offset: i64_at(b, 0),
            batch_length: i32_at(b, 8),
            leader_epoch: i32_at(b, 12),
            magic,
            crc: i32_at(b, 17) as u32,
            attributes: i16_at(b, 21),
            last_offset_delta: i32_at(b, 23),
            base_timestamp: i64_at(b, 27),
            max_timestamp: i64_at(b, 35),
            producer_id: i64_at(b, 43),
            producer_epoch: i16_at(b, 51),
            base_sequence: i32_at(b, 53),
            record_count: i32_at(b, 57),
        })
    }

    /// Bytes of the whole batch including the 12-byte log overhead.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
}

/// Reads just the base offset and total length of the batch at the start of `b` (12 bytes).
pub fn peek_offset_and_len(b: &[u8]) -> Option<(i64, usize)> {
    if b.len() < LOG_OVERHEAD {
        return None;
    }
    let len = i32_at(b, 8);
    if len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return None;
    }
    Some((i64_at(b, 0), LOG_OVERHEAD + len as usize))
}

/// Whether every batch in `records` is transactional (`Some(true)`), none is (`Some(false)`);
/// `None` when they differ or a header does not parse (validation then names the problem).
pub fn all_transactional(records: &[u8]) -> Option<bool> {
    let mut at = 0usize;
    let mut seen = None;
    while at < records.len() {
        let h = BatchHeader::parse(&records[at..]).ok()?;
        let t = h.is_transactional();
        if seen.is_some_and(|s| s != t) {
            return None;
        }
        seen = Some(t);
        at += h.total_len();
    }
    seen
}

/// Validates every batch of a produce payload and returns their headers.
pub fn validate_produce(
    records: &[u8],
    max_message_bytes: u32,
) -> Result<Vec<BatchHeader>, BatchError> {
    let mut out = Vec::with_capacity(1);
    let mut at = 0usize;
    if records.is_empty() {
        return Err(BatchError::Invalid("no record batch in produce request"));
    }
    while at < records.len() {
        let h = validate_one(&records[at..], max_message_bytes)?;
        at += h.total_len();
        out.push(h);
    }
    Ok(out)
}

/// Validates one batch at the start of `b`: lengths, magic, CRC and counts.
pub fn validate_one(b: &[u8], max_message_bytes: u32) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(b)?;
    if h.batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::Invalid("batch length shorter than the header"));
    }
    let total = h.total_len();
    if total > b.len() {
        return Err(BatchError::Truncated("batch length runs past the request"));
    }
    if total > max_message_bytes as usize {
        return Err(BatchError::TooLarge {
            size: total,
            max: max_message_bytes,
        });
    }
    let computed = crc32c::crc32c(&b[CRC_START..total]);
    if computed != h.crc {
        return Err(BatchError::Crc {
            stored: h.crc,
            computed,
        });
    }
    if h.record_count < 0 || h.last_offset_delta < 0 {
        return Err(BatchError::Invalid("negative record count or offset delta"));
    }
    if !h.is_control() && h.record_count == 0 {
        return Err(BatchError::Invalid("batch holds no records"));
    }
    if h.record_count > 0 && h.last_offset_delta != h.record_count - 1 {
        return Err(BatchError::Invalid(
            "last offset delta does not match the record count",
        ));
    }
    if h.compression() > 4 {
        return Err(BatchError::Invalid("unknown compression codec"));
    }
    Ok(h)
}

/// The rewritten header prefix of a batch being appended: base offset and leader epoch (outside
/// the CRC), plus for LogAppendTime topics the timestamp bit, max timestamp and a new CRC.
pub fn rewritten_header(
    batch: &[u8],
    base_offset: i64,
    log_append_time: Option<i64>,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&batch[..HEADER_LEN]);
    h[0..8].copy_from_slice(&base_offset.to_be_bytes());
    h[12..16].copy_from_slice(&0i32.to_be_bytes());
    if let Some(now) = log_append_time {
        let attrs = i16_at(&h, 21) | ATTR_LOG_APPEND_TIME;
        h[21..23].copy_from_slice(&attrs.to_be_bytes());
        h[35..43].copy_from_slice(&now.to_be_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&h[CRC_START..]), &batch[HEADER_LEN..]);
        h[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    h
}

/// A plain (non-transactional, no producer id) record at `offset` within its batch, for
/// encoding with kafka-protocol's `RecordBatchEncoder` (the sequence tracks the offset so all
/// records of one call stay in one batch).
pub fn plain_record(
    offset: i64,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
) -> kafka_protocol::records::Record {
    kafka_protocol::records::Record {
        transactional: false,
        control: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: kafka_protocol::records::TimestampType::Creation,
        offset,
        sequence: offset as i32,
        timestamp,
        key,
        value,
        headers: Default::default(),
        delete_horizon: false,
    }
}

/// A transaction marker: the control batch the coordinator writes to every partition of a
/// transaction when it ends (one record; key = version 0 and type 0 abort / 1 commit, value =
/// version 0 and the coordinator epoch), with the producer's id and epoch.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Result<Bytes, BatchError> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&i16::from(commit).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut r = plain_record(
        0,
        timestamp,
        Some(Bytes::from(key)),
        Some(Bytes::from(value)),
    );
    r.transactional = true;
    r.control = true;
    r.producer_id = producer_id;
    r.producer_epoch = producer_epoch;
    r.sequence = -1;
    let mut buf = bytes::BytesMut::new();
    kafka_protocol::records::RecordBatchEncoder::encode(
        &mut buf,
        &[r],
        &kafka_protocol::records::RecordEncodeOptions {
            version: 2,
            compression: kafka_protocol::records::Compression::None,
        },
    )
    .map_err(|_| BatchError::Invalid("transaction marker does not encode"))?;
    Ok(buf.freeze())
}

/// What a stored control batch marks: `Some(true)` commit, `Some(false)` abort, `None` when it is
/// not a transaction marker (or not readable as one).
pub fn marker_kind(batch: &[u8]) -> Option<bool> {
    let h = BatchHeader::parse(batch).ok()?;
    if !h.is_control() || h.compression() != 0 || batch.len() < h.total_len() {
        return None;
    }
    let mut cur = &batch[HEADER_LEN..h.total_len()];
    let _len = read_varint(&mut cur).ok()?;
    cur = cur.get(1..)?; // record attributes
    read_varint(&mut cur).ok()?;
    read_varint(&mut cur).ok()?;
    let key = read_bytes(&mut cur).ok()??;
    match key.get(2..4)? {
        [0, 0] => Some(false),
        [0, 1] => Some(true),
        _ => None,
    }
}

/// One record's position and timestamp inside a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordStamp {
    pub offset: i64,
    pub timestamp: i64,
}

/// One record of a stored batch, borrowed from the (decompressed) batch.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The record's header section (count, then name/value pairs), read by `header`.
    headers: &'a [u8],
    /// The (decompressed) records the slices above point into.
    records: &'a Bytes,
}

impl<'a> RecordView<'a> {
    /// `part` (the key, the value or a header of this record) as shared bytes of the batch,
    /// without a copy; a slice from elsewhere is copied.
    pub fn share(&self, part: &[u8]) -> Bytes {
        let base = self.records.as_ptr() as usize;
        let at = part.as_ptr() as usize;
        if at >= base && at + part.len() <= base + self.records.len() {
            self.records.slice_ref(part)
        } else {
            Bytes::copy_from_slice(part)
        }
    }

    /// The key as shared bytes of the batch (no copy).
    pub fn key_bytes(&self) -> Option<Bytes> {
        self.key.map(|k| self.share(k))
    }

    /// The value as shared bytes of the batch (no copy).
    pub fn value_bytes(&self) -> Option<Bytes> {
        self.value.map(|v| self.share(v))
    }

    /// The value of the first header named `name` (`Some(None)`: present with a null value).
    pub fn header(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.headers()
            .find(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// The record's headers as (name, value) pairs; stops at the first malformed one.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + Clone + 'a {
        let mut cur = self.headers;
        let count = read_varint(&mut cur).unwrap_or(0).max(0);
        (0..count).map_while(move |_| {
            let k = read_bytes(&mut cur).ok()??;
            let v = read_bytes(&mut cur).ok()?;
            Some((k, v))
        })
    }
}

/// Calls `each` with every record of a stored batch (decompressing when needed). For
/// LogAppendTime batches every record carries the batch's max timestamp. Control batches
/// (transaction markers) have no user records and are skipped.
pub fn for_each_record(
    batch: &Bytes,
    mut each: impl FnMut(&RecordView<'_>),
) -> Result<(), BatchError> {
    let h = BatchHeader::parse(batch)?;
    let total = h.total_len();
    if batch.len() < total {
        return Err(BatchError::Truncated("batch"));
    }
    if h.is_control() {
        return Ok(());
    }
    let append_time = h.attributes & ATTR_LOG_APPEND_TIME != 0;
    let records = decompress(h.compression(), batch.slice(HEADER_LEN..total))?;
    let mut cur = &records[..];
    for _ in 0..h.record_count {
        let len = read_varint(&mut cur)?;
        if len < 0 || len as usize > cur.len() {
            return Err(BatchError::Truncated("record"));
        }
        let mut rec = &cur[..len as usize];
        cur = &cur[len as usize..];
        if rec.is_empty() {
            return Err(BatchError::Truncated("record attributes"));
        }
        rec = &rec[1..];
        let ts_delta = read_varint(&mut rec)?;
        let off_delta = read_varint(&mut rec)?;
        let key = read_bytes(&mut rec)?;
        let value = read_bytes(&mut rec)?;
        each(&RecordView {
            offset: h.base_offset + off_delta,
            timestamp: if append_time {
                h.max_timestamp
            } else {
                h.base_timestamp.saturating_add(ts_delta)
            },
            key,
            value,
            headers: rec,
            records: &records,
        });
    }
    Ok(())
}

/// Offsets and timestamps of every record in a stored batch (decompressing when needed).
/// For LogAppendTime batches every record carries the batch's max timestamp.
pub fn record_stamps(batch: &Bytes) -> Result<Vec<RecordStamp>, BatchError> {
    let h = BatchHeader::parse(batch)?;
    if h.attributes & ATTR_LOG_APPEND_TIME != 0 {
        if batch.len() < h.total_len() {
            return Err(BatchError::Truncated("batch"));
        }
        return Ok((0..=h.last_offset_delta)
            .map(|d| RecordStamp {
                offset: h.base_offset + i64::from(d),
                timestamp: h.max_timestamp,
            })
            .collect());
    }
    let mut out = Vec::with_capacity(h.record_count.clamp(0, 4096) as usize);
    for_each_record(batch, |r| {
        out.push(RecordStamp {
            offset: r.offset,
            timestamp: r.timestamp,
        })
    })?;
    Ok(out)
}

fn decompress(codec: i16, body: Bytes) -> Result<Bytes, BatchError> {
    decompress_bounded(codec, body, MAX_DECOMPRESSED)
}

thread_local! {
    /// The buffer `decompress_bounded` decompresses streamed codecs into, per thread.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The largest decompression buffer a thread keeps between batches.
const SCRATCH_KEPT: usize = 16 << 20;

/// Most bytes one compressed batch may decompress to: a small batch from the network cannot
/// become gigabytes in memory.
pub const MAX_DECOMPRESSED: u64 = 128 << 20;

/// Decompresses a batch's records (`codec` as in the attributes: 0 none, 1 gzip, 2 snappy, 3
/// lz4, 4 zstd), refusing to produce more than `limit` bytes. Streamed codecs stop reading one
/// byte past the limit; snappy declares its sizes up front (raw, or per block in xerial
/// framing), which are summed and checked before anything is decoded.
pub fn decompress_bounded(codec: i16, body: Bytes, limit: u64) -> Result<Bytes, BatchError> {
    use std::io::Read;
    let bad = |_| BatchError::Invalid("compressed records do not decompress");
    let over = || BatchError::Invalid("compressed records decompress past the size limit");
    if codec == 0 {
        return Ok(body);
    }
    // Streamed codecs decompress into a buffer the thread keeps (warm, grown once, and kept
    // initialized, so it is not zeroed again for every batch), and the records are then copied
    // into an allocation of their exact size: a buffer sized by guess would be kept whole by
    // every record that shares it, and be new memory each time.
    let read_all = |r: &mut dyn Read| -> Result<Bytes, BatchError> {
        SCRATCH.with(|scratch| {
            let mut out = scratch.take();
            // One byte past the limit is room to tell that the limit was passed.
            let room = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            let want = body.len().saturating_mul(4).max(64 << 10).min(room);
            if out.len() < want {
                out.resize(want, 0);
            }
            let mut filled = 0;
            let records = loop {
                let end = out.len().min(room);
                if filled == end {
                    if filled == room {
                        break Err(over());
                    }
                    out.resize(out.len().saturating_mul(2).min(room), 0);
                    continue;
                }
                match r.read(&mut out[filled..end]) {
                    Ok(0) => break Ok(Bytes::copy_from_slice(&out[..filled])),
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(bad(e)),
                }
            };
            if out.len() <= SCRATCH_KEPT {
                scratch.set(out);
            }
            records
        })
    };
    match codec {
        1 => read_all(&mut flate2::read::GzDecoder::new(&body[..])),
        3 => read_all(&mut lz4::Decoder::new(&body[..]).map_err(bad)?),
        4 => read_all(&mut zstd::stream::read::Decoder::new(&body[..]).map_err(bad)?),
        2 => {
            const XERIAL: &[u8] = b"\x82SNAPPY\x00";
            let snappy_len = |b: &[u8]| {
                snap::raw::decompress_len(b)
                    .map(|n| n as u64)
                    .map_err(|_| BatchError::Invalid("compressed records do not decompress"))
            };
            let total = if body.starts_with(XERIAL) && body.len() >= 16 {
                let mut at = 16;
                let mut total = 0u64;
                while at + 4 <= body.len() {
                    let n = u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]])
                        as usize;
                    let block = body
                        .get(at + 4..at + 4 + n)
                        .ok_or(BatchError::Truncated("snappy block"))?;
                    total += snappy_len(block)?;
                    at += 4 + n;
                }
                total
            } else {
                snappy_len(&body)?
            };
            if total > limit {
                return Err(over());
            }
            use kafka_protocol::compression::{Decompressor, Snappy};
            let mut body = body;
            Snappy::decompress(&mut body, |b: &mut Bytes| -> anyhow::Result<Bytes> {
                Ok(std::mem::take(b))
            })
            .map_err(|_| BatchError::Invalid("compressed records do not decompress"))
        }
        _ => Err(BatchError::Invalid("unknown compression codec")),
    }
}

/// Reads a varint-length-prefixed byte string (-1: null).
fn read_bytes<'a>(b: &mut &'a [u8]) -> Result<Option<&'a [u8]>, BatchError> {
    let len = read_varint(b)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if len > b.len() {
        return Err(BatchError::Truncated("record field"));
    }
    let (v, rest) = b.split_at(len);
    *b = rest;
    Ok(Some(v))
}

/// Reads a zig-zag varint (as used inside records), refusing overlong encodings.
fn read_varint(b: &mut &[u8]) -> Result<i64, BatchError> {
    let mut raw: u64 = 0;
    for i in 0..10 {
        let Some((&byte, rest)) = b.split_first() else {
            return Err(BatchError::Truncated("varint"));
        };
        *b = rest;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(BatchError::Invalid("varint too long"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

    /// Builds a real v2 batch with kafka-protocol's encoder (as a producer would).
    pub fn make_batch(base_ts: i64, stamps: &[i64], compression: Compression) -> Bytes {
        let records: Vec<Record> = stamps
            .iter()
            .enumerate()
            .map(|(i, ts)| {
                let mut r = plain_record(
                    i as i64,
                    base_ts + ts,
                    Some(Bytes::from(format!("k{i}"))),
                    Some(Bytes::from(vec![b'v'; 100])),
                );
                r.headers = [(
                    StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"x")),
                )]
                .into_iter()
                .collect();
                r
            })
            .collect();
        encode(&records, compression)
    }

    /// `records` as one v2 batch, encoded by kafka-protocol.
    pub fn encode(records: &[Record], compression: Compression) -> Bytes {
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn decompression_is_bounded_for_every_codec() {
        let zeros = vec![0u8; 2 << 20];
        use kafka_protocol::compression::Compressor;
        for codec in [1i16, 2, 3, 4] {
            let mut packed = bytes::BytesMut::new();
            let fill = |b: &mut bytes::BytesMut| {
                b.extend_from_slice(&zeros);
                Ok(())
            };
            match codec {
                1 => kafka_protocol::compression::Gzip::compress(&mut packed, fill).unwrap(),
                4 => kafka_protocol::compression::Zstd::compress(&mut packed, fill).unwrap(),
                3 => kafka_protocol::compression::Lz4::compress(&mut packed, fill).unwrap(),
                _ => kafka_protocol::compression::Snappy::compress(&mut packed, fill).unwrap(),
            }
            let packed = packed.freeze();
            let err = decompress_bounded(codec, packed.clone(), 1 << 20);
            assert!(err.is_err(), "codec {codec}: 2 MiB passed a 1 MiB limit");
            let ok = decompress_bounded(codec, packed.clone(), 4 << 20).unwrap();
            assert_eq!(ok.len(), 2 << 20, "codec {codec}");
        }
    }

    #[test]
    fn each_decompressed_batch_is_its_own_memory() {
        // Streamed codecs decompress through one buffer per thread: no batch may see another's
        // bytes, whether it comes after a larger one or after one refused for its size.
        use kafka_protocol::compression::Compressor;
        let pack = |codec: i16, content: &[u8]| {
            let mut packed = bytes::BytesMut::new();
            let fill = |b: &mut bytes::BytesMut| {
                b.extend_from_slice(content);
                Ok(())
            };
            match codec {
                1 => kafka_protocol::compression::Gzip::compress(&mut packed, fill).unwrap(),
                3 => kafka_protocol::compression::Lz4::compress(&mut packed, fill).unwrap(),
                _ => kafka_protocol::compression::Zstd::compress(&mut packed, fill).unwrap(),
            }
            packed.freeze()
        };
        for codec in [1i16, 3, 4] {
            let large = decompress_bounded(codec, pack(codec, &[7u8; 3 << 20]), 4 << 20).unwrap();
            let refused = decompress_bounded(codec, pack(codec, &[8u8; 2 << 20]), 1 << 20);
            assert!(refused.is_err(), "codec {codec}");
            let small = decompress_bounded(codec, pack(codec, b"small batch"), 4 << 20).unwrap();
            assert_eq!(&small[..], b"small batch", "codec {codec}");
            assert_eq!(large.len(), 3 << 20, "codec {codec}");
            assert!(large.iter().all(|&b| b == 7), "codec {codec}");
        }
    }

    #[test]
    fn records_share_their_batch_without_copies() {
        for compression in [Compression::None, Compression::Lz4] {
            let b = make_batch(1000, &[0, 1], compression);
            let mut seen = 0;
            for_each_record(&b, |r| {
                let v = r.value_bytes().unwrap();
                assert_eq!(&v[..], r.value.unwrap());
                // The same memory, not a copy.
                assert_eq!(v.as_ptr(), r.value.unwrap().as_ptr());
                assert_eq!(r.key_bytes().unwrap(), Bytes::from(format!("k{seen}")));
                let (_, h) = r.headers().next().unwrap();
                assert_eq!(r.share(h.unwrap()), Bytes::from_static(b"x"));
                // A slice from elsewhere is copied, not refused.
                assert_eq!(r.share(b"other"), Bytes::from_static(b"other"));
                seen += 1;
            })
            .unwrap();
            assert_eq!(seen, 2);
        }
    }

    #[test]
    fn valid_batch_passes_and_corruption_is_named() {
        let b = make_batch(1000, &[0, 5, 3], Compression::None);
        let hs = validate_produce(&b, 1 << 20).unwrap();
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].record_count, 3);
        assert_eq!(hs[0].max_timestamp, 1005);

        let mut bad = b.to_vec();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        assert!(matches!(
            validate_produce(&bad, 1 << 20),
            Err(BatchError::Crc { .. })
        ));
        assert_eq!(validate_produce(&bad, 1 << 20).unwrap_err().kafka_code(), 2);

        assert!(matches!(
            validate_produce(&b[..b.len() - 3], 1 << 20),
            Err(BatchError::Truncated(_))
        ));
        assert_eq!(validate_produce(&b, 100).unwrap_err().kafka_code(), 10);

        let mut old = b.to_vec();
        old[16] = 1;
        assert_eq!(
            validate_produce(&old, 1 << 20).unwrap_err().kafka_code(),
            43
        );
        assert!(validate_produce(&[], 1 << 20).is_err());
    }

    #[test]
    fn rewrite_keeps_crc_valid_and_stamps_log_append_time() {
        let b = make_batch(1000, &[0, 1], Compression::None);
        let h = rewritten_header(&b, 42, None);
        let mut out = h.to_vec();
        out.extend_from_slice(&b[HEADER_LEN..]);
        let parsed = validate_one(&out, 1 << 20).unwrap();
        assert_eq!(parsed.base_offset, 42);

        let h = rewritten_header(&b, 7, Some(99_999));
        let mut out = h.to_vec();
        out.extend_from_slice(&b[HEADER_LEN..]);
        let parsed = validate_one(&out, 1 << 20).unwrap();
        assert_eq!(parsed.max_timestamp, 99_999);
        let stamps = record_stamps(&Bytes::from(out)).unwrap();
        assert!(stamps.iter().all(|s| s.timestamp == 99_999));
        assert_eq!(stamps[1].offset, 8);
    }

    #[test]
    fn stamps_of_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = make_batch(5000, &[3, 1, 2], c);
            validate_produce(&b, 1 << 20).unwrap();
            let s = record_stamps(&b).unwrap();
            assert_eq!(
                s.iter().map(|s| s.timestamp).collect::<Vec<_>>(),
                vec![5003, 5001, 5002],
                "{c:?}"
            );
            assert_eq!(
                s.iter().map(|s| s.offset).collect::<Vec<_>>(),
                vec![0, 1, 2]
            );
        }
    }
}
