//! `trib bench producers`: many small applications at once, each on its own connection
//! sending one record per Produce request at a low rate and waiting for the answer, as
//! applications pointed at the agent's Kafka endpoint do. Reports requests answered, errors and
//! answer latency; the agent's batching gain is read off the broker's request count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Args;
use hdrhistogram::Histogram;
use kafka_protocol::messages::{ApiKey, ProduceResponse, ResponseHeader};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::records::{Record, TimestampType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Args)]
pub struct ProducersBench {
    /// host:port of the Kafka endpoint (or broker) the applications talk to.
    #[arg(long, short = 'b', default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, short = 't', default_value = "bench-producers")]
    topic: String,
    /// Applications (connections).
    #[arg(long, default_value_t = 1000)]
    producers: u64,
    /// Records per second per application.
    #[arg(long, default_value_t = 10)]
    rate: u64,
    /// How long to send.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Bytes per record value.
    #[arg(long, default_value_t = 200)]
    record_size: usize,
}

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    errors: AtomicU64,
}

/// Produce v9 (what current clients send), acks=1.
const VERSION: i16 = 9;

pub async fn run(a: ProducersBench) -> anyhow::Result<()> {
    let totals = Arc::new(Totals::default());
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..a.producers {
        let stream = TcpStream::connect(&a.bootstrap)
            .await
            .map_err(|e| anyhow::anyhow!("connect {}: {e}", a.bootstrap))?;
        let (totals, hist) = (totals.clone(), hist.clone());
        let (topic, size, rate, until) =
            (a.topic.clone(), a.record_size, a.rate, start + a.duration);
        tasks.spawn(async move { app(n, stream, &topic, size, rate, until, &totals, &hist).await });
    }
    let bar = indicatif::ProgressBar::new(a.duration.as_secs());
    while start.elapsed() < a.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.set_position(start.elapsed().as_secs());
        bar.set_message(format!("{} requests", totals.sent.load(Ordering::Relaxed)));
    }
    bar.finish_and_clear();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "an application stopped");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let sent = totals.sent.load(Ordering::Relaxed);
    let h = hist.lock().map_err(|_| anyhow::anyhow!("histogram lock"))?;
    println!(
        "{} applications x {} records/s for {:.0}s: {sent} produce requests answered ({:.0}/s), {} errors; answer latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        a.producers,
        a.rate,
        secs,
        sent as f64 / secs,
        totals.errors.load(Ordering::Relaxed),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
    );
    Ok(())
}

/// Requests one application keeps in flight, as Kafka clients do by default.
const IN_FLIGHT: usize = 5;

#[allow(clippy::too_many_arguments)]
async fn app(
    n: u64,
    s: TcpStream,
    topic: &str,
    size: usize,
    rate: u64,
    until: Instant,
    totals: &Totals,
    hist: &Mutex<Histogram<u64>>,
) -> anyhow::Result<()> {
    s.set_nodelay(true)?;
    let (mut rd, mut wr) = s.into_split();
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    // Spread the applications over the period so they do not all send at once.
    let mut next = tokio::time::Instant::now() + period.mul_f64((n % 1000) as f64 / 1000.0);
    let value = Bytes::from(vec![b'x'; size]);
    let mut out = BytesMut::new();
    // Send times of the requests in flight, in order (answers come in request order).
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::channel::<Instant>(IN_FLIGHT);
    let reader = async move {
        while let Some(sent) = sent_rx.recv().await {
            let mut len = [0u8; 4];
            rd.read_exact(&mut len).await?;
            let size = u32::from_be_bytes(len) as usize;
            anyhow::ensure!(size < 1 << 20, "response of {size} bytes");
            let mut body = vec![0u8; size];
            rd.read_exact(&mut body).await?;
            let mut body = Bytes::from(body);
            ResponseHeader::decode(&mut body, ApiKey::Produce.response_header_version(VERSION))?;
            let r = ProduceResponse::decode(&mut body, VERSION)?;
            let failed = r
                .responses
                .iter()
                .flat_map(|t| &t.partition_responses)
                .any(|p| p.error_code != 0);
            if failed {
                totals.errors.fetch_add(1, Ordering::Relaxed);
            } else {
                totals.sent.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut h) = hist.lock() {
                    let _ = h.record(sent.elapsed().as_micros().max(1) as u64);
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    let writer = async move {
        let mut i = 0i32;
        while Instant::now() < until {
            tokio::time::sleep_until(next).await;
            next += period;
            let record = Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: 0,
                sequence: -1,
                timestamp: trib_pipelines::event::now_ms(),
                key: Some(Bytes::from(format!("app-{n}"))),
                value: Some(value.clone()),
                headers: Default::default(),
            };
            let req = trib_broker::wire::single_batch_produce(topic, 0, 1, &[record])
                .map_err(anyhow::Error::msg)?;
            out.clear();
            trib_broker::wire::encode_request(
                &mut out,
                ApiKey::Produce,
                VERSION,
                i,
                "bench-app",
                &req,
            )
            .map_err(anyhow::Error::msg)?;
            i = i.wrapping_add(1);
            // Waits while IN_FLIGHT answers are owed.
            if sent_tx.send(Instant::now()).await.is_err() {
                break;
            }
            wr.write_all(&out).await?;
        }
        Ok::<(), anyhow::Error>(())
    };
    let (r, w) = tokio::join!(reader, writer);
    w.and(r)
}
