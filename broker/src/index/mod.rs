//! The field index: find records by business key without scanning the log.
//!
//! A topic names fields to index in its `index.fields` config (`spec`). The indexer
//! (`FieldIndex::index_topic`, driven by `run` on a blocking thread, never on the produce
//! path) reads each partition's log behind the high watermark, takes each field's text out
//! of every record (`extract`) and keeps, per segment, the sorted (hash of field and text,
//! offset) pairs; a segment's pairs go to `<base>.fidx` when the segment rolls (`file`), and
//! the active segment's are checkpointed every 64 MiB or 10 s, so a restart resumes where the
//! last checkpoint stopped. Retention deletes a segment's index with it (`Segment::
//! delete_files`); deleted or damaged index files and a changed definition are rebuilt.
//!
//! A query (`query`) hashes each `field = value`, looks the hashes up in the segments whose
//! time range overlaps the window, intersects the offsets, reads just those records and checks
//! them (which also rules out hash collisions). What the indexer has not reached yet is
//! scanned, so answers are complete while the index lags.

pub mod extract;
pub mod file;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::log::batch::{self, RecordView};
use crate::log::partition::{Partition, ReadError};
use crate::topics::Topic;
use file::{Coverage, IndexFile};
use spec::IndexSpec;

/// Bytes read from the log per read call while indexing or scanning; the indexer holds a
/// partition's index only for one such read, so queries wait at most that long.
const READ_BYTES: usize = 1 << 20;
/// Bytes one partition indexes per pass before the indexer moves on to the next.
const PASS_BYTES: u64 = 64 << 20;
/// The active segment's index is checkpointed after this many indexed bytes or this long.
const CHECKPOINT_BYTES: u64 = 64 << 20;
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
/// Bytes of not-yet-indexed log a query scans at most per partition.
const MAX_SCAN_BYTES: u64 = 256 << 20;

/// The hash an index entry holds for field number `field` with text `text`.
pub fn entry_hash(field: usize, text: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot_with_seed(field as u64, text)
}

/// Why a query or an index operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    #[error("topic `{0}` has no partition {1}")]
    UnknownPartition(String, i32),
    #[error("topic `{0}` indexes no fields (set its `index.fields` config)")]
    NotIndexed(String),
    #[error("topic `{topic}` does not index field `{field}` (it indexes: {known})")]
    UnknownField {
        topic: String,
        field: String,
        known: String,
    },
    #[error("a query needs at least one field = value condition")]
    NoCondition,
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

impl From<ReadError> for IndexError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => IndexError::Io(e),
            other => IndexError::Io(io::Error::other(other.to_string())),
        }
    }
}

/// The segment being indexed.
#[derive(Debug)]
struct Builder {
    base: i64,
    /// The next offset to index.
    next: i64,
    entries: Vec<(u64, u32)>,
    min_ts: i64,
    max_ts: i64,
    since_checkpoint: u64,
    last_checkpoint: Instant,
}

impl Builder {
    /// Starts on segment `base`, resuming from its index file when that is a usable prefix.
    fn start(p: &Partition, base: i64, seg_end: i64, fingerprint: u64, log_start: i64) -> Self {
        let path = p.dir().join(file::file_name(base));
        if let Ok(f) = IndexFile::open(&path) {
            let c = f.coverage;
            if c.fingerprint == fingerprint && c.covered >= base && c.covered <= seg_end {
                if let Ok(entries) = f.all() {
                    return Self {
                        base,
                        next: c.covered.max(log_start),
                        entries,
                        min_ts: c.min_ts,
                        max_ts: c.max_ts,
                        since_checkpoint: 0,
                        last_checkpoint: Instant::now(),
                    };
                }
            }
        }
        Self {
            base,
            next: base.max(log_start),
            entries: Vec::new(),
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
        }
    }

    fn coverage(&self, fingerprint: u64) -> Coverage {
        Coverage {
            fingerprint,
            covered: self.next,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
        }
    }

