//! ConsumerGroupHeartbeat and ConsumerGroupDescribe: the KIP-848 consumer group protocol, with
//! the assignment computed by the broker (see group/consumer.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::consumer_group_describe_response as describe;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::*;
use uuid::Uuid;

use super::{sb, topic_name, RequestContext};
use crate::broker::Broker;
use crate::group::consumer::{Heartbeat, Tp};
use crate::group::GROUP_ID_NOT_FOUND;

fn by_topic(tps: &BTreeSet<Tp>) -> BTreeMap<Uuid, Vec<i32>> {
    let mut m: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
    for (t, p) in tps {
        m.entry(*t).or_default().push(*p);
    }
    m
}

pub fn heartbeat(
    b: &Arc<Broker>,
    ctx: &RequestContext,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let hb = Heartbeat {
        member_id: req.member_id.to_string(),
        epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: req.rack_id.as_ref().map(|s| s.to_string()),
        client_id: ctx.client_id.clone(),
        host: ctx.client_host.clone(),
        rebalance_timeout: Duration::from_millis(
            req.rebalance_timeout_ms.clamp(0, 3_600_000) as u64
        ),
        subscribed: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.0.to_string()).collect()),
        regex: req
            .subscribed_topic_regex
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string()),
        owned: req.topic_partitions.as_ref().map(|tps| {
            tps.iter()
                .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p)))
                .collect()
        }),
    };
    let reply = b.groups.consumer_heartbeat(&b.topics, &req.group_id, hb);
    let mut r = ConsumerGroupHeartbeatResponse::default();
    r.error_code = reply.error;
    r.error_message = reply.message.map(sb);
    if reply.error == 0 {
        r.member_id = Some(sb(reply.member_id));
        r.member_epoch = reply.epoch;
        r.heartbeat_interval_ms = b.groups.consumer_heartbeat_interval.as_millis() as i32;
        r.assignment = reply.assignment.map(|a| {
            let mut out = Assignment::default();
            out.topic_partitions = by_topic(&a)
                .into_iter()
                .map(|(id, ps)| {
                    let mut t = TopicPartitions::default();
                    t.topic_id = id;
                    t.partitions = ps;
                    t
                })
                .collect();
            out
        });
    }
    r
}

fn described_assignment(b: &Broker, tps: &BTreeSet<Tp>) -> describe::Assignment {
    let mut a = describe::Assignment::default();
    a.topic_partitions = by_topic(tps)
        .into_iter()
        .map(|(id, ps)| {
            let mut t = describe::TopicPartitions::default();
            t.topic_id = id;
            t.topic_name = topic_name(
                &b.topics
                    .get_by_id(id)
                    .map(|t| t.name.to_string())
                    .unwrap_or_default(),
            );
            t.partitions = ps;
            t
        })
        .collect();
    a
}

pub fn describe(
    b: &Arc<Broker>,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let mut r = ConsumerGroupDescribeResponse::default();
    for id in req.group_ids {
        let mut g = describe::DescribedGroup::default();
        g.group_id = id.clone();
        g.authorized_operations = i32::MIN;
        match b.groups.describe_consumer_group(&id) {
            None => {
                g.error_code = GROUP_ID_NOT_FOUND;
                g.error_message = Some(sb(format!("no consumer-protocol group {}", &*id)));
            }
            Some((state, epoch, assignment_epoch, members)) => {
                g.group_state = sb(state);
                g.group_epoch = epoch;
                g.assignment_epoch = assignment_epoch;
                g.assignor_name = sb("uniform");
                g.members = members
                    .iter()
                    .map(|m| {
                        let mut d = describe::Member::default();
                        d.member_id = sb(m.id.clone());
                        d.instance_id = m.instance_id.clone().map(sb);
                        d.rack_id = m.rack_id.clone().map(sb);
                        d.member_epoch = m.epoch;
                        d.client_id = sb(m.client_id.clone());
                        d.client_host = sb(m.host.clone());
                        d.subscribed_topic_names =
                            m.subscribed.iter().map(|t| topic_name(t)).collect();
                        d.assignment = described_assignment(b, &m.assigned);
                        d.target_assignment = described_assignment(b, &m.target);
                        d
                    })
                    .collect();
            }
        }
        r.groups.push(g);
    }
    r
}
