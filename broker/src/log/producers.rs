//! Idempotent-producer state of one partition: for each producer id, its epoch and its last five
//! batches' sequence ranges and offsets. A batch that repeats one of them is a retry, answered with
//! the original offsets and not written again; a gap in the sequence is OUT_OF_ORDER_SEQUENCE_NUMBER;
//! an older epoch is INVALID_PRODUCER_EPOCH (a fenced zombie). A producer this partition has no
//! state for is accepted from any sequence (its state may have been lost with old segments).
//!
//! The state is snapshotted next to each recovery checkpoint and rebuilt at start from the
//! snapshot plus the batches scanned after it.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::batch::BatchHeader;

/// Batches remembered per producer: librdkafka and the Java client keep at most 5 in flight.
const REMEMBERED: usize = 5;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<ProducerBatch>,
    /// Wall-clock milliseconds of its last write, for expiry.
    #[serde(default)]
    pub last_ms: i64,
}

/// What the state says about an incoming batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Not idempotent, or the next batch in sequence: write it.
    New,
    /// Already written at these offsets.
    Duplicate { base_offset: i64, last_offset: i64 },
    /// Refused with a Kafka error code and a reason.
    Reject { code: i16, reason: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
}

fn last_seq(h: &BatchHeader) -> i32 {
    // Sequences wrap at i32::MAX back to 0.
    ((i64::from(h.base_sequence) + i64::from(h.last_offset_delta)) % (i64::from(i32::MAX) + 1))
        as i32
}

