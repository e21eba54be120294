//! One partition's log: an ordered list of segments, the append path (validate, assign offsets,
//! one vectored write, index), the high watermark readers see, the group-commit flusher, reads
//! for Fetch, timestamp lookups, retention, DeleteRecords, and recovery at startup.
//!
//! Visibility: under `flush: os` a batch is visible (and acknowledged) once written to the OS;
//! under `flush: fsync` only once fdatasync has covered it, so consumers never see data a crash
//! could take back. Many appends waiting on the same fsync share it (group commit).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{watch, Notify};

use super::batch::{self, BatchError, HEADER_LEN};
use super::producers::{Check, ProducerState};
use super::segment::{self, Segment, Truncation};
use crate::topic_config::{FlushPolicy, TimestampType, TopicConfig};

const LOG_START_FILE: &str = "log-start-offset";
const PRODUCERS_FILE: &str = "producer-state";
/// Write a recovery checkpoint (fsync + index of the active segment) after this many bytes...
const CHECKPOINT_BYTES: u64 = 64 << 20;
/// ...or this long after the last one, whichever comes first.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
    #[error("partition is closed")]
    Closed,
    #[error("{reason}")]
    Producer { code: i16, reason: String },
}

impl AppendError {
    pub fn kafka_code(&self) -> i16 {
        match self {
            AppendError::Batch(b) => b.kafka_code(),
            AppendError::Io(_) => 56, // KAFKA_STORAGE_ERROR
            AppendError::Closed => 3, // UNKNOWN_TOPIC_OR_PARTITION
            AppendError::Producer { code, .. } => *code,
        }
    }
}

/// Why a read or lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OutOfRange { offset: i64, start: i64, end: i64 },
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

