//! `trib bench txn`: transactions per second. Each of `--producers` threads owns a
//! transactional id and runs begin → `--records` records → commit in a loop; the figure is
//! committed transactions (and records) per second with the commit latency distribution.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::client::{ClientArgs, TIMEOUT};

#[derive(Args)]
pub struct TxnBench {
    #[arg(long, short = 't', default_value = "bench-txn")]
    topic: String,
    /// Transactions to commit in all.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    transactions: u64,
    /// Records per transaction.
    #[arg(long, default_value_t = 100)]
    records: u64,
    /// Bytes per record value.
    #[arg(long, short = 's', default_value_t = 100)]
    record_size: usize,
    /// Concurrent transactional producers (each its own transactional id and partition).
    #[arg(long, default_value_t = 4)]
    producers: u64,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(a: TxnBench) -> anyhow::Result<()> {
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let per = a.transactions.div_ceil(a.producers.max(1));
    let pb = crate::bench::bar(per * a.producers.max(1) * a.records);
    let start = Instant::now();
    let mut threads = Vec::new();
    for i in 0..a.producers.max(1) {
        let config = a.client.config()?;
        let (topic, records, size, hist, pb) = (
            a.topic.clone(),
            a.records,
            a.record_size,
            hist.clone(),
            pb.clone(),
        );
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let p: BaseProducer = config
                .clone()
                .set("transactional.id", format!("trib-bench-txn-{i}"))
                .set("linger.ms", "1")
                .create()
                .context("cannot create a transactional producer")?;
            p.init_transactions(TIMEOUT)?;
            let payload = vec![b'x'; size];
            for _ in 0..per {
                p.begin_transaction()?;
                for _ in 0..records {
                    let rec = BaseRecord::<(), [u8]>::to(&topic)
                        .payload(&payload[..])
                        .partition(i as i32);
                    p.send(rec).map_err(|(e, _)| e)?;
                    p.poll(std::time::Duration::ZERO);
                }
                let t = Instant::now();
                // Wait for the deliveries first, in 100 µs naps: the rdkafka crate's flush inside
                // commit_transaction polls in 100 ms steps, and its poll with a short timeout
                // spins, either of which would set the commit rate.
                let deadline = Instant::now() + TIMEOUT;
                while p.in_flight_count() > 0 && Instant::now() < deadline {
                    p.poll(std::time::Duration::ZERO);
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
                p.commit_transaction(TIMEOUT)?;
                if let Ok(mut h) = hist.lock() {
                    let _ = h.record((t.elapsed().as_micros() as u64).max(1));
                }
                pb.inc(records);
            }
            Ok(())
        }));
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
    }
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let done = per * a.producers.max(1);
    let h = hist.lock().map_err(|_| anyhow::anyhow!("histogram lock"))?;
    println!(
        "{done} transactions of {} records in {secs:.2} s: {:.0} commits/s, {:.0} records/s; commit (flush + EndTxn) latency p50 {:.2} ms, p99 {:.2} ms",
        a.records,
        done as f64 / secs,
        (done * a.records) as f64 / secs,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    );
    Ok(())
}
