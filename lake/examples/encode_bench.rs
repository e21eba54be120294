//! The lake encoder alone, without a broker: each line of an NDJSON file becomes a Kafka event
//! (its value shares the file's bytes, as exported events share fetched batches), and the
//! events are encoded into Parquet files of `roll MiB` of values, on one thread, `rounds`
//! times. BENCHMARKS.md ("Lake") uses it to tell the encoder's cost from the reader's.
//!
//! Usage: `cargo run --release -p trib-lake --example encode_bench -- FILE [ROLL_MIB] [ROUNDS]`

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use trib_lake::parquet_file::{encode, Encoding};
use trib_pipelines::config::sinks::LakeMode;
use trib_pipelines::event::Event;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .context("usage: encode_bench FILE [ROLL_MIB] [ROUNDS]")?;
    let roll: usize = args.next().map_or(Ok(32), |s| s.parse())? << 20;
    let rounds: usize = args.next().map_or(Ok(3), |s| s.parse())?;
    let data = Bytes::from(std::fs::read(&path).with_context(|| format!("reading {path}"))?);
    let (source, topic): (Arc<str>, Arc<str>) = ("encode_bench".into(), "bench".into());
    let enc = Encoding {
        mode: LakeMode::Json,
        schema: Vec::new(),
    };
    for round in 1..=rounds {
        let started = Instant::now();
        let (mut rows, mut written, mut gathered) = (0usize, 0usize, 0usize);
        let mut events = Vec::new();
        let lines = data.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        let mut lines = lines.peekable();
        while let Some(line) = lines.next() {
            let offset = rows as i64;
            gathered += line.len();
            rows += 1;
            events.push(Event::from_record_bytes(
                &source,
                &topic,
                0,
                offset,
                1_714_557_600_000 + offset,
                None,
                Some(data.slice_ref(line)),
                Vec::new(),
            ));
            if gathered >= roll || lines.peek().is_none() {
                written += encode(&events, &enc)?.bytes.len();
                events.clear();
                gathered = 0;
            }
        }
        let s = started.elapsed().as_secs_f64();
        println!(
            "round {round}: {rows} records in {s:.3} s: {:.0} records/s, {:.1} MB of Parquet",
            rows as f64 / s,
            written as f64 / 1e6
        );
    }
    Ok(())
}
