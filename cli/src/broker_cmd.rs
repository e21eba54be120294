//! `trib broker`: builds the broker config from the file and flags and runs the server until
//! Ctrl-C or SIGTERM, then stops cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use trib_broker::config::BrokerConfig;
use trib_broker::topic_config::FlushPolicy;

#[derive(Args)]
pub struct BrokerArgs {
    /// YAML config file (see docs/broker-config.md); flags override it.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Address to listen on for Kafka clients [default: 127.0.0.1:9092].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// host:port handed to clients in Metadata [default: the listen address].
    #[arg(long)]
    advertised: Option<String>,
    /// Data folder [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Node id [default: 1].
    #[arg(long)]
    node_id: Option<i32>,
    /// Partitions of auto-created topics [default: 1].
    #[arg(long)]
    num_partitions: Option<i32>,
    /// Flush policy: os (ack after the OS write) or fsync (ack after fsync, group commit).
    #[arg(long, value_parser = parse_flush)]
    flush: Option<FlushPolicy>,
    /// Default retention in milliseconds (-1: forever).
    #[arg(long)]
    retention_ms: Option<i64>,
    /// Default segment size in bytes.
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// Address of the /metrics and /health endpoint [default: 127.0.0.1:9644].
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Do not serve /metrics and /health.
    #[arg(long)]
    no_http: bool,
    /// How often retention runs, in milliseconds.
    #[arg(long)]
    retention_check_interval_ms: Option<u64>,
    /// Refuse mirror topics and offset-preserving mirror writes, so `trib mirror` translates
    /// offsets as it would for any other Kafka cluster.
    #[arg(long)]
    no_mirror_writes: bool,
}

fn parse_flush(s: &str) -> Result<FlushPolicy, String> {
    match s {
        "os" => Ok(FlushPolicy::Os),
        "fsync" => Ok(FlushPolicy::Fsync),
        _ => Err(format!("`{s}` is not a flush policy: use os or fsync")),
    }
}

pub fn build_config(a: &BrokerArgs) -> anyhow::Result<BrokerConfig> {
    let mut c = match &a.config {
        Some(p) => BrokerConfig::from_yaml_file(p).map_err(anyhow::Error::msg)?,
        None => BrokerConfig::default(),
    };
    if let Some(v) = a.listen {
        c.listen = v;
    }
    if let Some(v) = &a.advertised {
        c.advertised = Some(v.clone());
    }
    if let Some(v) = &a.data_dir {
        c.data_dir = v.clone();
    }
    if let Some(v) = a.node_id {
        c.node_id = v;
    }
    if let Some(v) = a.num_partitions {
        c.num_partitions = v;
    }
    if let Some(v) = a.flush {
        c.log.flush = v;
    }
    if let Some(v) = a.retention_ms {
        c.log.retention_ms = v;
    }
    if let Some(v) = a.segment_bytes {
        c.log.segment_bytes = v;
    }
    if a.no_mirror_writes {
        c.mirror_writes = false;
    }
    if let Some(v) = a.retention_check_interval_ms {
        c.retention_check_interval_ms = v;
    }
    if a.http.is_some() {
        c.http = a.http;
    }
    if a.no_http {
        c.http = None;
    }
    c.validate()?;
    Ok(c)
}

pub async fn run(a: BrokerArgs) -> anyhow::Result<()> {
    let config = build_config(&a)?;
    // Listen for SIGTERM/Ctrl-C from the start, so a stop during recovery still ends cleanly.
    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let started = std::time::Instant::now();
    let (broker, truncations) = trib_broker::broker::Broker::open(config.clone())
        .with_context(|| format!("cannot open data folder {}", config.data_dir.display()))?;
    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        topics = broker.topics.list().len(),
        truncated_segments = truncations.len(),
        recovery_ms = started.elapsed().as_millis() as u64,
        "broker ready"
    );
    trib_broker::server::run(broker, listener, shutdown).await?;
    Ok(())
}

/// Registers the SIGTERM and SIGINT handlers now and returns a future that resolves on either.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
