//! The group coordinator: every consumer group of this broker (`state`), their committed offsets
//! and membership kept durably (`store`), session expiry on a ticker, and the operations the
//! group and offset handlers call.

pub mod consumer;
pub mod state;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
pub use state::Committed;
use state::{Group, GroupSnapshot, GroupState, JoinOutcome, JoinRequest, SyncOutcome};
use store::{Entry, GroupStore};

use crate::config::BrokerConfig;
use crate::log::partition::now_ms;
use crate::topics::TopicRegistry;

pub const INVALID_GROUP_ID: i16 = 24;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
const MAX_METADATA_BYTES: usize = 4096;

/// A member as described to DescribeGroups and `trib group describe`.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as described to DescribeGroups.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

/// One partition's offset to commit.
#[derive(Debug, Clone)]
pub struct OffsetToCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug)]
pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    store: Mutex<GroupStore>,
    initial_delay: Duration,
    min_session: Duration,
    max_session: Duration,
    /// KIP-848 groups: session timeout and the heartbeat interval handed to members.
    pub consumer_session: Duration,
    pub consumer_heartbeat_interval: Duration,
}

impl GroupCoordinator {
    /// Opens the group store and rebuilds every group from it.
    pub fn open(data_dir: &Path, config: &BrokerConfig) -> std::io::Result<Self> {
        let (store, entries) = GroupStore::open(data_dir, config.topic_defaults())?;
        let now = Instant::now();
        let mut groups: HashMap<String, Group> = HashMap::new();
        for e in entries {
            match e {
                Entry::Offset { ref group, .. } | Entry::TxnOffset { ref group, .. } => {
                    let g = groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(group));
                    apply(g, std::slice::from_ref(&e));
                }
                Entry::Group {
                    group,
                    value: Some(snap),
                } => {
                    groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group))
                        .restore(snap, now);
                }
                Entry::Group { group, value: None } => {
                    groups.remove(&group);
                }
            }
        }
        tracing::info!(groups = groups.len(), "group coordinator loaded");
        Ok(Self {
            groups: Mutex::new(groups),
            store: Mutex::new(store),
            initial_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
            min_session: Duration::from_millis(config.group_min_session_timeout_ms),
            max_session: Duration::from_millis(config.group_max_session_timeout_ms),
            consumer_session: Duration::from_millis(config.group_consumer_session_timeout_ms),
            consumer_heartbeat_interval: Duration::from_millis(
                config.group_consumer_heartbeat_interval_ms,
            ),
        })
    }

    fn groups(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self) -> MutexGuard<'_, GroupStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn join(self: &Arc<Self>, group_id: &str, req: JoinRequest) -> Result<JoinOutcome, i16> {
        if group_id.is_empty() {
            return Err(INVALID_GROUP_ID);
        }
        if req.session_timeout < self.min_session || req.session_timeout > self.max_session {
            return Err(INVALID_SESSION_TIMEOUT);
        }
        let mut groups = self.groups();
        let g = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id));
        let outcome = g.join(req, Instant::now(), self.initial_delay);
        self.schedule_persists(&mut groups);
        Ok(outcome)
    }

    pub fn sync(
        self: &Arc<Self>,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOutcome {
        let mut groups = self.groups();
        let Some(g) = groups.get_mut(group_id) else {
            return SyncOutcome::Now(state::SyncResult {
                error: state::UNKNOWN_MEMBER_ID,
                ..Default::default()
            });
        };
        let outcome = g.sync(
            member_id,
            instance_id,
            generation,
            assignments,
            Instant::now(),
        );
        self.schedule_persists(&mut groups);
        outcome
    }

    /// Schedules a membership write for every group whose `persist` flag is set.
    fn schedule_persists(self: &Arc<Self>, groups: &mut HashMap<String, Group>) {
        for g in groups.values_mut().filter(|g| g.persist) {
            g.persist = false;
            let me = self.clone();
            let id = g.id.clone();
            tokio::spawn(async move { me.persist_group(&id).await });
        }
    }

    /// Writes a group's current membership to the store (a tombstone once the group is gone).
    async fn persist_group(&self, group_id: &str) {
        let end = {
            let mut store = self.store();
            let snap = self.groups().get(group_id).map(Group::snapshot);
            store.append(&[Entry::Group {
                group: group_id.to_string(),
                value: snap,
            }])
        };
        match end {
            Ok(end) => {
                let wait = { self.store().wait(end) };
                let _ = wait.await;
            }
            Err(e) => {
                tracing::warn!(group = group_id, error = %e, "could not persist group membership")
            }
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        match self.groups().get_mut(group_id) {
            Some(g) => g.heartbeat(member_id, instance_id, generation, Instant::now()),
            None => state::UNKNOWN_MEMBER_ID,
        }
    }

    /// Removes members (member id, instance id); returns each one's error code.
    pub fn leave(
        self: &Arc<Self>,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<i16> {
        let mut groups = self.groups();
        let Some(g) = groups.get_mut(group_id) else {
            return vec![state::UNKNOWN_MEMBER_ID; members.len()];
        };
        let now = Instant::now();
        let codes = members
            .iter()
            .map(|(id, inst)| g.leave(id, inst.as_deref(), now))
            .collect();
        self.schedule_persists(&mut groups);
        codes
    }

    /// Commits offsets; returns one error code per input, in order. With `txn` (a
    /// transactional producer id) they are held until that transaction ends (`end_txn`).
    #[allow(clippy::too_many_arguments)]
    pub async fn commit(
        self: &Arc<Self>,
        topics: &TopicRegistry,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        offsets: Vec<OffsetToCommit>,
        txn: Option<i64>,
    ) -> Vec<i16> {
        if group_id.is_empty() {
            return vec![INVALID_GROUP_ID; offsets.len()];
        }
        {
            let mut groups = self.groups();
            let g = groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id));
            let check = if txn.is_some() && generation < 0 && member_id.is_empty() {
                // A transactional commit without group metadata (pre-KIP-447 producers).
                Ok(())
            } else if generation < 0 && member_id.is_empty() {
                // A simple consumer (no group membership) may commit only while the group is empty.
                if g.is_empty() {
                    Ok(())
                } else {
                    Err(state::UNKNOWN_MEMBER_ID)
                }
            } else {
                g.check_commit(member_id, instance_id, generation)
            };
            if let Err(e) = check {
                return vec![e; offsets.len()];
            }
        }
        let now = now_ms();
        let mut codes = vec![0i16; offsets.len()];
        let mut entries = Vec::new();
        for (i, o) in offsets.iter().enumerate() {
            if topics
                .get(&o.topic)
                .and_then(|t| t.partition(o.partition))
                .is_none()
            {
                codes[i] = UNKNOWN_TOPIC_OR_PARTITION;
            } else if o
                .metadata
                .as_ref()
                .is_some_and(|m| m.len() > MAX_METADATA_BYTES)
            {
                codes[i] = OFFSET_METADATA_TOO_LARGE;
            } else {
                let value = Some(Committed {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata.clone(),
                    commit_ms: now,
                });
                entries.push(match txn {
                    Some(producer_id) => Entry::TxnOffset {
                        group: group_id.to_string(),
                        producer_id,
                        topic: o.topic.clone(),
                        partition: o.partition,
                        value,
                    },
                    None => Entry::Offset {
                        group: group_id.to_string(),
                        topic: o.topic.clone(),
                        partition: o.partition,
                        value,
                    },
                });
            }
        }
        if entries.is_empty() {
            return codes;
        }
        let appended = {
            let mut store = self.store();
            match store.append(&entries) {
                Ok(end) => {
                    let mut groups = self.groups();
                    let g = groups
                        .entry(group_id.to_string())
                        .or_insert_with(|| Group::new(group_id));
                    apply(g, &entries);
                    Self::maybe_rewrite(&mut store, groups);
                    Ok(store.wait(end))
                }
                Err(e) => Err(e),
            }
        };
        let failure = match appended {
            Ok(wait) => (!wait.await).then_some(REQUEST_TIMED_OUT),
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "could not store offsets");
                Some(KAFKA_STORAGE_ERROR)
            }
        };
        if let Some(code) = failure {
            codes
                .iter_mut()
                .filter(|c| **c == 0)
                .for_each(|c| *c = code);
        }
        codes
    }

    /// Ends transactional producer `producer_id`'s offsets in `group_id`: applied on commit,
    /// dropped on abort. Returns once durable (false: the store did not confirm in time).
    pub async fn end_txn(&self, group_id: &str, producer_id: i64, commit: bool) -> bool {
        let wait = {
            let mut store = self.store();
            let mut groups = self.groups();
            let Some(g) = groups.get_mut(group_id) else {
                return true;
            };
            let Some(pending) = g.txn_offsets.get(&producer_id) else {
                return true;
            };
            let mut entries = Vec::with_capacity(pending.len() * 2);
            let mut keys: Vec<_> = pending.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            for ((topic, partition), c) in keys {
                if commit {
                    entries.push(Entry::Offset {
                        group: group_id.to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                        value: Some(c.clone()),
                    });
                }
                entries.push(Entry::TxnOffset {
                    group: group_id.to_string(),
                    producer_id,
                    topic: topic.clone(),
                    partition: *partition,
                    value: None,
                });
            }
            match store.append(&entries) {
                Ok(end) => {
                    apply(g, &entries);
                    Self::maybe_rewrite(&mut store, groups);
                    store.wait(end)
                }
                Err(e) => {
                    tracing::error!(group = group_id, producer_id, error = %e, "could not end transactional offsets");
                    return false;
                }
            }
        };
        wait.await
    }

    /// Partitions of `group_id` with an offset committed inside a transaction still in progress
    /// (OffsetFetch with require_stable answers them UNSTABLE_OFFSET_COMMIT).
    pub fn unstable(&self, group_id: &str) -> std::collections::HashSet<(String, i32)> {
        self.groups()
            .get(group_id)
            .map(|g| {
                g.txn_offsets
                    .values()
                    .flat_map(|m| m.keys().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn maybe_rewrite(store: &mut GroupStore, groups: MutexGuard<'_, HashMap<String, Group>>) {
        // Live keys: one per committed offset plus one per group with members.
        let live_count: usize = groups
            .values()
            .map(|g| g.offsets.len() + 1 + g.txn_offsets.values().map(HashMap::len).sum::<usize>())
            .sum();
        if store.wants_rewrite(live_count) {
            let live = live_entries(&groups);
            drop(groups);
            if let Err(e) = store.rewrite(&live) {
                tracing::warn!(error = %e, "group store rewrite failed");
            }
        }
    }

    /// Committed offsets of a group: for the given topics/partitions, or all when `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, i32, Option<Committed>)> {
        let groups = self.groups();
        let g = groups.get(group_id);
        match wanted {
            Some(w) => w
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
                .map(|(t, p)| {
                    let c = g.and_then(|g| g.offsets.get(&(t.clone(), p)).cloned());
                    (t, p, c)
                })
                .collect(),
            None => {
                let mut v: Vec<_> = g
                    .map(|g| {
                        g.offsets
                            .iter()
                            .map(|((t, p), c)| (t.clone(), *p, Some(c.clone())))
                            .collect()
                    })
                    .unwrap_or_default();
                v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                v
            }
        }
    }

    /// (group id, protocol type, state, group type) of every group.
    pub fn list(&self) -> Vec<(String, String, &'static str, &'static str)> {
        let mut v: Vec<_> = self
            .groups()
            .values()
            .map(|g| {
                let ptype = if g.group_type() == "consumer" {
                    "consumer".to_string()
                } else {
                    g.protocol_type.clone().unwrap_or_default()
                };
                (g.id.clone(), ptype, g.state_name(), g.group_type())
            })
            .collect();
        v.sort();
        v
    }

    /// A KIP-848 heartbeat.
    pub fn consumer_heartbeat(
        &self,
        topics: &TopicRegistry,
        group_id: &str,
        hb: consumer::Heartbeat,
    ) -> consumer::HeartbeatReply {
        if group_id.is_empty() {
            return consumer::HeartbeatReply {
                error: INVALID_GROUP_ID,
                ..Default::default()
            };
        }
        let mut groups = self.groups();
        let g = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id));
        if !g.members.is_empty() {
            return consumer::HeartbeatReply {
                error: state::INCONSISTENT_GROUP_PROTOCOL,
                message: Some("the group has members using the classic protocol".into()),
                ..Default::default()
            };
        }
        let session = self.consumer_session;
        let c = g
            .consumer
            .get_or_insert_with(|| consumer::ConsumerMembers::new(session));
        let partitions = |name: &str| topics.get(name).map(|t| (t.id, t.partition_count()));
        c.heartbeat(hb, &partitions, Instant::now())
    }

    /// A KIP-848 group's state, epochs and members, for ConsumerGroupDescribe.
    pub fn describe_consumer_group(
        &self,
        group_id: &str,
    ) -> Option<(String, i32, i32, Vec<consumer::ConsumerMember>)> {
        let groups = self.groups();
        let g = groups.get(group_id)?;
        let c = g.consumer.as_ref().filter(|c| !c.members.is_empty())?;
        Some((
            g.state_name().to_string(),
            c.group_epoch,
            c.assignment_epoch,
            c.members.values().cloned().collect(),
        ))
    }

    /// A group as DescribeGroups reports it. KIP-848 groups are described too (as Kafka 4.0
    /// does): their members' subscriptions and assignments in the consumer-protocol encoding.
    pub fn describe(&self, group_id: &str, topics: &TopicRegistry) -> Option<GroupView> {
        let groups = self.groups();
        let g = groups.get(group_id)?;
        if let Some(c) = g.consumer.as_ref().filter(|c| !c.members.is_empty()) {
            return Some(GroupView {
                state: g.state_name(),
                protocol_type: "consumer".into(),
                protocol: "uniform".into(),
                members: c
                    .members
                    .values()
                    .map(|m| MemberView {
                        id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        host: m.host.clone(),
                        metadata: consumer::encode_subscription(&m.subscribed),
                        assignment: consumer::encode_assignment(&m.assigned, &|id| {
                            topics.get_by_id(id).map(|t| t.name.to_string())
                        }),
                    })
                    .collect(),
            });
        }
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupView {
            state: g.state_name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members
                .values()
                .map(|m| MemberView {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    host: m.host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Deletes an empty group and its offsets.
    pub async fn delete_group(&self, group_id: &str) -> i16 {
        let entries = {
            let mut groups = self.groups();
            let Some(g) = groups.get(group_id) else {
                return GROUP_ID_NOT_FOUND;
            };
            if !g.is_empty() {
                return NON_EMPTY_GROUP;
            }
            let mut entries: Vec<Entry> = g
                .offsets
                .keys()
                .map(|(t, p)| Entry::Offset {
                    group: group_id.into(),
                    topic: t.clone(),
                    partition: *p,
                    value: None,
                })
                .collect();
            entries.push(Entry::Group {
                group: group_id.into(),
                value: None,
            });
            groups.remove(group_id);
            entries
        };
        self.store_entries(&entries).await
    }

    /// Deletes committed offsets of partitions the group is not subscribed to.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<i16>, i16> {
        let (codes, entries) = {
            let mut groups = self.groups();
            let Some(g) = groups.get_mut(group_id) else {
                return Err(GROUP_ID_NOT_FOUND);
            };
            let mut codes = Vec::new();
            let mut entries = Vec::new();
            for (t, p) in partitions {
                if !g.is_empty() && g.subscribed_to(t) {
                    codes.push(GROUP_SUBSCRIBED_TO_TOPIC);
                } else {
                    g.offsets.remove(&(t.clone(), *p));
                    entries.push(Entry::Offset {
                        group: group_id.into(),
                        topic: t.clone(),
                        partition: *p,
                        value: None,
                    });
                    codes.push(0);
                }
            }
            (codes, entries)
        };
        let code = self.store_entries(&entries).await;
        Ok(codes
            .into_iter()
            .map(|c| if c == 0 { code } else { c })
            .collect())
    }

    async fn store_entries(&self, entries: &[Entry]) -> i16 {
        if entries.is_empty() {
            return 0;
        }
        let end = { self.store().append(entries) };
        match end {
            Ok(end) => {
                let wait = { self.store().wait(end) };
                if wait.await {
                    0
                } else {
                    REQUEST_TIMED_OUT
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not write group store");
                KAFKA_STORAGE_ERROR
            }
        }
    }

    /// Expires dead members, completes overdue rebalances, forgets empty groups with no offsets.
    pub fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        let mut groups = self.groups();
        for g in groups.values_mut() {
            g.tick(now);
        }
        self.schedule_persists(&mut groups);
        groups.retain(|_, g| {
            !(g.state == GroupState::Empty
                && g.offsets.is_empty()
                && g.txn_offsets.is_empty()
                && g.is_empty())
        });
    }

    pub fn close(&self) -> std::io::Result<()> {
        self.store().close()
    }

    /// Bytes used by the group store log.
    pub fn store_bytes(&self) -> u64 {
        self.store().size_bytes()
    }
}

/// Applies stored offset entries (committed or pending in a transaction; a null value deletes)
/// to a group.
fn apply(g: &mut Group, entries: &[Entry]) {
    for e in entries {
        match e {
            Entry::Offset {
                topic,
                partition,
                value,
                ..
            } => {
                let key = (topic.clone(), *partition);
                match value {
                    Some(c) => g.offsets.insert(key, c.clone()),
                    None => g.offsets.remove(&key),
                };
            }
            Entry::TxnOffset {
                producer_id,
                topic,
                partition,
                value,
                ..
            } => {
                let pending = g.txn_offsets.entry(*producer_id).or_default();
                match value {
                    Some(c) => pending.insert((topic.clone(), *partition), c.clone()),
                    None => pending.remove(&(topic.clone(), *partition)),
                };
                if pending.is_empty() {
                    g.txn_offsets.remove(producer_id);
                }
            }
            _ => {}
        }
    }
}

fn live_entries(groups: &HashMap<String, Group>) -> Vec<Entry> {
    let mut out = Vec::new();
    for g in groups.values() {
        let sorted: BTreeMap<_, _> = g.offsets.iter().collect();
        for ((t, p), c) in sorted {
            out.push(Entry::Offset {
                group: g.id.clone(),
                topic: t.clone(),
                partition: *p,
                value: Some(c.clone()),
            });
        }
        for (pid, pending) in &g.txn_offsets {
            let sorted: BTreeMap<_, _> = pending.iter().collect();
            for ((t, p), c) in sorted {
                out.push(Entry::TxnOffset {
                    group: g.id.clone(),
                    producer_id: *pid,
                    topic: t.clone(),
                    partition: *p,
                    value: Some(c.clone()),
                });
            }
        }
        let snap: GroupSnapshot = g.snapshot();
        if !snap.members.is_empty() {
            out.push(Entry::Group {
                group: g.id.clone(),
                value: Some(snap),
            });
        }
    }
    out
}
