//! The consumer group protocol of KIP-848 (ConsumerGroupHeartbeat): members only heartbeat; the
//! broker keeps a group epoch, computes the target assignment with a sticky uniform assignor
//! whenever membership or subscriptions change, and reconciles each member toward its target:
//! a member first gives up partitions it must lose, and receives a partition only once no other
//! member still owns it. No member ever stops for a global rebalance.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use uuid::Uuid;

pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const FENCED_MEMBER_EPOCH: i16 = 110;
pub const UNRELEASED_INSTANCE_ID: i16 = 111;
pub const STALE_MEMBER_EPOCH: i16 = 113;
pub const INVALID_REQUEST: i16 = 42;

/// A topic-partition by topic id.
pub type Tp = (Uuid, i32);

#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub rack_id: Option<String>,
    pub epoch: i32,
    pub subscribed: Vec<String>,
    /// What the member owns (as last sent to it, or as it reported).
    pub assigned: BTreeSet<Tp>,
    pub target: BTreeSet<Tp>,
    pub rebalance_timeout: Duration,
    pub last_seen: Instant,
}

/// One heartbeat, as the coordinator passes it in.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub member_id: String,
    pub epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub rebalance_timeout: Duration,
    pub subscribed: Option<Vec<String>>,
    pub regex: Option<String>,
    /// The partitions the member says it owns (None: unchanged).
    pub owned: Option<BTreeSet<Tp>>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatReply {
    pub error: i16,
    pub message: Option<String>,
    pub member_id: String,
    pub epoch: i32,
    /// Sent when it differs from what the member owns; None means unchanged.
    pub assignment: Option<BTreeSet<Tp>>,
}

/// Members of a KIP-848 group.
#[derive(Debug, Default)]
pub struct ConsumerMembers {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    pub session_timeout: Duration,
}

impl ConsumerMembers {
    pub fn new(session_timeout: Duration) -> Self {
        Self {
            session_timeout,
            ..Default::default()
        }
    }

