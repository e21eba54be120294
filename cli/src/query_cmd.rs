//! `trib query TOPIC`: the records of a time window, an offset range, or matching indexed
//! fields, as JSON lines. `--where` goes to the broker's field index (`GET /index/query` on its
//! HTTP endpoint); a window or range alone is located with ListOffsets by time (the broker's
//! time index) and read from there (its offset index), never by scanning from the start.
//! Also `trib index status|rebuild TOPIC`.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use trib_connectors::url_encode as enc;

use crate::client::{chosen_partitions, parse_time_ms, record_json, ClientArgs, TIMEOUT};

/// The broker's HTTP endpoint.
#[derive(Args, Clone)]
pub struct HttpArgs {
    /// The broker's HTTP endpoint (its `--http` address).
    #[arg(long = "http", env = "TRIB_HTTP", default_value = "127.0.0.1:9644")]
    pub http: String,
}

impl HttpArgs {
    fn url(&self, path_and_query: &str) -> String {
        let base = self.http.trim_end_matches('/');
        let base = base.strip_prefix("http://").unwrap_or(base);
        format!("http://{base}{path_and_query}")
    }

    /// Calls the endpoint; a non-200 answer is an error carrying the broker's message.
    async fn call(&self, method: &str, path_and_query: &str) -> anyhow::Result<serde_json::Value> {
        let url = self.url(path_and_query);
        let (status, line, body) =
            trib_connectors::http_call(method, &url, Duration::from_secs(30))
                .await
                .with_context(|| format!("the broker's HTTP endpoint {} (--http)", self.http))?;
        let json: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("{url} answered {line} with a body that is not JSON"))?;
        if status != 200 {
            bail!(
                "{}",
                json.get("error").and_then(|e| e.as_str()).unwrap_or(&line)
            );
        }
        Ok(json)
    }
}

