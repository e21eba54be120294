//! The bytes of buffered events: a compact binary layout of everything an event carries (raw
//! bytes, fields as JSON, key, headers, timestamp, and the metadata sinks use), and its checked
//! decoding: a malformed payload is an error, never a panic or an unbounded allocation.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};

use crate::event::{Event, Fields};

const HAS_RAW: u8 = 1;
const HAS_KEY: u8 = 2;
const HAS_FIELDS: u8 = 4;
const HAS_TOPIC: u8 = 8;
const HAS_PARTITION: u8 = 16;
const HAS_OFFSET: u8 = 32;
const HAS_TARGET_TOPIC: u8 = 64;
const HAS_TARGET_PARTITION: u8 = 128;

/// Appends one event.
pub fn encode(e: &Event, out: &mut Vec<u8>) {
    let mut flags = 0;
    for (set, bit) in [
        (e.raw.is_some(), HAS_RAW),
        (e.key.is_some(), HAS_KEY),
        (!e.fields.is_empty(), HAS_FIELDS),
        (e.meta.topic.is_some(), HAS_TOPIC),
        (e.meta.partition.is_some(), HAS_PARTITION),
        (e.meta.offset.is_some(), HAS_OFFSET),
        (e.meta.target_topic.is_some(), HAS_TARGET_TOPIC),
        (e.meta.target_partition.is_some(), HAS_TARGET_PARTITION),
    ] {
        if set {
            flags |= bit;
        }
    }
    out.put_u8(flags);
    out.put_i64(e.timestamp_ms);
    put_bytes(out, e.meta.source.as_bytes());
    if let Some(r) = &e.raw {
        put_bytes(out, r);
    }
    if let Some(k) = &e.key {
        put_bytes(out, k);
    }
    if !e.fields.is_empty() {
        let at = out.len();
        out.put_u32(0);
        let _ = serde_json::to_writer(&mut *out, &e.fields);
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    if let Some(t) = &e.meta.topic {
        put_bytes(out, t.as_bytes());
    }
    if let Some(p) = e.meta.partition {
        out.put_i32(p);
    }
    if let Some(o) = e.meta.offset {
        out.put_i64(o);
    }
    if let Some(t) = &e.meta.target_topic {
        put_bytes(out, t.as_bytes());
    }
    if let Some(p) = e.meta.target_partition {
        out.put_i32(p);
    }
    out.put_u32(e.headers.len() as u32);
    for (k, v) in &e.headers {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v);
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.extend_from_slice(b);
}

/// Why a buffered payload cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("payload ends early: {0}")]
    Short(&'static str),
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    #[error("fields are not a JSON object: {0}")]
    Fields(String),
}

/// Reads every event of a payload; byte fields share the payload's memory.
pub fn decode_all(mut buf: Bytes) -> Result<Vec<Event>, DecodeError> {
    let mut events = Vec::new();
    while buf.has_remaining() {
        events.push(decode(&mut buf)?);
    }
    Ok(events)
}

fn decode(buf: &mut Bytes) -> Result<Event, DecodeError> {
    let flags = get_u8(buf, "flags")?;
    let mut e = Event::default();
    e.timestamp_ms = get_i64(buf, "timestamp")?;
    e.meta.source = text(buf, "source")?.into();
    if flags & HAS_RAW != 0 {
        e.raw = Some(get_bytes(buf, "raw")?);
    }
    if flags & HAS_KEY != 0 {
        e.key = Some(get_bytes(buf, "key")?);
    }
    if flags & HAS_FIELDS != 0 {
        let json = get_bytes(buf, "fields")?;
        e.fields = serde_json::from_slice::<Fields>(&json)
            .map_err(|err| DecodeError::Fields(err.to_string()))?;
    }
    if flags & HAS_TOPIC != 0 {
        e.meta.topic = Some(Arc::from(text(buf, "topic")?));
    }
    if flags & HAS_PARTITION != 0 {
        e.meta.partition = Some(get_i32(buf, "partition")?);
    }
    if flags & HAS_OFFSET != 0 {
        e.meta.offset = Some(get_i64(buf, "offset")?);
    }
    if flags & HAS_TARGET_TOPIC != 0 {
        e.meta.target_topic = Some(Arc::from(text(buf, "target topic")?));
    }
    if flags & HAS_TARGET_PARTITION != 0 {
        e.meta.target_partition = Some(get_i32(buf, "target partition")?);
    }
    let headers = get_u32(buf, "header count")? as usize;
    // Each header takes at least 8 bytes: bound the count before reserving room.
    if headers > buf.remaining() / 8 {
        return Err(DecodeError::Short("headers"));
    }
    e.headers.reserve(headers);
    for _ in 0..headers {
        let k = text(buf, "header name")?;
        let v = get_bytes(buf, "header value")?;
        e.headers.push((k.into(), v));
    }
    Ok(e)
}

fn need(buf: &Bytes, n: usize, what: &'static str) -> Result<(), DecodeError> {
    if buf.remaining() < n {
        return Err(DecodeError::Short(what));
    }
    Ok(())
}

fn get_u8(buf: &mut Bytes, what: &'static str) -> Result<u8, DecodeError> {
    need(buf, 1, what)?;
    Ok(buf.get_u8())
}

fn get_u32(buf: &mut Bytes, what: &'static str) -> Result<u32, DecodeError> {
    need(buf, 4, what)?;
    Ok(buf.get_u32())
}

fn get_i32(buf: &mut Bytes, what: &'static str) -> Result<i32, DecodeError> {
    need(buf, 4, what)?;
    Ok(buf.get_i32())
}

fn get_i64(buf: &mut Bytes, what: &'static str) -> Result<i64, DecodeError> {
    need(buf, 8, what)?;
    Ok(buf.get_i64())
}

fn get_bytes(buf: &mut Bytes, what: &'static str) -> Result<Bytes, DecodeError> {
    let n = get_u32(buf, what)? as usize;
    need(buf, n, what)?;
    Ok(buf.split_to(n))
}

fn text(buf: &mut Bytes, what: &'static str) -> Result<String, DecodeError> {
    let b = get_bytes(buf, what)?;
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_with_everything_they_carry() {
        let mut a = Event::raw("line one");
        a.key = Some(Bytes::from_static(b"k"));
        a.headers = vec![("file".into(), Bytes::from_static(b"/var/log/x"))];
        a.meta.source = "logs".into();
        a.meta.target_topic = Some("t".into());
        a.meta.target_partition = Some(2);
        let mut b = Event::from_fields(
            json!({"a": 1, "b": {"c": "d"}})
                .as_object()
                .unwrap()
                .clone(),
        );
        b.meta.topic = Some("in".into());
        b.meta.partition = Some(1);
        b.meta.offset = Some(99);
        let mut out = Vec::new();
        encode(&a, &mut out);
        encode(&b, &mut out);
        let got = decode_all(Bytes::from(out)).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].raw.as_deref(), Some(&b"line one"[..]));
        assert_eq!(got[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(got[0].headers, a.headers);
        assert_eq!(got[0].meta.source.as_ref(), "logs");
        assert_eq!(got[0].meta.target_topic.as_deref(), Some("t"));
        assert_eq!(got[0].meta.target_partition, Some(2));
        assert_eq!(got[0].timestamp_ms, a.timestamp_ms);
        assert_eq!(got[1].fields, b.fields);
        assert_eq!(got[1].meta.offset, Some(99));
        assert!(got[1].raw.is_none());
    }

    #[test]
    fn truncated_or_garbage_payloads_are_errors() {
        let mut out = Vec::new();
        encode(&Event::raw("abc"), &mut out);
        for cut in 0..out.len() {
            if cut > 0 {
                assert!(
                    decode_all(Bytes::copy_from_slice(&out[..cut])).is_err(),
                    "cut {cut}"
                );
            }
        }
        // A header count far beyond the bytes left is refused before reserving.
        let mut bad = out.clone();
        let n = bad.len();
        bad[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_all(Bytes::from(bad)).is_err());
    }
}
