//! `trib mirror --config mirror.yaml`: runs the mirror until Ctrl-C or SIGTERM;
//! `trib mirror status` prints each mirrored partition's lag; `trib mirror failover` promotes the
//! mirror topics at the target and prints where each consumer group stands (docs/mirror.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use trib_mirror::config::MirrorConfig;

#[derive(Args)]
pub struct MirrorArgs {
    #[command(subcommand)]
    command: Option<MirrorCommand>,
    /// The mirror's YAML file.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
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
    let mut cfg = MirrorConfig::load(&path)?;
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
