//! The client side of the wire: one connection to a Kafka-protocol broker, a request, then its
//! response, with sizes bounded and a deadline. Used by the native producer (sinks) and the
//! mirror, which keep one request in flight per connection.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted.
const MAX_RESPONSE: usize = 64 << 20;
/// Longest a request may take, answer included: longer than the 30 s the broker is given
/// (`timeout_ms`), so a slow answer is not cut off just as it comes.
pub const DEADLINE: Duration = Duration::from_secs(40);

/// Why a call failed; the connection is dropped and the request retried on a new one.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: no answer within {DEADLINE:?}")]
    Timeout { addr: String },
    #[error("{addr}: bad response: {reason}")]
    Protocol { addr: String, reason: String },
}

pub struct Conn {
    pub addr: String,
    client_id: &'static str,
    stream: TcpStream,
    out: BytesMut,
    correlation: i32,
}

impl Conn {
    pub async fn connect(addr: &str, client_id: &'static str) -> Result<Self, CallError> {
        let io = |source| CallError::Io {
            addr: addr.to_string(),
            source,
        };
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| CallError::Timeout {
                addr: addr.to_string(),
            })?
            .map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        Ok(Self {
            addr: addr.to_string(),
            client_id,
            stream,
            out: BytesMut::with_capacity(1 << 20),
            correlation: 0,
        })
    }

    /// Sends `req` as `api` v`version` and decodes the answer.
    pub async fn call<Q: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Q,
    ) -> Result<R, CallError> {
        let addr = self.addr.clone();
        match tokio::time::timeout(DEADLINE, self.exchange(api, version, req)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout { addr }),
        }
    }

    async fn exchange<Q: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Q,
    ) -> Result<R, CallError> {
        let protocol = |reason: String| CallError::Protocol {
            addr: self.addr.clone(),
            reason,
        };
        self.correlation = self.correlation.wrapping_add(1);
        self.out.clear();
        crate::wire::encode_request(
            &mut self.out,
            api,
            version,
            self.correlation,
            self.client_id,
            req,
        )
        .map_err(protocol)?;
        let io = |source| CallError::Io {
            addr: self.addr.clone(),
            source,
        };
        self.stream.write_all(&self.out).await.map_err(io)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.map_err(io)?;
        let size = i32::from_be_bytes(len);
        if size < 0 || size as usize > MAX_RESPONSE {
            return Err(protocol(format!("response of {size} bytes")));
        }
        let mut body = vec![0u8; size as usize];
        self.stream.read_exact(&mut body).await.map_err(io)?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|e| protocol(e.to_string()))?;
        if header.correlation_id != self.correlation {
            return Err(protocol(format!(
                "correlation id {} answers request {}",
                header.correlation_id, self.correlation
            )));
        }
        R::decode(&mut body, version).map_err(|e| protocol(e.to_string()))
    }
}