    fn checkpoint(&mut self, p: &Partition, fingerprint: u64) -> io::Result<()> {
        let mut sorted = self.entries.clone();
        file::write(
            &p.dir().join(file::file_name(self.base)),
            &self.coverage(fingerprint),
            &mut sorted,
        )?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

/// One partition's index.
#[derive(Debug)]
struct PartIndex {
    /// The partition this index is of (a topic deleted and created again is another one).
    owner: usize,
    spec: Arc<IndexSpec>,
    fingerprint: u64,
    /// Whole segments, by base offset.
    done: BTreeMap<i64, IndexFile>,
    active: Option<Builder>,
}

impl PartIndex {
    /// Loads the index files of whole segments; the rest is (re)built by the indexer.
    fn open(p: &Partition, spec: Arc<IndexSpec>) -> Self {
        let fingerprint = spec.fingerprint();
        let segs = p.segment_ranges();
        let mut done = BTreeMap::new();
        for (i, &(base, end)) in segs.iter().enumerate() {
            if i + 1 == segs.len() {
                break; // the active segment is resumed by its builder
            }
            let path = p.dir().join(file::file_name(base));
            match IndexFile::open(&path) {
                Ok(f) if f.coverage.fingerprint == fingerprint && f.coverage.covered == end => {
                    done.insert(base, f);
                }
                Ok(_) => {
                    tracing::info!(topic = %p.topic, partition = p.index, segment = base, "field index is for another definition or partial; rebuilding")
                }
                Err(e) if path.exists() => {
                    tracing::warn!(topic = %p.topic, partition = p.index, segment = base, error = %e, "field index file unusable; rebuilding")
                }
                Err(_) => {}
            }
        }
        Self {
            owner: p as *const Partition as usize,
            spec,
            fingerprint,
            done,
            active: None,
        }
    }
}

/// Where each partition's index stands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionStatus {
    pub partition: i32,
    /// Offsets below this are indexed (the log start when nothing is).
    pub indexed_to: i64,
    pub log_end: i64,
    /// Records not yet indexed.
    pub lag: i64,
    pub segments: usize,
    pub segments_indexed: usize,
    pub index_bytes: u64,
}

/// A topic's index status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TopicStatus {
    pub topic: String,
    pub fields: Vec<FieldStatus>,
    pub partitions: Vec<PartitionStatus>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FieldStatus {
    pub name: String,
    pub source: String,
}

/// What to find.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub topic: String,
    /// field = value, all of which must hold.
    pub conditions: Vec<(String, String)>,
    /// Record timestamps in [from, to] (inclusive, milliseconds).
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Only these partitions (empty: all).
    pub partitions: Vec<i32>,
    /// At most this many records: per partition the first matches in log order, then all
    /// sorted by timestamp and cut to this many.
    pub limit: usize,
}

/// One record found.
#[derive(Debug, Clone)]
pub struct Hit {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// A query's answer.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub hits: Vec<Hit>,
    /// Offsets the index pointed at (before checking the records).
    pub candidates: u64,
    /// Bytes of not-yet-indexed log that were scanned.
    pub scanned_bytes: u64,
    /// False when the not-yet-indexed part was larger than a query scans, or the limit cut
    /// the answer short.
    pub complete: bool,
}

/// One partition's index, shared by the indexer and queries.
type SharedPart = Arc<Mutex<PartIndex>>;

