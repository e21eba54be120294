//! Reading a pipeline file: `${VAR}` interpolation, then two passes over the YAML. The first
//! pass reads only each component's `type` and `inputs` with their positions; the second
//! deserializes each component straight into the config struct of its type, so a wrong or
//! unknown key is reported at its own line and column.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use indexmap::IndexMap;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Family, PipelineFile, SinkConfig, SourceConfig, TestCase, TransformConfig};

/// A place in a pipeline file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub at: Position,
    pub message: String,
    /// How to fix it, when known.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.at.line, self.at.column, self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found in a pipeline file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A parsed file with the positions of its components, for the validator's messages.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub file: String,
    pub pipeline: PipelineFile,
    /// Component name → where its body starts.
    pub components: HashMap<String, Position>,
    /// (component, input index) → where that input is written.
    pub inputs: HashMap<(String, usize), Position>,
}

impl Loaded {
    /// An error at a component.
    pub fn error_at(&self, component: &str, message: String, hint: Option<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            at: self.components.get(component).copied().unwrap_or_default(),
            message,
            hint,
        }
    }
}

/// Reads, interpolates and parses a pipeline file (environment from the process).
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            at: Position::default(),
            message: format!("cannot read the file: {e}"),
            hint: None,
        }])
    })?;
    load_str(&file, &text, &|k| std::env::var(k).ok())
}

