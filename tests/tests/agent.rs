//! The file source end to end (`trib run` with a file source): rotation by rename and by
//! copytruncate while lines are written fast, and kill -9 of the process mid-stream. Every line
//! must arrive; without a crash, exactly once.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use trib_e2e::TestRun;

fn pipeline(dir: &Path, include: &str, out: &Path) -> PathBuf {
    let p = dir.join("agent.yaml");
    std::fs::write(
        &p,
        format!(
            "sources:\n  logs:\n    type: file\n    include: ['{include}']\n    state_dir: {}\n    glob_interval_ms: 100\n    close_idle_ms: 1000\nsinks:\n  out:\n    type: file\n    encoding: text\n    inputs: [logs]\n    path: {}\n    batch: {{timeout_ms: 20}}\n",
            dir.join("state").display(),
            out.display()
        ),
    )
    .unwrap();
    p
}

/// Counts of each line in the output.
fn counts(out: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in std::fs::read_to_string(out).unwrap_or_default().lines() {
        *m.entry(l.to_string()).or_insert(0) += 1;
    }
    m
}

fn wait_all(out: &Path, n: usize, run: &TestRun) -> BTreeMap<String, usize> {
    trib_e2e::poll_until(
        Duration::from_secs(60),
        || counts(out),
        |c| c.len() >= n,
        |c| {
            format!(
                "{} of {n} distinct lines; log:\n{}",
                c.len(),
                run.log_text()
            )
        },
    )
}

/// Writes `n` lines to `log`, rotating every `every` lines with `rotate(log, k)`.
fn write_lines(log: &Path, n: usize, every: usize, rotate: impl Fn(&Path, usize)) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    for i in 0..n {
        if i > 0 && i % every == 0 {
            f.flush().unwrap();
            rotate(log, i / every);
            f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
        }
        writeln!(f, "line-{i:07} {}", "x".repeat(150)).unwrap();
        if i % 5000 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    f.flush().unwrap();
}

fn assert_exactly_once(c: &BTreeMap<String, usize>, n: usize) {
    assert_eq!(c.len(), n, "distinct lines");
    let doubled: Vec<_> = c.iter().filter(|(_, k)| **k != 1).take(5).collect();
    assert!(
        doubled.is_empty(),
        "lines delivered more than once: {doubled:?}"
    );
}

#[test]
fn rename_rotation_while_writing_fast_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let log = dir.path().join("logs/app.log");
    std::fs::write(&log, "").unwrap();
    let out = dir.path().join("out.txt");
    // Rotated names are matched too, so a generation renamed away between two scans is still
    // found; a renamed file already open is followed (same inode), not read again.
    let file = pipeline(
        dir.path(),
        &format!("{}/logs/app.log*", dir.path().display()),
        &out,
    );
    let run = TestRun::start(&[&file], &[]);
    run.wait_log("pipeline started", Duration::from_secs(20));
    let n = 100_000;
    write_lines(&log, n, 15_000, |log, k| {
        std::fs::rename(log, log.with_extension(format!("log.{k}"))).unwrap();
    });
    let c = wait_all(&out, n, &run);
    assert_exactly_once(&c, n);
}

#[test]
fn copytruncate_rotation_continues_in_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let log = dir.path().join("logs/app.log");
    std::fs::write(&log, "").unwrap();
    let out = dir.path().join("out.txt");
    let file = pipeline(
        dir.path(),
        &format!("{}/logs/app.log*", dir.path().display()),
        &out,
    );
    let run = TestRun::start(&[&file], &[]);
    run.wait_log("pipeline started", Duration::from_secs(20));
    let n = 60_000;
    write_lines(&log, n, 20_000, |log, k| {
        std::fs::copy(log, log.with_extension(format!("log.{k}"))).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(log)
            .unwrap()
            .set_len(0)
            .unwrap();
    });
    let c = wait_all(&out, n, &run);
    assert_exactly_once(&c, n);
}

#[test]
fn kill9_mid_stream_then_restart_delivers_every_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let log = dir.path().join("logs/app.log");
    let n = 300_000;
    write_lines(&log, n, usize::MAX, |_, _| {});
    let out = dir.path().join("out.txt");
    let file = pipeline(dir.path(), &log.display().to_string(), &out);
    let mut run = TestRun::start(&[&file], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing written; log:\n{}",
            run.log_text()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    run.kill9();
    let first = counts(&out).len();
    assert!(first < n, "killed mid-stream ({first} of {n})");
    let run = TestRun::start(&[&file], &[]);
    let c = wait_all(&out, n, &run);
    let missing: Vec<usize> = (0..n)
        .filter(|i| !c.contains_key(&format!("line-{i:07} {}", "x".repeat(150))))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "lines missing after the restart: {missing:?}"
    );
    assert_eq!(c.len(), n, "no torn or merged lines in the output");
}