/// The broker's field indexes, per topic and partition.
#[derive(Debug, Default)]
pub struct FieldIndex {
    parts: Mutex<HashMap<(Arc<str>, i32), SharedPart>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FieldIndex {
    /// The index of `p` for `spec`, opened (or reopened when the definition changed).
    fn part(&self, topic: &Topic, p: &Partition, spec: &Arc<IndexSpec>) -> SharedPart {
        let key = (topic.name.clone(), p.index);
        let existing = lock(&self.parts).get(&key).cloned();
        if let Some(pi) = existing {
            let held = lock(&pi);
            if held.spec == *spec && held.owner == p as *const Partition as usize {
                drop(held);
                return pi;
            }
        }
        let pi = Arc::new(Mutex::new(PartIndex::open(p, spec.clone())));
        lock(&self.parts).insert(key, pi.clone());
        pi
    }

    /// Indexes up to `PASS_BYTES` of each partition of `topic`; true when some partition has
    /// more to do.
    pub fn index_topic(&self, topic: &Topic) -> bool {
        let spec = topic.config().index_fields.clone();
        if spec.is_empty() {
            self.forget(&topic.name);
            return false;
        }
        let mut more = false;
        for p in topic.partitions() {
            let pi = self.part(topic, &p, &spec);
            // One read per lock, so queries interleave; up to PASS_BYTES per partition a pass.
            for _ in 0..PASS_BYTES / READ_BYTES as u64 {
                match index_partition(&p, &mut lock(&pi), READ_BYTES as u64) {
                    Ok(true) => more = true,
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "indexing failed; will retry");
                        break;
                    }
                }
            }
        }
        more
    }

    /// Drops what is held for `topic` (deleted or no longer indexed).
    pub fn forget(&self, topic: &str) {
        lock(&self.parts).retain(|(t, _), _| &**t != topic);
    }

    /// Checkpoints every active segment's index (clean shutdown).
    pub fn checkpoint_all(&self, topics: &[Arc<Topic>]) {
        for t in topics {
            for p in t.partitions() {
                let Some(pi) = lock(&self.parts).get(&(t.name.clone(), p.index)).cloned() else {
                    continue;
                };
                let mut pi = lock(&pi);
                let fp = pi.fingerprint;
                if let Some(b) = pi.active.as_mut().filter(|b| b.since_checkpoint > 0) {
                    if let Err(e) = b.checkpoint(&p, fp) {
                        tracing::warn!(topic = %t.name, partition = p.index, error = %e, "field index checkpoint failed");
                    }
                }
            }
        }
    }

    /// Deletes `topic`'s index files and builds them again from the log.
    pub fn rebuild(&self, topic: &Topic) -> Result<usize, IndexError> {
        let mut removed = 0;
        for p in topic.partitions() {
            let held = lock(&self.parts).remove(&(topic.name.clone(), p.index));
            // Hold the partition's index while deleting so the indexer does not write behind.
            let guard = held.as_ref().map(|pi| lock(pi));
            for (base, _) in p.segment_ranges() {
                match std::fs::remove_file(p.dir().join(file::file_name(base))) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            drop(guard);
        }
        Ok(removed)
    }

    /// Where `topic`'s index stands.
    pub fn status(&self, topic: &Topic) -> TopicStatus {
        let spec = topic.config().index_fields.clone();
        let mut partitions = Vec::new();
        if !spec.is_empty() {
            for p in topic.partitions() {
                let pi = self.part(topic, &p, &spec);
                let pi = lock(&pi);
                let segs = p.segment_ranges();
                let hw = p.high_watermark();
                let indexed_to = indexed_to(&pi, &segs, p.log_start(), hw);
                partitions.push(PartitionStatus {
                    partition: p.index,
                    indexed_to,
                    log_end: hw,
                    lag: hw - indexed_to,
                    segments: segs.len(),
                    segments_indexed: pi.done.len()
                        + usize::from(pi.active.as_ref().is_some_and(|b| {
                            segs.last().is_some_and(|s| s.0 == b.base) && b.next >= hw
                        })),
                    index_bytes: pi.done.values().map(|f| f.bytes).sum::<u64>()
                        + pi.active
                            .as_ref()
                            .map_or(0, |b| b.entries.len() as u64 * 12),
                });
            }
        }
        TopicStatus {
            topic: topic.name.to_string(),
            fields: spec
                .fields
                .iter()
                .map(|f| FieldStatus {
                    name: f.name.clone(),
                    source: f.source.to_string(),
                })
                .collect(),
            partitions,
        }
    }

    /// Finds the records matching `q`.
    pub fn query(&self, topic: &Topic, q: &Query) -> Result<Answer, IndexError> {
        let spec = topic.config().index_fields.clone();
        if spec.is_empty() {
            return Err(IndexError::NotIndexed(topic.name.to_string()));
        }
        if q.conditions.is_empty() {
            return Err(IndexError::NoCondition);
        }
        let mut conds = Vec::with_capacity(q.conditions.len());
        for (field, value) in &q.conditions {
            let Some(i) = spec.field(field) else {
                return Err(IndexError::UnknownField {
                    topic: topic.name.to_string(),
                    field: field.clone(),
                    known: spec.names(),
                });
            };
            conds.push(Cond {
                field: i,
                value: value.as_bytes().to_vec(),
                hash: entry_hash(i, value.as_bytes()),
            });
        }
        let parts = if q.partitions.is_empty() {
            topic.partitions()
        } else {
            q.partitions
                .iter()
                .map(|&i| {
                    topic
                        .partition(i)
                        .ok_or_else(|| IndexError::UnknownPartition(topic.name.to_string(), i))
                })
                .collect::<Result<_, _>>()?
        };
        let (from, to) = (q.from.unwrap_or(i64::MIN), q.to.unwrap_or(i64::MAX));
        let limit = q.limit.max(1);
        let mut answer = Answer {
            complete: true,
            ..Answer::default()
        };
        for p in parts {
            let pi = self.part(topic, &p, &spec);
            // Offsets from the index, and the ranges it does not cover yet.
            let (candidates, unindexed) = {
                let pi = lock(&pi);
                candidates(&p, &pi, &conds, from, to)?
            };
            answer.candidates += candidates.len() as u64;
            let check = |r: &RecordView<'_>| {
                r.timestamp >= from
                    && r.timestamp <= to
                    && conds.iter().all(|c| {
                        extract::field_text(&spec.fields[c.field].source, r)
                            .is_some_and(|t| *t == *c.value)
                    })
            };
            let mut hits = Vec::new();
            read_offsets(&p, &candidates, limit, &mut |r| {
                if check(r) {
                    hits.push(hit_of(p.index, r));
                }
            })?;
            let mut budget = MAX_SCAN_BYTES;
            for (start, end) in unindexed {
                if hits.len() >= limit {
                    break;
                }
                let (next, read) = walk(&p, start, end, budget, &mut |_, r| {
                    if hits.len() < limit && check(r) {
                        hits.push(hit_of(p.index, r));
                    }
                })?;
                answer.scanned_bytes += read;
                budget = budget.saturating_sub(read);
                if next < end && hits.len() < limit {
                    answer.complete = false;
                    break;
                }
            }
            if hits.len() >= limit {
                answer.complete = false;
            }
            answer.hits.extend(hits);
        }
        answer
            .hits
            .sort_by_key(|h| (h.timestamp, h.partition, h.offset));
        answer.hits.truncate(limit);
        Ok(answer)
    }
}

