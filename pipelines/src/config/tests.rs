//! Config types of the unit tests written in a pipeline file's `tests:` section.

use serde::{Deserialize, Serialize};

/// One test: events given to transforms, and what must come out where.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// Events to feed, in order.
    pub inputs: Vec<TestInput>,
    /// What each named output must have produced.
    pub outputs: Vec<TestOutput>,
}

/// An event fed to a transform.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestInput {
    /// The transform that receives the event.
    pub into: String,
    /// A raw event (a log line).
    #[serde(default)]
    pub raw: Option<String>,
    /// A structured event.
    #[serde(default)]
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The expectation on one output (`component` or `component.port`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestOutput {
    pub from: String,
    /// Exactly these events, in order (each as its JSON object).
    #[serde(default)]
    pub events: Option<Vec<serde_json::Value>>,
    /// Exactly this many events.
    #[serde(default)]
    pub count: Option<usize>,
    /// CEL conditions every event must satisfy.
    #[serde(default)]
    pub conditions: Vec<String>,
}