impl ReadError {
    pub fn kafka_code(&self) -> i16 {
        match self {
            ReadError::OutOfRange { .. } => 1, // OFFSET_OUT_OF_RANGE
            ReadError::Io(_) => 56,
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    pub base_offset: i64,
    /// Offset after the last appended record: the high watermark that acknowledges it.
    pub end_offset: i64,
    pub log_append_time: i64,
    pub log_start: i64,
}

/// A read_committed read: the records, the last stable offset, and the aborted transactions
/// (producer id, first offset) the records may hold.
pub type CommittedRead = (ReadResult, i64, Vec<(i64, i64)>);

/// What a read returned.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Point {
    offset: i64,
    segment: i64,
    position: u64,
}

#[derive(Debug)]
struct LogState {
    segments: VecDeque<Segment>,
    next_offset: i64,
    log_start: i64,
    /// The high watermark and where it sits in the log.
    visible: Point,
    dirty: bool,
    /// Rolled segments whose files still need an fsync.
    unsynced: Vec<Arc<File>>,
    /// Where the last read ended, so sequential consumers skip the index walk.
    read_hint: Point,
    /// Bytes appended since the last recovery checkpoint, and when it was written.
    since_checkpoint: u64,
    last_checkpoint: std::time::Instant,
    /// Idempotent producers' recent batches, for deduplicating retries.
    producers: ProducerState,
}

/// One partition of a topic.
#[derive(Debug)]
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    dir: PathBuf,
    state: Mutex<LogState>,
    config: RwLock<Arc<TopicConfig>>,
    hw: watch::Sender<i64>,
    flush_wake: Notify,
    closed: AtomicBool,
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Partition {
    /// Opens (or creates) the partition in `dir`, recovering the log: each segment loads its
    /// index file (the active one's is the last recovery checkpoint) and scans only what follows.
    pub fn open(
        topic: Arc<str>,
        index: i32,
        dir: PathBuf,
        config: Arc<TopicConfig>,
    ) -> io::Result<(Arc<Self>, Vec<Truncation>)> {
        std::fs::create_dir_all(&dir)?;
        let now = now_ms();
        let mut bases: Vec<i64> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.strip_suffix(".log")
                    .and_then(|b| b.parse::<i64>().ok())
            })
            .collect();
        bases.sort_unstable();
        let stored_start = read_log_start(&dir)?;
        let mut truncations = Vec::new();
        let mut segments = VecDeque::new();
        for base in bases {
            let (seg, t) = Segment::open(&dir, base, config.index_interval_bytes, now)?;
            if let Some(t) = t {
                tracing::warn!(segment = %t.segment.display(), dropped_bytes = t.dropped_bytes, reason = %t.reason,
                    "truncated segment during recovery");
                truncations.push(t);
            }
            segments.push_back(seg);
        }
        if segments.is_empty() {
            let base = stored_start.unwrap_or(0);
            segments.push_back(Segment::create(&dir, base, now)?);
            crate::fsutil::sync_dir(&dir)?;
        }
        let first_base = segments.front().map_or(0, |s| s.base_offset);
        let next_offset = segments.back().map_or(0, |s| s.next_offset);
        let log_start = stored_start
            .unwrap_or(first_base)
            .max(first_base)
            .min(next_offset);
        let producers = recover_producers(&dir, &mut segments, log_start, next_offset);
        let end = end_point(&segments);
        let (hw, _) = watch::channel(end.offset);
        let p = Arc::new(Self {
            topic,
            index,
            dir,
            state: Mutex::new(LogState {
                segments,
                next_offset,
                log_start,
                visible: end,
                dirty: false,
                unsynced: Vec::new(),
                read_hint: end,
                since_checkpoint: 0,
                last_checkpoint: std::time::Instant::now(),
                producers,
            }),
            config: RwLock::new(config),
            hw,
            flush_wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&p);
        tokio::spawn(async move { run_flusher(weak).await });
        Ok((p, truncations))
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> Arc<TopicConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_config(&self, c: Arc<TopicConfig>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = c;
        self.flush_wake.notify_one();
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The high watermark: offsets below it are readable.
    pub fn high_watermark(&self) -> i64 {
        *self.hw.borrow()
    }

    pub fn log_start(&self) -> i64 {
        self.lock().log_start
    }

    /// Offset the next append will get (log end offset).
    pub fn log_end(&self) -> i64 {
        self.lock().next_offset
    }

    /// Total bytes in the partition's segments.
    pub fn size_bytes(&self) -> u64 {
        self.lock().segments.iter().map(|s| s.size).sum()
    }

    /// A receiver that changes whenever the high watermark moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.hw.subscribe()
    }

    /// Validates and appends the batches in `records`; returns once written to the OS (the caller
    /// waits for `end_offset` to become visible before acknowledging under `flush: fsync`).
    pub fn append(&self, records: &Bytes) -> Result<Appended, AppendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AppendError::Closed);
        }
        let cfg = self.config();
        let headers = batch::validate_produce(records, cfg.max_message_bytes)?;
        if headers.iter().any(|h| h.is_control()) {
            return Err(AppendError::Batch(BatchError::Invalid(
                "control batches (transaction markers) are written by the broker only",
            )));
        }
        let mut guard = self.lock();
        let st = &mut *guard;
        // Idempotent producers: a retried batch is answered with its original offsets.
        for h in &headers {
            match st.producers.check(h) {
                Check::New => {}
                Check::Duplicate {
                    base_offset,
                    last_offset,
                } if headers.len() == 1 => {
                    return Ok(Appended {
                        base_offset,
                        end_offset: last_offset + 1,
                        log_append_time: -1,
                        log_start: st.log_start,
                    });
                }
                Check::Duplicate { .. } => {
                    return Err(AppendError::Producer {
                        code: super::producers::OUT_OF_ORDER_SEQUENCE_NUMBER,
                        reason: format!(
                            "a request mixing retried and new batches (topic {}, partition {})",
                            self.topic, self.index
                        ),
                    })
                }
                Check::Reject { code, reason } => {
                    return Err(AppendError::Producer {
                        code,
                        reason: format!(
                            "{reason} (topic {}, partition {})",
                            self.topic, self.index
                        ),
                    })
                }
            }
        }
        self.write_locked(st, records, &headers, true, &cfg)
    }

    /// Appends a mirror's batches at their own base offsets (offset-preserving mirroring): the
    /// source's offsets, timestamps, producers and transaction markers are kept, a jump forward
    /// leaves a gap (and moves the log start of an empty log), and batches this log already
    /// holds are skipped, so a mirror that resends after a crash writes nothing twice. A log
    /// ending below `expected_end` lost an earlier mirror write: refused, so no hole appears.
    /// `headers` are `records`' batches as `batch::validate_produce` returned them.
    pub fn append_mirrored(
        &self,
        records: &Bytes,
        headers: &[batch::BatchHeader],
        expected_end: i64,
    ) -> Result<Appended, AppendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AppendError::Closed);
        }
        let cfg = self.config();
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.next_offset < expected_end {
            return Err(AppendError::Producer {
                code: 1, // OFFSET_OUT_OF_RANGE
                reason: format!(
                    "mirror write expects the log to end at {expected_end}, it ends at {} (topic {}, partition {})",
                    st.next_offset, self.topic, self.index
                ),
            });
        }
        let mut skip = 0usize;
        let mut skipped_bytes = 0usize;
        let mut prev_end = i64::MIN;
        for h in headers {
            let end = h.base_offset + i64::from(h.last_offset_delta) + 1;
            if h.base_offset < prev_end {
                return Err(BatchError::Invalid("mirrored batches overlap or go backwards").into());
            }
            prev_end = end;
            if end <= st.next_offset {
                skip += 1;
                skipped_bytes += h.total_len();
            } else if h.base_offset < st.next_offset {
                return Err(AppendError::Producer {
                    code: 2, // CORRUPT_MESSAGE
                    reason: format!(
                        "mirrored batch {}..{end} straddles the log end {} (topic {}, partition {})",
                        h.base_offset, st.next_offset, self.topic, self.index
                    ),
                });
            }
        }
        let Some(first) = headers.get(skip) else {
            return Ok(Appended {
                base_offset: headers.first().map_or(st.next_offset, |h| h.base_offset),
                end_offset: st.next_offset,
                log_append_time: -1,
                log_start: st.log_start,
            });
        };
        let span = prev_end - st.next_offset.min(first.base_offset);
        if span > i64::from(u32::MAX / 2) {
            return Err(BatchError::Invalid("mirrored batches span more than 2^31 offsets").into());
        }
        self.skip_to(st, first.base_offset)?;
        let rest = records.slice(skipped_bytes..);
        self.write_locked(st, &rest, &headers[skip..], false, &cfg)
    }

    /// Moves the log end forward to `offset`, leaving a gap: an empty log starts there, and a
    /// new segment begins there when the active one could not index that far.
    fn skip_to(&self, st: &mut LogState, offset: i64) -> io::Result<()> {
        if offset <= st.next_offset {
            return Ok(());
        }
        let empty = st.next_offset == st.log_start;
        let far = st
            .segments
            .back()
            .is_some_and(|s| offset - s.base_offset > i64::from(u32::MAX / 2));
        st.next_offset = offset;
        if far {
            self.roll(st, now_ms())?;
        }
        if empty {
            st.log_start = offset;
            crate::fsutil::write_atomic(
                &self.dir.join(LOG_START_FILE),
                offset.to_string().as_bytes(),
            )?;
            self.drop_segments_below_start(st)?;
        }
        Ok(())
    }

    /// Appends a transaction marker (commit or abort) for `producer_id` at `producer_epoch`,
    /// ending its transaction on this partition.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<Appended, AppendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AppendError::Closed);
        }
        let cfg = self.config();
        let records = batch::control_batch(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            now_ms(),
        )?;
        let headers = batch::validate_produce(&records, u32::MAX)?;
        let mut guard = self.lock();
        self.write_locked(&mut guard, &records, &headers, true, &cfg)
    }

    /// Writes validated batches (one vectored write), indexes them, records their producers and
    /// makes them visible under the flush policy. With `assign`, batches get offsets from the
    /// log end (and the append time under LogAppendTime); without, they keep their own (mirror).
    fn write_locked(
        &self,
        st: &mut LogState,
        records: &Bytes,
        headers: &[batch::BatchHeader],
        assign: bool,
        cfg: &TopicConfig,
    ) -> Result<Appended, AppendError> {
        let now = now_ms();
        let lat = (assign && cfg.timestamp_type == TimestampType::LogAppendTime).then_some(now);
        self.maybe_roll(st, records.len() as u64, now, cfg)?;
        let base = if assign {
            st.next_offset
        } else {
            headers.first().map_or(st.next_offset, |h| h.base_offset)
        };
        let mut rewritten = Vec::with_capacity(headers.len());
        let mut next = base;
        let mut at = 0usize;
        for h in headers {
            if !assign {
                next = h.base_offset;
            }
            rewritten.push(batch::rewritten_header(&records[at..], next, lat));
            next += i64::from(h.last_offset_delta) + 1;
            at += h.total_len();
        }
        let mut slices = Vec::with_capacity(headers.len() * 2);
        let mut at = 0usize;
        for (h, hdr) in headers.iter().zip(&rewritten) {
            slices.push(IoSlice::new(hdr));
            slices.push(IoSlice::new(&records[at + HEADER_LEN..at + h.total_len()]));
            at += h.total_len();
        }
        let interval = cfg.index_interval_bytes;
        let Some(seg) = st.segments.back_mut() else {
            return Err(AppendError::Closed);
        };
        seg.write_all(&mut slices)?;
        let mut pos = seg.size;
        let mut at = 0usize;
        for (h, hdr) in headers.iter().zip(&rewritten) {
            let marker = if h.is_control() {
                batch::marker_kind(&records[at..])
            } else {
                None
            };
            at += h.total_len();
            let mut stored = *h;
            stored.base_offset = i64::from_be_bytes([
                hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[5], hdr[6], hdr[7],
            ]);
            if let Some(t) = lat {
                stored.max_timestamp = t;
            }
            seg.note_batch(&stored, pos, interval);
            st.producers.record(&stored, marker, now);
            pos += h.total_len() as u64;
        }
        st.next_offset = next;
        st.since_checkpoint += records.len() as u64;
        if st.since_checkpoint >= CHECKPOINT_BYTES {
            self.flush_wake.notify_one();
        }
        let log_start = st.log_start;
        match cfg.flush {
            FlushPolicy::Os => {
                st.visible = end_point(&st.segments);
                self.hw.send_replace(next);
            }
            FlushPolicy::Fsync => {
                st.dirty = true;
                self.flush_wake.notify_one();
            }
        }
        if cfg.flush_ms.is_some() {
            st.dirty = true;
        }
        Ok(Appended {
            base_offset: base,
            end_offset: next,
            log_append_time: lat.unwrap_or(-1),
            log_start,
        })
    }

    /// The last stable offset: the high watermark, or the first offset of the oldest
    /// transaction still in progress when that is lower. read_committed readers stop here.
    pub fn last_stable_offset(&self) -> i64 {
        let st = self.lock();
        lso(&st)
    }

    /// Producers this partition knows, for DescribeProducers.
    pub fn producers(&self) -> Vec<super::producers::ProducerView> {
        self.lock().producers.describe()
    }

    fn maybe_roll(
        &self,
        st: &mut LogState,
        incoming: u64,
        now: i64,
        cfg: &TopicConfig,
    ) -> io::Result<()> {
        let Some(active) = st.segments.back() else {
            return Ok(());
        };
        let too_big = active.size > 0 && active.size + incoming > cfg.segment_bytes;
        let too_old = active.size > 0 && now - active.created_ms >= cfg.segment_ms;
        if too_big || too_old {
            self.roll(st, now)?;
        }
        Ok(())
    }

    /// Closes the active segment (writing its index) and starts a new one at the log end.
    ///
    /// Runs under the partition lock, so it does no fsync: the closed segment's file and the
    /// folder entry of the new one are synced by the next flush (before anything in them is
    /// acknowledged under `flush: fsync`), and the index and producer snapshot written here are
    /// validated at recovery and rebuilt if a power loss left them stale.
    fn roll(&self, st: &mut LogState, now: i64) -> io::Result<()> {
        if let Some(active) = st.segments.back() {
            crate::fsutil::write_replace(
                active.index_path(),
                &active.index_bytes_upto(active.size, active.next_offset),
            )?;
            st.unsynced.push(active.file.clone());
        }
        crate::fsutil::write_replace(
            &self.dir.join(PRODUCERS_FILE),
            &st.producers.snapshot(st.next_offset),
        )?;
        st.producers.snapshotted(st.next_offset);
        let seg = Segment::create(&self.dir, st.next_offset, now)?;
        st.segments.push_back(seg);
        st.dirty = true;
        Ok(())
    }

    /// Waits until `end_offset` is visible (acknowledgeable); false on timeout.
    pub async fn wait_visible(&self, end_offset: i64, timeout: Duration) -> bool {
        if *self.hw.borrow() >= end_offset {
            return true;
        }
        let mut rx = self.hw.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|hw| *hw >= end_offset)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// fsyncs everything written so far and then makes it visible. Returns once done.
    pub async fn flush(&self) -> io::Result<()> {
        let (files, point, checkpoint) = {
            let mut st = self.lock();
            let checkpoint = st.since_checkpoint >= CHECKPOINT_BYTES
                || (st.since_checkpoint > 0 && st.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL);
            if !st.dirty && st.unsynced.is_empty() && !checkpoint {
                return Ok(());
            }
            st.dirty = false;
            let mut files = std::mem::take(&mut st.unsynced);
            if let Some(a) = st.segments.back() {
                files.push(a.file.clone());
            }
            (files, end_point(&st.segments), checkpoint)
        };
        // Rolled segments (more than the active file) mean new folder entries to make durable.
        let dir = (files.len() > 1).then(|| self.dir.clone());
        let synced = tokio::task::spawn_blocking(move || {
            files.iter().try_for_each(|f| f.sync_data())?;
            dir.map_or(Ok(()), |d| crate::fsutil::sync_dir(&d))
        })
        .await
        .map_err(io::Error::other)?;
        if let Err(e) = synced {
            self.lock().dirty = true;
            return Err(e);
        }
        let index_file = {
            let mut st = self.lock();
            if point.offset > st.visible.offset {
                st.visible = point;
                self.hw.send_replace(point.offset);
            }
            if checkpoint {
                st.since_checkpoint = st
                    .since_checkpoint
                    .saturating_sub(CHECKPOINT_BYTES)
                    .min(CHECKPOINT_BYTES);
                st.last_checkpoint = std::time::Instant::now();
            }
            // The prefix up to `point` is on disk now: record it as the recovery checkpoint.
            let index_file = st
                .segments
                .back()
                .filter(|s| checkpoint && s.base_offset == point.segment)
                .map(|s| {
                    (
                        s.index_path().to_path_buf(),
                        s.index_bytes_upto(point.position, point.offset),
                        st.producers.snapshot(point.offset),
                    )
                });
            if index_file.is_some() {
                st.producers.snapshotted(point.offset);
            }
            index_file
        };
        if let Some((path, bytes, producers)) = index_file {
            let producers_path = self.dir.join(PRODUCERS_FILE);
            tokio::task::spawn_blocking(move || {
                crate::fsutil::write_atomic(&path, &bytes)?;
                crate::fsutil::write_atomic(&producers_path, &producers)
            })
            .await
            .map_err(io::Error::other)??;
        }
        Ok(())
    }

    /// The segments' first offsets and the offset after each one's last batch, oldest first.
    pub fn segment_ranges(&self) -> Vec<(i64, i64)> {
        let st = self.lock();
        st.segments
            .iter()
            .map(|s| (s.base_offset, s.next_offset))
            .collect()
    }

    /// Reads whole batches from `offset`, up to `max_bytes` (at least one batch).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, ReadError> {
        let mut offset = offset;
        loop {
            let (file, hint, exact, end, seg_base, hw, log_start) = {
                let st = self.lock();
                let hw = st.visible.offset;
                if offset < st.log_start || offset > hw {
                    return Err(ReadError::OutOfRange {
                        offset,
                        start: st.log_start,
                        end: hw,
                    });
                }
                let empty = ReadResult {
                    records: Bytes::new(),
                    high_watermark: hw,
                    log_start: st.log_start,
                };
                if offset == hw {
                    return Ok(empty);
                }
                let i = st
                    .segments
                    .partition_point(|s| s.base_offset <= offset)
                    .saturating_sub(1);
                let Some(seg) = st.segments.iter().skip(i).find(|s| offset < s.next_offset) else {
                    return Ok(empty);
                };
                let end = if seg.base_offset == st.visible.segment {
                    st.visible.position
                } else {
                    seg.size
                };
                let h = st.read_hint;
                let exact = h.offset == offset && h.segment == seg.base_offset;
                let hint = if exact {
                    h.position
                } else {
                    seg.position_hint(offset)
                };
                (
                    seg.file.clone(),
                    hint,
                    exact,
                    end,
                    seg.base_offset,
                    hw,
                    st.log_start,
                )
            };
            let found = if exact {
                let mut head = [0u8; 12];
                read_at(&file, &mut head, hint)?;
                batch::peek_offset_and_len(&head).map(|(_, len)| (hint, len))
            } else {
                segment::find_batch(&file, hint, end, offset)?
            };
            let Some((pos, first_len)) = found else {
                // The offset falls in a gap at the end of this segment: continue in the next.
                let st = self.lock();
                match st.segments.iter().find(|s| s.base_offset > seg_base) {
                    Some(next) if next.base_offset <= hw => {
                        offset = offset.max(next.base_offset);
                        continue;
                    }
                    _ => {
                        return Ok(ReadResult {
                            records: Bytes::new(),
                            high_watermark: hw,
                            log_start,
                        })
                    }
                }
            };
            let records = segment::read_batches(&file, pos, end, first_len, max_bytes)?;
            if let Some(last) = last_offset_of(&records) {
                let mut st = self.lock();
                st.read_hint = Point {
                    offset: last + 1,
                    segment: seg_base,
                    position: pos + records.len() as u64,
                };
            }
            return Ok(ReadResult {
                records,
                high_watermark: hw,
                log_start,
            });
        }
    }

    /// A read_committed read: whole batches from `offset` below the last stable offset, with the
    /// aborted transactions (producer id, first offset) whose records it may hold.
    pub fn read_committed(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<CommittedRead, ReadError> {
        let mut r = self.read(offset, max_bytes)?;
        let (stable, aborted) = {
            let st = self.lock();
            let stable = lso(&st);
            // Keep only the batches that start below the LSO (a stable prefix: stability only grows).
            let mut at = 0usize;
            let mut last = None;
            while let Some((base, total)) = batch::peek_offset_and_len(&r.records[at..]) {
                if base >= stable || at + total > r.records.len() {
                    break;
                }
                last = batch::BatchHeader::parse(&r.records[at..])
                    .ok()
                    .map(|h| h.last_offset());
                at += total;
            }
            r.records.truncate(at);
            let aborted =
                last.map_or_else(Vec::new, |last| st.producers.aborted_between(offset, last));
            (stable, aborted)
        };
        Ok((r, stable, aborted))
    }

    /// The first offset whose record timestamp is >= `ts`, with that timestamp; `None` if none.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, ReadError> {
        let targets: Vec<(Arc<File>, u64, u64, i64)> = {
            let st = self.lock();
            st.segments
                .iter()
                .filter(|s| s.max_timestamp >= ts && s.base_offset < st.visible.offset)
                .map(|s| {
                    let end = if s.base_offset == st.visible.segment {
                        st.visible.position
                    } else {
                        s.size
                    };
                    let from = s.time_hint(ts).max(st.log_start);
                    (s.file.clone(), s.position_hint(from), end, from)
                })
                .collect()
        };
        let (hw, log_start) = (self.high_watermark(), self.log_start());
        for (file, hint, end, from) in targets {
            let Some((mut pos, _)) = segment::find_batch(&file, hint, end, from)? else {
                continue;
            };
            while pos < end {
                let h = segment::read_header(&file, pos)?;
                if h.max_timestamp >= ts && h.last_offset() >= log_start {
                    let data = segment::read_exact_at(&file, pos, h.total_len())?;
                    let stamps = batch::record_stamps(&data)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    if let Some(s) = stamps
                        .iter()
                        .find(|s| s.timestamp >= ts && s.offset >= log_start && s.offset < hw)
                    {
                        return Ok(Some((s.offset, s.timestamp)));
                    }
                }
                pos += h.total_len() as u64;
            }
        }
        Ok(None)
    }

    /// The offset and timestamp of the record with the largest timestamp (ListOffsets -3).
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, ReadError> {
        let best = {
            let st = self.lock();
            st.segments
                .iter()
                .filter(|s| s.max_timestamp >= 0 && s.max_timestamp_batch >= st.log_start)
                .max_by_key(|s| (s.max_timestamp, std::cmp::Reverse(s.base_offset)))
                .map(|s| {
                    (
                        s.file.clone(),
                        s.position_hint(s.max_timestamp_batch),
                        s.size,
                        s.max_timestamp_batch,
                        s.max_timestamp,
                    )
                })
        };
        let Some((file, hint, end, batch_base, max_ts)) = best else {
            return Ok(None);
        };
        let Some((pos, len)) = segment::find_batch(&file, hint, end, batch_base)? else {
            return Ok(None);
        };
        let data = segment::read_exact_at(&file, pos, len)?;
        let stamps = batch::record_stamps(&data)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(stamps
            .iter()
            .find(|s| s.timestamp == max_ts)
            .map(|s| (s.offset, s.timestamp)))
    }

    /// Moves the log start to `offset` (-1: the high watermark) and drops whole segments below it.
    pub fn delete_records(&self, offset: i64) -> Result<i64, ReadError> {
        let mut st = self.lock();
        let hw = st.visible.offset;
        let target = if offset == -1 { hw } else { offset };
        if target < 0 || target > hw {
            return Err(ReadError::OutOfRange {
                offset,
                start: st.log_start,
                end: hw,
            });
        }
        if target > st.log_start {
            st.log_start = target;
            crate::fsutil::write_atomic(
                &self.dir.join(LOG_START_FILE),
                target.to_string().as_bytes(),
            )?;
            self.drop_segments_below_start(&mut st)?;
        }
        Ok(st.log_start)
    }

    fn drop_segments_below_start(&self, st: &mut LogState) -> io::Result<()> {
        while st.segments.len() > 1
            && st
                .segments
                .front()
                .is_some_and(|s| s.next_offset <= st.log_start)
        {
            if let Some(s) = st.segments.pop_front() {
                s.delete_files()?;
            }
        }
        Ok(())
    }

    /// Deletes segments past `retention.ms` or beyond `retention.bytes`, and forgets idempotent
    /// producers idle for `producer.id.expiration.ms`; returns how many segments went.
    pub fn enforce_retention(&self, now: i64) -> io::Result<usize> {
        let cfg = self.config();
        let mut st = self.lock();
        let log_start = st.log_start;
        st.producers.forget_aborted_below(log_start);
        let expired = st.producers.expire(now, cfg.producer_id_expiration_ms);
        if expired > 0 {
            tracing::debug!(topic = %self.topic, partition = self.index, expired, "expired idle producer ids");
        }
        let mut deleted = 0;
        loop {
            let total: u64 = st.segments.iter().map(|s| s.size).sum();
            let Some(first) = st.segments.front() else {
                break;
            };
            let last_one = st.segments.len() == 1;
            let by_size = cfg.retention_bytes >= 0
                && total.saturating_sub(first.size) >= cfg.retention_bytes as u64
                && total > cfg.retention_bytes as u64;
            let newest = if first.max_timestamp >= 0 {
                first.max_timestamp
            } else {
                first.created_ms
            };
            let by_time =
                cfg.retention_ms >= 0 && first.size > 0 && now - newest > cfg.retention_ms;
            if !(by_size || by_time) {
                break;
            }
            if last_one {
                // Expired data in the active segment: roll it first so it can go (as Kafka does).
                if first.next_offset > st.visible.offset {
                    break; // not yet durable; retention waits for the flusher
                }
                self.roll(&mut st, now)?;
                continue;
            }
            // Never delete data that is not yet visible.
            if first.next_offset > st.visible.offset {
                break;
            }
            if let Some(s) = st.segments.pop_front() {
                s.delete_files()?;
                deleted += 1;
            }
            let new_start = st
                .segments
                .front()
                .map_or(st.next_offset, |s| s.base_offset);
            st.log_start = st.log_start.max(new_start);
        }
        Ok(deleted)
    }

    /// Writes the active segment's index so the next start needs no scan (clean shutdown).
    pub fn close(&self) -> io::Result<()> {
        self.closed.store(true, Ordering::Release);
        self.flush_wake.notify_one();
        let st = self.lock();
        for s in &st.unsynced {
            s.sync_data()?;
        }
        if let Some(a) = st.segments.back() {
            a.file.sync_data()?;
            a.persist_index()?;
        }
        crate::fsutil::write_atomic(
            &self.dir.join(PRODUCERS_FILE),
            &st.producers.snapshot(st.next_offset),
        )?;
        Ok(())
    }

    /// Stops the flusher and removes the partition's files (topic deletion).
    pub fn destroy(&self) -> io::Result<()> {
        self.closed.store(true, Ordering::Release);
        self.flush_wake.notify_one();
        let _st = self.lock();
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, pos)
}

