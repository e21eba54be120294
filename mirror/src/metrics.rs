//! The mirror's Prometheus metrics (lag per topic and partition in records and seconds, bytes,
//! records and batches copied, errors) and its HTTP endpoint: `/metrics`, `/health` and
//! `/status` (the same lag figures as JSON).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use trib_pipelines::metrics::ComponentMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub source: String,
    pub topic: String,
    pub partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

/// One partition's position, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub source: String,
    pub source_topic: String,
    pub target_topic: String,
    pub partition: i32,
    /// The source's high watermark at the last fetch.
    pub source_end: i64,
    /// Where the target's log ends (acknowledged).
    pub target_end: i64,
    pub lag_records: i64,
    pub lag_seconds: f64,
    /// Promoted at the target: no longer copied.
    pub promoted: bool,
}

/// Everything the mirror reports.
pub struct Metrics {
    registry: Registry,
    lag_records: Family<PartitionLabels, Gauge>,
    lag_seconds: Family<PartitionLabels, Gauge<f64, AtomicU64>>,
    bytes: Family<SourceLabels, Counter>,
    records: Family<SourceLabels, Counter>,
    batches: Family<SourceLabels, Counter>,
    errors: Family<SourceLabels, Counter>,
    status: Mutex<BTreeMap<(String, String, i32), PartitionStatus>>,
    /// As a pipeline source: the component's metrics (records, bytes and batches out, errors,
    /// records of lag over every partition), for the pipeline's `/metrics` and `trib pipeline top`.
    component: Option<ComponentMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("trib_mirror");
        let lag_records = Family::default();
        let lag_seconds = Family::<PartitionLabels, Gauge<f64, AtomicU64>>::default();
        let bytes = Family::default();
        let records = Family::default();
        let batches = Family::default();
        let errors = Family::default();
        registry.register(
            "lag_records",
            "records at the source not yet at the target",
            lag_records.clone(),
        );
        registry.register(
            "lag_seconds",
            "age of the oldest source record not yet at the target",
            lag_seconds.clone(),
        );
        registry.register("bytes", "record batch bytes copied", bytes.clone());
        registry.register("records", "records copied", records.clone());
        registry.register("batches", "record batches copied", batches.clone());
        registry.register("errors", "failed fetches, writes and syncs", errors.clone());
        Self {
            registry,
            lag_records,
            lag_seconds,
            bytes,
            records,
            batches,
            errors,
            status: Mutex::new(BTreeMap::new()),
            component: None,
        }
    }

    /// Metrics that also feed a pipeline component's.
    pub fn for_component(component: ComponentMetrics) -> Self {
        Self {
            component: Some(component),
            ..Self::new()
        }
    }

    /// Counts a copied write.
    pub fn copied(&self, source: &str, bytes: u64, records: u64, batches: u64) {
        let l = SourceLabels {
            source: source.to_string(),
        };
        self.bytes.get_or_create(&l).inc_by(bytes);
        self.records.get_or_create(&l).inc_by(records);
        self.batches.get_or_create(&l).inc_by(batches);
        if let Some(c) = &self.component {
            c.bytes_out.inc_by(bytes);
            c.events_out.inc_by(records);
            c.batches_out.inc_by(batches);
        }
    }

    pub fn error(&self, source: &str) {
        self.errors
            .get_or_create(&SourceLabels {
                source: source.to_string(),
            })
            .inc();
        if let Some(c) = &self.component {
            c.errors.inc();
        }
    }

    /// Records one partition's position.
    pub fn position(&self, s: PartitionStatus) {
        let l = PartitionLabels {
            source: s.source.clone(),
            topic: s.source_topic.clone(),
            partition: s.partition.to_string(),
        };
        self.lag_records.get_or_create(&l).set(s.lag_records);
        self.lag_seconds.get_or_create(&l).set(s.lag_seconds);
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.insert((s.source.clone(), s.source_topic.clone(), s.partition), s);
        if let Some(c) = &self.component {
            c.lag
                .set(status.values().map(|s| s.lag_records.max(0)).sum());
        }
    }

    /// Every partition's position.
    pub fn statuses(&self) -> Vec<PartitionStatus> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// Serves `/metrics`, `/health` and `/status` until `stop` turns true or the listener fails.
pub async fn serve(
    metrics: Arc<Metrics>,
    addr: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "mirror http endpoint: /metrics /health /status");
    let (m, s) = (metrics.clone(), metrics);
    let app = Router::new()
        .route("/metrics", get(move || async move { m.render() }))
        .route("/health", get(|| async { "{\"status\":\"ok\"}" }))
        .route(
            "/status",
            get(move || async move {
                serde_json::to_string(&s.statuses()).unwrap_or_else(|e| e.to_string())
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_names_the_docs_give() {
        let m = Metrics::new();
        m.copied("east", 2048, 2, 1);
        m.error("east");
        m.position(PartitionStatus {
            source: "east".into(),
            source_topic: "orders".into(),
            target_topic: "orders".into(),
            partition: 3,
            source_end: 10,
            target_end: 7,
            lag_records: 3,
            lag_seconds: 1.5,
            promoted: false,
        });
        let text = m.render();
        for line in [
            r#"trib_mirror_bytes_total{source="east"} 2048"#,
            r#"trib_mirror_records_total{source="east"} 2"#,
            r#"trib_mirror_batches_total{source="east"} 1"#,
            r#"trib_mirror_errors_total{source="east"} 1"#,
            r#"trib_mirror_lag_records{source="east",topic="orders",partition="3"} 3"#,
            r#"trib_mirror_lag_seconds{source="east",topic="orders",partition="3"} 1.5"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert_eq!(m.statuses().len(), 1);
    }
}
