//! The client side of the wire: one connection to a Kafka-protocol broker, a request, then its
//! response, with sizes bounded and a deadline. Used by the native producer (sinks) and the
//! mirror; one request at a time, or several pipelined (`call_many`).

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
    /// Answers are read into this buffer, without zeroing it first, and split off it; its
    /// memory is reused once every answer split off it is dropped.
    inb: BytesMut,
    correlation: i32,
}

/// Read-buffer capacity a connection keeps between calls; a larger buffer (a big answer) is
/// let go once its answers are.
const INB_KEPT: usize = 16 << 20;

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
            inb: BytesMut::new(),
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
        let mut answers = self
            .call_many(api, version, std::slice::from_ref(req))
            .await?;
        answers.pop().ok_or_else(|| CallError::Protocol {
            addr: self.addr.clone(),
            reason: "no answer".into(),
        })
    }

    /// Sends every request of `reqs` back to back on this connection (pipelined), then decodes
    /// their answers in order. A broker serves one connection's requests in the order they
    /// came, so batches for the same partition in successive requests are appended in order.
    pub async fn call_many<Q: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        reqs: &[Q],
    ) -> Result<Vec<R>, CallError> {
        let addr = self.addr.clone();
        match tokio::time::timeout(DEADLINE, self.exchange(api, version, reqs)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout { addr }),
        }
    }

    async fn exchange<Q: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        reqs: &[Q],
    ) -> Result<Vec<R>, CallError> {
        let addr = self.addr.clone();
        let protocol = |reason: String| CallError::Protocol {
            addr: addr.clone(),
            reason,
        };
        let io = |source| CallError::Io {
            addr: addr.clone(),
            source,
        };
        let first = self.correlation.wrapping_add(1);
        self.out.clear();
        for req in reqs {
            self.correlation = self.correlation.wrapping_add(1);
            crate::wire::encode_request(
                &mut self.out,
                api,
                version,
                self.correlation,
                self.client_id,
                req,
            )
            .map_err(protocol)?;
        }
        if self.inb.capacity() > INB_KEPT {
            self.inb = BytesMut::new();
        }
        let (mut rd, mut wr) = self.stream.split();
        let (out, inb) = (&self.out, &mut self.inb);
        // Written while the answers are read, so a broker that stops reading until it has
        // answered cannot stall a long pipeline.
        let send = async {
            wr.write_all(out).await.map_err(io)?;
            Ok::<(), CallError>(())
        };
        let receive = async {
            let mut answers = Vec::with_capacity(reqs.len());
            for i in 0..reqs.len() {
                let mut len = [0u8; 4];
                rd.read_exact(&mut len).await.map_err(io)?;
                let size = i32::from_be_bytes(len);
                if size < 0 || size as usize > MAX_RESPONSE {
                    return Err(protocol(format!("response of {size} bytes")));
                }
                let size = size as usize;
                inb.clear();
                inb.reserve(size);
                // Exactly this answer: the next one's bytes stay in the socket.
                let mut rest = (&mut rd).take(size as u64);
                while inb.len() < size {
                    if rest.read_buf(inb).await.map_err(io)? == 0 {
                        return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                let mut body: Bytes = inb.split_to(size).freeze();
                let header =
                    ResponseHeader::decode(&mut body, api.response_header_version(version))
                        .map_err(|e| protocol(e.to_string()))?;
                let expected = first.wrapping_add(i as i32);
                if header.correlation_id != expected {
                    return Err(protocol(format!(
                        "correlation id {} answers request {expected}",
                        header.correlation_id
                    )));
                }
                answers.push(R::decode(&mut body, version).map_err(|e| protocol(e.to_string()))?);
            }
            Ok(answers)
        };
        let ((), answers) = futures::try_join!(send, receive)?;
        Ok(answers)
    }
}
