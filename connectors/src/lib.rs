//! Sources. Each produces event batches into its [`SourceContext`] and, where its input can be
//! acknowledged (Kafka offsets, HTTP responses), does so only after the pipeline has delivered
//! the batch (see `trib_pipelines::finalize`). Host collectors come with the agent.

mod demo;
mod file;
mod host_metrics;
mod http;
mod http_get;
mod journald;
pub mod kafka;
mod kafka_endpoint;
mod line_reader;
mod metric_event;
mod prometheus;
mod socket;
mod stdin;

pub use http_get::{http_call, http_get, url_encode};
use trib_pipelines::config::SourceConfig;
use trib_pipelines::runtime::Source;

/// Builds the source a config describes (no I/O until it runs).
pub fn build(name: &str, cfg: &SourceConfig) -> anyhow::Result<Box<dyn Source>> {
    Ok(match cfg {
        SourceConfig::Demo(c) => Box::new(demo::Demo::new(c)?),
        SourceConfig::Stdin(c) => Box::new(stdin::Stdin::new(c)),
        SourceConfig::Http(c) => Box::new(http::Http::new(c)?),
        SourceConfig::Kafka(c) => Box::new(kafka::Kafka::new(name, c)?),
        SourceConfig::File(c) => Box::new(file::FileTail::new(c)?),
        SourceConfig::Syslog(c) => Box::new(socket::Syslog::new(c)?),
        SourceConfig::Socket(c) => Box::new(socket::Socket::new(c)?),
        SourceConfig::HostMetrics(c) => Box::new(host_metrics::HostMetrics::new(c)?),
        SourceConfig::PrometheusScrape(c) => Box::new(prometheus::PrometheusScrape::new(c)?),
        SourceConfig::KafkaEndpoint(c) => Box::new(kafka_endpoint::KafkaEndpoint::new(c)?),
        SourceConfig::Journald(c) => Box::new(journald::Journald::new(c)?),
        SourceConfig::Mirror(_) => {
            anyhow::bail!(
                "the mirror source is built by trib-mirror (cluster to cluster, no events)"
            )
        }
    })
}
