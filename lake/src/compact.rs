//! `trib lake compact`: merges the small files of each Kafka partition in each hour folder into
//! large ones.
//!
//! Per folder and partition, the visible files (`layout::visible`) other than the partition's
//! newest roll (the sink may still be writing it) are merged in offset order, in groups of up to
//! `target_bytes`, into `p<partition>-o<first>-o<last>-c.parquet`. The moment that file is
//! stored it supersedes what it merged, so readers that list the lake afterwards read it and
//! skip the originals; the originals are removed only after `grace`, so a query that listed the
//! folder just before can still read them. Either way no record is seen twice or missed. Files
//! with different columns (schema evolution) merge into the union of their columns
//! (`schema::merge`). Superseded files an interrupted compaction left are removed by the next.
//!
//! Run one compaction at a time per lake.

use std::collections::HashMap;
use std::time::Duration;

use arrow_array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use crate::layout::{self, Kind, LakeFile};
use crate::parquet_file::writer_properties;
use crate::schema;
use crate::store::{LakeStore, Object};

/// What to compact and how.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Only this table (all when None).
    pub table: Option<String>,
    /// Merge files until the merged input reaches this size.
    pub target_bytes: u64,
    /// How long merged files stay after their merged file is stored.
    pub grace: Duration,
}

/// What a compaction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactReport {
    pub files_merged: usize,
    pub files_written: usize,
    pub rows: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Groups left alone because their columns could not be merged (logged).
    pub skipped: usize,
}

/// One group of files to merge into one.
struct Group {
    dir: String,
    files: Vec<(LakeFile, Object)>,
}

