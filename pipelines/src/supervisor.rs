//! Runs pipeline files and keeps them current: a file that changes on disk (or any file, on
//! SIGHUP) is loaded and validated again; a valid new version replaces the running one after
//! the old one has drained (its sources stop, everything in flight reaches the sinks, sources
//! that commit resume from their commits), and a broken one is rejected with its errors while
//! the running version goes on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::{load, Loaded};
use crate::metrics::Metrics;
use crate::runtime::{start, Components, Running};
use crate::validate::validate;

/// How long a stopping pipeline may take to drain.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Loads and validates a file, logging the validator's warnings.
pub fn load_valid(path: &Path) -> anyhow::Result<Loaded> {
    let loaded = load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let warnings = validate(&loaded).map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let p = &loaded.pipeline;
    // A mirror writes to its target itself; every other source needs a sink.
    let needs_sink = p
        .sources
        .values()
        .any(|s| !matches!(s, crate::config::SourceConfig::Mirror(_)));
    if p.sources.is_empty() || (needs_sink && p.sinks.is_empty()) {
        anyhow::bail!(
            "{}: a pipeline needs at least one source and one sink to run (a pipeline of mirrors only needs no sink)",
            path.display()
        );
    }
    Ok(loaded)
}

/// The pipeline's name: the file name without its extension.
pub fn pipeline_name(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "pipeline".into(), |s| s.to_string_lossy().into_owned())
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Runs the files until `stop` turns true (then drains them) or every pipeline has ended.
pub async fn run_files(
    paths: Vec<PathBuf>,
    components: Arc<dyn Components>,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Validate everything before starting anything.
    let mut loaded = Vec::new();
    for p in &paths {
        loaded.push(load_valid(p)?);
    }
    let mut set = tokio::task::JoinSet::new();
    for (path, l) in paths.into_iter().zip(loaded) {
        let name = pipeline_name(&path);
        let running = start(&name, &l, components.as_ref(), &metrics).await?;
        tracing::info!(pipeline = %name, file = %path.display(), sources = l.pipeline.sources.len(), transforms = l.pipeline.transforms.len(), sinks = l.pipeline.sinks.len(), "pipeline started");
        set.spawn(supervise(
            path,
            l,
            running,
            components.clone(),
            metrics.clone(),
            stop.clone(),
        ));
    }
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        let r = r
            .map_err(|e| anyhow::anyhow!("pipeline task failed: {e}"))
            .and_then(|r| r);
        if let Err(e) = r {
            tracing::error!("{e:#}");
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

async fn supervise(
    path: PathBuf,
    mut current: Loaded,
    mut running: Running,
    components: Arc<dyn Components>,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let name = pipeline_name(&path);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut stamp = modified(&path);
    loop {
        let reload = tokio::select! {
            r = running.wait() => {
                tracing::info!(pipeline = %name, "pipeline finished");
                return r;
            }
            _ = stopped(&mut stop) => {
                tracing::info!(pipeline = %name, "stopping: draining in-flight events");
                return running.stop(DRAIN_TIMEOUT).await;
            }
            _ = hup.recv() => true,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let now = modified(&path);
                let changed = now != stamp;
                stamp = now;
                changed
            }
        };
        if !reload {
            continue;
        }
        let next = match load_valid(&path) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(pipeline = %name, "the new version is rejected; the running one continues:\n{e:#}");
                continue;
            }
        };
        tracing::info!(pipeline = %name, "reloading: draining the running version");
        running.stop(DRAIN_TIMEOUT).await?;
        match start(&name, &next, components.as_ref(), &metrics).await {
            Ok(r) => {
                running = r;
                current = next;
                tracing::info!(pipeline = %name, "reloaded");
            }
            Err(e) => {
                tracing::error!(pipeline = %name, "the new version failed to start ({e:#}); restarting the previous one");
                running = start(&name, &current, components.as_ref(), &metrics).await?;
            }
        }
    }
}
