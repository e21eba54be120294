//! Where things go in the lake: `<table>/date=YYYY-MM-DD/hour=HH/<file>.parquet` (keys relative
//! to the lake's root, `store`), and what a listing of the lake says it holds.
//!
//! The records of one Kafka partition are written in *rolls*: all the events of the partition
//! taken since the last roll, one file per hour they fall in, named
//! `p<partition>-o<first>-o<last>-<i>of<n>.parquet` (offsets of the whole roll, zero-padded so
//! names sort). A roll is in the lake when all its `n` files are (or compaction merged them).
//! Rolls of a partition are written one after the other, so only the newest can be incomplete (a crash in the middle of
//! it): at start its files are removed, and the highest offset of the rest is where the export
//! resumes, so every record ends up in the lake exactly once. A retried upload has the same name
//! and overwrites the same object.
//!
//! Compaction (`compact`) merges the files of one partition in one hour folder into
//! `p<partition>-o<first>-o<last>-c.parquet` (the lowest first and highest last offset of what it
//! merged) and then removes them. A file is *superseded* while a compacted file of the same
//! partition in the same folder covers its offsets; readers (`visible`) skip superseded files,
//! so a query sees every record once during a compaction too.
//!
//! Files of events not read from Kafka are named after the time and a counter (at least once).
//! `.tmp` files are local writes cut short; they are removed at start.

use std::collections::HashMap;

use trib_pipelines::event::civil_utc;

use crate::store::Object;

/// The key prefix (Hive partition folder) of an event time.
pub fn partition_dir(table: &str, timestamp_ms: i64) -> String {
    let (y, m, d, h, _, _) = civil_utc(timestamp_ms.div_euclid(1000));
    format!("{table}/date={y:04}-{m:02}-{d:02}/hour={h:02}")
}

/// What kind of Kafka file a name says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// File `index` of the `count` files of a roll.
    Roll { index: usize, count: usize },
    /// Files merged by compaction.
    Compacted,
}

/// A lake file of a Kafka partition, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LakeFile {
    pub partition: i32,
    pub first: i64,
    pub last: i64,
    pub kind: Kind,
}

/// A roll file (the sink's name for a new file).
pub fn roll_file(partition: i32, first: i64, last: i64, index: usize, count: usize) -> LakeFile {
    LakeFile {
        partition,
        first,
        last,
        kind: Kind::Roll { index, count },
    }
}

impl LakeFile {
    pub fn name(&self) -> String {
        let tail = match self.kind {
            Kind::Roll { index, count } => format!("{index}of{count}"),
            Kind::Compacted => "c".to_string(),
        };
        format!(
            "p{:05}-o{:020}-o{:020}-{tail}.parquet",
            self.partition, self.first, self.last
        )
    }

    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_suffix(".parquet")?.strip_prefix('p')?;
        let mut parts = rest.split('-');
        let partition = parts.next()?.parse().ok()?;
        let first = parts.next()?.strip_prefix('o')?.parse().ok()?;
        let last = parts.next()?.strip_prefix('o')?.parse().ok()?;
        let kind = match parts.next()? {
            "c" => Kind::Compacted,
            t => {
                let (i, n) = t.split_once("of")?;
                let (index, count) = (i.parse().ok()?, n.parse().ok()?);
                if index >= count {
                    return None;
                }
                Kind::Roll { index, count }
            }
        };
        (parts.next().is_none() && first <= last).then_some(Self {
            partition,
            first,
            last,
            kind,
        })
    }

    /// Whether this file's offsets lie within `other`'s (same partition).
    pub fn within(&self, other: &LakeFile) -> bool {
        self.partition == other.partition && other.first <= self.first && self.last <= other.last
    }
}

/// A key split into its table, folder and file name.
pub fn split_key(key: &str) -> Option<(&str, &str, &str)> {
    let (dir, name) = key.rsplit_once('/')?;
    let table = dir.split('/').next()?;
    Some((table, dir, name))
}

/// What a listing of the lake says.
#[derive(Debug, Default)]
pub struct Holdings {
    /// The highest offset in the lake per (table, partition).
    pub committed: HashMap<(String, i32), i64>,
    /// Objects left by a crash: `.tmp` files and the files of incomplete newest rolls.
    pub leftovers: Vec<String>,
    /// The newest roll of each (table, partition): its first offset (compaction leaves it).
    pub newest_roll: HashMap<(String, i32), i64>,
}

/// Reads a listing of the lake: where each partition's export resumes and what a crash left.
pub fn holdings(objects: &[Object]) -> Holdings {
    let mut h = Holdings::default();
    // Per (table, partition): every file, and the parts of each roll.
    type Rolls = HashMap<(i64, i64, usize), Vec<String>>;
    let mut files: HashMap<(String, i32), (Vec<LakeFile>, Rolls)> = HashMap::new();
    for o in objects {
        let Some((table, _, name)) = split_key(&o.key) else {
            continue;
        };
        if name.ends_with(".tmp") {
            h.leftovers.push(o.key.clone());
            continue;
        }
        let Some(f) = LakeFile::parse(name) else {
            continue;
        };
        let e = files.entry((table.to_string(), f.partition)).or_default();
        e.0.push(f);
        if let Kind::Roll { count, .. } = f.kind {
            e.1.entry((f.first, f.last, count))
                .or_default()
                .push(o.key.clone());
        }
    }
    for (tp, (all, rolls)) in files {
        let newest = rolls.iter().max_by_key(|((first, _, _), _)| *first);
        let mut incomplete = None;
        if let Some(((first, last, count), keys)) = newest {
            h.newest_roll.insert(tp.clone(), *first);
            // Parts merged by compaction are gone from their roll; compaction only merges
            // rolls that were whole, so a roll it covers is whole.
            let merged = all
                .iter()
                .any(|c| c.kind == Kind::Compacted && c.first <= *first && *last <= c.last);
            if keys.len() < *count && !merged {
                incomplete = Some((*first, *last));
                h.leftovers.extend(keys.iter().cloned());
            }
        }
        let top = all
            .iter()
            .filter(|f| {
                !(matches!(f.kind, Kind::Roll { .. }) && Some((f.first, f.last)) == incomplete)
            })
            .map(|f| f.last)
            .max();
        if let Some(top) = top {
            h.committed.insert(tp, top);
        }
    }
    h.leftovers.sort();
    h
}

