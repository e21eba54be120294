//! Tributary's mirror: topics copied from one or more source clusters to a target cluster, in
//! the same partitions at the same offsets (offset-preserving mode, for Tributary targets) or
//! re-produced in transactions with an exact offset map (translating mode, any target), with
//! topic configs, partition counts, log starts and consumer group offsets kept in step, lag
//! metrics, and failover (promoting mirror topics for writes). docs/mirror.md is the guide.
//!
//! - `config`: the YAML file (types shared with the pipeline source).
//! - `cluster`: the wire client for one cluster (Metadata, admin calls, connection pool).
//! - `link`: one source: the sync step and the offset-preserving copy loop.
//! - `translate`: translating mode's copy loop (re-encoded records, one transaction per round).
//! - `committed`: read_committed filtering of fetched batches.
//! - `offset_map`: the exact offset map and its checkpoint topic.
//! - `txn_producer`: the transactional producer at the target.
//! - `groups`: consumer group offsets carried over.
//! - `ops`: `status` and `failover`, run from the command line.
//! - `pipeline`: the mirror as a `type: mirror` pipeline source.
//! - `metrics`: Prometheus metrics and the HTTP endpoint.
//! - `throttle`: the bandwidth limit.

pub mod cluster;
pub mod committed;
pub mod config;
pub mod groups;
pub mod link;
pub mod metrics;
pub mod offset_map;
pub mod ops;
pub mod pipeline;
pub mod throttle;
pub mod translate;
pub mod txn_producer;

use std::sync::Arc;

use tokio::sync::watch;
use trib_broker::handlers::configs::MIRROR_WRITES_KEY;

use crate::cluster::{Cluster, ClusterError};
use crate::config::{broker_list, MirrorConfig, Mode};
use crate::metrics::Metrics;

/// Why the mirror cannot run.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Mode(String),
}

/// The target cluster as the mirror connects to it.
pub fn target_cluster(cfg: &MirrorConfig) -> Arc<Cluster> {
    Arc::new(Cluster::new("target", broker_list(&cfg.target.brokers)))
}

/// Decides the mode: offset-preserving when the target accepts mirror writes, else translating.
pub async fn resolve_mode(cfg: &MirrorConfig, target: &Cluster) -> Result<Mode, MirrorError> {
    let meta = target.metadata(Some(&[])).await?;
    let node = meta.brokers.first().copied().unwrap_or(0);
    let value = target.broker_config(node, MIRROR_WRITES_KEY).await?;
    tracing::debug!(node, ?value, "target broker config {MIRROR_WRITES_KEY}");
    let accepts = value.as_deref() == Some("true");
    match (cfg.mode, accepts) {
        (Mode::Auto | Mode::Preserve, true) => Ok(Mode::Preserve),
        (Mode::Preserve, false) => Err(MirrorError::Mode(format!(
            "mode: preserve needs a Tributary target with mirror writes on; {} does not report {MIRROR_WRITES_KEY}=true",
            cfg.target.brokers
        ))),
        (Mode::Auto | Mode::Translate, _) => Ok(Mode::Translate),
    }
}

/// Runs every source's link until `stop` turns true.
pub async fn run(cfg: MirrorConfig, stop: watch::Receiver<bool>) -> Result<(), MirrorError> {
    run_with(cfg, stop, Arc::new(Metrics::new())).await
}

/// [`run`], reporting into `metrics`.
pub async fn run_with(
    cfg: MirrorConfig,
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> Result<(), MirrorError> {
    cfg.validate().map_err(MirrorError::Config)?;
    let target = target_cluster(&cfg);
    let mode = resolve_mode(&cfg, &target).await?;
    tracing::info!(?mode, target = %cfg.target.brokers, sources = cfg.sources.len(), "mirror starting");
    if let Some(addr) = cfg.http {
        let m = metrics.clone();
        let until = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(m, addr, until).await {
                tracing::error!(%addr, error = %e, "mirror http endpoint failed");
            }
        });
    }
    let throttle = cfg
        .throttle_bytes_per_sec
        .map(|r| Arc::new(throttle::Throttle::new(r)));
    let mut tasks = Vec::new();
    for s in &cfg.sources {
        let link = link::Link::new(
            s,
            &cfg,
            mode,
            target.clone(),
            metrics.clone(),
            throttle.clone(),
        )
        .map_err(MirrorError::Config)?;
        tasks.push(tokio::spawn(link.run(stop.clone())));
    }
    for t in tasks {
        if let Err(e) = t.await {
            tracing::error!(error = %e, "mirror link task failed");
        }
    }
    Ok(())
}
