//! The mirror as a pipeline source (`type: mirror` under `sources:` in a pipeline file, run by
//! `trib run`): the same mirror as `trib mirror`, started and stopped with the pipeline. It
//! emits no events (it writes to its target cluster itself); its copied records, bytes,
//! batches, errors and records of lag show as the component's metrics, next to the
//! `trib_mirror_*` families on its own `http` endpoint when one is set.

use std::sync::Arc;

use futures::future::BoxFuture;
use trib_pipelines::config::mirror::MirrorConfig;
use trib_pipelines::runtime::{Source, SourceContext};

use crate::metrics::Metrics;

/// A mirror run by a pipeline.
pub struct PipelineMirror {
    cfg: MirrorConfig,
}

impl PipelineMirror {
    /// Checks the settings (no I/O until it runs).
    pub fn new(cfg: &MirrorConfig) -> anyhow::Result<Self> {
        cfg.validate().map_err(|m| anyhow::anyhow!("{m}"))?;
        Ok(Self { cfg: cfg.clone() })
    }
}

impl Source for PipelineMirror {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let metrics = Arc::new(Metrics::for_component(cx.metrics.clone()));
            crate::run_with(self.cfg, cx.shutdown.clone(), metrics).await?;
            Ok(())
        })
    }
}
