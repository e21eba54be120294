//! The file source: tails the files its globs match. A file is tracked by its device and
//! inode, with a fingerprint of its first line to tell a reused inode or a copy apart; open
//! files are read to their end even after a rename or deletion (rotation loses nothing), a
//! file that shrinks was truncated (copytruncate: its copy, found by fingerprint, continues from
//! the position reached). Each read batch carries a batch notifier; a file's position is
//! checkpointed only up to the end of its delivered batches, so a restart reads again what was
//! not delivered and nothing that was.

mod checkpoint;
mod lines;

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::oneshot;
use trib_pipelines::config::sources::{FileSource, StartAt};
use trib_pipelines::event::Event;
use trib_pipelines::finalize::{BatchNotifier, Status};
use trib_pipelines::runtime::{Source, SourceContext};

use checkpoint::{fingerprint, Checkpoint, Entry, Identity, FINGERPRINT_BYTES};
use lines::Splitter;

pub struct FileTail {
    cfg: FileSource,
    exclude: Vec<glob::Pattern>,
    multiline: Option<lines::Multiline>,
}

impl FileTail {
    pub fn new(c: &FileSource) -> anyhow::Result<Self> {
        anyhow::ensure!(!c.include.is_empty(), "include: name at least one glob");
        let pats = |globs: &[String], what: &str| -> anyhow::Result<Vec<glob::Pattern>> {
            globs
                .iter()
                .map(|g| glob::Pattern::new(g).map_err(|e| anyhow::anyhow!("{what}: `{g}`: {e}")))
                .collect()
        };
        let multiline = c
            .multiline
            .as_ref()
            .map(|m| {
                let (what, pattern, continuation) =
                    match (&m.start_pattern, &m.continuation_pattern) {
                        (Some(p), None) => ("start_pattern", p, false),
                        (None, Some(p)) => ("continuation_pattern", p, true),
                        _ => anyhow::bail!(
                        "multiline: give exactly one of `start_pattern` or `continuation_pattern`"
                    ),
                    };
                let pattern = regex::Regex::new(pattern)
                    .map_err(|e| anyhow::anyhow!("multiline.{what}: {e}"))?;
                Ok(lines::Multiline {
                    pattern,
                    continuation,
                    timeout: Duration::from_millis(m.timeout_ms),
                })
            })
            .transpose()?;
        pats(&c.include, "include")?;
        anyhow::ensure!(c.max_line_bytes > 0, "max_line_bytes: must be at least 1");
        anyhow::ensure!(c.batch > 0, "batch: must be at least 1");
        Ok(Self {
            exclude: pats(&c.exclude, "exclude")?,
            multiline,
            cfg: c.clone(),
        })
    }

    /// Files the globs match now.
    fn scan(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for g in &self.cfg.include {
            let Ok(paths) = glob::glob(g) else { continue };
            for p in paths.flatten() {
                if p.is_file()
                    && !self.exclude.iter().any(|x| x.matches_path(&p))
                    && !out.contains(&p)
                {
                    out.push(p);
                }
            }
        }
        out
    }
}

impl FileTail {
    /// A line splitter for this source's options, starting at `at`.
    fn splitter(&self, at: u64) -> Splitter {
        Splitter::new(self.cfg.max_line_bytes, self.multiline.clone(), at)
    }
}

/// One file being read.
struct Tracked {
    id: Identity,
    path: Arc<str>,
    /// The path as the `file` header of each line (shared, not copied per line).
    header: Bytes,
    file: File,
    /// Next byte to read.
    read_at: u64,
    /// Everything before this was delivered (the checkpointed position).
    delivered: u64,
    splitter: Splitter,
    /// Read batches not yet delivered: (position after the batch, notification).
    pending: VecDeque<(u64, oneshot::Receiver<Status>)>,
    matched: bool,
    last_growth: Instant,
}

impl Tracked {
    /// A file matched by the globs, read from `at`, everything before it counted as delivered.
    fn new(s: &FileTail, id: Identity, path: &Path, file: File, at: u64) -> Self {
        let shown = path.display().to_string();
        Self {
            id,
            header: Bytes::from(shown.clone()),
            path: shown.into(),
            file,
            read_at: at,
            delivered: at,
            splitter: s.splitter(at),
            pending: VecDeque::new(),
            matched: true,
            last_growth: Instant::now(),
        }
    }
}

fn identity(file: &File) -> std::io::Result<Option<Identity>> {
    let meta = file.metadata()?;
    let mut first = vec![0u8; FINGERPRINT_BYTES];
    let n = file.read_at(&mut first, 0)?;
    Ok(fingerprint(&first[..n]).map(|fingerprint| Identity {
        dev: meta.dev(),
        inode: meta.ino(),
        fingerprint,
    }))
}