    /// Handles a heartbeat. `partitions` maps a subscribed topic name to its id and partition count.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        partitions: &dyn Fn(&str) -> Option<(Uuid, i32)>,
        now: Instant,
    ) -> HeartbeatReply {
        let err = |error, message: &str| HeartbeatReply {
            error,
            message: Some(message.into()),
            ..Default::default()
        };
        if hb.regex.is_some() {
            return err(
                INVALID_REQUEST,
                "regular-expression subscriptions are not supported; subscribe by topic names",
            );
        }
        // Leaving (-1), or a static member leaving for now (-2).
        if hb.epoch < 0 {
            if self.members.remove(&hb.member_id).is_some() {
                self.group_epoch += 1;
            }
            return HeartbeatReply {
                member_id: hb.member_id,
                epoch: hb.epoch,
                ..Default::default()
            };
        }
        let mut member_id = hb.member_id.clone();
        if hb.epoch == 0 {
            if member_id.is_empty() {
                member_id = Uuid::new_v4().simple().to_string();
            }
            // A static member coming back replaces its previous incarnation.
            if let Some(inst) = &hb.instance_id {
                let old = self
                    .members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(inst) && m.id != member_id)
                    .map(|m| m.id.clone());
                if let Some(old) = old {
                    if self.members.get(&old).is_some_and(|m| {
                        m.epoch >= 0 && now.duration_since(m.last_seen) < self.session_timeout
                    }) && hb.owned.is_none()
                    {
                        return err(
                            UNRELEASED_INSTANCE_ID,
                            "the instance id is still in use by another member",
                        );
                    }
                    self.members.remove(&old);
                }
            }
            let subscribed = hb.subscribed.clone().unwrap_or_default();
            let m = self
                .members
                .entry(member_id.clone())
                .or_insert_with(|| ConsumerMember {
                    id: member_id.clone(),
                    instance_id: hb.instance_id.clone(),
                    client_id: hb.client_id.clone(),
                    host: hb.host.clone(),
                    rack_id: hb.rack_id.clone(),
                    epoch: 0,
                    subscribed: Vec::new(),
                    assigned: BTreeSet::new(),
                    target: BTreeSet::new(),
                    rebalance_timeout: hb.rebalance_timeout,
                    last_seen: now,
                });
            m.subscribed = subscribed;
            m.assigned.clear();
            m.epoch = 0;
            // A (re)joining member always starts a new group epoch.
            self.group_epoch += 1;
        } else {
            let Some(m) = self.members.get(&member_id) else {
                return err(UNKNOWN_MEMBER_ID, "unknown member id");
            };
            if hb.epoch != m.epoch {
                return err(FENCED_MEMBER_EPOCH, "member epoch is not the current one");
            }
        }
        let Some(m) = self.members.get_mut(&member_id) else {
            return err(UNKNOWN_MEMBER_ID, "unknown member id");
        };
        m.last_seen = now;
        m.rebalance_timeout = hb.rebalance_timeout;
        if let Some(s) = &hb.subscribed {
            if *s != m.subscribed {
                m.subscribed = s.clone();
                self.group_epoch += 1;
            }
        }
        if let Some(owned) = &hb.owned {
            m.assigned = owned.clone();
        }
        if self.assignment_epoch < self.group_epoch {
            self.compute_targets(partitions);
        }
        self.reconcile(&member_id, hb.owned.as_ref())
    }

    /// Sticky uniform assignment: every member keeps what it has while under its quota; the
    /// rest goes to the members with the fewest partitions that subscribe to the topic.
    fn compute_targets(&mut self, partitions: &dyn Fn(&str) -> Option<(Uuid, i32)>) {
        let mut universe: BTreeMap<Tp, BTreeSet<String>> = BTreeMap::new();
        for m in self.members.values() {
            for t in &m.subscribed {
                if let Some((id, n)) = partitions(t) {
                    for p in 0..n {
                        universe.entry((id, p)).or_default().insert(m.id.clone());
                    }
                }
            }
        }
        // Balanced quotas: every member may hold `total / n`, and the first `total % n` one more.
        let n = self.members.len().max(1);
        let (base, mut extra) = (universe.len() / n, universe.len() % n);
        let mut quota: HashMap<String, usize> = HashMap::new();
        for id in self.members.keys() {
            let q = base + usize::from(extra > 0);
            extra = extra.saturating_sub(1);
            quota.insert(id.clone(), q);
        }
        let mut targets: HashMap<String, BTreeSet<Tp>> = self
            .members
            .keys()
            .map(|k| (k.clone(), BTreeSet::new()))
            .collect();
        let mut taken: BTreeSet<Tp> = BTreeSet::new();
        // Sticky: each member keeps what it already had, up to its quota.
        for m in self.members.values() {
            let q = quota.get(&m.id).copied().unwrap_or(0);
            let keep = m
                .target
                .iter()
                .filter(|tp| universe.get(tp).is_some_and(|s| s.contains(&m.id)))
                .take(q);
            for tp in keep {
                if taken.insert(*tp) {
                    targets.entry(m.id.clone()).or_default().insert(*tp);
                }
            }
        }
        for (tp, subscribers) in &universe {
            if taken.contains(tp) {
                continue;
            }
            let best = subscribers
                .iter()
                .min_by_key(|id| (targets.get(*id).map_or(0, |s| s.len()), (*id).clone()));
            if let Some(id) = best {
                targets.entry(id.clone()).or_default().insert(*tp);
                taken.insert(*tp);
            }
        }
        for (id, t) in targets {
            if let Some(m) = self.members.get_mut(&id) {
                m.target = t;
            }
        }
        self.assignment_epoch = self.group_epoch;
    }

    fn reconcile(&mut self, member_id: &str, reported: Option<&BTreeSet<Tp>>) -> HeartbeatReply {
        let owned_by_others: BTreeSet<Tp> = self
            .members
            .values()
            .filter(|m| m.id != member_id)
            .flat_map(|m| m.assigned.iter().copied())
            .collect();
        let epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(member_id) else {
            return HeartbeatReply {
                error: UNKNOWN_MEMBER_ID,
                ..Default::default()
            };
        };
        let revoke: BTreeSet<Tp> = m.assigned.difference(&m.target).copied().collect();
        let next: BTreeSet<Tp> = if revoke.is_empty() {
            // Take every target partition nobody else still holds; the rest come on later heartbeats.
            m.target
                .iter()
                .filter(|tp| !owned_by_others.contains(tp))
                .copied()
                .collect()
        } else {
            // First give up what must go.
            m.assigned.intersection(&m.target).copied().collect()
        };
        if revoke.is_empty() {
            m.epoch = epoch;
        }
        let changed = reported.is_none_or(|r| *r != next) || m.assigned != next;
        tracing::debug!(member = %m.id, epoch = m.epoch, owned = m.assigned.len(), target = m.target.len(),
            revoke = revoke.len(), sending = next.len(), "kip848 reconcile");
        if revoke.is_empty() {
            // Granted partitions count as owned at once, so nobody else can be given them.
            m.assigned = next.clone();
        }
        // Partitions being revoked stay owned until the member's next heartbeat reports them gone.
        HeartbeatReply {
            error: 0,
            message: None,
            member_id: m.id.clone(),
            epoch: m.epoch,
            assignment: changed.then_some(next),
        }
    }

    /// Removes members whose session expired; returns whether any was removed.
    pub fn tick(&mut self, now: Instant) -> bool {
        let timeout = self.session_timeout;
        let before = self.members.len();
        self.members
            .retain(|_, m| now.duration_since(m.last_seen) <= timeout);
        let removed = self.members.len() != before;
        if removed {
            self.group_epoch += 1;
        }
        removed
    }

    /// OffsetCommit from a member of this group: the epoch must be its current one.
    pub fn check_commit(&self, member_id: &str, epoch: i32) -> Result<(), i16> {
        match self.members.get(member_id) {
            None => Err(UNKNOWN_MEMBER_ID),
            Some(m) if epoch != m.epoch => Err(STALE_MEMBER_EPOCH),
            Some(_) => Ok(()),
        }
    }

    /// Whether every member owns exactly its target.
    pub fn is_stable(&self) -> bool {
        self.assignment_epoch == self.group_epoch
            && self
                .members
                .values()
                .all(|m| m.assigned == m.target && m.epoch == self.assignment_epoch)
    }

    pub fn subscribes_to(&self, topic: &str) -> bool {
        self.members
            .values()
            .any(|m| m.subscribed.iter().any(|t| t == topic))
    }
}

