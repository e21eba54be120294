//! The one shape of a metric sample as an event, shared by the `host_metrics` and
//! `prometheus_scrape` sources: `metric`, `value`, `type`, `tags`, `host`.

use std::sync::Arc;

use serde_json::{Map, Number, Value};
use trib_pipelines::event::Event;

/// A metric event; None for a value JSON cannot hold (NaN, infinities).
pub fn metric_event(
    source: &Arc<str>,
    metric: String,
    value: f64,
    kind: String,
    tags: Map<String, Value>,
    host: &str,
) -> Option<Event> {
    let value = Number::from_f64(value)?;
    let mut f = Map::new();
    f.insert("metric".into(), Value::String(metric));
    f.insert("value".into(), Value::Number(value));
    f.insert("type".into(), Value::String(kind));
    f.insert("tags".into(), Value::Object(tags));
    f.insert("host".into(), Value::String(host.to_string()));
    let mut e = Event::from_fields(f);
    e.meta.source = source.clone();
    Some(e)
}
