//! Config types of the mirror (`trib mirror --config mirror.yaml`, or a `type: mirror`
//! pipeline source): the source clusters, each with its topic selection and naming, the one
//! target cluster, the mode, and the sync, throttle and HTTP settings, with their validation.
//! The mirror itself lives in the `trib-mirror` crate; docs/mirror.md has the meanings and
//! defaults.

use std::net::SocketAddr;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// How records land at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
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

/// Copies topics from one or more source clusters to a target cluster, at the same offsets
/// (Tributary targets) or re-produced in transactions with an exact offset map (any Kafka
/// cluster), with topic configs and consumer group offsets kept in step (docs/mirror.md). As a
/// pipeline source it emits no events: it writes to its target itself.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The component type, `mirror`, when the mirror is a pipeline source; a mirror file
    /// (`trib mirror --config`) leaves it out.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Clusters copied from, each with `name`, `brokers`, `topics`, `topics_regex`, `exclude`,
    /// `prefix`, `groups` and `no_group_sync` (docs/mirror.md).
    pub sources: Vec<MirrorSource>,
    /// The cluster copied to: `brokers`.
    pub target: MirrorCluster,
    /// How records land at the target: `auto` (offset-preserving when the target accepts
    /// mirror writes, else translating), `preserve` or `translate`.
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
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MirrorSource {
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
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MirrorCluster {
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

impl MirrorSource {
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
    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(kind) = self.kind.as_deref().filter(|k| *k != "mirror") {
            return Err(format!(
                "type: `{kind}` in a mirror's settings (it can only be `mirror`)"
            ));
        }
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

impl crate::config::HasInputs for MirrorConfig {
    fn inputs(&self) -> &[String] {
        &[]
    }
}