fn lso(st: &LogState) -> i64 {
    st.producers
        .first_unstable()
        .map_or(st.visible.offset, |f| f.min(st.visible.offset))
}

fn end_point(segments: &VecDeque<Segment>) -> Point {
    segments.back().map_or(
        Point {
            offset: 0,
            segment: 0,
            position: 0,
        },
        |s| Point {
            offset: s.next_offset,
            segment: s.base_offset,
            position: s.size,
        },
    )
}

/// Rebuilds producer state: the snapshot written with the last checkpoint, plus the batches
/// recovery scanned after it. If the snapshot does not end exactly where the scan began (say a
/// crash fell between writing the index and the snapshot), the state is rebuilt from every batch
/// header in the log, so no transaction in progress or aborted is forgotten.
fn recover_producers(
    dir: &Path,
    segments: &mut VecDeque<Segment>,
    log_start: i64,
    log_end: i64,
) -> ProducerState {
    let snapshot = std::fs::read(dir.join(PRODUCERS_FILE))
        .ok()
        .and_then(|b| ProducerState::load(&b));
    let scan_start = segments
        .iter()
        .filter_map(|s| s.scanned_from)
        .min()
        .unwrap_or(log_end);
    let scanned: Vec<_> = segments
        .iter_mut()
        .flat_map(|s| std::mem::take(&mut s.scanned_producer_batches))
        .collect();
    // A recovered producer counts as seen now, so it is not expired at once.
    let now = now_ms();
    let mut state = match snapshot {
        Some((offset, state)) if offset == scan_start => state,
        _ => match rescan_producers(segments, log_start, scan_start) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not rebuild producer state from the log; using the recovered tail only");
                ProducerState::default()
            }
        },
    };
    for (h, marker) in scanned {
        state.record(&h, marker, now);
    }
    state.forget_aborted_below(log_start);
    state
}

