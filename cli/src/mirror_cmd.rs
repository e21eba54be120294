//! `trib mirror --config mirror.yaml`: runs the mirror until Ctrl-C or SIGTERM;
//! `trib mirror status` prints each mirrored partition's lag; `trib mirror failover` promotes the
//! mirror topics at the target and prints where each consumer group stands (docs/mirror.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use trib_mirror::config::MirrorConfig;
use trib_pipelines::config::SourceConfig;

#[derive(Args)]
pub struct MirrorArgs {
    #[command(subcommand)]
    command: Option<MirrorCommand>,
    /// The mirror's YAML file, or a pipeline file with a `type: mirror` source.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// In a pipeline file: the mirror source to use (needed when it has more than one).
    #[arg(long, global = true)]
    mirror: Option<String>,
    /// Address of /metrics, /health and /status (overrides the file's `http`).
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
enum MirrorCommand {
    /// Each mirrored partition: source end, target end, lag in records and seconds.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Promote the mirror topics at the target for writes (all, or those named).
    Failover {
        /// Target topic to promote (repeat; default: every mirror topic of the file's sources).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// How long to wait for the target to catch up with sources that answer.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        wait: Duration,
        /// Also write the report (JSON) to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

pub async fn run(a: MirrorArgs) -> anyhow::Result<()> {
    let path = a.config.ok_or_else(|| {
        anyhow::anyhow!("give the mirror's file: trib mirror --config mirror.yaml")
    })?;
    let mut cfg = load(&path, a.mirror.as_deref())?;
    if a.http.is_some() {
        cfg.http = a.http;
    }
    match a.command {
        None => {
            let (tx, rx) = tokio::sync::watch::channel(false);
            let signal = crate::broker_cmd::shutdown_signal()?;
            tokio::spawn(async move {
                signal.await;
                tracing::info!("stopping the mirror");
                let _ = tx.send(true);
            });
            trib_mirror::run(cfg, rx).await?;
            Ok(())
        }
        Some(MirrorCommand::Status { json }) => {
            let st = trib_mirror::ops::status(&cfg).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
                return Ok(());
            }
            println!(
                "{:<12} {:<24} {:>5} {:>14} {:>14} {:>12} {:>10}  state",
                "source",
                "target topic",
                "part",
                "source end",
                "target end",
                "lag records",
                "lag s"
            );
            for s in st {
                println!(
                    "{:<12} {:<24} {:>5} {:>14} {:>14} {:>12} {:>10.1}  {}",
                    s.source,
                    s.target_topic,
                    s.partition,
                    s.source_end,
                    s.target_end,
                    s.lag_records,
                    s.lag_seconds,
                    if s.promoted { "promoted" } else { "mirroring" }
                );
            }
            Ok(())
        }
        Some(MirrorCommand::Failover {
            topics,
            wait,
            report,
        }) => {
            let r = trib_mirror::ops::failover(&cfg, &topics, wait).await?;
            let text = serde_json::to_string_pretty(&r)?;
            if let Some(p) = report {
                std::fs::write(&p, &text).with_context(|| format!("writing {}", p.display()))?;
            }
            println!("{text}");
            Ok(())
        }
    }
}

/// A mirror file, or a pipeline file's mirror source (`name`, or its only one).
fn load(path: &std::path::Path, name: Option<&str>) -> anyhow::Result<MirrorConfig> {
    let as_mirror = match trib_mirror::config::load(path) {
        Ok(c) if name.is_none() => return Ok(c),
        Ok(_) => None,
        Err(e) => Some(e),
    };
    let pipeline = trib_pipelines::config::load(path);
    let Ok(loaded) = pipeline else {
        // Neither: report it as the mirror file the command asked for.
        return Err(as_mirror.map_or_else(
            || anyhow::anyhow!("{}: not a pipeline file", path.display()),
            anyhow::Error::from,
        ));
    };
    let mirrors: Vec<(&String, &MirrorConfig)> = loaded
        .pipeline
        .sources
        .iter()
        .filter_map(|(n, s)| match s {
            SourceConfig::Mirror(m) => Some((n, m)),
            _ => None,
        })
        .collect();
    let names = || {
        mirrors
            .iter()
            .map(|(n, _)| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let found = match name {
        Some(want) => mirrors.iter().find(|(n, _)| n.as_str() == want),
        None if mirrors.len() == 1 => mirrors.first(),
        None => None,
    };
    match found {
        Some((_, m)) => {
            m.validate()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Ok((*m).clone())
        }
        None if mirrors.is_empty() => anyhow::bail!(
            "{}: no `type: mirror` source in this pipeline file",
            path.display()
        ),
        None => anyhow::bail!(
            "{}: choose the mirror with --mirror (this file has {})",
            path.display(),
            names()
        ),
    }
}
