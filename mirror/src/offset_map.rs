//! Translating mode's exact offset map and the checkpoint topic that holds it.
//!
//! Each transaction the mirror commits at the target carries, besides the copied records, one
//! checkpoint record per target partition it wrote: the source range it covers (`from` to
//! `next`, source offsets) and the runs of (source offset, target offset, count) it produced.
//! Records are copied in order, so within a run source and target offsets advance together;
//! a run ends where the source skips offsets (aborted or compacted records, markers) or the
//! target does (its own transaction markers). Because the checkpoint is in the same
//! transaction as the data, the map and the target never disagree: a read_committed read of the
//! checkpoint topic gives, for every partition, where copying resumes and where every copied
//! record landed. Nothing is sampled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ClusterError};
use crate::committed::committed_batches;

/// Source offsets `source..source+count` landed at `target..target+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run(pub i64, pub i64, pub i64);

impl Run {
    fn source_end(&self) -> i64 {
        self.0 + self.2
    }
}

/// Appends `r` to `runs`, merging it into the last run when both offsets continue it.
pub fn push_run(runs: &mut Vec<Run>, r: Run) {
    if r.2 <= 0 {
        return;
    }
    if let Some(last) = runs.last_mut() {
        if last.source_end() == r.0 && last.1 + last.2 == r.1 {
            last.2 += r.2;
            return;
        }
    }
    runs.push(r);
}

/// One checkpoint record's value (JSON); its key is `<target topic>/<partition>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The source's name in the mirror file.
    pub source: String,
    pub source_cluster: String,
    pub source_topic: String,
    /// First source offset this range covers.
    pub from: i64,
    /// Where copying resumes (source offset).
    pub next: i64,
    pub runs: Vec<Run>,
}

/// Where a source offset lands at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// The target offset holding the first copied record at or after the source offset.
    At(i64),
    /// Records below the source offset are not all copied yet.
    NotYet,
    /// The offset is before what the map covers.
    Before,
}

/// One target partition's map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionMap {
    pub source: String,
    pub source_cluster: String,
    pub source_topic: String,
    /// First source offset covered.
    pub start: i64,
    /// Where copying resumes.
    pub next: i64,
    runs: Vec<Run>,
    /// A checkpoint was applied (`start` and `next` are known).
    covered: bool,
}

impl PartitionMap {
    /// Appends a checkpoint (ranges arrive in order; a range already covered is ignored).
    pub fn apply(&mut self, c: &Checkpoint) {
        if !self.covered {
            self.start = c.from;
            self.covered = true;
        } else if c.next <= self.next {
            return;
        }
        self.source.clone_from(&c.source);
        self.source_cluster.clone_from(&c.source_cluster);
        self.source_topic.clone_from(&c.source_topic);
        self.next = c.next;
        for &r in &c.runs {
            self.push(r);
        }
    }

    fn push(&mut self, r: Run) {
        push_run(&mut self.runs, r);
    }

    /// The target offset after the last copied record.
    pub fn target_end(&self) -> Option<i64> {
        self.runs.last().map(|r| r.1 + r.2)
    }

    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Where a consumer positioned at source offset `s` (next record to read) continues at the
    /// target without re-reading or skipping a copied record.
    pub fn translate(&self, s: i64) -> Translation {
        if s > self.next {
            return Translation::NotYet;
        }
        if s < self.start {
            return Translation::Before;
        }
        let i = self.runs.partition_point(|r| r.source_end() <= s);
        match self.runs.get(i) {
            Some(r) if r.0 <= s => Translation::At(r.1 + (s - r.0)),
            Some(r) => Translation::At(r.1),
            None => self
                .target_end()
                .map_or(Translation::NotYet, Translation::At),
        }
    }
}

/// Every target partition's map: (target topic, partition) → map.
pub type Maps = BTreeMap<(String, i32), PartitionMap>;

/// The checkpoint record key for a target partition.
pub fn key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

fn parse_key(k: &[u8]) -> Option<(String, i32)> {
    let k = std::str::from_utf8(k).ok()?;
    let (t, p) = k.rsplit_once('/')?;
    Some((t.to_string(), p.parse().ok()?))
}

