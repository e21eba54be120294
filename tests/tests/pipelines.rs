//! Pipelines end to end: `trib run` / `trib up` processes against the real broker (rdkafka as
//! the client), a real PostgreSQL, and an HTTP server that fails for a while. Every test checks
//! that each source event reaches the sinks (at least once) and that sources acknowledge only
//! what was delivered.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use trib_e2e::{trib_bin, TestBroker, TestPostgres, TestRun};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn produce(b: &TestBroker, topic: &str, records: impl IntoIterator<Item = String>) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let futures: Vec<_> = records
        .into_iter()
        .map(|v| {
            let p = p.clone();
            let topic = topic.to_string();
            async move {
                p.send(
                    FutureRecord::<(), _>::to(&topic).payload(&v),
                    Duration::from_secs(10),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
            }
        })
        .collect();
    for r in futures::future::join_all(futures).await {
        r.unwrap();
    }
}

fn committed(b: &TestBroker, group: &str, topic: &str) -> i64 {
    committed_by(&group_client(b, group), topic)
}

fn group_client(b: &TestBroker, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", group)
        .create()
        .unwrap()
}

fn committed_by(c: &BaseConsumer, topic: &str) -> i64 {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    c.committed_offsets(tpl, Duration::from_secs(5))
        .ok()
        .and_then(|t| t.find_partition(topic, 0).map(|e| e.offset()))
        .and_then(|o| match o {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .unwrap_or(-1)
}

fn id_of(v: &str) -> i64 {
    serde_json_id(v).unwrap_or_else(|| panic!("no id in {v}"))
}

fn serde_json_id(v: &str) -> Option<i64> {
    let i = v.find("\"id\":")? + 5;
    let rest = v[i..].trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

const TOPIC_TO_TOPIC: &str = r#"
sources:
  input:
    type: kafka
    brokers: ${BROKERS}
    topics: [in]
    group_id: ${GROUP}
    batch: ${BATCH:-1000}
transforms:
  decode:
    type: parse_json
    inputs: [input]
  errors:
    type: filter
    inputs: [decode]
    condition: ${CONDITION:-status >= 500}
sinks:
  output:
    type: kafka
    inputs: [errors]
    brokers: ${BROKERS}
    topic: out
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_parse_filter_topic_commits_only_what_was_delivered() {
    let b = TestBroker::start(&[]);
    let n = 2000;
    produce(
        &b,
        "in",
        (0..n).map(|i| {
            format!(
                r#"{{"id":{i},"status":{}}}"#,
                if i % 5 == 0 { 503 } else { 200 }
            )
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "p.yaml", TOPIC_TO_TOPIC);
    let mut run = TestRun::start(&[&file], &[("BROKERS", &b.bootstrap()), ("GROUP", "g1")]);
    let out = trib_e2e::read_until(&b, "out", Duration::from_secs(60), |v| {
        v.len() >= (n / 5) as usize
    });
    let ids: BTreeSet<i64> = out.iter().map(|v| id_of(v)).collect();
    let want: BTreeSet<i64> = (0..n).filter(|i| i % 5 == 0).collect();
    assert_eq!(ids, want, "exactly the 5xx records, each once");
    assert!(out.iter().all(|v| v.contains("\"status\":503")));
    // The source commits after the sink's acknowledgement: the group reaches the end.
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed(&b, "g1", "in") != n {
        assert!(
            Instant::now() < deadline,
            "group g1 committed {}, want {n}",
            committed(&b, "g1", "in")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let metrics = run.get("/metrics");
    assert!(metrics.contains("trib_pipeline_events_in_total{pipeline=\"p\",component=\"decode\",kind=\"parse_json\"} 2000"), "{metrics}");
    assert_eq!(run.get("/health").trim(), "ok");
    let top = std::process::Command::new(trib_bin())
        .args([
            "pipeline",
            "top",
            "--count",
            "1",
            "--interval-ms",
            "200",
            "--url",
        ])
        .arg(format!("http://{}/metrics", run.http))
        .output()
        .unwrap();
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.contains("p/decode (parse_json)") && top.contains("p/output (kafka)"),
        "{top}"
    );
    assert!(run.stop(), "clean stop; log:\n{}", run.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_trib_run_mid_stream_loses_no_event() {
    let b = TestBroker::start(&[]);
    let n = 200_000i64;
    produce(
        &b,
        "in",
        (0..n).map(|i| format!(r#"{{"id":{i},"status":500}}"#)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "p.yaml", TOPIC_TO_TOPIC);
    let env = [
        ("BROKERS", b.bootstrap()),
        ("GROUP", "g2".into()),
        ("BATCH", "200".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let checker = group_client(&b, "g2");
    let mut run = TestRun::start(&[&file], &env);
    // Kill as soon as the first batches are committed, i.e. mid-stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_by(&checker, "in") <= 0 {
        assert!(
            Instant::now() < deadline,
            "nothing committed; log:\n{}",
            run.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    run.kill9();
    let before = committed(&b, "g2", "in");
    assert!(before < n, "killed mid-stream (committed {before} of {n})");
    let mut run = TestRun::start(&[&file], &env);
    let out = trib_e2e::read_until(&b, "out", Duration::from_secs(90), |v| {
        v.len() as i64 >= n && v.iter().map(|x| id_of(x)).collect::<BTreeSet<_>>().len() as i64 == n
    });
    let ids: BTreeSet<i64> = out.iter().map(|v| id_of(v)).collect();
    assert_eq!(ids.len() as i64, n, "every source record reached the sink");
    assert!(run.stop());
}

/// An HTTP server that answers 503 to the first `failures` requests, then 200, and keeps the
/// NDJSON lines of the accepted bodies.
/// Requests seen so far, and the lines of the accepted bodies.
type Seen = Arc<Mutex<(usize, Vec<String>)>>;

fn flaky_server(failures: usize) -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let state = Arc::new(Mutex::new((0usize, Vec::new())));
    let st = state.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let mut g = st.lock().unwrap();
            g.0 += 1;
            let status = if g.0 <= failures {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            if g.0 > failures {
                g.1.extend(String::from_utf8_lossy(&body).lines().map(str::to_string));
            }
            drop(g);
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (addr, state)
}

#[test]
fn http_sink_that_fails_for_a_while_loses_nothing() {
    let (addr, state) = flaky_server(4);
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "p.yaml",
        &format!(
            "sources:\n  lines:\n    type: stdin\ntransforms:\n  decode:\n    type: parse_json\n    inputs: [lines]\nsinks:\n  post:\n    type: http\n    inputs: [decode]\n    url: http://{addr}/ingest\n    batch: {{max_events: 100, timeout_ms: 50}}\n    retry: {{initial_backoff_ms: 20, max_backoff_ms: 200}}\n"
        ),
    );
    let mut run = TestRun::start(&[&file], &[]);
    let mut stdin = run.stdin().unwrap();
    for i in 0..1000 {
        writeln!(stdin, r#"{{"id":{i}}}"#).unwrap();
    }
    drop(stdin);
    assert!(
        run.wait_exit(Duration::from_secs(60)),
        "run ends at EOF; log:\n{}",
        run.log_text()
    );
    let g = state.lock().unwrap();
    assert!(g.0 > 4, "the server saw the failures and the retries");
    let ids: BTreeSet<i64> = g.1.iter().map(|v| id_of(v)).collect();
    assert_eq!(
        ids,
        (0..1000).collect(),
        "every event delivered after the outage"
    );
    assert!(run.log_text().contains("write failed; retrying"));
}

fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> u16 {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn http_source_answers_after_delivery_and_checks_token_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let port = trib_e2e::free_port();
    let out = dir.path().join("out.ndjson");
    let file = write_file(
        dir.path(),
        "p.yaml",
        &format!(
            "sources:\n  api:\n    type: http\n    address: 127.0.0.1:{port}\n    path: /events\n    auth_token: s3cret\nsinks:\n  f:\n    type: file\n    inputs: [api]\n    path: {}\n",
            out.display()
        ),
    );
    let run = TestRun::start(&[&file], &[]);
    run.wait_log("http source listening", Duration::from_secs(20));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(post(addr, "/events", None, "{}"), 401);
    assert_eq!(post(addr, "/events", Some("wrong"), "{}"), 401);
    assert_eq!(
        post(addr, "/events", Some("s3cret"), "{\"a\":1}\nnot json\n"),
        400
    );
    assert_eq!(
        post(addr, "/events", Some("s3cret"), "{\"a\":1}\n{\"a\":2}\n"),
        200
    );
    // 200 means the file sink has written and fsynced them.
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text, "{\"a\":1}\n{\"a\":2}\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_errors_to_postgres_writes_rows_and_dead_letters_bad_ones() {
    let b = TestBroker::start(&[]);
    let pg = TestPostgres::start();
    pg.sql("CREATE TABLE web_errors (client text, ts timestamptz, method text, path text, status int, bytes bigint)");
    let n = 3000;
    let mut records: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"client":"10.0.0.{}","timestamp":"2026-11-22T10:00:{:02}Z","method":"GET","path":"/p/{i}","status":{},"bytes":{i}}}"#,
                i % 250,
                i % 60,
                if i % 3 == 0 { 500 } else { 200 }
            )
        })
        .collect();
    // Passes the filter, but PostgreSQL refuses it (not an integer): dead letter, not a stall.
    records.push(r#"{"client":"bad","timestamp":"2026-11-22T10:00:00Z","method":"GET","path":"/bad","status":500,"bytes":"lots"}"#.into());
    records.push(r#"{"client":"bad2","timestamp":"2026-11-22T10:00:00Z","method":"GET","path":"/bad2","status":599.5,"bytes":1}"#.into());
    produce(&b, "web-logs", records).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TRIB_BROKERS", b.bootstrap()),
        ("PG_URL", pg.url()),
        ("TRIB_OUT", dir.path().display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut run = TestRun::start(&[&examples().join("errors-to-postgres.yaml")], &env);
    let want = (0..n).filter(|i| i % 3 == 0).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: usize = pg.sql("SELECT count(*) FROM web_errors").parse().unwrap();
        if got >= want {
            assert_eq!(got, want);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{got} of {want} rows; log:\n{}",
            run.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        pg.sql("SELECT count(DISTINCT path) FROM web_errors WHERE status = 500"),
        want.to_string()
    );
    assert_eq!(
        pg.sql("SELECT ts FROM web_errors WHERE path = '/p/3'"),
        "2026-11-22 10:00:03+00"
    );
    let rejected = dir.path().join("postgres-rejected.ndjson");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&rejected)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "dead letters not written; log:\n{}",
            run.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dead = std::fs::read_to_string(&rejected).unwrap();
    assert!(
        dead.contains("\"path\":\"/bad\"") && dead.contains("invalid input syntax for type bigint"),
        "{dead}"
    );
    assert!(
        dead.contains("\"path\":\"/bad2\"")
            && dead.contains("invalid input syntax for type integer"),
        "{dead}"
    );
    assert!(dead.contains("\"_component\":\"table\""), "{dead}");
    assert!(run.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_route_topics_splits_by_status() {
    let b = TestBroker::start(&[]);
    produce(
        &b,
        "web-logs",
        (0..1000).map(|i| {
            format!(
                r#"{{"id":{i},"status":{}}}"#,
                if i % 4 == 0 { 502 } else { 301 }
            )
        }),
    )
    .await;
    let env = [("TRIB_BROKERS", b.bootstrap())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut run = TestRun::start(&[&examples().join("route-topics.yaml")], &env);
    let errors = trib_e2e::read_until(&b, "web-errors", Duration::from_secs(60), |v| {
        v.len() >= 250
    });
    let other = trib_e2e::read_until(&b, "web-other", Duration::from_secs(60), |v| v.len() >= 750);
    assert!(errors.iter().all(|v| v.contains("502")));
    assert!(other.iter().all(|v| v.contains("301")));
    let all: BTreeSet<i64> = errors.iter().chain(&other).map(|v| id_of(v)).collect();
    assert_eq!(all, (0..1000).collect());
    assert!(run.stop());
}

#[test]
fn trib_up_runs_the_quickstart_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (trib_e2e::free_port(), trib_e2e::free_port());
    let log = dir.path().join("up.log");
    let mut child = std::process::Command::new(trib_bin())
        .args(["up", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
        .env("DEMO_RATE", "0")
        .env("DEMO_COUNT", "3000")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let errors = dir.path().join("data/out/errors.ndjson");
    // The demo's seeded generator makes a fixed mix; 5xx are 2 of its 14 status choices.
    let deadline = Instant::now() + Duration::from_secs(60);
    let lines = loop {
        let text = std::fs::read_to_string(&errors).unwrap_or_default();
        let n = text.lines().count();
        if n >= 300 {
            break text;
        }
        assert!(Instant::now() < deadline, "{n} error lines so far");
        std::thread::sleep(Duration::from_millis(200));
    };
    for l in lines.lines() {
        let status = l
            .split("\"status\":")
            .nth(1)
            .and_then(|s| s.get(..3))
            .unwrap_or("");
        assert!(status.starts_with('5'), "{l}");
    }
    assert_eq!(
        trib_e2e::http_get(format!("127.0.0.1:{http}").parse().unwrap(), "/health").trim(),
        "ok"
    );
    // Every record of the topic reaches the lake, and SQL counts it (the README's query).
    let lake = dir.path().join("data/lake");
    let count = || {
        let out = std::process::Command::new(trib_bin())
            .args(["sql", "--format", "csv", "--path"])
            .arg(&lake)
            .args([
                "-e",
                r#"SELECT count(*) AS n, count(DISTINCT _offset * 16 + _partition) AS d FROM "web-logs""#,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = count();
        if c == "3000,3000" {
            break;
        }
        assert!(Instant::now() < deadline, "lake count {c:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "trib up did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(
        out.contains("Tributary is up.") && out.contains("stopped"),
        "{out}"
    );
    assert_eq!(count(), "3000,3000", "the lake after the stop");
}

#[test]
fn reload_swaps_a_valid_file_and_rejects_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.ndjson");
    let bfile = dir.path().join("b.ndjson");
    let text = |path: &Path| {
        format!("sources:\n  gen:\n    type: demo\n    format: json\n    rate: 200\nsinks:\n  f:\n    type: file\n    inputs: [gen]\n    path: {}\n    batch: {{timeout_ms: 20}}\n", path.display())
    };
    let file = write_file(dir.path(), "p.yaml", &text(&a));
    let run = TestRun::start(&[&file], &[]);
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let wait = |p: &Path, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while lines(p) < n {
            assert!(
                Instant::now() < deadline,
                "{} has {} lines; log:\n{}",
                p.display(),
                lines(p),
                run.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait(&a, 20);
    std::fs::write(&file, text(&bfile)).unwrap();
    run.signal("HUP");
    run.wait_log("reloaded", Duration::from_secs(20));
    wait(&bfile, 20);
    let a_after = lines(&a);
    std::fs::write(&file, "sources:\n  gen:\n    type: demo\n    rat: 5\n").unwrap();
    run.signal("HUP");
    run.wait_log("the new version is rejected", Duration::from_secs(20));
    assert!(run.log_text().contains("unknown field `rat`"));
    let n = lines(&bfile);
    wait(&bfile, n + 20);
    assert_eq!(
        lines(&a),
        a_after,
        "the first version stopped at the reload"
    );
}

#[test]
fn validate_reports_each_error_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "bad.yaml",
        "sources:\n  gen:\n    type: demo\ntransforms:\n  f:\n    type: filter\n    inputs: [gne]\n    condition: status >=\nsinks:\n  o:\n    type: console\n    inputs: [f]\n",
    );
    let out = std::process::Command::new(trib_bin())
        .args(["pipeline", "validate"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let f = file.display();
    assert!(
        text.contains(&format!("{f}:6:5: transform `f`: condition:")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{f}:7:14: transform `f`: input `gne`: no component named `gne`"
        )),
        "{text}"
    );
    assert!(text.contains("did you mean `gen`?"), "{text}");
    // Every example is a valid file (the agent example is otherwise run on hosts, see
    // docs/agent.md; its sources are each tested in tests/agent.rs).
    let mut examples_all: Vec<PathBuf> = std::fs::read_dir(examples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    examples_all.sort();
    assert!(examples_all.len() >= 4);
    let v = std::process::Command::new(trib_bin())
        .args(["pipeline", "validate"])
        .args(&examples_all)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let ok = std::process::Command::new(trib_bin())
        .args(["pipeline", "test"])
        .args([
            examples().join("quickstart.yaml"),
            examples().join("route-topics.yaml"),
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}

#[test]
fn stdin_skips_overlong_lines_without_buffering_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let file = write_file(
        dir.path(),
        "p.yaml",
        &format!(
            "sources:\n  s:\n    type: stdin\n    max_line_bytes: 10\nsinks:\n  f:\n    type: file\n    encoding: text\n    inputs: [s]\n    path: {}\n",
            out.display()
        ),
    );
    let mut run = TestRun::start(&[&file], &[]);
    let mut stdin = run.stdin().unwrap();
    writeln!(stdin, "short").unwrap();
    stdin.write_all(&vec![b'x'; 8 << 20]).unwrap();
    writeln!(stdin).unwrap();
    writeln!(stdin, "0123456789\r").unwrap();
    write!(stdin, "last").unwrap();
    drop(stdin);
    assert!(run.wait_exit(Duration::from_secs(30)), "{}", run.log_text());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "short\n0123456789\nlast\n"
    );
    assert!(run
        .log_text()
        .contains("line longer than max_line_bytes; skipped"));
}
