//! Test harness: starts the real `trib` binary on a free loopback port with a temporary data
//! folder, and stops, kills (-9) or restarts it. Used by the end-to-end tests in `tests/`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the `trib` binary: `$TRIB_BIN`, or next to the test executable's target folder.
pub fn trib_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TRIB_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/trib
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile folder");
    let bin = profile_dir.join("trib");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p trib` first or set TRIB_BIN",
        bin.display()
    );
    bin
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running broker process.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub data: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
    pub log: PathBuf,
}

impl TestBroker {
    /// Starts a broker with extra `trib broker` flags.
    pub fn start(extra: &[&str]) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = data.path().join("broker.log");
        let mut b = Self {
            addr,
            data,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            log,
        };
        b.spawn();
        b
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(trib_bin())
            .arg("broker")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--no-http")
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start trib broker");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "broker did not listen on {}; log:\n{}",
                self.addr,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// kill -9, no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean stop (bounded).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port and data folder.
    pub fn restart(&mut self) {
        self.spawn();
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill9();
    }
}