/// The objects a reader should see: not `.tmp`, not superseded by a compacted file in the same
/// folder. Keeps the input order.
pub fn visible(objects: &[Object]) -> Vec<&Object> {
    let mut compacted: HashMap<&str, Vec<LakeFile>> = HashMap::new();
    for o in objects {
        if let Some((_, dir, name)) = split_key(&o.key) {
            if let Some(f) = LakeFile::parse(name).filter(|f| f.kind == Kind::Compacted) {
                compacted.entry(dir).or_default().push(f);
            }
        }
    }
    objects
        .iter()
        .filter(|o| {
            let Some((_, dir, name)) = split_key(&o.key) else {
                return true;
            };
            if name.ends_with(".tmp") {
                return false;
            }
            let Some(f) = LakeFile::parse(name) else {
                return true;
            };
            !compacted
                .get(dir)
                .is_some_and(|cs| cs.iter().any(|c| *c != f && f.within(c)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: String) -> Object {
        Object { key, size: 1 }
    }

    #[test]
    fn names_carry_offsets_and_the_lake_says_what_it_holds() {
        let n = roll_file(3, 100, 199, 1, 2).name();
        assert_eq!(LakeFile::parse(&n), Some(roll_file(3, 100, 199, 1, 2)));
        assert_eq!(LakeFile::parse("t-123.parquet"), None);
        let c = LakeFile {
            kind: Kind::Compacted,
            ..roll_file(3, 0, 199, 0, 1)
        };
        assert_eq!(LakeFile::parse(&c.name()), Some(c));
        let dir = partition_dir("web", 1_700_000_000_000);
        let other = partition_dir("web", 1_700_000_000_000 + 3_600_000);
        assert_eq!(dir, "web/date=2023-11-14/hour=22");
        let at = |d: &str, f: LakeFile| obj(format!("{d}/{}", f.name()));
        let listing = vec![
            at(&dir, roll_file(0, 0, 99, 0, 1)),
            // A roll over two hours, complete.
            at(&dir, roll_file(0, 100, 149, 0, 2)),
            at(&other, roll_file(0, 100, 149, 1, 2)),
            // The newest roll, cut short by a crash: one of its two files.
            at(&dir, roll_file(0, 150, 180, 0, 2)),
            at(&dir, roll_file(2, 0, 9, 0, 1)),
            obj(format!("{dir}/p00000-o1-o2.parquet.tmp")),
        ];
        let h = holdings(&listing);
        assert_eq!(h.committed.get(&("web".to_string(), 0)), Some(&149));
        assert_eq!(h.committed.get(&("web".to_string(), 2)), Some(&9));
        assert_eq!(
            h.leftovers,
            [
                format!("{dir}/{}", roll_file(0, 150, 180, 0, 2).name()),
                format!("{dir}/p00000-o1-o2.parquet.tmp"),
            ]
        );
        assert_eq!(h.newest_roll.get(&("web".to_string(), 0)), Some(&150));
    }

    #[test]
    fn compacted_files_supersede_what_they_merged_and_count_as_held() {
        let dir = partition_dir("web", 0);
        let other = partition_dir("web", 3_600_000);
        let at = |d: &str, f: LakeFile| obj(format!("{d}/{}", f.name()));
        let merged = LakeFile {
            kind: Kind::Compacted,
            ..roll_file(0, 0, 149, 0, 1)
        };
        let listing = vec![
            // Compaction wrote the merged file and has not removed the parts yet.
            at(&dir, roll_file(0, 0, 99, 0, 1)),
            at(&dir, roll_file(0, 100, 149, 0, 2)),
            at(&dir, merged),
            // The other part of the second roll, in another folder: not superseded.
            at(&other, roll_file(0, 100, 149, 1, 2)),
            at(&dir, roll_file(0, 150, 160, 0, 1)),
            at(&dir, roll_file(1, 0, 10, 0, 1)),
        ];
        let v: Vec<&str> = visible(&listing).iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            v,
            [
                listing[2].key.as_str(),
                &listing[3].key,
                &listing[4].key,
                &listing[5].key
            ]
        );
        // After compaction removed the parts, the roll of two files is no longer whole, but it
        // is not the newest, so nothing is lost or redone.
        let after: Vec<Object> = listing.into_iter().skip(2).collect();
        let h = holdings(&after);
        assert_eq!(h.committed.get(&("web".to_string(), 0)), Some(&160));
        assert!(h.leftovers.is_empty(), "{:?}", h.leftovers);
        // Even when that roll is the newest (the rolls after it lost to a crash), it is whole.
        let h = holdings(&after[..2]);
        assert_eq!(h.committed.get(&("web".to_string(), 0)), Some(&149));
        assert!(h.leftovers.is_empty(), "{:?}", h.leftovers);
    }
}
