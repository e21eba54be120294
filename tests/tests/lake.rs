//! The lake sink end to end: a topic exported to Parquet through `trib run`, killed with -9
//! twice in the middle of the export and restarted; every record is in the lake exactly once,
//! in Hive partitions by hour of its timestamp.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use arrow_array::{Array, Int64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use trib_e2e::{TestBroker, TestRun};

const N: i64 = 30_000;

/// The start of the hour three hours ago: the records span two hours from here (recent enough
/// for the broker's retention).
fn t0() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (now / 3_600_000 - 3) * 3_600_000
}

async fn load(b: &TestBroker) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let mut pending = Vec::new();
    let t0 = t0();
    for i in 0..N {
        let v = format!(r#"{{"id":{i},"amount":{}}}"#, i % 97);
        let ts = t0 + i * 7_200_000 / N;
        let p = p.clone();
        pending.push(async move {
            p.send(
                FutureRecord::<(), _>::to("orders")
                    .payload(&v)
                    .timestamp(ts),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
        });
        if pending.len() == 5_000 {
            for r in futures::future::join_all(std::mem::take(&mut pending)).await {
                r.unwrap();
            }
        }
    }
    for r in futures::future::join_all(pending).await {
        r.unwrap();
    }
}

/// Parquet files in the lake.
fn files(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                n += 1;
            }
        }
    }
    n
}

/// Every `id` in the lake's files, with how often it occurs, and the hour folders seen.
fn lake_ids(root: &Path) -> (HashMap<i64, usize>, Vec<String>) {
    let mut ids = HashMap::new();
    let mut hours = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "parquet") {
                continue;
            }
            let hour = p.parent().unwrap().display().to_string();
            if !hours.contains(&hour) {
                hours.push(hour);
            }
            let f = std::fs::File::open(&p).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(f)
                .unwrap()
                .build()
                .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let col = batch.column_by_name("id").expect("an id column");
                let col = col
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("ids are Int64");
                for i in 0..col.len() {
                    *ids.entry(col.value(i)).or_insert(0) += 1;
                }
            }
        }
    }
    (ids, hours)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_to_lake_exactly_once_through_kill9() {
    let started = Instant::now();
    let b = TestBroker::start(&["--num-partitions", "3"]);
    load(&b).await;
    println!("loaded in {:?}", started.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let file = dir.path().join("lake.yaml");
    std::fs::write(
        &file,
        format!(
            "sources:\n  in:\n    type: kafka\n    brokers: {}\n    topics: [orders]\n    group_id: lake-export\n    batch: 500\n    options: {{session.timeout.ms: '6000', heartbeat.interval.ms: '500'}}\n\
             transforms:\n  decode:\n    type: parse_json\n    inputs: [in]\n\
             sinks:\n  lake:\n    type: lake\n    inputs: [decode]\n    path: {}\n    roll_rows: 700\n    roll_age_ms: 300\n",
            b.bootstrap(),
            lake.display()
        ),
    )
    .unwrap();
    for _ in 0..2 {
        let mut run = TestRun::start(&[&file], &[]);
        // Let part of the export happen, then crash.
        let deadline = Instant::now() + Duration::from_secs(60);
        let before = files(&lake);
        while files(&lake) < before + 4 {
            assert!(
                Instant::now() < deadline,
                "no progress; log:\n{}",
                run.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        run.kill9();
        println!(
            "killed at {:?} with {} files",
            started.elapsed(),
            files(&lake)
        );
    }
    let mut run = TestRun::start(&[&file], &[]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (ids, _) = lake_ids(&lake);
        if ids.len() as i64 >= N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {N} ids in the lake; log:\n{}",
            ids.len(),
            run.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("complete at {:?}", started.elapsed());
    std::thread::sleep(Duration::from_millis(1_000));
    let (ids, hours) = lake_ids(&lake);
    let doubled: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(doubled.is_empty(), "records written twice: {doubled:?}");
    assert_eq!(ids.len() as i64, N);
    assert!((0..N).all(|i| ids.contains_key(&i)));
    assert!(
        hours.len() == 2
            && hours
                .iter()
                .all(|h| h.contains("/orders/date=") && h.contains("/hour=")),
        "two hour partitions of the table `orders`: {hours:?}"
    );
    assert!(run.stop());
}
