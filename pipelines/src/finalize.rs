//! End-to-end acknowledgements. A source gives every batch it emits a [`BatchNotifier`]; each
//! event of the batch (and every copy made by a fan-out) carries a [`Finalizer`] for it. A sink
//! finalizes an event as delivered once the event is durably written; a transform that drops an
//! event on purpose (filter, sample, dedupe) finalizes it as delivered too. A copy that is dropped
//! without being finalized counts as abandoned, so a crash or a discarded buffer can never be
//! mistaken for delivery. When the last copy of the last event is gone, the source learns the
//! batch's worst status and commits (Kafka offset, HTTP 200, file position) only if delivered.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// What became of a batch: the worst outcome over all its events and copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Status {
    /// Every copy was durably written by a sink, or dropped on purpose by a transform, or sent
    /// to a dead-letter output that took it.
    Delivered = 0,
    /// Some copy was dropped without being delivered (shutdown, crash, a sink giving up).
    Abandoned = 1,
}

/// Fires once, when the last event of a batch has been finalized.
#[derive(Debug)]
pub struct BatchNotifier {
    status: AtomicU8,
    tx: Mutex<Option<oneshot::Sender<Status>>>,
}

impl BatchNotifier {
    /// A notifier and the receiver that learns the batch's status.
    pub fn new() -> (Arc<Self>, oneshot::Receiver<Status>) {
        let (tx, rx) = oneshot::channel();
        (
            Arc::new(Self {
                status: AtomicU8::new(Status::Delivered as u8),
                tx: Mutex::new(Some(tx)),
            }),
            rx,
        )
    }

    /// A finalizer for one event of this batch.
    pub fn finalizer(self: &Arc<Self>) -> Finalizer {
        Finalizer {
            batch: self.clone(),
            status: Status::Abandoned,
        }
    }
}

impl Drop for BatchNotifier {
    fn drop(&mut self) {
        let status = if self.status.load(Ordering::Acquire) == Status::Delivered as u8 {
            Status::Delivered
        } else {
            Status::Abandoned
        };
        if let Some(tx) = self.tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(status);
        }
    }
}

/// One event copy's share of a batch acknowledgement.
#[derive(Debug)]
pub struct Finalizer {
    batch: Arc<BatchNotifier>,
    status: Status,
}

impl Finalizer {
    /// Records this copy's outcome; the batch learns it when the copy is dropped.
    pub fn set(&mut self, status: Status) {
        self.status = status;
    }
}

impl Clone for Finalizer {
    /// A new copy starts abandoned: it must be finalized on its own.
    fn clone(&self) -> Self {
        Self {
            batch: self.batch.clone(),
            status: Status::Abandoned,
        }
    }
}

impl Drop for Finalizer {
    fn drop(&mut self) {
        self.batch
            .status
            .fetch_max(self.status as u8, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_is_delivered_only_when_every_copy_is() {
        let (n, mut rx) = BatchNotifier::new();
        let mut a = n.finalizer();
        let mut b = a.clone();
        drop(n);
        a.set(Status::Delivered);
        drop(a);
        assert!(rx.try_recv().is_err(), "b is still out");
        b.set(Status::Delivered);
        drop(b);
        assert_eq!(rx.try_recv().ok(), Some(Status::Delivered));
    }

    #[test]
    fn a_dropped_copy_abandons_the_batch() {
        let (n, mut rx) = BatchNotifier::new();
        let mut a = n.finalizer();
        let b = a.clone();
        drop(n);
        a.set(Status::Delivered);
        drop(a);
        drop(b);
        assert_eq!(rx.try_recv().ok(), Some(Status::Abandoned));
    }
}
