//! `trib up`: the whole platform on one machine with no setup. Starts an embedded broker and
//! the given pipeline files (default: the quickstart pipeline, which generates demo web logs,
//! parses them into a topic and writes the server errors to a file), prints where to look, and
//! on Ctrl-C drains the pipelines and then stops the broker.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tokio::sync::{oneshot, watch};
use trib_broker::config::BrokerConfig;
use trib_pipelines::metrics::Metrics;

/// The quickstart pipeline, embedded so `trib up` works from any folder.
const QUICKSTART: &str = include_str!("../../examples/quickstart.yaml");

#[derive(Args)]
pub struct UpArgs {
    /// Pipeline files (default: the quickstart pipeline).
    files: Vec<PathBuf>,
    /// Folder for the broker's data and the quickstart's output.
    #[arg(long, default_value = "trib-data")]
    data_dir: PathBuf,
    /// Kafka-protocol listen address of the embedded broker.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// Address for the broker's and the pipelines' /metrics and /health.
    #[arg(long, default_value = "127.0.0.1:9598")]
    http: SocketAddr,
}

pub async fn run(a: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("cannot create {}", a.data_dir.display()))?;
    let files = if a.files.is_empty() {
        let p = a.data_dir.join("quickstart.yaml");
        std::fs::write(&p, QUICKSTART).with_context(|| format!("cannot write {}", p.display()))?;
        vec![p]
    } else {
        a.files.clone()
    };
    // The pipeline files find the broker and their output folder through these.
    let brokers = a.listen.to_string();
    let out = a.data_dir.join("out");
    // SAFETY of the environment: set before any other thread reads it (the runtime's workers
    // do not touch the environment).
    std::env::set_var("TRIB_BROKERS", &brokers);
    if std::env::var_os("TRIB_OUT").is_none() {
        std::env::set_var("TRIB_OUT", &out);
    }
    if std::env::var_os("TRIB_LAKE").is_none() {
        std::env::set_var("TRIB_LAKE", a.data_dir.join("lake"));
    }
    for f in &files {
        trib_pipelines::supervisor::load_valid(f)?;
    }

    let config = BrokerConfig {
        listen: a.listen,
        data_dir: a.data_dir.join("broker"),
        http: None,
        ..BrokerConfig::default()
    };
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (use --listen)", config.listen))?;
    let (broker, _) = trib_broker::broker::Broker::open(config.clone())
        .with_context(|| format!("cannot open {}", config.data_dir.display()))?;
    let (broker_stop, broker_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(trib_broker::server::run(broker, listener, async move {
        let _ = broker_stopped.await;
    }));

    let metrics = Metrics::default();
    let m = metrics.clone();
    let http = a.http;
    tokio::net::TcpListener::bind(http)
        .await
        .with_context(|| format!("cannot listen on {http} (use --http)"))
        .map(drop)?;
    tokio::spawn(async move {
        if let Err(e) = trib_pipelines::http::serve(http, m).await {
            tracing::error!("{e:#}");
        }
    });

    println!("Tributary is up.");
    println!(
        "  broker     : {brokers}  (any Kafka client; data in {})",
        config.data_dir.display()
    );
    for f in &files {
        println!("  pipeline   : {}", f.display());
    }
    println!("  metrics    : http://{http}/metrics   health: http://{http}/health");
    println!("  live rates : trib pipeline top --url http://{http}/metrics");
    if a.files.is_empty() {
        println!("  records    : trib consume -b {brokers} -t web-logs");
        println!("  errors     : {}", out.join("errors.ndjson").display());
    }
    println!("Ctrl-C stops everything cleanly.");

    let (stop_tx, stop_rx) = watch::channel(false);
    let signal = crate::broker_cmd::shutdown_signal()?;
    tokio::spawn(async move {
        signal.await;
        let _ = stop_tx.send(true);
    });
    let result = trib_pipelines::supervisor::run_files(
        files,
        std::sync::Arc::new(crate::pipeline_cmd::Registry),
        metrics,
        stop_rx,
    )
    .await;
    let _ = broker_stop.send(());
    server.await.context("broker task")??;
    println!("stopped");
    result
}
