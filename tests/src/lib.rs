//! Test harness: starts the real `trib` binary on a free loopback port with a temporary data
//! folder, and stops, kills (-9) or restarts it; runs `trib run`/`trib agent`; reads topics; and
//! frames raw Kafka requests (`wire`). Used by the end-to-end tests in `tests/`.

pub mod wire;

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

/// Reads a topic from the start until `want` holds for the values read so far, or times out.
pub fn read_until(
    b: &TestBroker,
    topic: &str,
    timeout: Duration,
    want: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let c: rdkafka::consumer::BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", format!("reader-{topic}-{}", free_port()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    rdkafka::consumer::Consumer::subscribe(&c, &[topic]).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    // The condition is checked when the topic goes quiet or every 1,000 records.
    let mut check = true;
    while !(check && want(&out)) {
        assert!(
            Instant::now() < deadline,
            "topic {topic}: condition not met; {} records read",
            out.len()
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(
                    String::from_utf8_lossy(
                        rdkafka::message::Message::payload(&m).unwrap_or_default(),
                    )
                    .into_owned(),
                );
                check = out.len() % 1000 == 0;
            }
            _ => check = true,
        }
    }
    out
}

/// Records in each of a topic's first `partitions` partitions (low to high watermark).
pub fn partition_counts(b: &TestBroker, topic: &str, partitions: i32) -> Vec<i64> {
    use rdkafka::consumer::Consumer;
    let c: rdkafka::consumer::BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            let (lo, hi) = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            hi - lo
        })
        .collect()
}

/// Calls `probe` every 100 ms until it returns enough (`done`), and returns that; fails after
/// `timeout` with `why(last value)`.
pub fn poll_until<T>(
    timeout: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
    why: impl Fn(&T) -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let v = probe();
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{}", why(&v));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running broker process.
pub struct TestBroker {
    pub addr: SocketAddr,
    /// The HTTP endpoint (`start_http`), else none.
    pub http: Option<SocketAddr>,
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
            http: None,
            data,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            log,
        };
        b.spawn();
        b
    }

    /// Starts a broker with its HTTP endpoint (metrics, health, the field index) on a free port.
    pub fn start_http(extra: &[&str]) -> Self {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let port = http.to_string();
        let mut args = vec!["--http", port.as_str()];
        args.extend_from_slice(extra);
        let mut b = Self::start(&args);
        b.http = Some(http);
        b
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// An rdkafka config for this broker (quiet logs).
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap())
            .set("log_level", "0");
        c
    }

    /// Creates a topic with `configs` through the admin API; panics if the broker refuses.
    pub async fn create_topic(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            self.client_config().create().expect("admin client");
        let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            t = t.set(k, v);
        }
        for r in admin
            .create_topics([&t], &AdminOptions::new())
            .await
            .expect("create topics")
        {
            if let Err((topic, code)) = r {
                panic!("cannot create topic {topic}: {code}");
            }
        }
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
            .args(if self.extra.iter().any(|a| a == "--http") {
                None
            } else {
                Some("--no-http")
            })
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

/// A throwaway PostgreSQL cluster: `initdb` and `pg_ctl` in a temporary folder, listening on
/// a free loopback port, removed on drop. Runs the server as the `postgres` user when the tests
/// run as root (PostgreSQL refuses to run as root).
pub struct TestPostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

impl TestPostgres {
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed (scripts/test-env.sh installs it)")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("no PostgreSQL server binaries under /usr/lib/postgresql");
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown")
                .success();
            assert!(ok, "chown of the cluster folder failed");
        }
        let pg = Self {
            port: free_port(),
            dir,
            bin,
            as_postgres,
        };
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            pg.port,
            pg.dir.path().display()
        );
        let log = pg.dir.path().join("pg.log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
        pg
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let out = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .current_dir(self.dir.path())
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A libpq connection string for the `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// Runs SQL with psql and returns its unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let exe = self.bin.join("pg_ctl");
        let args = [
            "-D",
            &*data.to_string_lossy(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
    }
}

/// A running `trib run` process.
pub struct TestRun {
    pub http: SocketAddr,
    child: Option<Child>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestRun {
    /// Starts `trib run FILES` with extra environment variables; stdin is a pipe.
    pub fn start(files: &[&Path], env: &[(&str, &str)]) -> Self {
        let mut args: Vec<&std::ffi::OsStr> = vec!["run".as_ref()];
        args.extend(files.iter().map(|f| f.as_os_str()));
        Self::command(&args, env)
    }

    /// Starts `trib ARGS --http <free port>` (a command serving /metrics, like `run` or
    /// `agent`).
    pub fn command(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = dir.path().join("run.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(trib_bin())
            .args(args)
            .arg("--http")
            .arg(http.to_string())
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,librdkafka=warn")
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start trib run");
        Self {
            http,
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for the log to contain `text`.
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(text) {
            assert!(
                Instant::now() < deadline,
                "`{text}` not in the log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) for the process to end; returns whether it succeeded.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let Some(c) = self.child.as_mut() else {
            return false;
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                self.child = None;
                return s.success();
            }
            assert!(
                Instant::now() < deadline,
                "trib run did not end; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (`TERM`, `HUP`, ...).
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// SIGTERM, then waits for a clean exit; returns whether it succeeded.
    pub fn stop(&mut self) -> bool {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(40))
    }

    /// The process's stdin.
    pub fn stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.as_mut().and_then(|c| c.stdin.take())
    }

    /// GET a path of its HTTP endpoint (plain HTTP/1.0).
    pub fn get(&self, path: &str) -> String {
        http_get(self.http, path)
    }

    /// The sum of a pipeline metric (`trib_pipeline_<name>`, counters without `_total`) over
    /// the series of one component.
    pub fn metric(&self, name: &str, component: &str) -> f64 {
        let label = format!("component=\"{component}\"");
        self.get("/metrics")
            .lines()
            .filter(|l| {
                (l.starts_with(&format!("trib_pipeline_{name}{{"))
                    || l.starts_with(&format!("trib_pipeline_{name}_total{{")))
                    && l.contains(&label)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for TestRun {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minimal HTTP/1.0 GET; returns the body, or an empty string if nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}
