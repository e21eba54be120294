//! The layer every batching sink shares: gathers events from the input into batches (by count,
//! bytes and time), writes each batch through a [`BatchWriter`], retries transient failures
//! with exponential backoff (the input is not read meanwhile, so upstream waits), sends events
//! the destination refuses to `dead_letter` with the reason, and only then acknowledges.

use std::time::Duration;

use futures::future::BoxFuture;
use trib_pipelines::config::sinks::{Batch, Retry};
use trib_pipelines::event::Event;
use trib_pipelines::runtime::SinkContext;
use trib_pipelines::transforms::dead_letter;

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Worth retrying: the destination is away or overloaded.
    #[error("{0}")]
    Transient(String),
    /// The destination refuses this batch; retrying cannot help.
    #[error("{0}")]
    Permanent(String),
}

/// A sink's own write.
pub trait BatchWriter: Send {
    /// Writes the events durably. `Ok` lists the events the destination refused for their
    /// content, by index, with the reason; they go to `dead_letter`.
    fn write<'a>(
        &'a mut self,
        events: &'a [Event],
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>, WriteError>>;

    /// Called when the input has closed, after the last write.
    fn close(&mut self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// Rough size of an event for batching by bytes.
pub fn approx_size(e: &Event) -> usize {
    e.raw.as_ref().map_or(0, |r| r.len()) + 48 * e.fields.len() + 16
}

/// Runs a batching sink until its input closes.
pub async fn run<W: BatchWriter>(
    mut cx: SinkContext,
    batch: &Batch,
    retry: &Retry,
    mut writer: W,
) -> anyhow::Result<()> {
    let max_events = batch.max_events.max(1);
    let timeout = Duration::from_millis(batch.timeout_ms);
    let mut pending: Vec<Event> = Vec::new();
    let mut bytes = 0usize;
    let mut open = true;
    while open {
        // Wait for the first events, then fill until full or timed out.
        if pending.is_empty() {
            match cx.input.recv().await {
                Some(b) => {
                    bytes += b.iter().map(approx_size).sum::<usize>();
                    pending.extend(b);
                }
                None => break,
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while pending.len() < max_events && bytes < batch.max_bytes {
            match tokio::time::timeout_at(deadline, cx.input.recv()).await {
                Ok(Some(b)) => {
                    bytes += b.iter().map(approx_size).sum::<usize>();
                    pending.extend(b);
                }
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        let rest = if pending.len() > max_events {
            pending.split_off(max_events)
        } else {
            Vec::new()
        };
        let events = std::mem::replace(&mut pending, rest);
        bytes = pending.iter().map(approx_size).sum();
        write_with_retry(&mut cx, retry, &mut writer, events).await;
    }
    while !pending.is_empty() {
        let rest = if pending.len() > max_events {
            pending.split_off(max_events)
        } else {
            Vec::new()
        };
        let events = std::mem::replace(&mut pending, rest);
        write_with_retry(&mut cx, retry, &mut writer, events).await;
    }
    writer.close().await
}

async fn write_with_retry<W: BatchWriter>(
    cx: &mut SinkContext,
    retry: &Retry,
    writer: &mut W,
    events: Vec<Event>,
) {
    let mut backoff = Duration::from_millis(retry.initial_backoff_ms.max(1));
    let max_backoff = Duration::from_millis(retry.max_backoff_ms.max(retry.initial_backoff_ms));
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match writer.write(&events).await {
            Ok(rejected) => {
                finish(cx, events, rejected).await;
                return;
            }
            Err(WriteError::Permanent(m)) => {
                tracing::error!(sink = %cx.name, error = %m, count = events.len(), "batch refused; sent to dead_letter");
                let all = (0..events.len()).map(|i| (i, m.clone())).collect();
                finish(cx, events, all).await;
                return;
            }
            Err(WriteError::Transient(m)) => {
                if retry.max_attempts > 0 && attempt >= retry.max_attempts {
                    tracing::error!(sink = %cx.name, error = %m, attempt, "giving up; batch sent to dead_letter");
                    let reason = format!("gave up after {attempt} attempts: {m}");
                    let all = (0..events.len()).map(|i| (i, reason.clone())).collect();
                    finish(cx, events, all).await;
                    return;
                }
                tracing::warn!(sink = %cx.name, error = %m, attempt, retry_in = ?backoff, "write failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

async fn finish(cx: &mut SinkContext, events: Vec<Event>, rejected: Vec<(usize, String)>) {
    let n = events.len() - rejected.len();
    cx.metrics.events_out.inc_by(n as u64);
    if rejected.is_empty() {
        trib_pipelines::event::deliver_all(events);
        return;
    }
    let mut reasons: Vec<Option<String>> = vec![None; events.len()];
    for (i, r) in rejected {
        if let Some(slot) = reasons.get_mut(i) {
            *slot = Some(r);
        }
    }
    let mut dead = Vec::new();
    for (e, reason) in events.into_iter().zip(reasons) {
        match reason {
            None => e.deliver(),
            Some(r) => dead.push(dead_letter(e, &cx.name, r)),
        }
    }
    cx.dead_letter.send(dead).await;
}
