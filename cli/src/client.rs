//! Shared client settings for the commands that talk to a broker through librdkafka.

use std::time::Duration;

use clap::Args;
use rdkafka::ClientConfig;

#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Bootstrap brokers (host:port, comma separated).
    #[arg(
        long,
        short = 'b',
        env = "TRIB_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// Extra librdkafka setting as key=value (repeatable), e.g. -X compression.type=zstd.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
}

impl ClientArgs {
    /// A librdkafka config with the bootstrap servers and the extra settings applied.
    pub fn config(&self) -> anyhow::Result<ClientConfig> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("log_level", "3");
        for kv in &self.extra {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("-X `{kv}`: expected KEY=VALUE"))?;
            c.set(k, v);
        }
        Ok(c)
    }
}

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Parses `key=value`.
pub fn parse_kv(s: &str, what: &str) -> anyhow::Result<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| anyhow::anyhow!("{what} `{s}`: expected KEY=VALUE"))
}

/// A time given as epoch milliseconds or RFC 3339, in epoch milliseconds.
pub fn parse_time_ms(t: &str, what: &str) -> anyhow::Result<i64> {
    Ok(match t.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => humantime::parse_rfc3339_weak(t)
            .map_err(|e| anyhow::anyhow!("{what} `{t}`: not epoch ms or RFC 3339 ({e})"))?
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64,
    })
}

/// `wanted` of `topic`'s partitions (all when empty); an unknown one is an error naming it.
pub fn chosen_partitions(
    consumer: &rdkafka::consumer::BaseConsumer,
    brokers: &str,
    topic: &str,
    wanted: &[i32],
) -> anyhow::Result<Vec<i32>> {
    let all = topic_partitions(consumer, brokers, topic)?;
    if wanted.is_empty() {
        return Ok(all);
    }
    for p in wanted {
        if !all.contains(p) {
            anyhow::bail!("topic {topic} has no partition {p}");
        }
    }
    Ok(wanted.to_vec())
}

/// The partition ids of `topic`, from the broker's metadata; an error names the topic.
pub fn topic_partitions(
    consumer: &rdkafka::consumer::BaseConsumer,
    brokers: &str,
    topic: &str,
) -> anyhow::Result<Vec<i32>> {
    use rdkafka::consumer::Consumer;
    let md = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| anyhow::anyhow!("cannot reach {brokers}: {e}"))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        anyhow::bail!("topic {topic} not found")
    };
    if let Some(e) = t.error() {
        anyhow::bail!("topic {topic}: {e:?}");
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// A consumed record as one JSON object: topic, partition, offset, timestamp, key, value and
/// headers (bytes as UTF-8 text), the shape `trib consume --format json`, `trib query` and the
/// broker's index endpoint print.
pub fn record_json(topic: &str, m: &rdkafka::message::BorrowedMessage<'_>) -> serde_json::Value {
    use rdkafka::message::{Headers, Message};
    let text = |b: Option<&[u8]>| {
        b.map_or(serde_json::Value::Null, |b| {
            String::from_utf8_lossy(b).into_owned().into()
        })
    };
    let headers: serde_json::Map<String, serde_json::Value> = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), text(h.value)))
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "topic": topic,
        "partition": m.partition(),
        "offset": m.offset(),
        "timestamp": m.timestamp().to_millis(),
        "key": text(m.key()),
        "value": text(m.payload()),
        "headers": headers,
    })
}
