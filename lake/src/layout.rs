//! Where things go in the lake: `<root>/<table>/date=YYYY-MM-DD/hour=HH/<file>.parquet`.
//!
//! The records of one Kafka partition are written in *rolls*: all the events of the partition
//! taken since the last roll, one file per time partition they fall in, named
//! `p<partition>-o<first>-o<last>-<i>of<n>.parquet` (offsets of the whole roll, zero-padded so
//! names sort). A roll is in the lake when all its `n` files are; at start, the files of an
//! incomplete roll (a crash in the middle of one) are removed, and the highest offset of the
//! complete rolls is where the export resumes, so every record ends up in the lake exactly once.
//! Files of events not read from Kafka are named after the time and a counter (at least once).
//! Files are written under a `.tmp` name and renamed, so readers never see a partial file;
//! leftover `.tmp` files are removed at start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use trib_pipelines::event::civil_utc;

/// The Hive partition folder of an event time.
pub fn partition_dir(root: &Path, table: &str, timestamp_ms: i64) -> PathBuf {
    let (y, m, d, h, _, _) = civil_utc(timestamp_ms.div_euclid(1000));
    root.join(table)
        .join(format!("date={y:04}-{m:02}-{d:02}"))
        .join(format!("hour={h:02}"))
}

/// One file of a roll of a Kafka partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RollFile {
    pub partition: i32,
    pub first: i64,
    pub last: i64,
    pub index: usize,
    pub count: usize,
}

impl RollFile {
    pub fn name(&self) -> String {
        format!(
            "p{:05}-o{:020}-o{:020}-{}of{}.parquet",
            self.partition, self.first, self.last, self.index, self.count
        )
    }

    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_suffix(".parquet")?.strip_prefix('p')?;
        let mut parts = rest.split('-');
        let partition = parts.next()?.parse().ok()?;
        let first = parts.next()?.strip_prefix('o')?.parse().ok()?;
        let last = parts.next()?.strip_prefix('o')?.parse().ok()?;
        let (i, n) = parts.next()?.split_once("of")?;
        let f = Self {
            partition,
            first,
            last,
            index: i.parse().ok()?,
            count: n.parse().ok()?,
        };
        (parts.next().is_none() && f.index < f.count).then_some(f)
    }
}

/// The highest offset already in the lake for each (table, partition), from the names of the
/// complete rolls; removes the files of incomplete rolls and `.tmp` files left by a crash.
pub fn committed_offsets(root: &Path) -> std::io::Result<HashMap<(String, i32), i64>> {
    let mut out = HashMap::new();
    if !root.exists() {
        return Ok(out);
    }
    for table in std::fs::read_dir(root)? {
        let table = table?;
        if !table.file_type()?.is_dir() {
            continue;
        }
        let name = table.file_name().to_string_lossy().into_owned();
        let mut rolls: HashMap<(i32, i64, i64, usize), Vec<PathBuf>> = HashMap::new();
        walk(&table.path(), &mut |file: &Path| {
            let Some(fname) = file.file_name().map(|f| f.to_string_lossy().into_owned()) else {
                return Ok(());
            };
            if fname.ends_with(".tmp") {
                tracing::info!(file = %file.display(), "removing a partial lake file left by a crash");
                return std::fs::remove_file(file);
            }
            if let Some(f) = RollFile::parse(&fname) {
                rolls
                    .entry((f.partition, f.first, f.last, f.count))
                    .or_default()
                    .push(file.to_path_buf());
            }
            Ok(())
        })?;
        for ((p, _, last, count), files) in rolls {
            if files.len() == count {
                let e = out.entry((name.clone(), p)).or_insert(last);
                *e = (*e).max(last);
            } else {
                for f in files {
                    tracing::info!(file = %f.display(), "removing a file of an incomplete roll left by a crash");
                    std::fs::remove_file(f)?;
                }
            }
        }
    }
    Ok(out)
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path) -> std::io::Result<()>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), f)?;
        } else {
            f(&entry.path())?;
        }
    }
    Ok(())
}

/// Writes `bytes` as `dir/name` whole: a temporary file, fsync, rename, folder fsync.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    trib_pipelines::state_file::write_atomic(dir, name, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_offsets_and_the_lake_says_what_it_holds() {
        let f = |p, first, last, index, count| RollFile {
            partition: p,
            first,
            last,
            index,
            count,
        };
        let n = f(3, 100, 199, 1, 2).name();
        assert_eq!(RollFile::parse(&n), Some(f(3, 100, 199, 1, 2)));
        assert_eq!(RollFile::parse("t-123.parquet"), None);
        let d = tempfile::tempdir().unwrap();
        let dir = partition_dir(d.path(), "web", 1_700_000_000_000);
        let other = partition_dir(d.path(), "web", 1_700_000_000_000 + 3_600_000);
        assert!(
            dir.ends_with("web/date=2023-11-14/hour=22"),
            "{}",
            dir.display()
        );
        write_file(&dir, &f(0, 0, 99, 0, 1).name(), b"x").unwrap();
        // A roll over two hours, complete.
        write_file(&dir, &f(0, 100, 149, 0, 2).name(), b"x").unwrap();
        write_file(&other, &f(0, 100, 149, 1, 2).name(), b"x").unwrap();
        // A roll cut short by a crash: one of its two files.
        write_file(&dir, &f(0, 150, 180, 0, 2).name(), b"x").unwrap();
        write_file(&dir, &f(2, 0, 9, 0, 1).name(), b"x").unwrap();
        std::fs::write(dir.join("p00000-o1-o2.parquet.tmp"), b"partial").unwrap();
        let c = committed_offsets(d.path()).unwrap();
        assert_eq!(c.get(&("web".to_string(), 0)), Some(&149));
        assert_eq!(c.get(&("web".to_string(), 2)), Some(&9));
        assert!(
            !dir.join(f(0, 150, 180, 0, 2).name()).exists(),
            "incomplete rolls are removed"
        );
        assert!(
            !dir.join("p00000-o1-o2.parquet.tmp").exists(),
            "partial files are removed"
        );
    }
}
