//! The transaction coordinator: every transactional id's producer id, epoch and current
//! transaction, kept durably in the transaction log (`__transaction_state-0`, a keyed log).
//!
//! A transaction: InitProducerId fences older producers of the id (bumping the epoch, aborting
//! what they left open), AddPartitionsToTxn / AddOffsetsToTxn make it Ongoing, Produce writes
//! only to partitions it added (checked here, under the id's lock, so no record can land after
//! a marker), and EndTxn stores the decision (PrepareCommit/PrepareAbort) before writing a
//! marker to every partition and ending the group offsets, then stores CompleteCommit/Abort.
//! A decision found at start, or one whose completion failed, is completed again by `tick`,
//! which also aborts (and fences) transactions past their timeout. At start, a partition with a
//! transaction the coordinator does not know (a hanging transaction) gets an abort marker.

pub mod state;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::keyed_log::KeyedLog;
use crate::log::partition::{now_ms, Partition};

/// Producer id → the (topic, partition) pairs of its ongoing transaction.
type Owners = HashMap<i64, std::collections::BTreeSet<(String, i32)>>;
pub use state::{Phase, TxnMeta};

pub const TOPIC: &str = "__transaction_state";

pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const INVALID_TXN_STATE: i16 = 48;
pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
pub const CONCURRENT_TRANSACTIONS: i16 = 51;
pub const PRODUCER_FENCED: i16 = 90;
pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
const KAFKA_STORAGE_ERROR: i16 = 56;
const REQUEST_TIMED_OUT: i16 = 7;
const INVALID_REQUEST: i16 = 42;

/// A refused transactional request: the Kafka error code and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TxnError {
    pub code: i16,
    pub message: String,
}

fn err(code: i16, message: impl Into<String>) -> TxnError {
    TxnError {
        code,
        message: message.into(),
    }
}

/// The producer the request claims to be: id, epoch, and the code a stale epoch gets
/// (PRODUCER_FENCED for clients that know it, INVALID_PRODUCER_EPOCH for older ones).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub producer_id: i64,
    pub epoch: i16,
    pub fenced_code: i16,
}

type Shared = Arc<Mutex<TxnMeta>>;

/// The transaction log and the latest stored value of every id (what a rewrite writes again,
/// kept here so compaction needs no id's lock).
#[derive(Debug)]
struct Store {
    log: KeyedLog,
    latest: HashMap<String, Bytes>,
}

#[derive(Debug)]
pub struct TxnCoordinator {
    txns: Mutex<HashMap<String, Shared>>,
    store: Mutex<Store>,
    max_timeout_ms: i32,
    id_expiration_ms: i64,
}

fn lock(m: &Mutex<TxnMeta>) -> MutexGuard<'_, TxnMeta> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks that `caller` is the current producer of `meta`.
fn check_caller(id: &str, meta: &TxnMeta, caller: Caller) -> Result<(), TxnError> {
    if caller.producer_id != meta.producer_id {
        return Err(err(
            INVALID_PRODUCER_ID_MAPPING,
            format!(
                "transactional id {id} belongs to producer {}, not {}",
                meta.producer_id, caller.producer_id
            ),
        ));
    }
    if caller.epoch != meta.epoch {
        return Err(err(
            caller.fenced_code,
            format!(
                "producer {} epoch {} of transactional id {id} is fenced by epoch {}",
                caller.producer_id, caller.epoch, meta.epoch
            ),
        ));
    }
    Ok(())
}

