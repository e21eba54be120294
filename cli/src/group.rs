//! `trib group list|describe|reset-offsets|delete`: consumer groups through the Kafka APIs
//! (ListGroups/DescribeGroups, OffsetFetch/OffsetCommit, ListOffsets, DeleteGroups).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context};
use clap::{ArgGroup, Subcommand};
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::groups::GroupInfo;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{ClientArgs, TIMEOUT};

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List consumer groups with their state and member count.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show members, assignments, committed offsets, end offsets and lag per partition.
    Describe {
        group: String,
        /// Only this topic (default: the topics the group is assigned or has committed).
        #[arg(long, short = 't')]
        topic: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move a group's committed offsets (only while the group has no active members).
    #[command(group(ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_datetime", "shift_by", "to_offset"])))]
    ResetOffsets {
        group: String,
        #[arg(long, short = 't')]
        topic: String,
        #[arg(long)]
        to_earliest: bool,
        #[arg(long)]
        to_latest: bool,
        /// RFC 3339 time or epoch milliseconds: the first offset at or after it.
        #[arg(long)]
        to_datetime: Option<String>,
        /// Move every partition's committed offset by N (negative goes back).
        #[arg(long, allow_hyphen_values = true)]
        shift_by: Option<i64>,
        #[arg(long)]
        to_offset: Option<i64>,
        /// Apply the plan (without it, only print it, as Kafka's tool does).
        #[arg(long)]
        execute: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete groups (only groups with no active members).
    Delete {
        groups: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn consumer(c: &ClientArgs, group: &str) -> anyhow::Result<BaseConsumer> {
    c.config()?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create client")
}

/// A member: id, client id, host, assigned (topic, partition)s.
type MemberRow = (String, String, String, Vec<(String, i32)>);

fn describe_group(c: &BaseConsumer, group: &str) -> anyhow::Result<(String, Vec<MemberRow>)> {
    let list = c
        .fetch_group_list(Some(group), TIMEOUT)
        .context("DescribeGroups failed")?;
    let Some(g): Option<&GroupInfo> = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(("Dead".into(), vec![]));
    };
    let members = g
        .members()
        .iter()
        .map(|m| {
            let mut parts = Vec::new();
            if let Some(a) = m.assignment() {
                if a.len() >= 2 {
                    let version = i16::from_be_bytes([a[0], a[1]]);
                    let mut b = bytes::Bytes::copy_from_slice(&a[2..]);
                    if let Ok(asg) = ConsumerProtocolAssignment::decode(&mut b, version.clamp(0, 3))
                    {
                        for tp in asg.assigned_partitions {
                            parts
                                .extend(tp.partitions.iter().map(|p| (tp.topic.0.to_string(), *p)));
                        }
                    }
                }
            }
            (
                m.id().to_string(),
                m.client_id().to_string(),
                m.client_host().to_string(),
                parts,
            )
        })
        .collect();
    Ok((g.state().to_string(), members))
}

/// Every partition of `topics`.
fn partitions_of(
    c: &BaseConsumer,
    topics: &BTreeSet<String>,
) -> anyhow::Result<TopicPartitionList> {
    let md = c.fetch_metadata(None, TIMEOUT)?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| topics.contains(t.name())) {
        for p in t.partitions() {
            tpl.add_partition(t.name(), p.id());
        }
    }
    Ok(tpl)
}

pub async fn run(cmd: GroupCommand) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(cmd)).await?
}

