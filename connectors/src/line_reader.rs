//! Reading newline-delimited input into event batches, shared by the stdin, socket and TCP
//! syslog sources. Reads are capped so a line without a newline never grows past the limit; an
//! over-long line is skipped or cut (its event then says so), and a partial batch goes out
//! after 50 ms without input.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};
use tokio::sync::watch;
use trib_pipelines::event::Event;
use trib_pipelines::metrics::ComponentMetrics;
use trib_pipelines::runtime::Fanout;

/// What to do with a line longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlong {
    /// Drop it (logged).
    Skip,
    /// Keep its first bytes; `make` is told it was cut.
    Cut,
}

async fn stopped(s: &mut watch::Receiver<bool>) {
    let _ = s.wait_for(|v| *v).await;
}

/// Reads lines until end of input or stop; `make(line, truncated)` turns a line into an event,
/// and `seal` sees each batch just before it is sent (to attach acknowledgements). Returns false
/// if the pipeline has gone.
#[allow(clippy::too_many_arguments)]
pub async fn read_lines<R: AsyncBufRead + Unpin>(
    mut input: R,
    what: &str,
    max_line: usize,
    overlong: Overlong,
    mut shutdown: watch::Receiver<bool>,
    out: &Fanout,
    metrics: &ComponentMetrics,
    mut make: impl FnMut(Vec<u8>, bool) -> Option<Event>,
    mut seal: impl FnMut(&mut Vec<Event>),
) -> anyhow::Result<bool> {
    let mut batch = Vec::new();
    let mut line = Vec::new();
    let mut line_no = 0u64;
    // Inside a line longer than the limit: its bytes are discarded up to its newline.
    let mut skipping = false;
    loop {
        // `line` keeps a partial read across a timeout (read_until appends); reads are
        // capped so a line without a newline cannot grow past the limit.
        let room = ((max_line + 2).saturating_sub(line.len()) as u64).max(1);
        let mut limited = (&mut input).take(room);
        // Wait for a line; a partial batch goes out after 50 ms of quiet.
        let read = if batch.is_empty() {
            tokio::select! {
                r = limited.read_until(b'\n', &mut line) => r?,
                _ = stopped(&mut shutdown) => break,
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
                    seal(&mut batch);
                    if !out.send(std::mem::take(&mut batch)).await {
                        return Ok(false);
                    }
                    continue;
                }
            }
        };
        metrics.bytes_in.inc_by(read as u64);
        if read == 0 && line.is_empty() {
            break;
        }
        let at_eof = read == 0;
        if !at_eof && line.last() != Some(&b'\n') {
            if line.len() > max_line + 1 {
                if !skipping {
                    line_no += 1;
                    if overlong == Overlong::Cut {
                        line.truncate(max_line);
                        if let Some(e) = make(std::mem::take(&mut line), true) {
                            batch.push(e);
                            metrics.events_in.inc();
                        }
                    } else {
                        tracing::error!(
                            what,
                            line = line_no,
                            max = max_line,
                            "line longer than max_line_bytes; skipped"
                        );
                    }
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
        let truncated = line.len() > max_line;
        if truncated && overlong == Overlong::Skip {
            tracing::error!(
                what,
                line = line_no,
                bytes = line.len(),
                max = max_line,
                "line longer than max_line_bytes; skipped"
            );
            line.clear();
            continue;
        }
        line.truncate(max_line);
        if let Some(e) = make(std::mem::take(&mut line), truncated) {
            batch.push(e);
            metrics.events_in.inc();
        }
        if batch.len() >= 1000 {
            seal(&mut batch);
            if !out.send(std::mem::take(&mut batch)).await {
                return Ok(false);
            }
        }
    }
    if !batch.is_empty() {
        seal(&mut batch);
    }
    Ok(out.send(batch).await)
}
