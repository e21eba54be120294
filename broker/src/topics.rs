//! The topic registry: which topics exist, their ids, partitions and config overrides, kept
//! durably in `<data_dir>/meta.json` (replaced atomically on every change) and reloaded at start.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::log::partition::Partition;
use crate::log::segment::Truncation;
use crate::topic_config::{TopicConfig, TopicConfigError};

const META_FILE: &str = "meta.json";

/// A topic operation refused, with the Kafka error code for it.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic '{0}' already exists")]
    AlreadyExists(String),
    #[error("topic '{0}' does not exist")]
    Unknown(String),
    #[error("invalid topic name '{name}': {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("topic name '{0}' is reserved: names starting with '__' belong to the broker's internal topics")]
    Reserved(String),
    #[error("invalid partition count {count} for topic '{topic}': {reason}")]
    InvalidPartitions {
        topic: String,
        count: i32,
        reason: &'static str,
    },
    #[error("replication factor {0} is larger than the 1 available broker")]
    ReplicationFactor(i16),
    #[error("topic '{topic}': {source}")]
    Config {
        topic: String,
        source: TopicConfigError,
    },
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
}

impl TopicError {
    pub fn kafka_code(&self) -> i16 {
        match self {
            TopicError::AlreadyExists(_) => 36,
            TopicError::Unknown(_) => 3,
            TopicError::InvalidName { .. } => 17,
            TopicError::Reserved(_) => 44, // POLICY_VIOLATION
            TopicError::InvalidPartitions { .. } => 37,
            TopicError::ReplicationFactor(_) => 38,
            TopicError::Config { .. } => 40,
            TopicError::Io(_) => 56,
        }
    }
}

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    overrides: RwLock<BTreeMap<String, String>>,
    config: RwLock<Arc<TopicConfig>>,
    partitions: RwLock<Vec<Arc<Partition>>>,
}