#[derive(Args)]
pub struct QueryArgs {
    topic: String,
    /// field=value on an indexed field (repeatable: all must hold). Uses the field index.
    #[arg(long = "where", value_name = "FIELD=VALUE")]
    conditions: Vec<String>,
    /// Records with timestamps at or after this time (epoch ms or RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Records with timestamps at or before this time (epoch ms or RFC 3339).
    #[arg(long)]
    to: Option<String>,
    /// Offsets A..B (B excluded) or A..=B (B included); per partition.
    #[arg(long, conflicts_with = "conditions")]
    offset: Option<String>,
    /// Only this partition (repeatable; default: all).
    #[arg(long, short = 'p')]
    partition: Vec<i32>,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
pub enum IndexCommand {
    /// A topic's indexed fields and how far each partition is indexed.
    Status {
        topic: Option<String>,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Delete a topic's field index files and build them again from the log.
    Rebuild {
        topic: String,
        #[command(flatten)]
        http: HttpArgs,
    },
}

pub async fn index(c: IndexCommand) -> anyhow::Result<()> {
    match c {
        IndexCommand::Status { topic, http } => {
            let q = topic.map_or(String::new(), |t| format!("?topic={}", enc(&t)));
            let s = http.call("GET", &format!("/index/status{q}")).await?;
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
        IndexCommand::Rebuild { topic, http } => {
            let s = http
                .call("POST", &format!("/index/rebuild?topic={}", enc(&topic)))
                .await?;
            println!(
                "removed {} index files of {topic}; the broker is rebuilding them (see `trib index status {topic}`)",
                s["removed_files"]
            );
        }
    }
    Ok(())
}

/// A --offset range as [start, end).
fn parse_range(s: &str) -> anyhow::Result<(i64, i64)> {
    let bad = || anyhow::anyhow!("--offset `{s}`: expected A..B or A..=B");
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        return Err(bad());
    };
    let a: i64 = a.trim().parse().map_err(|_| bad())?;
    let b: i64 = b.trim().parse().map_err(|_| bad())?;
    let end = if inclusive { b.saturating_add(1) } else { b };
    if a < 0 || end < a {
        bail!("--offset `{s}`: the range is empty or negative");
    }
    Ok((a, end))
}

pub async fn run(a: QueryArgs) -> anyhow::Result<()> {
    let from = a
        .from
        .as_deref()
        .map(|t| parse_time_ms(t, "--from"))
        .transpose()?;
    let to =
        a.to.as_deref()
            .map(|t| parse_time_ms(t, "--to"))
            .transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if t < f {
            bail!("--to is before --from");
        }
    }
    if !a.conditions.is_empty() {
        return by_index(&a, from, to).await;
    }
    if a.offset.is_none() && from.is_none() && to.is_none() {
        bail!("say what to find: --where FIELD=VALUE, --from/--to, or --offset A..B");
    }
    let range = a.offset.as_deref().map(parse_range).transpose()?;
    tokio::task::block_in_place(|| by_window(&a, from, to, range))
}

async fn by_index(a: &QueryArgs, from: Option<i64>, to: Option<i64>) -> anyhow::Result<()> {
    let mut q = format!("/index/query?topic={}&limit={}", enc(&a.topic), a.limit);
    for c in &a.conditions {
        if !c.contains('=') {
            bail!("--where `{c}`: expected FIELD=VALUE");
        }
        q.push_str(&format!("&where={}", enc(c)));
    }
    if let Some(f) = from {
        q.push_str(&format!("&from={f}"));
    }
    if let Some(t) = to {
        q.push_str(&format!("&to={t}"));
    }
    for p in &a.partition {
        q.push_str(&format!("&partition={p}"));
    }
    let r = a.http.call("GET", &q).await?;
    let hits = r["hits"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    for h in &hits {
        writeln!(out, "{h}")?;
    }
    eprintln!(
        "{} records in {:.1} ms (index candidates {}, unindexed bytes scanned {}){}",
        hits.len(),
        r["took_ms"].as_f64().unwrap_or(0.0),
        r["candidates"],
        r["scanned_bytes"],
        if r["complete"].as_bool() == Some(false) {
            "; more may match (raise --limit or narrow the window)"
        } else {
            ""
        }
    );
    Ok(())
}

/// Reads each partition's records between the offsets the time window or range gives.
fn by_window(
    a: &QueryArgs,
    from: Option<i64>,
    to: Option<i64>,
    range: Option<(i64, i64)>,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = a
        .client
        .config()?
        .set("group.id", "trib-query")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("cannot create the consumer")?;
    let parts = chosen_partitions(&consumer, &a.client.brokers, &a.topic, &a.partition)?;
    // Start and end offsets per partition: the range, narrowed by the time window's offsets.
    let by_time = |ms: i64| -> anyhow::Result<HashMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition_offset(&a.topic, *p, Offset::Offset(ms))?;
        }
        let found = consumer
            .offsets_for_times(tpl, TIMEOUT)
            .context("offset lookup by time failed")?;
        Ok(found
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    };
    let starts = from.map(by_time).transpose()?;
    let ends = to.map(|t| by_time(t.saturating_add(1))).transpose()?;
    let mut bounds: HashMap<i32, (i64, i64)> = HashMap::new();
    for &p in &parts {
        let (low, high) = consumer
            .fetch_watermarks(&a.topic, p, TIMEOUT)
            .with_context(|| format!("{} partition {p}: offsets", a.topic))?;
        let (mut start, mut end) = range.unwrap_or((low, high));
        start = start.max(low);
        end = end.min(high);
        if let Some(s) = &starts {
            start = start.max(s.get(&p).copied().unwrap_or(high));
        }
        if let Some(e) = &ends {
            end = end.min(e.get(&p).copied().unwrap_or(high));
        }
        if start < end {
            bounds.insert(p, (start, end));
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (p, (start, _)) in &bounds {
        tpl.add_partition_offset(&a.topic, *p, Offset::Offset(*start))?;
    }
    if bounds.is_empty() {
        eprintln!("0 records");
        return Ok(());
    }
    consumer.assign(&tpl)?;
    let (from, to) = (from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX));
    let mut open: Vec<i32> = bounds.keys().copied().collect();
    let mut printed = 0usize;
    let mut idle = Instant::now();
    let mut out = std::io::stdout().lock();
    while !open.is_empty() && printed < a.limit {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            if idle.elapsed() > Duration::from_secs(30) {
                bail!("no records for 30 s with partitions {open:?} unfinished");
            }
            continue;
        };
        let m = m.context("consume failed")?;
        idle = Instant::now();
        let p = m.partition();
        let Some(&(_, end)) = bounds.get(&p) else {
            continue;
        };
        if m.offset() + 1 >= end {
            open.retain(|x| *x != p);
        }
        if m.offset() >= end {
            continue;
        }
        let ts = m.timestamp().to_millis().unwrap_or(-1);
        if ts < from || ts > to {
            continue; // out of order: inside the offsets, outside the window
        }
        writeln!(out, "{}", record_json(&a.topic, &m))?;
        printed += 1;
    }
    drop(out);
    eprintln!(
        "{printed} records{}",
        if printed >= a.limit && !open.is_empty() {
            " (--limit reached)"
        } else {
            ""
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_ranges() {
        assert_eq!(parse_range("5..10").unwrap(), (5, 10));
        assert_eq!(parse_range("5..=10").unwrap(), (5, 11));
        assert!(parse_range("10..5").is_err());
        assert!(parse_range("x..5").is_err());
        assert!(parse_range("5").is_err());
        assert_eq!(enc("user_id=4 2/é"), "user_id%3D4%202%2F%C3%A9");
    }
}