impl TxnCoordinator {
    /// Opens the transaction log and loads every transactional id from it.
    pub fn open(data_dir: &Path, config: &BrokerConfig) -> io::Result<Self> {
        let (log, records) = KeyedLog::open(data_dir, TOPIC, config.topic_defaults())?;
        let mut txns: HashMap<String, Shared> = HashMap::new();
        let mut latest = HashMap::new();
        for (key, value) in records {
            let id = String::from_utf8_lossy(&key).to_string();
            match value.as_ref().map(|v| serde_json::from_slice::<TxnMeta>(v)) {
                None => {
                    txns.remove(&id);
                    latest.remove(&id);
                }
                Some(Ok(meta)) => {
                    txns.insert(id.clone(), Arc::new(Mutex::new(meta)));
                    if let Some(v) = value {
                        latest.insert(id, v);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(transactional_id = %id, error = %e, "transaction log: skipping unreadable record")
                }
            }
        }
        tracing::info!(
            transactional_ids = txns.len(),
            "transaction coordinator loaded"
        );
        Ok(Self {
            txns: Mutex::new(txns),
            store: Mutex::new(Store { log, latest }),
            max_timeout_ms: config.transaction_max_timeout_ms,
            id_expiration_ms: config.transactional_id_expiration_ms,
        })
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Shared>> {
        self.txns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str) -> Option<Shared> {
        self.map().get(id).cloned()
    }

    fn known(&self, id: &str) -> Result<Shared, TxnError> {
        self.get(id).ok_or_else(|| {
            err(
                INVALID_PRODUCER_ID_MAPPING,
                format!("transactional id {id} is unknown: call InitProducerId first"),
            )
        })
    }

    /// Appends `meta` (or a tombstone) for `id` to the log; the future says when it is durable.
    fn persist(
        &self,
        id: &str,
        meta: Option<&TxnMeta>,
    ) -> Result<impl Future<Output = bool> + Send + 'static, TxnError> {
        let value = meta
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| err(KAFKA_STORAGE_ERROR, e.to_string()))?
            .map(Bytes::from);
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let end = store
            .log
            .append(&[(Bytes::from(id.to_string()), value.clone())])
            .map_err(|e| {
                tracing::error!(transactional_id = id, error = %e, "could not write the transaction log");
                err(KAFKA_STORAGE_ERROR, format!("transaction log: {e}"))
            })?;
        match value {
            Some(v) => store.latest.insert(id.to_string(), v),
            None => store.latest.remove(id),
        };
        if store.log.wants_rewrite(store.latest.len()) {
            let live: Vec<_> = store
                .latest
                .iter()
                .map(|(k, v)| (Bytes::from(k.clone()), Some(v.clone())))
                .collect();
            if let Err(e) = store.log.rewrite(&live) {
                tracing::warn!(error = %e, "transaction log rewrite failed");
            }
        }
        Ok(store.log.wait(end))
    }

    async fn durable(wait: impl Future<Output = bool>) -> Result<(), TxnError> {
        if wait.await {
            Ok(())
        } else {
            Err(err(
                REQUEST_TIMED_OUT,
                "the transaction log did not become durable in time",
            ))
        }
    }

