//! The mirror's YAML configuration (`trib mirror --config mirror.yaml`): the source clusters,
//! each with its topic selection and naming, the one target cluster, the mode, and the sync,
//! throttle and HTTP settings. Defaults and meanings are in docs/mirror.md.

use std::net::SocketAddr;
use std::path::Path;

use regex::Regex;
use serde::Deserialize;

/// How records land at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `preserve` when the target is a Tributary broker accepting mirror writes, else `translate`.
    Auto,
    /// Same partition, same offset, batches byte for byte (Tributary targets).
    Preserve,
    /// Records re-produced at the target's own offsets in transactions, with an exact offset
    /// map in the checkpoint topic (any Kafka cluster).
    Translate,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Clusters copied from.
    pub sources: Vec<SourceConfig>,
    /// The cluster copied to.
    pub target: ClusterConfig,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// How often topics, partitions, configs and group offsets are synced, in milliseconds.
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
    /// Most bytes per second copied, over all sources; unset: unlimited.
    #[serde(default)]
    pub throttle_bytes_per_sec: Option<u64>,
    /// Most bytes one fetch asks a source for.
    #[serde(default = "default_fetch_max_bytes")]
    pub fetch_max_bytes: i32,
    /// Most bytes one fetch asks for from one partition.
    #[serde(default = "default_partition_max_bytes")]
    pub partition_max_bytes: i32,
    /// Address of `/metrics`, `/health` and `/status`; unset: none.
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// Translating mode: the target topic holding the offset map.
    #[serde(default = "default_checkpoint_topic")]
    pub checkpoint_topic: String,
    /// Translating mode: each source's transactional id is this prefix and the source's name.
    #[serde(default = "default_transactional_id_prefix")]
    pub transactional_id_prefix: String,
    /// Translating mode: most uncompressed bytes in one re-encoded batch (keep it below the
    /// target's `max.message.bytes`).
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
}

/// One source cluster and what is copied from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// Bootstrap `host:port` list, comma separated.
    pub brokers: String,
    /// Topics copied by name.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Topics copied when their whole name matches this regex.
    #[serde(default)]
    pub topics_regex: Option<String>,
    /// Topics never copied (whole-name regexes), even when listed or matched.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Prefix of the target topic name (`<prefix><source name>`); unset: identical names.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Consumer groups whose offsets are synced (whole-name regexes); empty: all.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Do not sync consumer group offsets.
    #[serde(default)]
    pub no_group_sync: bool,
}

/// A cluster to connect to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Bootstrap `host:port` list, comma separated.
    pub brokers: String,
}

fn default_mode() -> Mode {
    Mode::Auto
}
fn default_checkpoint_topic() -> String {
    "trib-mirror-offsets".into()
}
fn default_transactional_id_prefix() -> String {
    "trib-mirror-".into()
}
fn default_batch_max_bytes() -> usize {
    1_000_000
}
fn default_sync_interval_ms() -> u64 {
    5_000
}
fn default_fetch_max_bytes() -> i32 {
    32 << 20
}
fn default_partition_max_bytes() -> i32 {
    8 << 20
}

/// A configuration that cannot work, naming the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

/// A source's topic selection, compiled.
#[derive(Debug, Clone)]
pub struct Selection {
    names: Vec<String>,
    regex: Option<Regex>,
    exclude: Vec<Regex>,
    prefix: String,
}

impl Selection {
    /// Whether the source topic `name` is copied.
    pub fn selects(&self, name: &str) -> bool {
        if name.starts_with("__") || self.exclude.iter().any(|r| r.is_match(name)) {
            return false;
        }
        self.names.iter().any(|n| n == name)
            || self.regex.as_ref().is_some_and(|r| r.is_match(name))
    }

    /// The target topic for the source topic `name`.
    pub fn target_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// Compiles `pattern` so it must match the whole name.
fn whole(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

impl SourceConfig {
    /// The compiled topic selection.
    pub fn selection(&self) -> Result<Selection, String> {
        let regex = match &self.topics_regex {
            Some(r) => {
                Some(whole(r).map_err(|e| format!("sources[{}].topics_regex: {e}", self.name))?)
            }
            None => None,
        };
        let exclude = self
            .exclude
            .iter()
            .map(|r| whole(r).map_err(|e| format!("sources[{}].exclude `{r}`: {e}", self.name)))
            .collect::<Result<_, _>>()?;
        Ok(Selection {
            names: self.topics.clone(),
            regex,
            exclude,
            prefix: self.prefix.clone().unwrap_or_default(),
        })
    }

    /// The compiled group selection (empty: every group).
    pub fn group_selection(&self) -> Result<Vec<Regex>, String> {
        self.groups
            .iter()
            .map(|r| whole(r).map_err(|e| format!("sources[{}].groups `{r}`: {e}", self.name)))
            .collect()
    }
}

/// Splits a comma-separated broker list.
pub fn broker_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty())
        .collect()
}

