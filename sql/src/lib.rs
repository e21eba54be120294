//! SQL over Tributary's lake, with DataFusion.
//!
//! `catalog` registers each lake table (a topic) with its partition columns; `view_store` is
//! the lake as readers should see it (no superseded or partial files); `output` writes results
//! as a table, CSV, JSON or Parquet; `prompt` is the interactive prompt; `http` answers queries
//! over HTTP as JSON or Arrow IPC; `live` is `tail('<topic>')`, the part of a topic not yet in
//! the lake, read from the broker; `filter_and` evaluates the `AND` of a filter in one step.

pub mod catalog;
pub mod filter_and;
pub mod http;
pub mod live;
pub mod output;
pub mod prompt;
pub mod view_store;

pub use catalog::SqlLake;
pub use output::Format;

/// Errors of SQL over the lake.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(transparent)]
    DataFusion(Box<datafusion::error::DataFusionError>),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Lake(#[from] trib_lake::store::StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<datafusion::error::DataFusionError> for SqlError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Self::DataFusion(Box::new(e))
    }
}
