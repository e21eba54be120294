//! The HTTP source: accepts JSON, NDJSON or text by POST and answers only after the pipeline
//! has delivered the request's events (200), or could not (503).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use futures::future::BoxFuture;
use serde_json::Value;
use trib_pipelines::config::sources::{HttpDecoding, HttpSource};
use trib_pipelines::event::Event;
use trib_pipelines::finalize::{BatchNotifier, Status};
use trib_pipelines::runtime::{Fanout, Source, SourceContext};

pub struct Http {
    cfg: HttpSource,
}

impl Http {
    pub fn new(c: &HttpSource) -> anyhow::Result<Self> {
        anyhow::ensure!(
            c.path.starts_with('/'),
            "path: must start with `/`, not `{}`",
            c.path
        );
        c.address
            .parse::<std::net::SocketAddr>()
            .map_err(|e| anyhow::anyhow!("address: `{}` is not host:port: {e}", c.address))?;
        Ok(Self { cfg: c.clone() })
    }
}

struct Shared {
    cfg: HttpSource,
    name: Arc<str>,
    out: Fanout,
    metrics: trib_pipelines::metrics::ComponentMetrics,
}

/// Splits a body into events, or says what is wrong with it.
pub fn decode(body: &[u8], how: HttpDecoding) -> Result<Vec<Event>, String> {
    let object = |v: Value, at: &str| match v {
        Value::Object(m) => Ok(Event::from_fields(m)),
        other => Err(format!("{at}: expected a JSON object, got {other}")),
    };
    match how {
        HttpDecoding::Json => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| object(v, &format!("item {i}")))
                .collect(),
            Ok(v) => object(v, "body").map(|e| vec![e]),
            Err(e) => Err(format!("invalid JSON: {e}")),
        },
        HttpDecoding::Ndjson => body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
            .map(|(i, l)| {
                serde_json::from_slice::<Value>(l)
                    .map_err(|e| format!("line {}: invalid JSON: {e}", i + 1))
                    .and_then(|v| object(v, &format!("line {}", i + 1)))
            })
            .collect(),
        HttpDecoding::Text => Ok(body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| Event::raw(l.strip_suffix(b"\r").unwrap_or(l).to_vec()))
            .collect()),
    }
}

async fn accept(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> (StatusCode, String) {
    if let Some(token) = &s.cfg.auth_token {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token\n".into(),
            );
        }
    }
    let bytes = match to_bytes(body, s.cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body larger than {} bytes (max_body_bytes)\n",
                    s.cfg.max_body_bytes
                ),
            )
        }
    };
    s.metrics.bytes_in.inc_by(bytes.len() as u64);
    let events = match decode(&bytes, s.cfg.decoding) {
        Ok(e) => e,
        Err(m) => return (StatusCode::BAD_REQUEST, format!("{m}\n")),
    };
    let n = events.len();
    if n == 0 {
        return (StatusCode::OK, "0 events\n".into());
    }
    let (notifier, rx) = BatchNotifier::new();
    let batch: Vec<Event> = events
        .into_iter()
        .map(|mut e| {
            e.meta.source = s.name.clone();
            e.with_finalizer(notifier.finalizer())
        })
        .collect();
    drop(notifier);
    s.metrics.events_in.inc_by(n as u64);
    if !s.out.send(batch).await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the pipeline is stopping\n".into(),
        );
    }
    match tokio::time::timeout(Duration::from_secs(60), rx).await {
        Ok(Ok(Status::Delivered)) => (StatusCode::OK, format!("{n} events\n")),
        Ok(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the events were not delivered; send them again\n".into(),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "delivery did not finish within 60 s; send the events again\n".into(),
        ),
    }
}

impl Source for Http {
    fn run(self: Box<Self>, mut cx: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(&self.cfg.address)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", self.cfg.address))?;
            tracing::info!(source = %cx.name, address = %self.cfg.address, path = %self.cfg.path, "http source listening");
            let shared = Arc::new(Shared {
                cfg: self.cfg.clone(),
                name: cx.name.clone(),
                out: cx.out.clone(),
                metrics: cx.metrics.clone(),
            });
            let app = Router::new()
                .route(&self.cfg.path, post(accept))
                .with_state(shared);
            let mut stop = cx.shutdown.clone();
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await?;
            cx.stopped().await;
            Ok(())
        })
    }
}
