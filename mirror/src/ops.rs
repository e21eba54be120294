//! The mirror's operator commands, which talk to the clusters directly (the mirror process may
//! or may not be running): `status` (per partition: source end, target end, lag in records and
//! seconds) and `failover` (wait for the target to catch up while the source answers, carry the
//! groups' offsets a last time, promote the mirror topics for writes, and report where each
//! consumer group stands at the target). In translating mode the positions come from the
//! checkpoint topic's offset map, and there is nothing to promote (target topics are ordinary).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use trib_broker::log::batch::BatchHeader;
use trib_broker::topic_config::{MIRROR_CLUSTER_KEY, MIRROR_TOPIC_KEY};

use crate::cluster::{Cluster, ClusterError};
use crate::config::{broker_list, MirrorConfig, MirrorSource, Mode, Selection};
use crate::link::translate_offset;
use crate::metrics::PartitionStatus;
use crate::offset_map::{self, Maps};
use crate::{resolve_mode, target_cluster, MirrorError};

/// A mirror topic at the target and where it comes from.
#[derive(Debug, Clone)]
struct Mirrored {
    source_topic: String,
    target_topic: String,
    partitions: Vec<i32>,
    promoted: bool,
}

/// The target topics that mirror `source`'s selected topics, found from the target alone (the
/// source may be down): named `<prefix><topic>` and carrying `mirror.source.topic`, or, when
/// promoted (no mirror keys left), recognised by that name alone.
async fn mirrored_topics(
    target: &Cluster,
    source: &MirrorSource,
    selection: &Selection,
) -> Result<Vec<Mirrored>, ClusterError> {
    let meta = target.metadata(None).await?;
    let names: Vec<String> = meta.topics.keys().cloned().collect();
    let configs = if names.is_empty() {
        BTreeMap::new()
    } else {
        target.topic_configs(&names).await?
    };
    let mut out = Vec::new();
    for (name, tm) in &meta.topics {
        let cfg = configs.get(name);
        let of = cfg.and_then(|c| c.get(MIRROR_TOPIC_KEY));
        let promoted = cfg.is_none_or(|c| !c.contains_key(MIRROR_CLUSTER_KEY));
        // A promoted topic has lost its keys: it is recognised by name.
        let source_topic = match (of, source.prefix.as_deref()) {
            (Some(t), _) => t.clone(),
            (None, Some(p)) => match name.strip_prefix(p) {
                Some(t) => t.to_string(),
                None => continue,
            },
            (None, None) => name.clone(),
        };
        if !selection.selects(&source_topic) || selection.target_name(&source_topic) != *name {
            continue;
        }
        out.push(Mirrored {
            source_topic,
            target_topic: name.clone(),
            partitions: tm.leaders.keys().copied().collect(),
            promoted,
        });
    }
    Ok(out)
}

/// The mirrored topics of `source` as the offset map knows them (translating mode).
fn mapped_topics(maps: &Maps, source: &MirrorSource) -> Vec<Mirrored> {
    let mut by_topic: BTreeMap<(String, String), Vec<i32>> = BTreeMap::new();
    for ((tt, p), m) in maps {
        if m.source == source.name {
            by_topic
                .entry((m.source_topic.clone(), tt.clone()))
                .or_default()
                .push(*p);
        }
    }
    by_topic
        .into_iter()
        .map(|((source_topic, target_topic), partitions)| Mirrored {
            source_topic,
            target_topic,
            partitions,
            promoted: false,
        })
        .collect()
}

/// The first timestamp of the batch at `offset` in a source partition.
async fn timestamp_at(source: &Cluster, topic: &str, partition: i32, offset: i64) -> Option<i64> {
    let f = source
        .fetch_one(None, topic, partition, offset, 1, false)
        .await
        .ok()?;
    BatchHeader::parse(&f.records)
        .ok()
        .map(|h| h.base_timestamp)
}

/// One partition's status row: lag from the source's end and the position copied through
/// (`source_end` -1: the source did not answer, no lag).
async fn row(
    source: &Cluster,
    source_name: &str,
    m: &Mirrored,
    partition: i32,
    source_end: i64,
    copied: i64,
    now: i64,
) -> PartitionStatus {
    let lag_records = if source_end < 0 {
        0
    } else {
        (source_end - copied).max(0)
    };
    let lag_seconds = if lag_records > 0 {
        timestamp_at(source, &m.source_topic, partition, copied)
            .await
            .map_or(0.0, |ts| ((now - ts).max(0) as f64) / 1000.0)
    } else {
        0.0
    };
    PartitionStatus {
        source: source_name.to_string(),
        source_topic: m.source_topic.clone(),
        target_topic: m.target_topic.clone(),
        partition,
        source_end,
        target_end: copied,
        lag_records,
        lag_seconds,
        promoted: m.promoted,
    }
}

/// Every mirrored partition of every source, from both clusters. A source that does not answer
/// shows `source_end` -1 and no lag.
pub async fn status(cfg: &MirrorConfig) -> Result<Vec<PartitionStatus>, MirrorError> {
    let target = target_cluster(cfg);
    if resolve_mode(cfg, &target).await? == Mode::Translate {
        let maps = offset_map::load(&target, &cfg.checkpoint_topic).await?;
        return status_translating(cfg, &maps).await;
    }
    let mut out = Vec::new();
    let now = crate::link::now_ms();
    for s in &cfg.sources {
        let selection = s.selection().map_err(MirrorError::Config)?;
        let source = Cluster::new(&s.name, broker_list(&s.brokers));
        for m in mirrored_topics(&target, s, &selection).await? {
            let tend = target
                .list_offsets(None, &m.target_topic, &m.partitions, -1)
                .await?;
            let send = source
                .list_offsets(None, &m.source_topic, &m.partitions, -1)
                .await
                .ok();
            for &p in &m.partitions {
                let target_end = tend.get(&p).copied().unwrap_or(-1);
                let source_end = send.as_ref().and_then(|e| e.get(&p).copied()).unwrap_or(-1);
                out.push(row(&source, &s.name, &m, p, source_end, target_end, now).await);
            }
        }
    }
    Ok(out)
}

