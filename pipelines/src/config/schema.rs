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

/// The component reference of docs/pipelines.md, generated from the config types' doc
/// comments, types and defaults.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    for (title, kinds) in [
        ("Sources", SourceConfig::root_schemas()),
        ("Transforms", TransformConfig::root_schemas()),
        ("Sinks", SinkConfig::root_schemas()),
    ] {
        out.push_str(&format!("### {title}\n\n"));
        for (kind, schema) in kinds {
            let v = schema.to_value();
            out.push_str(&format!("#### `{kind}`\n\n"));
            if let Some(d) = v.get("description").and_then(Value::as_str) {
                out.push_str(&format!("{}\n\n", one_line(d)));
            }
            out.push_str("| key | type | default | meaning |\n| --- | --- | --- | --- |\n");
            let required: Vec<&str> = v
                .get("required")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let defs = v.get("$defs").cloned().unwrap_or(Value::Null);
            if let Some(props) = v.get("properties").and_then(Value::as_object) {
                for (key, p) in props {
                    let default = match p.get("default") {
                        Some(d) => format!("`{d}`"),
                        None if required.contains(&key.as_str()) => "required".into(),
                        None => "none".into(),
                    };
                    let meaning = p
                        .get("description")
                        .and_then(Value::as_str)
                        .map(one_line)
                        .unwrap_or_default();
                    let meaning = if key == "type" {
                        format!("`{kind}`")
                    } else {
                        meaning
                    };
                    out.push_str(&format!(
                        "| `{key}` | {} | {default} | {meaning} |\n",
                        type_name(p, &defs)
                    ));
                }
            }
            out.push('\n');
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn type_name(p: &Value, defs: &Value) -> String {
    if let Some(r) = p.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        let def = defs.get(name).cloned().unwrap_or(Value::Null);
        let consts: Vec<String> = def
            .get("oneOf")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| {
                        x.get("const")
                            .or_else(|| x.get("enum").and_then(|e| e.get(0)))
                            .and_then(Value::as_str)
                            .map(|s| format!("`{s}`"))
                    })
                    .collect()
            })
            .or_else(|| {
                def.get("enum").and_then(Value::as_array).map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|s| format!("`{s}`"))
                        .collect()
                })
            })
            .unwrap_or_default();
        return if consts.is_empty() {
            format!("{name} (see below)")
        } else {
            consts.join(" \\| ")
        };
    }
    if let Some(any) = p.get("anyOf").and_then(Value::as_array) {
        let parts: Vec<String> = any
            .iter()
            .filter(|x| x.get("type").and_then(Value::as_str) != Some("null"))
            .map(|x| type_name(x, defs))
            .collect();
        return parts.join(" or ");
    }
    match p.get("type") {
        Some(Value::String(t)) if t == "array" => {
            let item = p
                .get("items")
                .map(|i| type_name(i, defs))
                .unwrap_or_default();
            format!("list of {item}")
        }
        Some(Value::String(t)) if t == "object" => "map".into(),
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn docs_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/pipelines.md");
        let doc = std::fs::read_to_string(path).expect("docs/pipelines.md");
        let start = doc
            .find("<!-- reference:start -->\n")
            .expect("start marker")
            + 25;
        let end = doc.find("<!-- reference:end -->").expect("end marker");
        assert!(
            doc[start..end] == super::reference_markdown(),
            "docs/pipelines.md is out of date: replace its reference with `trib pipeline reference`"
        );
    }

    #[test]
    fn schema_lists_every_kind() {
        let s = super::schema().to_string();
        for k in [
            "demo",
            "kafka",
            "parse_access_log",
            "route",
            "postgres",
            "http",
        ] {
            assert!(s.contains(&format!("\"const\":\"{k}\"")), "{k}");
        }
    }
}
