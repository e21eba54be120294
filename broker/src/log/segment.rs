//! One log segment: `<base>.log` holding record batches exactly as stored, with a sparse offset
//! index and time index kept in memory and written to `<base>.index` when the segment rolls or the
//! broker stops cleanly. A segment whose index file is missing or stale is rebuilt by scanning;
//! the scan validates every batch and truncates a torn tail.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};

const INDEX_MAGIC: &[u8; 8] = b"TRBIDX01";
/// Bytes of a header prefix read while scanning for an offset: base, length, epoch, magic, crc,
/// attributes, last offset delta.
const PEEK_LEN: usize = 27;

/// A sparse offset index entry: the batch starting at `base + rel` begins at byte `pos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OffsetEntry {
    rel: u32,
    pos: u32,
}

/// A time index entry: every batch before `base + rel` has timestamps at most `max_before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeEntry {
    max_before: i64,
    rel: u32,
}

/// Where a scan of a segment stopped and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub segment: PathBuf,
    pub valid_bytes: u64,
    pub dropped_bytes: u64,
    pub reason: String,
}

/// One segment of a partition's log.
#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    pub log_path: PathBuf,
    index_path: PathBuf,
    pub file: Arc<File>,
    pub size: u64,
    /// Offset after the last batch in this segment.
    pub next_offset: i64,
    offsets: Vec<OffsetEntry>,
    times: Vec<TimeEntry>,
    bytes_since_entry: u64,
    /// Largest timestamp in the segment (-1 when empty) and the base offset of its batch.
    pub max_timestamp: i64,
    pub max_timestamp_batch: i64,
    /// Wall-clock milliseconds of the first append, for roll by age.
    pub created_ms: i64,
    /// Set by recovery: the offset where the scan after the trusted prefix began, and the
    /// headers of idempotent batches it found (to rebuild producer state).
    pub scanned_from: Option<i64>,
    /// Markers come with their kind (`Some(true)` commit).
    pub scanned_producer_batches: Vec<(BatchHeader, Option<bool>)>,
}

pub fn log_file_name(base: i64) -> String {
    format!("{base:020}.log")
}

