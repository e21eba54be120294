//! The mirror's YAML file (`trib mirror --config mirror.yaml`): read, parsed and validated.
//! The types and their validation are shared with the `type: mirror` pipeline source and live
//! in `trib_pipelines::config::mirror`.

use std::path::Path;

pub use trib_pipelines::config::mirror::*;

/// A configuration that cannot work, naming the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

/// Reads and validates a file; errors name the file, and the line and column for YAML errors.
pub fn load(path: &Path) -> Result<MirrorConfig, ConfigError> {
    let file = path.display().to_string();
    let err = |message: String| ConfigError {
        file: file.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse(&text).map_err(err)
}

/// Parses and validates YAML text.
pub fn parse(text: &str) -> Result<MirrorConfig, String> {
    let c: MirrorConfig = serde_yaml_ng::from_str(text).map_err(|e| match e.location() {
        Some(l) => format!("line {} column {}: {e}", l.line(), l.column()),
        None => e.to_string(),
    })?;
    c.validate()?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_selects_and_names() {
        let c = parse(
            "sources:\n  - name: east\n    brokers: a:9092\n    topics: [orders]\n    topics_regex: 'logs\\..*'\n    exclude: ['logs\\.debug']\n    prefix: east.\ntarget:\n  brokers: b:9092\n",
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Auto);
        let s = c.sources[0].selection().unwrap();
        assert!(s.selects("orders") && s.selects("logs.app"));
        assert!(
            !s.selects("logs.debug") && !s.selects("orders2") && !s.selects("__consumer_offsets")
        );
        assert_eq!(s.target_name("orders"), "east.orders");
    }

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mirror/mirror.yaml");
        let c = load(&path).unwrap();
        let s = c.sources[0].selection().unwrap();
        assert!(s.selects("orders") && s.selects("logs.web") && !s.selects("logs.debug"));
        assert_eq!(c.http, Some("127.0.0.1:9645".parse().unwrap()));
    }

    #[test]
    fn bad_files_name_the_problem() {
        let e = parse("sources: []\ntarget: {brokers: b:1}\n").unwrap_err();
        assert!(e.contains("at least one source"), "{e}");
        let e =
            parse("sources:\n  - name: a\n    brokers: x:1\ntarget: {brokers: b:1}\n").unwrap_err();
        assert!(e.contains("sources[a]") && e.contains("topics"), "{e}");
        let e = parse("sources:\n  - name: a\n    brokers: x:1\n    topics: [t]\n    colour: red\ntarget: {brokers: b:1}\n").unwrap_err();
        assert!(e.contains("line 5") && e.contains("colour"), "{e}");
        let e = parse("sources:\n  - name: a\n    brokers: x:1\n    topics_regex: '('\ntarget: {brokers: b:1}\n").unwrap_err();
        assert!(e.contains("topics_regex"), "{e}");
    }
}
