//! `trib run` and `trib pipeline validate|test|schema|top`: pipelines from YAML files.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use tokio::sync::watch;
use trib_pipelines::config::{SinkConfig, SourceConfig};
use trib_pipelines::metrics::Metrics;
use trib_pipelines::runtime::{Components, Sink, Source};

/// Sources from `trib-connectors` and the mirror from `trib-mirror`, sinks from `trib-sinks`
/// and the lake sink from `trib-lake`.
pub struct Registry;

impl Components for Registry {
    fn source(&self, name: &str, cfg: &SourceConfig) -> anyhow::Result<Box<dyn Source>> {
        match cfg {
            SourceConfig::Mirror(c) => Ok(Box::new(trib_mirror::pipeline::PipelineMirror::new(c)?)),
            _ => trib_connectors::build(name, cfg),
        }
    }
    fn sink(&self, name: &str, cfg: &SinkConfig) -> anyhow::Result<Box<dyn Sink>> {
        match cfg {
            SinkConfig::Lake(c) => Ok(Box::new(trib_lake::LakeSinkRunner::new(c)?)),
            _ => trib_sinks::build(name, cfg),
        }
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// Pipeline files; each runs as its own pipeline, named after the file.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Address for /metrics and /health.
    #[arg(long, default_value = "127.0.0.1:9598")]
    http: SocketAddr,
    /// Do not serve /metrics and /health.
    #[arg(long)]
    no_http: bool,
}

#[derive(Subcommand)]
pub enum PipelineCommand {
    /// Check files: syntax, types, unknown keys, inputs, cycles, expressions.
    Validate { files: Vec<PathBuf> },
    /// Run the `tests:` of files against their transforms.
    Test { files: Vec<PathBuf> },
    /// Print the JSON Schema of pipeline files.
    Schema,
    /// Print the component reference (the generated part of docs/pipelines.md).
    Reference,
    /// Live per-component rates of a running `trib run` (from its /metrics).
    Top {
        #[arg(long, default_value = "http://127.0.0.1:9598/metrics")]
        url: String,
        /// Refresh interval in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Print this many refreshes and exit (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
    },
}

/// Runs pipelines until Ctrl-C/SIGTERM (then drains) or until they all end.
pub async fn run(a: RunArgs) -> anyhow::Result<()> {
    serve_and_run(a.files, (!a.no_http).then_some(a.http)).await
}

/// Serves /metrics and /health on `http` (if any) and runs the files.
pub async fn serve_and_run(files: Vec<PathBuf>, http: Option<SocketAddr>) -> anyhow::Result<()> {
    let metrics = Metrics::default();
    if let Some(addr) = http {
        let m = metrics.clone();
        // Bind now so a taken port is an error at start, not a log line later.
        let probe = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr} for metrics: {e} (use --http or --no-http)")
        })?;
        drop(probe);
        tokio::spawn(async move {
            if let Err(e) = trib_pipelines::http::serve(addr, m).await {
                tracing::error!("{e:#}");
            }
        });
        tracing::info!(metrics = %format!("http://{addr}/metrics"), health = %format!("http://{addr}/health"), "serving");
    }
    run_until_signal(files, metrics).await
}

/// Runs files until a signal (drain) or until they end.
pub async fn run_until_signal(files: Vec<PathBuf>, metrics: Metrics) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let signal = crate::broker_cmd::shutdown_signal()?;
    tokio::spawn(async move {
        signal.await;
        tracing::info!("stop requested");
        let _ = stop_tx.send(true);
    });
    trib_pipelines::supervisor::run_files(files, Arc::new(Registry), metrics, stop_rx).await
}

pub async fn command(c: PipelineCommand) -> anyhow::Result<()> {
    match c {
        PipelineCommand::Validate { files } => validate(files),
        PipelineCommand::Test { files } => test(files),
        PipelineCommand::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&trib_pipelines::config::schema())?
            );
            Ok(())
        }
        PipelineCommand::Reference => {
            print!("{}", trib_pipelines::config::reference_markdown());
            Ok(())
        }
        PipelineCommand::Top {
            url,
            interval_ms,
            count,
        } => top(&url, Duration::from_millis(interval_ms.max(100)), count).await,
    }
}

