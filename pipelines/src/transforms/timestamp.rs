//! Timestamp parsing: sets the event time from a field.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

use super::{Outputs, Transform};
use crate::config::transforms as cfg;
use crate::event::{get_path, set_path, Event};

pub struct ParseTimestamp {
    field: String,
    format: Option<String>,
    normalize: bool,
}

impl ParseTimestamp {
    pub fn new(c: &cfg::ParseTimestamp) -> Self {
        Self {
            field: c.field.clone(),
            format: c.format.clone(),
            normalize: c.normalize,
        }
    }
}

/// Parses `v` as a time: with a strftime format, else RFC 3339 or epoch seconds/milliseconds.
pub fn parse_time(v: &Value, format: Option<&str>) -> Result<DateTime<Utc>, String> {
    match (v, format) {
        (Value::String(s), Some(fmt)) => DateTime::parse_from_str(s, fmt)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| NaiveDateTime::parse_from_str(s, fmt).map(|n| Utc.from_utc_datetime(&n)))
            .map_err(|e| format!("`{s}` does not match the format `{fmt}`: {e}")),
        (Value::String(s), None) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| match s.parse::<f64>() {
                Ok(n) => epoch(n),
                Err(_) => Err(format!("`{s}` is not an RFC 3339 time (set `format`)")),
            }),
        (Value::Number(n), _) => epoch(n.as_f64().unwrap_or(f64::NAN)),
        (other, _) => Err(format!("{other} is not a time")),
    }
}

fn epoch(n: f64) -> Result<DateTime<Utc>, String> {
    // Below 10^11 it is seconds (until the year 5138), above it milliseconds.
    let ms = if n.abs() < 1e11 { n * 1000.0 } else { n };
    DateTime::from_timestamp_millis(ms as i64).ok_or_else(|| format!("{n} is out of range"))
}

impl Transform for ParseTimestamp {
    fn process(&mut self, mut e: Event, out: &mut Outputs) {
        let Some(v) = get_path(&e.fields, &self.field) else {
            let m = format!("field `{}` is missing", self.field);
            return out.reject(e, m);
        };
        match parse_time(v, self.format.as_deref()) {
            Ok(t) => {
                e.timestamp_ms = t.timestamp_millis();
                if self.normalize {
                    let text = t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                    set_path(&mut e.fields, &self.field, Value::String(text));
                }
                out.push(e);
            }
            Err(m) => out.reject(e, m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats() {
        let t = parse_time(&json!("2000-10-10T13:55:36-07:00"), None).unwrap();
        assert_eq!(t.timestamp(), 971211336);
        assert_eq!(parse_time(&json!(971211336), None).unwrap(), t);
        assert_eq!(parse_time(&json!(971211336000i64), None).unwrap(), t);
        let t2 = parse_time(
            &json!("10/Oct/2000:13:55:36 -0700"),
            Some("%d/%b/%Y:%H:%M:%S %z"),
        )
        .unwrap();
        assert_eq!(t2, t);
        assert!(parse_time(&json!("yesterday"), None).is_err());
    }
}
