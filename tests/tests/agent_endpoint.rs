//! The agent's Kafka endpoint on the wire: an idempotent producer's retried batch is answered
//! without being forwarded twice, a request is answered only once its records reached the
//! broker, and oversize frames or APIs the endpoint does not serve close only their connection.
//! (Real clients through the endpoint: tests/clients/test_agent_endpoint.py.)

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, FetchRequest, ProduceResponse, ResponseHeader};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::records::{Record, TimestampType};
use trib_e2e::wire::{closed, frame, round_trip};
use trib_e2e::{free_port, read_until, TestBroker, TestRun};

fn start_agent(b: &TestBroker, dir: &std::path::Path) -> (TestRun, SocketAddr) {
    let endpoint: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = dir.join("agent.yaml");
    std::fs::write(
        &cfg,
        format!(
            "sources:\n  apps:\n    type: kafka_endpoint\n    address: {endpoint}\n    max_request_bytes: 65536\n\
             sinks:\n  out:\n    type: kafka\n    inputs: [apps]\n    brokers: {}\n    topic: unused\n    linger_ms: 10\n",
            b.bootstrap()
        ),
    )
    .unwrap();
    let run = TestRun::command(
        &["agent".as_ref(), "--config".as_ref(), cfg.as_os_str()],
        &[],
    );
    run.wait_log("kafka endpoint listening", Duration::from_secs(20));
    (run, endpoint)
}

/// A Produce v9 request of one v2 batch of an idempotent producer.
fn produce(topic: &str, producer_id: i64, sequence: i32, values: &[&str]) -> Vec<u8> {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: sequence + i as i32,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(v.to_string())),
            headers: Default::default(),
        })
        .collect();
    let req = trib_broker::wire::single_batch_produce(topic, 0, -1, &records).unwrap();
    frame(ApiKey::Produce, 9, sequence, &req)
}

/// Sends a Produce request and returns each partition's error code.
fn send(s: &mut TcpStream, request: &[u8]) -> Vec<i16> {
    let mut resp = round_trip(s, request).expect("a produce response");
    let header = ResponseHeader::decode(&mut resp, ApiKey::Produce.response_header_version(9));
    assert!(header.is_ok());
    let r = ProduceResponse::decode(&mut resp, 9).expect("decode produce response");
    r.responses
        .iter()
        .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
        .collect()
}

#[test]
fn retried_idempotent_batches_are_forwarded_once() {
    let b = TestBroker::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, endpoint) = start_agent(&b, dir.path());
    let mut s = TcpStream::connect(endpoint).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    let first = produce("dedupe", 4242, 0, &["a", "b", "c"]);
    assert_eq!(send(&mut s, &first), vec![0]);
    // The same batch again (a retry after a lost answer): acknowledged, not forwarded.
    assert_eq!(send(&mut s, &first), vec![0]);
    // The next batch of the same producer, and another producer's batch at sequence 0.
    assert_eq!(send(&mut s, &produce("dedupe", 4242, 3, &["d"])), vec![0]);
    assert_eq!(send(&mut s, &produce("dedupe", 4343, 0, &["e"])), vec![0]);
    // Answered means delivered: the broker has all five already.
    let got = read_until(&b, "dedupe", Duration::from_secs(30), |v| v.len() >= 5);
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["a", "b", "c", "d", "e"]);
    // Nothing more arrives.
    std::thread::sleep(Duration::from_millis(500));
    let again = read_until(&b, "dedupe", Duration::from_secs(10), |v| v.len() >= 5);
    assert_eq!(
        again.len(),
        5,
        "the retried batch was forwarded twice: {again:?}"
    );
    assert!(agent.stop(), "the agent stops cleanly");
}