    /// InitProducerId with a transactional id: hands out the id's producer id with a new epoch,
    /// fencing the previous one and aborting its open transaction first. `expected` is the
    /// (producer id, epoch) a KIP-360 client already holds, if any.
    pub async fn init_producer(
        &self,
        b: &Broker,
        id: &str,
        timeout_ms: i32,
        expected: Option<Caller>,
    ) -> Result<(i64, i16), TxnError> {
        if id.is_empty() {
            return Err(err(INVALID_REQUEST, "the transactional id is empty"));
        }
        if timeout_ms <= 0 || timeout_ms > self.max_timeout_ms {
            return Err(err(
                INVALID_TRANSACTION_TIMEOUT,
                format!(
                    "transaction.timeout.ms {timeout_ms} must be between 1 and transaction_max_timeout_ms ({})",
                    self.max_timeout_ms
                ),
            ));
        }
        let now = now_ms();
        let fresh = {
            let mut map = self.map();
            match map.get(id) {
                Some(s) => Err(s.clone()),
                None => {
                    let pid = b
                        .topics
                        .allocate_producer_id()
                        .map_err(|e| err(e.kafka_code(), e.to_string()))?;
                    let meta = TxnMeta::new(pid, timeout_ms, now);
                    let wait = self.persist(id, Some(&meta))?;
                    map.insert(id.to_string(), Arc::new(Mutex::new(meta)));
                    Ok((wait, pid))
                }
            }
        };
        let shared = match fresh {
            Ok((wait, pid)) => {
                Self::durable(wait).await?;
                return Ok((pid, 0));
            }
            Err(shared) => shared,
        };
        // An open transaction of the previous producer is aborted under a bumped epoch.
        let open = {
            let mut m = lock(&shared);
            if let Some(c) = expected {
                if c.producer_id != m.producer_id || c.epoch != m.epoch {
                    return Err(err(
                        c.fenced_code,
                        format!(
                            "producer {} epoch {} no longer owns transactional id {id}",
                            c.producer_id, c.epoch
                        ),
                    ));
                }
            }
            match m.phase {
                Phase::Ongoing => {
                    m.epoch = m.epoch.saturating_add(1);
                    m.phase = Phase::PrepareAbort;
                    m.update_ms = now;
                    Some(self.persist(id, Some(&m))?)
                }
                p if p.preparing() => None,
                _ => None,
            }
        };
        if let Some(wait) = open {
            Self::durable(wait).await?;
        }
        if lock(&shared).phase.preparing() && !self.complete(b, id, &shared).await {
            return Err(err(
                CONCURRENT_TRANSACTIONS,
                format!("the last transaction of {id} is still being completed"),
            ));
        }
        let wait = {
            let mut m = lock(&shared);
            if m.phase.preparing() || m.phase == Phase::Ongoing {
                return Err(err(
                    CONCURRENT_TRANSACTIONS,
                    format!("transactional id {id} is busy"),
                ));
            }
            if m.epoch >= i16::MAX - 1 {
                m.producer_id = b
                    .topics
                    .allocate_producer_id()
                    .map_err(|e| err(e.kafka_code(), e.to_string()))?;
                m.epoch = 0;
            } else {
                m.epoch += 1;
            }
            m.timeout_ms = timeout_ms;
            m.phase = Phase::Empty;
            m.start_ms = -1;
            m.update_ms = now;
            self.persist(id, Some(&m))?
        };
        Self::durable(wait).await?;
        let m = lock(&shared);
        Ok((m.producer_id, m.epoch))
    }

    /// Checks the caller against an id's current producer and that no decision is in flight.
    fn ready(&self, id: &str, caller: Caller) -> Result<Shared, TxnError> {
        let shared = self.known(id)?;
        {
            let m = lock(&shared);
            check_caller(id, &m, caller)?;
            if m.phase.preparing() {
                return Err(err(
                    CONCURRENT_TRANSACTIONS,
                    format!("the last transaction of {id} is still being completed"),
                ));
            }
        }
        Ok(shared)
    }

    /// AddPartitionsToTxn: the partitions join the transaction (which begins if need be).
    pub async fn add_partitions(
        &self,
        id: &str,
        caller: Caller,
        partitions: &[(String, i32)],
    ) -> Result<(), TxnError> {
        let shared = self.ready(id, caller)?;
        let wait = {
            let mut m = lock(&shared);
            check_caller(id, &m, caller)?;
            let new = partitions.iter().any(|p| !m.partitions.contains(p));
            if !new && m.phase == Phase::Ongoing {
                return Ok(());
            }
            m.partitions.extend(partitions.iter().cloned());
            m.begin(now_ms());
            self.persist(id, Some(&m))?
        };
        Self::durable(wait).await
    }

    /// AddOffsetsToTxn: the group's offsets will be committed with the transaction.
    pub async fn add_offsets(&self, id: &str, caller: Caller, group: &str) -> Result<(), TxnError> {
        let shared = self.ready(id, caller)?;
        let wait = {
            let mut m = lock(&shared);
            check_caller(id, &m, caller)?;
            if m.groups.contains(group) && m.phase == Phase::Ongoing {
                return Ok(());
            }
            m.groups.insert(group.to_string());
            m.begin(now_ms());
            self.persist(id, Some(&m))?
        };
        Self::durable(wait).await
    }

    /// TxnOffsetCommit: may the caller commit offsets of `group` in its transaction now?
    pub fn check_offsets(&self, id: &str, caller: Caller, group: &str) -> Result<(), TxnError> {
        let shared = self.ready(id, caller)?;
        let m = lock(&shared);
        if m.phase != Phase::Ongoing || !m.groups.contains(group) {
            return Err(err(
                INVALID_TXN_STATE,
                format!("group {group} was not added to the transaction of {id} (AddOffsetsToTxn)"),
            ));
        }
        Ok(())
    }