/// Producer state from the headers of every batch in `[log_start, upto)` (markers read whole).
fn rescan_producers(
    segments: &VecDeque<Segment>,
    log_start: i64,
    upto: i64,
) -> io::Result<ProducerState> {
    let mut state = ProducerState::default();
    let now = now_ms();
    for seg in segments {
        if seg.next_offset <= log_start || seg.base_offset >= upto {
            continue;
        }
        let mut pos = 0u64;
        while pos < seg.size {
            let h = segment::read_header(&seg.file, pos)?;
            if h.base_offset >= upto {
                break;
            }
            if h.producer_id >= 0 {
                let marker = if h.is_control() {
                    batch::marker_kind(&segment::read_exact_at(&seg.file, pos, h.total_len())?)
                } else {
                    None
                };
                state.record(&h, marker, now);
            }
            pos += h.total_len() as u64;
        }
    }
    Ok(state)
}

fn read_log_start(dir: &Path) -> io::Result<Option<i64>> {
    match std::fs::read_to_string(dir.join(LOG_START_FILE)) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The last offset of the last whole batch in `records`.
fn last_offset_of(records: &[u8]) -> Option<i64> {
    let mut at = 0;
    let mut last = None;
    while let Some((_, total)) = batch::peek_offset_and_len(&records[at..]) {
        if at + total > records.len() || total < HEADER_LEN {
            break;
        }
        last = batch::BatchHeader::parse(&records[at..])
            .ok()
            .map(|h| h.last_offset());
        at += total;
    }
    last
}

/// The per-partition flusher: fsyncs when appends ask for it (group commit) and every `flush.ms`.
async fn run_flusher(p: std::sync::Weak<Partition>) {
    loop {
        let (interval, wake) = {
            let Some(p) = p.upgrade() else { return };
            if p.closed.load(Ordering::Acquire) {
                return;
            }
            let cfg = p.config();
            (cfg.flush_ms.map(Duration::from_millis), p)
        };
        let sleep = tokio::time::sleep(
            interval
                .unwrap_or(CHECKPOINT_INTERVAL)
                .min(CHECKPOINT_INTERVAL),
        );
        tokio::select! {
            _ = wake.flush_wake.notified() => {}
            _ = sleep => {}
        }
        if wake.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = wake.flush().await {
            tracing::error!(topic = %wake.topic, partition = wake.index, error = %e, "fsync failed; will retry");
            tokio::time::sleep(Duration::from_millis(100)).await;
            wake.flush_wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use crate::log::batch::tests::make_batch;
    use kafka_protocol::records::Compression;

    fn cfg(f: impl FnOnce(&mut TopicConfig)) -> Arc<TopicConfig> {
        let mut c = BrokerConfig::default().topic_defaults();
        c.index_interval_bytes = 200;
        f(&mut c);
        Arc::new(c)
    }

    #[tokio::test]
    async fn append_read_roll_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(|c| c.segment_bytes = 2048);
        let (p, _) = Partition::open("t".into(), 0, d.path().join("t-0"), c.clone()).unwrap();
        let mut expect = 0;
        for i in 0..40 {
            let a = p
                .append(&make_batch(i * 10, &[0, 1, 2], Compression::None))
                .unwrap();
            assert_eq!(a.base_offset, expect);
            expect += 3;
        }
        assert_eq!(p.high_watermark(), 120);
        assert!(p.lock().segments.len() > 3, "rolled by size");
        // Read everything back in order, batch by batch.
        let mut off = 0;
        let mut seen = 0;
        while off < 120 {
            let r = p.read(off, 500).unwrap();
            let mut at = 0;
            while at < r.records.len() {
                let h = batch::validate_one(&r.records[at..], u32::MAX).unwrap();
                assert_eq!(h.base_offset, off);
                off = h.last_offset() + 1;
                at += h.total_len();
                seen += 1;
            }
        }
        assert_eq!(seen, 40);
        // Reads from the middle of a batch return that batch.
        let r = p.read(61, 1).unwrap();
        assert_eq!(
            batch::BatchHeader::parse(&r.records).unwrap().base_offset,
            60
        );
        assert!(matches!(
            p.read(121, 100),
            Err(ReadError::OutOfRange { .. })
        ));
        assert!(p.read(120, 100).unwrap().records.is_empty());

        // Timestamp lookups against a brute-force answer.
        for ts in [0, 5, 11, 200, 391, 392, 1000] {
            let expect = (0..40i64)
                .flat_map(|i| (0..3).map(move |j| (i * 3 + j, i * 10 + j)))
                .find(|(_, t)| *t >= ts);
            assert_eq!(p.offset_for_timestamp(ts).unwrap(), expect, "ts {ts}");
        }
        assert_eq!(p.max_timestamp().unwrap(), Some((119, 392)));

        // Unclean reopen (no index for the active segment) recovers the same log.
        drop(p);
        let (p2, t) = Partition::open("t".into(), 0, d.path().join("t-0"), c).unwrap();
        assert!(t.is_empty());
        assert_eq!(p2.high_watermark(), 120);
        assert_eq!(p2.offset_for_timestamp(200).unwrap(), Some((60, 200)));
    }

    /// `batch` with its base offset set to `base` (as a source broker would have stored it).
    fn at_offset(batch: &Bytes, base: i64) -> Bytes {
        let mut v = batch.to_vec();
        v[0..8].copy_from_slice(&base.to_be_bytes());
        Bytes::from(v)
    }

    fn mirror(p: &Partition, records: &Bytes, expected_end: i64) -> Result<Appended, AppendError> {
        let headers = batch::validate_produce(records, u32::MAX)?;
        p.append_mirrored(records, &headers, expected_end)
    }

    #[tokio::test]
    async fn mirrored_batches_keep_offsets_gaps_and_skip_what_is_there() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(|c| c.segment_bytes = 4096);
        let (p, _) = Partition::open("m".into(), 0, d.path().join("m-0"), c.clone()).unwrap();
        let b = make_batch(7, &[0, 1, 2], Compression::Lz4);
        // An empty log starting at 1000 (the source's retention took 0..1000).
        let a = mirror(&p, &at_offset(&b, 1000), 0).unwrap();
        assert_eq!(
            (a.base_offset, a.end_offset, a.log_start),
            (1000, 1003, 1000)
        );
        // Two batches with a gap between them, in one request.
        let mut two = at_offset(&b, 1003).to_vec();
        two.extend_from_slice(&at_offset(&b, 1010));
        mirror(&p, &Bytes::from(two.clone()), 1003).unwrap();
        assert_eq!(p.high_watermark(), 1013);
        // Resent after a crash: nothing is written twice.
        let a = mirror(&p, &Bytes::from(two), 1003).unwrap();
        assert_eq!(a.end_offset, 1013);
        assert_eq!(p.high_watermark(), 1013);
        // A batch across the log end is refused.
        let e = mirror(&p, &at_offset(&b, 1011), 1013).unwrap_err();
        assert!(e.to_string().contains("straddles"), "{e}");
        // A write after one the log never got is refused: no hole.
        let e = mirror(&p, &at_offset(&b, 1020), 1020).unwrap_err();
        assert!(
            e.to_string().contains("expects the log to end at 1020"),
            "{e}"
        );
        // Reading inside the gap returns the next batch, stored byte for byte (but the leader
        // epoch, which this single-node broker sets to 0 as the source did).
        let r = p.read(1006, 10_000).unwrap();
        let sent = at_offset(&b, 1010);
        assert_eq!(r.records.len(), sent.len());
        assert_eq!(&r.records[..12], &sent[..12]);
        assert_eq!(&r.records[16..], &sent[16..]);
        assert!(matches!(p.read(5, 100), Err(ReadError::OutOfRange { .. })));
        // The log start and the gaps survive a restart.
        drop(p);
        let (p, _) = Partition::open("m".into(), 0, d.path().join("m-0"), c).unwrap();
        assert_eq!((p.log_start(), p.high_watermark()), (1000, 1013));
        let r = p.read(1003, 10_000).unwrap();
        let offsets: Vec<i64> = {
            let mut v = Vec::new();
            let mut at = 0;
            while at < r.records.len() {
                let h = batch::validate_one(&r.records[at..], u32::MAX).unwrap();
                v.push(h.base_offset);
                at += h.total_len();
            }
            v
        };
        assert_eq!(offsets, vec![1003, 1010]);
    }

    /// A batch from idempotent producer `pid` with sequences `seq..seq+n`.
    fn idempotent_batch(pid: i64, epoch: i16, seq: i32, n: i32) -> Bytes {
        let records: Vec<_> = (0..n)
            .map(|i| {
                let mut r = batch::plain_record(
                    i64::from(i),
                    1_000 + i64::from(i),
                    None,
                    Some(Bytes::from_static(b"v")),
                );
                r.producer_id = pid;
                r.producer_epoch = epoch;
                r.sequence = seq + i;
                r
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        kafka_protocol::records::RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &kafka_protocol::records::RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[tokio::test]
    async fn idempotent_retries_are_not_written_twice_even_after_restarts() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("t-0");
        let c = cfg(|_| {});
        let (p, _) = Partition::open("t".into(), 0, dir.clone(), c.clone()).unwrap();
        let first = p.append(&idempotent_batch(7, 0, 0, 3)).unwrap();
        let second = p.append(&idempotent_batch(7, 0, 3, 2)).unwrap();
        assert_eq!((first.base_offset, second.base_offset), (0, 3));
        let retry = p.append(&idempotent_batch(7, 0, 0, 3)).unwrap();
        assert_eq!(
            (retry.base_offset, retry.end_offset),
            (0, 3),
            "a retry gets its original offsets"
        );
        assert_eq!(p.log_end(), 5, "and nothing is written");
        let gap = p.append(&idempotent_batch(7, 0, 9, 1)).unwrap_err();
        assert_eq!(gap.kafka_code(), 45);
        // Unclean restart: the state comes back from the scanned tail.
        drop(p);
        let (p, _) = Partition::open("t".into(), 0, dir.clone(), c.clone()).unwrap();
        assert_eq!(
            p.append(&idempotent_batch(7, 0, 3, 2)).unwrap().base_offset,
            3
        );
        assert_eq!(p.log_end(), 5);
        // Clean restart: the state comes back from the snapshot written at close.
        p.close().unwrap();
        drop(p);
        let (p, _) = Partition::open("t".into(), 0, dir, c).unwrap();
        assert_eq!(
            p.append(&idempotent_batch(7, 0, 0, 3)).unwrap().base_offset,
            0
        );
        assert_eq!(
            p.append(&idempotent_batch(7, 0, 5, 1)).unwrap().base_offset,
            5
        );
        assert_eq!(
            p.append(&idempotent_batch(7, 0, 0, 1))
                .unwrap_err()
                .kafka_code(),
            45
        );
        assert_eq!(
            p.append(&idempotent_batch(7, 1, 0, 1)).unwrap().base_offset,
            6,
            "a new epoch starts at 0"
        );
        assert_eq!(
            p.append(&idempotent_batch(7, 0, 6, 1))
                .unwrap_err()
                .kafka_code(),
            47,
            "the old epoch is fenced"
        );
    }

    fn txn_batch(pid: i64, epoch: i16, seq: i32, n: i32) -> Bytes {
        let mut b = idempotent_batch(pid, epoch, seq, n).to_vec();
        // Set the transactional bit and recompute the CRC.
        let attrs = i16::from_be_bytes([b[21], b[22]]) | batch::ATTR_TRANSACTIONAL;
        b[21..23].copy_from_slice(&attrs.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    /// Offsets of the data records a read_committed consumer would keep from `r`.
    fn committed_view(r: &ReadResult, aborted: &[(i64, i64)]) -> Vec<i64> {
        let mut out = vec![];
        let mut skipping: Vec<i64> = vec![];
        let mut pending = aborted.to_vec();
        let mut at = 0;
        while at < r.records.len() {
            let h = batch::BatchHeader::parse(&r.records[at..]).unwrap();
            // As consumers do: an aborted transaction starts skipping at its first offset and
            // is used up by its marker.
            if let Some(i) = pending
                .iter()
                .position(|(pid, first)| *pid == h.producer_id && *first <= h.base_offset)
            {
                skipping.push(pending.remove(i).0);
            }
            if h.is_control() {
                skipping.retain(|p| *p != h.producer_id);
            } else if !skipping.contains(&h.producer_id) {
                out.extend(h.base_offset..=h.last_offset());
            }
            at += h.total_len();
        }
        out
    }

    #[tokio::test]
    async fn transactions_bound_the_lso_and_survive_unclean_restarts() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("t-0");
        let c = cfg(|c| c.segment_bytes = 600);
        let (p, _) = Partition::open("t".into(), 0, dir.clone(), c.clone()).unwrap();
        p.append(&make_batch(0, &[0], Compression::None)).unwrap(); // 0: plain
        p.append(&txn_batch(1, 0, 0, 2)).unwrap(); // 1-2: txn of producer 1
        p.append(&txn_batch(2, 0, 0, 1)).unwrap(); // 3: txn of producer 2
        assert_eq!(p.last_stable_offset(), 1);
        let (r, lso, _) = p.read_committed(0, 1 << 20).unwrap();
        assert_eq!(lso, 1);
        assert_eq!(committed_view(&r, &[]), vec![0], "stops at the LSO");
        assert!(p
            .append(&control_like_client())
            .is_err_and(|e| e.kafka_code() == 87));
        p.append_marker(1, 0, false, 0).unwrap(); // 4: abort producer 1
        assert_eq!(p.last_stable_offset(), 3);
        p.append(&txn_batch(1, 0, 2, 1)).unwrap(); // 5: producer 1's next txn
        p.append_marker(2, 0, true, 0).unwrap(); // 6: commit producer 2
        assert_eq!(p.last_stable_offset(), 5);
        p.append_marker(1, 0, true, 0).unwrap(); // 7: commit producer 1
        assert_eq!(p.last_stable_offset(), 8);
        let check = |p: &Partition| {
            let (r, lso, aborted) = p.read_committed(0, 1 << 20).unwrap();
            assert_eq!(lso, 8);
            assert_eq!(aborted, vec![(1, 1)]);
            assert_eq!(committed_view(&r, &aborted), vec![0, 3, 5]);
            let (_, _, later) = p.read_committed(5, 1 << 20).unwrap();
            assert!(later.is_empty(), "the abort ended before offset 5");
        };
        check(&p);
        // Unclean restart (no close): state comes back from snapshots and the scanned tail.
        drop(p);
        let (p, _) = Partition::open("t".into(), 0, dir.clone(), c.clone()).unwrap();
        check(&p);
        // An open transaction survives a restart too, and keeps holding the LSO.
        p.append(&txn_batch(2, 0, 1, 1)).unwrap(); // 8
        drop(p);
        std::fs::remove_file(dir.join(PRODUCERS_FILE)).unwrap();
        let (p, _) = Partition::open("t".into(), 0, dir.clone(), c.clone()).unwrap();
        assert_eq!(p.last_stable_offset(), 8, "rebuilt from the whole log");
        assert_eq!(p.read_committed(0, 1 << 20).unwrap().2, vec![(1, 1)]);
        p.close().unwrap();
        drop(p);
        let (p, _) = Partition::open("t".into(), 0, dir, c).unwrap();
        assert_eq!(p.last_stable_offset(), 8, "and from a clean close");
        assert_eq!(
            p.producers()
                .iter()
                .find(|v| v.producer_id == 2)
                .unwrap()
                .txn_first,
            Some(8)
        );
    }

    /// A control batch as a client might try to produce one.
    fn control_like_client() -> Bytes {
        batch::control_batch(5, 0, true, 0, 1).unwrap()
    }

    #[tokio::test]
    async fn fsync_policy_makes_data_visible_only_after_flush() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(|c| c.flush = FlushPolicy::Fsync);
        let (p, _) = Partition::open("t".into(), 0, d.path().join("t-0"), c).unwrap();
        let mut ends = vec![];
        for i in 0..10 {
            ends.push(
                p.append(&make_batch(i, &[0], Compression::None))
                    .unwrap()
                    .end_offset,
            );
        }
        assert!(p.wait_visible(10, Duration::from_secs(5)).await);
        assert_eq!(p.high_watermark(), 10);
    }

    #[tokio::test]
    async fn retention_and_delete_records_move_log_start() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(|c| {
            c.segment_bytes = 1024;
            c.retention_bytes = 3000;
            c.retention_ms = -1;
        });
        let (p, _) = Partition::open("t".into(), 0, d.path().join("t-0"), c).unwrap();
        for i in 0..60 {
            p.append(&make_batch(i, &[0], Compression::None)).unwrap();
        }
        let before = p.size_bytes();
        let n = p.enforce_retention(now_ms()).unwrap();
        assert!(n > 0);
        assert!(p.size_bytes() <= 3000 + 1024 && p.size_bytes() < before);
        let start = p.log_start();
        assert!(start > 0);
        assert!(matches!(
            p.read(start - 1, 100),
            Err(ReadError::OutOfRange { .. })
        ));
        assert_eq!(p.delete_records(55).unwrap(), 55);
        assert!(matches!(p.read(54, 100), Err(ReadError::OutOfRange { .. })));
        assert!(p.delete_records(61).is_err());
        drop(p);
        let c = cfg(|_| {});
        let (p, _) = Partition::open("t".into(), 0, d.path().join("t-0"), c).unwrap();
        assert_eq!(p.log_start(), 55, "log start survives restart");
        // A time lookup below the log start answers the first retained record.
        assert_eq!(p.offset_for_timestamp(0).unwrap().map(|x| x.0), Some(55));
    }
}
