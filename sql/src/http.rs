//! The HTTP query endpoint (`trib sql --serve`): `GET /query?sql=…&format=json|arrow` or
//! `POST /query` with `{"sql": "…", "format": "json"|"arrow"}` answers with the rows as a JSON
//! array or an Arrow IPC stream; an error is `400 {"error": "…"}`. The lake's tables are
//! refreshed before each query, so new files and tables show up. `/health` and `/metrics`
//! (Prometheus text) are there for operators.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::{output, SqlLake};

/// One query request.
#[derive(Debug, Deserialize)]
pub struct QueryRequest {
    pub sql: String,
    #[serde(default)]
    pub format: Option<String>,
}

#[derive(Default)]
struct Counters {
    queries: AtomicU64,
    errors: AtomicU64,
    rows: AtomicU64,
    micros: AtomicU64,
}

struct AppState {
    lake: SqlLake,
    counters: Counters,
}

/// The endpoint's routes over `lake`.
pub fn router(lake: SqlLake) -> Router {
    let state = Arc::new(AppState {
        lake,
        counters: Counters::default(),
    });
    Router::new()
        .route("/query", get(query_get).post(query_post))
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn query_get(State(s): State<Arc<AppState>>, Query(q): Query<QueryRequest>) -> Response {
    answer(&s, q).await
}

async fn query_post(State(s): State<Arc<AppState>>, Json(q): Json<QueryRequest>) -> Response {
    answer(&s, q).await
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

async fn answer(s: &AppState, q: QueryRequest) -> Response {
    let started = Instant::now();
    s.counters.queries.fetch_add(1, Ordering::Relaxed);
    let arrow = match q.format.as_deref() {
        None | Some("json") => false,
        Some("arrow") => true,
        Some(f) => {
            s.counters.errors.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::BAD_REQUEST,
                format!("format: unknown `{f}` (json or arrow)"),
            );
        }
    };
    let result = async {
        s.lake.refresh().await?;
        let (schema, batches) = s.lake.query(&q.sql).await?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        s.counters.rows.fetch_add(rows as u64, Ordering::Relaxed);
        if arrow {
            Ok::<_, crate::SqlError>((
                "application/vnd.apache.arrow.stream",
                output::arrow_ipc(&schema, &batches)?,
            ))
        } else {
            Ok(("application/json", output::json_array(&batches)?))
        }
    }
    .await;
    s.counters
        .micros
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    match result {
        Ok((ctype, body)) => ([(header::CONTENT_TYPE, ctype)], body).into_response(),
        Err(e) => {
            s.counters.errors.fetch_add(1, Ordering::Relaxed);
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let c = &s.counters;
    let body = format!(
        "# TYPE trib_sql_queries_total counter\ntrib_sql_queries_total {}\n\
         # TYPE trib_sql_errors_total counter\ntrib_sql_errors_total {}\n\
         # TYPE trib_sql_rows_total counter\ntrib_sql_rows_total {}\n\
         # TYPE trib_sql_query_seconds_total counter\ntrib_sql_query_seconds_total {:.6}\n",
        c.queries.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed),
        c.rows.load(Ordering::Relaxed),
        c.micros.load(Ordering::Relaxed) as f64 / 1e6,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
