//! What a topic indexes: the `index.fields` topic config, parsed and checked.
//!
//! The value is a comma-separated list of `name=source`, where source is `key` (the record
//! key), `header:<header name>`, or `value:<path>` with `path` a dotted list of JSON object
//! keys (`$.user.id`, `user.id`; `$` alone is the whole value). An empty value indexes nothing.

use std::fmt;

/// Where an indexed field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Key,
    Header(String),
    /// Object keys from the root of the JSON value; empty: the whole value.
    Value(Vec<String>),
}

/// One indexed field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub source: Source,
}

/// The indexed fields of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexSpec {
    pub fields: Vec<Field>,
}

/// Most fields one topic may index (a field is one byte in the index entries' hash input).
pub const MAX_FIELDS: usize = 16;

impl IndexSpec {
    /// Parses `index.fields`; the error names the entry and what is wrong with it.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut fields: Vec<Field> = Vec::new();
        for (i, entry) in value.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                if value.trim().is_empty() {
                    continue;
                }
                return Err(format!("entry {} is empty", i + 1));
            }
            let Some((name, source)) = entry.split_once('=') else {
                return Err(format!(
                    "entry {} `{entry}`: expected name=source (source: key, header:<name> or value:<json path>)",
                    i + 1
                ));
            };
            let (name, source) = (name.trim(), source.trim());
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            {
                return Err(format!(
                    "entry {} `{entry}`: field name `{name}` must be 1 to 64 of A-Z a-z 0-9 _ - .",
                    i + 1
                ));
            }
            if fields.iter().any(|f| f.name == name) {
                return Err(format!("field `{name}` is declared twice"));
            }
            let source = if source == "key" {
                Source::Key
            } else if let Some(h) = source.strip_prefix("header:") {
                if h.is_empty() {
                    return Err(format!("field `{name}`: header name is empty"));
                }
                Source::Header(h.to_string())
            } else if let Some(p) = source.strip_prefix("value:") {
                Source::Value(parse_path(p).map_err(|e| format!("field `{name}`: {e}"))?)
            } else {
                return Err(format!(
                    "field `{name}`: source `{source}` is not key, header:<name> or value:<json path>"
                ));
            };
            fields.push(Field {
                name: name.to_string(),
                source,
            });
        }
        if fields.len() > MAX_FIELDS {
            return Err(format!(
                "{} fields: at most {MAX_FIELDS} can be indexed",
                fields.len()
            ));
        }
        Ok(Self { fields })
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The position of the field called `name`.
    pub fn field(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// A hash of the definition: index files built for another definition are rebuilt.
    pub fn fingerprint(&self) -> u64 {
        twox_hash::XxHash3_64::oneshot(self.to_string().as_bytes())
    }

    /// The names of the fields, for messages.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
        names.join(", ")
    }
}

fn parse_path(p: &str) -> Result<Vec<String>, String> {
    let p = p.trim();
    let rest = p.strip_prefix('$').unwrap_or(p);
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    if rest.is_empty() {
        return if p.starts_with('$') {
            Ok(Vec::new())
        } else {
            Err("JSON path is empty (use `$` for the whole value)".into())
        };
    }
    rest.split('.')
        .map(|k| {
            if k.is_empty() {
                Err(format!("JSON path `{p}` has an empty key"))
            } else if k.contains(['[', ']', '*']) {
                Err(format!(
                    "JSON path `{p}`: only object keys are supported, not `{k}`"
                ))
            } else {
                Ok(k.to_string())
            }
        })
        .collect()
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Key => write!(f, "key"),
            Source::Header(h) => write!(f, "header:{h}"),
            Source::Value(p) if p.is_empty() => write!(f, "value:$"),
            Source::Value(p) => write!(f, "value:$.{}", p.join(".")),
        }
    }
}

impl fmt::Display for IndexSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{}={}", field.name, field.source)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_source_and_round_trips() {
        let s = IndexSpec::parse("user=value:$.user.id, req = header:request-id,k=key,all=value:$")
            .unwrap();
        assert_eq!(s.fields.len(), 4);
        assert_eq!(
            s.fields[0].source,
            Source::Value(vec!["user".into(), "id".into()])
        );
        assert_eq!(s.fields[1].source, Source::Header("request-id".into()));
        assert_eq!(s.fields[2].source, Source::Key);
        assert_eq!(s.fields[3].source, Source::Value(vec![]));
        assert_eq!(IndexSpec::parse(&s.to_string()).unwrap(), s);
        assert_eq!(s.field("req"), Some(1));
        assert!(IndexSpec::parse("").unwrap().is_empty());
        assert_ne!(
            s.fingerprint(),
            IndexSpec::parse("user=value:user").unwrap().fingerprint()
        );
    }

    #[test]
    fn bad_definitions_name_the_problem() {
        for (bad, says) in [
            ("user", "expected name=source"),
            ("user=value:", "JSON path is empty"),
            ("user=value:a..b", "empty key"),
            ("user=value:a[0]", "only object keys"),
            ("user=header:", "header name is empty"),
            ("user=body", "source `body`"),
            ("a=key,a=key", "declared twice"),
            ("a b=key", "field name"),
            ("a=key,,b=key", "entry 2 is empty"),
        ] {
            let e = IndexSpec::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("f{i}=key")).collect();
        assert!(IndexSpec::parse(&many.join(","))
            .unwrap_err()
            .contains("at most 16"));
    }
}
