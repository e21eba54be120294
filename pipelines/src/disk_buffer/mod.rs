//! A sink's disk buffer: a write-ahead log between the sink's input and the sink.
//!
//! Three tasks share it. The *writer* appends each incoming batch as checksummed records to the
//! current segment file and then acknowledges the batch upstream (so a file source checkpoints
//! and a Kafka endpoint answers its producer while the destination is away); it fsyncs every
//! `fsync_interval_ms`, or before every acknowledgement when that is 0. The *reader* reads the
//! records back in order and hands them to the sink with acknowledgements of their own. The
//! *acker* awaits those in order, advances the acknowledged position (saved to `ack`), and
//! deletes segments the sink has delivered; a record is forgotten only once delivered, so a
//! crash re-sends at most the records delivered since the last saved position.
//!
//! At start, `open` cuts a torn or corrupt tail off every unacknowledged segment (reported in
//! the log and in `trib_pipeline_buffer_corrupt_bytes_total`) and resumes from the saved
//! position. When the buffer holds `max_bytes` of undelivered records, the writer waits
//! (`when_full: block`) or drops new batches and counts them (`drop_newest`).

pub mod codec;
pub mod segment;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::config::sinks::{DiskBufferConfig, WhenFull};
use crate::event::deliver_all;
use crate::finalize::{BatchNotifier, Status};
use crate::metrics::ComponentMetrics;
use crate::runtime::{Batch, Input, CHANNEL_BATCHES};
use segment::{Next, Position};

/// Largest payload the writer puts in one record; a bigger batch becomes several records.
const RECORD_TARGET: usize = 4 << 20;
/// Records handed to the sink and not yet acknowledged.
const IN_FLIGHT_RECORDS: usize = 1024;
/// How often the acknowledged position is saved.
const SAVE_ACK_EVERY: Duration = Duration::from_secs(1);

/// Why a buffer cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("disk buffer {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct Segment {
    id: u64,
    len: u64,
    /// No more records will be appended.
    sealed: bool,
}

struct State {
    segments: VecDeque<Segment>,
    /// Bytes of records written and not yet delivered.
    undelivered: u64,
    /// The writer has finished (its input closed).
    closed: bool,
}

struct Shared {
    dir: PathBuf,
    cfg: DiskBufferConfig,
    component: Arc<str>,
    state: Mutex<State>,
    /// Bumped after every append and when the writer finishes.
    written: watch::Sender<u64>,
    /// Signalled when records are delivered (room for a blocked writer).
    room: Notify,
    metrics: ComponentMetrics,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A buffer opened and recovered, ready to start.
pub struct Opened {
    shared: Arc<Shared>,
    resume: Position,
    writer: (u64, File),
}

/// Opens (creating) the buffer folder and recovers it: cuts torn or corrupt tails, finds the
/// position to resume from, and starts a new segment for this run's writes.
pub fn open(
    component: &str,
    cfg: &DiskBufferConfig,
    metrics: ComponentMetrics,
) -> Result<Opened, BufferError> {
    let dir = PathBuf::from(&cfg.path);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let ids = segment::list(&dir).map_err(io_err(&dir))?;
    let saved = segment::read_ack(&dir).unwrap_or_default();
    let mut segments = VecDeque::new();
    let mut resume = None;
    let (mut undelivered, mut events) = (0u64, 0u64);
    for id in ids {
        let path = segment::segment_path(&dir, id);
        if id < saved.segment {
            // Delivered before the last stop.
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            continue;
        }
        let from = if id == saved.segment { saved.offset } else { 0 };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let scan = segment::scan(&file, from).map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        if let Some(problem) = &scan.problem {
            let cut = len - scan.valid_end;
            tracing::warn!(
                component,
                segment = %path.display(),
                offset = scan.valid_end,
                bytes = cut,
                problem = %problem,
                "disk buffer: cut a torn or corrupt tail; the records before it are kept"
            );
            metrics.buffer_corrupt.inc_by(cut);
            file.set_len(scan.valid_end).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
        }
        resume.get_or_insert(Position {
            segment: id,
            offset: from.min(scan.valid_end),
        });
        undelivered += scan.valid_end.saturating_sub(from);
        events += scan.events;
        segments.push_back(Segment {
            id,
            len: scan.valid_end,
            sealed: true,
        });
    }
    let next_id = segments.back().map_or(saved.segment, |s| s.id) + 1;
    let path = segment::segment_path(&dir, next_id);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(&dir))?;
    segments.push_back(Segment {
        id: next_id,
        len: 0,
        sealed: false,
    });
    let resume = resume.unwrap_or(Position {
        segment: next_id,
        offset: 0,
    });
    if undelivered > 0 {
        tracing::info!(
            component,
            bytes = undelivered,
            events,
            "disk buffer: resuming with undelivered records"
        );
    }
    metrics.buffer_bytes.set(undelivered as i64);
    metrics.buffer_events.set(events as i64);
    let (written, _) = watch::channel(0);
    Ok(Opened {
        shared: Arc::new(Shared {
            dir,
            cfg: cfg.clone(),
            component: component.into(),
            state: Mutex::new(State {
                segments,
                undelivered,
                closed: false,
            }),
            written,
            room: Notify::new(),
            metrics,
        }),
        resume,
        writer: (next_id, file),
    })
}

