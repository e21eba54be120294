//! Config types of the sinks, and the batching and retry options they share. The sinks live
//! in the `trib-sinks` crate.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// How a sink groups events into writes.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Most events per write.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Most bytes per write (approximate: the encoded events).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Longest a partial batch waits for more events, in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            max_events: default_max_events(),
            max_bytes: default_max_bytes(),
            timeout_ms: default_timeout(),
        }
    }
}

fn default_max_events() -> usize {
    10_000
}
fn default_max_bytes() -> usize {
    8 << 20
}
fn default_timeout() -> u64 {
    200
}

/// How a sink retries a failed write: exponential backoff from `initial_backoff_ms` to
/// `max_backoff_ms`. Events stay buffered (and upstream waits) until the write succeeds.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// Give up after this many attempts and send the batch to `dead_letter`; 0: never give up.
    #[serde(default)]
    pub max_attempts: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            initial_backoff_ms: default_initial_backoff(),
            max_backoff_ms: default_max_backoff(),
            max_attempts: 0,
        }
    }
}

fn default_initial_backoff() -> u64 {
    100
}
fn default_max_backoff() -> u64 {
    10_000
}

/// How events are written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// One JSON object per event (raw events as `{"message": ...}`).
    Json,
    /// The event body as is: the fields as JSON, or the raw bytes.
    Text,
}

fn default_json() -> Encoding {
    Encoding::Json
}
fn default_text() -> Encoding {
    Encoding::Text
}

sink_config! {
    /// Prints events to standard output, one per line.
    pub struct ConsoleSink {
        #[serde(default = "default_text")]
        pub encoding: Encoding,
    }
}

sink_config! {
    /// Appends events as NDJSON to a file, fsyncs before acknowledging, and rotates by size or
    /// age (the closed file is renamed `<path>.<unix-ms>`, with `-N` added if that name is
    /// taken). A partial last line left by a crash is cut off before appending.
    pub struct FileSink {
        /// File path.
        pub path: String,
        #[serde(default = "default_json")]
        pub encoding: Encoding,
        /// Rotate when the file reaches this many bytes (0: never).
        #[serde(default = "default_rotate_bytes")]
        pub rotate_bytes: u64,
        /// Rotate when the file is this old in milliseconds (0: never).
        #[serde(default)]
        pub rotate_ms: u64,
        #[serde(default)]
        pub batch: Batch,
    }
}

fn default_rotate_bytes() -> u64 {
    128 << 20
}
fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}

/// Producer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

sink_config! {
    /// Produces events to a topic of any Kafka-protocol cluster (acks=all, idempotent). An event
    /// is acknowledged upstream when the broker has acknowledged it.
    pub struct KafkaSink {
        /// Bootstrap servers, comma-separated.
        #[serde(default = "default_brokers")]
        pub brokers: String,
        /// Topic (an event's `set_record` topic takes precedence).
        pub topic: String,
        /// Field whose text is the record key (a `set_record` key takes precedence).
        #[serde(default)]
        pub key_field: Option<String>,
        #[serde(default = "default_compression")]
        pub compression: Compression,
        /// Longest a partition's batch waits to fill before it is sent (librdkafka `linger.ms`).
        #[serde(default = "default_linger")]
        pub linger_ms: u64,
        /// Largest batch per partition in bytes (librdkafka `batch.size`).
        #[serde(default = "default_kafka_batch_bytes")]
        pub batch_max_bytes: usize,
        /// Most records per partition batch (librdkafka `batch.num.messages`).
        #[serde(default = "default_kafka_batch_records")]
        pub batch_max_records: usize,
        /// `murmur2` (keys land where Java clients put them; keyless records stick to one
        /// partition per batch), `crc32`, or `random`.
        #[serde(default)]
        pub partitioner: Partitioner,
        /// `librdkafka` (default; every librdkafka property through `options`) or `native`
        /// (batches built straight from events: the agent's fast path to the broker).
        #[serde(default)]
        pub client: KafkaClient,
        /// Extra librdkafka producer properties.
        #[serde(default)]
        pub options: IndexMap<String, String>,
    }
}

