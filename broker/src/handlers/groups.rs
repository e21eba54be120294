//! FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ListGroups, DescribeGroups
//! and DeleteGroups (classic group protocol). This broker coordinates every group itself.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{sb, Reply, RequestContext};
use crate::broker::Broker;
use crate::group::state::{
    JoinOutcome, JoinRequest, JoinResult, SyncOutcome, SyncResult, UNKNOWN_MEMBER_ID,
};
use crate::group::GROUP_ID_NOT_FOUND;

fn opt(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

pub fn find_coordinator(
    b: &Arc<Broker>,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let (host, port) = b.config.advertised_host_port();
    let node = BrokerId(b.config.node_id);
    let mut r = FindCoordinatorResponse::default();
    // This one broker coordinates every group and every transactional id.
    if version >= 4 {
        r.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let mut c = Coordinator::default();
                c.key = k.clone();
                c.node_id = node;
                c.host = sb(host.clone());
                c.port = port;
                c
            })
            .collect();
    } else {
        r.node_id = node;
        r.host = sb(host);
        r.port = port;
    }
    r
}

fn join_response(r: JoinResult) -> JoinGroupResponse {
    let mut out = JoinGroupResponse::default();
    out.error_code = r.error;
    out.generation_id = r.generation;
    out.protocol_type = r.protocol_type.map(sb);
    out.protocol_name = Some(sb(r.protocol.unwrap_or_default()));
    out.leader = sb(r.leader);
    out.member_id = sb(r.member_id);
    out.members = r
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = sb(id);
            m.group_instance_id = instance.map(sb);
            m.metadata = metadata;
            m
        })
        .collect();
    out
}

pub fn join(b: &Arc<Broker>, ctx: &RequestContext, version: i16, req: JoinGroupRequest) -> Reply {
    let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    let jr = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: opt(&req.group_instance_id),
        client_id: ctx.client_id.clone(),
        host: ctx.client_host.clone(),
        session_timeout: session,
        rebalance_timeout: if version >= 1 {
            Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64)
        } else {
            session
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    match b.groups.join(&req.group_id, jr) {
        Err(code) => Reply::Now(ResponseKind::JoinGroup(join_response(JoinResult {
            error: code,
            generation: -1,
            ..Default::default()
        }))),
        Ok(JoinOutcome::Now(r)) => Reply::Now(ResponseKind::JoinGroup(join_response(r))),
        Ok(JoinOutcome::Wait(rx)) => Reply::Later(Box::pin(async move {
            let r = rx.await.unwrap_or(JoinResult {
                error: UNKNOWN_MEMBER_ID,
                generation: -1,
                ..Default::default()
            });
            ResponseKind::JoinGroup(join_response(r))
        })),
    }
}

fn sync_response(r: SyncResult) -> SyncGroupResponse {
    let mut out = SyncGroupResponse::default();
    out.error_code = r.error;
    out.protocol_type = r.protocol_type.map(sb);
    out.protocol_name = r.protocol.map(sb);
    out.assignment = r.assignment;
    out
}

pub fn sync(b: &Arc<Broker>, req: SyncGroupRequest) -> Reply {
    let assignments = req
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let instance = opt(&req.group_instance_id);
    match b.groups.sync(
        &req.group_id,
        &req.member_id,
        instance.as_deref(),
        req.generation_id,
        assignments,
    ) {
        SyncOutcome::Now(r) => Reply::Now(ResponseKind::SyncGroup(sync_response(r))),
        SyncOutcome::Wait(rx) => Reply::Later(Box::pin(async move {
            let r = rx.await.unwrap_or(SyncResult {
                error: UNKNOWN_MEMBER_ID,
                ..Default::default()
            });
            ResponseKind::SyncGroup(sync_response(r))
        })),
    }
}

pub fn heartbeat(b: &Arc<Broker>, req: HeartbeatRequest) -> HeartbeatResponse {
    let instance = opt(&req.group_instance_id);
    let mut r = HeartbeatResponse::default();
    r.error_code = b.groups.heartbeat(
        &req.group_id,
        &req.member_id,
        instance.as_deref(),
        req.generation_id,
    );
    r
}

pub fn leave(b: &Arc<Broker>, version: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), opt(&m.group_instance_id)))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let codes = b.groups.leave(&req.group_id, &members);
    let mut r = LeaveGroupResponse::default();
    if version >= 3 {
        r.members = members
            .iter()
            .zip(&codes)
            .map(|((id, inst), code)| {
                let mut m = MemberResponse::default();
                m.member_id = sb(id.clone());
                m.group_instance_id = inst.clone().map(sb);
                m.error_code = *code;
                m
            })
            .collect();
    } else {
        r.error_code = codes.first().copied().unwrap_or(0);
    }
    r
}

pub fn list(b: &Arc<Broker>, req: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let mut r = ListGroupsResponse::default();
    r.groups = b
        .groups
        .list()
        .into_iter()
        .filter(|(_, _, st, _)| states.is_empty() || states.contains(&st.to_lowercase()))
        .filter(|(_, _, _, ty)| types.is_empty() || types.iter().any(|t| t == ty))
        .map(|(id, ptype, st, ty)| {
            let mut g = ListedGroup::default();
            g.group_id = GroupId(sb(id));
            g.protocol_type = sb(ptype);
            g.group_state = sb(st);
            g.group_type = sb(ty);
            g
        })
        .collect();
    r
}

pub fn describe(
    b: &Arc<Broker>,
    version: i16,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut r = DescribeGroupsResponse::default();
    for id in req.groups {
        let mut g = DescribedGroup::default();
        g.group_id = id.clone();
        g.authorized_operations = i32::MIN;
        match b.groups.describe(&id, &b.topics) {
            None => {
                g.group_state = sb("Dead");
                if version >= 6 {
                    g.error_code = GROUP_ID_NOT_FOUND;
                    g.error_message = Some(sb(format!("group {} does not exist", &*id)));
                }
            }
            Some(v) => {
                g.group_state = sb(v.state);
                g.protocol_type = sb(v.protocol_type);
                g.protocol_data = sb(v.protocol);
                g.members = v
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut d = DescribedGroupMember::default();
                        d.member_id = sb(m.id);
                        d.group_instance_id = m.instance_id.map(sb);
                        d.client_id = sb(m.client_id);
                        d.client_host = sb(m.host);
                        d.member_metadata = m.metadata;
                        d.member_assignment = m.assignment;
                        d
                    })
                    .collect();
            }
        }
        r.groups.push(g);
    }
    r
}

pub fn delete(b: &Arc<Broker>, req: DeleteGroupsRequest) -> Reply {
    let b = b.clone();
    Reply::Later(Box::pin(async move {
        let mut r = DeleteGroupsResponse::default();
        for id in req.groups_names {
            let mut res = DeletableGroupResult::default();
            res.error_code = b.groups.delete_group(&id).await;
            res.group_id = id;
            r.results.push(res);
        }
        ResponseKind::DeleteGroups(r)
    }))
}