/// A member's subscription in the consumer-protocol encoding (version 0), for DescribeGroups.
pub fn encode_subscription(topics: &[String]) -> bytes::Bytes {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let mut s = ConsumerProtocolSubscription::default();
    s.topics = topics
        .iter()
        .map(|t| StrBytes::from_string(t.clone()))
        .collect();
    let mut buf = bytes::BytesMut::new();
    bytes::BufMut::put_i16(&mut buf, 0);
    if s.encode(&mut buf, 0).is_err() {
        return bytes::Bytes::new();
    }
    buf.freeze()
}

/// A member's assignment in the consumer-protocol encoding (version 0), topic ids resolved to names.
pub fn encode_assignment(
    tps: &BTreeSet<Tp>,
    name_of: &dyn Fn(Uuid) -> Option<String>,
) -> bytes::Bytes {
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::messages::{ConsumerProtocolAssignment, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (id, p) in tps {
        if let Some(name) = name_of(*id) {
            by_topic.entry(name).or_default().push(*p);
        }
    }
    let mut a = ConsumerProtocolAssignment::default();
    a.assigned_partitions = by_topic
        .into_iter()
        .map(|(t, ps)| {
            let mut tp = TopicPartition::default();
            tp.topic = TopicName(StrBytes::from_string(t));
            tp.partitions = ps;
            tp
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    bytes::BufMut::put_i16(&mut buf, 0);
    if a.encode(&mut buf, 0).is_err() {
        return bytes::Bytes::new();
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(id: &str, epoch: i32, owned: Option<&BTreeSet<Tp>>) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            epoch,
            instance_id: None,
            rack_id: None,
            client_id: "c".into(),
            host: "/127.0.0.1".into(),
            rebalance_timeout: Duration::from_secs(30),
            subscribed: Some(vec!["t".into()]),
            regex: None,
            owned: owned.cloned(),
        }
    }

    #[test]
    fn members_converge_without_double_ownership() {
        let topic = Uuid::new_v4();
        let parts = move |name: &str| (name == "t").then_some((topic, 6));
        let t = Instant::now();
        let mut g = ConsumerMembers::new(Duration::from_secs(45));
        let a = g.heartbeat(hb("a", 0, None), &parts, t);
        assert_eq!(
            a.assignment.as_ref().map(|s| s.len()),
            Some(6),
            "a lone member gets everything"
        );
        let a_owned = a.assignment.unwrap();
        // b joins: its target is 3 partitions, but a still owns them, so b gets nothing yet.
        let b = g.heartbeat(hb("b", 0, None), &parts, t);
        assert!(b.assignment.as_ref().is_none_or(|s| s.is_empty()));
        // a heartbeats and is told to give 3 up.
        let a2 = g.heartbeat(hb("a", a.epoch, Some(&a_owned)), &parts, t);
        let a_kept = a2.assignment.expect("revocation");
        assert_eq!(a_kept.len(), 3);
        // a confirms; b then receives the freed partitions.
        let a3 = g.heartbeat(hb("a", a2.epoch, Some(&a_kept)), &parts, t);
        let b2 = g.heartbeat(hb("b", b.epoch, Some(&BTreeSet::new())), &parts, t);
        let b_owned = b2.assignment.expect("b gets its share");
        assert_eq!(b_owned.len(), 3);
        assert!(a_kept.is_disjoint(&b_owned));
        assert_eq!(a3.epoch, b2.epoch);
        assert!(g.is_stable());
        // b leaves; a takes everything back.
        g.heartbeat(hb("b", -1, None), &parts, t);
        let a4 = g.heartbeat(hb("a", a3.epoch, Some(&a_kept)), &parts, t);
        assert_eq!(a4.assignment.map(|s| s.len()), Some(6));
        assert_eq!(
            g.heartbeat(hb("a", 999, None), &parts, t).error,
            FENCED_MEMBER_EPOCH
        );
        assert_eq!(
            g.heartbeat(hb("zz", 3, None), &parts, t).error,
            UNKNOWN_MEMBER_ID
        );
    }

    /// Members heartbeat in rounds (reporting what they were sent) until the group is stable.
    fn converge(
        g: &mut ConsumerMembers,
        ids: &[String],
        parts: &dyn Fn(&str) -> Option<(Uuid, i32)>,
        t: Instant,
    ) {
        let mut owned: HashMap<String, (i32, BTreeSet<Tp>)> = HashMap::new();
        for round in 0..20 {
            for id in ids {
                let (epoch, mine) = owned.get(id).cloned().unwrap_or((0, BTreeSet::new()));
                let r = g.heartbeat(hb(id, epoch, Some(&mine)), parts, t);
                assert_eq!(r.error, 0, "round {round} member {id}");
                let now = r.assignment.unwrap_or(mine);
                owned.insert(id.clone(), (r.epoch, now));
            }
            // No partition is ever held by two members.
            let mut seen = BTreeSet::new();
            for (_, tps) in owned.values() {
                for tp in tps {
                    assert!(seen.insert(*tp), "partition {tp:?} owned twice");
                }
            }
            if g.is_stable() {
                return;
            }
        }
        panic!("never converged");
    }

    #[test]
    fn eleventh_member_gets_a_share_of_one_hundred_partitions() {
        let topic = Uuid::new_v4();
        let parts = move |_: &str| Some((topic, 100));
        let t = Instant::now();
        let mut g = ConsumerMembers::new(Duration::from_secs(45));
        let mut ids: Vec<String> = (0..10).map(|i| format!("m{i:02}")).collect();
        converge(&mut g, &ids, &parts, t);
        assert!(g.members.values().all(|m| m.assigned.len() == 10));
        ids.push("m10".into());
        converge(&mut g, &ids, &parts, t);
        let sizes: Vec<usize> = g.members.values().map(|m| m.assigned.len()).collect();
        assert!(sizes.iter().all(|n| (9..=10).contains(n)), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 100);
    }

    #[test]
    fn expired_member_partitions_move() {
        let topic = Uuid::new_v4();
        let parts = move |_: &str| Some((topic, 4));
        let t = Instant::now();
        let mut g = ConsumerMembers::new(Duration::from_secs(10));
        let a = g.heartbeat(hb("a", 0, None), &parts, t);
        let b = g.heartbeat(hb("b", 0, None), &parts, t);
        let a2 = g.heartbeat(hb("a", a.epoch, a.assignment.as_ref()), &parts, t);
        let a_kept = a2.assignment.unwrap();
        let a3 = g.heartbeat(hb("a", a2.epoch, Some(&a_kept)), &parts, t);
        let _ = g.heartbeat(hb("b", b.epoch, Some(&BTreeSet::new())), &parts, t);
        // a keeps heartbeating, b goes silent.
        let later = t + Duration::from_secs(8);
        let a4 = g.heartbeat(hb("a", a3.epoch, Some(&a_kept)), &parts, later);
        assert!(g.tick(t + Duration::from_secs(11)));
        let a5 = g.heartbeat(
            hb("a", a4.epoch, Some(&a_kept)),
            &parts,
            t + Duration::from_secs(11),
        );
        assert_eq!(a5.assignment.map(|s| s.len()), Some(4));
    }
}