impl ProducerState {
    pub fn check(&self, h: &BatchHeader) -> Check {
        if h.producer_id < 0 {
            return Check::New;
        }
        let Some(e) = self.producers.get(&h.producer_id) else {
            return Check::New;
        };
        if h.producer_epoch < e.epoch {
            return Check::Reject {
                code: INVALID_PRODUCER_EPOCH,
                reason: format!(
                    "producer {} epoch {} is older than {}",
                    h.producer_id, h.producer_epoch, e.epoch
                ),
            };
        }
        if h.producer_epoch > e.epoch {
            return if h.base_sequence == 0 {
                Check::New
            } else {
                Check::Reject {
                    code: OUT_OF_ORDER_SEQUENCE_NUMBER,
                    reason: format!(
                        "new epoch {} of producer {} must start at sequence 0",
                        h.producer_epoch, h.producer_id
                    ),
                }
            };
        }
        let last = last_seq(h);
        if let Some(b) = e
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Check::Duplicate {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
            };
        }
        let expected = e.batches.back().map_or(h.base_sequence, |b| {
            if b.last_seq == i32::MAX {
                0
            } else {
                b.last_seq + 1
            }
        });
        if h.base_sequence != expected {
            return Check::Reject {
                code: OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason: format!(
                    "producer {} sent sequence {}, expected {expected}",
                    h.producer_id, h.base_sequence
                ),
            };
        }
        Check::New
    }

    /// Records a written batch (its header carries the assigned base offset) at `now_ms`.
    pub fn record(&mut self, h: &BatchHeader, now_ms: i64) {
        if h.producer_id < 0 {
            return;
        }
        let e = self.producers.entry(h.producer_id).or_default();
        e.last_ms = e.last_ms.max(now_ms);
        if h.producer_epoch != e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        e.batches.push_back(ProducerBatch {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        while e.batches.len() > REMEMBERED {
            e.batches.pop_front();
        }
    }

    /// The snapshot file's bytes: the state as it was at `offset` (later batches left out).
    pub fn snapshot(&self, offset: i64) -> Vec<u8> {
        let mut at = self.clone();
        for e in at.producers.values_mut() {
            e.batches.retain(|b| b.last_offset < offset);
        }
        at.producers.retain(|_, e| !e.batches.is_empty());
        serde_json::to_vec(&Snapshot { offset, state: at }).unwrap_or_default()
    }

    /// Reads a snapshot: (the offset it holds up to, the state).
    pub fn load(bytes: &[u8]) -> Option<(i64, Self)> {
        serde_json::from_slice::<Snapshot>(bytes)
            .ok()
            .map(|s| (s.offset, s.state))
    }

    /// Forgets producers that have not written for `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`); returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms - e.last_ms < expiration_ms);
        before - self.producers.len()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    offset: i64,
    state: ProducerState,
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ProducerState {
        fn record_at0(&mut self, h: &BatchHeader) {
            self.record(h, 0);
        }
    }

    #[test]
    fn idle_producers_expire() {
        let mut s = ProducerState::default();
        s.record(&h(1, 0, 0, 1, 0), 1_000);
        s.record(&h(2, 0, 0, 1, 1), 5_000);
        assert_eq!(s.expire(6_500, 3_000), 1);
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.check(&h(2, 0, 0, 1, 0)),
            Check::Duplicate {
                base_offset: 1,
                last_offset: 1
            }
        );
    }

    fn h(pid: i64, epoch: i16, seq: i32, n: i32, base: i64) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 100,
            leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: n,
        }
    }

    #[test]
    fn retries_are_duplicates_gaps_and_zombies_are_refused() {
        let mut s = ProducerState::default();
        assert_eq!(s.check(&h(7, 0, 0, 3, 0)), Check::New);
        s.record_at0(&h(7, 0, 0, 3, 10));
        assert_eq!(s.check(&h(7, 0, 3, 2, 0)), Check::New);
        s.record_at0(&h(7, 0, 3, 2, 13));
        assert_eq!(
            s.check(&h(7, 0, 0, 3, 99)),
            Check::Duplicate {
                base_offset: 10,
                last_offset: 12
            }
        );
        assert_eq!(
            s.check(&h(7, 0, 3, 2, 99)),
            Check::Duplicate {
                base_offset: 13,
                last_offset: 14
            }
        );
        assert!(matches!(
            s.check(&h(7, 0, 9, 1, 0)),
            Check::Reject {
                code: OUT_OF_ORDER_SEQUENCE_NUMBER,
                ..
            }
        ));
        // A new epoch starts at 0; the old epoch is fenced from then on.
        assert!(matches!(
            s.check(&h(7, 1, 5, 1, 0)),
            Check::Reject {
                code: OUT_OF_ORDER_SEQUENCE_NUMBER,
                ..
            }
        ));
        s.record_at0(&h(7, 1, 0, 1, 15));
        assert!(matches!(
            s.check(&h(7, 0, 5, 1, 0)),
            Check::Reject {
                code: INVALID_PRODUCER_EPOCH,
                ..
            }
        ));
        // Non-idempotent batches and unknown producers pass.
        assert_eq!(s.check(&h(-1, -1, -1, 5, 0)), Check::New);
        assert_eq!(s.check(&h(99, 0, 42, 1, 0)), Check::New);
    }

    #[test]
    fn snapshot_keeps_only_batches_before_its_offset() {
        let mut s = ProducerState::default();
        s.record_at0(&h(1, 0, 0, 2, 0));
        s.record_at0(&h(1, 0, 2, 2, 2));
        s.record_at0(&h(2, 0, 0, 1, 4));
        let (off, loaded) = ProducerState::load(&s.snapshot(4)).unwrap();
        assert_eq!(off, 4);
        assert_eq!(
            loaded.len(),
            1,
            "producer 2 wrote only after the snapshot point"
        );
        assert_eq!(
            loaded.check(&h(1, 0, 2, 2, 0)),
            Check::Duplicate {
                base_offset: 2,
                last_offset: 3
            }
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_sequences_wrap() {
        let mut s = ProducerState::default();
        for i in 0..7 {
            s.record_at0(&h(3, 0, i, 1, i64::from(i)));
        }
        assert_eq!(
            s.check(&h(3, 0, 6, 1, 0)),
            Check::Duplicate {
                base_offset: 6,
                last_offset: 6
            }
        );
        assert!(
            matches!(s.check(&h(3, 0, 1, 1, 0)), Check::Reject { .. }),
            "too old to be known as a retry"
        );
        let mut w = ProducerState::default();
        w.record_at0(&h(4, 0, i32::MAX - 1, 2, 0));
        assert_eq!(
            w.check(&h(4, 0, 0, 1, 0)),
            Check::New,
            "sequence wraps to 0 after i32::MAX"
        );
    }
}
