//! `trib pipeline test`: runs the `tests:` of a pipeline file. Each test feeds its events to
//! the named transforms, carries what comes out through the downstream transforms (sources and
//! sinks are not started), and checks the events seen at each expected output.

use std::collections::HashMap;

use serde_json::Value;

use crate::config::{Loaded, TestCase};
use crate::event::Event;
use crate::expr::Expr;
use crate::transforms::{build, Outputs, Transform};
use crate::validate::{resolve_input, PortRef};

/// The result of one test.
#[derive(Debug)]
pub struct TestReport {
    pub name: String,
    pub failures: Vec<String>,
}

impl TestReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every test of a validated file.
pub fn run_tests(l: &Loaded) -> Vec<TestReport> {
    l.pipeline
        .tests
        .iter()
        .map(|t| TestReport {
            name: t.name.clone(),
            failures: run_one(l, t).err().unwrap_or_default(),
        })
        .collect()
}

struct Graph {
    transforms: HashMap<String, (Box<dyn Transform>, usize)>,
    downstream: HashMap<PortRef, Vec<String>>,
    seen: HashMap<PortRef, Vec<Event>>,
}

impl Graph {
    fn feed(&mut self, name: &str, e: Event, depth: usize) {
        if depth > 64 {
            return;
        }
        let Some((t, named)) = self.transforms.get_mut(name) else {
            return;
        };
        let mut out = Outputs::new(name, *named);
        t.process(e, &mut out);
        for (port, events) in out.ports.into_iter().enumerate() {
            let key = PortRef {
                component: name.to_string(),
                port,
            };
            let next = self.downstream.get(&key).cloned().unwrap_or_default();
            for e in events {
                self.seen.entry(key.clone()).or_default().push(e.clone());
                for n in &next {
                    self.feed(n, e.clone(), depth + 1);
                }
            }
        }
    }
}

fn run_one(l: &Loaded, t: &TestCase) -> Result<(), Vec<String>> {
    let p = &l.pipeline;
    let mut g = Graph {
        transforms: HashMap::new(),
        downstream: HashMap::new(),
        seen: HashMap::new(),
    };
    for (name, cfg) in &p.transforms {
        let built = build(cfg).map_err(|m| vec![format!("transform `{name}`: {m}")])?;
        g.transforms
            .insert(name.clone(), (built, cfg.named_outputs().len()));
        for input in cfg.inputs() {
            if let Ok(r) = resolve_input(p, input) {
                g.downstream.entry(r).or_default().push(name.clone());
            }
        }
    }
    for input in &t.inputs {
        let mut e = match (&input.raw, &input.fields) {
            (Some(raw), None) => Event::raw(raw.clone().into_bytes()),
            (None, Some(f)) => Event::from_fields(f.clone()),
            _ => {
                return Err(vec![format!(
                    "input into `{}`: give exactly one of `raw` or `fields`",
                    input.into
                )])
            }
        };
        e.meta.source = "test".into();
        g.feed(&input.into, e, 0);
    }
    let mut failures = Vec::new();
    for o in &t.outputs {
        let port = match resolve_input(p, &o.from) {
            Ok(r) => r,
            Err(m) => {
                failures.push(format!("`{}`: {m}", o.from));
                continue;
            }
        };
        let got: Vec<Value> = g
            .seen
            .get(&port)
            .map(|v| v.iter().map(Event::to_json).collect())
            .unwrap_or_default();
        if let Some(want) = &o.events {
            if &got != want {
                failures.push(format!(
                    "`{}`: expected {}\n      got {}",
                    o.from,
                    serde_json::to_string(want).unwrap_or_default(),
                    serde_json::to_string(&got).unwrap_or_default()
                ));
            }
        }
        if let Some(n) = o.count {
            if got.len() != n {
                failures.push(format!(
                    "`{}`: expected {n} events, got {}",
                    o.from,
                    got.len()
                ));
            }
        }
        for c in &o.conditions {
            let expr = match Expr::compile(c) {
                Ok(x) => x,
                Err(e) => {
                    failures.push(format!("`{}`: {e}", o.from));
                    continue;
                }
            };
            for (i, e) in g.seen.get(&port).into_iter().flatten().enumerate() {
                match expr.test(e) {
                    Ok(true) => {}
                    Ok(false) => failures.push(format!(
                        "`{}`: event {} fails `{c}`: {}",
                        o.from,
                        i + 1,
                        e.to_json()
                    )),
                    Err(err) => failures.push(format!("`{}`: event {}: {err}", o.from, i + 1)),
                }
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    const FILE: &str = r#"
transforms:
  parse:
    type: parse_access_log
    inputs: [src]
  errors:
    type: filter
    inputs: [parse]
    condition: status >= 500
tests:
  - name: a 503 passes, a 200 does not, garbage is rejected
    inputs:
      - into: parse
        raw: '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a HTTP/1.1" 503 10 "-" "curl"'
      - into: parse
        raw: '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /b HTTP/1.1" 200 10 "-" "curl"'
      - into: parse
        raw: 'garbage'
    outputs:
      - from: errors
        count: 1
        conditions: ["path == '/a'"]
      - from: parse.dead_letter
        events:
          - {message: garbage, _error: "not an access-log line (common or combined format)", _component: parse}
"#;

    #[test]
    fn yaml_tests_pass_and_fail() {
        let src = format!("sources:\n  src:\n    type: stdin\n{FILE}");
        let l = load_str("t.yaml", &src, &|_| None).unwrap();
        crate::validate::validate(&l).unwrap();
        let r = run_tests(&l);
        assert!(r[0].passed(), "{:?}", r[0].failures);
        let bad = src.replace("count: 1", "count: 2");
        let l = load_str("t.yaml", &bad, &|_| None).unwrap();
        let r = run_tests(&l);
        assert_eq!(
            r[0].failures,
            vec!["`errors`: expected 2 events, got 1".to_string()]
        );
    }
}
