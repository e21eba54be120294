//! `trib lake export` (a one-shot export of a topic range into the lake, exactly once: a rerun
//! or a run after a crash resumes from what the lake holds) and `trib lake compact`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use trib_pipelines::config::sinks::{LakeMode, LakeSink};

use crate::client::{parse_kv, parse_time_ms, ClientArgs};
use crate::lake_read::{At, Chunk, Span, TopicReader, READ_AHEAD};

#[derive(Subcommand)]
pub enum LakeCommand {
    /// Export a topic (or a range of it) into the lake, once, and exit.
    Export(ExportArgs),
    /// Merge the small files of each partition and hour into large ones.
    Compact(CompactArgs),
}

/// Where the lake is.
#[derive(Args, Clone)]
pub struct LakeArgs {
    /// The lake: a folder or an object store URL (s3://bucket/prefix, gs://…, az://…).
    #[arg(long, default_value = "./trib-data/lake")]
    pub path: String,
    /// Object store setting as key=value (repeatable), e.g. aws_endpoint=http://127.0.0.1:9000.
    #[arg(long = "storage-option", value_name = "KEY=VALUE")]
    pub storage_options: Vec<String>,
}

impl LakeArgs {
    pub fn options(&self) -> anyhow::Result<BTreeMap<String, String>> {
        self.storage_options
            .iter()
            .map(|kv| parse_kv(kv, "--storage-option"))
            .collect()
    }

    pub fn open(&self) -> anyhow::Result<trib_lake::LakeStore> {
        Ok(trib_lake::LakeStore::open(&self.path, &self.options()?)?)
    }
}

