//! Tributary's lake: events exported as Parquet files into a folder or an object store,
//! Hive-partitioned by table and event time, exactly once for events read from Kafka.
//!
//! `store` is where objects live (local folder or S3/GCS/Azure); `layout` names the folders and
//! files and reads back, from a listing, which offsets are already in the lake and which files
//! a reader should see; `parquet_file` turns events into a Parquet file's bytes; `sink` is the
//! writer that groups events into files, rolls them, stores them and acknowledges their events
//! only once they are stored (the pipeline sink and `trib lake export` both drive it), on the
//! process's `encoders` threads;
//! `compact` merges small files; `schema` is the union of differing files' columns.

pub mod compact;
pub mod encoders;
pub mod layout;
pub mod parquet_file;
pub mod schema;
pub mod sink;
pub mod store;

pub use sink::{LakeSinkRunner, LakeWriter};
pub use store::LakeStore;