/// The three tasks of a started buffer, to run alongside the sink.
pub type Task = futures::future::BoxFuture<'static, anyhow::Result<()>>;

impl Opened {
    /// Starts the buffer between `input` and the sink: returns the sink's new input and the
    /// writer, reader and acker tasks.
    pub fn start(self, input: Input) -> (Input, Vec<Task>) {
        let (to_sink, sink_rx) = mpsc::channel(CHANNEL_BATCHES);
        let (acks, ack_rx) = mpsc::channel(IN_FLIGHT_RECORDS);
        let writer = Writer {
            shared: self.shared.clone(),
            id: self.writer.0,
            file: self.writer.1,
            dirty: false,
            last_sync: Instant::now(),
        };
        let tasks: Vec<Task> = vec![
            Box::pin(writer.run(input)),
            Box::pin(read(self.shared.clone(), self.resume, to_sink, acks)),
            Box::pin(acknowledge(self.shared, self.resume, ack_rx)),
        ];
        // The sink's events were counted in on the way into the buffer.
        (Input::detached(sink_rx), tasks)
    }
}

struct Writer {
    shared: Arc<Shared>,
    id: u64,
    file: File,
    dirty: bool,
    last_sync: Instant,
}

impl Writer {
    fn max_segment(&self) -> u64 {
        (self.shared.cfg.max_bytes / 8).clamp(1 << 20, 128 << 20)
    }