impl Topic {
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        let ps = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        usize::try_from(index).ok().and_then(|i| ps.get(i).cloned())
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len() as i32
    }

    pub fn config(&self) -> Arc<TopicConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn overrides(&self) -> BTreeMap<String, String> {
        self.overrides
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct MetaFile {
    cluster_id: String,
    #[serde(default)]
    next_producer_id: i64,
    #[serde(default)]
    topics: Vec<TopicMeta>,
}

#[derive(Debug, Serialize, Deserialize, Clone)]
struct TopicMeta {
    name: String,
    id: Uuid,
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// All topics of this broker.
#[derive(Debug)]
pub struct TopicRegistry {
    data_dir: PathBuf,
    defaults: TopicConfig,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serialises changes so meta.json always matches the registry.
    meta: Mutex<MetaFile>,
}

/// Checks a topic name against Kafka's rules.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let bad = |reason| {
        Err(TopicError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if name.len() > 249 {
        return bad("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    if name.starts_with("__") {
        return Err(TopicError::Reserved(name.to_string()));
    }
    Ok(())
}

impl TopicRegistry {
    /// Loads the registry and opens every partition, recovering logs. Returns the truncations
    /// recovery made so the caller can report them.
    pub fn open(
        data_dir: &Path,
        defaults: TopicConfig,
        cluster_id: Option<String>,
    ) -> Result<(Self, Vec<Truncation>), TopicError> {
        std::fs::create_dir_all(data_dir)?;
        let meta_path = data_dir.join(META_FILE);
        let mut meta: MetaFile = match std::fs::read(&meta_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", meta_path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetaFile::default(),
            Err(e) => return Err(e.into()),
        };
        if meta.cluster_id.is_empty() {
            meta.cluster_id =
                cluster_id.unwrap_or_else(|| Uuid::new_v4().simple().to_string()[..22].to_string());
        }
        let mut topics = HashMap::new();
        let mut truncations = Vec::new();
        for t in &meta.topics {
            let config = Arc::new(defaults.with_overrides(&t.configs).map_err(|source| {
                TopicError::Config {
                    topic: t.name.clone(),
                    source,
                }
            })?);
            let name: Arc<str> = t.name.as_str().into();
            let mut parts = Vec::new();
            for i in 0..t.partitions {
                let (p, tr) = Partition::open(
                    name.clone(),
                    i,
                    partition_dir(data_dir, &t.name, i),
                    config.clone(),
                )?;
                truncations.extend(tr);
                parts.push(p);
            }
            topics.insert(
                t.name.clone(),
                Arc::new(Topic {
                    name,
                    id: t.id,
                    overrides: RwLock::new(t.configs.clone()),
                    config: RwLock::new(config),
                    partitions: RwLock::new(parts),
                }),
            );
        }
        let reg = Self {
            data_dir: data_dir.to_path_buf(),
            defaults,
            topics: RwLock::new(topics),
            meta: Mutex::new(meta),
        };
        reg.save(&reg.lock_meta())?;
        Ok((reg, truncations))
    }

    fn lock_meta(&self) -> std::sync::MutexGuard<'_, MetaFile> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, meta: &MetaFile) -> Result<(), TopicError> {
        let bytes = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(&self.data_dir.join(META_FILE), &bytes)?;
        Ok(())
    }

    pub fn cluster_id(&self) -> String {
        self.lock_meta().cluster_id.clone()
    }

    pub fn defaults(&self) -> &TopicConfig {
        &self.defaults
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    /// Every topic, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Creates a topic (or only checks that it could be created, with `validate_only`).
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(Uuid, Arc<TopicConfig>), TopicError> {
        validate_topic_name(name)?;
        if !(1..=100_000).contains(&partitions) {
            return Err(TopicError::InvalidPartitions {
                topic: name.into(),
                count: partitions,
                reason: "must be between 1 and 100000",
            });
        }
        if replication_factor > 1 {
            return Err(TopicError::ReplicationFactor(replication_factor));
        }
        let config = Arc::new(self.defaults.with_overrides(&configs).map_err(|source| {
            TopicError::Config {
                topic: name.into(),
                source,
            }
        })?);
        let mut meta = self.lock_meta();
        if self.get(name).is_some() {
            return Err(TopicError::AlreadyExists(name.into()));
        }
        let id = Uuid::new_v4();
        if validate_only {
            return Ok((id, config));
        }
        let arc_name: Arc<str> = name.into();
        let mut parts = Vec::with_capacity(partitions as usize);
        for i in 0..partitions {
            let (p, _) = Partition::open(
                arc_name.clone(),
                i,
                partition_dir(&self.data_dir, name, i),
                config.clone(),
            )?;
            parts.push(p);
        }
        meta.topics.push(TopicMeta {
            name: name.into(),
            id,
            partitions,
            configs: configs.clone(),
        });
        if let Err(e) = self.save(&meta) {
            meta.topics.retain(|t| t.name != name);
            parts.iter().for_each(|p| drop(p.destroy()));
            return Err(e);
        }
        let topic = Topic {
            name: arc_name,
            id,
            overrides: RwLock::new(configs),
            config: RwLock::new(config.clone()),
            partitions: RwLock::new(parts),
        };
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.into(), Arc::new(topic));
        tracing::info!(topic = name, partitions, "created topic");
        Ok((id, config))
    }

    /// Deletes a topic and its data.
    pub fn delete(&self, name: &str) -> Result<Uuid, TopicError> {
        let mut meta = self.lock_meta();
        let topic = self
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| TopicError::Unknown(name.into()))?;
        meta.topics.retain(|t| t.name != name);
        self.save(&meta)?;
        for p in topic.partitions() {
            if let Err(e) = p.destroy() {
                tracing::warn!(topic = name, partition = p.index, error = %e, "could not remove partition files");
            }
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(topic.id)
    }

    /// Raises a topic's partition count to `count`.
    pub fn add_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let mut meta = self.lock_meta();
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.into()))?;
        let current = topic.partition_count();
        if count <= current {
            return Err(TopicError::InvalidPartitions {
                topic: name.into(),
                count,
                reason: "the new count must be larger than the current one",
            });
        }
        if count > 100_000 {
            return Err(TopicError::InvalidPartitions {
                topic: name.into(),
                count,
                reason: "at most 100000",
            });
        }
        if validate_only {
            return Ok(());
        }
        let config = topic.config();
        let mut added = Vec::new();
        for i in current..count {
            let (p, _) = Partition::open(
                topic.name.clone(),
                i,
                partition_dir(&self.data_dir, name, i),
                config.clone(),
            )?;
            added.push(p);
        }
        if let Some(t) = meta.topics.iter_mut().find(|t| t.name == name) {
            t.partitions = count;
        }
        self.save(&meta)?;
        topic
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(added);
        Ok(())
    }

    /// Replaces a topic's config overrides with `configs`.
    pub fn set_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let mut meta = self.lock_meta();
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.into()))?;
        let config = Arc::new(self.defaults.with_overrides(&configs).map_err(|source| {
            TopicError::Config {
                topic: name.into(),
                source,
            }
        })?);
        if validate_only {
            return Ok(());
        }
        if let Some(t) = meta.topics.iter_mut().find(|t| t.name == name) {
            t.configs = configs.clone();
        }
        self.save(&meta)?;
        *topic.overrides.write().unwrap_or_else(|e| e.into_inner()) = configs;
        *topic.config.write().unwrap_or_else(|e| e.into_inner()) = config.clone();
        for p in topic.partitions() {
            p.set_config(config.clone());
        }
        Ok(())
    }

    /// Allocates a block of producer ids, durably, and returns the first.
    pub fn allocate_producer_id(&self) -> Result<i64, TopicError> {
        let mut meta = self.lock_meta();
        let id = meta.next_producer_id;
        meta.next_producer_id += 1;
        self.save(&meta)?;
        Ok(id)
    }

    /// Keeps producer ids this broker hands out above `id`, which a mirror wrote into a mirror
    /// topic, so a producer of the promoted topic never shares a mirrored producer's id.
    pub fn observe_producer_id(&self, id: i64) -> Result<(), TopicError> {
        let mut meta = self.lock_meta();
        if id >= meta.next_producer_id {
            meta.next_producer_id = id + 1;
            self.save(&meta)?;
        }
        Ok(())
    }

    /// Flushes every partition and writes indexes so the next start needs no log scan.
    pub fn close(&self) -> std::io::Result<()> {
        for t in self.list() {
            for p in t.partitions() {
                p.close()?;
            }
        }
        Ok(())
    }
}

fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{index}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    #[tokio::test]
    async fn topics_survive_reopen_and_errors_map_to_codes() {
        let d = tempfile::tempdir().unwrap();
        let defaults = BrokerConfig::default().topic_defaults();
        let (reg, _) = TopicRegistry::open(d.path(), defaults.clone(), None).unwrap();
        let cfgs: BTreeMap<String, String> =
            [("retention.ms".to_string(), "1234".to_string())].into();
        let (id, _) = reg.create("orders", 3, 1, cfgs, false).unwrap();
        assert_eq!(
            reg.create("orders", 1, 1, BTreeMap::new(), false)
                .unwrap_err()
                .kafka_code(),
            36
        );
        assert_eq!(
            reg.create("bad name", 1, 1, BTreeMap::new(), false)
                .unwrap_err()
                .kafka_code(),
            17
        );
        let reserved = reg
            .create("__consumer_offsets", 1, 1, BTreeMap::new(), false)
            .unwrap_err();
        assert_eq!(
            reserved.kafka_code(),
            44,
            "internal names are refused with POLICY_VIOLATION"
        );
        assert_eq!(
            reg.create("x", 0, 1, BTreeMap::new(), false)
                .unwrap_err()
                .kafka_code(),
            37
        );
        assert_eq!(
            reg.create("x", 1, 3, BTreeMap::new(), false)
                .unwrap_err()
                .kafka_code(),
            38
        );
        let bad: BTreeMap<String, String> = [("nope".to_string(), "1".to_string())].into();
        assert_eq!(
            reg.create("x", 1, 1, bad, false).unwrap_err().kafka_code(),
            40
        );
        reg.create("dry", 1, 1, BTreeMap::new(), true).unwrap();
        assert!(reg.get("dry").is_none());
        reg.add_partitions("orders", 5, false).unwrap();
        assert_eq!(
            reg.add_partitions("orders", 2, false)
                .unwrap_err()
                .kafka_code(),
            37
        );
        let cluster = reg.cluster_id();
        drop(reg);
        let (reg, _) = TopicRegistry::open(d.path(), defaults, None).unwrap();
        let t = reg.get("orders").unwrap();
        assert_eq!(t.id, id);
        assert_eq!(t.partition_count(), 5);
        assert_eq!(t.config().retention_ms, 1234);
        assert_eq!(reg.cluster_id(), cluster);
        reg.delete("orders").unwrap();
        assert!(!d.path().join("orders-0").exists());
        assert_eq!(reg.delete("orders").unwrap_err().kafka_code(), 3);
    }
}
