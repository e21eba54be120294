//! The client side of read_committed: a Fetch at isolation level 1 stops at the last stable
//! offset but still returns batches of aborted transactions, with the list of aborted
//! transactions (producer id, first offset) that overlap the fetched range. This walks the
//! fetched bytes and yields only the whole batches a read_committed consumer would see: no
//! control batches (transaction markers) and no batches of aborted transactions.

use std::collections::HashSet;

use bytes::Bytes;
use trib_broker::log::batch::{marker_kind, BatchHeader};

/// Calls `each` with every committed data batch in `records` that ends at or past `from`, in
/// order. `aborted` is the fetch response's aborted transactions as (producer id, first offset).
/// Returns the offset after the last whole batch (at least `from`); a batch cut short by the
/// fetch size is left for the next fetch.
pub fn committed_batches(
    records: &Bytes,
    aborted: &[(i64, i64)],
    from: i64,
    mut each: impl FnMut(&Bytes, &BatchHeader),
) -> i64 {
    let mut pending: Vec<(i64, i64)> = aborted.to_vec();
    // Popped from the back: lowest first offset last.
    pending.sort_by_key(|a| std::cmp::Reverse(a.1));
    let mut aborting: HashSet<i64> = HashSet::new();
    let mut at = 0usize;
    let mut next = from;
    while at < records.len() {
        let Ok(h) = BatchHeader::parse(&records[at..]) else {
            break;
        };
        let len = h.total_len();
        if len > records.len() - at {
            break;
        }
        let batch = records.slice(at..at + len);
        at += len;
        let last = h.last_offset();
        if last < from {
            continue;
        }
        next = next.max(last + 1);
        if h.is_transactional() {
            while pending.last().is_some_and(|&(_, first)| first <= last) {
                if let Some((pid, _)) = pending.pop() {
                    aborting.insert(pid);
                }
            }
        }
        if h.is_control() {
            if marker_kind(&batch) == Some(false) {
                aborting.remove(&h.producer_id);
            }
            continue;
        }
        if h.is_transactional() && aborting.contains(&h.producer_id) {
            continue;
        }
        each(&batch, &h);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use trib_broker::log::batch::control_batch;
    use trib_broker::log::batch_writer::{BatchWriter, ProducerStamp};

    fn batch(base: i64, pid: i64, transactional: bool, n: i32) -> Bytes {
        let mut w = BatchWriter::new(Default::default());
        for i in 0..n {
            w.push(
                i64::from(i),
                None,
                Some(b"v"),
                std::iter::empty::<(&[u8], Option<&[u8]>)>(),
            );
        }
        let b = w
            .seal(
                0,
                ProducerStamp {
                    producer_id: pid,
                    epoch: 0,
                    base_sequence: 0,
                    transactional,
                },
            )
            .expect("seals");
        at(b, base)
    }

    fn at(b: Bytes, base: i64) -> Bytes {
        let mut v = b.to_vec();
        v[0..8].copy_from_slice(&base.to_be_bytes());
        Bytes::from(v)
    }

    #[test]
    fn aborted_and_control_batches_are_skipped() {
        let mut all = Vec::new();
        all.extend_from_slice(&batch(0, 1, true, 2)); // 0-1 pid 1, aborted below
        all.extend_from_slice(&batch(2, 2, true, 2)); // 2-3 pid 2, committed
        all.extend_from_slice(&batch(4, -1, false, 1)); // 4 plain
        all.extend_from_slice(&at(control_batch(1, 0, false, 0, 0).expect("marker"), 5));
        all.extend_from_slice(&at(control_batch(2, 0, true, 0, 0).expect("marker"), 6));
        all.extend_from_slice(&batch(7, 1, true, 1)); // 7 pid 1 again: a new, committed txn
        let records = Bytes::from(all);
        let mut seen = Vec::new();
        let next = committed_batches(&records, &[(1, 0)], 0, |_, h| {
            seen.push(h.base_offset);
        });
        assert_eq!(seen, vec![2, 4, 7]);
        assert_eq!(next, 8);
        // From the middle: batches ending before `from` are not seen; a cut-off tail is left.
        let cut = records.slice(..records.len() - 3);
        let mut seen = Vec::new();
        let next = committed_batches(&cut, &[(1, 0)], 3, |_, h| seen.push(h.base_offset));
        assert_eq!((seen, next), (vec![2, 4], 7));
    }
}
