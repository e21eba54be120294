//! Web-server access logs: the common log format and the combined format of Apache and nginx.

use std::sync::LazyLock;

use serde_json::Value;

use super::{input_text, store_parsed, Outputs, Transform};
use crate::config::transforms::{self as cfg, AccessLogFormat};
use crate::event::{Event, Fields};

static LINE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        r#"^(\S+) (\S+) (\S+) \[([^\]]+)\] "(\S+) (\S+)(?: (\S+))?" (\d{3}) (\d+|-)(?: "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)")?"#,
    )
    .expect("static pattern")
});

pub struct AccessLog {
    format: AccessLogFormat,
    field: Option<String>,
}

impl AccessLog {
    pub fn new(c: &cfg::ParseAccessLog) -> Self {
        Self {
            format: c.format,
            field: c.field.clone(),
        }
    }
}

/// Parses one access-log line; `timestamp` becomes RFC 3339 text.
pub fn parse_access_log(line: &str, format: AccessLogFormat) -> Result<Fields, String> {
    let c = LINE
        .captures(line)
        .ok_or("not an access-log line (common or combined format)")?;
    if format == AccessLogFormat::Combined && c.get(10).is_none() {
        return Err(
            "no referrer and user agent: a common-format line (set `format: common`)".into(),
        );
    }
    let text = |i: usize| -> Value {
        match c.get(i).map(|m| m.as_str()) {
            None | Some("-") => Value::Null,
            Some(s) => Value::String(s.to_string()),
        }
    };
    let mut f = Fields::new();
    f.insert("client".into(), text(1));
    f.insert("ident".into(), text(2));
    f.insert("user".into(), text(3));
    let ts = match chrono::DateTime::parse_from_str(&c[4], "%d/%b/%Y:%H:%M:%S %z") {
        Ok(t) => Value::String(t.to_rfc3339()),
        Err(_) => Value::String(c[4].to_string()),
    };
    f.insert("timestamp".into(), ts);
    f.insert("method".into(), text(5));
    f.insert("path".into(), text(6));
    f.insert("protocol".into(), text(7));
    f.insert(
        "status".into(),
        Value::from(c[8].parse::<u16>().unwrap_or_default()),
    );
    f.insert(
        "bytes".into(),
        c[9].parse::<u64>().map_or(Value::from(0), Value::from),
    );
    if format == AccessLogFormat::Combined {
        f.insert("referrer".into(), text(10));
        f.insert("agent".into(), text(11));
    }
    Ok(f)
}

impl Transform for AccessLog {
    fn process(&mut self, mut e: Event, out: &mut Outputs) {
        match input_text(&e, &self.field).and_then(|t| parse_access_log(&t, self.format)) {
            Ok(f) => {
                store_parsed(&mut e, f, self.field.is_none());
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
    fn combined_and_common() {
        let l = r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://x/" "Mozilla/4.08""#;
        let f = parse_access_log(l, AccessLogFormat::Combined).unwrap();
        assert_eq!(
            Value::Object(f),
            json!({"client": "127.0.0.1", "ident": null, "user": "frank",
                   "timestamp": "2000-10-10T13:55:36-07:00", "method": "GET",
                   "path": "/apache_pb.gif", "protocol": "HTTP/1.0", "status": 200,
                   "bytes": 2326, "referrer": "http://x/", "agent": "Mozilla/4.08"})
        );
        let l = r#"10.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "POST /x HTTP/1.1" 404 -"#;
        let f = parse_access_log(l, AccessLogFormat::Common).unwrap();
        assert_eq!(f["status"], json!(404));
        assert_eq!(f["bytes"], json!(0));
        assert!(parse_access_log(l, AccessLogFormat::Combined).is_err());
    }
}
