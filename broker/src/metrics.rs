//! Prometheus metrics of the broker: requests by API, bytes in and out, connections, errors.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    pub api: String,
}

/// The API labels requests are counted under.
pub const API_NAMES: &[&str] = &[
    "produce",
    "fetch",
    "list_offsets",
    "metadata",
    "api_versions",
    "groups",
    "admin",
];

/// The broker's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<ApiLabel, Counter>,
    by_api: Vec<Counter>,
    produced_bytes: Counter,
    produce_errors: Counter,
    fetched_bytes: Counter,
    connections: Gauge,
    connections_total: Counter,
    protocol_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tributary_broker");
        let m = Self {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            by_api: Vec::new(),
            produced_bytes: Counter::default(),
            produce_errors: Counter::default(),
            fetched_bytes: Counter::default(),
            connections: Gauge::default(),
            connections_total: Counter::default(),
            protocol_errors: Counter::default(),
        };
        let mut m = m;
        m.by_api = API_NAMES
            .iter()
            .map(|n| {
                m.requests
                    .get_or_create(&ApiLabel { api: n.to_string() })
                    .clone()
            })
            .collect();
        registry.register("requests", "Requests handled, by API", m.requests.clone());
        registry.register(
            "produced_bytes",
            "Record batch bytes appended",
            m.produced_bytes.clone(),
        );
        registry.register(
            "produce_errors",
            "Partition appends refused",
            m.produce_errors.clone(),
        );
        registry.register(
            "fetched_bytes",
            "Record batch bytes returned by Fetch",
            m.fetched_bytes.clone(),
        );
        registry.register(
            "connections",
            "Open client connections",
            m.connections.clone(),
        );
        registry.register(
            "connections_accepted",
            "Client connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "protocol_errors",
            "Connections closed for malformed or unsupported requests",
            m.protocol_errors.clone(),
        );
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = registry;
        m
    }

    pub fn request(&self, api: &str) {
        self.requests
            .get_or_create(&ApiLabel {
                api: api.to_string(),
            })
            .inc();
    }
    pub fn produced(&self, bytes: u64) {
        self.produced_bytes.inc_by(bytes);
    }
    pub fn produce_error(&self) {
        self.produce_errors.inc();
    }
    pub fn fetched(&self, bytes: u64) {
        self.fetched_bytes.inc_by(bytes);
    }
    pub fn connection_opened(&self) {
        self.connections.inc();
        self.connections_total.inc();
    }
    pub fn connection_closed(&self) {
        self.connections.dec();
    }
    pub fn protocol_error(&self) {
        self.protocol_errors.inc();
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
            out.clear();
        }
        out
    }
}
