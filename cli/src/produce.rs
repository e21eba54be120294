//! `trib produce TOPIC`: one record per input line, with optional key (fixed or split from the
//! line), headers and partition; waits until every record is acknowledged.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::client::{parse_kv, ClientArgs, TIMEOUT};

#[derive(Args)]
pub struct ProduceArgs {
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Key for every record.
    #[arg(long, short = 'k', conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Header key=value on every record (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Partition to write to (default: by key, or spread).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(a: ProduceArgs) -> anyhow::Result<()> {
    let producer: FutureProducer = a
        .client
        .config()?
        .set("acks", &a.acks)
        .set("compression.type", &a.compression)
        .set("linger.ms", "5")
        .create()
        .context("cannot create producer")?;
    let headers = a
        .headers
        .iter()
        .map(|h| parse_kv(h, "--header"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let input: Box<dyn BufRead> = match &a.file {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut pending = Vec::new();
    let mut count = 0u64;
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", n + 1))?;
        let (key, value) = match (&a.key, &a.key_separator) {
            (Some(k), _) => (Some(k.clone()), line),
            (None, Some(sep)) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, line),
            },
            (None, None) => (None, line),
        };
        let mut hs = OwnedHeaders::new();
        for (k, v) in &headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut rec = FutureRecord::to(&a.topic)
            .payload(value.as_bytes())
            .headers(hs);
        if let Some(k) = &key {
            rec = rec.key(k.as_bytes());
        }
        if let Some(p) = a.partition {
            rec = rec.partition(p);
        }
        let fut = producer
            .send_result(rec)
            .map_err(|(e, _)| anyhow::anyhow!("cannot queue line {}: {e}", n + 1))?;
        pending.push((n + 1, fut));
        count += 1;
        if pending.len() >= 10_000 {
            drain(&mut pending).await?;
        }
    }
    drain(&mut pending).await?;
    producer.flush(TIMEOUT)?;
    eprintln!("produced {count} record(s) to {}", a.topic);
    Ok(())
}

async fn drain(
    pending: &mut Vec<(usize, rdkafka::producer::DeliveryFuture)>,
) -> anyhow::Result<()> {
    for (line, fut) in pending.drain(..) {
        match fut.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => anyhow::bail!("line {line} was not acknowledged: {e}"),
            Err(_) => anyhow::bail!("line {line}: delivery was cancelled"),
        }
    }
    Ok(())
}
