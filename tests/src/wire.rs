//! Raw Kafka framing for tests that speak the protocol by hand: a request frame, a response
//! frame, and whether the server closed the connection.

use std::io::{Read, Write as _};
use std::net::TcpStream;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Encodable;

/// A size-prefixed request frame.
pub fn frame<T: Encodable>(api: ApiKey, version: i16, correlation: i32, body: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    trib_broker::wire::encode_request(&mut buf, api, version, correlation, "wire-test", body)
        .expect("encode request");
    buf.to_vec()
}

/// Reads one response frame (without its size prefix).
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(Bytes::from(body))
}

/// Sends one request and reads its response frame.
pub fn round_trip(s: &mut TcpStream, request: &[u8]) -> std::io::Result<Bytes> {
    s.write_all(request)?;
    read_frame(s)
}

/// True when the server closed the connection (EOF or reset) without answering.
pub fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// Sends `req` as `api` v`version` on `s` and decodes the response body.
pub fn call<Req: Encodable, Resp: kafka_protocol::protocol::Decodable>(
    s: &mut TcpStream,
    api: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::Decodable as _;
    let mut f = round_trip(s, &frame(api, version, 1, req)).expect("round trip");
    ResponseHeader::decode(&mut f, api.response_header_version(version)).expect("response header");
    Resp::decode(&mut f, version).expect("response body")
}