impl Source for FileTail {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        let handle = tokio::runtime::Handle::current();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || tail(*self, cx, handle))
                .await
                .map_err(|e| anyhow::anyhow!("file source thread failed: {e}"))?
        })
    }
}

fn tail(s: FileTail, cx: SourceContext, rt: tokio::runtime::Handle) -> anyhow::Result<()> {
    let state_dir = PathBuf::from(&s.cfg.state_dir);
    let checkpoint = Checkpoint::load(&state_dir)?;
    let first_start = checkpoint.files.is_empty() && !state_dir.join("checkpoints.json").exists();
    let mut files: HashMap<(u64, u64), Tracked> = HashMap::new();
    let mut last_scan: Option<Instant> = None;
    let mut last_save = Instant::now();
    let mut dirty = false;
    let glob_every = Duration::from_millis(s.cfg.glob_interval_ms.max(10));
    let close_idle = Duration::from_millis(s.cfg.close_idle_ms);
    // 256 KiB reads: about a batch of 200-byte lines each, so batches stay near `batch`.
    let mut buf = vec![0u8; 256 << 10];
    let mut first_scan = true;
    loop {
        if cx.is_stopping() {
            break;
        }
        if last_scan.is_none_or(|t| t.elapsed() >= glob_every) {
            last_scan = Some(Instant::now());
            discover(&s, &checkpoint, &mut files, first_scan && first_start);
            first_scan = false;
        }
        let mut read_any = false;
        let keys: Vec<(u64, u64)> = files.keys().copied().collect();
        for key in keys {
            let Some(t) = files.get_mut(&key) else {
                continue;
            };
            if t.read_at == 0 {
                // Nothing read yet (e.g. empty when it was truncated): learn its first line now.
                if let Ok(Some(id)) = identity(&t.file) {
                    t.id = id;
                }
            }
            let len = t.file.metadata().map(|m| m.len()).unwrap_or(0);
            // Shrunk, or a different first line: the file was truncated and written again.
            let rewritten = t.read_at > 0
                && identity(&t.file)
                    .ok()
                    .flatten()
                    .is_some_and(|i| i.fingerprint != t.id.fingerprint);
            if len < t.read_at || rewritten {
                truncated(&s, &mut files, key);
                dirty = true;
                continue;
            }
            let mut batch = Vec::with_capacity(s.cfg.batch.min(100_000));
            let (notifier, rx) = BatchNotifier::new();
            while batch.len() < s.cfg.batch {
                let n = t.file.read_at(&mut buf, t.read_at).unwrap_or(0);
                if n == 0 {
                    break;
                }
                // Truncated and written again while we read: these bytes may be new content at
                // an old position. Leave them; the next round handles the truncation.
                if identity(&t.file)
                    .ok()
                    .flatten()
                    .is_none_or(|i| i.fingerprint != t.id.fingerprint)
                {
                    break;
                }
                t.read_at += n as u64;
                t.last_growth = Instant::now();
                cx.metrics.bytes_in.inc_by(n as u64);
                t.splitter.push(&buf[..n], |line, truncated| {
                    batch.push(line_event(&cx.name, &t.header, line, truncated, &notifier));
                });
            }
            if let Some((line, truncated)) = t.splitter.flush_idle() {
                batch.push(line_event(&cx.name, &t.header, line, truncated, &notifier));
            }
            drop(notifier);
            if batch.is_empty() {
                continue;
            }
            read_any = true;
            t.pending.push_back((t.splitter.emitted_up_to(), rx));
            cx.metrics.events_in.inc_by(batch.len() as u64);
            if !rt.block_on(cx.out.send(batch)) {
                return Ok(());
            }
        }
        // Advance positions over delivered batches; re-read after an abandoned one.
        for t in files.values_mut() {
            while let Some((end, rx)) = t.pending.front_mut() {
                match rx.try_recv() {
                    Ok(Status::Delivered) => {
                        t.delivered = *end;
                        t.pending.pop_front();
                        dirty = true;
                    }
                    Err(oneshot::error::TryRecvError::Empty) => break,
                    Ok(Status::Abandoned) | Err(oneshot::error::TryRecvError::Closed) => {
                        tracing::warn!(file = %t.path, from = t.delivered, "lines were not delivered; reading them again");
                        t.pending.clear();
                        t.read_at = t.delivered;
                        t.splitter = s.splitter(t.delivered);
                        break;
                    }
                }
            }
        }
        // Close files that are gone from the globs, read to their end and quiet.
        files.retain(|_, t| {
            let keep = t.matched || !t.pending.is_empty() || t.last_growth.elapsed() < close_idle;
            if !keep {
                tracing::info!(file = %t.path, "file no longer matched and fully read; closed");
            }
            keep
        });
        if dirty && last_save.elapsed() >= Duration::from_secs(1) {
            save(&state_dir, &files)?;
            dirty = false;
            last_save = Instant::now();
        }
        if !read_any {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Stop: wait (bounded) for the batches in flight, then save what was delivered.
    let SourceContext { out, .. } = cx;
    drop(out);
    let deadline = Instant::now() + Duration::from_secs(30);
    for t in files.values_mut() {
        while let Some((end, rx)) = t.pending.pop_front() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rt.block_on(tokio::time::timeout(left, rx)) {
                Ok(Ok(Status::Delivered)) => t.delivered = end,
                _ => break,
            }
        }
    }
    save(&state_dir, &files)
}

fn line_event(
    source: &Arc<str>,
    path: &Bytes,
    line: Vec<u8>,
    truncated: bool,
    n: &Arc<BatchNotifier>,
) -> Event {
    let mut e = Event::raw(line).with_finalizer(n.finalizer());
    e.meta.source = source.clone();
    e.headers.push(("file".into(), path.clone()));
    if truncated {
        e.headers
            .push(("truncated".into(), Bytes::from_static(b"true")));
    }
    e
}

fn save(dir: &Path, files: &HashMap<(u64, u64), Tracked>) -> anyhow::Result<()> {
    Checkpoint {
        files: files
            .values()
            .map(|t| Entry {
                id: t.id,
                path: PathBuf::from(&*t.path),
                offset: t.delivered,
            })
            .collect(),
    }
    .save(dir)
}

/// Scans the globs: opens new files, notes renames, marks what is still matched.
fn discover(
    s: &FileTail,
    cp: &Checkpoint,
    files: &mut HashMap<(u64, u64), Tracked>,
    first_start: bool,
) {
    for t in files.values_mut() {
        t.matched = false;
    }
    for path in s.scan() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let key = (meta.dev(), meta.ino());
        if let Some(t) = files.get_mut(&key) {
            t.matched = true;
            let p = path.display().to_string();
            if *t.path != *p {
                tracing::info!(from = %t.path, to = %p, "file renamed; following it");
                t.header = Bytes::from(p.to_string());
                t.path = p.into();
            }
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let Ok(Some(id)) = identity(&file) else {
            continue;
        };
        if files.values().any(|t| t.id.fingerprint == id.fingerprint) {
            // A copy of a file being read (copytruncate in progress, or a backup): its lines
            // come from the original; if the original is truncated, the copy takes over.
            continue;
        }
        let start = match cp.offset_of(&id) {
            Some(o) if o <= meta.len() => o,
            _ if first_start && s.cfg.start_at == StartAt::End => meta.len(),
            _ => 0,
        };
        tracing::info!(file = %path.display(), from = start, "reading file");
        files.insert(key, Tracked::new(s, id, &path, file, start));
    }
}

/// A tracked file shrank: it was truncated (copytruncate). If a matched, untracked file has its
/// old fingerprint (the copy), it continues from the position reached; the truncated file is
/// read again from its start as new content.
fn truncated(s: &FileTail, files: &mut HashMap<(u64, u64), Tracked>, key: (u64, u64)) {
    let Some(t) = files.get_mut(&key) else { return };
    tracing::info!(file = %t.path, at = t.read_at, "file truncated; reading it from the start");
    let old = t.id;
    // A partial line (or a pending multiline event) is read again from the copy.
    let reached = t.splitter.emitted_up_to();
    // The copy inherits what was read and what is still waiting for delivery.
    let (delivered, pending) = (t.delivered, std::mem::take(&mut t.pending));
    t.read_at = 0;
    t.delivered = 0;
    t.splitter = s.splitter(0);
    if let Ok(Some(id)) = identity(&t.file) {
        t.id = id;
    }
    for path in s.scan() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let k = (meta.dev(), meta.ino());
        if files.contains_key(&k) {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let Ok(Some(id)) = identity(&file) else {
            continue;
        };
        if id.fingerprint == old.fingerprint && meta.len() >= reached {
            tracing::info!(file = %path.display(), from = reached, "the truncated file's copy continues from the position reached");
            let mut copy = Tracked::new(s, id, &path, file, reached);
            copy.delivered = delivered;
            copy.pending = pending;
            files.insert(k, copy);
            break;
        }
    }
}
