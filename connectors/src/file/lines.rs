//! Splits a file's bytes into line events: cuts over-long lines (the rest of such a line is
//! skipped), joins multiline events by a start or a continuation pattern, and knows the file position up to which
//! every event has been emitted (the position a checkpoint may record once they are delivered).

use std::time::{Duration, Instant};

/// A multiline event being built: bytes, start position, whether cut, last line's arrival.
struct Pending {
    bytes: Vec<u8>,
    start: u64,
    truncated: bool,
    last: Instant,
}

/// How lines join into multiline events.
#[derive(Clone)]
pub struct Multiline {
    pub pattern: regex::Regex,
    /// The pattern marks lines that continue the previous one (else: lines that start one).
    pub continuation: bool,
    pub timeout: Duration,
}

impl Multiline {
    fn starts_event(&self, line: &[u8]) -> bool {
        let matched = std::str::from_utf8(line).is_ok_and(|s| self.pattern.is_match(s));
        matched != self.continuation
    }
}

pub struct Splitter {
    max: usize,
    multiline: Option<Multiline>,
    /// Bytes of the line being read.
    partial: Vec<u8>,
    /// File position where `partial` starts.
    line_start: u64,
    /// File position of the next byte pushed.
    pos: u64,
    /// Discarding the rest of an over-long line.
    skipping: bool,
    pending: Option<Pending>,
}

impl Splitter {
    pub fn new(max: usize, multiline: Option<Multiline>, at: u64) -> Self {
        Self {
            max,
            multiline,
            partial: Vec::new(),
            line_start: at,
            pos: at,
            skipping: false,
            pending: None,
        }
    }

    /// Every event before this position has been emitted.
    pub fn emitted_up_to(&self) -> u64 {
        self.pending
            .as_ref()
            .map_or(self.line_start, |p| p.start.min(self.line_start))
    }

    /// Feeds bytes that follow the previous ones; `emit(line, truncated)` gets each event.
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(Vec<u8>, bool)) {
        while !data.is_empty() {
            let nl = data.iter().position(|b| *b == b'\n');
            let (chunk, rest) = match nl {
                Some(i) => (&data[..i], &data[i + 1..]),
                None => (data, &data[data.len()..]),
            };
            if !self.skipping {
                let room = self.max.saturating_sub(self.partial.len());
                self.partial
                    .extend_from_slice(&chunk[..chunk.len().min(room)]);
                if chunk.len() > room {
                    // Over-long: emit what fits, skip to the newline.
                    let line = std::mem::take(&mut self.partial);
                    self.line(line, true, &mut emit);
                    self.skipping = true;
                }
            }
            self.pos += chunk.len() as u64;
            if nl.is_some() {
                self.pos += 1;
                if self.skipping {
                    self.skipping = false;
                    self.partial.clear();
                } else {
                    let mut line = std::mem::take(&mut self.partial);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    self.line(line, false, &mut emit);
                }
                self.line_start = self.pos;
            }
            data = rest;
        }
    }

    fn line(&mut self, line: Vec<u8>, truncated: bool, emit: &mut impl FnMut(Vec<u8>, bool)) {
        let Some(m) = &self.multiline else {
            emit(line, truncated);
            return;
        };
        let starts = m.starts_event(&line);
        match &mut self.pending {
            Some(p) if !starts => {
                if p.bytes.len() + 1 + line.len() <= self.max {
                    p.bytes.push(b'\n');
                    p.bytes.extend_from_slice(&line);
                } else {
                    p.truncated = true;
                }
                p.truncated |= truncated;
                p.last = Instant::now();
            }
            _ => {
                if let Some(p) = self.pending.take() {
                    emit(p.bytes, p.truncated);
                }
                self.pending = Some(Pending {
                    bytes: line,
                    start: self.line_start,
                    truncated,
                    last: Instant::now(),
                });
            }
        }
    }

    /// A multiline event that has waited long enough for more lines.
    pub fn flush_idle(&mut self) -> Option<(Vec<u8>, bool)> {
        let timeout = self.multiline.as_ref()?.timeout;
        if self.pending.as_ref()?.last.elapsed() < timeout {
            return None;
        }
        self.pending.take().map(|p| (p.bytes, p.truncated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &mut Splitter, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l, t| out.push((String::from_utf8(l).unwrap(), t)));
        }
        out
    }

    #[test]
    fn lines_across_chunks_with_positions() {
        let mut s = Splitter::new(100, None, 10);
        let out = run(&mut s, &[b"ab", b"c\r\nde", b"f\n", b"gh"]);
        assert_eq!(out, vec![("abc".into(), false), ("def".into(), false)]);
        assert_eq!(s.emitted_up_to(), 10 + 9);
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_skipped() {
        let mut s = Splitter::new(4, None, 0);
        let out = run(&mut s, &[b"abcdefgh", b"ij\nxy\n"]);
        assert_eq!(out, vec![("abcd".into(), true), ("xy".into(), false)]);
        assert_eq!(s.emitted_up_to(), 14);
    }

    #[test]
    fn multiline_joins_continuations() {
        let m = Multiline {
            pattern: regex::Regex::new(r"^\S").unwrap(),
            continuation: false,
            timeout: Duration::ZERO,
        };
        let mut s = Splitter::new(100, Some(m), 0);
        let out = run(&mut s, &[b"Error x\n  at a\n  at b\nNext\n"]);
        assert_eq!(out, vec![("Error x\n  at a\n  at b".into(), false)]);
        assert_eq!(s.emitted_up_to(), 22, "`Next` is still pending");
        assert_eq!(s.flush_idle(), Some((b"Next".to_vec(), false)));
        assert_eq!(s.emitted_up_to(), 27);
    }

    #[test]
    fn multiline_by_continuation_pattern() {
        // Indented lines continue the event before them.
        let m = Multiline {
            pattern: regex::Regex::new(r"^\s").unwrap(),
            continuation: true,
            timeout: Duration::ZERO,
        };
        let mut s = Splitter::new(100, Some(m), 0);
        let out = run(
            &mut s,
            &[b"Traceback\n  File a\n  File b\nValueError\nnext\n"],
        );
        assert_eq!(
            out,
            vec![
                ("Traceback\n  File a\n  File b".into(), false),
                ("ValueError".into(), false)
            ]
        );
    }
}