/// Compacts the lake; `progress` is told the input bytes as they are merged.
pub async fn compact(
    store: &LakeStore,
    opts: &CompactOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<CompactReport> {
    let listing = store.list(opts.table.as_deref().unwrap_or("")).await?;
    let groups = plan(&listing, opts.target_bytes);
    let total: u64 = groups
        .iter()
        .flat_map(|g| g.files.iter().map(|(_, o)| o.size))
        .sum();
    let mut report = CompactReport::default();
    let mut done = 0;
    // Files a compaction already superseded but did not get to remove go now too.
    let shown: std::collections::HashSet<&str> = layout::visible(&listing)
        .into_iter()
        .map(|o| o.key.as_str())
        .collect();
    let mut merged_away: Vec<String> = listing
        .iter()
        .filter(|o| !shown.contains(o.key.as_str()) && !o.key.ends_with(".tmp"))
        .map(|o| o.key.clone())
        .collect();
    for g in groups {
        let size: u64 = g.files.iter().map(|(_, o)| o.size).sum();
        match merge(store, &g).await {
            Ok((rows, bytes)) => {
                report.files_merged += g.files.len();
                report.files_written += 1;
                report.rows += rows;
                report.bytes_before += size;
                report.bytes_after += bytes;
                merged_away.extend(g.files.into_iter().map(|(_, o)| o.key));
            }
            Err(e) => {
                tracing::warn!(lake = %store.location(), folder = %g.dir, error = %e, "files not compacted");
                report.skipped += 1;
            }
        }
        done += size;
        progress(done, total);
    }
    if !merged_away.is_empty() {
        tokio::time::sleep(opts.grace).await;
    }
    for key in merged_away {
        store.delete(&key).await?;
    }
    Ok(report)
}

/// The groups to merge: per folder and partition, the visible files other than the newest
/// roll's, in offset order, cut at `target_bytes`; only groups of two files or more.
fn plan(listing: &[Object], target_bytes: u64) -> Vec<Group> {
    let held = layout::holdings(listing);
    let mut by_folder: HashMap<(String, i32), Vec<(LakeFile, Object)>> = HashMap::new();
    for o in layout::visible(listing) {
        let Some((table, dir, name)) = layout::split_key(&o.key) else {
            continue;
        };
        let Some(f) = LakeFile::parse(name) else {
            continue;
        };
        let newest = held.newest_roll.get(&(table.to_string(), f.partition));
        if matches!(f.kind, Kind::Roll { .. }) && newest.is_some_and(|n| f.first >= *n) {
            continue;
        }
        by_folder
            .entry((dir.to_string(), f.partition))
            .or_default()
            .push((f, o.clone()));
    }
    let mut groups = Vec::new();
    let mut keys: Vec<_> = by_folder.keys().cloned().collect();
    keys.sort();
    for k in keys {
        let Some(mut files) = by_folder.remove(&k) else {
            continue;
        };
        files.sort_by_key(|(f, _)| f.first);
        let mut current: Vec<(LakeFile, Object)> = Vec::new();
        let mut size = 0;
        for f in files {
            if !current.is_empty() && size + f.1.size > target_bytes {
                groups.push(Group {
                    dir: k.0.clone(),
                    files: std::mem::take(&mut current),
                });
                size = 0;
            }
            size += f.1.size;
            current.push(f);
        }
        groups.push(Group {
            dir: k.0.clone(),
            files: current,
        });
    }
    groups.retain(|g| g.files.len() >= 2);
    groups
}

/// Merges one group into its compacted file; returns its rows and size.
async fn merge(store: &LakeStore, g: &Group) -> anyhow::Result<(u64, u64)> {
    let mut inputs = Vec::with_capacity(g.files.len());
    for (_, o) in &g.files {
        inputs.push(store.get(&o.key).await?);
    }
    let (first, last) = g.files.iter().fold((i64::MAX, i64::MIN), |(a, b), (f, _)| {
        (a.min(f.first), b.max(f.last))
    });
    let partition = g.files[0].0.partition;
    let name = LakeFile {
        partition,
        first,
        last,
        kind: Kind::Compacted,
    }
    .name();
    let (bytes, rows) = tokio::task::spawn_blocking(move || rewrite(&inputs)).await??;
    let n = bytes.len() as u64;
    store
        .put(&format!("{}/{name}", g.dir), Bytes::from(bytes))
        .await?;
    Ok((rows, n))
}

/// The Parquet files as one, with the union of their columns.
fn rewrite(inputs: &[Bytes]) -> anyhow::Result<(Vec<u8>, u64)> {
    let mut schemas = Vec::with_capacity(inputs.len());
    for b in inputs {
        schemas.push(
            ParquetRecordBatchReaderBuilder::try_new(b.clone())?
                .schema()
                .clone(),
        );
    }
    let merged = std::sync::Arc::new(schema::merge(&schemas));
    let mut w = ArrowWriter::try_new(Vec::new(), merged.clone(), Some(writer_properties()))?;
    let mut rows = 0;
    for b in inputs {
        for batch in ParquetRecordBatchReaderBuilder::try_new(b.clone())?
            .with_batch_size(64 * 1024)
            .build()?
        {
            let batch: RecordBatch = schema::conform(&batch?, &merged)?;
            rows += batch.num_rows() as u64;
            w.write(&batch)?;
        }
    }
    Ok((w.into_inner()?, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::roll_file;
    use trib_pipelines::config::sinks::LakeMode;
    use trib_pipelines::event::Event;

    fn file_of(offsets: std::ops::Range<i64>) -> Bytes {
        let events: Vec<Event> = offsets
            .map(|o| {
                let mut e = Event::raw(format!(r#"{{"id":{o}}}"#));
                e.meta.partition = Some(0);
                e.meta.offset = Some(o);
                e
            })
            .collect();
        let enc = crate::parquet_file::Encoding {
            mode: LakeMode::Json,
            schema: Vec::new(),
        };
        Bytes::from(crate::parquet_file::encode(&events, &enc).unwrap().bytes)
    }

    #[tokio::test]
    async fn merges_and_removes_what_an_interrupted_compaction_left() {
        let d = tempfile::tempdir().unwrap();
        let store = LakeStore::open(&d.path().to_string_lossy(), &Default::default()).unwrap();
        let dir = "t/date=2024-01-01/hour=00";
        let put = |f: LakeFile, r: std::ops::Range<i64>| {
            let store = store.clone();
            async move {
                store
                    .put(&format!("{dir}/{}", f.name()), file_of(r))
                    .await
                    .unwrap()
            }
        };
        // A compaction stored p0 0..=19 and was stopped before removing its two inputs.
        put(roll_file(0, 0, 9, 0, 1), 0..10).await;
        put(roll_file(0, 10, 19, 0, 1), 10..20).await;
        let merged = LakeFile {
            kind: Kind::Compacted,
            ..roll_file(0, 0, 19, 0, 1)
        };
        put(merged, 0..20).await;
        put(roll_file(0, 20, 29, 0, 1), 20..30).await;
        put(roll_file(0, 30, 39, 0, 1), 30..40).await;
        // The newest roll stays as it is.
        put(roll_file(0, 40, 49, 0, 1), 40..50).await;
        let opts = CompactOptions {
            table: None,
            target_bytes: 1 << 30,
            grace: Duration::ZERO,
        };
        let r = compact(&store, &opts, &|_, _| {}).await.unwrap();
        assert_eq!(
            (r.files_merged, r.files_written, r.rows),
            (3, 1, 40),
            "{r:?}"
        );
        let names: Vec<String> = store
            .list("t")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key.rsplit('/').next().unwrap().to_string())
            .collect();
        let compacted = LakeFile {
            kind: Kind::Compacted,
            ..roll_file(0, 0, 39, 0, 1)
        };
        assert_eq!(names, [compacted.name(), roll_file(0, 40, 49, 0, 1).name()]);
    }

    #[test]
    fn plans_groups_per_folder_and_partition_and_leaves_the_newest_roll() {
        let at = |d: &str, f: LakeFile, size| Object {
            key: format!("t/{d}/{}", f.name()),
            size,
        };
        let listing = vec![
            at("date=2024-01-01/hour=00", roll_file(0, 0, 9, 0, 1), 10),
            at("date=2024-01-01/hour=00", roll_file(0, 10, 19, 0, 2), 10),
            at("date=2024-01-01/hour=01", roll_file(0, 10, 19, 1, 2), 10),
            at("date=2024-01-01/hour=00", roll_file(0, 20, 29, 0, 1), 10),
            at("date=2024-01-01/hour=00", roll_file(0, 30, 39, 0, 1), 10),
            // The newest roll of partition 0.
            at("date=2024-01-01/hour=00", roll_file(0, 40, 49, 0, 1), 10),
            // Partition 1 has one file besides its newest roll: nothing to merge.
            at("date=2024-01-01/hour=00", roll_file(1, 0, 9, 0, 1), 10),
            at("date=2024-01-01/hour=00", roll_file(1, 10, 19, 0, 1), 10),
        ];
        let g = plan(&listing, 25);
        let firsts: Vec<Vec<i64>> = g
            .iter()
            .map(|g| g.files.iter().map(|(f, _)| f.first).collect())
            .collect();
        assert_eq!(firsts, [vec![0, 10], vec![20, 30]]);
        assert!(g.iter().all(|g| g.dir == "t/date=2024-01-01/hour=00"));
    }
}