    async fn run(mut self, mut input: Input) -> anyhow::Result<()> {
        let interval = Duration::from_millis(self.shared.cfg.fsync_interval_ms.max(1));
        loop {
            let deadline = tokio::time::Instant::from_std(self.last_sync + interval);
            tokio::select! {
                batch = input.recv() => match batch {
                    Some(batch) => self.append(batch).await?,
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline), if self.dirty => self.sync().await?,
            }
        }
        self.sync().await?;
        self.shared.lock().closed = true;
        self.shared.written.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn sync(&mut self) -> anyhow::Result<()> {
        if self.dirty {
            let f = self.file.try_clone()?;
            tokio::task::spawn_blocking(move || f.sync_data()).await??;
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    async fn append(&mut self, batch: Batch) -> anyhow::Result<()> {
        let mut framed = Vec::new();
        let mut payload = Vec::new();
        let mut count = 0u32;
        for e in &batch {
            if count == 0 {
                payload.clear();
                payload.put_u32(0);
            }
            codec::encode(e, &mut payload);
            count += 1;
            if payload.len() >= RECORD_TARGET {
                payload[..4].copy_from_slice(&count.to_be_bytes());
                segment::frame(&payload, &mut framed);
                count = 0;
            }
        }
        if count > 0 {
            payload[..4].copy_from_slice(&count.to_be_bytes());
            segment::frame(&payload, &mut framed);
        }
        if framed.is_empty() {
            return Ok(());
        }
        let size = framed.len() as u64;
        // Room: undelivered records stay under max_bytes (a lone batch bigger than that is
        // still taken when the buffer is empty).
        loop {
            let shared = self.shared.clone();
            let room = shared.room.notified();
            {
                let st = self.shared.lock();
                if st.undelivered == 0 || st.undelivered + size <= self.shared.cfg.max_bytes {
                    break;
                }
            }
            match self.shared.cfg.when_full {
                WhenFull::Block => {
                    // What was acknowledged is made durable before waiting, however long.
                    self.sync().await?;
                    room.await
                }
                WhenFull::DropNewest => {
                    self.shared
                        .metrics
                        .buffer_dropped
                        .inc_by(batch.len() as u64);
                    deliver_all(batch);
                    return Ok(());
                }
            }
        }
        let full =
            self.shared.lock().segments.back().map_or(0, |s| s.len) + size > self.max_segment();
        if full
            && self
                .shared
                .lock()
                .segments
                .back()
                .is_some_and(|s| s.len > 0)
        {
            self.rotate().await?;
        }
        self.file.write_all(&framed)?;
        self.dirty = true;
        {
            let mut st = self.shared.lock();
            if let Some(s) = st.segments.back_mut() {
                s.len += size;
            }
            st.undelivered += size;
            self.shared.metrics.buffer_bytes.set(st.undelivered as i64);
        }
        self.shared.metrics.buffer_events.inc_by(batch.len() as i64);
        if self.shared.cfg.fsync_interval_ms == 0 {
            self.sync().await?;
        }
        self.shared.written.send_modify(|n| *n += 1);
        // In the buffer: delivered, as far as upstream is concerned.
        deliver_all(batch);
        Ok(())
    }

    async fn rotate(&mut self) -> anyhow::Result<()> {
        self.dirty = true;
        self.sync().await?;
        self.id += 1;
        let path = segment::segment_path(&self.shared.dir, self.id);
        self.file = OpenOptions::new().create(true).append(true).open(&path)?;
        // The new file's name is durable too (fsync of the folder).
        File::open(&self.shared.dir)?.sync_all()?;
        let mut st = self.shared.lock();
        if let Some(s) = st.segments.back_mut() {
            s.sealed = true;
        }
        st.segments.push_back(Segment {
            id: self.id,
            len: 0,
            sealed: false,
        });
        Ok(())
    }
}

/// A record handed to the sink: its acknowledgement, where it ends, and its size.
struct Handed {
    done: oneshot::Receiver<Status>,
    end: Position,
    events: u64,
    bytes: u64,
}

/// Where the reader is, as the shared state sees it.
enum Readable {
    /// Whole records are in the segment up to this offset.
    UpTo(u64),
    /// The segment is read or gone: continue at this one.
    Next(u64),
    /// Nothing more will come.
    Finished,
    /// Wait for the writer.
    Wait,
}

fn readable(shared: &Shared, pos: Position) -> Readable {
    let st = shared.lock();
    let next = || {
        st.segments
            .iter()
            .find(|n| n.id > pos.segment)
            .map(|n| n.id)
    };
    match st.segments.iter().find(|s| s.id >= pos.segment) {
        Some(s) if s.id == pos.segment && pos.offset < s.len => Readable::UpTo(s.len),
        Some(s) if s.id != pos.segment => Readable::Next(s.id),
        _ => match next() {
            Some(id) => Readable::Next(id),
            None if st.closed => Readable::Finished,
            None => Readable::Wait,
        },
    }
}

/// Reads records back in order and hands them to the sink.
async fn read(
    shared: Arc<Shared>,
    mut pos: Position,
    to_sink: mpsc::Sender<Batch>,
    acks: mpsc::Sender<Handed>,
) -> anyhow::Result<()> {
    let mut written = shared.written.subscribe();
    let mut file: Option<(u64, File)> = None;
    loop {
        let limit = match readable(&shared, pos) {
            Readable::UpTo(limit) => limit,
            Readable::Next(id) => {
                pos = Position {
                    segment: id,
                    offset: 0,
                };
                continue;
            }
            Readable::Finished => return Ok(()),
            Readable::Wait => {
                if written.changed().await.is_err() {
                    return Ok(());
                }
                continue;
            }
        };
        if file.as_ref().is_none_or(|(id, _)| *id != pos.segment) {
            let path = segment::segment_path(&shared.dir, pos.segment);
            file = Some((pos.segment, File::open(&path)?));
        }
        let Some((_, f)) = &file else { continue };
        match segment::read_at(f, pos.offset, limit)? {
            Next::Record { payload, end } => {
                let bytes = end - pos.offset;
                pos.offset = end;
                let mut body = payload;
                let events = match body.len() >= 4 {
                    true => {
                        body.advance(4);
                        codec::decode_all(body)
                    }
                    false => Err(codec::DecodeError::Short("event count")),
                };
                let (notifier, done) = BatchNotifier::new();
                let count = match events {
                    Ok(events) => {
                        let n = events.len() as u64;
                        let batch: Batch = events
                            .into_iter()
                            .map(|e| e.with_finalizer(notifier.finalizer()))
                            .collect();
                        drop(notifier);
                        if to_sink.send(batch).await.is_err() {
                            return Ok(());
                        }
                        n
                    }
                    Err(e) => {
                        // Checksummed but unreadable: written by a different version. Skipped
                        // (acknowledged) so the rest can flow.
                        tracing::warn!(component = %shared.component, segment = pos.segment, error = %e, "disk buffer: skipped a record that cannot be decoded");
                        shared.metrics.buffer_corrupt.inc_by(bytes);
                        drop(notifier);
                        0
                    }
                };
                let handed = Handed {
                    done,
                    end: pos,
                    events: count,
                    bytes,
                };
                if acks.send(handed).await.is_err() {
                    return Ok(());
                }
            }
            Next::Partial | Next::Corrupt(_) => {
                // Lengths are published only after whole records are written, so this happens
                // only if the file changed under us after recovery: skip the rest.
                tracing::warn!(component = %shared.component, segment = pos.segment, offset = pos.offset, "disk buffer: unreadable bytes skipped to the end of the segment");
                let skipped = limit - pos.offset;
                shared.metrics.buffer_corrupt.inc_by(skipped);
                {
                    let mut st = shared.lock();
                    st.undelivered = st.undelivered.saturating_sub(skipped);
                }
                shared.room.notify_waiters();
                pos.offset = limit;
            }
        }
    }
}

/// Awaits the sink's acknowledgements in order; advances and saves the acknowledged position
/// and deletes delivered segments.
async fn acknowledge(
    shared: Arc<Shared>,
    mut acked: Position,
    mut handed: mpsc::Receiver<Handed>,
) -> anyhow::Result<()> {
    let mut saved = acked;
    let mut tick = tokio::time::interval(SAVE_ACK_EVERY);
    let mut stuck = false;
    // Saves the position once a second while it moves, whatever else is awaited.
    let mut save_if_moved = |acked: Position| {
        if acked != saved {
            save(&shared, acked);
            saved = acked;
        }
    };
    loop {
        let mut h = tokio::select! {
            h = handed.recv() => match h {
                Some(h) => h,
                None => break,
            },
            _ = tick.tick() => {
                save_if_moved(acked);
                continue;
            }
        };
        let status = loop {
            tokio::select! {
                s = &mut h.done => break s.unwrap_or(Status::Abandoned),
                _ = tick.tick() => save_if_moved(acked),
            }
        };
        if stuck {
            continue;
        }
        if status != Status::Delivered {
            // The sink gave up (stopping): this record and everything after it stay in the
            // buffer and are sent again at the next start.
            tracing::warn!(component = %shared.component, "disk buffer: the sink did not deliver a record; it stays buffered for the next start");
            stuck = true;
            continue;
        }
        acked = h.end;
        let removed = {
            let mut st = shared.lock();
            st.undelivered = st.undelivered.saturating_sub(h.bytes);
            shared.metrics.buffer_bytes.set(st.undelivered as i64);
            let mut removed = Vec::new();
            while let Some(s) = st.segments.front() {
                let passed = s.id < acked.segment
                    || (s.sealed && s.id == acked.segment && acked.offset >= s.len);
                if !passed || st.segments.len() == 1 {
                    break;
                }
                removed.push(s.id);
                st.segments.pop_front();
            }
            removed
        };
        shared.metrics.buffer_events.dec_by(h.events as i64);
        shared.room.notify_waiters();
        for id in removed {
            let path = segment::segment_path(&shared.dir, id);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), error = %e, "disk buffer: cannot delete a delivered segment");
            }
        }
    }
    save_if_moved(acked);
    Ok(())
}

fn save(shared: &Shared, pos: Position) {
    if let Err(e) = segment::write_ack(&shared.dir, pos) {
        tracing::warn!(component = %shared.component, error = %e, "disk buffer: cannot save the acknowledged position");
    }
}

#[cfg(test)]
mod tests;
