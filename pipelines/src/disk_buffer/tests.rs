//! The disk buffer on its own: what is written comes back in order, upstream is acknowledged
//! once a batch is on disk, undelivered records survive a restart and delivered ones do not
//! come back, a torn tail is cut and reported, and a full buffer blocks or drops.

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::event::Event;

fn config(dir: &Path, max_bytes: u64, when_full: WhenFull) -> DiskBufferConfig {
    DiskBufferConfig {
        kind: crate::config::sinks::BufferKind::Disk,
        path: dir.display().to_string(),
        max_bytes,
        when_full,
        fsync_interval_ms: 0,
    }
}

fn batch(from: usize, n: usize) -> (Batch, oneshot::Receiver<Status>) {
    let (notifier, rx) = BatchNotifier::new();
    let b = (from..from + n)
        .map(|i| Event::raw(format!("event {i}")).with_finalizer(notifier.finalizer()))
        .collect();
    (b, rx)
}

struct Running {
    tx: Option<mpsc::Sender<Batch>>,
    out: Input,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    metrics: ComponentMetrics,
}

fn start(cfg: &DiskBufferConfig) -> Running {
    let metrics = ComponentMetrics::default();
    let opened = open("test", cfg, metrics.clone()).unwrap();
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let (out, tasks) = opened.start(Input::detached(rx));
    Running {
        tx: Some(tx),
        out,
        tasks: tasks.into_iter().map(tokio::spawn).collect(),
        metrics,
    }
}

impl Running {
    async fn send(&self, b: Batch) {
        self.tx.as_ref().unwrap().send(b).await.unwrap();
    }

    /// Takes `n` events from the sink side; delivers them or drops them undelivered.
    async fn take(&mut self, n: usize, deliver: bool) -> Vec<String> {
        let mut got = Vec::new();
        while got.len() < n {
            let b = tokio::time::timeout(Duration::from_secs(10), self.out.recv())
                .await
                .expect("events in time")
                .expect("buffer open");
            for e in b {
                got.push(e.raw_str().unwrap_or_default().into_owned());
                if deliver {
                    e.deliver();
                }
            }
        }
        got
    }

    /// Closes the input and waits for the buffer's tasks (the sink side is drained first).
    async fn finish(mut self, deliver: bool) -> Vec<String> {
        drop(self.tx.take());
        let mut rest = Vec::new();
        while let Ok(Some(b)) = tokio::time::timeout(Duration::from_secs(10), self.out.recv()).await
        {
            for e in b {
                rest.push(e.raw_str().unwrap_or_default().into_owned());
                if deliver {
                    e.deliver();
                }
            }
        }
        for t in self.tasks {
            t.await.unwrap().unwrap();
        }
        rest
    }
}

/// A buffer holding three batches of 10 events that the sink never delivered (a crash), its
/// config, and its segment file.
async fn three_batches_undelivered() -> (tempfile::TempDir, DiskBufferConfig, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1 << 20, WhenFull::Block);
    let r = start(&cfg);
    for i in 0..3 {
        let (b, _) = batch(i * 10, 10);
        r.send(b).await;
    }
    assert_eq!(r.finish(false).await.len(), 30);
    let ids = segment::list(dir.path()).unwrap();
    let seg = segment::segment_path(dir.path(), ids[0]);
    (dir, cfg, seg)
}

fn names(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("event {i}")).collect()
}

#[tokio::test]
async fn records_flow_in_order_and_upstream_is_acknowledged_once_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1 << 20, WhenFull::Block);
    let mut r = start(&cfg);
    let (b, acked) = batch(0, 100);
    r.send(b).await;
    // Acknowledged upstream without the sink having taken anything.
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), acked)
            .await
            .unwrap()
            .unwrap(),
        Status::Delivered
    );
    let (b, _) = batch(100, 50);
    r.send(b).await;
    assert_eq!(r.take(150, true).await, names(0, 150));
    assert!(r.finish(true).await.is_empty());
    // Everything was delivered: a restart reads nothing again.
    let r = start(&cfg);
    assert_eq!(r.metrics.buffer_events.get(), 0);
    assert!(r.finish(true).await.is_empty());
}

