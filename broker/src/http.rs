//! The HTTP endpoint: `/metrics` (Prometheus text) and `/health` (JSON).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::broker::Broker;

/// Serves metrics and health until the listener fails.
pub async fn serve(broker: Arc<Broker>, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "http endpoint: /metrics /health");
    let metrics = broker.clone();
    let health = broker;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || async move { metrics.metrics.render() }),
        )
        .route(
            "/health",
            get(move || async move {
                format!(
                    "{{\"status\":\"ok\",\"topics\":{}}}",
                    health.topics.list().len()
                )
            }),
        );
    axum::serve(listener, app).await
}
