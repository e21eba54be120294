//! The validator: checks the graph of a loaded pipeline file (every input exists, no cycles,
//! nothing reads from a sink or a mirror, a mirror's settings can work) and builds every transform once to check its expressions and
//! patterns. Pure: no I/O. Every problem is reported at once, with its position and a fix.

use std::collections::{HashMap, HashSet};

use crate::config::{ConfigError, ConfigErrors, Loaded, PipelineFile, SourceConfig};
use crate::transforms::{DEAD_LETTER_PORT, DEFAULT_PORT};
use crate::DEAD_LETTER;

/// One output of one component: port 0 is the default, 1 `dead_letter`, then named outputs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortRef {
    pub component: String,
    pub port: usize,
}

/// Resolves an `inputs:` entry (`name` or `name.output`).
pub fn resolve_input(p: &PipelineFile, input: &str) -> Result<PortRef, String> {
    let (name, port) = match input.split_once('.') {
        Some((n, o)) => (n, Some(o)),
        None => (input, None),
    };
    let port_of = |named: &[String]| -> Result<usize, String> {
        match port {
            None => Ok(DEFAULT_PORT),
            Some(o) if o == DEAD_LETTER => Ok(DEAD_LETTER_PORT),
            Some(o) => named
                .iter()
                .position(|n| n == o)
                .map(|i| 2 + i)
                .ok_or_else(|| {
                    let mut all: Vec<&str> = named.iter().map(String::as_str).collect();
                    all.push(DEAD_LETTER);
                    format!("`{name}` has no output `{o}` (it has: {})", all.join(", "))
                }),
        }
    };
    let port = if let Some(s) = p.sources.get(name) {
        if matches!(s, SourceConfig::Mirror(_)) {
            return Err(format!(
                "`{name}` is a mirror; it copies between clusters and emits no events"
            ));
        }
        if port.is_some() {
            return Err(format!("source `{name}` has only its default output"));
        }
        DEFAULT_PORT
    } else if let Some(t) = p.transforms.get(name) {
        port_of(&t.named_outputs())?
    } else if p.sinks.contains_key(name) {
        if port != Some(DEAD_LETTER) {
            return Err(format!(
                "`{name}` is a sink; only its `{name}.{DEAD_LETTER}` output can be an input"
            ));
        }
        DEAD_LETTER_PORT
    } else {
        return Err(format!("no component named `{name}`"));
    };
    Ok(PortRef {
        component: name.to_string(),
        port,
    })
}

