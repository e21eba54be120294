//! Idempotent-producer state of one partition: for each producer id, its epoch and its last five
//! batches' sequence ranges and offsets. A batch that repeats one of them is a retry, answered with
//! the original offsets and not written again; a gap in the sequence is OUT_OF_ORDER_SEQUENCE_NUMBER;
//! an older epoch is INVALID_PRODUCER_EPOCH (a fenced zombie). A producer this partition has no
//! state for is accepted from any sequence (its state may have been lost with old segments).
//!
//! Transactions: each producer's ongoing transaction on this partition (its first offset), which
//! bounds the last stable offset, and the aborted transactions (producer, first offset, marker
//! offset) that read_committed fetches are told to skip.
//!
//! The state is snapshotted next to each recovery checkpoint and rebuilt at start from the
//! snapshot plus the batches scanned after it.

use std::collections::{BTreeSet, HashMap, VecDeque};

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
    /// First offset of its transaction in progress on this partition.
    #[serde(default)]
    pub txn_first: Option<i64>,
}

/// An aborted transaction on this partition: read_committed readers skip the producer's records
/// from `first` up to the abort marker at `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first: i64,
    pub last: i64,
}

/// One producer as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerView {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_ms: i64,
    pub txn_first: Option<i64>,
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
    /// Aborted transactions, in marker order.
    #[serde(default)]
    aborted: Vec<AbortedTxn>,
    /// (first offset, producer) of every transaction in progress: the first bounds the LSO.
    #[serde(skip)]
    ongoing: BTreeSet<(i64, i64)>,
    /// Transactions ended since the last snapshot (producer, first offset, marker offset), so a
    /// snapshot taken as of an earlier offset still shows them in progress.
    #[serde(skip)]
    ended: Vec<(i64, i64, i64)>,
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

    /// Records a written batch (its header carries the assigned base offset) at `now_ms`. A
    /// transaction marker needs `marker`: `Some(true)` commit, `Some(false)` abort.
    pub fn record(&mut self, h: &BatchHeader, marker: Option<bool>, now_ms: i64) {
        if h.producer_id < 0 {
            return;
        }
        let e = self.producers.entry(h.producer_id).or_default();
        e.last_ms = e.last_ms.max(now_ms);
        if h.is_control() {
            // The coordinator writes markers with the producer's current (or a bumped) epoch.
            if h.producer_epoch > e.epoch {
                e.epoch = h.producer_epoch;
                e.batches.clear();
            }
            if let Some(first) = e.txn_first.take() {
                self.ongoing.remove(&(first, h.producer_id));
                self.ended.push((h.producer_id, first, h.base_offset));
                if marker == Some(false) {
                    self.aborted.push(AbortedTxn {
                        producer_id: h.producer_id,
                        first,
                        last: h.base_offset,
                    });
                }
            }
            return;
        }
        if h.producer_epoch != e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        if h.is_transactional() && e.txn_first.is_none() {
            e.txn_first = Some(h.base_offset);
            self.ongoing.insert((h.base_offset, h.producer_id));
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

    /// The first offset of the oldest transaction in progress: the last stable offset when
    /// below the high watermark.
    pub fn first_unstable(&self) -> Option<i64> {
        self.ongoing.first().map(|(first, _)| *first)
    }

    /// Aborted transactions with records in `[from, to]`, as (producer id, first offset).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        let start = self.aborted.partition_point(|a| a.last < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first <= to)
            .map(|a| (a.producer_id, a.first))
            .collect()
    }

    /// Forgets aborted transactions wholly below the log start.
    pub fn forget_aborted_below(&mut self, log_start: i64) {
        let n = self.aborted.partition_point(|a| a.last < log_start);
        self.aborted.drain(..n);
    }

    /// Every known producer, for DescribeProducers.
    pub fn describe(&self) -> Vec<ProducerView> {
        let mut v: Vec<_> = self
            .producers
            .iter()
            .map(|(id, e)| ProducerView {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_ms: e.last_ms,
                txn_first: e.txn_first,
            })
            .collect();
        v.sort_by_key(|p| p.producer_id);
        v
    }

    /// The snapshot file's bytes: the state as it was at `offset` (later batches left out, and
    /// transactions that ended at or after `offset` shown still in progress).
    pub fn snapshot(&self, offset: i64) -> Vec<u8> {
        let mut at = self.clone();
        for e in at.producers.values_mut() {
            e.batches.retain(|b| b.last_offset < offset);
            e.txn_first = e.txn_first.filter(|f| *f < offset);
        }
        for &(pid, first, marker) in &self.ended {
            if first < offset && marker >= offset {
                at.producers.entry(pid).or_default().txn_first = Some(first);
            }
        }
        at.aborted.retain(|a| a.last < offset);
        at.producers
            .retain(|_, e| !e.batches.is_empty() || e.txn_first.is_some());
        serde_json::to_vec(&Snapshot { offset, state: at }).unwrap_or_default()
    }

    /// Drops the memory of transactions that ended before `offset` (a snapshot at `offset` or
    /// later has been written and no earlier one will be).
    pub fn snapshotted(&mut self, offset: i64) {
        self.ended.retain(|(_, _, marker)| *marker >= offset);
    }

    /// Reads a snapshot: (the offset it holds up to, the state).
    pub fn load(bytes: &[u8]) -> Option<(i64, Self)> {
        let mut snap = serde_json::from_slice::<Snapshot>(bytes).ok()?;
        let st = &mut snap.state;
        st.ongoing = st
            .producers
            .iter()
            .filter_map(|(id, e)| e.txn_first.map(|f| (f, *id)))
            .collect();
        Some((snap.offset, snap.state))
    }

    /// Forgets producers that have not written for `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`); returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| e.txn_first.is_some() || now_ms - e.last_ms < expiration_ms);
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
            self.record(h, None, 0);
        }
    }

    #[test]
    fn idle_producers_expire() {
        let mut s = ProducerState::default();
        s.record(&h(1, 0, 0, 1, 0), None, 1_000);
        s.record(&h(2, 0, 0, 1, 1), None, 5_000);
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

    fn txn(pid: i64, epoch: i16, seq: i32, n: i32, base: i64) -> BatchHeader {
        let mut b = h(pid, epoch, seq, n, base);
        b.attributes = super::super::batch::ATTR_TRANSACTIONAL;
        b
    }

    fn marker(pid: i64, epoch: i16, base: i64) -> BatchHeader {
        let mut b = h(pid, epoch, -1, 1, base);
        b.attributes = super::super::batch::ATTR_TRANSACTIONAL | super::super::batch::ATTR_CONTROL;
        b
    }

    #[test]
    fn transactions_bound_the_lso_and_aborts_are_listed() {
        let mut s = ProducerState::default();
        s.record(&h(9, 0, 0, 2, 0), None, 0); // plain idempotent data does not hold the LSO
        s.record(&txn(1, 0, 0, 2, 2), None, 0);
        s.record(&txn(2, 0, 0, 1, 4), None, 0);
        s.record(&txn(1, 0, 2, 1, 5), None, 0);
        assert_eq!(s.first_unstable(), Some(2));
        let snap_mid = s.snapshot(5);
        s.record(&marker(1, 0, 6), Some(false), 0);
        assert_eq!(
            s.first_unstable(),
            Some(4),
            "producer 2 still holds the LSO"
        );
        s.record(&marker(2, 0, 7), Some(true), 0);
        assert_eq!(s.first_unstable(), None);
        assert_eq!(s.aborted_between(0, 100), vec![(1, 2)]);
        assert_eq!(s.aborted_between(7, 100), vec![], "ends before 7");
        assert_eq!(s.aborted_between(0, 1), vec![], "starts after 1");
        // A snapshot as of offset 6 (taken after both markers) shows both still in progress.
        let (_, at6) = ProducerState::load(&s.snapshot(6)).unwrap();
        assert_eq!(at6.first_unstable(), Some(2));
        assert_eq!(at6.aborted_between(0, 100), vec![]);
        let (_, at5) = ProducerState::load(&snap_mid).unwrap();
        assert_eq!(at5.first_unstable(), Some(2));
        // Replaying the markers onto the snapshot gives the same answers.
        let (_, mut replay) = ProducerState::load(&s.snapshot(6)).unwrap();
        replay.record(&marker(1, 0, 6), Some(false), 0);
        replay.record(&marker(2, 0, 7), Some(true), 0);
        assert_eq!(replay.first_unstable(), None);
        assert_eq!(replay.aborted_between(0, 100), vec![(1, 2)]);
        // A marker with a bumped epoch (timeout abort) fences the old epoch.
        s.record(&txn(1, 0, 3, 1, 8), None, 0);
        s.record(&marker(1, 1, 9), Some(false), 0);
        assert!(matches!(
            s.check(&txn(1, 0, 4, 1, 0)),
            Check::Reject {
                code: INVALID_PRODUCER_EPOCH,
                ..
            }
        ));
        s.forget_aborted_below(7);
        assert_eq!(s.aborted_between(0, 100), vec![(1, 8)]);
        // Producers in a transaction do not expire.
        s.record(&txn(3, 0, 0, 1, 10), None, 0);
        s.expire(i64::MAX / 2, 1);
        assert_eq!(s.first_unstable(), Some(10));
    }
}