impl MirrorConfig {
    /// Reads and validates a file; errors name the file, and the line and column for YAML errors.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let err = |message: String| ConfigError {
            file: file.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(err)
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let c: MirrorConfig = serde_yaml_ng::from_str(text).map_err(|e| match e.location() {
            Some(l) => format!("line {} column {}: {e}", l.line(), l.column()),
            None => e.to_string(),
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.sources.is_empty() {
            return Err("sources: at least one source cluster is needed".into());
        }
        if broker_list(&self.target.brokers).is_empty() {
            return Err("target.brokers: no broker given".into());
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.sources {
            if !names.insert(s.name.as_str()) {
                return Err(format!("sources: the name `{}` is used twice", s.name));
            }
            if broker_list(&s.brokers).is_empty() {
                return Err(format!("sources[{}].brokers: no broker given", s.name));
            }
            if s.topics.is_empty() && s.topics_regex.is_none() {
                return Err(format!(
                    "sources[{}]: give `topics`, `topics_regex` or both",
                    s.name
                ));
            }
            s.selection()?;
            s.group_selection()?;
        }
        if self.sources.len() > 1 && self.sources.iter().any(|s| s.prefix.is_none()) {
            return Err("sources: with more than one source, each needs a `prefix` so their topics cannot collide".into());
        }
        if self.sync_interval_ms < 100 {
            return Err("sync_interval_ms: must be at least 100".into());
        }
        if self.throttle_bytes_per_sec == Some(0) {
            return Err(
                "throttle_bytes_per_sec: must be at least 1 (leave it out for no limit)".into(),
            );
        }
        if self.partition_max_bytes < 1024 || self.fetch_max_bytes < self.partition_max_bytes {
            return Err("fetch_max_bytes/partition_max_bytes: partition_max_bytes must be at least 1024 and at most fetch_max_bytes".into());
        }
        // The answer may exceed fetch_max_bytes by one batch; the client takes up to 64 MiB.
        if self.fetch_max_bytes > 48 << 20 {
            return Err("fetch_max_bytes: at most 50331648 (48 MiB)".into());
        }
        let legal = |t: &str| {
            !t.is_empty()
                && t.len() <= 249
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        };
        if !legal(&self.checkpoint_topic) {
            return Err(format!(
                "checkpoint_topic: `{}` is not a legal topic name (letters, digits, `.`, `_`, `-`)",
                self.checkpoint_topic
            ));
        }
        if self.transactional_id_prefix.is_empty() {
            return Err("transactional_id_prefix: must not be empty".into());
        }
        if !(1024..=(64 << 20)).contains(&self.batch_max_bytes) {
            return Err("batch_max_bytes: must be between 1024 and 67108864".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_selects_and_names() {
        let c = MirrorConfig::parse(
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
        let c = MirrorConfig::load(&path).unwrap();
        let s = c.sources[0].selection().unwrap();
        assert!(s.selects("orders") && s.selects("logs.web") && !s.selects("logs.debug"));
        assert_eq!(c.http, Some("127.0.0.1:9645".parse().unwrap()));
    }

    #[test]
    fn bad_files_name_the_problem() {
        let e = MirrorConfig::parse("sources: []\ntarget: {brokers: b:1}\n").unwrap_err();
        assert!(e.contains("at least one source"), "{e}");
        let e = MirrorConfig::parse(
            "sources:\n  - name: a\n    brokers: x:1\ntarget: {brokers: b:1}\n",
        )
        .unwrap_err();
        assert!(e.contains("sources[a]") && e.contains("topics"), "{e}");
        let e = MirrorConfig::parse("sources:\n  - name: a\n    brokers: x:1\n    topics: [t]\n    colour: red\ntarget: {brokers: b:1}\n").unwrap_err();
        assert!(e.contains("line 5") && e.contains("colour"), "{e}");
        let e = MirrorConfig::parse("sources:\n  - name: a\n    brokers: x:1\n    topics_regex: '('\ntarget: {brokers: b:1}\n").unwrap_err();
        assert!(e.contains("topics_regex"), "{e}");
    }
}
