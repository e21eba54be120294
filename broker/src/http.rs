//! The HTTP endpoint: `/metrics` (Prometheus text), `/health` (JSON), and the field index:
//! `GET /index/query`, `GET /index/status`, `POST /index/rebuild` (docs/index.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::broker::Broker;
use crate::index::{Hit, IndexError, Query};

/// Serves metrics, health and index queries until the listener fails.
pub async fn serve(broker: Arc<Broker>, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "http endpoint: /metrics /health /index/query /index/status /index/rebuild");
    let metrics = broker.clone();
    let health = broker.clone();
    let (q, s, r) = (broker.clone(), broker.clone(), broker);
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
        )
        .route(
            "/index/query",
            get(move |RawQuery(raw): RawQuery| index_query(q.clone(), raw)),
        )
        .route(
            "/index/status",
            get(move |RawQuery(raw): RawQuery| index_status(s.clone(), raw)),
        )
        .route(
            "/index/rebuild",
            post(move |RawQuery(raw): RawQuery| index_rebuild(r.clone(), raw)),
        );
    axum::serve(listener, app).await
}

type Reply = (StatusCode, [(&'static str, &'static str); 1], String);

fn reply(status: StatusCode, body: Value) -> Reply {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
}

fn bad(status: StatusCode, msg: impl std::fmt::Display) -> Reply {
    reply(status, json!({ "error": msg.to_string() }))
}

/// The query string's pairs, percent-decoded, in order (repeated keys kept).
fn params(raw: Option<String>) -> Vec<(String, String)> {
    raw.unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(())
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(b: &Option<bytes::Bytes>) -> Value {
    b.as_ref().map_or(Value::Null, |b| {
        Value::String(String::from_utf8_lossy(b).into_owned())
    })
}

/// A hit as JSON: where it is, its timestamp, and the record (bytes as UTF-8 text).
pub fn hit_json(topic: &str, h: &Hit) -> Value {
    let headers: serde_json::Map<String, Value> = h
        .headers
        .iter()
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), text(v)))
        .collect();
    json!({
        "topic": topic,
        "partition": h.partition,
        "offset": h.offset,
        "timestamp": h.timestamp,
        "key": text(&h.key),
        "value": text(&h.value),
        "headers": headers,
    })
}

fn index_error(e: &IndexError) -> StatusCode {
    match e {
        IndexError::UnknownTopic(_) | IndexError::UnknownPartition(..) => StatusCode::NOT_FOUND,
        IndexError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn index_query(broker: Arc<Broker>, raw: Option<String>) -> Reply {
    let mut q = Query {
        limit: 100,
        ..Query::default()
    };
    for (k, v) in params(raw) {
        let num = |what: &str| {
            v.trim().parse::<i64>().map_err(|_| {
                format!(
                    "`{what}={v}`: not a whole number (milliseconds since the epoch for from/to)"
                )
            })
        };
        let r = match k.as_str() {
            "topic" => {
                q.topic = v.clone();
                Ok(())
            }
            "where" => match v.split_once('=') {
                Some((f, val)) => {
                    q.conditions.push((f.trim().to_string(), val.to_string()));
                    Ok(())
                }
                None => Err(format!("`where={v}`: expected field=value")),
            },
            "from" => num("from").map(|n| q.from = Some(n)),
            "to" => num("to").map(|n| q.to = Some(n)),
            "partition" => num("partition").and_then(|n| {
                i32::try_from(n)
                    .map(|p| q.partitions.push(p))
                    .map_err(|_| format!("`partition={v}`: out of range"))
            }),
            "limit" => num("limit").and_then(|n| {
                usize::try_from(n)
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .map(|n| q.limit = n)
                    .ok_or_else(|| format!("`limit={v}`: must be 1 to 100000"))
            }),
            other => Err(format!(
                "unknown parameter `{other}` (topic, where, from, to, partition, limit)"
            )),
        };
        if let Err(e) = r {
            return bad(StatusCode::BAD_REQUEST, e);
        }
    }
    if q.topic.is_empty() {
        return bad(StatusCode::BAD_REQUEST, "missing `topic`");
    }
    let Some(topic) = broker.topics.get(&q.topic) else {
        return bad(StatusCode::NOT_FOUND, IndexError::UnknownTopic(q.topic));
    };
    let started = Instant::now();
    let b = broker.clone();
    let t = topic.clone();
    let answer = tokio::task::spawn_blocking(move || b.index.query(&t, &q)).await;
    match answer {
        Ok(Ok(a)) => reply(
            StatusCode::OK,
            json!({
                "hits": a.hits.iter().map(|h| hit_json(&topic.name, h)).collect::<Vec<_>>(),
                "candidates": a.candidates,
                "scanned_bytes": a.scanned_bytes,
                "complete": a.complete,
                "took_ms": started.elapsed().as_secs_f64() * 1000.0,
            }),
        ),
        Ok(Err(e)) => bad(index_error(&e), e),
        Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The topic named by `topic=`, or a reply saying what is wrong.
fn topic_param(
    broker: &Broker,
    raw: Option<String>,
) -> Result<Option<Arc<crate::topics::Topic>>, Reply> {
    let mut name = None;
    for (k, v) in params(raw) {
        match k.as_str() {
            "topic" => name = Some(v),
            other => {
                return Err(bad(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter `{other}` (topic)"),
                ))
            }
        }
    }
    match name {
        None => Ok(None),
        Some(n) => broker
            .topics
            .get(&n)
            .map(Some)
            .ok_or_else(|| bad(StatusCode::NOT_FOUND, IndexError::UnknownTopic(n))),
    }
}

async fn index_status(broker: Arc<Broker>, raw: Option<String>) -> Reply {
    let topics = match topic_param(&broker, raw) {
        Ok(Some(t)) => vec![t],
        Ok(None) => broker
            .topics
            .list()
            .into_iter()
            .filter(|t| !t.config().index_fields.is_empty())
            .collect(),
        Err(r) => return r,
    };
    let b = broker.clone();
    match tokio::task::spawn_blocking(move || {
        topics.iter().map(|t| b.index.status(t)).collect::<Vec<_>>()
    })
    .await
    {
        Ok(s) => reply(StatusCode::OK, json!({ "topics": s })),
        Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn index_rebuild(broker: Arc<Broker>, raw: Option<String>) -> Reply {
    let topic = match topic_param(&broker, raw) {
        Ok(Some(t)) => t,
        Ok(None) => return bad(StatusCode::BAD_REQUEST, "missing `topic`"),
        Err(r) => return r,
    };
    let b = broker.clone();
    match tokio::task::spawn_blocking(move || b.index.rebuild(&topic)).await {
        Ok(Ok(n)) => reply(StatusCode::OK, json!({ "removed_files": n })),
        Ok(Err(e)) => bad(index_error(&e), e),
        Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_strings_decode() {
        let p = super::params(Some("where=user%3D4%202&where=a=b+c&x=%zz&y=%4".into()));
        assert_eq!(p[0], ("where".into(), "user=4 2".into()));
        assert_eq!(p[1], ("where".into(), "a=b c".into()));
        assert_eq!(p[2], ("x".into(), "%zz".into()));
        assert_eq!(p[3], ("y".into(), "%4".into()));
    }
}