impl Segment {
    /// Creates a new, empty segment file.
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<Self> {
        let log_path = dir.join(log_file_name(base_offset));
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&log_path)?;
        file.set_len(0)?;
        Ok(Self::empty(dir, base_offset, log_path, file, now_ms))
    }

    fn empty(dir: &Path, base_offset: i64, log_path: PathBuf, file: File, now_ms: i64) -> Self {
        Self {
            base_offset,
            index_path: dir.join(format!("{base_offset:020}.index")),
            log_path,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            offsets: Vec::new(),
            times: Vec::new(),
            bytes_since_entry: 0,
            max_timestamp: -1,
            max_timestamp_batch: -1,
            created_ms: now_ms,
            scanned_from: None,
            scanned_producer_batches: Vec::new(),
        }
    }

    /// Opens an existing segment. A valid index file covers a prefix of the log that was on disk
    /// when it was written (at roll, clean shutdown, or a recovery checkpoint after an fsync);
    /// only the bytes after that prefix are scanned, validated, and truncated after the last
    /// whole, valid batch. Without a usable index file the whole log is scanned.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_interval: u32,
        now_ms: i64,
    ) -> io::Result<(Self, Option<Truncation>)> {
        let log_path = dir.join(log_file_name(base_offset));
        let file = OpenOptions::new().read(true).append(true).open(&log_path)?;
        let len = file.metadata()?.len();
        let created_ms = file
            .metadata()?
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(now_ms, |d| d.as_millis() as i64);
        let mut seg = Self::empty(dir, base_offset, log_path, file, created_ms);
        if seg.load_index(len).is_err() {
            seg.reset_index();
        }
        if seg.size == len {
            return Ok((seg, None));
        }
        let trunc = seg.scan(len, index_interval)?;
        Ok((seg, trunc))
    }

    fn reset_index(&mut self) {
        self.size = 0;
        self.next_offset = self.base_offset;
        self.offsets.clear();
        self.times.clear();
        self.bytes_since_entry = 0;
        self.max_timestamp = -1;
        self.max_timestamp_batch = -1;
    }

    /// Scans the log from `self.size` (the end of the trusted prefix), extending the indexes and
    /// truncating a torn or corrupt tail.
    fn scan(&mut self, len: u64, index_interval: u32) -> io::Result<Option<Truncation>> {
        let mut file = File::open(&self.log_path)?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(self.size))?;
        let mut reader = io::BufReader::with_capacity(1 << 20, file);
        let mut pos = self.size;
        self.scanned_from = Some(self.next_offset);
        let mut buf = Vec::new();
        let mut stop: Option<String> = None;
        while pos < len {
            let mut head = [0u8; LOG_OVERHEAD];
            if len - pos < LOG_OVERHEAD as u64 {
                stop = Some("partial batch header at the end".into());
                break;
            }
            reader.read_exact(&mut head)?;
            let Some((base, total)) = batch::peek_offset_and_len(&head) else {
                stop = Some("invalid batch length".into());
                break;
            };
            if pos + total as u64 > len {
                stop = Some(format!("batch at byte {pos} runs past the end of the file"));
                break;
            }
            buf.clear();
            buf.extend_from_slice(&head);
            buf.resize(total, 0);
            reader.read_exact(&mut buf[LOG_OVERHEAD..])?;
            let h = match batch::validate_one(&buf, u32::MAX) {
                Ok(h) => h,
                Err(e) => {
                    stop = Some(format!("batch at byte {pos}: {e}"));
                    break;
                }
            };
            if base < self.next_offset {
                stop = Some(format!(
                    "batch at byte {pos} has offset {base} below {}",
                    self.next_offset
                ));
                break;
            }
            self.note_batch(&h, pos, index_interval);
            if h.producer_id >= 0 {
                let marker = h.is_control().then(|| batch::marker_kind(&buf)).flatten();
                self.scanned_producer_batches.push((h, marker));
            }
            pos += total as u64;
        }
        let trunc = stop.map(|reason| Truncation {
            segment: self.log_path.clone(),
            valid_bytes: pos,
            dropped_bytes: len - pos,
            reason,
        });
        if trunc.is_some() {
            self.file.set_len(pos)?;
            self.file.sync_all()?;
        }
        self.size = pos;
        Ok(trunc)
    }

    /// Records a batch just written at `pos` (its header already carries the assigned offset).
    pub fn note_batch(&mut self, h: &BatchHeader, pos: u64, index_interval: u32) {
        let rel = (h.base_offset - self.base_offset) as u32;
        if self.bytes_since_entry >= u64::from(index_interval) && pos > 0 {
            self.offsets.push(OffsetEntry {
                rel,
                pos: pos as u32,
            });
            if self
                .times
                .last()
                .is_none_or(|t| t.max_before < self.max_timestamp)
            {
                self.times.push(TimeEntry {
                    max_before: self.max_timestamp,
                    rel,
                });
            }
            self.bytes_since_entry = 0;
        }
        let total = h.total_len() as u64;
        self.bytes_since_entry += total;
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.max_timestamp_batch = h.base_offset;
        }
        self.next_offset = h.last_offset() + 1;
        self.size = self.size.max(pos + total);
    }

    /// Appends already-rewritten batches with one vectored write; on failure the file is cut back.
    pub fn write_all(&mut self, slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        let start = self.size;
        let mut bufs = slices;
        let mut file = &*self.file;
        let result = (|| {
            while !bufs.is_empty() {
                match file.write_vectored(bufs) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "segment write returned 0",
                        ))
                    }
                    Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = self.file.set_len(start);
        }
        result
    }

    /// Byte position to start scanning for `offset`: the last index entry at or below it.
    pub fn position_hint(&self, offset: i64) -> u64 {
        let rel = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let i = self.offsets.partition_point(|e| e.rel <= rel);
        if i == 0 {
            0
        } else {
            u64::from(self.offsets[i - 1].pos)
        }
    }

    /// Offset from which to scan for the first record with timestamp >= `ts`.
    pub fn time_hint(&self, ts: i64) -> i64 {
        let i = self.times.partition_point(|e| e.max_before < ts);
        if i == 0 {
            self.base_offset
        } else {
            self.base_offset + i64::from(self.times[i - 1].rel)
        }
    }

    /// Writes the index file atomically for the whole segment (at roll and clean shutdown).
    pub fn persist_index(&self) -> io::Result<()> {
        self.persist_index_upto(self.size, self.next_offset)
    }

    /// Writes the index file covering the log up to byte `size` (offset `next_offset`): a
    /// recovery checkpoint, valid once that prefix has been fsynced.
    pub fn persist_index_upto(&self, size: u64, next_offset: i64) -> io::Result<()> {
        crate::fsutil::write_atomic(&self.index_path, &self.index_bytes_upto(size, next_offset))
    }

    /// Where the index file lives.
    pub fn index_path(&self) -> &Path {
        &self.index_path
    }

    /// The index file's bytes covering the log up to byte `size`.
    pub fn index_bytes_upto(&self, size: u64, next_offset: i64) -> Vec<u8> {
        let offsets: Vec<&OffsetEntry> = self
            .offsets
            .iter()
            .filter(|e| u64::from(e.pos) < size)
            .collect();
        let limit_rel = offsets.last().map_or(0, |e| e.rel);
        let times: Vec<&TimeEntry> = self
            .times
            .iter()
            .filter(|e| e.rel <= limit_rel && size > 0)
            .collect();
        let mut out = Vec::with_capacity(64 + offsets.len() * 8 + times.len() * 12);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&next_offset.to_le_bytes());
        out.extend_from_slice(&self.max_timestamp.to_le_bytes());
        out.extend_from_slice(&self.max_timestamp_batch.to_le_bytes());
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.bytes_since_entry.to_le_bytes());
        out.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
        out.extend_from_slice(&(times.len() as u32).to_le_bytes());
        for e in &offsets {
            out.extend_from_slice(&e.rel.to_le_bytes());
            out.extend_from_slice(&e.pos.to_le_bytes());
        }
        for e in &times {
            out.extend_from_slice(&e.max_before.to_le_bytes());
            out.extend_from_slice(&e.rel.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn load_index(&mut self, log_len: u64) -> Result<(), &'static str> {
        let data = std::fs::read(&self.index_path).map_err(|_| "missing")?;
        if data.len() < 68 || &data[..8] != INDEX_MAGIC {
            return Err("bad header");
        }
        let (body, crc) = data.split_at(data.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err("bad crc");
        }
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().unwrap_or([0; 4]));
        let size = u64_at(8);
        if size > log_len {
            // The log lost bytes the index covered (power loss before they reached disk).
            return Err("stale");
        }
        let n_off = u32_at(56) as usize;
        let n_time = u32_at(60) as usize;
        if body.len() != 64 + n_off * 8 + n_time * 12 {
            return Err("bad length");
        }
        self.size = size;
        self.next_offset = u64_at(16) as i64;
        self.max_timestamp = u64_at(24) as i64;
        self.max_timestamp_batch = u64_at(32) as i64;
        self.created_ms = u64_at(40) as i64;
        self.bytes_since_entry = u64_at(48);
        let mut at = 64;
        self.offsets = (0..n_off)
            .map(|_| {
                let e = OffsetEntry {
                    rel: u32_at(at),
                    pos: u32_at(at + 4),
                };
                at += 8;
                e
            })
            .collect();
        self.times = (0..n_time)
            .map(|_| {
                let e = TimeEntry {
                    max_before: u64_at(at) as i64,
                    rel: u32_at(at + 8),
                };
                at += 12;
                e
            })
            .collect();
        Ok(())
    }

    /// Removes the segment's files (its log, offset/time index and field index).
    pub fn delete_files(&self) -> io::Result<()> {
        std::fs::remove_file(&self.log_path)?;
        let field_index = self
            .log_path
            .with_file_name(crate::index::file::file_name(self.base_offset));
        for path in [&self.index_path, &field_index] {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Reads exactly `len` bytes at `pos`.
pub fn read_exact_at(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    file.read_exact_at(&mut buf, pos)?;
    Ok(buf.freeze())
}

/// Finds the batch holding `offset` by walking headers from `pos` up to `end`: returns its
/// position, or `None` when no batch in that range holds it.
pub fn find_batch(
    file: &File,
    mut pos: u64,
    end: u64,
    offset: i64,
) -> io::Result<Option<(u64, usize)>> {
    let mut head = [0u8; PEEK_LEN];
    while pos + PEEK_LEN as u64 <= end {
        file.read_exact_at(&mut head, pos)?;
        let Some((base, total)) = batch::peek_offset_and_len(&head) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "invalid batch length in segment",
            ));
        };
        let last_delta = i32::from_be_bytes([head[23], head[24], head[25], head[26]]);
        if base + i64::from(last_delta) >= offset {
            return Ok(Some((pos, total)));
        }
        pos += total as u64;
    }
    Ok(None)
}

