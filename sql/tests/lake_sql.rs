//! SQL over a lake written by the lake writer: answers checked against the data written,
//! partition pruning, schema evolution and type conflicts across files, and compaction while
//! queries run (every query sees every row once).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use trib_lake::compact::{compact, CompactOptions};
use trib_lake::{LakeStore, LakeWriter};
use trib_pipelines::config::sinks::{LakeMode, LakeSink};
use trib_pipelines::event::Event;
use trib_sql::SqlLake;

const HOUR: i64 = 3_600_000;
/// 2024-05-01T10:00:00Z
const T0: i64 = 1_714_557_600_000;

fn sink(path: &str, roll_rows: usize) -> LakeSink {
    LakeSink {
        kind: "lake".into(),
        buffer: None,
        inputs: Vec::new(),
        path: path.into(),
        storage_options: BTreeMap::new(),
        table: "events".into(),
        mode: LakeMode::Json,
        schema: Vec::new(),
        roll_rows,
        roll_bytes: usize::MAX,
        roll_age_ms: 3_600_000,
    }
}

fn record(topic: &Arc<str>, partition: i32, offset: i64, ts: i64, body: String) -> Event {
    Event::from_record(
        &Arc::from("test"),
        topic,
        partition,
        offset,
        ts,
        None,
        Some(body.as_bytes()),
        Vec::new(),
    )
}

/// Writes `orders`: 2 partitions × 1000 records over 2 hours; status cycles 200/404/500;
/// records from offset 500 on carry a new `coupon` field; `amount` is an int in partition 0
/// and a string in partition 1 (a type conflict between files).
async fn write_orders(path: &str) {
    let mut w = LakeWriter::open(&sink(path, 100), Default::default())
        .await
        .unwrap();
    let topic: Arc<str> = "orders".into();
    for p in 0..2i32 {
        for o in 0..1000i64 {
            let status = [200, 404, 500][(o % 3) as usize];
            let amount = if p == 0 {
                format!("{o}")
            } else {
                format!("\"{o}\"")
            };
            let coupon = if o >= 500 { r#","coupon":"SAVE""# } else { "" };
            let body = format!(
                r#"{{"id":{},"status":{status},"amount":{amount}{coupon}}}"#,
                i64::from(p) * 1000 + o
            );
            let ts = T0 + (o * 2 * HOUR) / 1000;
            w.push(record(&topic, p, o, ts, body)).await;
        }
    }
    w.finish().await;
}

async fn scalar(lake: &SqlLake, sql: &str) -> i64 {
    let (_, b) = lake
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let c = b[0].column(0);
    c.as_primitive_opt::<Int64Type>()
        .map(|a| a.value(0))
        .unwrap_or_else(|| panic!("{sql}: not an int64: {:?}", c.data_type()))
}

#[tokio::test]
async fn sql_answers_match_what_was_written() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("lake").to_string_lossy().into_owned();
    write_orders(&path).await;
    let lake = SqlLake::open(LakeStore::open(&path, &BTreeMap::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(scalar(&lake, "SELECT count(*) FROM orders").await, 2000);
    assert_eq!(
        scalar(&lake, "SELECT count(DISTINCT id) FROM orders").await,
        2000
    );
    assert_eq!(
        scalar(&lake, "SELECT sum(id) FROM orders").await,
        (0..2000).sum::<i64>()
    );
    // Group-by.
    let (_, b) = lake
        .query("SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status")
        .await
        .unwrap();
    let n: Vec<i64> = b
        .iter()
        .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(n, [668, 666, 666]);
    // Partition columns: the first hour holds offsets 0..=499 of each partition.
    assert_eq!(
        scalar(
            &lake,
            "SELECT count(*) FROM orders WHERE date = '2024-05-01' AND hour = 10"
        )
        .await,
        1000
    );
    // A time range on the event time.
    assert_eq!(
        scalar(
            &lake,
            "SELECT count(*) FROM orders WHERE _timestamp >= TIMESTAMP '2024-05-01T11:00:00Z' \
             AND _timestamp < TIMESTAMP '2024-05-01T11:30:00Z'"
        )
        .await,
        2 * 250
    );
    // Schema evolution: the later field is there, null before.
    assert_eq!(
        scalar(&lake, "SELECT count(coupon) FROM orders").await,
        1000
    );
    // A type conflict between files reads as text.
    assert_eq!(
        scalar(&lake, "SELECT count(*) FROM orders WHERE amount = '42'").await,
        2
    );
    // Errors name the problem.
    let e = lake.query("SELECT nope FROM orders").await.unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_queries_run_loses_and_doubles_nothing() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("lake").to_string_lossy().into_owned();
    write_orders(&path).await;
    let store = LakeStore::open(&path, &BTreeMap::new()).unwrap();
    let before = store.list("orders").await.unwrap().len();
    let lake = Arc::new(SqlLake::open(store.clone()).await.unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let q = {
        let (lake, stop) = (lake.clone(), stop.clone());
        tokio::spawn(async move {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || runs < 3 {
                lake.refresh().await.unwrap();
                let (_, b) = lake
                    .query("SELECT count(*), count(DISTINCT id) FROM orders")
                    .await
                    .unwrap();
                let total = b[0].column(0).as_primitive::<Int64Type>().value(0);
                let distinct = b[0].column(1).as_primitive::<Int64Type>().value(0);
                assert_eq!((total, distinct), (2000, 2000), "query {runs}");
                runs += 1;
            }
            runs
        })
    };
    let opts = CompactOptions {
        table: None,
        target_bytes: 64 * 1024 * 1024,
        grace: Duration::from_millis(500),
    };
    let r = compact(&store, &opts, &|_, _| {}).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = q.await.unwrap();
    assert!(runs >= 3);
    assert!(
        r.files_merged > r.files_written && r.files_written > 0,
        "{r:?}"
    );
    let after = store.list("orders").await.unwrap().len();
    assert!(after < before, "{before} files before, {after} after");
    lake.refresh().await.unwrap();
    assert_eq!(
        scalar(&lake, "SELECT count(DISTINCT id) FROM orders").await,
        2000
    );
    assert_eq!(scalar(&lake, "SELECT count(*) FROM orders").await, 2000);
    // The writer, reopened, resumes after what the lake holds (compacted files count).
    let w = LakeWriter::open(&sink(&path, 100), Default::default())
        .await
        .unwrap();
    assert_eq!(w.committed("orders", 0), Some(999));
    assert_eq!(w.committed("orders", 1), Some(999));
}