#[derive(Args)]
pub struct ExportArgs {
    /// The topic (its table in the lake has its name).
    topic: String,
    /// Only these partitions (comma separated; default: all).
    #[arg(long, value_delimiter = ',')]
    partitions: Vec<i32>,
    /// Start at this offset (default: the beginning, or where the lake's copy ends).
    #[arg(long, conflicts_with = "from_time")]
    from_offset: Option<i64>,
    /// Start at the first record at or after this time (epoch ms or RFC 3339).
    #[arg(long)]
    from_time: Option<String>,
    /// Stop before this offset (default: the end of each partition when the export starts).
    #[arg(long, conflicts_with = "to_time")]
    to_offset: Option<i64>,
    /// Stop at the first record after this time (epoch ms or RFC 3339).
    #[arg(long)]
    to_time: Option<String>,
    /// json: the values' fields as columns; raw: key, value, headers, timestamp, … columns.
    #[arg(long, default_value = "json")]
    mode: String,
    /// Rows per file at most.
    #[arg(long, default_value_t = 1_000_000)]
    roll_rows: usize,
    /// Bytes of values per file at most (32 MiB measured fastest: larger rolls cost page
    /// faults; `trib lake compact` merges files later).
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    roll_bytes: usize,
    #[command(flatten)]
    lake: LakeArgs,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct CompactArgs {
    /// Only this table.
    #[arg(long)]
    table: Option<String>,
    /// Merge files until the merged input reaches this many MiB.
    #[arg(long, default_value_t = 256)]
    target_mb: u64,
    /// Keep merged files this many milliseconds after their replacement is stored, for
    /// queries that listed the folder just before.
    #[arg(long, default_value_t = 10_000)]
    grace_ms: u64,
    #[command(flatten)]
    lake: LakeArgs,
}

pub async fn run(c: LakeCommand) -> anyhow::Result<()> {
    match c {
        LakeCommand::Export(a) => export(a).await,
        LakeCommand::Compact(a) => compact(a).await,
    }
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    let template = format!(
        "{what} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} ({{per_sec}}, eta {{eta}})"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        pb.set_style(style);
    }
    pb
}

async fn compact(a: CompactArgs) -> anyhow::Result<()> {
    let store = a.lake.open()?;
    let pb = bar(0, "compacting (bytes)");
    let opts = trib_lake::compact::CompactOptions {
        table: a.table,
        target_bytes: a.target_mb.max(1) * 1024 * 1024,
        grace: Duration::from_millis(a.grace_ms),
    };
    let p = pb.clone();
    let r = trib_lake::compact::compact(&store, &opts, &move |done, total| {
        p.set_length(total);
        p.set_position(done);
    })
    .await?;
    pb.finish_and_clear();
    println!(
        "compacted {} files into {} ({} rows, {} -> {} bytes){}",
        r.files_merged,
        r.files_written,
        r.rows,
        r.bytes_before,
        r.bytes_after,
        if r.skipped > 0 {
            format!("; {} groups left alone (see the log)", r.skipped)
        } else {
            String::new()
        }
    );
    Ok(())
}

async fn export(a: ExportArgs) -> anyhow::Result<()> {
    let mode = match a.mode.as_str() {
        "json" => LakeMode::Json,
        "raw" => LakeMode::Raw,
        m => bail!("--mode `{m}`: json or raw"),
    };
    if let Some(x) = a.client.extra.first() {
        bail!("-X `{x}`: `trib lake export` reads with Tributary's native client (plaintext), which takes no librdkafka settings");
    }
    let cfg = LakeSink {
        kind: "lake".into(),
        buffer: None,
        inputs: Vec::new(),
        path: a.lake.path.clone(),
        storage_options: a.lake.options()?,
        table: a.topic.clone(),
        mode,
        schema: Vec::new(),
        roll_rows: a.roll_rows,
        roll_bytes: a.roll_bytes,
        roll_age_ms: u64::MAX / 4,
    };
    let metrics = trib_pipelines::metrics::ComponentMetrics::default();
    let mut writer = trib_lake::LakeWriter::open(&cfg, metrics.clone()).await?;
    let reader = TopicReader::connect(&a.client.brokers, &a.topic).await?;
    let parts = reader.partitions(&a.partitions).context("--partitions")?;
    let from_time = a
        .from_time
        .as_deref()
        .map(|t| parse_time_ms(t, "--from-time"))
        .transpose()?;
    let to_time = a
        .to_time
        .as_deref()
        .map(|t| parse_time_ms(t, "--to-time"))
        .transpose()?;
    // Each partition's range, from the broker's offsets and what the lake already holds. A
    // read_committed read ends at the last stable offset: records of transactions still open
    // are left for the next export.
    let lows = reader.offsets(&parts, At::LogStart).await?;
    let highs = reader.offsets(&parts, At::StableEnd).await?;
    let at_time = match from_time {
        Some(ms) => Some(reader.offsets(&parts, At::Time(ms)).await?),
        None => None,
    };
    let mut spans = Vec::with_capacity(parts.len());
    for &p in &parts {
        let (low, high) = (
            lows.get(&p).copied().unwrap_or(0),
            highs.get(&p).copied().unwrap_or(0),
        );
        let mut start = a.from_offset.unwrap_or(low).max(low);
        if let Some(found) = &at_time {
            start = match found.get(&p) {
                Some(&o) if o >= 0 => o,
                _ => high,
            };
        }
        if let Some(held) = writer.committed(&a.topic, p) {
            start = start.max(held + 1);
        }
        let end = a.to_offset.map_or(high, |o| o.min(high));
        spans.push(Span {
            partition: p,
            start,
            end,
        });
    }
    let total: u64 = spans.iter().map(|s| (s.end - s.start).max(0) as u64).sum();
    if total == 0 {
        println!(
            "nothing to export: the lake holds {} up to the end",
            a.topic
        );
        return Ok(());
    }
    let pb = bar(total, "exporting (records)");
    // The reader fetches ahead of the writer by a few fetches.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(READ_AHEAD);
    let reading =
        tokio::spawn(async move { reader.read(spans, to_time, "lake-export".into(), tx).await });
    let mut exported = 0u64;
    while let Some(chunk) = rx.recv().await {
        match chunk {
            Chunk::Events(batch) => {
                exported += batch.len() as u64;
                pb.inc(batch.len() as u64);
                for e in batch {
                    writer.push(e).await;
                }
            }
            Chunk::End(p) => writer.roll_partition(&a.topic, p).await,
        }
    }
    writer.finish().await;
    pb.finish_and_clear();
    reading.await??;
    // A roll that could not be encoded is logged and not in the lake; say so rather than exit
    // as if all were exported.
    let failed = metrics.errors.get();
    if failed > 0 {
        bail!("{failed} records could not be written to the lake (see the log)");
    }
    println!(
        "exported {exported} records of {} into {}",
        a.topic, a.lake.path
    );
    Ok(())
}
