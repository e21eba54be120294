//! One consumer group under the classic protocol: members, generations, the rebalance state
//! machine (Empty → PreparingRebalance → CompletingRebalance → Stable), static membership, and
//! committed offsets in memory. Pure state: no I/O; waiting members are answered through
//! oneshot channels held here.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub const NONE: i16 = 0;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const FENCED_INSTANCE_ID: i16 = 82;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a JoinGroup caller gets back.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, instance id, metadata): filled for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// What a SyncGroup caller gets back.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_seen: Instant,
    /// Rejoined during the current PreparingRebalance.
    pub joined: bool,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    /// Metadata this member sent for `protocol`.
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A join request, as the coordinator passes it in.
#[derive(Debug)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member must first ask for an id (MEMBER_ID_REQUIRED).
    pub require_known_member_id: bool,
}

/// What JoinGroup produced: an answer now, or a channel answered when the rebalance completes.
pub enum JoinOutcome {
    Now(JoinResult),
    Wait(oneshot::Receiver<JoinResult>),
}

pub enum SyncOutcome {
    Now(SyncResult),
    Wait(oneshot::Receiver<SyncResult>),
}

/// A consumer group.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED and not yet used, with their expiry.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// A new group waits this long for more members before its first generation.
    initial_until: Option<Instant>,
    pub offsets: HashMap<(String, i32), Committed>,
    /// Offsets committed inside transactions still in progress, by producer id.
    pub txn_offsets: HashMap<i64, HashMap<(String, i32), Committed>>,
    next_member: u64,
    /// Members under the KIP-848 consumer protocol (a group uses one protocol at a time).
    pub consumer: Option<super::consumer::ConsumerMembers>,
    /// Set by every change a restart must see (became Stable or Empty, a static member's new
    /// id); the coordinator writes a snapshot and clears it.
    pub persist: bool,
}

