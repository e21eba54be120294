//! The file sink: appends NDJSON, fsyncs each batch before acknowledging it, and rotates by
//! size or age (the closed file is renamed `<path>.<unix-ms>`).

use std::fs::{File as StdFile, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use trib_pipelines::config::sinks::{Encoding, FileSink, Retry};
use trib_pipelines::event::{now_ms, Event};
use trib_pipelines::runtime::{Sink, SinkContext};

use crate::batching::{self, BatchWriter, WriteError};

pub struct File {
    cfg: FileSink,
}

impl File {
    pub fn new(c: &FileSink) -> Self {
        Self { cfg: c.clone() }
    }
}

impl Sink for File {
    fn run(self: Box<Self>, cx: SinkContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let writer = Writer {
                path: PathBuf::from(&self.cfg.path),
                encoding: self.cfg.encoding,
                rotate_bytes: self.cfg.rotate_bytes,
                rotate_age: (self.cfg.rotate_ms > 0)
                    .then(|| Duration::from_millis(self.cfg.rotate_ms)),
                file: None,
                metrics: cx.metrics.clone(),
            };
            batching::run(cx, &self.cfg.batch, &Retry::default(), writer).await
        })
    }
}

struct Open {
    file: StdFile,
    size: u64,
    opened: Instant,
}

struct Writer {
    path: PathBuf,
    encoding: Encoding,
    rotate_bytes: u64,
    rotate_age: Option<Duration>,
    file: Option<Open>,
    metrics: trib_pipelines::metrics::ComponentMetrics,
}

fn append(
    path: PathBuf,
    open: Option<Open>,
    buf: Vec<u8>,
    rotate_bytes: u64,
    rotate_age: Option<Duration>,
) -> std::io::Result<Open> {
    let mut open = match open {
        Some(o) => o,
        None => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&path)?;
            let size = drop_torn_tail(&file)?;
            Open {
                file,
                size,
                opened: Instant::now(),
            }
        }
    };
    open.file.write_all(&buf)?;
    open.file.sync_data()?;
    open.size += buf.len() as u64;
    let too_big = rotate_bytes > 0 && open.size >= rotate_bytes;
    let too_old = rotate_age.is_some_and(|a| open.opened.elapsed() >= a);
    if too_big || too_old {
        // `<path>.<unix-ms>`, with `-N` added when a file of that name exists already (two
        // rotations in one millisecond must not overwrite each other).
        let stamp = now_ms();
        let mut n = 0u32;
        let rotated = loop {
            let mut name = path.clone().into_os_string();
            name.push(if n == 0 {
                format!(".{stamp}")
            } else {
                format!(".{stamp}-{n}")
            });
            if !std::path::Path::new(&name).exists() {
                break name;
            }
            n += 1;
        };
        std::fs::rename(&path, &rotated)?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            StdFile::open(dir)?.sync_all()?;
        }
        open = Open {
            file,
            size: 0,
            opened: Instant::now(),
        };
    }
    Ok(open)
}

/// A crash during a write can leave a partial last line, which was never acknowledged; it is
/// cut off so the next line does not run into it. Returns the size after.
fn drop_torn_tail(file: &StdFile) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata()?.len();
    let mut end = size;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < size {
                tracing::warn!(
                    bytes = size - keep,
                    "file sink: cut a partial last line left by a crash"
                );
                file.set_len(keep)?;
                file.sync_data()?;
            }
            return Ok(keep);
        }
        if size - start > 64 << 20 {
            // No newline in the last 64 MiB: not a line file of ours; leave it.
            return Ok(size);
        }
        end = start;
    }
    if size > 0 {
        file.set_len(0)?;
        file.sync_data()?;
    }
    Ok(0)
}

impl BatchWriter for Writer {
    fn write<'a>(
        &'a mut self,
        events: &'a [Event],
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>, WriteError>> {
        Box::pin(async move {
            let mut buf = Vec::with_capacity(events.len() * 128);
            for e in events {
                match self.encoding {
                    Encoding::Text => e.write_body(&mut buf),
                    Encoding::Json => {
                        serde_json::to_writer(&mut buf, &e.to_json())
                            .map_err(|x| WriteError::Permanent(x.to_string()))?;
                    }
                }
                buf.push(b'\n');
            }
            let n = buf.len() as u64;
            let (path, open) = (self.path.clone(), self.file.take());
            let (rb, ra) = (self.rotate_bytes, self.rotate_age);
            let r = tokio::task::spawn_blocking(move || append(path, open, buf, rb, ra))
                .await
                .map_err(|e| WriteError::Transient(e.to_string()))?;
            match r {
                Ok(o) => {
                    self.file = Some(o);
                    self.metrics.bytes_out.inc_by(n);
                    Ok(Vec::new())
                }
                Err(e) => Err(WriteError::Transient(format!(
                    "{}: {e}",
                    self.path.display()
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        std::fs::write(&path, "a\nb\npar").unwrap();
        let open = append(path.clone(), None, b"c\n".to_vec(), 0, None).unwrap();
        drop(open);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\nc\n");
        std::fs::write(&path, "no newline at all").unwrap();
        append(path.clone(), None, b"d\n".to_vec(), 0, None).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "d\n");
    }

    #[test]
    fn rotates_by_size_and_keeps_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        let mut open = None;
        for i in 0..10 {
            let line = format!("{{\"n\":{i}}}\n").into_bytes();
            open = Some(append(path.clone(), open, line, 20, None).unwrap());
        }
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 4, "rotated files: {files:?}");
        let mut all: Vec<String> = files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort();
        let mut want: Vec<String> = (0..10).map(|i| format!("{{\"n\":{i}}}")).collect();
        want.sort();
        assert_eq!(all, want);
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name == "out.ndjson" || name.starts_with("out.ndjson."),
                "{name}"
            );
        }
    }
}
