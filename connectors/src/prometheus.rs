//! The Prometheus scrape source: GETs text-format endpoints at an interval (`crate::http_get`)
//! and turns each sample into a structured event.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use trib_pipelines::config::sources::PrometheusScrapeSource;
use trib_pipelines::event::Event;
use trib_pipelines::runtime::{Source, SourceContext};

use crate::http_get::{http_get, split_url};
use crate::metric_event::metric_event;

pub struct PrometheusScrape {
    cfg: PrometheusScrapeSource,
    /// (url, host:port for the `instance` tag)
    targets: Vec<(String, String)>,
}

impl PrometheusScrape {
    pub fn new(c: &PrometheusScrapeSource) -> anyhow::Result<Self> {
        anyhow::ensure!(!c.urls.is_empty(), "urls: name at least one endpoint");
        anyhow::ensure!(c.interval_ms >= 100, "interval_ms: must be at least 100");
        let targets = c
            .urls
            .iter()
            .map(|u| {
                let (host, _) = split_url(u).map_err(|e| anyhow::anyhow!("urls: {e}"))?;
                Ok((u.clone(), host))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            cfg: c.clone(),
            targets,
        })
    }
}

/// One parsed sample.
#[derive(Debug, PartialEq)]
pub struct Sample {
    pub metric: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub kind: String,
}

/// Parses the Prometheus text exposition format. Lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut types: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split_whitespace();
            if let (Some(n), Some(t)) = (p.next(), p.next()) {
                types.push((n.to_string(), t.to_string()));
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(i) => {
                let Some((labels, rest)) = parse_labels(&line[i + 1..]) else {
                    continue;
                };
                (&line[..i], labels, rest)
            }
            None => {
                let Some((n, rest)) = line.split_once(char::is_whitespace) else {
                    continue;
                };
                (n, Vec::new(), rest)
            }
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        // A histogram's or summary's series belong to the family's TYPE line.
        let kind = types
            .iter()
            .rev()
            .find(|(n, _)| {
                name == n
                    || ["_bucket", "_sum", "_count", "_total", "_created"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(n.as_str()))
            })
            .map_or("untyped", |(_, t)| t.as_str());
        out.push(Sample {
            metric: name.to_string(),
            labels,
            value,
            kind: kind.to_string(),
        });
    }
    out
}

/// `a="x",b="y\"z"} rest` → labels and what follows the brace.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Some((labels, r));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let mut chars = rest[eq + 1..]
            .trim_start()
            .strip_prefix('"')?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        let after = &rest[eq + 1..].trim_start()[1 + end + 1..];
        labels.push((key, value));
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
}

impl Source for PrometheusScrape {
    fn run(self: Box<Self>, mut cx: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.interval_ms));
            let timeout = Duration::from_millis(self.cfg.timeout_ms);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cx.stopped() => return Ok(()),
                }
                for (url, host) in &self.targets {
                    let body = match http_get(url, timeout).await {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::warn!(source = %cx.name, %url, error = %e, "scrape failed");
                            continue;
                        }
                    };
                    cx.metrics.bytes_in.inc_by(body.len() as u64);
                    let batch: Vec<Event> = parse(&body)
                        .into_iter()
                        .filter_map(|s| {
                            let mut tags: Map<String, Value> = s
                                .labels
                                .into_iter()
                                .map(|(k, v)| (k, Value::String(v)))
                                .collect();
                            tags.insert("instance".into(), Value::String(host.clone()));
                            metric_event(&cx.name, s.metric, s.value, s.kind, tags, host)
                        })
                        .collect();
                    cx.metrics.events_in.inc_by(batch.len() as u64);
                    if !cx.out.send(batch).await {
                        return Ok(());
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format() {
        let t = "# HELP x help\n# TYPE http_requests counter\nhttp_requests_total{method=\"GET\",path=\"/a\\\"b\"} 42 1700000000\n# TYPE lat histogram\nlat_bucket{le=\"0.5\"} 3\nlat_sum 1.5\nup 1\nbad line\nnan_metric NaN\n";
        let s = parse(t);
        assert_eq!(
            s[0],
            Sample {
                metric: "http_requests_total".into(),
                labels: vec![
                    ("method".into(), "GET".into()),
                    ("path".into(), "/a\"b".into())
                ],
                value: 42.0,
                kind: "counter".into()
            }
        );
        assert_eq!(
            (s[1].kind.as_str(), s[1].labels[0].1.as_str()),
            ("histogram", "0.5")
        );
        assert_eq!(
            (s[2].metric.as_str(), s[2].kind.as_str()),
            ("lat_sum", "histogram")
        );
        assert_eq!(
            (s[3].metric.as_str(), s[3].kind.as_str(), s[3].value),
            ("up", "untyped", 1.0)
        );
        assert_eq!(
            s.len(),
            5,
            "the bad line is skipped; NaN parses (and is dropped as an event)"
        );
    }
}
