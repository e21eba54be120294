//! `tail('<topic>')`: the records of a topic still in the broker and not yet in the lake, as a
//! table with the lake table's columns (plus `date` and `hour`), so one query covers history
//! and tail without overlap:
//!
//! ```sql
//! SELECT status, count(*) FROM (
//!   SELECT status FROM orders WHERE _timestamp > now() - INTERVAL '1 day'
//!   UNION ALL
//!   SELECT status FROM tail('orders') WHERE _timestamp > now() - INTERVAL '1 day'
//! ) GROUP BY status;
//! ```
//!
//! Each partition is read from just after the lake's highest offset (or from the first record
//! at or after a `_timestamp >=`/`>` bound of the query, found by the broker's timestamp index,
//! whichever is later) up to its end when the query starts. At most `MAX_TAIL_RECORDS` records
//! are read; a longer tail is an error that says to narrow the time range or export first.
//!
//! With the broker's HTTP endpoint known (`trib sql --broker-http`), `column = literal`
//! predicates on columns the topic indexes (`index.fields` entries `value:$.<column>`) are
//! answered by the broker's field index instead: only the matching records are fetched. When
//! the index cannot answer completely (its limit), the tail is read as above.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arrow::array::{ArrayRef, Date32Array, Int32Array, RecordBatch};
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, DataFusionError, Result, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use trib_connectors::url_encode as enc;
use trib_lake::parquet_file::{record_batch, Encoding};
use trib_lake::LakeStore;
use trib_pipelines::config::sinks::LakeMode;
use trib_pipelines::event::Event;

/// The most records one `tail()` scan reads.
pub const MAX_TAIL_RECORDS: usize = 5_000_000;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The lake tables' columns by name, kept by the catalog.
pub type TableSchemas = Arc<RwLock<HashMap<String, SchemaRef>>>;

/// The `tail` table function.
#[derive(Debug)]
pub struct TailFunction {
    pub brokers: String,
    /// The broker's HTTP endpoint (host:port), for its field index.
    pub index_http: Option<String>,
    pub store: LakeStore,
    pub schemas: TableSchemas,
}

impl TableFunctionImpl for TailFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let topic = match args.exprs() {
            [Expr::Literal(ScalarValue::Utf8(Some(t)), _)] => t.clone(),
            _ => {
                return plan_err!("tail: one argument, the topic's name in quotes: tail('orders')")
            }
        };
        let schemas = self
            .schemas
            .read()
            .map_err(|_| DataFusionError::Internal("tail: schema map poisoned".into()))?;
        let Some(schema) = schemas.get(&topic).cloned() else {
            return plan_err!(
                "tail('{topic}'): the lake has no table `{topic}` yet (its columns are the table's); export some of it first"
            );
        };
        Ok(Arc::new(Tail {
            brokers: self.brokers.clone(),
            index_http: self.index_http.clone(),
            store: self.store.clone(),
            topic,
            schema,
        }))
    }
}

/// One `tail('<topic>')` table.
#[derive(Debug)]
struct Tail {
    brokers: String,
    index_http: Option<String>,
    store: LakeStore,
    topic: String,
    /// The lake table's columns, with `date` and `hour` last.
    schema: SchemaRef,
}

/// The lowest event time a filter allows (ms), if it is a bound on `_timestamp`.
fn lower_bound(e: &Expr) -> Option<i64> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    let (Expr::Column(c), Expr::Literal(v, _)) = (left.as_ref(), right.as_ref()) else {
        return None;
    };
    if c.name != "_timestamp" || !matches!(op, Operator::Gt | Operator::GtEq) {
        return None;
    }
    match v {
        ScalarValue::TimestampSecond(Some(s), _) => Some(s * 1000),
        ScalarValue::TimestampMillisecond(Some(ms), _) => Some(*ms),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Some(us / 1000),
        ScalarValue::TimestampNanosecond(Some(ns), _) => Some(ns / 1_000_000),
        _ => None,
    }
}

/// A `column = literal` filter as (column, the literal's text).
fn equality(e: &Expr) -> Option<(String, String)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    if *op != Operator::Eq {
        return None;
    }
    let (c, v) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => (c, v),
        _ => return None,
    };
    let text = match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.clone(),
        ScalarValue::Int64(Some(n)) => n.to_string(),
        ScalarValue::Int32(Some(n)) => n.to_string(),
        ScalarValue::Boolean(Some(b)) => b.to_string(),
        _ => return None,
    };
    Some((c.name.clone(), text))
}

/// The most records the field index is asked for; a larger answer falls back to reading.
const INDEX_LIMIT: usize = 100_000;

