//! The JSON Schema of pipeline files, generated from the config types, for editors
//! (`# yaml-language-server: $schema=...`) and for `trib pipeline schema`.

use schemars::{json_schema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::{SinkConfig, SourceConfig, TestCase, TransformConfig};

/// The schema of a whole pipeline file.
pub fn schema() -> Value {
    let mut gen = SchemaGenerator::default();
    let family = |kinds: Vec<(&'static str, Schema)>| -> Value {
        let one_of: Vec<Value> = kinds
            .into_iter()
            .map(|(kind, s)| {
                json!({
                    "allOf": [s.to_value()],
                    "properties": {"type": {"const": kind}},
                    "required": ["type"]
                })
            })
            .collect();
        json!({"type": "object", "additionalProperties": {"oneOf": one_of}})
    };
    let sources = family(SourceConfig::schemas(&mut gen));
    let transforms = family(TransformConfig::schemas(&mut gen));
    let sinks = family(SinkConfig::schemas(&mut gen));
    let tests: Schema = gen.subschema_for::<Vec<TestCase>>();
    let defs: Map<String, Value> = gen.take_definitions(true).into_iter().collect();
    let root: Schema = json_schema!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Tributary pipeline",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "sources": sources,
            "transforms": transforms,
            "sinks": sinks,
            "tests": tests,
        },
        "$defs": defs,
    });
    root.to_value()
}
