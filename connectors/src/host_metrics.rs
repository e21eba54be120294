//! The host metrics source: reads /proc (CPU, memory, load, disks, network) and statvfs (file
//! systems) at an interval and emits one structured event per sample.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use trib_pipelines::config::sources::{Collector, HostMetricsSource};
use trib_pipelines::event::Event;
use trib_pipelines::runtime::{Source, SourceContext};

use crate::metric_event::metric_event;

pub struct HostMetrics {
    cfg: HostMetricsSource,
    host: String,
}

impl HostMetrics {
    pub fn new(c: &HostMetricsSource) -> anyhow::Result<Self> {
        anyhow::ensure!(c.interval_ms >= 100, "interval_ms: must be at least 100");
        anyhow::ensure!(!c.collectors.is_empty(), "collectors: name at least one");
        let host = std::fs::read_to_string(Path::new(&c.proc_root).join("sys/kernel/hostname"))
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Ok(Self {
            cfg: c.clone(),
            host,
        })
    }
}

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub metric: &'static str,
    pub value: f64,
    pub counter: bool,
    pub tags: Vec<(&'static str, String)>,
}

fn sample(
    metric: &'static str,
    value: f64,
    counter: bool,
    tags: Vec<(&'static str, String)>,
) -> Sample {
    Sample {
        metric,
        value,
        counter,
        tags,
    }
}

/// `cpu_seconds_total{cpu, mode}` from /proc/stat (USER_HZ is 100 on Linux).
pub fn parse_cpu(stat: &str) -> Vec<Sample> {
    const MODES: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let mut out = Vec::new();
    for line in stat.lines() {
        let mut parts = line.split_whitespace();
        let Some(name) = parts.next() else { continue };
        let Some(cpu) = name.strip_prefix("cpu") else {
            continue;
        };
        let cpu = if cpu.is_empty() { "all" } else { cpu };
        for (mode, v) in MODES.iter().zip(parts) {
            if let Ok(ticks) = v.parse::<f64>() {
                out.push(sample(
                    "cpu_seconds_total",
                    ticks / 100.0,
                    true,
                    vec![("cpu", cpu.to_string()), ("mode", mode.to_string())],
                ));
            }
        }
    }
    out
}

/// `memory_*_bytes` from /proc/meminfo.
pub fn parse_memory(meminfo: &str) -> Vec<Sample> {
    let wanted = [
        ("MemTotal", "memory_total_bytes"),
        ("MemFree", "memory_free_bytes"),
        ("MemAvailable", "memory_available_bytes"),
        ("Buffers", "memory_buffers_bytes"),
        ("Cached", "memory_cached_bytes"),
        ("SwapTotal", "memory_swap_total_bytes"),
        ("SwapFree", "memory_swap_free_bytes"),
    ];
    let mut out = Vec::new();
    for line in meminfo.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if let Some((_, metric)) = wanted.iter().find(|(name, _)| *name == k) {
            if let Some(kb) = v
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok())
            {
                out.push(sample(metric, kb * 1024.0, false, Vec::new()));
            }
        }
    }
    out
}

/// `load1`, `load5`, `load15` from /proc/loadavg.
pub fn parse_load(loadavg: &str) -> Vec<Sample> {
    loadavg
        .split_whitespace()
        .zip(["load1", "load5", "load15"])
        .filter_map(|(v, m)| v.parse().ok().map(|v| sample(m, v, false, Vec::new())))
        .collect()
}

/// Disk counters from /proc/diskstats (loop and ram devices left out).
pub fn parse_disks(diskstats: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in diskstats.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[2].starts_with("loop") || f[2].starts_with("ram") {
            continue;
        }
        let n = |i: usize| f[i].parse::<f64>().unwrap_or(0.0);
        let dev = vec![("device", f[2].to_string())];
        out.push(sample("disk_reads_total", n(3), true, dev.clone()));
        out.push(sample(
            "disk_read_bytes_total",
            n(5) * 512.0,
            true,
            dev.clone(),
        ));
        out.push(sample("disk_writes_total", n(7), true, dev.clone()));
        out.push(sample("disk_written_bytes_total", n(9) * 512.0, true, dev));
    }
    out
}

/// Interface counters from /proc/net/dev.
pub fn parse_network(netdev: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in netdev.lines().skip(2) {
        let Some((iface, rest)) = line.split_once(':') else {
            continue;
        };
        let f: Vec<f64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() < 12 {
            continue;
        }
        let dev = vec![("device", iface.trim().to_string())];
        for (metric, i) in [
            ("network_receive_bytes_total", 0),
            ("network_receive_packets_total", 1),
            ("network_receive_errors_total", 2),
            ("network_receive_drops_total", 3),
            ("network_transmit_bytes_total", 8),
            ("network_transmit_packets_total", 9),
            ("network_transmit_errors_total", 10),
            ("network_transmit_drops_total", 11),
        ] {
            out.push(sample(metric, f[i], true, dev.clone()));
        }
    }
    out
}

