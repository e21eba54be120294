//! The demo source: generates web-server logs (and syslog, JSON, logfmt) at a fixed rate, for
//! trying pipelines without any input.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use trib_pipelines::config::sources::{DemoFormat, DemoSource};
use trib_pipelines::event::Event;
use trib_pipelines::runtime::{Source, SourceContext};

pub struct Demo {
    cfg: DemoSource,
}

impl Demo {
    pub fn new(c: &DemoSource) -> anyhow::Result<Self> {
        anyhow::ensure!(
            c.rate >= 0.0 && c.rate.is_finite(),
            "rate: must be 0 or more events per second, not {}",
            c.rate
        );
        anyhow::ensure!(c.batch > 0, "batch: must be at least 1");
        Ok(Self { cfg: c.clone() })
    }
}

const PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/api/orders",
    "/api/users/42",
    "/login",
    "/static/app.js",
    "/search?q=kafka",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const STATUSES: &[u16] = &[
    200, 200, 200, 200, 200, 201, 204, 301, 304, 400, 404, 404, 500, 503,
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64)",
    "curl/8.5.0",
    "kafka-consumer/1.0",
    "Googlebot/2.1",
];
const USERS: &[&str] = &["-", "alice", "bob", "carol"];

/// One generated line.
pub fn line(rng: &mut SmallRng, format: DemoFormat, n: u64) -> String {
    let ip = format!(
        "10.{}.{}.{}",
        rng.random_range(0..4),
        rng.random_range(0..255),
        rng.random_range(1..255)
    );
    let method = METHODS[rng.random_range(0..METHODS.len())];
    let path = PATHS[rng.random_range(0..PATHS.len())];
    let status = STATUSES[rng.random_range(0..STATUSES.len())];
    let bytes = rng.random_range(0..50_000u32);
    let user = USERS[rng.random_range(0..USERS.len())];
    let now = chrono_now();
    match format {
        DemoFormat::ApacheCombined => format!(
            "{ip} - {user} [{now}] \"{method} {path} HTTP/1.1\" {status} {bytes} \"-\" \"{}\"",
            AGENTS[rng.random_range(0..AGENTS.len())]
        ),
        DemoFormat::ApacheCommon => {
            format!("{ip} - {user} [{now}] \"{method} {path} HTTP/1.1\" {status} {bytes}")
        }
        DemoFormat::Syslog => format!(
            "<{}>1 {} web-{} nginx {} - - request {n} {method} {path} {status}",
            8 * 16 + if status >= 500 { 3 } else { 6 },
            rfc3339_now(),
            rng.random_range(1..4),
            rng.random_range(100..999)
        ),
        DemoFormat::Json => serde_json::json!({
            "id": n, "client": ip, "user": user, "method": method, "path": path,
            "status": status, "bytes": bytes, "timestamp": rfc3339_now(),
        })
        .to_string(),
        DemoFormat::Logfmt => format!(
            "ts={} level={} msg=\"{method} {path}\" status={status} bytes={bytes} client={ip}",
            rfc3339_now(),
            if status >= 500 { "error" } else { "info" }
        ),
    }
}

fn chrono_now() -> String {
    // The access-log time layout: 10/Oct/2000:13:55:36 +0000.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (y, mo, d, h, mi, s) = trib_pipelines::event::civil_utc(t);
    const M: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} +0000",
        M[(mo - 1) as usize]
    )
}

fn rfc3339_now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (y, mo, d, h, mi, s) = trib_pipelines::event::civil_utc(t);
    format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

impl Source for Demo {
    fn run(self: Box<Self>, mut cx: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let mut rng = SmallRng::seed_from_u64(0x7472_6962);
            let start = Instant::now();
            let mut sent = 0u64;
            let limit = self.cfg.count.unwrap_or(u64::MAX);
            while sent < limit && !cx.is_stopping() {
                let due = if self.cfg.rate > 0.0 {
                    ((start.elapsed().as_secs_f64() * self.cfg.rate) as u64 + 1).min(limit)
                } else {
                    limit
                };
                let n = due.saturating_sub(sent).min(self.cfg.batch as u64);
                if n == 0 {
                    let wait = Duration::from_secs_f64((1.0 / self.cfg.rate).min(0.1));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cx.stopped() => break,
                    }
                    continue;
                }
                let mut batch = Vec::with_capacity(n as usize);
                for i in 0..n {
                    let mut e = Event::raw(line(&mut rng, self.cfg.format, sent + i));
                    e.meta.source = cx.name.clone();
                    batch.push(e);
                }
                cx.metrics.events_in.inc_by(n);
                sent += n;
                if !cx.out.send(batch).await {
                    break;
                }
            }
            Ok(())
        })
    }
}
