//! Tributary's lake: events exported as Parquet files into a folder, Hive-partitioned by table
//! and event time, exactly once for events read from Kafka.
//!
//! `layout` names the folders and files and reads back, from the file names, which offsets
//! are already in the lake; `parquet_file` turns events into a Parquet file's bytes; `sink` is
//! the pipeline sink that groups events into files, rolls them, writes them atomically and
//! acknowledges their events only once they are stored.

pub mod layout;
pub mod parquet_file;
pub mod sink;

pub use sink::LakeSinkRunner;
