//! The graph runtime: one task per component, bounded channels of event batches between them
//! (backpressure: a slow sink makes its upstream wait, memory stays bounded), fan-out by
//! cloning, fan-in by sharing a channel. Stopping asks the sources to stop; each component
//! then finishes when its inputs are drained and closed, so everything in flight reaches the
//! sinks before [`Running::stop`] returns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{Loaded, SinkConfig, SourceConfig};
use crate::event::{deliver_all, Event};
use crate::metrics::{ComponentMetrics, Metrics};
use crate::transforms::{Outputs, DEAD_LETTER_PORT};
use crate::validate::resolve_input;

/// Events move between components in batches.
pub type Batch = Vec<Event>;

/// Batches buffered per component input.
pub const CHANNEL_BATCHES: usize = 4;

/// A source: produces batches until told to stop (or its input ends).
pub trait Source: Send {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// A sink: takes batches until its input closes, finalizing every event.
pub trait Sink: Send {
    fn run(self: Box<Self>, cx: SinkContext) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// Builds sources and sinks from their configs (implemented where the connectors live).
pub trait Components: Send + Sync {
    fn source(&self, name: &str, cfg: &SourceConfig) -> anyhow::Result<Box<dyn Source>>;
    fn sink(&self, name: &str, cfg: &SinkConfig) -> anyhow::Result<Box<dyn Sink>>;
}

/// A reader of an output: its input channel and its metrics.
type Target = (mpsc::Sender<Batch>, ComponentMetrics);

/// Sends a component's output to every component that reads it.
#[derive(Clone)]
pub struct Fanout {
    component: Arc<str>,
    dead_letter: bool,
    targets: Vec<Target>,
    metrics: ComponentMetrics,
}

impl Fanout {
    /// An output nobody reads: events are delivered (dropped) on arrival.
    pub fn none(component: &str) -> Self {
        Self {
            component: component.into(),
            dead_letter: false,
            targets: Vec::new(),
            metrics: ComponentMetrics::default(),
        }
    }

    /// Sends a batch; waits while a target's buffer is full. Returns false once every target
    /// has gone (the pipeline is stopping).
    pub async fn send(&self, batch: Batch) -> bool {
        if batch.is_empty() {
            return true;
        }
        let n = batch.len() as u64;
        if self.dead_letter {
            self.metrics.errors.inc_by(n);
        } else {
            self.metrics.events_out.inc_by(n);
        }
        let Some(((last, last_m), rest)) = self.targets.split_last() else {
            if self.dead_letter {
                if let Some(e) = batch.first() {
                    tracing::warn!(
                        component = %self.component,
                        count = n,
                        reason = %e.fields.get("_error").map(crate::event::value_text).unwrap_or_default(),
                        "rejected events dropped (no component reads its dead_letter output)"
                    );
                }
            }
            deliver_all(batch);
            return true;
        };
        let mut alive = false;
        for (tx, m) in rest {
            m.buffered.inc_by(n as i64);
            if tx.send(batch.clone()).await.is_ok() {
                alive = true;
            } else {
                m.buffered.dec_by(n as i64);
            }
        }
        last_m.buffered.inc_by(n as i64);
        if last.send(batch).await.is_ok() {
            alive = true;
        } else {
            last_m.buffered.dec_by(n as i64);
        }
        alive
    }
}

/// A receiver that keeps the buffer gauge true.
pub struct Input {
    rx: mpsc::Receiver<Batch>,
    metrics: ComponentMetrics,
}

impl Input {
    /// An input whose events are already counted (a disk buffer's output).
    pub(crate) fn detached(rx: mpsc::Receiver<Batch>) -> Self {
        Self {
            rx,
            metrics: ComponentMetrics::default(),
        }
    }

    pub async fn recv(&mut self) -> Option<Batch> {
        let b = self.rx.recv().await?;
        self.metrics.buffered.dec_by(b.len() as i64);
        self.metrics.events_in.inc_by(b.len() as u64);
        Some(b)
    }
}

/// What a source is given.
pub struct SourceContext {
    pub name: Arc<str>,
    pub out: Fanout,
    pub shutdown: watch::Receiver<bool>,
    pub metrics: ComponentMetrics,
}

impl SourceContext {
    /// Resolves when the pipeline is asked to stop.
    pub async fn stopped(&mut self) {
        let _ = self.shutdown.wait_for(|s| *s).await;
    }

    pub fn is_stopping(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// What a sink is given.
pub struct SinkContext {
    pub name: Arc<str>,
    pub input: Input,
    pub dead_letter: Fanout,
    pub metrics: ComponentMetrics,
}

/// A started pipeline.
pub struct Running {
    pub name: String,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<(String, anyhow::Result<()>)>,
}

impl Running {
    /// Waits for the first component to fail, or for all to finish (sources that end, like
    /// stdin or a counted demo, let the pipeline drain and finish).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        while let Some(r) = self.tasks.join_next().await {
            match r {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(e))) => return Err(e.context(format!("component `{name}` failed"))),
                Err(e) => return Err(anyhow::anyhow!("a component task panicked: {e}")),
            }
        }
        Ok(())
    }

    /// Stops the sources and waits until everything in flight has drained through the sinks.
    pub async fn stop(mut self, timeout: Duration) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        match tokio::time::timeout(timeout, self.wait()).await {
            Ok(r) => r,
            Err(_) => {
                self.tasks.abort_all();
                anyhow::bail!(
                    "pipeline `{}` did not drain within {timeout:?}; unacknowledged events will be read again",
                    self.name
                )
            }
        }
    }
}