fn default_compression() -> Compression {
    Compression::Zstd
}
fn default_linger() -> u64 {
    5
}
fn default_kafka_batch_bytes() -> usize {
    1 << 20
}
fn default_kafka_batch_records() -> usize {
    10_000
}

/// Which producer a Kafka sink uses.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum KafkaClient {
    /// librdkafka: SASL/TLS and every producer property through `options`.
    #[default]
    Librdkafka,
    /// Tributary's own producer: v2 record batches built straight from events per partition,
    /// compressed once per batch, acks=all, idempotent, one request in flight per broker.
    Native,
}

/// How a Kafka sink picks the partition of a record that has none set.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Partitioner {
    /// murmur2 of the key, like the Java client; keyless records are sticky.
    #[default]
    Murmur2,
    /// CRC32 of the key, like librdkafka's default; keyless records are sticky.
    Crc32,
    /// Any partition, ignoring the key.
    Random,
}

sink_config! {
    /// POSTs batches of events (NDJSON or a JSON array) to a URL, retrying on connection errors,
    /// 429 and 5xx; other 4xx answers send the batch to `dead_letter`.
    pub struct HttpSink {
        /// URL (http://).
        pub url: String,
        /// Body layout.
        #[serde(default = "default_http_body")]
        pub body: HttpBody,
        /// Sent as `Authorization: Bearer <token>`.
        #[serde(default)]
        pub auth_token: Option<String>,
        /// Extra request headers.
        #[serde(default)]
        pub headers: IndexMap<String, String>,
        #[serde(default)]
        pub batch: Batch,
        #[serde(default)]
        pub retry: Retry,
    }
}

/// HTTP sink body layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpBody {
    Ndjson,
    JsonArray,
}

fn default_http_body() -> HttpBody {
    HttpBody::Ndjson
}

sink_config! {
    /// Writes events into a PostgreSQL table with `COPY ... FROM STDIN`, one transaction per
    /// batch. A batch the server rejects for its data is split to find the bad rows, which go to
    /// `dead_letter`; connection errors are retried.
    pub struct PostgresSink {
        /// Connection string (`host=127.0.0.1 port=5432 user=... dbname=...` or a URL).
        pub url: String,
        /// Table, optionally schema-qualified.
        pub table: String,
        /// Column → field path. Values are written as text; missing fields as NULL.
        pub columns: IndexMap<String, String>,
        #[serde(default)]
        pub batch: Batch,
        #[serde(default)]
        pub retry: Retry,
    }
}

/// What a disk buffer does when it is full.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Upstream waits until the sink has caught up (nothing is lost).
    #[default]
    Block,
    /// New events are dropped (and counted in `trib_pipeline_buffer_dropped_events_total`).
    DropNewest,
}

/// The kinds of sink buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    Disk,
}

/// A write-ahead buffer on disk in front of a sink. Events are acknowledged upstream once they
/// are written to the buffer (so a file source advances and a producer is answered while the
/// destination is away); the sink reads them back and the buffer forgets them only when the sink
/// has delivered them. Records are checksummed; at start a torn or corrupt tail is cut off and
/// reported.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskBufferConfig {
    /// `disk`.
    #[serde(rename = "type")]
    pub kind: BufferKind,
    /// Folder of the buffer's segment files (one folder per sink).
    pub path: String,
    /// Most bytes on disk.
    #[serde(default = "default_buffer_max_bytes")]
    pub max_bytes: u64,
    /// `block` (default) or `drop_newest`.
    #[serde(default)]
    pub when_full: WhenFull,
    /// How often written records are fsynced, in ms; 0: before every acknowledgement. Records
    /// survive a crash of the agent (kill -9) either way; this bounds what a power loss takes.
    #[serde(default = "default_buffer_fsync")]
    pub fsync_interval_ms: u64,
}

fn default_buffer_max_bytes() -> u64 {
    256 << 20
}
fn default_buffer_fsync() -> u64 {
    1000
}

/// Sink configs that can have a disk buffer.
pub trait HasBuffer {
    fn buffer(&self) -> Option<&DiskBufferConfig>;
}