#[async_trait]
impl TableProvider for Tail {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Bounds on _timestamp choose where to start, equalities may go to the field index;
        // DataFusion still applies every filter.
        Ok(filters
            .iter()
            .map(|f| {
                if lower_bound(f).is_some() || equality(f).is_some() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let since = filters.iter().filter_map(lower_bound).max();
        let listing = self
            .store
            .list(&self.topic)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let held: HashMap<i32, i64> = trib_lake::layout::holdings(&listing)
            .committed
            .into_iter()
            .filter(|((t, _), _)| *t == self.topic)
            .map(|((_, p), o)| (p, o))
            .collect();
        let indexed = match &self.index_http {
            Some(http) => {
                let eqs: Vec<(String, String)> = filters.iter().filter_map(equality).collect();
                from_index(http, &self.topic, &eqs, since, &held).await
            }
            None => None,
        };
        let events = match indexed {
            Some(events) => events,
            None => {
                let (brokers, topic) = (self.brokers.clone(), self.topic.clone());
                tokio::task::spawn_blocking(move || read_tail(&brokers, &topic, &held, since))
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?
                    .map_err(|e| {
                        DataFusionError::Execution(format!("tail('{}'): {e:#}", self.topic))
                    })?
            }
        };
        let batch = self.to_batch(&events)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

impl Tail {
    /// The events in the table's columns.
    fn to_batch(&self, events: &[Event]) -> Result<RecordBatch> {
        if events.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let enc = Encoding {
            mode: LakeMode::Json,
            schema: Vec::new(),
        };
        let (rows, _) =
            record_batch(events, &enc).map_err(|e| DataFusionError::External(e.into()))?;
        let n = self.schema.fields().len();
        let file_cols: SchemaRef = Arc::new(Schema::new(self.schema.fields()[..n - 2].to_vec()));
        let rows = trib_lake::schema::conform(&rows, &file_cols)?;
        let ts: Vec<i64> = events.iter().map(|e| e.timestamp_ms).collect();
        let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
        columns.push(Arc::new(Date32Array::from_iter_values(
            ts.iter().map(|t| t.div_euclid(86_400_000) as i32),
        )));
        columns.push(Arc::new(Int32Array::from_iter_values(
            ts.iter()
                .map(|t| t.div_euclid(3_600_000).rem_euclid(24) as i32),
        )));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// The tail's records matching `eqs` on indexed columns, from the broker's field index; None
/// when no equality is on an indexed column, the index cannot answer completely, or the
/// endpoint does not answer (then the tail is read).
async fn from_index(
    http: &str,
    topic: &str,
    eqs: &[(String, String)],
    since: Option<i64>,
    held: &HashMap<i32, i64>,
) -> Option<Vec<Event>> {
    if eqs.is_empty() {
        return None;
    }
    let call = |path: String| async move {
        let url = format!("http://{}{path}", http.trim_start_matches("http://"));
        match trib_connectors::http_call("GET", &url, TIMEOUT).await {
            Ok((200, _, body)) => serde_json::from_str::<serde_json::Value>(&body).ok(),
            Ok((_, line, body)) => {
                tracing::debug!(%url, %line, %body, "field index did not answer");
                None
            }
            Err(e) => {
                tracing::warn!(%url, error = %e, "field index unreachable; reading the tail");
                None
            }
        }
    };
    let status = call(format!("/index/status?topic={}", enc(topic))).await?;
    let fields = status["topics"][0]["fields"].as_array()?.clone();
    let mut q = format!("/index/query?topic={}&limit={INDEX_LIMIT}", enc(topic));
    let mut used = Vec::new();
    for (col, value) in eqs {
        let source = format!("value:$.{col}");
        if let Some(f) = fields.iter().find(|f| f["source"] == source.as_str()) {
            let name = f["name"].as_str()?;
            q.push_str(&format!("&where={}", enc(&format!("{name}={value}"))));
            used.push(col.as_str());
        }
    }
    if used.is_empty() {
        return None;
    }
    if let Some(ms) = since {
        q.push_str(&format!("&from={ms}"));
    }
    let answer = call(q).await?;
    if answer["complete"] != true {
        return None;
    }
    let (source, name): (Arc<str>, Arc<str>) = ("tail".into(), topic.into());
    let mut out = Vec::new();
    let hits = answer["hits"].as_array()?.clone();
    for h in &hits {
        let (p, o) = (h["partition"].as_i64()? as i32, h["offset"].as_i64()?);
        if held.get(&p).is_some_and(|last| o <= *last) {
            continue; // already in the lake
        }
        let bytes = |v: &serde_json::Value| v.as_str().map(|s| s.as_bytes().to_vec());
        let headers = h["headers"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone().into(), bytes(v).unwrap_or_default().into()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Event::from_record(
            &source,
            &name,
            p,
            o,
            h["timestamp"].as_i64()?,
            bytes(&h["key"]).as_deref(),
            bytes(&h["value"]).as_deref(),
            headers,
        ));
    }
    tracing::info!(topic, columns = ?used, records = out.len(), "tail: records found by the broker's field index");
    Some(out)
}

/// Reads each partition of `topic` from after `held` (or from `since`) to its current end.
fn read_tail(
    brokers: &str,
    topic: &str,
    held: &HashMap<i32, i64>,
    since: Option<i64>,
) -> anyhow::Result<Vec<Event>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "trib-sql-tail")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("log_level", "3")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        anyhow::bail!("no such topic in the broker at {brokers}");
    };
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    let mut total = 0i64;
    for p in t.partitions().iter().map(|p| p.id()) {
        let (low, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
        let mut start = held.get(&p).map_or(low, |o| o + 1).max(low);
        if let Some(ms) = since {
            let mut q = TopicPartitionList::new();
            q.add_partition_offset(topic, p, Offset::Offset(ms))?;
            let found = consumer.offsets_for_times(q, TIMEOUT)?;
            let at = match found.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) if o >= 0 => o,
                _ => high,
            };
            start = start.max(at);
        }
        if start < high {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            ends.insert(p, high);
            total += high - start;
        }
    }
    if total as usize > MAX_TAIL_RECORDS {
        anyhow::bail!(
            "{total} records to read (at most {MAX_TAIL_RECORDS}): bound `_timestamp` from below or export the topic first"
        );
    }
    let mut out = Vec::with_capacity(total as usize);
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let (source, name): (Arc<str>, Arc<str>) = ("tail".into(), topic.into());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the broker did not deliver the tail within 60 s"
        );
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        let p = m.partition();
        let Some(end) = ends.get(&p).copied() else {
            continue;
        };
        if m.offset() < end {
            out.push(trib_connectors::kafka::event_of(&source, &name, &m));
        }
        if m.offset() + 1 >= end {
            ends.remove(&p);
        }
    }
    Ok(out)
}
