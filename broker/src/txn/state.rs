//! One transactional id's state as the coordinator keeps it and the transaction log stores it:
//! its producer id and epoch, the transaction's phase, and what the transaction touched.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The phases of a transaction (Kafka's names, as DescribeTransactions reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// No transaction since the producer id was handed out.
    Empty,
    /// Partitions or a group were added; records may be written.
    Ongoing,
    /// The decision is durable; markers are being written.
    PrepareCommit,
    PrepareAbort,
    /// Markers written everywhere; the next transaction may begin.
    CompleteCommit,
    CompleteAbort,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::Ongoing => "Ongoing",
            Phase::PrepareCommit => "PrepareCommit",
            Phase::PrepareAbort => "PrepareAbort",
            Phase::CompleteCommit => "CompleteCommit",
            Phase::CompleteAbort => "CompleteAbort",
        }
    }

    pub const ALL: [Phase; 6] = [
        Phase::Empty,
        Phase::Ongoing,
        Phase::PrepareCommit,
        Phase::PrepareAbort,
        Phase::CompleteCommit,
        Phase::CompleteAbort,
    ];

    /// Whether the outcome is decided but its markers are not all written yet.
    pub fn preparing(self) -> bool {
        matches!(self, Phase::PrepareCommit | Phase::PrepareAbort)
    }
}

/// A transactional id's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub phase: Phase,
    /// Partitions written in the current transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets the current transaction commits.
    pub groups: BTreeSet<String>,
    /// When the current transaction began (-1: none).
    pub start_ms: i64,
    /// When the state last changed.
    pub update_ms: i64,
    /// A completion (markers, group offsets) is running now; not stored.
    #[serde(skip)]
    pub completing: bool,
}

impl TxnMeta {
    pub fn new(producer_id: i64, timeout_ms: i32, now: i64) -> Self {
        Self {
            producer_id,
            epoch: 0,
            timeout_ms,
            phase: Phase::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            start_ms: -1,
            update_ms: now,
            completing: false,
        }
    }

    /// Moves to Ongoing (starting the clock when a new transaction begins).
    pub fn begin(&mut self, now: i64) {
        if self.phase != Phase::Ongoing {
            self.phase = Phase::Ongoing;
            self.start_ms = now;
        }
        self.update_ms = now;
    }

    /// Whether an Ongoing transaction has run past its timeout.
    pub fn expired(&self, now: i64) -> bool {
        self.phase == Phase::Ongoing && now - self.start_ms > i64::from(self.timeout_ms)
    }
}