#[test]
fn oversize_frames_and_unserved_apis_close_only_their_connection() {
    let b = TestBroker::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, endpoint) = start_agent(&b, dir.path());
    let connect = || {
        let s = TcpStream::connect(endpoint).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    // A frame claiming 1 GiB (max_request_bytes is 64 KiB): closed before anything is read.
    let mut s = connect();
    std::io::Write::write_all(&mut s, &(1i32 << 30).to_be_bytes()).unwrap();
    assert!(closed(&mut s));
    // Fetch is listed (librdkafka needs it to write v2 batches) but not served.
    let mut s = connect();
    std::io::Write::write_all(
        &mut s,
        &frame(ApiKey::Fetch, 4, 1, &FetchRequest::default()),
    )
    .unwrap();
    assert!(closed(&mut s));
    // A batch with a broken CRC gets CORRUPT_MESSAGE and the connection stays usable.
    let mut s = connect();
    let mut bad = produce("crc", -1, -1, &["value-to-corrupt"]);
    let at = bad
        .windows(16)
        .position(|w| w == b"value-to-corrupt")
        .unwrap();
    bad[at] ^= 0xff;
    assert_eq!(send(&mut s, &bad), vec![2]);
    assert_eq!(send(&mut s, &produce("crc", -1, -1, &["ok"])), vec![0]);
    let got = read_until(&b, "crc", Duration::from_secs(30), |v| !v.is_empty());
    assert_eq!(got, vec!["ok"]);
    let log = agent.log_text();
    assert!(log.contains("exceeds the limit of 65536"), "{log}");
    assert!(log.contains("Fetch v4 is not served here"), "{log}");
    assert!(agent.stop(), "the agent stops cleanly");
}

#[test]
fn example_agent_file_ships_logs_syslog_and_application_records() {
    let b = TestBroker::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(
        logs.join("app.log"),
        "first line\nError: boom\n  at frame one\nlast line\n",
    )
    .unwrap();
    let syslog = format!("127.0.0.1:{}", free_port());
    let endpoint = format!("127.0.0.1:{}", free_port());
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agent.yaml");
    let (log_dir, state) = (
        logs.display().to_string(),
        dir.path().join("state").display().to_string(),
    );
    let brokers = b.bootstrap();
    let run = TestRun::command(
        &["agent".as_ref(), "--config".as_ref(), example.as_os_str()],
        &[
            ("LOG_DIR", log_dir.as_str()),
            ("STATE_DIR", state.as_str()),
            ("SYSLOG_ADDRESS", syslog.as_str()),
            ("ENDPOINT_ADDRESS", endpoint.as_str()),
            ("TRIB_BROKERS", brokers.as_str()),
        ],
    );
    run.wait_log("kafka endpoint listening", Duration::from_secs(20));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(
        b"<13>1 2026-11-22T10:00:00Z web1 app - - - hello syslog",
        &syslog,
    )
    .unwrap();
    let mut s = TcpStream::connect(&endpoint).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(
        send(&mut s, &produce("app-events", -1, -1, &["order 1"])),
        vec![0]
    );

    let got = read_until(&b, "host-logs", Duration::from_secs(30), |v| v.len() >= 4);
    assert!(
        got.contains(&"Error: boom\n  at frame one".to_string()),
        "{got:?}"
    );
    assert!(got.iter().any(|l| l.contains("hello syslog")), "{got:?}");
    let apps = read_until(&b, "app-events", Duration::from_secs(30), |v| !v.is_empty());
    assert_eq!(apps, vec!["order 1"]);
    read_until(&b, "host-metrics", Duration::from_secs(30), |v| {
        !v.is_empty()
    });
}

#[test]
fn a_retry_while_the_original_is_undelivered_is_refused_then_recognised() {
    let mut b = TestBroker::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, endpoint) = start_agent(&b, dir.path());
    let connect = || {
        let s = TcpStream::connect(endpoint).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s
    };
    // The topic exists before the broker goes away.
    let mut s = connect();
    assert_eq!(
        send(&mut s, &produce("inflight", 77, 0, &["warm-up"])),
        vec![0]
    );
    b.stop();
    // The original: written to the socket, its answer waits for delivery.
    let batch = produce("inflight", 77, 1, &["only once"]);
    let mut original = connect();
    std::io::Write::write_all(&mut original, &batch).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // The client gives up on it and sends it again on a new connection: not delivered yet,
    // so it is refused with a retriable error instead of being confirmed or forwarded twice.
    let mut retry = connect();
    assert_eq!(send(&mut retry, &batch), vec![7]);
    b.restart();
    // Delivered once the broker is back: the original is answered, and a later retry is
    // recognised as done.
    let mut resp = trib_e2e::wire::read_frame(&mut original).unwrap();
    ResponseHeader::decode(&mut resp, ApiKey::Produce.response_header_version(9)).unwrap();
    let r = ProduceResponse::decode(&mut resp, 9).unwrap();
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    assert_eq!(send(&mut retry, &batch), vec![0]);
    std::thread::sleep(Duration::from_millis(500));
    let got = read_until(&b, "inflight", Duration::from_secs(30), |v| v.len() >= 2);
    assert_eq!(got, vec!["warm-up", "only once"]);
    assert!(agent.stop());
}