fn run_blocking(cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::List { client } => {
            let c = consumer(&client, "trib-group-admin")?;
            let list = c
                .fetch_group_list(None, TIMEOUT)
                .context("ListGroups failed")?;
            println!("group\tstate\tprotocol-type\tmembers");
            for g in list.groups() {
                println!(
                    "{}\t{}\t{}\t{}",
                    g.name(),
                    g.state(),
                    g.protocol_type(),
                    g.members().len()
                );
            }
        }
        GroupCommand::Describe {
            group,
            topic,
            client,
        } => {
            let c = consumer(&client, &group)?;
            let (state, members) = describe_group(&c, &group)?;
            println!("group {group}: {state}, {} member(s)", members.len());
            let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
            for (id, client_id, host, parts) in &members {
                println!(
                    "  member {id} client {client_id} host {host}: {} partition(s)",
                    parts.len()
                );
                for p in parts {
                    owner.insert(p.clone(), id.clone());
                }
            }
            let topics: BTreeSet<String> = match topic {
                Some(t) => [t].into(),
                None => {
                    let all: BTreeSet<String> = c
                        .fetch_metadata(None, TIMEOUT)?
                        .topics()
                        .iter()
                        .map(|t| t.name().to_string())
                        .collect();
                    all
                }
            };
            let committed = c
                .committed_offsets(partitions_of(&c, &topics)?, TIMEOUT)
                .context("OffsetFetch failed")?;
            println!("topic\tpartition\tcommitted\tend\tlag\tmember");
            for e in committed.elements() {
                let key = (e.topic().to_string(), e.partition());
                let Some(off) = e.offset().to_raw().filter(|o| *o >= 0) else {
                    if let Some(m) = owner.get(&key) {
                        let (_, hi) = c.fetch_watermarks(e.topic(), e.partition(), TIMEOUT)?;
                        println!("{}\t{}\t-\t{hi}\t-\t{m}", e.topic(), e.partition());
                    }
                    continue;
                };
                let (_, hi) = c.fetch_watermarks(e.topic(), e.partition(), TIMEOUT)?;
                let m = owner.get(&key).map_or("-", String::as_str);
                println!(
                    "{}\t{}\t{off}\t{hi}\t{}\t{m}",
                    e.topic(),
                    e.partition(),
                    (hi - off).max(0)
                );
            }
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_datetime,
            shift_by,
            to_offset,
            execute,
            client,
        } => {
            let c = consumer(&client, &group)?;
            let (state, members) = describe_group(&c, &group)?;
            if !members.is_empty() {
                bail!("group {group} is {state} with {} active member(s): stop them before resetting offsets", members.len());
            }
            let parts = partitions_of(&c, &[topic.clone()].into())?;
            if parts.count() == 0 {
                bail!("topic {topic} not found");
            }
            let committed = c.committed_offsets(parts.clone(), TIMEOUT)?;
            let mut plan = TopicPartitionList::new();
            for e in parts.elements() {
                let (lo, hi) = c.fetch_watermarks(&topic, e.partition(), TIMEOUT)?;
                let target = if to_earliest {
                    lo
                } else if to_latest {
                    hi
                } else if let Some(o) = to_offset {
                    o.clamp(lo, hi)
                } else if let Some(n) = shift_by {
                    let cur = committed
                        .find_partition(&topic, e.partition())
                        .and_then(|x| x.offset().to_raw())
                        .filter(|o| *o >= 0)
                        .unwrap_or(lo);
                    (cur + n).clamp(lo, hi)
                } else {
                    let t = to_datetime.as_deref().unwrap_or_default();
                    let ms = match t.parse::<i64>() {
                        Ok(ms) => ms,
                        Err(_) => humantime::parse_rfc3339_weak(t)
                            .with_context(|| {
                                format!("--to-datetime {t}: not RFC 3339 or epoch ms")
                            })?
                            .duration_since(std::time::UNIX_EPOCH)?
                            .as_millis() as i64,
                    };
                    let mut q = TopicPartitionList::new();
                    q.add_partition_offset(&topic, e.partition(), Offset::Offset(ms))?;
                    let r = c.offsets_for_times(q, TIMEOUT)?;
                    r.elements()
                        .first()
                        .and_then(|x| x.offset().to_raw())
                        .filter(|o| *o >= 0)
                        .unwrap_or(hi)
                };
                plan.add_partition_offset(&topic, e.partition(), Offset::Offset(target))?;
                println!("{topic}\t{}\t-> {target}", e.partition());
            }
            if execute {
                c.commit(&plan, CommitMode::Sync)
                    .context("OffsetCommit failed (is the group still active?)")?;
                println!("offsets of group {group} reset");
            } else {
                println!("dry run: add --execute to apply");
            }
        }
        GroupCommand::Delete { groups, client } => {
            let admin: AdminClient<DefaultClientContext> = client.config()?.create()?;
            let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            for r in rt.block_on(
                admin.delete_groups(&refs, &AdminOptions::new().request_timeout(Some(TIMEOUT))),
            )? {
                let g = r.map_err(|(g, e)| anyhow::anyhow!("cannot delete group {g}: {e}"))?;
                println!("deleted group {g}");
            }
        }
    }
    Ok(())
}
