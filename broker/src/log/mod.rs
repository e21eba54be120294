//! The durable log: record batches as bytes (`batch`; built client-side by `batch_writer`), segments with sparse indexes (`segment`),
//! and the per-partition log with group commit, reads, lookups and retention (`partition`).

pub mod batch;
pub mod batch_writer;
pub mod partition;
pub mod producers;
pub mod segment;
