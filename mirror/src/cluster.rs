//! A client for one Kafka-protocol cluster, as the mirror needs it: bootstrap and Metadata (the
//! leader of each partition), a small pool of connections per broker, and the admin calls the
//! mirror makes (topic configs, create topics and partitions, offsets, consumer groups).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use trib_broker::wire_client::{CallError, Conn};

const CLIENT_ID: &str = "trib-mirror";
const TOPIC_RESOURCE: i8 = 2;
const BROKER_RESOURCE: i8 = 4;
/// DescribeConfigs `config_source` of a config the topic sets itself.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
/// Idle connections kept per broker.
const POOL: usize = 4;

/// Why a call to a cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{cluster}: {source}")]
    Call { cluster: String, source: CallError },
    #[error("{cluster}: {what}: error {code}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kafka {
        cluster: String,
        what: String,
        code: i16,
        message: Option<String>,
    },
    #[error("{cluster}: no broker answered ({last})")]
    Unreachable { cluster: String, last: String },
}

impl ClusterError {
    /// The Kafka error code, for errors the cluster answered with.
    pub fn code(&self) -> Option<i16> {
        match self {
            ClusterError::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A topic as Metadata describes it.
#[derive(Debug, Clone, Default)]
pub struct TopicMeta {
    /// Partition index → leader node id.
    pub leaders: BTreeMap<i32, i32>,
}

/// What Metadata returned.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub cluster_id: String,
    /// Node ids of the cluster's brokers.
    pub brokers: Vec<i32>,
    pub topics: BTreeMap<String, TopicMeta>,
}

/// One partition as a Fetch returned it.
#[derive(Debug, Clone, Default)]
pub struct FetchedPartition {
    pub records: bytes::Bytes,
    pub high_watermark: i64,
    pub last_stable: i64,
    /// Aborted transactions overlapping the records: (producer id, first offset).
    pub aborted: Vec<(i64, i64)>,
}

/// A Fetch response's aborted transactions as (producer id, first offset).
pub fn aborted_list(a: Option<&[fetch_response::AbortedTransaction]>) -> Vec<(i64, i64)> {
    a.unwrap_or_default()
        .iter()
        .map(|t| (t.producer_id.0, t.first_offset))
        .collect()
}

/// One cluster: where its brokers are and a few open connections to each.
pub struct Cluster {
    pub name: String,
    bootstrap: Vec<String>,
    nodes: Mutex<HashMap<i32, String>>,
    idle: Mutex<HashMap<String, Vec<Conn>>>,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Cluster {
    pub fn new(name: &str, bootstrap: Vec<String>) -> Self {
        Self {
            name: name.to_string(),
            bootstrap,
            nodes: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
        }
    }

    fn kafka(&self, what: String, code: i16, message: Option<&StrBytes>) -> ClusterError {
        ClusterError::Kafka {
            cluster: self.name.clone(),
            what,
            code,
            message: message.map(|m| m.to_string()),
        }
    }

    /// Sends a request to the broker at `addr`, on an idle pooled connection or a new one.
    pub async fn call_addr<Q: Encodable, R: Decodable>(
        &self,
        addr: &str,
        api: ApiKey,
        version: i16,
        req: &Q,
    ) -> Result<R, ClusterError> {
        let mut answers = self
            .call_many_addr(addr, api, version, std::slice::from_ref(req))
            .await?;
        answers.pop().ok_or_else(|| ClusterError::Unreachable {
            cluster: self.name.clone(),
            last: format!("{addr}: no answer"),
        })
    }

    /// Sends `reqs` pipelined on one connection to the broker at `addr`; answers in order.
    async fn call_many_addr<Q: Encodable, R: Decodable>(
        &self,
        addr: &str,
        api: ApiKey,
        version: i16,
        reqs: &[Q],
    ) -> Result<Vec<R>, ClusterError> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(addr)
            .and_then(Vec::pop);
        let mut conn = match pooled {
            Some(c) => c,
            None => Conn::connect(addr, CLIENT_ID)
                .await
                .map_err(|source| ClusterError::Call {
                    cluster: self.name.clone(),
                    source,
                })?,
        };
        let r = conn
            .call_many(api, version, reqs)
            .await
            .map_err(|source| ClusterError::Call {
                cluster: self.name.clone(),
                source,
            })?;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let slot = idle.entry(addr.to_string()).or_default();
        if slot.len() < POOL {
            slot.push(conn);
        }
        Ok(r)
    }

    /// Sends a request to node `node` (known from Metadata), or any bootstrap broker for `None`.
    pub async fn call<Q: Encodable, R: Decodable>(
        &self,
        node: Option<i32>,
        api: ApiKey,
        version: i16,
        req: &Q,
    ) -> Result<R, ClusterError> {
        let mut answers = self
            .call_many(node, api, version, std::slice::from_ref(req))
            .await?;
        answers.pop().ok_or_else(|| ClusterError::Unreachable {
            cluster: self.name.clone(),
            last: "no answer".into(),
        })
    }

    /// Sends `reqs` pipelined on one connection to node `node` (or a bootstrap broker for
    /// `None`) and returns their answers in order: the broker appends what they carry in that
    /// order.
    pub async fn call_many<Q: Encodable, R: Decodable>(
        &self,
        node: Option<i32>,
        api: ApiKey,
        version: i16,
        reqs: &[Q],
    ) -> Result<Vec<R>, ClusterError> {
        let addr = node.and_then(|n| {
            self.nodes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&n)
                .cloned()
        });
        if let Some(addr) = addr {
            return self.call_many_addr(&addr, api, version, reqs).await;
        }
        let mut last = String::from("no bootstrap broker");
        for addr in &self.bootstrap {
            match self.call_many_addr(addr, api, version, reqs).await {
                Ok(r) => return Ok(r),
                Err(e) => last = e.to_string(),
            }
        }
        Err(ClusterError::Unreachable {
            cluster: self.name.clone(),
            last,
        })
    }

    /// Metadata for `topics` (`None`: every topic); remembers where the brokers are.
    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<Meta, ClusterError> {
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut m = metadata_request::MetadataRequestTopic::default();
                    m.name = Some(TopicName(sb(t)));
                    m
                })
                .collect()
        });
        req.allow_auto_topic_creation = false;
        let resp: MetadataResponse = self.call(None, ApiKey::Metadata, 9, &req).await?;
        {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            for b in &resp.brokers {
                nodes.insert(b.node_id.0, format!("{}:{}", b.host, b.port));
            }
        }
        let mut meta = Meta {
            cluster_id: resp.cluster_id.map(|c| c.to_string()).unwrap_or_default(),
            brokers: resp.brokers.iter().map(|b| b.node_id.0).collect(),
            topics: BTreeMap::new(),
        };
        for t in resp.topics {
            let Some(name) = t.name else { continue };
            if t.error_code != 0 {
                continue;
            }
            let leaders = t
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.leader_id.0))
                .collect();
            meta.topics.insert(name.to_string(), TopicMeta { leaders });
        }
        Ok(meta)
    }

    /// A broker config value (DescribeConfigs on broker resource `node`).
    pub async fn broker_config(
        &self,
        node: i32,
        key: &str,
    ) -> Result<Option<String>, ClusterError> {
        let mut res = DescribeConfigsResource::default();
        res.resource_type = BROKER_RESOURCE;
        res.resource_name = sb(&node.to_string());
        res.configuration_keys = Some(vec![sb(key)]);
        let mut req = DescribeConfigsRequest::default();
        req.resources.push(res);
        let resp: DescribeConfigsResponse =
            self.call(None, ApiKey::DescribeConfigs, 4, &req).await?;
        Ok(resp
            .results
            .iter()
            .flat_map(|r| &r.configs)
            .find(|c| &*c.name == key)
            .and_then(|c| c.value.as_ref().map(|v| v.to_string())))
    }

    /// The configs each topic sets itself (not broker defaults), by topic.
    pub async fn topic_configs(
        &self,
        topics: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, ClusterError> {
        let mut req = DescribeConfigsRequest::default();
        for t in topics {
            let mut res = DescribeConfigsResource::default();
            res.resource_type = TOPIC_RESOURCE;
            res.resource_name = sb(t);
            res.configuration_keys = None;
            req.resources.push(res);
        }
        let resp: DescribeConfigsResponse =
            self.call(None, ApiKey::DescribeConfigs, 4, &req).await?;
        let mut out = BTreeMap::new();
        for r in resp.results {
            if r.error_code != 0 {
                continue;
            }
            let set = r
                .configs
                .iter()
                .filter(|c| c.config_source == DYNAMIC_TOPIC_CONFIG)
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            out.insert(r.resource_name.to_string(), set);
        }
        Ok(out)
    }

    /// Creates a topic; an existing one is not an error.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        let mut t = CreatableTopic::default();
        t.name = TopicName(sb(name));
        t.num_partitions = partitions;
        t.replication_factor = -1;
        for (k, v) in configs {
            let mut c = CreatableTopicConfig::default();
            c.name = sb(k);
            c.value = Some(sb(v));
            t.configs.push(c);
        }
        let mut req = CreateTopicsRequest::default();
        req.topics.push(t);
        req.timeout_ms = 30_000;
        let resp: CreateTopicsResponse = self.call(None, ApiKey::CreateTopics, 5, &req).await?;
        for r in resp.topics {
            if r.error_code != 0 && r.error_code != 36 {
                return Err(self.kafka(
                    format!("creating topic {name}"),
                    r.error_code,
                    r.error_message.as_ref(),
                ));
            }
        }
        Ok(())
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(&self, name: &str, count: i32) -> Result<(), ClusterError> {
        let mut t = CreatePartitionsTopic::default();
        t.name = TopicName(sb(name));
        t.count = count;
        let mut req = CreatePartitionsRequest::default();
        req.topics.push(t);
        req.timeout_ms = 30_000;
        let resp: CreatePartitionsResponse =
            self.call(None, ApiKey::CreatePartitions, 2, &req).await?;
        for r in resp.results {
            if r.error_code != 0 {
                return Err(self.kafka(
                    format!("adding partitions to {name}"),
                    r.error_code,
                    r.error_message.as_ref(),
                ));
            }
        }
        Ok(())
    }

    /// Sets `set` and removes `delete` on a topic (IncrementalAlterConfigs).
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        set: &BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<(), ClusterError> {
        let mut res = AlterConfigsResource::default();
        res.resource_type = TOPIC_RESOURCE;
        res.resource_name = sb(name);
        for (k, v) in set {
            let mut c = AlterableConfig::default();
            c.name = sb(k);
            c.config_operation = 0;
            c.value = Some(sb(v));
            res.configs.push(c);
        }
        for k in delete {
            let mut c = AlterableConfig::default();
            c.name = sb(k);
            c.config_operation = 1;
            res.configs.push(c);
        }
        let mut req = IncrementalAlterConfigsRequest::default();
        req.resources.push(res);
        let resp: IncrementalAlterConfigsResponse = self
            .call(None, ApiKey::IncrementalAlterConfigs, 1, &req)
            .await?;
        for r in resp.responses {
            if r.error_code != 0 {
                return Err(self.kafka(
                    format!("altering configs of {name}"),
                    r.error_code,
                    r.error_message.as_ref(),
                ));
            }
        }
        Ok(())
    }

    /// ListOffsets at `timestamp` (-1 latest, -2 earliest) for partitions of one topic led by
    /// `node`: partition → offset.
    pub async fn list_offsets(
        &self,
        node: Option<i32>,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, i64>, ClusterError> {
        self.list_offsets_as(node, topic, partitions, timestamp, 0)
            .await
    }

    /// Each partition's last stable offset: where a read_committed consumer stops.
    pub async fn stable_ends(
        &self,
        node: Option<i32>,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, ClusterError> {
        self.list_offsets_as(node, topic, partitions, -1, 1).await
    }

    async fn list_offsets_as(
        &self,
        node: Option<i32>,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
        isolation_level: i8,
    ) -> Result<BTreeMap<i32, i64>, ClusterError> {
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(sb(topic));
        for p in partitions {
            let mut lp = ListOffsetsPartition::default();
            lp.partition_index = *p;
            lp.current_leader_epoch = -1;
            lp.timestamp = timestamp;
            t.partitions.push(lp);
        }
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        req.isolation_level = isolation_level;
        req.topics.push(t);
        let resp: ListOffsetsResponse = self.call(node, ApiKey::ListOffsets, 4, &req).await?;
        let mut out = BTreeMap::new();
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(self.kafka(
                        format!("offsets of {topic}/{}", p.partition_index),
                        p.error_code,
                        None,
                    ));
                }
                out.insert(p.partition_index, p.offset);
            }
        }
        Ok(out)
    }

    /// Moves a partition's log start forward (DeleteRecords).
    pub async fn delete_records(
        &self,
        node: Option<i32>,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), ClusterError> {
        let mut p = DeleteRecordsPartition::default();
        p.partition_index = partition;
        p.offset = offset;
        let mut t = DeleteRecordsTopic::default();
        t.name = TopicName(sb(topic));
        t.partitions.push(p);
        let mut req = DeleteRecordsRequest::default();
        req.topics.push(t);
        req.timeout_ms = 30_000;
        let resp: DeleteRecordsResponse = self.call(node, ApiKey::DeleteRecords, 2, &req).await?;
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(self.kafka(
                        format!("moving the log start of {topic}/{partition}"),
                        p.error_code,
                        None,
                    ));
                }
            }
        }
        Ok(())
    }

    /// One partition read from `offset` (at most `max_bytes`, no waiting); `committed` reads
    /// as a read_committed consumer (up to the last stable offset, with the aborted list).
    pub async fn fetch_one(
        &self,
        node: Option<i32>,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        committed: bool,
    ) -> Result<FetchedPartition, ClusterError> {
        let mut fp = fetch_request::FetchPartition::default();
        fp.partition = partition;
        fp.current_leader_epoch = -1;
        fp.fetch_offset = offset;
        fp.log_start_offset = -1;
        fp.partition_max_bytes = max_bytes;
        let mut t = fetch_request::FetchTopic::default();
        t.topic = TopicName(sb(topic));
        t.partitions.push(fp);
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = 0;
        req.min_bytes = 0;
        req.max_bytes = max_bytes;
        req.isolation_level = i8::from(committed);
        req.session_epoch = -1;
        req.topics.push(t);
        let resp: FetchResponse = self.call(node, ApiKey::Fetch, 11, &req).await?;
        let p = resp
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| self.kafka(format!("fetching {topic}/{partition}"), -1, None))?;
        if p.error_code != 0 {
            return Err(self.kafka(
                format!("fetching {topic}/{partition} at {offset}"),
                p.error_code,
                None,
            ));
        }
        Ok(FetchedPartition {
            records: p.records.unwrap_or_default(),
            high_watermark: p.high_watermark,
            last_stable: p.last_stable_offset,
            aborted: aborted_list(p.aborted_transactions.as_deref()),
        })
    }

    /// The node coordinating consumer group `group`.
    async fn coordinator(&self, group: &str) -> Result<i32, ClusterError> {
        self.coordinator_of(group, 0).await
    }

    /// The node coordinating `key`: a consumer group (type 0) or a transactional id (type 1).
    pub async fn coordinator_of(&self, key: &str, key_type: i8) -> Result<i32, ClusterError> {
        let mut req = FindCoordinatorRequest::default();
        req.key = sb(key);
        req.key_type = key_type;
        let resp: FindCoordinatorResponse =
            self.call(None, ApiKey::FindCoordinator, 3, &req).await?;
        if resp.error_code != 0 {
            let what = if key_type == 0 {
                "group"
            } else {
                "transactional id"
            };
            return Err(self.kafka(
                format!("coordinator of {what} {key}"),
                resp.error_code,
                resp.error_message.as_ref(),
            ));
        }
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(resp.node_id.0, format!("{}:{}", resp.host, resp.port));
        Ok(resp.node_id.0)
    }

    /// Every consumer group: id → state (Empty, Stable, ...).
    pub async fn list_groups(&self) -> Result<BTreeMap<String, String>, ClusterError> {
        let req = ListGroupsRequest::default();
        let resp: ListGroupsResponse = self.call(None, ApiKey::ListGroups, 4, &req).await?;
        if resp.error_code != 0 {
            return Err(self.kafka("listing groups".into(), resp.error_code, None));
        }
        Ok(resp
            .groups
            .into_iter()
            .map(|g| (g.group_id.to_string(), g.group_state.to_string()))
            .collect())
    }

    /// Whether `group` has members here (so its offsets must not be overwritten).
    pub async fn group_active(&self, group: &str) -> Result<bool, ClusterError> {
        let node = self.coordinator(group).await?;
        let mut req = DescribeGroupsRequest::default();
        req.groups.push(GroupId(sb(group)));
        let resp: DescribeGroupsResponse = self
            .call(Some(node), ApiKey::DescribeGroups, 5, &req)
            .await?;
        Ok(resp.groups.iter().any(|g| !g.members.is_empty()))
    }

    /// A group's committed offsets: (topic, partition) → offset.
    pub async fn committed(
        &self,
        group: &str,
    ) -> Result<BTreeMap<(String, i32), i64>, ClusterError> {
        let node = self.coordinator(group).await?;
        let mut req = OffsetFetchRequest::default();
        req.group_id = GroupId(sb(group));
        req.topics = None;
        let resp: OffsetFetchResponse = self.call(Some(node), ApiKey::OffsetFetch, 7, &req).await?;
        if resp.error_code != 0 {
            return Err(self.kafka(format!("offsets of group {group}"), resp.error_code, None));
        }
        let mut out = BTreeMap::new();
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code == 0 && p.committed_offset >= 0 {
                    out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
                }
            }
        }
        Ok(out)
    }

    /// Commits offsets for `group` as a group with no members (generation -1).
    pub async fn commit(
        &self,
        group: &str,
        offsets: &BTreeMap<(String, i32), i64>,
    ) -> Result<(), ClusterError> {
        let node = self.coordinator(group).await?;
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(sb(group));
        req.generation_id_or_member_epoch = -1;
        req.retention_time_ms = -1;
        let mut topics: BTreeMap<&str, OffsetCommitRequestTopic> = BTreeMap::new();
        for ((topic, partition), offset) in offsets {
            let t = topics.entry(topic).or_insert_with(|| {
                let mut t = OffsetCommitRequestTopic::default();
                t.name = TopicName(sb(topic));
                t
            });
            let mut p = OffsetCommitRequestPartition::default();
            p.partition_index = *partition;
            p.committed_offset = *offset;
            p.committed_leader_epoch = -1;
            t.partitions.push(p);
        }
        req.topics = topics.into_values().collect();
        let resp: OffsetCommitResponse =
            self.call(Some(node), ApiKey::OffsetCommit, 8, &req).await?;
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(self.kafka(
                        format!(
                            "committing group {group} at {}/{}",
                            t.name.0, p.partition_index
                        ),
                        p.error_code,
                        None,
                    ));
                }
            }
        }
        Ok(())
    }
}