impl Group {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_until: None,
            offsets: HashMap::new(),
            txn_offsets: HashMap::new(),
            next_member: 0,
            consumer: None,
            persist: false,
        }
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member += 1;
        let rand = uuid::Uuid::new_v4().simple().to_string();
        format!(
            "{}-{}-{}",
            if client_id.is_empty() {
                "member"
            } else {
                client_id
            },
            self.next_member,
            &rand[..12]
        )
    }

    fn member_by_instance(&self, instance: &str) -> Option<String> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
            .map(|m| m.id.clone())
    }

    /// Whether every member's protocols include one in common with `protocols`.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self
            .protocol_type
            .as_deref()
            .is_some_and(|t| t != protocol_type)
        {
            return false;
        }
        protocols.iter().any(|(p, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(q, _)| q == p))
        })
    }

    pub fn join(&mut self, req: JoinRequest, now: Instant, initial_delay: Duration) -> JoinOutcome {
        let err = |error, member_id: &str| {
            JoinOutcome::Now(JoinResult {
                error,
                member_id: member_id.into(),
                generation: -1,
                ..Default::default()
            })
        };
        if req.protocol_type.is_empty()
            || req.protocols.is_empty()
            || !self.supports(&req.protocol_type, &req.protocols)
        {
            return err(INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
        }
        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            if let Some(instance) = &req.instance_id {
                if let Some(old) = self.member_by_instance(instance) {
                    return self.replace_static_member(old, req, now, initial_delay);
                }
            } else if req.require_known_member_id {
                let id = self.new_member_id(&req.client_id);
                self.pending.insert(id.clone(), now + req.session_timeout);
                return err(MEMBER_ID_REQUIRED, &id);
            }
            member_id = self.new_member_id(&req.client_id);
        } else if let Some(instance) = &req.instance_id {
            if self
                .member_by_instance(instance)
                .is_some_and(|m| m != member_id)
            {
                return err(FENCED_INSTANCE_ID, &member_id);
            }
        }
        let known = self.members.contains_key(&member_id);
        if !known && !req.member_id.is_empty() && self.pending.remove(&member_id).is_none() {
            return err(UNKNOWN_MEMBER_ID, &member_id);
        }
        if let Some(m) = self.members.get_mut(&member_id) {
            let changed = m.protocols != req.protocols;
            m.protocols = req.protocols.clone();
            m.session_timeout = req.session_timeout;
            m.rebalance_timeout = req.rebalance_timeout;
            m.last_seen = now;
            let is_leader = self.leader.as_deref() == Some(member_id.as_str());
            match self.state {
                GroupState::Stable | GroupState::CompletingRebalance if !changed && !is_leader => {
                    // A follower rejoining with the same subscription gets the current generation.
                    return JoinOutcome::Now(self.join_result(&member_id));
                }
                GroupState::PreparingRebalance => {}
                _ => self.prepare_rebalance(now, initial_delay),
            }
        } else {
            self.members.insert(
                member_id.clone(),
                Member {
                    id: member_id.clone(),
                    instance_id: req.instance_id.clone(),
                    client_id: req.client_id.clone(),
                    host: req.host.clone(),
                    session_timeout: req.session_timeout,
                    rebalance_timeout: req.rebalance_timeout,
                    protocols: req.protocols.clone(),
                    assignment: Bytes::new(),
                    last_seen: now,
                    joined: false,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
            if self.protocol_type.is_none() {
                self.protocol_type = Some(req.protocol_type.clone());
            }
            if self.state != GroupState::PreparingRebalance {
                self.prepare_rebalance(now, initial_delay);
            }
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&member_id) {
            m.joined = true;
            m.join_waiter = Some(tx);
        }
        self.try_complete_join(now);
        JoinOutcome::Wait(rx)
    }

    /// A static member restarted under a new member id: it takes the old member's place.
    fn replace_static_member(
        &mut self,
        old: String,
        req: JoinRequest,
        now: Instant,
        initial_delay: Duration,
    ) -> JoinOutcome {
        let new_id = self.new_member_id(&req.client_id);
        let Some(mut m) = self.members.remove(&old) else {
            return JoinOutcome::Now(JoinResult {
                error: UNKNOWN_MEMBER_ID,
                ..Default::default()
            });
        };
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult {
                error: FENCED_INSTANCE_ID,
                member_id: old.clone(),
                generation: -1,
                ..Default::default()
            });
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncResult {
                error: FENCED_INSTANCE_ID,
                ..Default::default()
            });
        }
        let changed = m.protocols != req.protocols;
        m.id = new_id.clone();
        m.client_id = req.client_id.clone();
        m.host = req.host.clone();
        m.protocols = req.protocols.clone();
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        m.last_seen = now;
        self.members.insert(new_id.clone(), m);
        if self.leader.as_deref() == Some(old.as_str()) {
            self.leader = Some(new_id.clone());
        }
        if self.state == GroupState::Stable && !changed {
            // No rebalance: the member resumes its assignment through SyncGroup. Its new id must
            // survive a restart, or the old one would come back and fence it.
            self.persist = true;
            return JoinOutcome::Now(self.join_result(&new_id));
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now, initial_delay);
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&new_id) {
            m.joined = true;
            m.join_waiter = Some(tx);
        }
        self.try_complete_join(now);
        JoinOutcome::Wait(rx)
    }

    fn join_result(&self, member_id: &str) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        JoinResult {
            error: NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            member_id: member_id.to_string(),
            members: if leader == member_id {
                self.members
                    .values()
                    .map(|m| {
                        (
                            m.id.clone(),
                            m.instance_id.clone(),
                            m.metadata_for(&protocol),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
            leader,
        }
    }

    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        for m in self.members.values_mut() {
            m.joined = false;
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult {
                    error: REBALANCE_IN_PROGRESS,
                    ..Default::default()
                });
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60));
        self.rebalance_deadline = Some(now + timeout);
        self.initial_until = was_empty.then_some(now + initial_delay.min(timeout));
    }

    /// Completes the join phase once every member has rejoined (or the deadline passed).
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all = self.members.values().all(|m| m.joined);
        let waiting_initial = self.initial_until.is_some_and(|t| now < t);
        let expired = self.rebalance_deadline.is_some_and(|d| now >= d);
        if (all && !waiting_initial) || expired {
            self.complete_join();
        }
    }

    fn complete_join(&mut self) {
        self.members.retain(|_, m| m.joined);
        self.rebalance_deadline = None;
        self.initial_until = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            self.persist = true;
            return;
        }
        // The protocol every member supports that members rank highest overall.
        let first = self
            .members
            .values()
            .next()
            .map(|m| m.protocols.clone())
            .unwrap_or_default();
        let protocol = first
            .iter()
            .filter(|(p, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(q, _)| q == p))
            })
            .min_by_key(|(p, _)| {
                self.members
                    .values()
                    .map(|m| {
                        m.protocols
                            .iter()
                            .position(|(q, _)| q == p)
                            .unwrap_or(usize::MAX)
                    })
                    .sum::<usize>()
            })
            .map(|(p, _)| p.clone());
        self.protocol = protocol;
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.assignment = Bytes::new();
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(result);
                }
            }
        }
    }

    /// Whether the group has no members under either protocol.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.consumer.as_ref().is_none_or(|c| c.members.is_empty())
    }

    /// The state name ListGroups and DescribeGroups report.
    pub fn state_name(&self) -> &'static str {
        match &self.consumer {
            Some(c) if !c.members.is_empty() => {
                if c.is_stable() {
                    "Stable"
                } else {
                    "Reconciling"
                }
            }
            _ => self.state.name(),
        }
    }

    /// "consumer" for KIP-848 groups, "classic" otherwise.
    pub fn group_type(&self) -> &'static str {
        if self
            .consumer
            .as_ref()
            .is_some_and(|c| !c.members.is_empty())
        {
            "consumer"
        } else {
            "classic"
        }
    }

    /// Validates an OffsetCommit's member and generation (or member epoch for KIP-848 groups).
    pub fn check_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), i16> {
        if let Some(c) = self.consumer.as_ref().filter(|c| !c.members.is_empty()) {
            return c.check_commit(member_id, generation);
        }
        self.check_member(member_id, instance_id, generation)?;
        if self.state == GroupState::CompletingRebalance {
            return Err(REBALANCE_IN_PROGRESS);
        }
        Ok(())
    }

    /// Validates member, instance and generation for Sync/Heartbeat/OffsetCommit.
    pub fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), i16> {
        let Some(m) = self.members.get(member_id) else {
            if let Some(i) = instance_id {
                if self.member_by_instance(i).is_some() {
                    return Err(FENCED_INSTANCE_ID);
                }
            }
            return Err(UNKNOWN_MEMBER_ID);
        };
        if instance_id.is_some() && m.instance_id.as_deref() != instance_id {
            return Err(FENCED_INSTANCE_ID);
        }
        if generation != self.generation {
            return Err(ILLEGAL_GENERATION);
        }
        Ok(())
    }

    /// SyncGroup. The leader's call makes the group Stable (and sets `persist`).
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> SyncOutcome {
        let fail = |error| {
            SyncOutcome::Now(SyncResult {
                error,
                ..Default::default()
            })
        };
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return fail(e);
        }
        match self.state {
            GroupState::Empty => fail(UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => fail(REBALANCE_IN_PROGRESS),
            GroupState::Stable => {
                let m = &self.members[member_id];
                SyncOutcome::Now(self.sync_result(m.assignment.clone()))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(member_id) {
                    m.last_seen = now;
                    m.sync_waiter = Some(tx);
                }
                if self.leader.as_deref() == Some(member_id) {
                    let given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    self.state = GroupState::Stable;
                    self.persist = true;
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let a = given.get(&id).cloned().unwrap_or_default();
                        let result = self.sync_result(a.clone());
                        if let Some(m) = self.members.get_mut(&id) {
                            m.assignment = a;
                            if let Some(w) = m.sync_waiter.take() {
                                let _ = w.send(result);
                            }
                        }
                    }
                }
                SyncOutcome::Wait(rx)
            }
        }
    }

    fn sync_result(&self, assignment: Bytes) -> SyncResult {
        SyncResult {
            error: NONE,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment,
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> i16 {
        if self.state == GroupState::Empty {
            return UNKNOWN_MEMBER_ID;
        }
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return e;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen = now;
        }
        if self.state == GroupState::PreparingRebalance {
            REBALANCE_IN_PROGRESS
        } else {
            NONE
        }
    }

    /// Removes a member (by id, or by instance id when the id is empty); returns the error code.
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now: Instant) -> i16 {
        let id = if member_id.is_empty() {
            match instance_id.and_then(|i| self.member_by_instance(i)) {
                Some(id) => id,
                None => return UNKNOWN_MEMBER_ID,
            }
        } else {
            member_id.to_string()
        };
        if let Some(i) = instance_id {
            if self.member_by_instance(i).is_some_and(|m| m != id) {
                return FENCED_INSTANCE_ID;
            }
        }
        let Some(mut m) = self.members.remove(&id) else {
            return UNKNOWN_MEMBER_ID;
        };
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult {
                error: UNKNOWN_MEMBER_ID,
                generation: -1,
                ..Default::default()
            });
        }
        self.after_removal(now);
        NONE
    }

    fn after_removal(&mut self, now: Instant) {
        if self.members.is_empty() {
            if self.state != GroupState::Empty {
                self.generation += 1;
            }
            self.persist = true;
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            self.rebalance_deadline = None;
            self.initial_until = None;
            return;
        }
        if self.state == GroupState::PreparingRebalance {
            self.try_complete_join(now);
        } else {
            self.prepare_rebalance(now, Duration::ZERO);
            self.initial_until = None;
        }
    }

    /// Expires members that stopped heartbeating and completes overdue rebalances.
    pub fn tick(&mut self, now: Instant) {
        if let Some(c) = &mut self.consumer {
            if c.tick(now) {
                tracing::info!(group = %self.id, "consumer group member session expired");
            }
        }
        self.pending.retain(|_, until| *until > now);
        let dead: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none() && now.duration_since(m.last_seen) > m.session_timeout
            })
            .map(|m| m.id.clone())
            .collect();
        for id in dead {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            if let Some(mut m) = self.members.remove(&id) {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncResult {
                        error: UNKNOWN_MEMBER_ID,
                        ..Default::default()
                    });
                }
            }
            self.after_removal(now);
        }
        self.try_complete_join(now);
    }

    /// Whether any member's subscription names `topic` (consumer protocol only).
    pub fn subscribed_to(&self, topic: &str) -> bool {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        if self
            .consumer
            .as_ref()
            .is_some_and(|c| c.subscribes_to(topic))
        {
            return true;
        }
        use kafka_protocol::protocol::Decodable;
        let Some(protocol) = &self.protocol else {
            return false;
        };
        self.members.values().any(|m| {
            let mut meta = m.metadata_for(protocol);
            if meta.len() < 2 {
                return false;
            }
            let version = i16::from_be_bytes([meta[0], meta[1]]);
            let _ = bytes::Buf::get_i16(&mut meta);
            ConsumerProtocolSubscription::decode(&mut meta, version.clamp(0, 3))
                .is_ok_and(|s| s.topics.iter().any(|t| &**t == topic))
        })
    }
}