/// Reads the whole checkpoint topic (partition 0) as a read_committed consumer. A missing topic
/// is an empty map.
pub async fn load(target: &Cluster, topic: &str) -> Result<Maps, ClusterError> {
    let mut maps = Maps::new();
    let meta = target.metadata(Some(&[topic.to_string()])).await?;
    let Some(tm) = meta.topics.get(topic) else {
        return Ok(maps);
    };
    let leader = tm.leaders.get(&0).copied();
    let mut offset = target
        .list_offsets(leader, topic, &[0], -2)
        .await?
        .get(&0)
        .copied()
        .unwrap_or(0);
    let end = target
        .stable_ends(leader, topic, &[0])
        .await?
        .get(&0)
        .copied()
        .unwrap_or(0);
    let mut bad = 0u64;
    while offset < end {
        let f = target
            .fetch_one(leader, topic, 0, offset, 4 << 20, true)
            .await?;
        let next = committed_batches(&f.records, &f.aborted, offset, |batch, _| {
            let r = trib_broker::log::batch::for_each_record(batch, |r| {
                if r.offset < offset {
                    return;
                }
                let parsed = r.key.and_then(parse_key).zip(
                    r.value
                        .and_then(|v| serde_json::from_slice::<Checkpoint>(v).ok()),
                );
                match parsed {
                    Some((k, c)) => maps.entry(k).or_default().apply(&c),
                    None => bad += 1,
                }
            });
            if r.is_err() {
                bad += 1;
            }
        });
        if next <= offset {
            // Nothing whole came back: the stable end moved under us or a batch is larger
            // than the fetch; stop rather than loop.
            return Err(ClusterError::Kafka {
                cluster: target.name.clone(),
                what: format!("reading checkpoint topic {topic} at {offset}"),
                code: -1,
                message: Some("no whole batch returned".into()),
            });
        }
        offset = next;
    }
    if bad > 0 {
        tracing::warn!(
            topic,
            records = bad,
            "checkpoint records that are not the mirror's were ignored"
        );
    }
    Ok(maps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(from: i64, next: i64, runs: &[(i64, i64, i64)]) -> Checkpoint {
        Checkpoint {
            source: "a".into(),
            source_cluster: "A".into(),
            source_topic: "t".into(),
            from,
            next,
            runs: runs.iter().map(|&(s, t, n)| Run(s, t, n)).collect(),
        }
    }

    #[test]
    fn translates_exactly_around_gaps() {
        let mut m = PartitionMap::default();
        // Source 10..20 to target 0..10, marker at 10; source 20..25 aborted; 25..30 to 11..16.
        m.apply(&cp(10, 20, &[(10, 0, 10)]));
        m.apply(&cp(20, 30, &[(25, 11, 5)]));
        m.apply(&cp(20, 30, &[(25, 11, 5)])); // a repeat changes nothing
        assert_eq!(m.runs(), 2);
        assert_eq!(m.translate(9), Translation::Before);
        assert_eq!(m.translate(10), Translation::At(0));
        assert_eq!(m.translate(15), Translation::At(5));
        assert_eq!(m.translate(20), Translation::At(11));
        assert_eq!(m.translate(27), Translation::At(13));
        assert_eq!(m.translate(30), Translation::At(16));
        assert_eq!(m.translate(31), Translation::NotYet);
        // Contiguous on both sides: one run.
        m.apply(&cp(30, 32, &[(30, 16, 2)]));
        assert_eq!(m.runs(), 2);
        assert_eq!(m.target_end(), Some(18));
        assert_eq!(
            parse_key(key("a.b-c", 3).as_bytes()),
            Some(("a.b-c".into(), 3))
        );
    }

    #[test]
    fn checkpoints_round_trip_as_json() {
        let c = cp(0, 5, &[(0, 7, 5)]);
        let j = serde_json::to_vec(&c).expect("encodes");
        assert_eq!(
            serde_json::from_slice::<Checkpoint>(&j).expect("decodes"),
            c
        );
    }
}