fn validate(files: Vec<PathBuf>) -> anyhow::Result<()> {
    anyhow::ensure!(!files.is_empty(), "name at least one pipeline file");
    let mut bad = 0;
    for f in &files {
        let result = trib_pipelines::config::load(f)
            .and_then(|l| trib_pipelines::validate::validate(&l).map(|w| (l, w)));
        match result {
            Ok((l, warnings)) => {
                for w in warnings {
                    println!("warning: {w}");
                }
                let p = &l.pipeline;
                println!(
                    "{}: ok ({} sources, {} transforms, {} sinks, {} tests)",
                    f.display(),
                    p.sources.len(),
                    p.transforms.len(),
                    p.sinks.len(),
                    p.tests.len()
                );
            }
            Err(e) => {
                bad += 1;
                println!("{e}");
            }
        }
    }
    anyhow::ensure!(bad == 0, "{bad} of {} files have errors", files.len());
    Ok(())
}

fn test(files: Vec<PathBuf>) -> anyhow::Result<()> {
    anyhow::ensure!(!files.is_empty(), "name at least one pipeline file");
    let (mut passed, mut failed) = (0, 0);
    for f in &files {
        let l = trib_pipelines::config::load(f).map_err(|e| anyhow::anyhow!("{e}"))?;
        trib_pipelines::validate::validate(&l).map_err(|e| anyhow::anyhow!("{e}"))?;
        for r in trib_pipelines::unit_test::run_tests(&l) {
            if r.passed() {
                passed += 1;
                println!("ok    {}: {}", f.display(), r.name);
            } else {
                failed += 1;
                println!("FAIL  {}: {}", f.display(), r.name);
                for m in r.failures {
                    println!("      {m}");
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    anyhow::ensure!(failed == 0, "{failed} tests failed");
    Ok(())
}

/// (component, metric) -> value, from the Prometheus text.
pub(crate) fn scrape(text: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = name_labels.split_once('{') else {
            continue;
        };
        let Some(metric) = name.strip_prefix("trib_pipeline_") else {
            continue;
        };
        let metric = metric.trim_end_matches("_total").to_string();
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches(['"', '}']).to_string())
                .unwrap_or_default()
        };
        let component = format!(
            "{}/{} ({})",
            label("pipeline"),
            label("component"),
            label("kind")
        );
        if let Ok(v) = value.parse::<f64>() {
            out.insert((component, metric), v);
        }
    }
    out
}

/// GETs a running pipeline's endpoint (bounded in time and size).
pub(crate) async fn fetch(url: &str) -> anyhow::Result<String> {
    trib_connectors::http_get(url, Duration::from_secs(5)).await
}

async fn top(url: &str, every: Duration, count: Option<u64>) -> anyhow::Result<()> {
    let mut prev = scrape(&fetch(url).await?);
    let mut at = Instant::now();
    let mut n = 0;
    loop {
        tokio::time::sleep(every).await;
        let now = scrape(&fetch(url).await?);
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        let rate = |c: &str, m: &str| {
            let k = (c.to_string(), m.to_string());
            (now.get(&k).copied().unwrap_or(0.0) - prev.get(&k).copied().unwrap_or(0.0)) / secs
        };
        let mut components: Vec<&String> = now.keys().map(|(c, _)| c).collect();
        components.dedup();
        if count.is_none() {
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "{:<44} {:>12} {:>12} {:>10} {:>10} {:>10}",
            "pipeline/component (kind)", "in/s", "out/s", "errors/s", "buffered", "lag"
        );
        for c in components {
            let g = |m: &str| now.get(&(c.clone(), m.to_string())).copied().unwrap_or(0.0);
            println!(
                "{:<44} {:>12.0} {:>12.0} {:>10.0} {:>10.0} {:>10.0}",
                c,
                rate(c, "events_in"),
                rate(c, "events_out"),
                rate(c, "errors"),
                g("buffered_events"),
                g("lag")
            );
        }
        prev = now;
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
    }
}
