//! Config types of the transforms. The transforms live in `crate::transforms`.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

node_config! {
    /// Parses JSON text into fields. Events that are not JSON objects go to `dead_letter`.
    pub struct ParseJson {
        /// Field holding the text (default: the raw event).
        #[serde(default)]
        pub field: Option<String>,
        /// Field to put the parsed object under (default: merge into the top level).
        #[serde(default)]
        pub target: Option<String>,
    }
}

node_config! {
    /// Parses text with a regular expression; each named capture group becomes a field.
    /// Text that does not match goes to `dead_letter`.
    pub struct ParseRegex {
        /// The pattern (Rust `regex` syntax, `(?P<name>...)` groups).
        pub pattern: String,
        /// Field holding the text (default: the raw event).
        #[serde(default)]
        pub field: Option<String>,
    }
}

node_config! {
    /// Parses logfmt (`key=value key2="quoted value"`) into fields.
    pub struct ParseLogfmt {
        /// Field holding the text (default: the raw event).
        #[serde(default)]
        pub field: Option<String>,
    }
}

node_config! {
    /// Parses syslog lines, RFC 5424 or RFC 3164, into `facility`, `severity`, `timestamp`,
    /// `hostname`, `appname`, `procid`, `msgid` and `message`.
    pub struct ParseSyslog {
        /// Field holding the text (default: the raw event).
        #[serde(default)]
        pub field: Option<String>,
    }
}

/// Access-log layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// Apache/NCSA common log format.
    Common,
    /// Apache/nginx combined format (common plus referrer and user agent).
    Combined,
}

node_config! {
    /// Parses web-server access logs into `client`, `ident`, `user`, `timestamp`, `method`,
    /// `path`, `protocol`, `status`, `bytes` (and `referrer`, `agent` for combined).
    pub struct ParseAccessLog {
        /// Layout.
        #[serde(default = "default_access_format")]
        pub format: AccessLogFormat,
        /// Field holding the text (default: the raw event).
        #[serde(default)]
        pub field: Option<String>,
    }
}

fn default_access_format() -> AccessLogFormat {
    AccessLogFormat::Combined
}

node_config! {
    /// Parses a timestamp field and sets the event time from it.
    pub struct ParseTimestamp {
        /// Field holding the timestamp.
        pub field: String,
        /// strftime format (e.g. `%d/%b/%Y:%H:%M:%S %z`); default: RFC 3339, or a number of
        /// seconds/milliseconds since the epoch.
        #[serde(default)]
        pub format: Option<String>,
        /// Rewrite the field as RFC 3339 text (default true).
        #[serde(default = "yes")]
        pub normalize: bool,
    }
}

fn yes() -> bool {
    true
}

node_config! {
    /// Keeps the events for which a CEL condition is true; drops the others.
    pub struct Filter {
        /// CEL condition over the event's fields (e.g. `status >= 500`).
        pub condition: String,
    }
}

node_config! {
    /// Sends each event to every named output whose condition holds (`inputs: [name.route]`);
    /// events that match none go to `name._unmatched`.
    pub struct Route {
        /// Output name → CEL condition.
        pub routes: IndexMap<String, String>,
    }
}

/// Types a field can be cast to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CastType {
    String,
    Int,
    Float,
    Bool,
}

node_config! {
    /// Reshapes fields, in this order: rename, cast, set, drop. Paths may be dotted (`a.b`).
    pub struct Fields {
        /// Old name → new name.
        #[serde(default)]
        pub rename: IndexMap<String, String>,
        /// Field → type. A value that does not convert sends the event to `dead_letter`.
        #[serde(default)]
        pub cast: IndexMap<String, CastType>,
        /// Field → CEL expression whose value is stored (e.g. `'prod'`, `bytes / 1024`).
        #[serde(default)]
        pub set: IndexMap<String, String>,
        /// Fields to remove.
        #[serde(default)]
        pub drop: Vec<String>,
    }
}

node_config! {
    /// Keeps one event in `rate`. With `key_field`, the choice is by a hash of that field, so
    /// all events of one key are kept or dropped together.
    pub struct Sample {
        /// Keep 1 in this many events.
        pub rate: u64,
        /// Field to sample by (default: every event counted).
        #[serde(default)]
        pub key_field: Option<String>,
    }
}

node_config! {
    /// Drops an event whose values of `fields` were seen within the window.
    pub struct Dedupe {
        /// Fields that identify a duplicate.
        pub fields: Vec<String>,
        /// How long a seen identity is remembered, in milliseconds.
        #[serde(default = "default_window")]
        pub window_ms: u64,
        /// Most identities remembered; the oldest are forgotten first.
        #[serde(default = "default_max_entries")]
        pub max_entries: usize,
    }
}

fn default_window() -> u64 {
    600_000
}
fn default_max_entries() -> usize {
    100_000
}

node_config! {
    /// Sets the outgoing Kafka record's key, topic or partition from CEL expressions.
    pub struct SetRecord {
        /// CEL expression for the key (its text form is used).
        #[serde(default)]
        pub key: Option<String>,
        /// CEL expression for the topic a Kafka sink writes to.
        #[serde(default)]
        pub topic: Option<String>,
        /// CEL expression for the partition (an integer).
        #[serde(default)]
        pub partition: Option<String>,
    }
}

family! {
    /// Any transform.
    pub enum TransformConfig {
        "parse_json" => ParseJson(ParseJson),
        "parse_regex" => ParseRegex(ParseRegex),
        "parse_logfmt" => ParseLogfmt(ParseLogfmt),
        "parse_syslog" => ParseSyslog(ParseSyslog),
        "parse_access_log" => ParseAccessLog(ParseAccessLog),
        "parse_timestamp" => ParseTimestamp(ParseTimestamp),
        "filter" => Filter(Filter),
        "route" => Route(Route),
        "fields" => Fields(Fields),
        "sample" => Sample(Sample),
        "dedupe" => Dedupe(Dedupe),
        "set_record" => SetRecord(SetRecord),
    }
}

impl TransformConfig {
    /// The named outputs besides the default one and `dead_letter`.
    pub fn named_outputs(&self) -> Vec<String> {
        match self {
            TransformConfig::Route(r) => r
                .routes
                .keys()
                .cloned()
                .chain(std::iter::once(crate::UNMATCHED.to_string()))
                .collect(),
            _ => Vec::new(),
        }
    }
}
