//! Tributary pipelines: the event model, the YAML pipeline file with its validator, the graph
//! runtime with end-to-end acknowledgements, and the transforms. Sources and sinks are built by
//! the `trib-connectors` and `trib-sinks` crates through [`runtime::Components`].

#[cfg(feature = "arrow")]
pub mod arrow;
pub mod config;
pub mod disk_buffer;
pub mod event;
pub mod expr;
pub mod finalize;
pub mod http;
pub mod metrics;
pub mod runtime;
pub mod state_file;
pub mod supervisor;
pub mod transforms;
pub mod unit_test;
pub mod validate;

/// The output of a `route` transform that takes events no route matched.
pub const UNMATCHED: &str = "_unmatched";
/// The output every transform and sink sends rejected events to.
pub const DEAD_LETTER: &str = "dead_letter";