/// Sizes of real file systems from /proc/mounts and statvfs.
fn filesystems(mounts: &str) -> Vec<Sample> {
    const VIRTUAL: [&str; 14] = [
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "securityfs",
        "pstore",
        "debugfs",
        "tracefs",
        "mqueue",
        "hugetlbfs",
        "fusectl",
        "configfs",
    ];
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3
            || VIRTUAL.contains(&f[2])
            || f[2] == "overlay" && f[1] != "/"
            || seen.contains(&f[1])
        {
            continue;
        }
        seen.push(f[1]);
        let Ok(st) = rustix::fs::statvfs(f[1]) else {
            continue;
        };
        let bs = st.f_frsize as f64;
        let tags = vec![
            ("mountpoint", f[1].to_string()),
            ("fstype", f[2].to_string()),
        ];
        out.push(sample(
            "filesystem_total_bytes",
            st.f_blocks as f64 * bs,
            false,
            tags.clone(),
        ));
        out.push(sample(
            "filesystem_free_bytes",
            st.f_bfree as f64 * bs,
            false,
            tags.clone(),
        ));
        out.push(sample(
            "filesystem_available_bytes",
            st.f_bavail as f64 * bs,
            false,
            tags,
        ));
    }
    out
}

/// One collection of the configured groups.
pub fn collect(proc_root: &Path, collectors: &[Collector]) -> Vec<Sample> {
    let read = |p: &str| std::fs::read_to_string(proc_root.join(p)).unwrap_or_default();
    let mut out = Vec::new();
    for c in collectors {
        out.extend(match c {
            Collector::Cpu => parse_cpu(&read("stat")),
            Collector::Memory => parse_memory(&read("meminfo")),
            Collector::Load => parse_load(&read("loadavg")),
            Collector::Disk => parse_disks(&read("diskstats")),
            Collector::Filesystem => filesystems(&read("mounts")),
            Collector::Network => parse_network(&read("net/dev")),
        });
    }
    out
}

fn to_event(s: Sample, host: &str, source: &std::sync::Arc<str>) -> Option<Event> {
    let tags: Map<String, Value> = s
        .tags
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect();
    let kind = if s.counter { "counter" } else { "gauge" };
    metric_event(
        source,
        s.metric.to_string(),
        s.value,
        kind.to_string(),
        tags,
        host,
    )
}

impl Source for HostMetrics {
    fn run(self: Box<Self>, mut cx: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let root = PathBuf::from(&self.cfg.proc_root);
            let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.interval_ms));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cx.stopped() => return Ok(()),
                }
                let (root, collectors) = (root.clone(), self.cfg.collectors.clone());
                let samples =
                    tokio::task::spawn_blocking(move || collect(&root, &collectors)).await?;
                let batch: Vec<Event> = samples
                    .into_iter()
                    .filter_map(|s| to_event(s, &self.host, &cx.name))
                    .collect();
                cx.metrics.events_in.inc_by(batch.len() as u64);
                if !cx.out.send(batch).await {
                    return Ok(());
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        let cpu =
            parse_cpu("cpu  100 0 50 1000 0 0 0 0 0 0\ncpu0 100 0 50 1000 0 0 0 0 0 0\nintr 5\n");
        assert_eq!(cpu.len(), 16);
        assert_eq!(
            cpu[0],
            sample(
                "cpu_seconds_total",
                1.0,
                true,
                vec![("cpu", "all".into()), ("mode", "user".into())]
            )
        );
        let mem = parse_memory(
            "MemTotal:       16384 kB\nMemFree:         1024 kB\nHugePages_Total: 0\n",
        );
        assert_eq!(
            mem,
            vec![
                sample("memory_total_bytes", 16384.0 * 1024.0, false, vec![]),
                sample("memory_free_bytes", 1024.0 * 1024.0, false, vec![]),
            ]
        );
        assert_eq!(parse_load("0.50 0.25 0.10 1/100 42\n").len(), 3);
        let disks = parse_disks(
            "   8       0 sda 10 0 80 5 20 0 160 7 0 0 0 0\n   7 0 loop0 1 0 2 0 0 0 0 0 0 0 0\n",
        );
        assert_eq!(disks.len(), 4);
        assert_eq!(disks[1].value, 80.0 * 512.0);
        let net = parse_network(
            "Inter-|   Receive\n face |bytes\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n",
        );
        assert_eq!(
            net[0],
            sample(
                "network_receive_bytes_total",
                1000.0,
                true,
                vec![("device", "eth0".into())]
            )
        );
        assert_eq!(net[4].value, 2000.0);
    }

    #[test]
    fn collects_from_this_machine() {
        let all = [
            Collector::Cpu,
            Collector::Memory,
            Collector::Load,
            Collector::Filesystem,
            Collector::Network,
        ];
        let s = collect(Path::new("/proc"), &all);
        for m in [
            "cpu_seconds_total",
            "memory_total_bytes",
            "load1",
            "filesystem_total_bytes",
            "network_receive_bytes_total",
        ] {
            assert!(s.iter().any(|x| x.metric == m), "{m} missing");
        }
        assert!(s
            .iter()
            .any(|x| x.metric == "memory_total_bytes" && x.value > 0.0));
    }
}
