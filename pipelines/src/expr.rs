//! Conditions and field expressions, in CEL (the Common Expression Language, through the `cel`
//! crate). An expression sees each top-level field of the event as a variable (a missing field
//! is `null`), plus `_raw` (the raw text), `_key`, `_topic`, `_partition`, `_offset`,
//! `_timestamp` (ms) and `_source`. Only the variables an expression names are converted, so a
//! condition on one field costs one conversion however wide the event.
//!
//! Why CEL and not VRL: the `cel` crate brings 48 crates into the build, VRL's compiler and
//! standard library 311 (see docs/pipelines.md for the measurements); CEL is a small,
//! side-effect-free language made for exactly this (filters and computed values), with a spec
//! and implementations in Go, Java and C++.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map as CelMap};
use cel::{Context, Program, Value as Cel};
use serde_json::{Number, Value};

use crate::event::Event;

/// A compile or evaluation failure, with the expression's text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} in `{source_text}`")]
pub struct ExprError {
    pub message: String,
    pub source_text: String,
}

/// A compiled expression.
pub struct Expr {
    text: String,
    program: Program,
    vars: Vec<String>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({})", self.text)
    }
}

impl Expr {
    pub fn compile(text: &str) -> Result<Self, ExprError> {
        let program = Program::compile(text).map_err(|e| ExprError {
            message: e.to_string().trim().replace('\n', "; "),
            source_text: text.to_string(),
        })?;
        let vars = program
            .references()
            .variables()
            .into_iter()
            .map(str::to_string)
            .collect();
        Ok(Self {
            text: text.to_string(),
            program,
            vars,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Evaluates against an event.
    pub fn eval(&self, e: &Event) -> Result<Value, ExprError> {
        let mut ctx = Context::with_env(env());
        for v in &self.vars {
            ctx.add_variable_from_value(v.as_str(), variable(e, v));
        }
        match self.program.execute(&ctx) {
            Ok(v) => Ok(from_cel(&v)),
            Err(err) => Err(ExprError {
                message: err.to_string(),
                source_text: self.text.clone(),
            }),
        }
    }

    /// Evaluates a condition: true only for a boolean true.
    pub fn test(&self, e: &Event) -> Result<bool, ExprError> {
        match self.eval(e)? {
            Value::Bool(b) => Ok(b),
            other => Err(ExprError {
                message: format!("the condition gave {other}, not a boolean"),
                source_text: self.text.clone(),
            }),
        }
    }
}

/// The standard library, built once.
fn env() -> Arc<cel::Env> {
    static ENV: std::sync::OnceLock<Arc<cel::Env>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib())).clone()
}

fn variable(e: &Event, name: &str) -> Cel {
    match name {
        "_raw" => e
            .raw_str()
            .map_or(Cel::Null, |s| Cel::String(Arc::new(s.into_owned()))),
        "_key" => e.key.as_ref().map_or(Cel::Null, |k| {
            Cel::String(Arc::new(String::from_utf8_lossy(k).into_owned()))
        }),
        "_topic" => e
            .meta
            .topic
            .as_ref()
            .map_or(Cel::Null, |t| Cel::String(Arc::new(t.to_string()))),
        "_partition" => e.meta.partition.map_or(Cel::Null, |p| Cel::Int(p.into())),
        "_offset" => e.meta.offset.map_or(Cel::Null, Cel::Int),
        "_timestamp" => Cel::Int(e.timestamp_ms),
        "_source" => Cel::String(Arc::new(e.meta.source.to_string())),
        field => e.fields.get(field).map_or(Cel::Null, to_cel),
    }
}

/// JSON to CEL.
pub fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Cel::Int(i)
            } else if let Some(u) = n.as_u64() {
                Cel::UInt(u)
            } else {
                Cel::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let map: HashMap<Key, Cel> = m
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            Cel::Map(CelMap { map: Arc::new(map) })
        }
    }
}

/// CEL to JSON.
pub fn from_cel(v: &Cel) -> Value {
    match v {
        Cel::Null => Value::Null,
        Cel::Bool(b) => Value::Bool(*b),
        Cel::Int(i) => Value::from(*i),
        Cel::UInt(u) => Value::from(*u),
        Cel::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Cel::String(s) => Value::String(s.to_string()),
        Cel::Bytes(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Cel::List(l) => Value::Array(l.iter().map(from_cel).collect()),
        Cel::Map(m) => Value::Object(
            m.map
                .iter()
                .map(|(k, v)| {
                    let k = match k {
                        Key::String(s) => s.to_string(),
                        Key::Int(i) => i.to_string(),
                        Key::Uint(u) => u.to_string(),
                        Key::Bool(b) => b.to_string(),
                    };
                    (k, from_cel(v))
                })
                .collect(),
        ),
        other => Value::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(v: Value) -> Event {
        let Value::Object(m) = v else { panic!() };
        Event::from_fields(m)
    }

    #[test]
    fn conditions_and_values() {
        let e = ev(json!({"status": 503, "path": "/api/x", "user": {"id": 7}}));
        assert!(Expr::compile("status >= 500").unwrap().test(&e).unwrap());
        assert!(Expr::compile("path.startsWith('/api')")
            .unwrap()
            .test(&e)
            .unwrap());
        assert!(!Expr::compile("missing == 1").unwrap().test(&e).unwrap());
        assert_eq!(
            Expr::compile("user.id * 2").unwrap().eval(&e).unwrap(),
            json!(14)
        );
        assert_eq!(
            Expr::compile("'p-' + path").unwrap().eval(&e).unwrap(),
            json!("p-/api/x")
        );
    }

    #[test]
    fn compile_error_names_the_expression() {
        let e = Expr::compile("status >=").unwrap_err();
        assert!(e.to_string().contains("`status >=`"), "{e}");
    }
}
