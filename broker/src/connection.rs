//! One client connection: reads size-prefixed frames (refusing oversize ones before
//! allocating), decodes the header, dispatches, and writes responses in request order while
//! later requests are already being read (pipelining). A malformed or unsupported request
//! closes only this connection, with a log line.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::handlers::{self, api_versions, Reply, RequestContext};

/// A response owed to the client, in request order.
struct Pending {
    correlation_id: i32,
    header_version: i16,
    body_version: i16,
    reply: Reply,
}

/// Why a connection was closed by the broker.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("frame of {size} bytes exceeds max_request_bytes {max}")]
    FrameTooLarge { size: i64, max: usize },
    #[error("frame of {0} bytes is too short for a request header")]
    FrameTooShort(usize),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("malformed request header: {0}")]
    Header(String),
    #[error(transparent)]
    Dispatch(#[from] handlers::DispatchError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves one connection until the client closes it or sends something unservable.
pub async fn serve(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Pending>(broker.config.max_inflight_per_connection);
    let writer = tokio::spawn(write_loop(wr, rx));
    let ctx = RequestContext {
        client_id: String::new(),
        client_host: format!("/{}", peer.ip()),
    };
    let result = read_loop(&broker, ctx, &mut rd, &tx).await;
    drop(tx);
    match result {
        Ok(()) => {}
        Err(ConnectionError::Io(e)) => tracing::debug!(%peer, error = %e, "connection closed"),
        Err(e) => {
            broker.metrics.protocol_error();
            tracing::warn!(%peer, error = %e, "closing connection");
        }
    }
    // Answer what was already accepted before closing (responses stay in order).
    let _ = writer.await;
}

async fn read_loop(
    broker: &Arc<Broker>,
    mut ctx: RequestContext,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    tx: &mpsc::Sender<Pending>,
) -> Result<(), ConnectionError> {
    let max = broker.config.max_request_bytes;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while buf.len() < 4 {
            if rd.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if size < 0 || size as usize > max {
            return Err(ConnectionError::FrameTooLarge {
                size: i64::from(size),
                max,
            });
        }
        let size = size as usize;
        if buf.len() < 4 + size {
            buf.reserve(4 + size - buf.len());
        }
        while buf.len() < 4 + size {
            if rd.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        buf.advance(4);
        let frame = buf.split_to(size).freeze();
        if let Some(p) = handle_frame(broker, &mut ctx, frame)? {
            if tx.send(p).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Decodes one request frame and dispatches it.
fn handle_frame(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    mut frame: Bytes,
) -> Result<Option<Pending>, ConnectionError> {
    if frame.len() < 8 {
        return Err(ConnectionError::FrameTooShort(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|_| ConnectionError::UnknownApiKey(key))?;
    if api == ApiKey::ApiVersions {
        if let Some((_, max)) = api_versions::supported_range(api) {
            if version > max {
                // Unknown ApiVersions version: error 35 with a v0 body and v0 header.
                return Ok(Some(Pending {
                    correlation_id,
                    header_version: 0,
                    body_version: 0,
                    reply: Reply::Now(ResponseKind::ApiVersions(api_versions::unsupported())),
                }));
            }
        }
    }
    let header_version = api.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| ConnectionError::Header(e.to_string()))?;
    if let Some(id) = header.client_id {
        if *id != *ctx.client_id {
            ctx.client_id = id.to_string();
        }
    }
    broker.metrics.request(api_name(api));
    let reply = handlers::dispatch(broker, ctx, api, version, frame)?;
    if matches!(reply, Reply::None) {
        return Ok(None);
    }
    Ok(Some(Pending {
        correlation_id,
        header_version: api.response_header_version(version),
        body_version: version,
        reply,
    }))
}

fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "produce",
        ApiKey::Fetch => "fetch",
        ApiKey::ListOffsets => "list_offsets",
        ApiKey::Metadata => "metadata",
        ApiKey::ApiVersions => "api_versions",
        _ => "admin",
    }
}

async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Pending>) {
    let mut out = BytesMut::with_capacity(64 * 1024);
    while let Some(mut p) = rx.recv().await {
        let body = match std::mem::replace(&mut p.reply, Reply::None) {
            Reply::Now(r) => r,
            Reply::Later(f) => f.await,
            Reply::None => continue,
        };
        if let Err(e) = encode(&mut out, &p, &body) {
            tracing::error!(error = %e, "could not encode a response; closing connection");
            return;
        }
        // Coalesce responses that are ready back to back into one write.
        if rx.is_empty() || out.len() >= 1 << 20 {
            if wr.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
    if !out.is_empty() {
        let _ = wr.write_all(&out).await;
    }
}

fn encode(out: &mut BytesMut, p: &Pending, body: &ResponseKind) -> Result<(), String> {
    let start = out.len();
    out.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = p.correlation_id;
    header
        .encode(out, p.header_version)
        .map_err(|e| e.to_string())?;
    body.encode(out, p.body_version)
        .map_err(|e| e.to_string())?;
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}