    /// Runs `append` if the caller's transaction is Ongoing and holds `topic`/`partition`,
    /// under the id's lock so EndTxn cannot write a marker between the check and the append.
    pub fn produce<R>(
        &self,
        id: &str,
        caller: Caller,
        topic: &str,
        partition: i32,
        append: impl FnOnce() -> R,
    ) -> Result<R, TxnError> {
        let shared = self.known(id)?;
        let m = lock(&shared);
        check_caller(id, &m, caller)?;
        if m.phase != Phase::Ongoing || !m.partitions.contains(&(topic.to_string(), partition)) {
            return Err(err(
                INVALID_TXN_STATE,
                format!(
                    "partition {topic}/{partition} is not in an ongoing transaction of {id} (AddPartitionsToTxn first)"
                ),
            ));
        }
        Ok(append())
    }

    /// EndTxn: stores the decision, then writes the markers and ends the group offsets.
    pub async fn end_txn(
        &self,
        b: &Broker,
        id: &str,
        caller: Caller,
        commit: bool,
    ) -> Result<(), TxnError> {
        let shared = self.known(id)?;
        let wait = {
            let mut m = lock(&shared);
            check_caller(id, &m, caller)?;
            let (done, preparing) = if commit {
                (Phase::CompleteCommit, Phase::PrepareCommit)
            } else {
                (Phase::CompleteAbort, Phase::PrepareAbort)
            };
            match m.phase {
                p if p == done => return Ok(()), // a retry of an EndTxn that completed
                p if p == preparing => None,     // a retry while markers are written
                Phase::Ongoing => {
                    m.phase = preparing;
                    m.update_ms = now_ms();
                    Some(self.persist(id, Some(&m))?)
                }
                p => {
                    return Err(err(
                        INVALID_TXN_STATE,
                        format!(
                            "cannot {} transactional id {id}: its transaction is {}",
                            if commit { "commit" } else { "abort" },
                            p.name()
                        ),
                    ))
                }
            }
        };
        if let Some(wait) = wait {
            Self::durable(wait).await?;
        }
        if self.complete(b, id, &shared).await {
            Ok(())
        } else {
            Err(err(
                CONCURRENT_TRANSACTIONS,
                format!("the markers of {id}'s transaction are not all written yet; retry"),
            ))
        }
    }

    /// Writes the markers of a decided transaction and ends its group offsets; on success the
    /// id moves to CompleteCommit/CompleteAbort. False when it could not finish (retried by
    /// `tick`) or another completion is running.
    async fn complete(&self, b: &Broker, id: &str, shared: &Shared) -> bool {
        let (pid, epoch, commit, partitions, groups) = {
            let mut m = lock(shared);
            if !m.phase.preparing() || m.completing {
                return !m.phase.preparing();
            }
            m.completing = true;
            (
                m.producer_id,
                m.epoch,
                m.phase == Phase::PrepareCommit,
                m.partitions.clone(),
                m.groups.clone(),
            )
        };
        let mut ok = true;
        let mut waits = Vec::new();
        for (topic, index) in &partitions {
            let Some(p) = b.topics.get(topic).and_then(|t| t.partition(*index)) else {
                continue; // deleted since: nothing left to mark
            };
            match p.append_marker(pid, epoch, commit, 0) {
                Ok(a) => waits.push((p, a.end_offset)),
                Err(e) => {
                    tracing::error!(transactional_id = id, topic = %topic, partition = index, error = %e, "could not write a transaction marker");
                    ok = false;
                }
            }
        }
        for (p, end) in waits {
            if !p.wait_visible(end, Duration::from_secs(30)).await {
                ok = false;
            }
        }
        for g in &groups {
            if !b.groups.end_txn(g, pid, commit).await {
                ok = false;
            }
        }
        let mut m = lock(shared);
        m.completing = false;
        if !ok {
            return false;
        }
        m.phase = if commit {
            Phase::CompleteCommit
        } else {
            Phase::CompleteAbort
        };
        m.partitions.clear();
        m.groups.clear();
        m.start_ms = -1;
        m.update_ms = now_ms();
        // Durability of the completion is not awaited: were it lost, the decision is completed
        // again at start, which only writes the same markers once more.
        if let Err(e) = self.persist(id, Some(&m)) {
            tracing::warn!(transactional_id = id, error = %e, "could not store a completed transaction");
        }
        true
    }

