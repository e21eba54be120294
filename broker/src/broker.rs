//! The broker's shared state: configuration, the topic registry and metrics, plus the few
//! operations handlers share (auto-creating topics, resolving a topic by name or id).

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::group::GroupCoordinator;
use crate::log::segment::Truncation;
use crate::metrics::Metrics;
use crate::topics::{Topic, TopicError, TopicRegistry};

/// Everything a request handler can reach.
#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub topics: TopicRegistry,
    pub groups: Arc<GroupCoordinator>,
    pub metrics: Metrics,
    /// The field indexes (`index.fields`), built in the background.
    pub index: crate::index::FieldIndex,
    /// Transactional ids and their transactions.
    pub txns: crate::txn::TxnCoordinator,
}

impl Broker {
    /// Opens the data folder and recovers every partition.
    pub fn open(config: BrokerConfig) -> Result<(Arc<Self>, Vec<Truncation>), TopicError> {
        let (topics, truncations) = TopicRegistry::open(
            &config.data_dir,
            config.topic_defaults(),
            config.cluster_id.clone(),
        )?;
        let groups = Arc::new(GroupCoordinator::open(&config.data_dir, &config)?);
        let txns = crate::txn::TxnCoordinator::open(&config.data_dir, &config)?;
        let metrics = Metrics::new();
        Ok((
            Arc::new(Self {
                config,
                topics,
                groups,
                metrics,
                index: Default::default(),
                txns,
            }),
            truncations,
        ))
    }

    /// Finds a topic, creating it with the broker defaults when auto-creation is on and allowed.
    pub fn topic_or_create(
        &self,
        name: &str,
        allow_create: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        if let Some(t) = self.topics.get(name) {
            return Ok(t);
        }
        if !(allow_create && self.config.auto_create_topics) {
            return Err(TopicError::Unknown(name.to_string()));
        }
        match self
            .topics
            .create(name, self.config.num_partitions, 1, BTreeMap::new(), false)
        {
            Ok(_) | Err(TopicError::AlreadyExists(_)) => self
                .topics
                .get(name)
                .ok_or_else(|| TopicError::Unknown(name.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Resolves a topic named in a request either by name or (newer versions) by id.
    pub fn resolve(&self, name: &str, id: Uuid) -> Option<Arc<Topic>> {
        if !name.is_empty() {
            self.topics.get(name)
        } else if !id.is_nil() {
            self.topics.get_by_id(id)
        } else {
            None
        }
    }
}
