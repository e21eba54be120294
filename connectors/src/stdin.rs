//! The stdin source: each line of standard input is a raw event; the pipeline drains and ends
//! at end of input.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use trib_pipelines::config::sources::StdinSource;
use trib_pipelines::event::Event;
use trib_pipelines::runtime::{Source, SourceContext};

pub struct Stdin {
    max_line: usize,
}

impl Stdin {
    pub fn new(c: &StdinSource) -> Self {
        Self {
            max_line: c.max_line_bytes,
        }
    }
}

impl Source for Stdin {
    fn run(self: Box<Self>, mut cx: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let mut input = BufReader::with_capacity(1 << 20, tokio::io::stdin());
            let mut batch = Vec::new();
            let mut line = Vec::new();
            let mut line_no = 0u64;
            // Inside a line longer than the limit: its bytes are discarded up to its newline.
            let mut skipping = false;
            loop {
                // `line` keeps a partial read across a timeout (read_until appends); reads are
                // capped so a line without a newline cannot grow past the limit.
                let room = ((self.max_line + 2).saturating_sub(line.len()) as u64).max(1);
                let mut limited = (&mut input).take(room);
                // Wait for a line; a partial batch goes out after 50 ms of quiet.
                let read = if batch.is_empty() {
                    tokio::select! {
                        r = limited.read_until(b'\n', &mut line) => r?,
                        _ = cx.stopped() => break,
                    }
                } else {
                    match tokio::time::timeout(
                        Duration::from_millis(50),
                        limited.read_until(b'\n', &mut line),
                    )
                    .await
                    {
                        Ok(r) => r?,
                        Err(_) => {
                            if !cx.out.send(std::mem::take(&mut batch)).await {
                                return Ok(());
                            }
                            continue;
                        }
                    }
                };
                cx.metrics.bytes_in.inc_by(read as u64);
                if read == 0 && line.is_empty() {
                    break;
                }
                let at_eof = read == 0;
                if !at_eof && line.last() != Some(&b'\n') {
                    if line.len() > self.max_line + 1 {
                        if !skipping {
                            line_no += 1;
                            tracing::error!(
                                line = line_no,
                                max = self.max_line,
                                "stdin: line longer than max_line_bytes; skipped"
                            );
                        }
                        skipping = true;
                        line.clear();
                    }
                    continue;
                }
                if skipping {
                    skipping = false;
                    line.clear();
                    continue;
                }
                line_no += 1;
                while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    line.pop();
                }
                if line.len() > self.max_line {
                    tracing::error!(
                        line = line_no,
                        bytes = line.len(),
                        max = self.max_line,
                        "stdin: line longer than max_line_bytes; skipped"
                    );
                    line.clear();
                    continue;
                }
                let mut e = Event::raw(std::mem::take(&mut line));
                e.meta.source = cx.name.clone();
                batch.push(e);
                cx.metrics.events_in.inc();
                if batch.len() >= 1000 && !cx.out.send(std::mem::take(&mut batch)).await {
                    return Ok(());
                }
            }
            cx.out.send(batch).await;
            Ok(())
        })
    }
}
