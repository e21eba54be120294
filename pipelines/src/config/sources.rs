//! Config types of the sources. The sources themselves live in the `trib-connectors` crate.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

fn default_rate() -> f64 {
    10.0
}
fn default_batch() -> usize {
    1000
}
fn default_http_address() -> String {
    "127.0.0.1:8080".into()
}
fn default_http_path() -> String {
    "/".into()
}
fn default_max_body() -> usize {
    16 << 20
}
fn default_max_line() -> usize {
    1 << 20
}
fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}

/// What the demo source generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DemoFormat {
    /// Apache/nginx combined access-log lines.
    ApacheCombined,
    /// Apache common access-log lines.
    ApacheCommon,
    /// RFC 5424 syslog lines.
    Syslog,
    /// JSON objects of a web request (`host`, `method`, `path`, `status`, `bytes`, ...).
    Json,
    /// logfmt lines.
    Logfmt,
}

source_config! {
    /// Generates demo events: web-server logs and friends, at a fixed rate.
    pub struct DemoSource {
        /// Line format.
        #[serde(default = "default_demo_format")]
        pub format: DemoFormat,
        /// Events per second; 0 for as fast as the pipeline takes them.
        #[serde(default = "default_rate")]
        pub rate: f64,
        /// Stop after this many events (default: never).
        #[serde(default)]
        pub count: Option<u64>,
        /// Events per batch handed to the pipeline.
        #[serde(default = "default_batch")]
        pub batch: usize,
    }
}

fn default_demo_format() -> DemoFormat {
    DemoFormat::ApacheCombined
}

source_config! {
    /// Reads newline-delimited lines from standard input; each line is a raw event. Ends at EOF.
    pub struct StdinSource {
        /// Longest accepted line in bytes; longer lines go to the log as errors and are skipped.
        #[serde(default = "default_max_line")]
        pub max_line_bytes: usize,
    }
}

/// How an HTTP request body is split into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpDecoding {
    /// A JSON object (one event) or an array of objects (one event each).
    Json,
    /// One JSON object per line.
    Ndjson,
    /// One raw event per line.
    Text,
}

source_config! {
    /// Accepts events by HTTP POST. Answers 200 only after every sink has durably taken the
    /// request's events, 503 if they could not be delivered, 400 for a body that does not
    /// decode, 401 for a missing or wrong token.
    pub struct HttpSource {
        /// Address to listen on.
        #[serde(default = "default_http_address")]
        pub address: String,
        /// URL path that accepts events.
        #[serde(default = "default_http_path")]
        pub path: String,
        /// Body decoding.
        #[serde(default = "default_decoding")]
        pub decoding: HttpDecoding,
        /// If set, requests must carry `Authorization: Bearer <token>`.
        #[serde(default)]
        pub auth_token: Option<String>,
        /// Largest accepted body in bytes (413 above).
        #[serde(default = "default_max_body")]
        pub max_body_bytes: usize,
    }
}

fn default_decoding() -> HttpDecoding {
    HttpDecoding::Ndjson
}

/// Where a Kafka source starts when its group has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    Earliest,
    Latest,
}

source_config! {
    /// Consumes topics of any Kafka-protocol cluster in a consumer group (through librdkafka).
    /// Offsets are committed only after every sink has durably taken the events before them.
    pub struct KafkaSource {
        /// Bootstrap servers, comma-separated.
        #[serde(default = "default_brokers")]
        pub brokers: String,
        /// Topics to consume.
        pub topics: Vec<String>,
        /// Consumer group id.
        pub group_id: String,
        /// Where to start without a committed offset.
        #[serde(default = "default_start")]
        pub start_from: StartFrom,
        /// Most events handed to the pipeline per batch.
        #[serde(default = "default_batch")]
        pub batch: usize,
        /// Extra librdkafka consumer properties.
        #[serde(default)]
        pub options: IndexMap<String, String>,
    }
}

fn default_start() -> StartFrom {
    StartFrom::Earliest
}

/// Where the file source starts in files it finds at its first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    Beginning,
    End,
}

/// How lines are joined into multiline events.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Multiline {
    /// A line matching this regex starts a new event; other lines belong to the previous one
    /// (e.g. `^\\S` joins indented stack-trace lines). Give this or `continuation_pattern`.
    #[serde(default)]
    pub start_pattern: Option<String>,
    /// A line matching this regex continues the previous event; other lines start a new one
    /// (e.g. `^\\s`). Give this or `start_pattern`.
    #[serde(default)]
    pub continuation_pattern: Option<String>,
    /// An event waiting for more lines is emitted after this long without one, in ms.
    #[serde(default = "default_multiline_timeout")]
    pub timeout_ms: u64,
}

fn default_multiline_timeout() -> u64 {
    1000
}

