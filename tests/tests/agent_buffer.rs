//! The agent's disk buffer end to end. The broker goes away mid-stream and the agent keeps
//! taking lines into its buffer (the file source's positions advance); librdkafka's message
//! timeout is cut to 1.5 s so the outage spans several timeouts and re-sends, as an outage of
//! minutes would with the default. The broker comes back and the backlog drains. Then the
//! broker goes away again and the agent is killed with kill -9 while the backlog exists only on
//! disk; once both are back, every line has reached the broker.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use trib_e2e::{read_until, TestBroker, TestRun};

fn config(dir: &Path, b: &TestBroker) -> std::path::PathBuf {
    let p = dir.join("agent.yaml");
    std::fs::write(
        &p,
        format!(
            "sources:
  logs:
    type: file
    include: ['{logs}/*.log']
    state_dir: {state}
    glob_interval_ms: 100
sinks:
  broker:
    type: kafka
    inputs: [logs]
    brokers: {brokers}
    topic: outage
    linger_ms: 10
    options:
      message.timeout.ms: '1500'
    buffer:
      type: disk
      path: {buffer}
      fsync_interval_ms: 100
",
            logs = dir.join("logs").display(),
            state = dir.join("state").display(),
            brokers = b.bootstrap(),
            buffer = dir.join("buffer").display(),
        ),
    )
    .unwrap();
    p
}

fn line(i: usize) -> String {
    format!("line-{i:06} {}", "y".repeat(100))
}

fn append(path: &Path, range: std::ops::Range<usize>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in range {
        writeln!(f, "{}", line(i)).unwrap();
    }
}

fn agent(cfg: &Path) -> TestRun {
    TestRun::command(
        &["agent".as_ref(), "--config".as_ref(), cfg.as_os_str()],
        &[],
    )
}

#[test]
fn broker_outage_and_agent_crash_lose_nothing_with_a_disk_buffer() {
    let mut b = TestBroker::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let log = dir.path().join("logs/app.log");
    let cfg = config(dir.path(), &b);
    let mut run = agent(&cfg);
    append(&log, 0..2_000);
    read_until(&b, "outage", Duration::from_secs(60), |v| v.len() >= 2_000);

    // Outage 1: the agent keeps running and drains its backlog when the broker is back.
    b.stop();
    append(&log, 2_000..12_000);
    wait_buffered(&run, 10_000);
    std::thread::sleep(Duration::from_secs(5));
    b.restart();
    let got = read_until(&b, "outage", Duration::from_secs(120), |v| {
        distinct(v) >= 12_000
    });
    assert_complete(&got, 12_000);

    // Outage 2: the agent crashes while the backlog exists only in its buffer.
    b.stop();
    let n = 22_000;
    append(&log, 12_000..n);
    wait_buffered(&run, 10_000);
    assert_eq!(run.metric("events_out", "logs"), n as f64);
    run.kill9();
    b.restart();
    let run = agent(&cfg);
    run.wait_log("resuming with undelivered records", Duration::from_secs(20));
    let got = read_until(&b, "outage", Duration::from_secs(120), |v| distinct(v) >= n);
    assert_complete(&got, n);
    println!(
        "{n} lines, {} records at the broker ({} sent twice)",
        got.len(),
        got.len() - n
    );
}

/// Waits until the buffer holds at least `n` events not yet delivered.
fn wait_buffered(run: &TestRun, n: usize) {
    trib_e2e::poll_until(
        Duration::from_secs(60),
        || run.metric("buffer_events", "broker"),
        |v| *v >= n as f64,
        |v| {
            format!(
                "the buffer holds {v} of {n} lines; log:\n{}",
                run.log_text()
            )
        },
    );
}

fn distinct(v: &[String]) -> usize {
    v.iter().collect::<HashSet<_>>().len()
}

/// Every line 0..n arrived, and nothing else.
fn assert_complete(got: &[String], n: usize) {
    let set: HashSet<&String> = got.iter().collect();
    let missing: Vec<usize> = (0..n)
        .filter(|i| !set.contains(&line(*i)))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "lines lost: {missing:?}");
    assert_eq!(set.len(), n, "nothing but the lines written");
}