/// Starts every component of a validated pipeline.
pub async fn start(
    pipeline: &str,
    loaded: &Loaded,
    components: &dyn Components,
    metrics: &Metrics,
) -> anyhow::Result<Running> {
    let p = &loaded.pipeline;
    let (shutdown, shutdown_rx) = watch::channel(false);
    // One input channel per transform and sink.
    let mut inputs: HashMap<String, (mpsc::Sender<Batch>, Option<mpsc::Receiver<Batch>>)> =
        HashMap::new();
    let node_names = p.transforms.keys().chain(p.sinks.keys());
    for name in node_names {
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        inputs.insert(name.clone(), (tx, Some(rx)));
    }
    let cm = |name: &str, kind: &str| metrics.component(pipeline, name, kind);
    // Output ports: (component, port) -> targets.
    let mut targets: HashMap<(String, usize), Vec<Target>> = HashMap::new();
    let nodes = p
        .transforms
        .iter()
        .map(|(n, c)| (n, c.inputs(), c.kind()))
        .chain(p.sinks.iter().map(|(n, c)| (n, c.inputs(), c.kind())));
    for (name, ins, kind) in nodes {
        for input in ins {
            let r = resolve_input(p, input).map_err(|m| anyhow::anyhow!("`{name}`: {m}"))?;
            let tx = inputs
                .get(name)
                .map(|(tx, _)| tx.clone())
                .ok_or_else(|| anyhow::anyhow!("no channel for `{name}`"))?;
            targets
                .entry((r.component, r.port))
                .or_default()
                .push((tx, cm(name, kind)));
        }
    }
    let fanout = |name: &str, port: usize, m: &ComponentMetrics| Fanout {
        component: name.into(),
        dead_letter: port == DEAD_LETTER_PORT,
        targets: targets
            .get(&(name.to_string(), port))
            .cloned()
            .unwrap_or_default(),
        metrics: m.clone(),
    };
    let mut tasks = JoinSet::new();
    // Build everything before spawning anything, so a build error starts nothing.
    let mut sinks = Vec::new();
    for (name, cfg) in &p.sinks {
        let sink = components
            .sink(name, cfg)
            .map_err(|e| e.context(format!("sink `{name}`")))?;
        let buffer = match cfg.buffer() {
            Some(b) => Some(
                crate::disk_buffer::open(name, b, cm(name, cfg.kind()))
                    .map_err(|e| anyhow::anyhow!("sink `{name}`: {e}"))?,
            ),
            None => None,
        };
        sinks.push((name.clone(), cfg.kind(), sink, buffer));
    }
    let mut sources = Vec::new();
    for (name, cfg) in &p.sources {
        let src = components
            .source(name, cfg)
            .map_err(|e| e.context(format!("source `{name}`")))?;
        sources.push((name.clone(), cfg.kind(), src));
    }
    let mut transforms = Vec::new();
    for (name, cfg) in &p.transforms {
        let t = crate::transforms::build(cfg)
            .map_err(|m| anyhow::anyhow!("transform `{name}`: {m}"))?;
        transforms.push((name.clone(), cfg.kind(), cfg.named_outputs().len(), t));
    }
    for (name, kind, sink, buffer) in sinks {
        let m = cm(&name, kind);
        let rx = inputs
            .get_mut(&name)
            .and_then(|(_, rx)| rx.take())
            .ok_or_else(|| anyhow::anyhow!("no channel for `{name}`"))?;
        let mut input = Input {
            rx,
            metrics: m.clone(),
        };
        if let Some(buffer) = buffer {
            let (buffered, buffer_tasks) = buffer.start(input);
            input = buffered;
            for t in buffer_tasks {
                let label = format!("{name} (disk buffer)");
                tasks.spawn(async move { (label, t.await) });
            }
        }
        let cx = SinkContext {
            name: name.as_str().into(),
            input,
            dead_letter: fanout(&name, DEAD_LETTER_PORT, &m),
            metrics: m,
        };
        let fut = sink.run(cx);
        tasks.spawn(async move { (name, fut.await) });
    }
    for (name, kind, mut t, ports) in transforms
        .into_iter()
        .map(|(n, k, named, t)| (n, k, t, 2 + named))
    {
        let m = cm(&name, kind);
        let rx = inputs
            .get_mut(&name)
            .and_then(|(_, rx)| rx.take())
            .ok_or_else(|| anyhow::anyhow!("no channel for `{name}`"))?;
        let mut input = Input {
            rx,
            metrics: m.clone(),
        };
        let outs: Vec<Fanout> = (0..ports).map(|i| fanout(&name, i, &m)).collect();
        tasks.spawn(async move {
            while let Some(batch) = input.recv().await {
                let mut out = Outputs::new(&name, ports - 2);
                for e in batch {
                    t.process(e, &mut out);
                }
                for (i, events) in out.ports.into_iter().enumerate() {
                    outs[i].send(events).await;
                }
            }
            (name, Ok(()))
        });
    }
    // `inputs` and `targets` hold senders; they are dropped on return, so each channel
    // closes once its upstream components finish.
    for (name, kind, src) in sources {
        let m = cm(&name, kind);
        let cx = SourceContext {
            name: name.as_str().into(),
            out: fanout(&name, 0, &m),
            shutdown: shutdown_rx.clone(),
            metrics: m,
        };
        let fut = src.run(cx);
        tasks.spawn(async move { (name, fut.await) });
    }
    Ok(Running {
        name: pipeline.to_string(),
        shutdown,
        tasks,
    })
}
