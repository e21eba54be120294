//! The HTTP sink: POSTs batches as NDJSON or a JSON array. Connection errors, 408, 429 and 5xx
//! are retried with backoff; any other 4xx sends the batch to `dead_letter` with the answer.

use std::time::Duration;

use futures::future::BoxFuture;
use trib_pipelines::config::sinks::{HttpBody, HttpSink};
use trib_pipelines::event::Event;
use trib_pipelines::runtime::{Sink, SinkContext};

use crate::batching::{self, BatchWriter, WriteError};

pub struct Http {
    cfg: HttpSink,
    client: reqwest::Client,
}

impl Http {
    pub fn new(c: &HttpSink) -> anyhow::Result<Self> {
        let url =
            reqwest::Url::parse(&c.url).map_err(|e| anyhow::anyhow!("url: `{}`: {e}", c.url))?;
        anyhow::ensure!(
            url.scheme() == "http",
            "url: only http:// is supported, not `{}`",
            url.scheme()
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            cfg: c.clone(),
            client,
        })
    }
}

impl Sink for Http {
    fn run(self: Box<Self>, cx: SinkContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let (batch, retry) = (self.cfg.batch.clone(), self.cfg.retry.clone());
            let w = Writer {
                metrics: cx.metrics.clone(),
                sink: *self,
            };
            batching::run(cx, &batch, &retry, w).await
        })
    }
}

struct Writer {
    sink: Http,
    metrics: trib_pipelines::metrics::ComponentMetrics,
}

impl BatchWriter for Writer {
    fn write<'a>(
        &'a mut self,
        events: &'a [Event],
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>, WriteError>> {
        Box::pin(async move {
            let cfg = &self.sink.cfg;
            let mut body = Vec::with_capacity(events.len() * 128);
            match cfg.body {
                HttpBody::Ndjson => {
                    for e in events {
                        serde_json::to_writer(&mut body, &e.to_json())
                            .map_err(|x| WriteError::Permanent(x.to_string()))?;
                        body.push(b'\n');
                    }
                }
                HttpBody::JsonArray => {
                    let all: Vec<_> = events.iter().map(Event::to_json).collect();
                    serde_json::to_writer(&mut body, &all)
                        .map_err(|x| WriteError::Permanent(x.to_string()))?;
                }
            }
            let n = body.len() as u64;
            let mut req = self.sink.client.post(&cfg.url).body(body).header(
                "content-type",
                match cfg.body {
                    HttpBody::Ndjson => "application/x-ndjson",
                    HttpBody::JsonArray => "application/json",
                },
            );
            if let Some(t) = &cfg.auth_token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            for (k, v) in &cfg.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let resp = req
                .send()
                .await
                .map_err(|e| WriteError::Transient(format!("POST {}: {e}", cfg.url)))?;
            let status = resp.status();
            if status.is_success() {
                self.metrics.bytes_out.inc_by(n);
                return Ok(Vec::new());
            }
            let text = resp.text().await.unwrap_or_default();
            let m = format!("POST {} answered {status}: {}", cfg.url, text.trim());
            if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
                Err(WriteError::Transient(m))
            } else {
                Err(WriteError::Permanent(m))
            }
        })
    }
}