struct Cond {
    field: usize,
    value: Vec<u8>,
    hash: u64,
}

fn hit_of(partition: i32, r: &RecordView<'_>) -> Hit {
    Hit {
        partition,
        offset: r.offset,
        timestamp: r.timestamp,
        key: r.key.map(Bytes::copy_from_slice),
        value: r.value.map(Bytes::copy_from_slice),
        headers: r
            .headers()
            .map(|(k, v)| (Bytes::copy_from_slice(k), v.map(Bytes::copy_from_slice)))
            .collect(),
    }
}

/// Offsets below which everything is indexed.
fn indexed_to(pi: &PartIndex, segs: &[(i64, i64)], log_start: i64, hw: i64) -> i64 {
    let mut to = log_start;
    for &(base, end) in segs {
        if pi.done.contains_key(&base) {
            to = to.max(end.min(hw));
        } else if let Some(b) = pi.active.as_ref().filter(|b| b.base == base) {
            return to.max(b.next.min(hw));
        } else {
            return to;
        }
    }
    to
}

/// The offsets the index gives for `conds` in the time window, ascending, and the offset
/// ranges the index does not cover yet.
#[allow(clippy::type_complexity)]
fn candidates(
    p: &Partition,
    pi: &PartIndex,
    conds: &[Cond],
    from: i64,
    to: i64,
) -> Result<(Vec<i64>, Vec<(i64, i64)>), IndexError> {
    let segs = p.segment_ranges();
    let (log_start, hw) = (p.log_start(), p.high_watermark());
    let mut out = Vec::new();
    let mut unindexed = Vec::new();
    for &(base, end) in &segs {
        let end = end.min(hw);
        let start = base.max(log_start);
        if start >= end {
            continue;
        }
        if let Some(f) = pi.done.get(&base) {
            let c = f.coverage;
            if c.max_ts < from || c.min_ts > to {
                continue;
            }
            let mut rels = f.lookup(conds[0].hash)?;
            for c in &conds[1..] {
                let other = f.lookup(c.hash)?;
                rels.retain(|r| other.binary_search(r).is_ok());
            }
            out.extend(rels.into_iter().map(|r| base + i64::from(r)));
        } else if let Some(b) = pi.active.as_ref().filter(|b| b.base == base) {
            if !(b.max_ts < from || b.min_ts > to) {
                let mut rels: Vec<u32> = b
                    .entries
                    .iter()
                    .filter(|e| e.0 == conds[0].hash)
                    .map(|e| e.1)
                    .collect();
                rels.sort_unstable();
                for c in &conds[1..] {
                    let mut other: Vec<u32> = b
                        .entries
                        .iter()
                        .filter(|e| e.0 == c.hash)
                        .map(|e| e.1)
                        .collect();
                    other.sort_unstable();
                    rels.retain(|r| other.binary_search(r).is_ok());
                }
                out.extend(rels.into_iter().map(|r| base + i64::from(r)));
            }
            if b.next < end {
                unindexed.push((b.next.max(start), end));
            }
        } else {
            unindexed.push((start, end));
        }
    }
    out.retain(|o| *o >= log_start && *o < hw);
    out.sort_unstable();
    out.dedup();
    Ok((out, unindexed))
}

