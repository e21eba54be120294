//! The transforms, and the [`Transform`] trait they implement. A transform is synchronous: it
//! takes one event and pushes what it makes to [`Outputs`] (the default output, a named output
//! of a router, or `dead_letter` with the reason). The runtime runs each transform in its own
//! task; the test runner (`crate::unit_test`) calls it directly.

mod access_log;
mod condition;
mod fields;
mod parse;
mod sample;
mod syslog;
pub use syslog::parse_syslog;
mod timestamp;

use std::sync::Arc;

use serde_json::Value;

use crate::config::TransformConfig;
use crate::event::{get_path, Event, Fields};

/// A transform: one event in, any number out.
pub trait Transform: Send {
    fn process(&mut self, event: Event, out: &mut Outputs);
}

/// Where a transform's events go: port 0 is the default output, port 1 `dead_letter`, then the
/// named outputs in the order of [`TransformConfig::named_outputs`].
#[derive(Debug)]
pub struct Outputs {
    component: Arc<str>,
    pub ports: Vec<Vec<Event>>,
}

pub const DEFAULT_PORT: usize = 0;
pub const DEAD_LETTER_PORT: usize = 1;

impl Outputs {
    pub fn new(component: &str, named: usize) -> Self {
        Self {
            component: component.into(),
            ports: (0..2 + named).map(|_| Vec::new()).collect(),
        }
    }

    pub fn push(&mut self, e: Event) {
        self.ports[DEFAULT_PORT].push(e);
    }

    /// Sends to the `i`th named output.
    pub fn push_named(&mut self, i: usize, e: Event) {
        self.ports[2 + i].push(e);
    }

    /// Sends to `dead_letter`, with `_error` (the reason) and `_component` fields.
    pub fn reject(&mut self, e: Event, reason: impl Into<String>) {
        let e = dead_letter(e, &self.component, reason.into());
        self.ports[DEAD_LETTER_PORT].push(e);
    }

    pub fn is_empty(&self) -> bool {
        self.ports.iter().all(Vec::is_empty)
    }
}

/// Turns an event into its dead-letter form: structured, with the reason attached.
pub fn dead_letter(mut e: Event, component: &str, reason: String) -> Event {
    if e.fields.is_empty() {
        if let Value::Object(m) = e.to_json() {
            e.fields = m;
        }
    }
    e.raw = None;
    e.fields.insert("_error".into(), Value::String(reason));
    e.fields
        .insert("_component".into(), Value::String(component.to_string()));
    e
}

/// Builds a transform from its config. Pure: no I/O. The error names the option at fault.
pub fn build(cfg: &TransformConfig) -> Result<Box<dyn Transform>, String> {
    Ok(match cfg {
        TransformConfig::ParseJson(c) => Box::new(parse::Json::new(c)),
        TransformConfig::ParseRegex(c) => Box::new(parse::Regex::new(c)?),
        TransformConfig::ParseLogfmt(c) => Box::new(parse::Logfmt::new(c)),
        TransformConfig::ParseSyslog(c) => Box::new(syslog::Syslog::new(c)),
        TransformConfig::ParseAccessLog(c) => Box::new(access_log::AccessLog::new(c)),
        TransformConfig::ParseTimestamp(c) => Box::new(timestamp::ParseTimestamp::new(c)),
        TransformConfig::Filter(c) => Box::new(condition::Filter::new(c)?),
        TransformConfig::Route(c) => Box::new(condition::Route::new(c)?),
        TransformConfig::Fields(c) => Box::new(fields::FieldsOps::new(c)?),
        TransformConfig::Sample(c) => Box::new(sample::Sample::new(c)?),
        TransformConfig::Dedupe(c) => Box::new(sample::Dedupe::new(c)?),
        TransformConfig::SetRecord(c) => Box::new(fields::SetRecord::new(c)?),
    })
}

/// The text a parser reads: the named field, or the raw event.
fn input_text(e: &Event, field: &Option<String>) -> Result<String, String> {
    match field {
        None => e
            .raw_str()
            .map(|s| s.into_owned())
            .ok_or_else(|| "the event has no raw text to parse (set `field`)".to_string()),
        Some(f) => match get_path(&e.fields, f) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("field `{f}` is {other}, not text")),
            None => Err(format!("field `{f}` is missing")),
        },
    }
}

/// Stores parsed fields: the raw text is replaced by them.
fn store_parsed(e: &mut Event, parsed: Fields, from_raw: bool) {
    if from_raw {
        e.raw = None;
    }
    for (k, v) in parsed {
        e.fields.insert(k, v);
    }
}
