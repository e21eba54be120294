//! Prometheus metrics of running pipelines, per component: events in and out, rejected events
//! (sent to `dead_letter`), bytes, events waiting in the component's input buffer, a lag gauge
//! that sources such as Kafka fill in, and request counts (produce requests a Kafka endpoint
//! received, produce requests a Kafka sink sent: their ratio is the agent's batching gain).

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Labels {
    pub pipeline: String,
    pub component: String,
    pub kind: String,
}

/// All pipelines' metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    events_in: Family<Labels, Counter>,
    events_out: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    bytes_in: Family<Labels, Counter>,
    bytes_out: Family<Labels, Counter>,
    buffered: Family<Labels, Gauge>,
    lag: Family<Labels, Gauge>,
    requests_in: Family<Labels, Counter>,
    requests_out: Family<Labels, Counter>,
    batches_out: Family<Labels, Counter>,
    buffer_bytes: Family<Labels, Gauge>,
    buffer_events: Family<Labels, Gauge>,
    buffer_dropped: Family<Labels, Counter>,
    buffer_corrupt: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("trib_pipeline");
        let m = Self {
            registry: Arc::new(Mutex::new(Registry::default())),
            events_in: Family::default(),
            events_out: Family::default(),
            errors: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            buffered: Family::default(),
            lag: Family::default(),
            requests_in: Family::default(),
            requests_out: Family::default(),
            batches_out: Family::default(),
            buffer_bytes: Family::default(),
            buffer_events: Family::default(),
            buffer_dropped: Family::default(),
            buffer_corrupt: Family::default(),
        };
        r.register(
            "events_in",
            "Events a component received",
            m.events_in.clone(),
        );
        r.register(
            "events_out",
            "Events a component sent on or delivered",
            m.events_out.clone(),
        );
        r.register(
            "errors",
            "Events a component rejected (sent to dead_letter)",
            m.errors.clone(),
        );
        r.register("bytes_in", "Bytes a source read", m.bytes_in.clone());
        r.register("bytes_out", "Bytes a sink wrote", m.bytes_out.clone());
        r.register(
            "buffered_events",
            "Events waiting in a component's input buffer",
            m.buffered.clone(),
        );
        r.register(
            "lag",
            "Records a source is behind its input (Kafka: end offset minus position)",
            m.lag.clone(),
        );
        r.register(
            "requests_in",
            "Requests a source answered (Kafka endpoint: produce requests from applications)",
            m.requests_in.clone(),
        );
        r.register(
            "requests_out",
            "Requests a sink sent (Kafka sink: produce requests to the brokers)",
            m.requests_out.clone(),
        );
        r.register(
            "batches_out",
            "Record batches a sink had acknowledged (Kafka sink, native client); events_out / batches_out is the mean batch",
            m.batches_out.clone(),
        );
        r.register(
            "buffer_bytes",
            "Bytes in a sink's disk buffer not yet delivered",
            m.buffer_bytes.clone(),
        );
        r.register(
            "buffer_events",
            "Events in a sink's disk buffer not yet delivered",
            m.buffer_events.clone(),
        );
        r.register(
            "buffer_dropped_events",
            "Events a full disk buffer dropped (when_full: drop_newest)",
            m.buffer_dropped.clone(),
        );
        r.register(
            "buffer_corrupt_bytes",
            "Bytes of a disk buffer cut off as torn or corrupt at start",
            m.buffer_corrupt.clone(),
        );
        *m.registry.lock().unwrap_or_else(|p| p.into_inner()) = r;
        m
    }
}

impl Metrics {
    /// The handles of one component.
    pub fn component(&self, pipeline: &str, component: &str, kind: &str) -> ComponentMetrics {
        let l = Labels {
            pipeline: pipeline.into(),
            component: component.into(),
            kind: kind.into(),
        };
        ComponentMetrics {
            events_in: self.events_in.get_or_create(&l).clone(),
            events_out: self.events_out.get_or_create(&l).clone(),
            errors: self.errors.get_or_create(&l).clone(),
            bytes_in: self.bytes_in.get_or_create(&l).clone(),
            bytes_out: self.bytes_out.get_or_create(&l).clone(),
            buffered: self.buffered.get_or_create(&l).clone(),
            lag: self.lag.get_or_create(&l).clone(),
            requests_in: self.requests_in.get_or_create(&l).clone(),
            requests_out: self.requests_out.get_or_create(&l).clone(),
            batches_out: self.batches_out.get_or_create(&l).clone(),
            buffer_bytes: self.buffer_bytes.get_or_create(&l).clone(),
            buffer_events: self.buffer_events.get_or_create(&l).clone(),
            buffer_dropped: self.buffer_dropped.get_or_create(&l).clone(),
            buffer_corrupt: self.buffer_corrupt.get_or_create(&l).clone(),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut s, &r);
        s
    }
}

/// One component's metric handles (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct ComponentMetrics {
    pub events_in: Counter,
    pub events_out: Counter,
    pub errors: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub buffered: Gauge,
    pub lag: Gauge,
    pub requests_in: Counter,
    pub requests_out: Counter,
    pub batches_out: Counter,
    pub buffer_bytes: Gauge,
    pub buffer_events: Gauge,
    pub buffer_dropped: Counter,
    pub buffer_corrupt: Counter,
}
