//! Kafka wire framing, shared by the broker and the agent's local produce endpoint:
//! size-prefixed frames (refused when oversize before anything is allocated), the fixed start
//! of a request header, and response encoding.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Why a frame cannot be served; the connection is closed with a log line.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: i64, max: usize },
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("malformed request header: {0}")]
    Header(String),
}

/// Splits one whole frame off `buf`, refusing an oversize or negative length before allocating.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 || size as usize > max {
        return Err(FrameError::TooLarge {
            size: i64::from(size),
            max,
        });
    }
    let size = size as usize;
    if buf.len() < 4 + size {
        // Grow toward the frame a MiB at a time, so memory follows the bytes actually received
        // rather than the length a client claims.
        buf.reserve((4 + size - buf.len()).min(1 << 20));
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

/// The fixed fields every request header starts with.
#[derive(Debug, Clone, Copy)]
pub struct RequestStart {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
}

/// Reads the api key, version and correlation id without decoding the rest of the header.
pub fn request_start(frame: &[u8]) -> Result<RequestStart, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::TooShort(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let api = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApiKey(key))?;
    Ok(RequestStart {
        api,
        version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// Decodes the request header, leaving `frame` at the start of the body.
pub fn decode_header(frame: &mut Bytes, start: RequestStart) -> Result<RequestHeader, FrameError> {
    RequestHeader::decode(frame, start.api.request_header_version(start.version))
        .map_err(|e| FrameError::Header(e.to_string()))
}

/// Appends one size-prefixed response frame to `out`.
pub fn encode_response(
    out: &mut BytesMut,
    correlation_id: i32,
    header_version: i16,
    body_version: i16,
    body: &ResponseKind,
) -> Result<(), String> {
    let start = out.len();
    out.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(out, header_version)
        .map_err(|e| e.to_string())?;
    body.encode(out, body_version).map_err(|e| e.to_string())?;
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Appends one size-prefixed request frame (for clients speaking the protocol by hand:
/// benchmarks and tests).
pub fn encode_request<T: Encodable>(
    out: &mut BytesMut,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    body: &T,
) -> Result<(), String> {
    let start = out.len();
    out.put_i32(0);
    let mut h = RequestHeader::default();
    h.request_api_key = api as i16;
    h.request_api_version = version;
    h.correlation_id = correlation_id;
    h.client_id = Some(kafka_protocol::protocol::StrBytes::from_string(
        client_id.to_string(),
    ));
    h.encode(out, api.request_header_version(version))
        .map_err(|e| e.to_string())?;
    body.encode(out, version).map_err(|e| e.to_string())?;
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A Produce request carrying `records` as one v2 batch for one partition (for clients
/// speaking the protocol by hand: benchmarks and tests).
pub fn single_batch_produce(
    topic: &str,
    partition: i32,
    acks: i16,
    records: &[kafka_protocol::records::Record],
) -> Result<kafka_protocol::messages::ProduceRequest, String> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| e.to_string())?;
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(batch.freeze());
    let mut td = TopicProduceData::default();
    td.name = kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(
        topic.to_string(),
    ));
    td.partition_data = vec![pd];
    let mut req = kafka_protocol::messages::ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 30_000;
    req.topic_data = vec![td];
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_and_negative_frames_are_refused_before_allocating() {
        let mut b = BytesMut::from(&i32::MAX.to_be_bytes()[..]);
        assert!(matches!(
            next_frame(&mut b, 1024),
            Err(FrameError::TooLarge { .. })
        ));
        let mut b = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert!(matches!(
            next_frame(&mut b, 1024),
            Err(FrameError::TooLarge { .. })
        ));
        let mut b = BytesMut::from(&[0, 0, 0, 3, 1, 2][..]);
        assert!(
            next_frame(&mut b, 1024).unwrap().is_none(),
            "partial frame waits"
        );
        b.extend_from_slice(&[3]);
        assert_eq!(&next_frame(&mut b, 1024).unwrap().unwrap()[..], &[1, 2, 3]);
        assert!(matches!(
            request_start(&[0, 1]),
            Err(FrameError::TooShort(2))
        ));
        assert!(matches!(
            request_start(&[0x7f, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::UnknownApiKey(0x7f00))
        ));
    }
}