source_config! {
    /// Tails files matched by globs. A file is known by a fingerprint of its first line (not its
    /// inode), so a renamed file is followed and a copytruncate rotation is recognised; open
    /// files are read to their end even after they are renamed or deleted. Each line is a raw
    /// event with the file's path in the `file` header. The read position of each file is
    /// checkpointed in `state_dir` only after the sinks have taken its lines.
    pub struct FileSource {
        /// Globs of files to read (`**` matches any folders).
        pub include: Vec<String>,
        /// Globs of files to leave out.
        #[serde(default)]
        pub exclude: Vec<String>,
        /// Where to start in files present at the first start (files that appear later are
        /// read from their beginning).
        #[serde(default = "default_start_at")]
        pub start_at: StartAt,
        /// Folder for the checkpoint of read positions.
        pub state_dir: String,
        /// Longest line in bytes; a longer line is cut there and its event carries the header
        /// `truncated: true`.
        #[serde(default = "default_file_max_line")]
        pub max_line_bytes: usize,
        /// Join lines into multiline events.
        #[serde(default)]
        pub multiline: Option<Multiline>,
        /// How often the globs are scanned for new files, in ms.
        #[serde(default = "default_glob_interval")]
        pub glob_interval_ms: u64,
        /// A file no glob matches any more (renamed away or deleted) is closed after it has been
        /// read to its end and has not grown for this long, in ms.
        #[serde(default = "default_idle_close")]
        pub close_idle_ms: u64,
        /// Most lines per batch.
        #[serde(default = "default_batch")]
        pub batch: usize,
    }
}

fn default_start_at() -> StartAt {
    StartAt::Beginning
}
fn default_file_max_line() -> usize {
    100 * 1024
}
fn default_glob_interval() -> u64 {
    1000
}
fn default_idle_close() -> u64 {
    5000
}

/// Transport of the syslog source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyslogMode {
    /// One message per datagram.
    Udp,
    /// Newline-delimited or octet-counted (RFC 6587) messages.
    Tcp,
}

source_config! {
    /// Receives syslog messages (RFC 5424 or RFC 3164) over UDP or TCP and parses them into
    /// `facility`, `severity`, `timestamp`, `hostname`, `appname`, `procid`, `msgid`,
    /// `message` (and `host`, the peer address). A message that does not parse is kept as a raw
    /// event.
    pub struct SyslogSource {
        /// Address to listen on.
        #[serde(default = "default_syslog_address")]
        pub address: String,
        #[serde(default = "default_syslog_mode")]
        pub mode: SyslogMode,
        /// Longest message in bytes; longer TCP lines are cut, longer datagrams dropped.
        #[serde(default = "default_syslog_max")]
        pub max_message_bytes: usize,
    }
}

fn default_syslog_address() -> String {
    "127.0.0.1:5514".into()
}
fn default_syslog_mode() -> SyslogMode {
    SyslogMode::Udp
}
fn default_syslog_max() -> usize {
    64 * 1024
}

source_config! {
    /// Accepts newline-delimited lines (text, or NDJSON objects) on a TCP address or a Unix
    /// socket, for local applications that write logs to a socket.
    pub struct SocketSource {
        /// TCP address to listen on (host:port); give this or `path`.
        #[serde(default)]
        pub address: Option<String>,
        /// Unix socket path to listen on; give this or `address`.
        #[serde(default)]
        pub path: Option<String>,
        /// `text`: each line a raw event; `ndjson`: each line a JSON object.
        #[serde(default = "default_socket_decoding")]
        pub decoding: HttpDecoding,
        /// Longest line in bytes; a longer line is cut and its event carries `truncated: true`.
        #[serde(default = "default_max_line")]
        pub max_line_bytes: usize,
    }
}

fn default_socket_decoding() -> HttpDecoding {
    HttpDecoding::Text
}

/// Groups of host metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Collector {
    /// `cpu_seconds_total{cpu, mode}` from /proc/stat.
    Cpu,
    /// `memory_*_bytes` from /proc/meminfo.
    Memory,
    /// `load1`, `load5`, `load15`.
    Load,
    /// `disk_{reads,writes}_total`, `disk_{read,written}_bytes_total{device}`.
    Disk,
    /// `filesystem_{total,free,available}_bytes{mountpoint, fstype}` of real filesystems.
    Filesystem,
    /// `network_{receive,transmit}_{bytes,packets,errors,drops}_total{device}`.
    Network,
}

fn all_collectors() -> Vec<Collector> {
    vec![
        Collector::Cpu,
        Collector::Memory,
        Collector::Load,
        Collector::Disk,
        Collector::Filesystem,
        Collector::Network,
    ]
}

source_config! {
    /// Collects host metrics from /proc at an interval. Each sample is a structured event:
    /// `metric`, `value`, `type` (`gauge` or `counter`), `tags` and `host`.
    pub struct HostMetricsSource {
        /// Interval between collections, in ms.
        #[serde(default = "default_host_interval")]
        pub interval_ms: u64,
        /// Which groups to collect (default: all).
        #[serde(default = "all_collectors")]
        pub collectors: Vec<Collector>,
        /// Root of the proc file system (for containers that mount the host's elsewhere).
        #[serde(default = "default_proc")]
        pub proc_root: String,
    }
}