/// Calls `each` with the records at `offsets` (ascending), reading each batch once; stops
/// after `limit` calls.
fn read_offsets(
    p: &Partition,
    offsets: &[i64],
    limit: usize,
    each: &mut dyn FnMut(&RecordView<'_>),
) -> Result<(), IndexError> {
    let mut i = 0;
    let mut seen = 0;
    while i < offsets.len() && seen < limit {
        let r = match p.read(offsets[i], 1) {
            Ok(r) => r,
            Err(ReadError::OutOfRange { .. }) => {
                i += 1; // deleted by retention meanwhile
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let Some((_, len)) = batch::peek_offset_and_len(&r.records) else {
            i += 1;
            continue;
        };
        if r.records.len() < len {
            i += 1;
            continue;
        }
        let data = r.records.slice(..len);
        let h = batch::BatchHeader::parse(&data).map_err(|e| io::Error::other(e.to_string()))?;
        let last = h.last_offset();
        let upto = offsets[i..].partition_point(|o| *o <= last) + i;
        let wanted = &offsets[i..upto];
        batch::for_each_record(&data, |rec| {
            if seen < limit && wanted.binary_search(&rec.offset).is_ok() {
                seen += 1;
                each(rec);
            }
        })
        .map_err(|e| io::Error::other(e.to_string()))?;
        i = upto.max(i + 1);
    }
    Ok(())
}

/// Calls `each` with every record in [from, until) (batch base offset, record), reading up to
/// about `budget` bytes; returns the next offset to read and the bytes read.
fn walk(
    p: &Partition,
    from: i64,
    until: i64,
    budget: u64,
    each: &mut dyn FnMut(i64, &RecordView<'_>),
) -> Result<(i64, u64), IndexError> {
    let mut next = from;
    let mut read = 0u64;
    while next < until && read < budget {
        let r = match p.read(next, READ_BYTES) {
            Ok(r) => r,
            Err(ReadError::OutOfRange { start, .. }) if next < start => {
                next = start; // retention moved the log start
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if r.records.is_empty() {
            break;
        }
        let mut rest = r.records.clone();
        while let Some((base, len)) = batch::peek_offset_and_len(&rest) {
            if rest.len() < len || base >= until {
                break;
            }
            let data = rest.slice(..len);
            rest = rest.slice(len..);
            read += len as u64;
            let h =
                batch::BatchHeader::parse(&data).map_err(|e| io::Error::other(e.to_string()))?;
            batch::for_each_record(&data, |rec| {
                if rec.offset >= next && rec.offset < until {
                    each(h.base_offset, rec);
                }
            })
            .map_err(|e| io::Error::other(e.to_string()))?;
            next = next.max(h.last_offset() + 1);
        }
        if next >= r.high_watermark {
            break;
        }
    }
    Ok((next.min(until.max(from)), read))
}

/// Indexes up to `budget` bytes of partition `p`; true when there is more to do.
fn index_partition(p: &Partition, pi: &mut PartIndex, budget: u64) -> Result<bool, IndexError> {
    let segs = p.segment_ranges();
    pi.done.retain(|base, _| segs.iter().any(|s| s.0 == *base));
    if pi
        .active
        .as_ref()
        .is_some_and(|b| !segs.iter().any(|s| s.0 == b.base))
    {
        pi.active = None; // its segment was deleted
    }
    let fingerprint = pi.fingerprint;
    let mut budget = budget;
    loop {
        let segs = p.segment_ranges();
        let (log_start, hw) = (p.log_start(), p.high_watermark());
        if pi.active.is_none() {
            let Some(&(base, end)) = segs.iter().find(|s| !pi.done.contains_key(&s.0)) else {
                return Ok(false);
            };
            pi.active = Some(Builder::start(p, base, end, fingerprint, log_start));
        }
        let Some(b) = pi.active.as_mut() else {
            return Ok(false);
        };
        let Some(i) = segs.iter().position(|s| s.0 == b.base) else {
            pi.active = None;
            continue;
        };
        let closed = i + 1 < segs.len();
        let end = if closed { segs[i].1.min(hw) } else { hw };
        if b.next >= end {
            if closed && end == segs[i].1 {
                // The segment is whole: its index file is final.
                let mut entries = std::mem::take(&mut b.entries);
                let c = b.coverage(fingerprint);
                let path = p.dir().join(file::file_name(b.base));
                file::write(&path, &Coverage { covered: end, ..c }, &mut entries)?;
                let f = IndexFile::open(&path).map_err(io::Error::other)?;
                pi.done.insert(b.base, f);
                pi.active = None;
                continue;
            }
            if b.since_checkpoint > 0 && b.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
                b.checkpoint(p, fingerprint)?;
            }
            return Ok(false);
        }
        if budget == 0 {
            return Ok(true);
        }
        let spec = pi.spec.clone();
        let base = b.base;
        let (next, read) = walk(
            p,
            b.next,
            end,
            budget.min(READ_BYTES as u64),
            &mut |_, r| {
                let rel = (r.offset - base) as u32;
                for (fi, f) in spec.fields.iter().enumerate() {
                    if let Some(text) = extract::field_text(&f.source, r) {
                        b.entries.push((entry_hash(fi, &text), rel));
                    }
                }
                b.min_ts = b.min_ts.min(r.timestamp);
                b.max_ts = b.max_ts.max(r.timestamp);
            },
        )?;
        if next <= b.next && read == 0 {
            return Ok(false); // nothing readable yet
        }
        b.next = next;
        b.since_checkpoint += read;
        budget = budget.saturating_sub(read.max(1));
        if b.since_checkpoint >= CHECKPOINT_BYTES {
            b.checkpoint(p, fingerprint)?;
        }
    }
}

/// Runs the indexer until the process stops: a pass over every indexed topic, again at once
/// while some partition has more to do, else after `idle`.
pub async fn run(broker: Arc<crate::broker::Broker>, idle: Duration) {
    loop {
        let b = broker.clone();
        let more = tokio::task::spawn_blocking(move || {
            let mut more = false;
            for t in b.topics.list() {
                more |= b.index.index_topic(&t);
            }
            more
        })
        .await
        .unwrap_or(false);
        if !more {
            tokio::time::sleep(idle).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use crate::log::batch::plain_record;
    use kafka_protocol::records::Compression;

    /// A batch of records `first..first+n` with JSON values `{"u": i % 10}` and out-of-order
    /// timestamps.
    fn batch(first: i64, n: i64) -> Bytes {
        let records: Vec<_> = (0..n)
            .map(|j| {
                let i = first + j;
                plain_record(
                    j,
                    1000 + i * 10 - if i % 4 == 0 { 25 } else { 0 },
                    Some(Bytes::from(format!("k{}", i % 3))),
                    Some(Bytes::from(format!(r#"{{"u": {}, "i": {i}}}"#, i % 10))),
                )
            })
            .collect();
        crate::log::batch::tests::encode(&records, Compression::Lz4)
    }

    /// Offsets with u == `u` and timestamps in [from, to], by the index and by brute force.
    fn answer(p: &Partition, pi: &PartIndex, u: i64, from: i64, to: i64) -> (Vec<i64>, Vec<i64>) {
        let conds = [Cond {
            field: 0,
            value: u.to_string().into_bytes(),
            hash: entry_hash(0, u.to_string().as_bytes()),
        }];
        let (cands, unindexed) = candidates(p, pi, &conds, from, to).unwrap();
        assert!(unindexed.is_empty(), "{unindexed:?}");
        let mut got = Vec::new();
        read_offsets(p, &cands, usize::MAX, &mut |r| {
            let text = extract::json_path(r.value.unwrap(), &["u".to_string()]).unwrap();
            if *text == *u.to_string().as_bytes() && r.timestamp >= from && r.timestamp <= to {
                got.push(r.offset);
            }
        })
        .unwrap();
        let want = (0..p.high_watermark())
            .filter(|i| i % 10 == u)
            .filter(|i| {
                let ts = 1000 + i * 10 - if i % 4 == 0 { 25 } else { 0 };
                ts >= from && ts <= to
            })
            .collect();
        (got, want)
    }

    #[tokio::test]
    async fn resumes_from_a_checkpoint_after_a_crash_and_matches_brute_force() {
        let d = tempfile::tempdir().unwrap();
        let mut c = BrokerConfig::default().topic_defaults();
        c.segment_bytes = 1024;
        c.index_fields = Arc::new(IndexSpec::parse("u=value:$.u,k=key").unwrap());
        let spec = c.index_fields.clone();
        let (p, _) = Partition::open("t".into(), 0, d.path().join("t-0"), Arc::new(c)).unwrap();
        for b in 0..30 {
            p.append(&batch(b * 20, 20)).unwrap();
        }
        let mut pi = PartIndex::open(&p, spec.clone());
        while index_partition(&p, &mut pi, 1 << 20).unwrap() {}
        assert!(
            pi.done.len() > 3,
            "closed segments indexed: {}",
            pi.done.len()
        );
        // Checkpoint the active segment, append more, index some of it, then "crash".
        pi.active
            .as_mut()
            .unwrap()
            .checkpoint(&p, pi.fingerprint)
            .unwrap();
        for b in 30..45 {
            p.append(&batch(b * 20, 20)).unwrap();
        }
        index_partition(&p, &mut pi, 1).unwrap();
        drop(pi);
        let mut pi = PartIndex::open(&p, spec);
        while index_partition(&p, &mut pi, 1 << 20).unwrap() {}
        assert_eq!(indexed_to(&pi, &p.segment_ranges(), 0, 900), 900);
        for (u, from, to) in [(3, i64::MIN, i64::MAX), (0, 2000, 6000), (9, 8900, 9500)] {
            let (got, want) = answer(&p, &pi, u, from, to);
            assert_eq!(got, want, "u={u} [{from}, {to}]");
            assert!(!want.is_empty());
        }
    }
}
