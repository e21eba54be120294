//! Reading an indexed field's value out of a record without parsing the whole record: the key,
//! a header, or the value at a JSON path (a byte-level scan that skips what it does not need
//! and allocates only to unescape a string).
//!
//! A value's text is what is indexed and compared: a JSON string's contents, a number or
//! boolean as written, an object or array as its JSON text; JSON null and a missing field are
//! not indexed. So `user_id=42` finds both `"user_id": 42` and `"user_id": "42"`.

use std::borrow::Cow;

use super::spec::Source;
use crate::log::batch::RecordView;

/// The text of `source` in record `r`, if it has one.
pub fn field_text<'a>(source: &Source, r: &RecordView<'a>) -> Option<Cow<'a, [u8]>> {
    match source {
        Source::Key => r.key.map(Cow::Borrowed),
        Source::Header(h) => r.header(h).flatten().map(Cow::Borrowed),
        Source::Value(path) => json_path(r.value?, path),
    }
}

/// The text of the value at `path` in the JSON document `doc`.
pub fn json_path<'a>(doc: &'a [u8], path: &[String]) -> Option<Cow<'a, [u8]>> {
    let mut pos = skip_ws(doc, 0);
    for key in path {
        pos = member(doc, pos, key.as_bytes())?;
    }
    let end = skip_value(doc, pos)?;
    match doc[pos] {
        b'"' => unescape(&doc[pos + 1..end - 1]),
        b'n' => None,
        _ => Some(Cow::Borrowed(&doc[pos..end])),
    }
}

fn skip_ws(doc: &[u8], mut pos: usize) -> usize {
    while pos < doc.len() && matches!(doc[pos], b' ' | b'\t' | b'\n' | b'\r') {
        pos += 1;
    }
    pos
}

/// In the object starting at `pos`, the start of the value of member `key`.
fn member(doc: &[u8], pos: usize, key: &[u8]) -> Option<usize> {
    if doc.get(pos) != Some(&b'{') {
        return None;
    }
    let mut pos = skip_ws(doc, pos + 1);
    loop {
        match doc.get(pos)? {
            b'}' => return None,
            b'"' => {}
            _ => return None,
        }
        let key_end = skip_value(doc, pos)?;
        let raw = &doc[pos + 1..key_end - 1];
        let is_key = if raw.contains(&b'\\') {
            unescape(raw).is_some_and(|k| *k == *key)
        } else {
            raw == key
        };
        pos = skip_ws(doc, key_end);
        if doc.get(pos) != Some(&b':') {
            return None;
        }
        pos = skip_ws(doc, pos + 1);
        if is_key {
            return Some(pos);
        }
        pos = skip_ws(doc, skip_value(doc, pos)?);
        match doc.get(pos)? {
            b',' => pos = skip_ws(doc, pos + 1),
            _ => return None,
        }
    }
}

/// The end (exclusive) of the JSON value starting at `pos`.
fn skip_value(doc: &[u8], pos: usize) -> Option<usize> {
    match *doc.get(pos)? {
        b'"' => {
            let mut i = pos + 1;
            while i < doc.len() {
                match doc[i] {
                    b'\\' => i += 2,
                    b'"' => return Some(i + 1),
                    _ => i += 1,
                }
            }
            None
        }
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = pos;
            while i < doc.len() {
                match doc[i] {
                    b'"' => {
                        i = skip_value(doc, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let mut i = pos;
            while i < doc.len()
                && !matches!(doc[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                i += 1;
            }
            (i > pos).then_some(i)
        }
    }
}

/// A JSON string's contents (between the quotes) unescaped; borrowed when nothing is escaped.
fn unescape(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !raw.contains(&b'\\') {
        return Some(Cow::Borrowed(raw));
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    let s: String = serde_json::from_slice(&quoted).ok()?;
    Some(Cow::Owned(s.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(doc: &str, path: &str) -> Option<String> {
        let path: Vec<String> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('.').map(String::from).collect()
        };
        json_path(doc.as_bytes(), &path).map(|c| String::from_utf8(c.into_owned()).unwrap())
    }

    #[test]
    fn finds_values_by_path() {
        let doc = r#" { "a" : 1, "s":"x,}\"y", "o": {"arr": [1, {"b": "]"}], "user": {"id": 42}},
            "t": true, "n": null, "esc\u0041": "v\n", "f": -1.5e3 } "#;
        assert_eq!(at(doc, "a").as_deref(), Some("1"));
        assert_eq!(at(doc, "s").as_deref(), Some("x,}\"y"));
        assert_eq!(at(doc, "o.user.id").as_deref(), Some("42"));
        assert_eq!(at(doc, "o.arr").as_deref(), Some(r#"[1, {"b": "]"}]"#));
        assert_eq!(at(doc, "t").as_deref(), Some("true"));
        assert_eq!(at(doc, "n"), None);
        assert_eq!(at(doc, "escA").as_deref(), Some("v\n"));
        assert_eq!(at(doc, "f").as_deref(), Some("-1.5e3"));
        assert_eq!(at(doc, "missing"), None);
        assert_eq!(at(doc, "a.b"), None);
        assert_eq!(at("[1,2]", "a"), None);
        assert_eq!(at("\"whole\"", "").as_deref(), Some("whole"));
    }

    #[test]
    fn malformed_json_is_not_indexed_and_never_panics() {
        for doc in [
            "",
            "{",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":\"x",
            "{\"a\" 1}",
            "{\"b\":[1,\"a\":1",
            "\"\\",
        ] {
            assert_eq!(at(doc, "a"), None, "{doc}");
        }
    }
}