impl SinkConfig {
    /// The sink's disk buffer, if it has one.
    pub fn buffer(&self) -> Option<&DiskBufferConfig> {
        match self {
            SinkConfig::Console(c) => c.buffer(),
            SinkConfig::File(c) => c.buffer(),
            SinkConfig::Kafka(c) => c.buffer(),
            SinkConfig::Http(c) => c.buffer(),
            SinkConfig::Postgres(c) => c.buffer(),
            SinkConfig::Lake(c) => c.buffer(),
        }
    }
}

sink_config! {
    /// Writes events as Parquet files into a lake: a local folder or an object store (S3, GCS,
    /// Azure), partitioned Hive-style by table and event time
    /// (`<path>/<table>/date=YYYY-MM-DD/hour=HH/`). A file is stored whole (locally: a
    /// temporary name, fsynced, renamed; object stores: one PUT) before its events are
    /// acknowledged. Events read from Kafka are exported exactly once: a file's name carries its
    /// partition and first and last offsets, and after a restart records at or below the
    /// offsets already in the lake are skipped. See docs/lake.md.
    pub struct LakeSink {
        /// The lake: a folder, or an object store URL (`s3://bucket/prefix`, `gs://…`,
        /// `az://…`).
        #[serde(default = "default_lake_path")]
        pub path: String,
        /// Object store settings (`aws_endpoint`, `aws_region`, `aws_access_key_id`,
        /// `aws_secret_access_key`, `aws_allow_http`, …; the `AWS_*`, `GOOGLE_*` and `AZURE_*`
        /// environment variables are read too, and these win).
        #[serde(default)]
        pub storage_options: BTreeMap<String, String>,
        /// Table for events that did not come from a Kafka topic (Kafka events go to a table
        /// named after their topic).
        #[serde(default = "default_lake_table")]
        pub table: String,
        /// `json`: the event's fields as columns (a raw event's body is read as a JSON object;
        /// one that is not becomes a `message` column); `raw`: key, value, headers, timestamp,
        /// topic, partition, offset.
        #[serde(default)]
        pub mode: LakeMode,
        /// Declared columns (json mode): only these are written, with these types; a value that
        /// does not fit its column is written as null and counted in the sink's `errors`.
        /// Without it, the schema is inferred per file (new fields add columns; a field whose
        /// values have different types in one file is written as JSON text).
        #[serde(default)]
        pub schema: Vec<LakeColumn>,
        /// A file is written when it has this many rows...
        #[serde(default = "default_roll_rows")]
        pub roll_rows: usize,
        /// ...or about this many bytes of event bodies...
        #[serde(default = "default_roll_bytes")]
        pub roll_bytes: usize,
        /// ...or its first event has waited this long (ms).
        #[serde(default = "default_roll_age")]
        pub roll_age_ms: u64,
    }
}

/// Columns of the lake's files.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LakeMode {
    #[default]
    Json,
    Raw,
}

/// A declared column of the lake sink.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LakeColumn {
    /// The field's name (a top-level field of the event).
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: LakeType,
}

/// Types of declared lake columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LakeType {
    /// Text (a number or boolean is written as its text).
    String,
    Int64,
    Float64,
    Boolean,
    /// A time: milliseconds since the epoch or an RFC 3339 string.
    Timestamp,
    /// Any value, as JSON text.
    Json,
}

fn default_lake_path() -> String {
    "./trib-data/lake".into()
}
fn default_lake_table() -> String {
    "events".into()
}
fn default_roll_rows() -> usize {
    1_000_000
}
fn default_roll_bytes() -> usize {
    128 << 20
}
fn default_roll_age() -> u64 {
    60_000
}

family! {
    /// Any sink.
    pub enum SinkConfig {
        "console" => Console(ConsoleSink),
        "file" => File(FileSink),
        "kafka" => Kafka(KafkaSink),
        "http" => Http(HttpSink),
        "postgres" => Postgres(PostgresSink),
        "lake" => Lake(LakeSink),
    }
}