fn default_host_interval() -> u64 {
    10_000
}
fn default_proc() -> String {
    "/proc".into()
}

source_config! {
    /// Scrapes Prometheus text-format endpoints at an interval; each sample is a structured
    /// event: `metric`, `value`, `type` (from `# TYPE`, else `untyped`), `tags` (the labels plus
    /// `instance`, the URL's host:port) and `host`.
    pub struct PrometheusScrapeSource {
        /// Endpoints (http://host:port/metrics).
        pub urls: Vec<String>,
        /// Interval between scrapes, in ms.
        #[serde(default = "default_scrape_interval")]
        pub interval_ms: u64,
        /// Give up on an endpoint after this long, in ms.
        #[serde(default = "default_scrape_timeout")]
        pub timeout_ms: u64,
    }
}

fn default_scrape_interval() -> u64 {
    15_000
}
fn default_scrape_timeout() -> u64 {
    5_000
}

source_config! {
    /// Reads the systemd journal through `journalctl --follow --output=json`. Each entry is an
    /// event with its journal fields (`MESSAGE` becomes `message`, `_HOSTNAME` `host`, and the
    /// entry's time the event time). The cursor of the last delivered entry is saved in
    /// `state_dir`, so a restart continues after it.
    pub struct JournaldSource {
        /// Folder for the saved cursor.
        pub state_dir: String,
        /// Read the journal files in this folder instead of the system journal.
        #[serde(default)]
        pub directory: Option<String>,
        /// Only entries of these systemd units (`nginx.service`, ...); empty: all.
        #[serde(default)]
        pub units: Vec<String>,
        /// Only entries of the current boot.
        #[serde(default)]
        pub current_boot_only: bool,
        /// Without a saved cursor: start at the end of the journal (true) or read it all.
        #[serde(default)]
        pub since_now: bool,
        /// The journalctl program.
        #[serde(default = "default_journalctl")]
        pub journalctl_path: String,
        /// Longest entry (one JSON line) in bytes; a longer one is skipped and logged.
        #[serde(default = "default_max_line")]
        pub max_entry_bytes: usize,
    }
}

fn default_journalctl() -> String {
    "journalctl".into()
}

/// When the Kafka endpoint answers a producer.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EndpointAck {
    /// Once every record of the request is delivered downstream: acknowledged by the broker, or
    /// written to a sink's disk buffer. A producer never hears "ok" for a record the agent could
    /// still lose.
    #[default]
    Delivered,
    /// As soon as the records are accepted into the pipeline (in memory): lowest latency, but
    /// records in flight are lost if the agent dies.
    Received,
}

source_config! {
    /// Speaks the Kafka protocol (ApiVersions, Metadata, InitProducerId, Produce) on a local
    /// address, so applications keep their Kafka client and point it at the agent. Every record
    /// becomes an event with its key, headers and timestamp, bound for the topic it was produced
    /// to; a Kafka sink regroups them into large batches (re-partitioned by key, or sticky when
    /// keyless). Retried batches of idempotent producers are recognised and not forwarded twice.
    pub struct KafkaEndpointSource {
        /// TCP address to listen on (host:port).
        pub address: String,
        /// host:port that Metadata tells clients to connect to; default `address`.
        #[serde(default)]
        pub advertised_address: Option<String>,
        /// Partitions each topic appears to have. The sink chooses the broker's partition.
        #[serde(default = "default_endpoint_partitions")]
        pub partitions: i32,
        /// When a producer gets its answer: `delivered` (default) or `received`.
        #[serde(default)]
        pub ack: EndpointAck,
        /// Topics producers may write to; empty: any valid topic name.
        #[serde(default)]
        pub topics: Vec<String>,
        /// Largest request accepted, in bytes; a larger frame closes the connection.
        #[serde(default = "default_max_body")]
        pub max_request_bytes: usize,
        /// Longest a request waits for its records to be delivered before the producer is told
        /// REQUEST_TIMED_OUT (it retries), in milliseconds.
        #[serde(default = "default_endpoint_timeout")]
        pub ack_timeout_ms: u64,
    }
}

fn default_endpoint_partitions() -> i32 {
    1
}
fn default_endpoint_timeout() -> u64 {
    30_000
}

family! {
    /// Any source.
    pub enum SourceConfig {
        "demo" => Demo(DemoSource),
        "stdin" => Stdin(StdinSource),
        "http" => Http(HttpSource),
        "kafka" => Kafka(KafkaSource),
        "file" => File(FileSource),
        "syslog" => Syslog(SyslogSource),
        "socket" => Socket(SocketSource),
        "host_metrics" => HostMetrics(HostMetricsSource),
        "prometheus_scrape" => PrometheusScrape(PrometheusScrapeSource),
        "kafka_endpoint" => KafkaEndpoint(KafkaEndpointSource),
        "journald" => Journald(JournaldSource),
        "mirror" => Mirror(crate::config::mirror::MirrorConfig),
    }
}