/// The persisted form of a group's membership (written when it becomes Stable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: Vec<MemberSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
}

impl Group {
    pub fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            generation: self.generation,
            leader: self.leader.clone(),
            members: if self.state == GroupState::Stable {
                self.members
                    .values()
                    .map(|m| MemberSnapshot {
                        id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        host: m.host.clone(),
                        session_timeout_ms: m.session_timeout.as_millis() as u64,
                        rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                        protocols: m
                            .protocols
                            .iter()
                            .map(|(n, b)| (n.clone(), b.to_vec()))
                            .collect(),
                        assignment: m.assignment.to_vec(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Restores membership after a restart: members get a full session timeout to come back.
    pub fn restore(&mut self, s: GroupSnapshot, now: Instant) {
        self.protocol_type = s.protocol_type;
        self.generation = s.generation;
        self.members.clear();
        for m in s.members {
            self.members.insert(
                m.id.clone(),
                Member {
                    id: m.id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    host: m.host,
                    session_timeout: Duration::from_millis(m.session_timeout_ms),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                    protocols: m
                        .protocols
                        .into_iter()
                        .map(|(n, b)| (n, Bytes::from(b)))
                        .collect(),
                    assignment: Bytes::from(m.assignment),
                    last_seen: now,
                    joined: false,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
        } else {
            self.state = GroupState::Stable;
            self.protocol = s.protocol;
            self.leader = s.leader;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            member_id: id.into(),
            instance_id: instance.map(String::from),
            client_id: "c".into(),
            host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: true,
        }
    }

    fn joined(o: JoinOutcome) -> JoinResult {
        match o {
            JoinOutcome::Now(r) => r,
            JoinOutcome::Wait(mut rx) => rx.try_recv().expect("join completed"),
        }
    }

    #[test]
    fn two_members_join_sync_and_leave() {
        let t = Instant::now();
        let mut g = Group::new("g");
        let r = joined(g.join(req("", None), t, Duration::ZERO));
        assert_eq!(r.error, MEMBER_ID_REQUIRED);
        let a = r.member_id;
        let ra = joined(g.join(req(&a, None), t, Duration::ZERO));
        assert_eq!(
            (ra.error, ra.generation, ra.leader.as_str()),
            (NONE, 1, a.as_str())
        );
        // A second member triggers a rebalance; the first is told through its heartbeat.
        let b = joined(g.join(req("", None), t, Duration::ZERO)).member_id;
        let JoinOutcome::Wait(mut rb) = g.join(req(&b, None), t, Duration::ZERO) else {
            panic!("must wait")
        };
        assert_eq!(g.heartbeat(&a, None, 1, t), REBALANCE_IN_PROGRESS);
        let ra = joined(g.join(req(&a, None), t, Duration::ZERO));
        let rb = rb.try_recv().unwrap();
        assert_eq!((ra.generation, rb.generation), (2, 2));
        assert_eq!(ra.members.len(), 2, "the leader sees every member");
        assert!(rb.members.is_empty());
        g.persist = false;
        let SyncOutcome::Wait(mut sb) = g.sync(&b, None, 2, vec![], t) else {
            panic!()
        };
        assert!(
            !g.persist,
            "a follower's sync does not make the group stable"
        );
        let SyncOutcome::Wait(mut sa) = g.sync(
            &a,
            None,
            2,
            vec![
                (a.clone(), Bytes::from_static(b"A")),
                (b.clone(), Bytes::from_static(b"B")),
            ],
            t,
        ) else {
            panic!()
        };
        assert!(
            g.persist,
            "the leader's sync makes the group stable, to be persisted"
        );
        assert_eq!(sa.try_recv().unwrap().assignment, Bytes::from_static(b"A"));
        assert_eq!(sb.try_recv().unwrap().assignment, Bytes::from_static(b"B"));
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat(&b, None, 1, t), ILLEGAL_GENERATION);
        assert_eq!(g.heartbeat("nobody", None, 2, t), UNKNOWN_MEMBER_ID);
        assert_eq!(g.leave(&b, None, t), NONE);
        assert_eq!(g.state, GroupState::PreparingRebalance);
    }

    #[test]
    fn dead_member_expires_and_rebalance_completes_without_it() {
        let t = Instant::now();
        let mut g = Group::new("g");
        let a = joined(g.join(req("", None), t, Duration::ZERO)).member_id;
        joined(g.join(req(&a, None), t, Duration::ZERO));
        let b = joined(g.join(req("", None), t, Duration::ZERO)).member_id;
        let JoinOutcome::Wait(mut rb) = g.join(req(&b, None), t, Duration::ZERO) else {
            panic!()
        };
        // `a` never rejoins: the rebalance times out and completes with `b` alone.
        g.tick(t + Duration::from_secs(11));
        let r = rb.try_recv().unwrap();
        assert_eq!(r.leader, b);
        assert_eq!(g.members.len(), 1);
        assert!(!g.members.contains_key(&a));
    }

    #[test]
    fn static_member_rejoins_without_rebalance_and_old_id_is_fenced() {
        let t = Instant::now();
        let mut g = Group::new("g");
        let a = joined(g.join(req("", Some("i1")), t, Duration::ZERO)).member_id;
        let _ = g.sync(
            &a,
            Some("i1"),
            1,
            vec![(a.clone(), Bytes::from_static(b"A"))],
            t,
        );
        assert_eq!(g.state, GroupState::Stable);
        let r = joined(g.join(req("", Some("i1")), t, Duration::ZERO));
        assert_eq!(
            (r.error, r.generation),
            (NONE, 1),
            "same generation: no rebalance"
        );
        assert_ne!(r.member_id, a);
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat(&a, Some("i1"), 1, t), FENCED_INSTANCE_ID);
        let SyncOutcome::Now(s) = g.sync(&r.member_id, Some("i1"), 1, vec![], t) else {
            panic!()
        };
        assert_eq!(
            s.assignment,
            Bytes::from_static(b"A"),
            "the old assignment carries over"
        );
    }

    #[test]
    fn inconsistent_protocols_are_refused() {
        let t = Instant::now();
        let mut g = Group::new("g");
        let a = joined(g.join(req("", None), t, Duration::ZERO)).member_id;
        joined(g.join(req(&a, None), t, Duration::ZERO));
        let mut other = req("", None);
        other.protocols = vec![("roundrobin".into(), Bytes::new())];
        assert_eq!(
            joined(g.join(other, t, Duration::ZERO)).error,
            INCONSISTENT_GROUP_PROTOCOL
        );
    }
}