#[tokio::test]
async fn undelivered_records_come_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1 << 20, WhenFull::Block);
    let mut r = start(&cfg);
    let (b, _) = batch(0, 10);
    r.send(b).await;
    let (b, _) = batch(10, 10);
    r.send(b).await;
    // The sink delivers the first batch and loses the second (it stops).
    assert_eq!(r.take(10, true).await, names(0, 10));
    let lost = r.finish(false).await;
    assert_eq!(lost, names(10, 10));
    let mut r = start(&cfg);
    assert_eq!(r.metrics.buffer_events.get(), 10);
    assert_eq!(r.take(10, true).await, names(10, 10));
    r.finish(true).await;
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_reported_and_the_rest_is_kept() {
    let (_dir, cfg, seg) = three_batches_undelivered().await;
    // Tear the last record: keep only part of it, as a crash mid-write would.
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 7).unwrap();
    let mut r = start(&cfg);
    assert!(r.metrics.buffer_corrupt.get() > 0, "the cut is reported");
    assert_eq!(r.take(20, true).await, names(0, 20));
    assert!(r.finish(true).await.is_empty());
}

#[tokio::test]
async fn a_corrupt_record_in_the_middle_cuts_from_there() {
    let (_dir, cfg, seg) = three_batches_undelivered().await;
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(8).position(|w| w == b"event 15").unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let mut r = start(&cfg);
    assert!(r.metrics.buffer_corrupt.get() > 0);
    assert_eq!(r.take(10, true).await, names(0, 10));
    assert!(r.finish(true).await.is_empty());
}

#[tokio::test]
async fn a_full_buffer_blocks_until_the_sink_catches_up_or_drops_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    // Room for about one batch.
    let cfg = config(dir.path(), 1500, WhenFull::Block);
    let mut r = start(&cfg);
    let (b, first) = batch(0, 40);
    r.send(b).await;
    first.await.unwrap();
    let (b, mut second) = batch(40, 40);
    r.send(b).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        second.try_recv().is_err(),
        "the writer waits while the buffer is full"
    );
    assert_eq!(r.take(40, true).await, names(0, 40));
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .unwrap()
            .unwrap(),
        Status::Delivered
    );
    assert_eq!(r.take(40, true).await, names(40, 40));
    r.finish(true).await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1500, WhenFull::DropNewest);
    let mut r = start(&cfg);
    let (b, _) = batch(0, 40);
    r.send(b).await;
    let (b, dropped) = batch(40, 40);
    r.send(b).await;
    assert_eq!(dropped.await.unwrap(), Status::Delivered);
    assert_eq!(r.metrics.buffer_dropped.get(), 40);
    assert_eq!(r.take(40, true).await, names(0, 40));
    assert!(r.finish(true).await.is_empty());
}

#[tokio::test]
async fn segments_roll_over_and_delivered_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB segments (the floor); ~3 MiB of records.
    let cfg = config(dir.path(), 8 << 20, WhenFull::Block);
    let mut r = start(&cfg);
    let big = "x".repeat(100_000);
    for i in 0..30 {
        let (notifier, _rx) = BatchNotifier::new();
        let e = Event::raw(format!("{i} {big}")).with_finalizer(notifier.finalizer());
        r.send(vec![e]).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(segment::list(dir.path()).unwrap().len() >= 3);
    let got = r.take(30, true).await;
    assert_eq!(got.len(), 30);
    assert!(got[29].starts_with("29 "));
    r.finish(true).await;
    assert_eq!(
        segment::list(dir.path()).unwrap().len(),
        1,
        "only the last segment is left"
    );
}