    /// Aborts (and fences) transactions past their timeout, completes decisions left unfinished
    /// and forgets ids idle past `transactional_id_expiration_ms`.
    pub async fn tick(&self, b: &Broker) {
        let now = now_ms();
        let all: Vec<(String, Shared)> = self
            .map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, shared) in all {
            let action = {
                let mut m = lock(&shared);
                if m.expired(now) {
                    tracing::info!(transactional_id = %id, producer_id = m.producer_id, epoch = m.epoch,
                        timeout_ms = m.timeout_ms, "transaction timed out: aborting and fencing its producer");
                    m.epoch = m.epoch.saturating_add(1);
                    m.phase = Phase::PrepareAbort;
                    m.update_ms = now;
                    match self.persist(&id, Some(&m)) {
                        Ok(wait) => Some(Some(wait)),
                        Err(_) => None,
                    }
                } else if m.phase.preparing() && !m.completing {
                    Some(None)
                } else if matches!(
                    m.phase,
                    Phase::Empty | Phase::CompleteAbort | Phase::CompleteCommit
                ) && now - m.update_ms > self.id_expiration_ms
                {
                    if self.persist(&id, None).is_ok() {
                        self.map().remove(&id);
                    }
                    None
                } else {
                    None
                }
            };
            match action {
                // The fencing abort is completed once its decision is durable.
                Some(Some(wait)) => {
                    let durable = wait.await;
                    if durable {
                        self.complete(b, &id, &shared).await;
                    }
                }
                Some(None) => {
                    self.complete(b, &id, &shared).await;
                }
                None => {}
            }
        }
    }

    /// At start: completes stored decisions, then aborts transactions found open in partitions
    /// that no Ongoing transactional id accounts for (their producer's AddPartitionsToTxn was
    /// lost, or it wrote without one), so no partition's last stable offset hangs.
    pub async fn recover(&self, b: &Broker) {
        self.tick(b).await;
        let owners = self.owners();
        for t in b.topics.list() {
            // A mirror topic's transactions are the source's: their markers come by the mirror.
            if t.config().mirror.is_none() {
                self.abort_unowned_in(&t.partitions(), &owners);
            }
        }
    }

    /// Aborts the transactions open in `partitions` that no Ongoing transactional id accounts
    /// for (a promoted mirror topic's source transactions, or hanging ones at start).
    pub fn abort_unowned(&self, partitions: &[Arc<Partition>]) {
        self.abort_unowned_in(partitions, &self.owners());
    }

    /// The partitions of each producer id with a transaction Ongoing.
    fn owners(&self) -> Owners {
        let mut owners = Owners::new();
        for (_, m) in self.list() {
            if m.phase == Phase::Ongoing {
                owners.insert(m.producer_id, m.partitions);
            }
        }
        owners
    }

    fn abort_unowned_in(&self, partitions: &[Arc<Partition>], owners: &Owners) {
        for p in partitions {
            for v in p.producers() {
                let Some(first) = v.txn_first else { continue };
                let known = owners
                    .get(&v.producer_id)
                    .is_some_and(|ps| ps.contains(&(p.topic.to_string(), p.index)));
                if known {
                    continue;
                }
                tracing::warn!(topic = %p.topic, partition = p.index, producer_id = v.producer_id, first_offset = first,
                    "aborting a transaction no coordinator state accounts for");
                if let Err(e) = p.append_marker(v.producer_id, v.epoch, false, 0) {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "could not abort a hanging transaction");
                }
            }
        }
    }

    /// One id's state (DescribeTransactions).
    pub fn describe(&self, id: &str) -> Option<TxnMeta> {
        self.get(id).map(|m| lock(&m).clone())
    }

    /// Every id and its state, by id (ListTransactions).
    pub fn list(&self) -> Vec<(String, TxnMeta)> {
        let all: Vec<(String, Shared)> = self
            .map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut v: Vec<_> = all
            .into_iter()
            .map(|(id, m)| (id, lock(&m).clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn close(&self) -> io::Result<()> {
        self.store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log
            .close()
    }
}
