//! `trib consume TOPIC`: prints records from the beginning, the end, an offset or a point in
//! time, as text or JSON lines, without joining a consumer group.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{ClientArgs, TIMEOUT};

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// The value only (with `key<TAB>value` when --print-key).
    Text,
    /// One JSON object per record with partition, offset, timestamp, key, value and headers.
    Json,
}

#[derive(Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Where to start: beginning, end, offset:N, or time:T with T in epoch milliseconds or RFC 3339.
    #[arg(long, default_value = "beginning")]
    from: String,
    /// Only this partition (default: all).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Stop once nothing arrived for this many milliseconds (default: follow forever).
    #[arg(long)]
    idle_exit_ms: Option<u64>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// In text format, print `key<TAB>value`.
    #[arg(long)]
    print_key: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Where consumption starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Beginning,
    End,
    Offset(i64),
    /// The first record at or after this time (epoch milliseconds).
    Time(i64),
}

fn parse_from(s: &str) -> anyhow::Result<Start> {
    Ok(match s {
        "beginning" => Start::Beginning,
        "end" => Start::End,
        _ if s.starts_with("offset:") => Start::Offset(
            s[7..]
                .parse()
                .with_context(|| format!("--from {s}: bad offset"))?,
        ),
        _ if s.starts_with("time:") => {
            Start::Time(crate::client::parse_time_ms(&s[5..], "--from")?)
        }
        _ => bail!("--from `{s}`: use beginning, end, offset:N or time:T"),
    })
}

pub async fn run(a: ConsumeArgs) -> anyhow::Result<()> {
    let consumer: BaseConsumer = a
        .client
        .config()?
        .set("group.id", "trib-consume")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("cannot create consumer")?;
    let parts = crate::client::chosen_partitions(
        &consumer,
        &a.client.brokers,
        &a.topic,
        a.partition.as_slice(),
    )?;
    let from = parse_from(&a.from)?;
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        let o = match from {
            Start::Beginning => Offset::Beginning,
            Start::End => Offset::End,
            Start::Offset(o) | Start::Time(o) => Offset::Offset(o),
        };
        tpl.add_partition_offset(&a.topic, *p, o)?;
    }
    if let Start::Time(_) = from {
        tpl = consumer
            .offsets_for_times(tpl, TIMEOUT)
            .context("offset lookup by time failed")?;
        // A partition with nothing at or after that time starts at its end.
        for e in tpl.clone().elements() {
            if !matches!(e.offset(), Offset::Offset(o) if o >= 0) {
                tpl.set_partition_offset(e.topic(), e.partition(), Offset::End)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    let mut n = 0u64;
    let mut last = Instant::now();
    let stdout = std::io::stdout();
    loop {
        if a.count.is_some_and(|c| n >= c) {
            break;
        }
        if a.idle_exit_ms
            .is_some_and(|ms| last.elapsed() >= Duration::from_millis(ms))
        {
            break;
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.context("consume failed")?;
        last = Instant::now();
        n += 1;
        let value = m.payload().map(String::from_utf8_lossy);
        let key = m.key().map(String::from_utf8_lossy);
        use std::io::Write;
        let mut out = stdout.lock();
        match a.format {
            Format::Text => {
                if a.print_key {
                    writeln!(
                        out,
                        "{}\t{}",
                        key.unwrap_or_default(),
                        value.unwrap_or_default()
                    )?;
                } else {
                    writeln!(out, "{}", value.unwrap_or_default())?;
                }
            }
            Format::Json => {
                let j = crate::client::record_json(&a.topic, &m);
                writeln!(out, "{j}")?;
            }
        }
    }
    Ok(())
}
