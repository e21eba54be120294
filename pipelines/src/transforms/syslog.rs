//! Syslog parsing: RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`) and RFC 3164
//! (`<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`).

use std::sync::LazyLock;

use serde_json::Value;

use super::{input_text, store_parsed, Outputs, Transform};
use crate::config::transforms as cfg;
use crate::event::{Event, Fields};

static RFC5424: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|(?:\[.*?\])+)(?: (.*))?$")
        .expect("static pattern")
});
static RFC3164: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        r"^<(\d{1,3})>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (\S+) ([^:\[\s]+)(?:\[(\d+)\])?: ?(.*)$",
    )
    .expect("static pattern")
});

const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

pub struct Syslog {
    field: Option<String>,
}

impl Syslog {
    pub fn new(c: &cfg::ParseSyslog) -> Self {
        Self {
            field: c.field.clone(),
        }
    }
}

fn nil(s: &str) -> Value {
    if s == "-" {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

/// Parses one syslog line.
pub fn parse_syslog(line: &str) -> Result<Fields, String> {
    let mut f = Fields::new();
    let pri = |p: &str| -> Result<u32, String> {
        p.parse::<u32>()
            .ok()
            .filter(|p| *p <= 191)
            .ok_or_else(|| format!("priority `{p}` is out of range 0..=191"))
    };
    if let Some(c) = RFC5424.captures(line) {
        let p = pri(&c[1])?;
        f.insert("facility".into(), Value::from(p / 8));
        f.insert("severity".into(), Value::from(SEVERITIES[(p % 8) as usize]));
        f.insert("timestamp".into(), nil(&c[2]));
        f.insert("hostname".into(), nil(&c[3]));
        f.insert("appname".into(), nil(&c[4]));
        f.insert("procid".into(), nil(&c[5]));
        f.insert("msgid".into(), nil(&c[6]));
        f.insert("structured_data".into(), nil(&c[7]));
        let msg = c.get(8).map_or("", |m| m.as_str());
        f.insert(
            "message".into(),
            Value::String(msg.trim_start_matches('\u{feff}').to_string()),
        );
        return Ok(f);
    }
    if let Some(c) = RFC3164.captures(line) {
        let p = pri(&c[1])?;
        f.insert("facility".into(), Value::from(p / 8));
        f.insert("severity".into(), Value::from(SEVERITIES[(p % 8) as usize]));
        f.insert("timestamp".into(), Value::String(c[2].to_string()));
        f.insert("hostname".into(), Value::String(c[3].to_string()));
        f.insert("appname".into(), Value::String(c[4].to_string()));
        f.insert(
            "procid".into(),
            c.get(5)
                .map_or(Value::Null, |m| Value::String(m.as_str().into())),
        );
        f.insert("message".into(), Value::String(c[6].to_string()));
        return Ok(f);
    }
    Err("not an RFC 5424 or RFC 3164 syslog line".into())
}

impl Transform for Syslog {
    fn process(&mut self, mut e: Event, out: &mut Outputs) {
        match input_text(&e, &self.field).and_then(|t| parse_syslog(&t)) {
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
    fn rfc5424_and_3164() {
        let f = parse_syslog("<165>1 2003-10-11T22:14:15.003Z host1 app 42 ID47 - hello there")
            .unwrap();
        assert_eq!(f["severity"], json!("notice"));
        assert_eq!(f["facility"], json!(20));
        assert_eq!(f["appname"], json!("app"));
        assert_eq!(f["message"], json!("hello there"));
        let f = parse_syslog("<34>Oct 11 22:14:15 mymachine su[123]: 'su root' failed").unwrap();
        assert_eq!(f["severity"], json!("crit"));
        assert_eq!(f["procid"], json!("123"));
        assert_eq!(f["message"], json!("'su root' failed"));
        assert!(parse_syslog("<999>1 - - - - - -").is_err());
        assert!(parse_syslog("hello").is_err());
    }
}
