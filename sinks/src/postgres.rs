//! The PostgreSQL sink: `COPY table (columns) FROM STDIN` in text format, one transaction per
//! batch. When the server refuses a batch for its data (SQLSTATE classes 22 and 23), the batch
//! is split in halves until the refused rows are found; those go to `dead_letter` with the
//! server's message and the rest is written. Connection failures are retried with backoff.

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::SinkExt;
use serde_json::Value;
use tokio_postgres::{Client, NoTls};
use trib_pipelines::config::sinks::PostgresSink;
use trib_pipelines::event::{get_path, Event};
use trib_pipelines::runtime::{Sink, SinkContext};

use crate::batching::{self, BatchWriter, WriteError};

pub struct Postgres {
    cfg: PostgresSink,
}

impl Postgres {
    pub fn new(c: &PostgresSink) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !c.columns.is_empty(),
            "columns: map at least one column to a field"
        );
        anyhow::ensure!(!c.table.is_empty(), "table: must not be empty");
        c.url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| anyhow::anyhow!("url: {e}"))?;
        Ok(Self { cfg: c.clone() })
    }
}

/// `"a"."b"` from `a.b`, doubling quotes inside names.
fn quote_ident(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// Appends one value in COPY text format.
fn copy_value(out: &mut Vec<u8>, v: Option<&Value>) {
    let text = match v {
        None | Some(Value::Null) => {
            out.extend_from_slice(b"\\N");
            return;
        }
        Some(Value::String(s)) => std::borrow::Cow::Borrowed(s.as_str()),
        Some(other) => std::borrow::Cow::Owned(other.to_string()),
    };
    for b in text.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

impl Sink for Postgres {
    fn run(self: Box<Self>, cx: SinkContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let columns: Vec<String> = self.cfg.columns.keys().map(|c| quote_ident(c)).collect();
            let statement = format!(
                "COPY {} ({}) FROM STDIN",
                quote_ident(&self.cfg.table),
                columns.join(", ")
            );
            let w = Writer {
                fields: self.cfg.columns.values().cloned().collect(),
                statement,
                url: self.cfg.url.clone(),
                client: None,
                metrics: cx.metrics.clone(),
            };
            batching::run(cx, &self.cfg.batch, &self.cfg.retry, w).await
        })
    }
}

struct Writer {
    fields: Vec<String>,
    statement: String,
    url: String,
    client: Option<Client>,
    metrics: trib_pipelines::metrics::ComponentMetrics,
}

enum CopyError {
    /// The data of this batch is refused (SQLSTATE 22xxx / 23xxx).
    Data(String),
    Other(String),
}

impl Writer {
    async fn client(&mut self) -> Result<&mut Client, WriteError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
                .await
                .map_err(|e| WriteError::Transient(format!("cannot connect to PostgreSQL: {e}")))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!(error = %e, "postgres connection ended");
                }
            });
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| WriteError::Transient("no connection".into()))
    }

    fn rows(&self, events: &[Event]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(events.len() * 64);
        for e in events {
            let json;
            let fields = if e.fields.is_empty() {
                json = match e.to_json() {
                    Value::Object(m) => m,
                    _ => Default::default(),
                };
                &json
            } else {
                &e.fields
            };
            for (i, f) in self.fields.iter().enumerate() {
                if i > 0 {
                    buf.push(b'\t');
                }
                copy_value(&mut buf, get_path(fields, f));
            }
            buf.push(b'\n');
        }
        buf
    }

    async fn copy(&mut self, events: &[Event]) -> Result<u64, CopyError> {
        let rows = Bytes::from(self.rows(events));
        let n = rows.len() as u64;
        let statement = self.statement.clone();
        let client = self
            .client()
            .await
            .map_err(|e| CopyError::Other(e.to_string()))?;
        let classify = |e: tokio_postgres::Error| -> CopyError {
            match e.code().map(|c| c.code().to_string()) {
                Some(c) if c.starts_with("22") || c.starts_with("23") => CopyError::Data(
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.message().to_string()),
                ),
                Some(c) if c.starts_with("42") => {
                    CopyError::Data(format!("{e} (check `table` and `columns`)"))
                }
                _ => CopyError::Other(e.to_string()),
            }
        };
        let tx = client.transaction().await.map_err(classify)?;
        let sink = tx.copy_in(&statement).await.map_err(classify)?;
        futures::pin_mut!(sink);
        sink.send(rows).await.map_err(classify)?;
        sink.finish().await.map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(n)
    }

    /// Writes `events`, splitting on data errors; returns refused rows (offset by `base`).
    fn write_split<'a>(
        &'a mut self,
        events: &'a [Event],
        base: usize,
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>, WriteError>> {
        Box::pin(async move {
            match self.copy(events).await {
                Ok(n) => {
                    self.metrics.bytes_out.inc_by(n);
                    Ok(Vec::new())
                }
                Err(CopyError::Other(m)) => {
                    self.client = None;
                    Err(WriteError::Transient(m))
                }
                Err(CopyError::Data(m)) if events.len() == 1 => Ok(vec![(base, m)]),
                Err(CopyError::Data(_)) => {
                    let mid = events.len() / 2;
                    let mut bad = self.write_split(&events[..mid], base).await?;
                    bad.extend(self.write_split(&events[mid..], base + mid).await?);
                    Ok(bad)
                }
            }
        })
    }
}

impl BatchWriter for Writer {
    fn write<'a>(
        &'a mut self,
        events: &'a [Event],
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>, WriteError>> {
        self.write_split(events, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes() {
        let mut b = Vec::new();
        copy_value(&mut b, Some(&Value::String("a\tb\\c\nd".into())));
        b.push(b'|');
        copy_value(&mut b, None);
        b.push(b'|');
        copy_value(&mut b, Some(&serde_json::json!({"x": 1})));
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "a\\tb\\\\c\\nd|\\N|{\"x\":1}"
        );
        assert_eq!(quote_ident("public.t\"x"), "\"public\".\"t\"\"x\"");
    }
}
