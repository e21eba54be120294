//! Volume control: `sample` keeps one event in N, `dedupe` drops repeats within a window.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use super::{Outputs, Transform};
use crate::config::transforms as cfg;
use crate::event::{get_path, Event};

pub struct Sample {
    rate: u64,
    key_field: Option<String>,
    seen: u64,
    hasher: std::hash::RandomState,
}

impl Sample {
    pub fn new(c: &cfg::Sample) -> Result<Self, String> {
        if c.rate == 0 {
            return Err("rate: must be at least 1".into());
        }
        Ok(Self {
            rate: c.rate,
            key_field: c.key_field.clone(),
            seen: 0,
            hasher: std::hash::RandomState::new(),
        })
    }
}

impl Transform for Sample {
    fn process(&mut self, e: Event, out: &mut Outputs) {
        let keep = match &self.key_field {
            Some(f) => {
                let mut h = self.hasher.build_hasher();
                h.write(
                    get_path(&e.fields, f)
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                        .as_bytes(),
                );
                h.finish().is_multiple_of(self.rate)
            }
            None => {
                self.seen += 1;
                (self.seen - 1).is_multiple_of(self.rate)
            }
        };
        if keep {
            out.push(e);
        } else {
            e.deliver();
        }
    }
}

pub struct Dedupe {
    fields: Vec<String>,
    window: Duration,
    max_entries: usize,
    seen: HashMap<u64, Instant>,
    order: VecDeque<(u64, Instant)>,
    hasher: std::hash::RandomState,
}

impl Dedupe {
    pub fn new(c: &cfg::Dedupe) -> Result<Self, String> {
        if c.fields.is_empty() {
            return Err("fields: name at least one field".into());
        }
        if c.max_entries == 0 {
            return Err("max_entries: must be at least 1".into());
        }
        Ok(Self {
            fields: c.fields.clone(),
            window: Duration::from_millis(c.window_ms),
            max_entries: c.max_entries,
            seen: HashMap::new(),
            order: VecDeque::new(),
            hasher: std::hash::RandomState::new(),
        })
    }
}

impl Transform for Dedupe {
    fn process(&mut self, e: Event, out: &mut Outputs) {
        let now = Instant::now();
        while let Some(&(h, t)) = self.order.front() {
            if now.duration_since(t) < self.window && self.order.len() <= self.max_entries {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&h) == Some(&t) {
                self.seen.remove(&h);
            }
        }
        let mut h = self.hasher.build_hasher();
        for f in &self.fields {
            match get_path(&e.fields, f) {
                Some(v) => h.write(v.to_string().as_bytes()),
                None => h.write(b"\x00missing"),
            }
            h.write_u8(0xff);
        }
        let id = h.finish();
        if self.seen.contains_key(&id) {
            e.deliver();
            return;
        }
        self.seen.insert(id, now);
        self.order.push_back((id, now));
        out.push(e);
    }
}
