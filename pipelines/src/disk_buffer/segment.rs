//! The files of a disk buffer: numbered segment files of records (`u32` length, `u32` CRC-32C
//! of the payload, payload), the acknowledged position (`ack`, replaced atomically), and the
//! checks that find where a segment's valid records end.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes};

/// Bytes before each record's payload.
pub const HEADER: u64 = 8;
/// Longest payload accepted when reading; a longer length is corruption.
pub const MAX_PAYLOAD: u32 = 256 << 20;

/// A place in the buffer: a segment and a byte offset in it (always a record boundary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.seg"))
}

/// The segment ids in `dir`, in order.
pub fn list(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Appends one framed record to `out`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.put_u32(payload.len() as u32);
    out.put_u32(crc32c::crc32c(payload));
    out.extend_from_slice(payload);
}

/// What is at a position of a segment.
pub enum Next {
    /// A whole, valid record, and the offset after it.
    Record { payload: Bytes, end: u64 },
    /// Fewer bytes than a whole record before `limit` (the tail being written, or torn).
    Partial,
    /// A record that fails its checks.
    Corrupt(String),
}

/// Reads the record at `offset`, looking no further than `limit`.
pub fn read_at(file: &File, offset: u64, limit: u64) -> std::io::Result<Next> {
    if offset + HEADER > limit {
        return Ok(Next::Partial);
    }
    let mut header = [0u8; HEADER as usize];
    file.read_exact_at(&mut header, offset)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_PAYLOAD {
        return Ok(Next::Corrupt(format!(
            "record length {len} exceeds {MAX_PAYLOAD}"
        )));
    }
    let end = offset + HEADER + u64::from(len);
    if end > limit {
        return Ok(Next::Partial);
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, offset + HEADER)?;
    if crc32c::crc32c(&payload) != crc {
        return Ok(Next::Corrupt("checksum mismatch".into()));
    }
    Ok(Next::Record {
        payload: Bytes::from(payload),
        end,
    })
}

/// What a scan of a segment found.
pub struct Scan {
    /// Where the valid records end.
    pub valid_end: u64,
    /// Events in the valid records (each payload starts with its event count).
    pub events: u64,
    /// Why the bytes after `valid_end` are not valid, when there are any.
    pub problem: Option<String>,
}

/// Walks the records of a segment from `from`, to find where the valid ones end.
pub fn scan(file: &File, from: u64) -> std::io::Result<Scan> {
    let len = file.metadata()?.len();
    let mut at = from.min(len);
    let mut events = 0u64;
    loop {
        match read_at(file, at, len)? {
            Next::Record { payload, end } => {
                events += payload.get(..4).map_or(0, |c| {
                    u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                });
                at = end;
            }
            Next::Partial if at == len => {
                return Ok(Scan {
                    valid_end: at,
                    events,
                    problem: None,
                })
            }
            Next::Partial => {
                return Ok(Scan {
                    valid_end: at,
                    events,
                    problem: Some("torn record (the write did not complete)".into()),
                })
            }
            Next::Corrupt(why) => {
                return Ok(Scan {
                    valid_end: at,
                    events,
                    problem: Some(why),
                })
            }
        }
    }
}

const ACK: &str = "ack";

/// The acknowledged position saved by the last run, if any.
pub fn read_ack(dir: &Path) -> Option<Position> {
    let text = std::fs::read_to_string(dir.join(ACK)).ok()?;
    let mut parts = text.split_whitespace();
    let segment = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some(Position { segment, offset })
}

/// Saves the acknowledged position (atomically: a crash leaves the old or the new).
pub fn write_ack(dir: &Path, pos: Position) -> std::io::Result<()> {
    crate::state_file::write_atomic(
        dir,
        ACK,
        format!("{} {}\n", pos.segment, pos.offset).as_bytes(),
    )
}