/// Checks a loaded file; returns warnings (unused components) or every error.
pub fn validate(l: &Loaded) -> Result<Vec<String>, ConfigErrors> {
    let p = &l.pipeline;
    let mut errors: Vec<ConfigError> = Vec::new();
    let names: Vec<&str> = p
        .sources
        .keys()
        .chain(p.transforms.keys())
        .chain(p.sinks.keys())
        .map(String::as_str)
        .collect();
    for name in &names {
        if name.is_empty() || name.contains('.') {
            errors.push(l.error_at(
                name,
                format!("component name `{name}` must be non-empty and without `.`"),
                Some("`.` separates a component from its output in `inputs`".into()),
            ));
        }
    }
    let mut consumed: HashSet<String> = HashSet::new();
    let mut edges: HashMap<&str, Vec<String>> = HashMap::new();
    let nodes = p
        .transforms
        .iter()
        .map(|(n, c)| (n, c.inputs(), "transform"))
        .chain(p.sinks.iter().map(|(n, c)| (n, c.inputs(), "sink")));
    for (name, inputs, what) in nodes {
        if inputs.is_empty() {
            errors.push(l.error_at(
                name,
                format!("{what} `{name}` has no inputs"),
                Some("add `inputs: [<source or transform>]`".into()),
            ));
        }
        for (i, input) in inputs.iter().enumerate() {
            match resolve_input(p, input) {
                Ok(r) => {
                    consumed.insert(r.component.clone());
                    edges.entry(name.as_str()).or_default().push(r.component);
                }
                Err(m) => {
                    let base = input.split('.').next().unwrap_or_default();
                    let hint = crate::config::closest_name(base, names.iter().copied())
                        .filter(|c| *c != base)
                        .map(|c| format!("did you mean `{c}`?"));
                    errors.push(ConfigError {
                        file: l.file.clone(),
                        at: l
                            .inputs
                            .get(&(name.clone(), i))
                            .copied()
                            .unwrap_or_else(|| l.error_at(name, String::new(), None).at),
                        message: format!("{what} `{name}`: input `{input}`: {m}"),
                        hint,
                    });
                }
            }
        }
    }
    // Cycles: a depth-first walk over "reads from" edges.
    let mut state: HashMap<&str, u8> = HashMap::new();
    fn visit<'a>(
        n: &'a str,
        edges: &'a HashMap<&'a str, Vec<String>>,
        state: &mut HashMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(1) => {
                let from = path.iter().position(|p| *p == n).unwrap_or(0);
                let mut cycle: Vec<String> = path[from..].iter().map(|s| s.to_string()).collect();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            Some(_) => return None,
            None => {}
        }
        state.insert(n, 1);
        path.push(n);
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m.as_str(), edges, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n, 2);
        None
    }
    for name in p.transforms.keys() {
        let mut path = Vec::new();
        if let Some(cycle) = visit(name, &edges, &mut state, &mut path) {
            errors.push(l.error_at(
                &cycle[0],
                format!("the inputs form a cycle: {}", cycle.join(" <- ")),
                Some("a transform cannot read, directly or not, from its own output".into()),
            ));
            break;
        }
    }
    for (name, cfg) in &p.sources {
        if let SourceConfig::Mirror(m) = cfg {
            if let Err(m) = m.validate() {
                errors.push(l.error_at(name, format!("mirror `{name}`: {m}"), None));
            }
        }
    }
    for (name, cfg) in &p.transforms {
        if let Err(m) = crate::transforms::build(cfg) {
            errors.push(l.error_at(name, format!("transform `{name}`: {m}"), None));
        }
    }
    for (i, t) in p.tests.iter().enumerate() {
        for input in &t.inputs {
            if !p.transforms.contains_key(&input.into) {
                errors.push(ConfigError {
                    file: l.file.clone(),
                    at: Default::default(),
                    message: format!(
                        "test {} (`{}`): `into: {}` is not a transform",
                        i + 1,
                        t.name,
                        input.into
                    ),
                    hint: None,
                });
            }
        }
        for o in &t.outputs {
            if let Err(m) = resolve_input(p, &o.from) {
                errors.push(ConfigError {
                    file: l.file.clone(),
                    at: Default::default(),
                    message: format!("test {} (`{}`): `from: {}`: {m}", i + 1, t.name, o.from),
                    hint: None,
                });
            }
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| (e.at.line, e.at.column));
        return Err(ConfigErrors(errors));
    }
    let warnings = p
        .sources
        .iter()
        .filter(|(_, c)| !matches!(c, SourceConfig::Mirror(_)))
        .map(|(n, _)| n)
        .chain(p.transforms.keys())
        .filter(|n| !consumed.contains(*n))
        .map(|n| format!("{}: `{n}` is not an input of any component", l.file))
        .collect();
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn check(y: &str) -> Result<Vec<String>, String> {
        let l = load_str("p.yaml", y, &|_| None).map_err(|e| e.to_string())?;
        validate(&l).map_err(|e| e.to_string())
    }

    const HEAD: &str = "sources:\n  gen:\n    type: demo\n";

    #[test]
    fn dangling_input_is_reported_at_the_input() {
        let e = check(&format!(
            "{HEAD}sinks:\n  out:\n    type: console\n    inputs: [gen, gne2]\n"
        ))
        .unwrap_err();
        assert!(
            e.starts_with("p.yaml:7:19: sink `out`: input `gne2`: no component named `gne2`"),
            "{e}"
        );
    }

    #[test]
    fn cycle_is_reported() {
        let e = check(&format!(
            "{HEAD}transforms:\n  a:\n    type: filter\n    inputs: [gen, b]\n    condition: 'true'\n  b:\n    type: filter\n    inputs: [a]\n    condition: 'true'\nsinks:\n  out:\n    type: console\n    inputs: [b]\n"
        ))
        .unwrap_err();
        assert!(e.contains("the inputs form a cycle: a <- b <- a"), "{e}");
    }

    #[test]
    fn route_outputs_and_dead_letter_resolve() {
        let w = check(&format!(
            "{HEAD}transforms:\n  r:\n    type: route\n    inputs: [gen]\n    routes:\n      errors: 'status >= 500'\nsinks:\n  a:\n    type: console\n    inputs: [r.errors, r._unmatched, r.dead_letter]\n  b:\n    type: console\n    inputs: [a.dead_letter]\n"
        ))
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        let e = check(&format!(
            "{HEAD}transforms:\n  r:\n    type: route\n    inputs: [gen]\n    routes:\n      errors: 'status >= 500'\nsinks:\n  a:\n    type: console\n    inputs: [r.eror]\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("`r` has no output `eror` (it has: errors, _unmatched, dead_letter)"),
            "{e}"
        );
    }

    #[test]
    fn bad_condition_names_the_option() {
        let e = check(&format!(
            "{HEAD}transforms:\n  f:\n    type: filter\n    inputs: [gen]\n    condition: 'status >='\nsinks:\n  o:\n    type: console\n    inputs: [f]\n"
        ))
        .unwrap_err();
        assert!(
            e.starts_with("p.yaml:6:5: transform `f`: condition:"),
            "{e}"
        );
    }

    #[test]
    fn reading_from_a_sink_is_an_error() {
        let e = check(&format!(
            "{HEAD}sinks:\n  o:\n    type: console\n    inputs: [gen]\n  p:\n    type: console\n    inputs: [o]\n"
        ))
        .unwrap_err();
        assert!(e.contains("`o` is a sink"), "{e}");
    }

    const MIRROR: &str = "  dr:\n    type: mirror\n    sources:\n      - name: east\n        brokers: 127.0.0.1:9092\n        topics: [orders]\n    target:\n      brokers: 127.0.0.1:9093\n";

    #[test]
    fn a_mirror_runs_alone_and_nothing_reads_from_it() {
        let w = check(&format!("sources:\n{MIRROR}")).unwrap();
        assert!(w.is_empty(), "a mirror needs no reader: {w:?}");
        let e = check(&format!(
            "sources:\n{MIRROR}sinks:\n  o:\n    type: console\n    inputs: [dr]\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("`dr` is a mirror") && e.contains("emits no events"),
            "{e}"
        );
    }

    #[test]
    fn a_mirror_that_cannot_work_is_reported_at_the_component() {
        let bad = MIRROR.replace("        topics: [orders]\n", "");
        let e = check(&format!("sources:\n{bad}")).unwrap_err();
        assert!(
            e.starts_with("p.yaml:3:5: mirror `dr`: sources[east]: give `topics`"),
            "{e}"
        );
        let typo = MIRROR.replace("    target:", "    targt:");
        let e = check(&format!("sources:\n{typo}")).unwrap_err();
        assert!(e.contains("targt"), "{e}");
    }
}
