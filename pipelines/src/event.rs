//! The event that flows through a pipeline, and its conversions to and from Kafka records.
//!
//! An event is either *raw* (the bytes a source received: a Kafka record value, a log line, an
//! HTTP body line), or *structured* (named fields), or both while a parse transform runs. Sinks
//! write [`Event::body`]: the JSON of the fields when there are any, else the raw bytes as
//! received, so a topic-to-topic pipeline moves records without decoding them.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::finalize::{Finalizer, Status};

/// Structured fields, in insertion order.
pub type Fields = Map<String, Value>;

/// A header name: usually a constant (`file`, `truncated`), so no allocation per event.
pub type HeaderName = std::borrow::Cow<'static, str>;

/// Where an event came from and where a sink should send it.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// The name of the source component that produced the event.
    pub source: Arc<str>,
    /// The Kafka topic, partition and offset it was read from, if any.
    pub topic: Option<Arc<str>>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    /// Set by the `route_to` transform: the topic and partition a Kafka sink writes to.
    pub target_topic: Option<Arc<str>>,
    pub target_partition: Option<i32>,
}

/// One event.
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub fields: Fields,
    /// The bytes as received, kept until a parse transform replaces them with fields.
    pub raw: Option<Bytes>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub headers: Vec<(HeaderName, Bytes)>,
    pub meta: Meta,
    finalizer: Option<Finalizer>,
}

impl Event {
    /// A raw event with the current time.
    pub fn raw(body: impl Into<Bytes>) -> Self {
        Self {
            raw: Some(body.into()),
            timestamp_ms: now_ms(),
            ..Self::default()
        }
    }

    /// A structured event with the current time.
    pub fn from_fields(fields: Fields) -> Self {
        Self {
            fields,
            timestamp_ms: now_ms(),
            ..Self::default()
        }
    }

    /// An event read from a Kafka record.
    #[allow(clippy::too_many_arguments)]
    pub fn from_record(
        source: &Arc<str>,
        topic: &Arc<str>,
        partition: i32,
        offset: i64,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Vec<(HeaderName, Bytes)>,
    ) -> Self {
        Self::from_record_bytes(
            source,
            topic,
            partition,
            offset,
            timestamp_ms,
            key.map(Bytes::copy_from_slice),
            Some(Bytes::copy_from_slice(value.unwrap_or_default())),
            headers,
        )
    }

    /// An event read from a Kafka record whose key and value are already shared bytes (no
    /// copy); a null value becomes an empty body, as in `from_record`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_record_bytes(
        source: &Arc<str>,
        topic: &Arc<str>,
        partition: i32,
        offset: i64,
        timestamp_ms: i64,
        key: Option<Bytes>,
        value: Option<Bytes>,
        headers: Vec<(HeaderName, Bytes)>,
    ) -> Self {
        Self {
            raw: Some(value.unwrap_or_default()),
            timestamp_ms,
            key,
            headers,
            meta: Meta {
                source: source.clone(),
                topic: Some(topic.clone()),
                partition: Some(partition),
                offset: Some(offset),
                ..Meta::default()
            },
            fields: Fields::new(),
            finalizer: None,
        }
    }

    /// Attaches the acknowledgement this event reports to.
    pub fn with_finalizer(mut self, f: Finalizer) -> Self {
        self.finalizer = Some(f);
        self
    }

    pub fn has_finalizer(&self) -> bool {
        self.finalizer.is_some()
    }

    /// The bytes a sink writes: the fields as JSON when there are any, else the raw bytes.
    pub fn body(&self) -> Bytes {
        if self.fields.is_empty() {
            if let Some(raw) = &self.raw {
                return raw.clone();
            }
        }
        Bytes::from(serde_json::to_vec(&self.fields).unwrap_or_default())
    }

    /// Appends [`Event::body`] to `out` without an intermediate buffer.
    pub fn write_body(&self, out: &mut Vec<u8>) {
        match &self.raw {
            Some(raw) if self.fields.is_empty() => out.extend_from_slice(raw),
            _ => {
                let _ = serde_json::to_writer(&mut *out, &self.fields);
            }
        }
    }

    /// The event as one JSON object: its fields, or `{"message": raw}` for a raw event.
    pub fn to_json(&self) -> Value {
        if self.fields.is_empty() {
            if let Some(raw) = &self.raw {
                let mut m = Fields::new();
                m.insert(
                    "message".into(),
                    Value::String(String::from_utf8_lossy(raw).into_owned()),
                );
                return Value::Object(m);
            }
        }
        Value::Object(self.fields.clone())
    }

    /// The raw bytes as text, if any.
    pub fn raw_str(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.raw.as_ref().map(|r| String::from_utf8_lossy(r))
    }

    /// Marks this copy delivered and drops it.
    pub fn deliver(mut self) {
        if let Some(f) = &mut self.finalizer {
            f.set(Status::Delivered);
        }
    }
}

/// Delivers every event of a batch.
pub fn deliver_all(events: impl IntoIterator<Item = Event>) {
    events.into_iter().for_each(Event::deliver);
}

/// Year, month, day, hour, minute, second (UTC) of Unix time `t` in seconds.
pub fn civil_utc(t: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads a dotted path (`a.b.c`) in the fields.
pub fn get_path<'a>(fields: &'a Fields, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = fields.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get(p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Writes a dotted path, creating objects on the way.
pub fn set_path(fields: &mut Fields, path: &str, value: Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut cur = fields;
    for p in parts {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Fields::new()));
        if !entry.is_object() {
            *entry = Value::Object(Fields::new());
        }
        let Value::Object(m) = entry else { return };
        cur = m;
    }
    cur.insert(last.to_string(), value);
}

/// Removes a dotted path and returns what was there.
pub fn remove_path(fields: &mut Fields, path: &str) -> Option<Value> {
    match path.rsplit_once('.') {
        None => fields.shift_remove(path),
        Some((parent, last)) => {
            let mut cur = fields;
            for p in parent.split('.') {
                cur = cur.get_mut(p)?.as_object_mut()?;
            }
            cur.shift_remove(last)
        }
    }
}

/// A field's value as text for keys, topics and messages: strings as-is, others as JSON.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_utc(971_211_336), (2000, 10, 10, 20, 55, 36));
        assert_eq!(super::civil_utc(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(super::civil_utc(1_700_000_000), (2023, 11, 14, 22, 13, 20));
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn body_is_raw_until_fields_exist() {
        let mut e = Event::raw("abc");
        assert_eq!(&e.body()[..], b"abc");
        e.fields.insert("a".into(), json!(1));
        assert_eq!(&e.body()[..], br#"{"a":1}"#);
    }

    #[test]
    fn dotted_paths() {
        let mut f = Fields::new();
        set_path(&mut f, "a.b", json!(1));
        assert_eq!(get_path(&f, "a.b"), Some(&json!(1)));
        assert_eq!(remove_path(&mut f, "a.b"), Some(json!(1)));
        assert_eq!(Value::Object(f), json!({"a": {}}));
    }
}
