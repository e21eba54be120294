//! The Kafka sink's native client end to end: a file tailed into a topic through a broker
//! restart (the client reconnects, refreshes its metadata and sends its batches again) loses
//! nothing, and keyless lines spread over the partitions a batch at a time.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use trib_e2e::{read_until, TestBroker, TestRun};

#[test]
fn native_client_delivers_every_line_through_a_broker_restart() {
    let mut b = TestBroker::start(&["--num-partitions", "3"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let log = dir.path().join("logs/app.log");
    let cfg = dir.path().join("agent.yaml");
    std::fs::write(
        &cfg,
        format!(
            "sources:\n  logs:\n    type: file\n    include: ['{}/*.log']\n    state_dir: {}\n    glob_interval_ms: 100\n\
             sinks:\n  broker:\n    type: kafka\n    client: native\n    inputs: [logs]\n    brokers: {}\n    topic: native\n    compression: lz4\n    linger_ms: 10\n    batch_max_bytes: 65536\n",
            dir.path().join("logs").display(),
            dir.path().join("state").display(),
            b.bootstrap()
        ),
    )
    .unwrap();
    let line = |i: usize| format!("native-{i:06} {}", "z".repeat(80));
    let append = |range: std::ops::Range<usize>| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        for i in range {
            writeln!(f, "{}", line(i)).unwrap();
        }
    };
    let run = TestRun::command(
        &["agent".as_ref(), "--config".as_ref(), cfg.as_os_str()],
        &[],
    );
    append(0..10_000);
    read_until(&b, "native", Duration::from_secs(60), |v| v.len() >= 10_000);
    b.stop();
    append(10_000..20_000);
    std::thread::sleep(Duration::from_secs(2));
    b.restart();
    let got = read_until(&b, "native", Duration::from_secs(120), |v| {
        v.iter().collect::<HashSet<_>>().len() >= 20_000
    });
    let set: HashSet<&String> = got.iter().collect();
    let missing: Vec<usize> = (0..20_000)
        .filter(|i| !set.contains(&line(*i)))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "lines lost: {missing:?}; log:\n{}",
        run.log_text()
    );
    assert_eq!(set.len(), 20_000);
    println!("20000 lines, {} records at the broker", got.len());
    // Keyless lines stick to a partition per batch, then move: all partitions get some.
    let per_partition = trib_e2e::partition_counts(&b, "native", 3);
    assert!(
        per_partition.iter().all(|n| *n > 0),
        "every partition gets batches: {per_partition:?}"
    );
}
