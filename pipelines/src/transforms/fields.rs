//! Field reshaping (`fields`: rename, cast, set, drop) and the outgoing record's key, topic and
//! partition (`set_record`).

use bytes::Bytes;
use serde_json::Value;

use super::{Outputs, Transform};
use crate::config::transforms::{self as cfg, CastType};
use crate::event::{remove_path, set_path, value_text, Event};
use crate::expr::Expr;

pub struct FieldsOps {
    rename: Vec<(String, String)>,
    cast: Vec<(String, CastType)>,
    set: Vec<(String, Expr)>,
    drop: Vec<String>,
}

impl FieldsOps {
    pub fn new(c: &cfg::Fields) -> Result<Self, String> {
        if c.rename.is_empty() && c.cast.is_empty() && c.set.is_empty() && c.drop.is_empty() {
            return Err("nothing to do: give at least one of rename, cast, set, drop".into());
        }
        let set = c
            .set
            .iter()
            .map(|(k, v)| {
                Expr::compile(v)
                    .map(|e| (k.clone(), e))
                    .map_err(|e| format!("set.{k}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            rename: c.rename.clone().into_iter().collect(),
            cast: c.cast.clone().into_iter().collect(),
            set,
            drop: c.drop.clone(),
        })
    }
}

/// Converts a value to the given type.
pub fn cast(v: &Value, to: CastType) -> Result<Value, String> {
    let fail = || format!("cannot cast {v} to {to:?}");
    Ok(match (to, v) {
        (CastType::String, Value::String(_)) => v.clone(),
        (CastType::String, other) => Value::String(other.to_string()),
        (CastType::Int, Value::Number(n)) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => Value::from(n.as_f64().ok_or_else(fail)? as i64),
        },
        (CastType::Int, Value::String(s)) => {
            Value::from(s.trim().parse::<i64>().map_err(|_| fail())?)
        }
        (CastType::Int, Value::Bool(b)) => Value::from(i64::from(*b)),
        (CastType::Float, Value::Number(n)) => Value::from(n.as_f64().ok_or_else(fail)?),
        (CastType::Float, Value::String(s)) => {
            Value::from(s.trim().parse::<f64>().map_err(|_| fail())?)
        }
        (CastType::Bool, Value::Bool(_)) => v.clone(),
        (CastType::Bool, Value::String(s)) => match s.as_str() {
            "true" | "yes" | "1" | "on" => Value::Bool(true),
            "false" | "no" | "0" | "off" | "" => Value::Bool(false),
            _ => return Err(fail()),
        },
        (CastType::Bool, Value::Number(n)) => Value::Bool(n.as_f64() != Some(0.0)),
        _ => return Err(fail()),
    })
}

impl Transform for FieldsOps {
    fn process(&mut self, mut e: Event, out: &mut Outputs) {
        for (from, to) in &self.rename {
            if let Some(v) = remove_path(&mut e.fields, from) {
                set_path(&mut e.fields, to, v);
            }
        }
        for (field, to) in &self.cast {
            let Some(v) = crate::event::get_path(&e.fields, field) else {
                continue;
            };
            match cast(v, *to) {
                Ok(v) => set_path(&mut e.fields, field, v),
                Err(m) => return out.reject(e, format!("field `{field}`: {m}")),
            }
        }
        for (field, expr) in &self.set {
            match expr.eval(&e) {
                Ok(v) => set_path(&mut e.fields, field, v),
                Err(m) => return out.reject(e, format!("set.{field}: {m}")),
            }
        }
        for field in &self.drop {
            remove_path(&mut e.fields, field);
        }
        out.push(e);
    }
}

pub struct SetRecord {
    key: Option<Expr>,
    topic: Option<Expr>,
    partition: Option<Expr>,
}

impl SetRecord {
    pub fn new(c: &cfg::SetRecord) -> Result<Self, String> {
        let compile = |name: &str, v: &Option<String>| -> Result<Option<Expr>, String> {
            v.as_deref()
                .map(|t| Expr::compile(t).map_err(|e| format!("{name}: {e}")))
                .transpose()
        };
        let s = Self {
            key: compile("key", &c.key)?,
            topic: compile("topic", &c.topic)?,
            partition: compile("partition", &c.partition)?,
        };
        if s.key.is_none() && s.topic.is_none() && s.partition.is_none() {
            return Err("nothing to do: give at least one of key, topic, partition".into());
        }
        Ok(s)
    }
}

impl Transform for SetRecord {
    fn process(&mut self, mut e: Event, out: &mut Outputs) {
        if let Some(k) = &self.key {
            match k.eval(&e) {
                Ok(Value::Null) => e.key = None,
                Ok(v) => e.key = Some(Bytes::from(value_text(&v))),
                Err(m) => return out.reject(e, format!("key: {m}")),
            }
        }
        if let Some(t) = &self.topic {
            match t.eval(&e) {
                Ok(Value::String(s)) if !s.is_empty() => e.meta.target_topic = Some(s.into()),
                Ok(v) => return out.reject(e, format!("topic: {v} is not a topic name")),
                Err(m) => return out.reject(e, format!("topic: {m}")),
            }
        }
        if let Some(p) = &self.partition {
            match p.eval(&e) {
                Ok(Value::Number(n))
                    if n.as_i64()
                        .is_some_and(|p| (0..=i32::MAX as i64).contains(&p)) =>
                {
                    e.meta.target_partition = n.as_i64().map(|p| p as i32);
                }
                Ok(v) => return out.reject(e, format!("partition: {v} is not a partition number")),
                Err(m) => return out.reject(e, format!("partition: {m}")),
            }
        }
        out.push(e);
    }
}