#[test]
fn agent_takes_syslog_udp_and_tcp_and_socket_lines_and_reports_status() {
    use std::net::{TcpStream, UdpSocket};
    let dir = tempfile::tempdir().unwrap();
    let (udp, tcp, lines) = (
        trib_e2e::free_port(),
        trib_e2e::free_port(),
        trib_e2e::free_port(),
    );
    let unix = dir.path().join("app.sock");
    let out = dir.path().join("out.ndjson");
    let cfg = dir.path().join("agent.yaml");
    std::fs::write(
        &cfg,
        format!(
            "sources:\n  syslog_udp:\n    type: syslog\n    address: 127.0.0.1:{udp}\n  syslog_tcp:\n    type: syslog\n    mode: tcp\n    address: 127.0.0.1:{tcp}\n  app_tcp:\n    type: socket\n    address: 127.0.0.1:{lines}\n    decoding: ndjson\n    max_line_bytes: 100\n  app_unix:\n    type: socket\n    path: {}\nsinks:\n  out:\n    type: file\n    inputs: [syslog_udp, syslog_tcp, app_tcp, app_unix]\n    path: {}\n    batch: {{timeout_ms: 20}}\n",
            unix.display(),
            out.display()
        ),
    )
    .unwrap();
    let run = TestRun::command(
        &["agent".as_ref(), "--config".as_ref(), cfg.as_os_str()],
        &[],
    );
    run.wait_log("socket source listening (unix)", Duration::from_secs(20));
    run.wait_log("syslog source listening (tcp)", Duration::from_secs(20));
    run.wait_log("syslog source listening (udp)", Duration::from_secs(20));
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(
        b"<34>Oct 11 22:14:15 mymachine su[9]: udp one",
        format!("127.0.0.1:{udp}"),
    )
    .unwrap();
    let mut t = TcpStream::connect(format!("127.0.0.1:{tcp}")).unwrap();
    // One newline-framed and one octet-counted message.
    t.write_all(b"<165>1 2003-10-11T22:14:15.003Z host1 app 42 ID47 - tcp two\n55 <165>1 2003-10-11T22:14:15.003Z h app 1 - - tcp three\n").unwrap();
    drop(t);
    let mut a = TcpStream::connect(format!("127.0.0.1:{lines}")).unwrap();
    writeln!(a, "{{\"app\":\"json four\"}}").unwrap();
    writeln!(a, "{}", "y".repeat(300)).unwrap();
    drop(a);
    let mut u = std::os::unix::net::UnixStream::connect(&unix).unwrap();
    writeln!(u, "unix five").unwrap();
    drop(u);
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.lines().count() >= 6 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "got:\n{text}\nlog:\n{}",
            run.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        text.contains("\"message\":\"udp one\"")
            && text.contains("\"severity\":\"crit\"")
            && text.contains("\"host\":\"127.0.0.1\""),
        "{text}"
    );
    assert!(
        text.contains("\"message\":\"tcp two\"") && text.contains("\"message\":\"tcp three\""),
        "{text}"
    );
    assert!(text.contains("{\"app\":\"json four\"}"), "{text}");
    assert!(
        text.contains(&format!("{{\"message\":\"{}\"}}", "y".repeat(100))),
        "cut at max_line_bytes: {text}"
    );
    assert!(text.contains("{\"message\":\"unix five\"}"), "{text}");
    let status = std::process::Command::new(trib_e2e::trib_bin())
        .args(["agent", "status", "--url"])
        .arg(format!("http://{}", run.http))
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.starts_with("health: ok"), "{status}");
    assert!(status.contains("agent/out (file)"), "{status}");
}

#[test]
fn agent_collects_host_metrics_and_scrapes_prometheus_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    // Something to scrape: another pipeline's /metrics.
    let a = dir.path().join("a.yaml");
    std::fs::write(
        &a,
        format!(
            "sources:\n  gen:\n    type: demo\n    rate: 20\nsinks:\n  f:\n    type: file\n    inputs: [gen]\n    path: {}\n",
            dir.path().join("a.out").display()
        ),
    )
    .unwrap();
    let scraped = TestRun::start(&[&a], &[]);
    scraped.wait_log("pipeline started", Duration::from_secs(20));
    let out = dir.path().join("metrics.ndjson");
    let cfg = dir.path().join("agent.yaml");
    std::fs::write(
        &cfg,
        format!(
            "sources:\n  host:\n    type: host_metrics\n    interval_ms: 200\n  scrape:\n    type: prometheus_scrape\n    urls: [http://{}/metrics]\n    interval_ms: 200\nsinks:\n  out:\n    type: file\n    inputs: [host, scrape]\n    path: {}\n    batch: {{timeout_ms: 20}}\n",
            scraped.http,
            out.display()
        ),
    )
    .unwrap();
    let run = TestRun::command(
        &["agent".as_ref(), "--config".as_ref(), cfg.as_os_str()],
        &[],
    );
    let want = [
        "\"metric\":\"memory_total_bytes\"",
        "\"metric\":\"cpu_seconds_total\"",
        "\"metric\":\"load1\"",
        "\"metric\":\"filesystem_total_bytes\"",
        "\"metric\":\"trib_pipeline_events_in_total\"",
        "\"component\":\"gen\"",
        "\"type\":\"counter\"",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let missing: Vec<_> = want.iter().filter(|w| !text.contains(*w)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing {missing:?}; log:\n{}",
            run.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
