//! The pipeline file: `sources`, `transforms`, `sinks` (each a map of named, typed components)
//! and `tests`. [`load`] reads one, interpolating `${VAR}`, and reports every problem with
//! `file:line:column`; [`schema`] is its JSON Schema, generated from these types.

#[macro_use]
mod macros;
mod load;
pub mod mirror;
mod schema;
pub mod sinks;
pub mod sources;
mod tests;
pub mod transforms;

pub use load::{
    closest as closest_name, interpolate, load, load_str, ConfigError, ConfigErrors, Loaded,
    Position,
};
pub use schema::{reference_markdown, schema};
pub use sinks::SinkConfig;
pub use sources::SourceConfig;
pub use tests::{TestCase, TestInput, TestOutput};
pub use transforms::TransformConfig;

use indexmap::IndexMap;

/// A family of components (sources, transforms or sinks) with typed dispatch on `type`.
pub trait Family: Sized {
    const KINDS: &'static [&'static str];
    /// Deserializes the config of the given kind straight from the YAML node.
    fn deserialize_kind<'de, D: serde::Deserializer<'de>>(
        kind: &str,
        d: D,
    ) -> Result<Self, D::Error>;
}

/// Gives the `inputs` of a component config (none for sources).
pub trait HasInputs {
    fn inputs(&self) -> &[String];
}

/// A parsed pipeline file.
#[derive(Debug, Clone, Default)]
pub struct PipelineFile {
    pub sources: IndexMap<String, SourceConfig>,
    pub transforms: IndexMap<String, TransformConfig>,
    pub sinks: IndexMap<String, SinkConfig>,
    pub tests: Vec<TestCase>,
}
