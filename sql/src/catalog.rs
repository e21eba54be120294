//! The lake's tables in a DataFusion session: each folder at the lake's root is a table (a
//! topic), read through `LakeView`, with `date` (DATE) and `hour` (INT) partition columns that
//! prune folders. A table's schema is the union of its files' columns (`trib_lake::schema`);
//! file schemas are cached by key (files are immutable), so a refresh reads only new footers.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStore};
use tokio::sync::Mutex;
use trib_lake::LakeStore;

use crate::view_store::LakeView;
use crate::SqlError;

/// A SQL session over the lake.
pub struct SqlLake {
    store: LakeStore,
    view: Arc<dyn ObjectStore>,
    ctx: SessionContext,
    schemas: Mutex<HashMap<String, SchemaRef>>,
    /// Each table's columns (with `date` and `hour`), for `tail()`.
    tables: crate::live::TableSchemas,
}

/// The partition columns of every table.
pub fn partition_cols() -> Vec<(String, DataType)> {
    vec![
        ("date".to_string(), DataType::Date32),
        ("hour".to_string(), DataType::Int32),
    ]
}

impl SqlLake {
    /// A session over the lake at `store`, with its tables registered.
    pub async fn open(store: LakeStore) -> Result<Self, SqlError> {
        let (inner, base, _) = store.parts();
        let view: Arc<dyn ObjectStore> = Arc::new(LakeView::new(inner));
        // No cached listings: the lake grows and compacts while a server runs.
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()?;
        let config = SessionConfig::new().with_information_schema(true);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(crate::filter_and::FilterAnd))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_object_store(&base, view.clone());
        let lake = Self {
            store,
            view,
            ctx,
            schemas: Mutex::new(HashMap::new()),
            tables: Default::default(),
        };
        lake.refresh().await?;
        Ok(lake)
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn store(&self) -> &LakeStore {
        &self.store
    }

    /// Registers every table of the lake again, with its current columns; returns the names.
    pub async fn refresh(&self) -> Result<Vec<String>, SqlError> {
        let names = self.store.tables().await?;
        let (_, base, prefix) = self.store.parts();
        for name in &names {
            let url = format!(
                "{}{}/{}/",
                base.as_str().trim_end_matches('/'),
                if prefix.as_ref().is_empty() {
                    String::new()
                } else {
                    format!("/{prefix}")
                },
                name
            );
            let Some(schema) = self.table_schema(&url).await? else {
                continue;
            };
            let table_url = ListingTableUrl::parse(&url)?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(partition_cols());
            let config = ListingTableConfig::new(table_url)
                .with_listing_options(options)
                .with_schema(schema);
            let table = ListingTable::try_new(config)?;
            if let Ok(mut t) = self.tables.write() {
                t.insert(name.clone(), table.schema());
            }
            self.ctx.deregister_table(name.as_str())?;
            self.ctx.register_table(name.as_str(), Arc::new(table))?;
        }
        Ok(names)
    }

    /// The union of the columns of a table's visible files (None: no files yet).
    async fn table_schema(&self, url: &str) -> Result<Option<SchemaRef>, SqlError> {
        let table_url = ListingTableUrl::parse(url)?;
        let metas: Vec<ObjectMeta> = self
            .view
            .list(Some(table_url.prefix()))
            .try_filter(|m| futures::future::ready(m.location.as_ref().ends_with(".parquet")))
            .try_collect()
            .await
            .map_err(datafusion::error::DataFusionError::from)?;
        if metas.is_empty() {
            return Ok(None);
        }
        // Footers are read without holding the cache, so queries of a server do not wait on
        // another's reads.
        let known: HashMap<String, SchemaRef> = {
            let cache = self.schemas.lock().await;
            metas
                .iter()
                .filter_map(|m| {
                    let k = m.location.to_string();
                    cache.get(&k).map(|s| (k, s.clone()))
                })
                .collect()
        };
        let format = ParquetFormat::default();
        let state = self.ctx.state();
        let mut schemas = Vec::with_capacity(metas.len());
        let mut new = Vec::new();
        for m in metas {
            let key = m.location.to_string();
            let s = match known.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let s = format
                        .infer_schema(&state, &self.view, std::slice::from_ref(&m))
                        .await?;
                    new.push((key, s.clone()));
                    s
                }
            };
            schemas.push(s);
        }
        self.schemas.lock().await.extend(new);
        // Files that changed shape in the same table are merged; the folder columns are not
        // file columns.
        let mut merged = trib_lake::schema::merge(&schemas);
        merged = arrow::datatypes::Schema::new(
            merged
                .fields()
                .iter()
                .filter(|f| f.name() != "date" && f.name() != "hour")
                .cloned()
                .collect::<Vec<_>>(),
        );
        Ok(Some(Arc::new(merged)))
    }

    /// Adds `tail('<topic>')`, reading from the broker at `brokers` (`live`); with the
    /// broker's HTTP endpoint `index_http`, equalities on indexed fields use its field index.
    pub fn enable_tail(&self, brokers: &str, index_http: Option<&str>) {
        self.ctx.register_udtf(
            "tail",
            Arc::new(crate::live::TailFunction {
                brokers: brokers.to_string(),
                index_http: index_http.map(str::to_string),
                store: self.store.clone(),
                schemas: self.tables.clone(),
            }),
        );
    }

    /// Runs one statement; returns its schema and rows.
    pub async fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), SqlError> {
        let df = self.ctx.sql(sql).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok((schema, batches))
    }
}