/// Translating mode: the target position is the source offset copied through, from the map;
/// the source end is its last stable offset (what a read_committed copy can reach).
async fn status_translating(
    cfg: &MirrorConfig,
    maps: &Maps,
) -> Result<Vec<PartitionStatus>, MirrorError> {
    let mut out = Vec::new();
    let now = crate::link::now_ms();
    for s in &cfg.sources {
        let source = Cluster::new(&s.name, broker_list(&s.brokers));
        for m in mapped_topics(maps, s) {
            let ends = source
                .stable_ends(None, &m.source_topic, &m.partitions)
                .await
                .ok();
            for &p in &m.partitions {
                let copied = maps
                    .get(&(m.target_topic.clone(), p))
                    .map_or(0, |pm| pm.next);
                let source_end = ends.as_ref().and_then(|e| e.get(&p).copied()).unwrap_or(-1);
                out.push(row(&source, &s.name, &m, p, source_end, copied, now).await);
            }
        }
    }
    Ok(out)
}

/// What a failover did.
#[derive(Debug, Serialize)]
pub struct FailoverReport {
    /// Target topics promoted now (writable).
    pub promoted: Vec<String>,
    /// Sources that answered: the target caught up with them (within the wait) and their groups'
    /// offsets were carried a last time.
    pub sources_reachable: Vec<String>,
    /// Partitions still behind when promoted (records the target never got).
    pub behind: Vec<PartitionStatus>,
    /// Where each consumer group stands at the target: group → "topic/partition" → offset.
    pub groups: BTreeMap<String, BTreeMap<String, i64>>,
}

/// Promotes the mirror topics of every source (or only `only`, by target name) at the target.
pub async fn failover(
    cfg: &MirrorConfig,
    only: &[String],
    wait: Duration,
) -> Result<FailoverReport, MirrorError> {
    let target = target_cluster(cfg);
    let mode = resolve_mode(cfg, &target).await?;
    let wanted = |t: &str| only.is_empty() || only.iter().any(|o| o == t);
    // 1. While sources answer, wait for the target to hold everything they have.
    let deadline = Instant::now() + wait;
    let mut last = status(cfg).await?;
    loop {
        let behind = last.iter().any(|s| {
            wanted(&s.target_topic) && !s.promoted && s.source_end >= 0 && s.lag_records > 0
        });
        if !behind || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = status(cfg).await?;
    }
    let mut report = FailoverReport {
        promoted: Vec::new(),
        sources_reachable: Vec::new(),
        behind: last
            .iter()
            .filter(|s| wanted(&s.target_topic) && !s.promoted && s.lag_records > 0)
            .cloned()
            .collect(),
        groups: BTreeMap::new(),
    };
    let mut promoted_topics = Vec::new();
    let maps = if mode == Mode::Translate {
        offset_map::load(&target, &cfg.checkpoint_topic).await?
    } else {
        Maps::new()
    };
    let translate = |t: &str, p: i32, o: i64| match mode {
        Mode::Translate => translate_offset(&maps, t, p, o),
        _ => Some(o),
    };
    for s in &cfg.sources {
        let selection = s.selection().map_err(MirrorError::Config)?;
        let found = match mode {
            Mode::Translate => mapped_topics(&maps, s),
            _ => mirrored_topics(&target, s, &selection).await?,
        };
        let mirrored: Vec<Mirrored> = found
            .into_iter()
            .filter(|m| !m.promoted && wanted(&m.target_topic))
            .collect();
        // 2. The groups' last positions, from a source that answers.
        let source = Cluster::new(&s.name, broker_list(&s.brokers));
        if source.metadata(Some(&[])).await.is_ok() {
            report.sources_reachable.push(s.name.clone());
            if !s.no_group_sync {
                let topics: BTreeMap<String, String> = mirrored
                    .iter()
                    .map(|m| (m.source_topic.clone(), m.target_topic.clone()))
                    .collect();
                let groups = s.group_selection().map_err(MirrorError::Config)?;
                crate::groups::sync(
                    &source,
                    &target,
                    &groups,
                    &topics,
                    &translate,
                    &mut Default::default(),
                )
                .await?;
            }
        } else {
            tracing::warn!(source = %s.name, "source does not answer: promoting with the offsets last synced");
        }
        // 3. Promote (translating mode: the target topics are already writable).
        for m in mirrored {
            if mode == Mode::Translate {
                promoted_topics.push(m.target_topic);
                continue;
            }
            target
                .alter_topic_configs(
                    &m.target_topic,
                    &BTreeMap::new(),
                    &[MIRROR_CLUSTER_KEY.to_string(), MIRROR_TOPIC_KEY.to_string()],
                )
                .await?;
            tracing::info!(topic = %m.target_topic, "promoted");
            report.promoted.push(m.target_topic.clone());
            promoted_topics.push(m.target_topic);
        }
    }
    // 4. Where each group stands on the promoted topics.
    for group in target.list_groups().await?.into_keys() {
        let at: BTreeMap<String, i64> = target
            .committed(&group)
            .await?
            .into_iter()
            .filter(|((t, _), _)| promoted_topics.contains(t))
            .map(|((t, p), o)| (format!("{t}/{p}"), o))
            .collect();
        if !at.is_empty() {
            report.groups.insert(group, at);
        }
    }
    Ok(report)
}
