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
        // Bounds on _timestamp choose where to start; DataFusion still applies every filter.
        Ok(filters
            .iter()
            .map(|f| {
                if lower_bound(f).is_some() {
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
        let (brokers, topic) = (self.brokers.clone(), self.topic.clone());
        let events = tokio::task::spawn_blocking(move || read_tail(&brokers, &topic, &held, since))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(|e| DataFusionError::Execution(format!("tail('{}'): {e:#}", self.topic)))?;
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
