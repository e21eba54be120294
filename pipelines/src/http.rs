//! The HTTP endpoint of running pipelines: `/metrics` (Prometheus text) and `/health`.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// Serves until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics: {e}"))?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        )
        .route("/health", get(|| async { "ok\n" }));
    axum::serve(listener, app).await?;
    Ok(())
}
