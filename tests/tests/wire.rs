//! Raw wire behaviour: garbage and oversize frames close only that connection, an unknown
//! ApiVersions version gets error 35 as a v0 reply, pipelined requests are answered in order,
//! and the broker keeps serving real clients throughout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use trib_e2e::wire::{closed, frame, read_frame};
use trib_e2e::TestBroker;

fn connect(b: &TestBroker) -> TcpStream {
    let s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn api_versions_ok(b: &TestBroker) {
    let mut s = connect(b);
    s.write_all(&frame(
        ApiKey::ApiVersions,
        3,
        7,
        &ApiVersionsRequest::default(),
    ))
    .unwrap();
    let mut f = read_frame(&mut s).unwrap();
    let h = ResponseHeader::decode(&mut f, 0).unwrap();
    assert_eq!(h.correlation_id, 7);
    let r = ApiVersionsResponse::decode(&mut f, 3).unwrap();
    assert_eq!(r.error_code, 0);
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16 && k.min_version == 0));
}

#[test]
fn unknown_api_versions_version_gets_v0_error_35() {
    let b = TestBroker::start(&[]);
    let mut s = connect(&b);
    // A version from the future: the body is unknown, only the header is v2.
    let mut h = RequestHeader::default();
    h.request_api_key = ApiKey::ApiVersions as i16;
    h.request_api_version = 99;
    h.correlation_id = 42;
    let mut buf = BytesMut::new();
    h.encode(&mut buf, 2).unwrap();
    buf.put_slice(&[0, 0, 0]);
    let mut out = Vec::new();
    out.put_i32(buf.len() as i32);
    out.extend_from_slice(&buf);
    s.write_all(&out).unwrap();
    let mut f = read_frame(&mut s).unwrap();
    assert_eq!(f.get_i32(), 42, "v0 response header: correlation id only");
    let r = ApiVersionsResponse::decode(&mut f, 0).unwrap();
    assert_eq!(r.error_code, 35);
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version >= 3));
    assert!(f.is_empty(), "a v0 body has nothing after the api keys");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let b = TestBroker::start(&[]);
    let mut s = connect(&b);
    let mut batch = Vec::new();
    for i in 0..20 {
        if i % 2 == 0 {
            batch.extend(frame(
                ApiKey::ApiVersions,
                3,
                i,
                &ApiVersionsRequest::default(),
            ));
        } else {
            batch.extend(frame(ApiKey::Metadata, 12, i, &MetadataRequest::default()));
        }
    }
    s.write_all(&batch).unwrap();
    for i in 0..20 {
        let mut f = read_frame(&mut s).unwrap();
        let hv = if i % 2 == 0 { 0 } else { 1 };
        let h = ResponseHeader::decode(&mut f, hv).unwrap();
        assert_eq!(h.correlation_id, i, "responses come back in request order");
        if i % 2 == 1 {
            let m = MetadataResponse::decode(&mut f, 12).unwrap();
            assert_eq!(m.brokers.len(), 1);
        }
    }
}

#[test]
fn garbage_and_oversize_frames_close_only_their_connection() {
    let b = TestBroker::start(&["--num-partitions", "1"]);
    let mut healthy = connect(&b);
    let cases: Vec<Vec<u8>> = vec![
        // Length far above max_request_bytes: refused before allocating.
        vec![0x7f, 0xff, 0xff, 0xff, 0, 1, 2, 3],
        // Negative length.
        vec![0xff, 0xff, 0xff, 0xf0],
        // Too short for a header.
        vec![0, 0, 0, 3, 1, 2, 3],
        // Unknown API key 999.
        vec![0, 0, 0, 8, 0x03, 0xe7, 0, 0, 0, 0, 0, 1],
        // Metadata v12 whose topic array claims 2^31-1 entries in a 20-byte body.
        {
            let mut f = frame(ApiKey::Metadata, 4, 1, &MetadataRequest::default());
            let n = f.len();
            f.truncate(n - 5);
            f.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 1]);
            let len = (f.len() - 4) as i32;
            f[..4].copy_from_slice(&len.to_be_bytes());
            f
        },
        // Produce v9 with random bytes for a body.
        {
            let mut f = frame(
                ApiKey::Produce,
                9,
                5,
                &kafka_protocol::messages::ProduceRequest::default(),
            );
            f.extend((0..200u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
            let len = (f.len() - 4) as i32;
            f[..4].copy_from_slice(&len.to_be_bytes());
            f
        },
        // Produce v2: listed (for old librdkafka's compression check) but refused, as Kafka 4.0 does.
        {
            let mut f = frame(
                ApiKey::Produce,
                3,
                8,
                &kafka_protocol::messages::ProduceRequest::default(),
            );
            f[6..8].copy_from_slice(&2i16.to_be_bytes());
            f
        },
        // Fetch v3 (below Kafka 4.0's floor of 4): unsupported version.
        {
            let mut f = frame(
                ApiKey::Fetch,
                4,
                9,
                &kafka_protocol::messages::FetchRequest::default(),
            );
            f[6..8].copy_from_slice(&3i16.to_be_bytes());
            f
        },
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let mut s = connect(&b);
        s.write_all(bytes).unwrap();
        assert!(closed(&mut s), "case {i}: connection must be closed");
    }
    // Fuzz-ish: many random frames with plausible lengths and real API keys.
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let mut s = connect(&b);
        let key = (next() % 70) as i16;
        let ver = (next() % 14) as i16;
        let n = (next() % 300) as usize;
        let mut body = Vec::new();
        body.put_i16(key);
        body.put_i16(ver);
        body.put_i32(1);
        body.put_i16(-1);
        body.extend((0..n).map(|_| next() as u8));
        let mut f = Vec::new();
        f.put_i32(body.len() as i32);
        f.extend(body);
        let _ = s.write_all(&f);
        let mut sink = [0u8; 4096];
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        let _ = s.read(&mut sink);
    }
    // The broker is still up and the earlier connection still works.
    healthy
        .write_all(&frame(
            ApiKey::ApiVersions,
            3,
            1,
            &ApiVersionsRequest::default(),
        ))
        .unwrap();
    let mut f = read_frame(&mut healthy).unwrap();
    assert_eq!(ResponseHeader::decode(&mut f, 0).unwrap().correlation_id, 1);
    api_versions_ok(&b);
    assert!(
        !b.log_text().contains("panicked"),
        "no panic in the broker log"
    );
}
