//! Text parsers: JSON, regular expressions with named captures, logfmt.

use serde_json::Value;

use super::{input_text, store_parsed, Outputs, Transform};
use crate::config::transforms as cfg;
use crate::event::{set_path, Event, Fields};

pub struct Json {
    field: Option<String>,
    target: Option<String>,
}

impl Json {
    pub fn new(c: &cfg::ParseJson) -> Self {
        Self {
            field: c.field.clone(),
            target: c.target.clone(),
        }
    }
}

impl Transform for Json {
    fn process(&mut self, mut e: Event, out: &mut Outputs) {
        let parsed = match (&self.field, &e.raw) {
            (None, Some(raw)) => serde_json::from_slice::<Value>(raw).map_err(|x| x.to_string()),
            _ => match input_text(&e, &self.field) {
                Ok(t) => serde_json::from_str::<Value>(&t).map_err(|x| x.to_string()),
                Err(m) => Err(m),
            },
        };
        match (parsed, &self.target) {
            (Ok(v), Some(target)) => {
                if self.field.is_none() {
                    e.raw = None;
                }
                set_path(&mut e.fields, target, v);
                out.push(e);
            }
            (Ok(Value::Object(m)), None) => {
                store_parsed(&mut e, m, self.field.is_none());
                out.push(e);
            }
            (Ok(other), None) => {
                let what = match other {
                    Value::Array(_) => "an array",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    _ => "not an object",
                };
                out.reject(e, format!("JSON is {what}, not an object (set `target`)"));
            }
            (Err(m), _) => out.reject(e, format!("invalid JSON: {m}")),
        }
    }
}

pub struct Regex {
    re: regex::Regex,
    names: Vec<String>,
    field: Option<String>,
}

impl Regex {
    pub fn new(c: &cfg::ParseRegex) -> Result<Self, String> {
        let re = regex::Regex::new(&c.pattern).map_err(|e| format!("pattern: {e}"))?;
        let names: Vec<String> = re.capture_names().flatten().map(str::to_string).collect();
        if names.is_empty() {
            return Err("pattern: has no named capture group (write `(?P<name>...)`)".into());
        }
        Ok(Self {
            re,
            names,
            field: c.field.clone(),
        })
    }
}

impl Transform for Regex {
    fn process(&mut self, mut e: Event, out: &mut Outputs) {
        let text = match input_text(&e, &self.field) {
            Ok(t) => t,
            Err(m) => return out.reject(e, m),
        };
        let Some(caps) = self.re.captures(&text) else {
            return out.reject(e, "the pattern does not match");
        };
        let mut parsed = Fields::new();
        for n in &self.names {
            if let Some(m) = caps.name(n) {
                parsed.insert(n.clone(), Value::String(m.as_str().to_string()));
            }
        }
        store_parsed(&mut e, parsed, self.field.is_none());
        out.push(e);
    }
}

pub struct Logfmt {
    field: Option<String>,
}

impl Logfmt {
    pub fn new(c: &cfg::ParseLogfmt) -> Self {
        Self {
            field: c.field.clone(),
        }
    }
}

impl Transform for Logfmt {
    fn process(&mut self, mut e: Event, out: &mut Outputs) {
        let text = match input_text(&e, &self.field) {
            Ok(t) => t,
            Err(m) => return out.reject(e, m),
        };
        match parse_logfmt(&text) {
            Ok(f) => {
                store_parsed(&mut e, f, self.field.is_none());
                out.push(e);
            }
            Err(m) => out.reject(e, m),
        }
    }
}

/// `k=v k2="a b" flag` → fields (a bare key is `true`).
pub fn parse_logfmt(s: &str) -> Result<Fields, String> {
    let mut out = Fields::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        let key = &s[ks..i];
        if key.is_empty() {
            return Err(format!("empty key at byte {ks}"));
        }
        if i >= b.len() || b[i] == b' ' {
            out.insert(key.to_string(), Value::Bool(true));
            continue;
        }
        i += 1; // '='
        let value = if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut v = String::new();
            loop {
                if i >= b.len() {
                    return Err(format!("unclosed quote in the value of `{key}`"));
                }
                match b[i] {
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b'\\' if i + 1 < b.len() => {
                        v.push(b[i + 1] as char);
                        i += 2;
                    }
                    _ => {
                        let ch = s[i..].chars().next().unwrap_or(' ');
                        v.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            v
        } else {
            let vs = i;
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            s[vs..i].to_string()
        };
        out.insert(key.to_string(), Value::String(value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn logfmt() {
        let f = parse_logfmt(r#"level=info msg="hello \"you\"" ok dur=5ms"#).unwrap();
        assert_eq!(
            Value::Object(f),
            json!({"level": "info", "msg": "hello \"you\"", "ok": true, "dur": "5ms"})
        );
        assert!(parse_logfmt("a=\"x").is_err());
    }
}