/// Parses pipeline text; `file` names it in messages, `env` resolves `${VAR}`.
pub fn load_str(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    let text = interpolate(file, text, env)?;
    let err = |e: serde_saphyr::Error| ConfigErrors(vec![yaml_error(file, &e)]);
    let outline: Outline = serde_saphyr::from_str(&text).map_err(err)?;
    let mut loaded = Loaded {
        file: file.to_string(),
        ..Loaded::default()
    };
    let mut kinds = HashMap::new();
    let mut errors = Vec::new();
    for (section, map, allowed) in [
        ("source", &outline.sources, SourceConfig::KINDS),
        ("transform", &outline.transforms, TransformConfig::KINDS),
        ("sink", &outline.sinks, SinkConfig::KINDS),
    ] {
        for (name, head) in map.iter().flatten() {
            let at = pos(&head.referenced);
            if let Some(prev) = loaded.components.insert(name.clone(), at) {
                errors.push(ConfigError {
                    file: file.into(),
                    at,
                    message: format!(
                        "component name `{name}` is used twice (first at line {})",
                        prev.line
                    ),
                    hint: Some("names must be unique across sources, transforms and sinks".into()),
                });
            }
            for (i, input) in head.value.inputs.iter().flatten().enumerate() {
                loaded
                    .inputs
                    .insert((name.clone(), i), pos(&input.referenced));
            }
            match &head.value.kind {
                None => errors.push(ConfigError {
                    file: file.into(),
                    at,
                    message: format!("{section} `{name}` has no `type`"),
                    hint: Some(format!("add `type:` with one of: {}", allowed.join(", "))),
                }),
                Some(k) if !allowed.contains(&k.value.as_str()) => errors.push(ConfigError {
                    file: file.into(),
                    at: pos(&k.referenced),
                    message: format!("unknown {section} type `{}` in `{name}`", k.value),
                    hint: Some(match closest(&k.value, allowed.iter().copied()) {
                        Some(c) => format!("did you mean `{c}`? (one of: {})", allowed.join(", ")),
                        None => format!("one of: {}", allowed.join(", ")),
                    }),
                }),
                Some(k) => {
                    kinds.insert(name.clone(), k.value.clone());
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    loaded.pipeline = serde_saphyr::with_deserializer_from_str(&text, |de| {
        DocSeed { kinds: &kinds }.deserialize(de)
    })
    .map_err(err)?;
    Ok(loaded)
}

fn pos(l: &serde_saphyr::Location) -> Position {
    Position {
        line: l.line(),
        column: l.column(),
    }
}

fn yaml_error(file: &str, e: &serde_saphyr::Error) -> ConfigError {
    let at = e.location().map(|l| pos(&l)).unwrap_or_default();
    let mut message = e.without_snippet().to_string();
    // The library's text repeats the position; ours is in front already.
    if let Some(rest) = message.strip_prefix("error: ") {
        message = rest.to_string();
    }
    let prefix = format!("line {} column {}: ", at.line, at.column);
    if let Some(rest) = message.strip_prefix(&prefix) {
        message = rest.to_string();
    }
    let hint = message.contains("unknown field").then(|| {
        "see `trib pipeline schema` or docs/pipelines.md for the keys of each type".into()
    });
    ConfigError {
        file: file.into(),
        at,
        message,
        hint,
    }
}

/// The known word nearest to `word` (at most 2 edits, or a prefix).
pub fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (edit_distance(word, k), k))
        .filter(|(d, k)| *d <= 2 || k.starts_with(word) || word.starts_with(*k))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. An unset variable without a
/// default is an error at its position.
pub fn interpolate(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigErrors> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (ln, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('$') {
                out.push('$');
                rest = r;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    errors.push(ConfigError {
                        file: file.into(),
                        at: Position {
                            line: ln as u64 + 1,
                            column: (line.len() - rest.len() + i) as u64 + 1,
                        },
                        message: "`${` without a closing `}`".into(),
                        hint: Some("write `$${` for a literal `${`".into()),
                    });
                    out.push_str(&rest[i..]);
                    rest = "";
                    break;
                };
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                match (valid, env(name), default) {
                    (true, Some(v), _) => out.push_str(&v),
                    (true, None, Some(d)) => out.push_str(d),
                    (ok, _, _) => {
                        errors.push(ConfigError {
                            file: file.into(),
                            at: Position {
                                line: ln as u64 + 1,
                                column: (line.len() - rest.len() + i) as u64 + 1,
                            },
                            message: if ok {
                                format!("environment variable `{name}` is not set")
                            } else {
                                format!("`${{{expr}}}` is not a variable name")
                            },
                            hint: ok.then(|| {
                                format!("set {name}, or give a default: `${{{name}:-value}}`")
                            }),
                        });
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Outline {
    #[serde(default)]
    sources: Option<IndexMap<String, Spanned<Head>>>,
    #[serde(default)]
    transforms: Option<IndexMap<String, Spanned<Head>>>,
    #[serde(default)]
    sinks: Option<IndexMap<String, Spanned<Head>>>,
    #[serde(default)]
    #[allow(dead_code)]
    tests: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type", default)]
    kind: Option<Spanned<String>>,
    #[serde(default)]
    inputs: Option<Vec<Spanned<String>>>,
}

struct DocSeed<'a> {
    kinds: &'a HashMap<String, String>,
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_> {
    type Value = PipelineFile;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<PipelineFile, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocSeed<'_> {
    type Value = PipelineFile;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a pipeline: sources, transforms, sinks, tests")
    }
    fn visit_unit<E>(self) -> Result<PipelineFile, E> {
        Ok(PipelineFile::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PipelineFile, A::Error> {
        let mut doc = PipelineFile::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "sources" => doc.sources = map.next_value_seed(Section::new(self.kinds))?,
                "transforms" => doc.transforms = map.next_value_seed(Section::new(self.kinds))?,
                "sinks" => doc.sinks = map.next_value_seed(Section::new(self.kinds))?,
                "tests" => {
                    doc.tests = map
                        .next_value::<Option<Vec<TestCase>>>()?
                        .unwrap_or_default()
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(doc)
    }
}

struct Section<'a, F> {
    kinds: &'a HashMap<String, String>,
    _f: PhantomData<F>,
}

impl<'a, F> Section<'a, F> {
    fn new(kinds: &'a HashMap<String, String>) -> Self {
        Self {
            kinds,
            _f: PhantomData,
        }
    }
}

impl<'de, F: Family> DeserializeSeed<'de> for Section<'_, F> {
    type Value = IndexMap<String, F>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: Family> Visitor<'de> for Section<'_, F> {
    type Value = IndexMap<String, F>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of component name to its config")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(IndexMap::new())
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(IndexMap::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = IndexMap::new();
        while let Some(name) = map.next_key::<String>()? {
            match self.kinds.get(&name) {
                Some(kind) => {
                    let cfg = map.next_value_seed(Kind::<F> {
                        kind,
                        _f: PhantomData,
                    })?;
                    out.insert(name, cfg);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

struct Kind<'a, F> {
    kind: &'a str,
    _f: PhantomData<F>,
}

impl<'de, F: Family> DeserializeSeed<'de> for Kind<'_, F> {
    type Value = F;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<F, D::Error> {
        F::deserialize_kind(self.kind, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == "HOME_T").then(|| "/h".to_string())
    }

    #[test]
    fn interpolation() {
        assert_eq!(
            interpolate("f", "a: ${HOME_T}/x $$1 ${NOPE:-d}", &env).unwrap(),
            "a: /h/x $1 d"
        );
        let e = interpolate("f", "a: 1\nb: ${NOPE}\n", &env).unwrap_err();
        assert_eq!(e.0[0].to_string(), "f:2:4: environment variable `NOPE` is not set\n  help: set NOPE, or give a default: `${NOPE:-value}`");
    }

    #[test]
    fn unknown_key_is_reported_at_its_line() {
        let y = "sources:\n  gen:\n    type: demo\n    rat: 5\n";
        let e = load_str("p.yaml", y, &env).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("p.yaml:4:5: unknown field `rat`"), "{s}");
    }

    #[test]
    fn unknown_type_suggests() {
        let y = "sources:\n  gen:\n    type: dmo\n";
        let e = load_str("p.yaml", y, &env).unwrap_err();
        assert!(
            e.to_string()
                .contains("p.yaml:3:11: unknown source type `dmo` in `gen`"),
            "{e}"
        );
        assert!(e.to_string().contains("did you mean `demo`"), "{e}");
    }

    #[test]
    fn bad_value_type_is_reported() {
        let y = "sources:\n  gen:\n    type: demo\n    rate: fast\n";
        let e = load_str("p.yaml", y, &env).unwrap_err();
        assert!(e.to_string().starts_with("p.yaml:4:11:"), "{e}");
    }
}