/// Reads whole batches starting at `pos`: at least the first batch (even when larger than
/// `max_bytes`, as Kafka does), then as many whole batches as fit in `max_bytes` before `end`.
pub fn read_batches(
    file: &File,
    pos: u64,
    end: u64,
    first_len: usize,
    max_bytes: usize,
) -> io::Result<Bytes> {
    let avail = (end - pos) as usize;
    let want = max_bytes.max(first_len).min(avail);
    let data = read_exact_at(file, pos, want)?;
    let mut keep = 0usize;
    while keep < data.len() {
        match batch::peek_offset_and_len(&data[keep..]) {
            Some((_, total)) if keep + total <= data.len() => keep += total,
            _ => break,
        }
    }
    Ok(data.slice(..keep))
}

/// Reads the batch header at `pos`.
pub fn read_header(file: &File, pos: u64) -> io::Result<BatchHeader> {
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, pos)?;
    BatchHeader::parse(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::make_batch;
    use kafka_protocol::records::Compression;

    fn append(seg: &mut Segment, b: &Bytes, base: i64) {
        let h = batch::rewritten_header(b, base, None);
        let pos = seg.size;
        seg.write_all(&mut [IoSlice::new(&h), IoSlice::new(&b[HEADER_LEN..])])
            .unwrap();
        let hh = BatchHeader::parse(&h).unwrap();
        seg.note_batch(&hh, pos, 256);
    }

    #[test]
    fn index_survives_reopen_and_scan_truncates_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 100, 0).unwrap();
        let mut base = 100;
        for i in 0..20 {
            let b = make_batch(1000 + i * 10, &[0, 1, 2], Compression::None);
            append(&mut seg, &b, base);
            base += 3;
        }
        assert_eq!(seg.next_offset, 160);
        assert!(!seg.offsets.is_empty());
        seg.persist_index().unwrap();
        let (loaded, t) = Segment::open(dir.path(), 100, 256, 0).unwrap();
        assert!(t.is_none());
        assert_eq!(loaded.offsets, seg.offsets);
        assert_eq!(loaded.times, seg.times);
        assert_eq!(loaded.next_offset, 160);

        // Cut the file mid-batch: the scan keeps whole batches only.
        let full = seg.size;
        seg.file.set_len(full - 10).unwrap();
        let (scanned, t) = Segment::open(dir.path(), 100, 256, 0).unwrap();
        let t = t.expect("truncation reported");
        assert_eq!(scanned.next_offset, 157);
        assert!(t.dropped_bytes > 0);
        assert_eq!(
            std::fs::metadata(&scanned.log_path).unwrap().len(),
            scanned.size
        );

        // Corrupt a byte inside the last batch: CRC catches it.
        let mut data = std::fs::read(&scanned.log_path).unwrap();
        let n = data.len();
        data[n - 5] ^= 0x55;
        std::fs::write(&scanned.log_path, &data).unwrap();
        let (s2, t) = Segment::open(dir.path(), 100, 256, 0).unwrap();
        assert!(t.unwrap().reason.contains("CRC"));
        assert_eq!(s2.next_offset, 154);
    }

    #[test]
    fn checkpoint_prefix_then_scan_of_the_rest_matches_a_full_scan() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0, 0).unwrap();
        let mut base = 0;
        for i in 0..30 {
            append(
                &mut seg,
                &make_batch(i * 7, &[0, 3], Compression::None),
                base,
            );
            base += 2;
            if i == 12 {
                // Recovery checkpoint covering the first 13 batches.
                seg.persist_index_upto(seg.size, seg.next_offset).unwrap();
            }
        }
        let (reopened, t) = Segment::open(dir.path(), 0, 256, 0).unwrap();
        assert!(t.is_none());
        assert_eq!(reopened.next_offset, 60);
        assert_eq!(reopened.size, seg.size);
        assert_eq!(
            reopened.offsets, seg.offsets,
            "index rebuilt past the checkpoint equals the live one"
        );
        assert_eq!(reopened.max_timestamp, seg.max_timestamp);
        // A checkpoint claiming more than the file holds is ignored (full scan instead).
        seg.persist_index_upto(seg.size + 100, 99).unwrap();
        let (full, _) = Segment::open(dir.path(), 0, 256, 0).unwrap();
        assert_eq!(full.next_offset, 60);
    }

    #[test]
    fn lookups_find_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0, 0).unwrap();
        for i in 0..50 {
            let b = make_batch(i * 100, &[0, 50], Compression::None);
            append(&mut seg, &b, i * 2);
        }
        for target in [0i64, 1, 37, 99] {
            let hint = seg.position_hint(target);
            let (pos, _) = find_batch(&seg.file, hint, seg.size, target)
                .unwrap()
                .unwrap();
            let h = read_header(&seg.file, pos).unwrap();
            assert!(
                h.base_offset <= target && target <= h.last_offset(),
                "{target}"
            );
        }
        assert!(find_batch(&seg.file, 0, seg.size, 100).unwrap().is_none());
        // Time hint never skips past the answer.
        for ts in [0i64, 150, 2500, 4950] {
            let from = seg.time_hint(ts);
            assert!(from <= ts / 100 * 2 + 1, "ts {ts} hint {from}");
        }
    }
}
