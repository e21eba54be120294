//! The HTTP endpoint: `/health` answers JSON and `/metrics` Prometheus text whose counters move
//! with traffic.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trib_e2e::{free_port, trib_bin};

fn get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn health_and_metrics_endpoints_report_the_broker() {
    let data = tempfile::tempdir().unwrap();
    let (kafka, http) = (free_port(), free_port());
    let mut child = Command::new(trib_bin())
        .args([
            "broker",
            "--listen",
            &format!("127.0.0.1:{kafka}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
        .arg("--data-dir")
        .arg(data.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(Instant::now() < deadline, "http endpoint never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let health = get(http, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    // One raw ApiVersions v0 request, which the metrics must count.
    let mut k = TcpStream::connect(("127.0.0.1", kafka)).unwrap();
    k.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff])
        .unwrap();
    let mut len = [0u8; 4];
    k.read_exact(&mut len).unwrap();
    let metrics = get(http, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("tributary_broker_requests_total{api=\"api_versions\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tributary_broker_connections 1"),
        "{metrics}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
