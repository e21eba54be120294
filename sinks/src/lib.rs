//! Sinks. Each writes only its own service (a topic, a file, a table, a URL); batching,
//! retries with backoff, dead letters and acknowledgements are shared in [`batching`].

pub mod batching;
mod console;
mod file;
mod http;
mod kafka;
mod native;
mod postgres;

use trib_pipelines::config::sinks::KafkaClient;
use trib_pipelines::config::SinkConfig;
use trib_pipelines::runtime::Sink;

/// Builds the sink a config describes (no I/O until it runs).
pub fn build(name: &str, cfg: &SinkConfig) -> anyhow::Result<Box<dyn Sink>> {
    Ok(match cfg {
        SinkConfig::Console(c) => Box::new(console::Console::new(c)),
        SinkConfig::File(c) => Box::new(file::File::new(c)),
        SinkConfig::Kafka(c) => match c.client {
            KafkaClient::Librdkafka => Box::new(kafka::Kafka::new(name, c)?),
            KafkaClient::Native => Box::new(native::NativeKafka::new(c)?),
        },
        SinkConfig::Http(c) => Box::new(http::Http::new(c)?),
        SinkConfig::Postgres(c) => Box::new(postgres::Postgres::new(c)?),
        SinkConfig::Lake(_) => {
            anyhow::bail!("the lake sink is built by trib-lake (its Arrow and Parquet stay out of this crate)")
        }
    })
}
