//! One client connection: reads size-prefixed frames (refusing oversize ones before
//! allocating), decodes the header, dispatches, and writes responses in request order while
//! later requests are already being read (pipelining). A malformed or unsupported request
//! closes only this connection, with a log line.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use std::future::Future;
use std::pin::Pin;

use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::broker::Broker;
use crate::handlers::{self, api_versions, Reply, RequestContext};
use crate::wire;

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
    #[error("max_request_bytes: {0}")]
    Frame(#[from] wire::FrameError),
    #[error(transparent)]
    Dispatch(#[from] handlers::DispatchError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves one connection until the client closes it or sends something unservable.
///
/// One task per connection: it reads frames while earlier replies are pending (up to
/// `max_inflight_per_connection`) and writes each response as soon as it and every response
/// before it are ready, so ping-pong clients cost no cross-task wakeups.
pub async fn serve(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut ctx = RequestContext {
        client_id: String::new(),
        client_host: format!("/{}", peer.ip()),
    };
    let result = run(&broker, &mut ctx, &mut rd, &mut wr).await;
    match result {
        Ok(()) => {}
        Err(ConnectionError::Io(e)) => tracing::debug!(%peer, error = %e, "connection closed"),
        Err(e) => {
            broker.metrics.protocol_error();
            tracing::warn!(%peer, error = %e, "closing connection");
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = (Pending, ResponseKind)> + Send>>;

async fn run(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
) -> Result<(), ConnectionError> {
    let max = broker.config.max_request_bytes;
    let max_inflight = broker.config.max_inflight_per_connection;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut inflight: FuturesOrdered<Answer> = FuturesOrdered::new();
    let mut closing: Option<ConnectionError> = None;
    let mut eof = false;
    loop {
        // Take every whole frame already buffered.
        while closing.is_none() && inflight.len() < max_inflight {
            match wire::next_frame(&mut buf, max) {
                Ok(Some(frame)) => match handle_frame(broker, ctx, frame) {
                    Ok(Some(p)) => inflight.push_back(answer(p)),
                    Ok(None) => {}
                    Err(e) => closing = Some(e),
                },
                Ok(None) => break,
                Err(e) => closing = Some(e.into()),
            }
        }
        if inflight.is_empty() {
            if let Some(e) = closing {
                return Err(e);
            }
            if eof {
                return Ok(());
            }
        }
        let can_read = closing.is_none() && !eof && inflight.len() < max_inflight;
        tokio::select! {
            biased;
            Some((p, body)) = inflight.next(), if !inflight.is_empty() => {
                encode(&mut out, &p, &body).map_err(|e| std::io::Error::other(format!("encoding a response: {e}")))?;
                // Coalesce responses that are ready back to back into one write.
                while out.len() < 1 << 20 {
                    match inflight.next().now_or_never() {
                        Some(Some((p, body))) => encode(&mut out, &p, &body)
                            .map_err(|e| std::io::Error::other(format!("encoding a response: {e}")))?,
                        _ => break,
                    }
                }
                wr.write_all(&out).await?;
                out.clear();
            }
            n = rd.read_buf(&mut buf), if can_read => {
                if n? == 0 {
                    eof = true;
                }
            }
        }
    }
}

fn answer(p: Pending) -> Answer {
    Box::pin(async move {
        let mut p = p;
        let body = match std::mem::replace(&mut p.reply, Reply::None) {
            Reply::Now(r) => r,
            Reply::Later(f) => f.await,
            // Never queued: handle_frame drops replies that have no response.
            Reply::None => ResponseKind::ApiVersions(Default::default()),
        };
        (p, body)
    })
}

/// Decodes one request frame and dispatches it.
fn handle_frame(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext,
    mut frame: Bytes,
) -> Result<Option<Pending>, ConnectionError> {
    let start = wire::request_start(&frame)?;
    let (api, version, correlation_id) = (start.api, start.version, start.correlation_id);
    if api == ApiKey::ApiVersions {
        if let Some((_, max)) = api_versions::BROKER.supported_range(api) {
            if version > max {
                // Unknown ApiVersions version: error 35 with a v0 body and v0 header.
                return Ok(Some(Pending {
                    correlation_id,
                    header_version: 0,
                    body_version: 0,
                    reply: Reply::Now(ResponseKind::ApiVersions(
                        api_versions::BROKER.unsupported(),
                    )),
                }));
            }
        }
    }
    let header = wire::decode_header(&mut frame, start)?;
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
        ApiKey::FindCoordinator
        | ApiKey::JoinGroup
        | ApiKey::SyncGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::ConsumerGroupHeartbeat => "groups",
        _ => "admin",
    }
}

fn encode(out: &mut BytesMut, p: &Pending, body: &ResponseKind) -> Result<(), String> {
    wire::encode_response(
        out,
        p.correlation_id,
        p.header_version,
        p.body_version,
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Encodable;
    use std::time::Duration;

    fn encode_default(api: ApiKey, version: i16) -> Option<Vec<u8>> {
        fn enc<T: Encodable + Default>(v: i16) -> Option<Vec<u8>> {
            let mut b = BytesMut::new();
            T::default().encode(&mut b, v).ok()?;
            Some(b.to_vec())
        }
        match api {
            ApiKey::Produce => enc::<ProduceRequest>(version),
            ApiKey::Fetch => enc::<FetchRequest>(version),
            ApiKey::ListOffsets => enc::<ListOffsetsRequest>(version),
            ApiKey::Metadata => enc::<MetadataRequest>(version),
            ApiKey::ApiVersions => enc::<ApiVersionsRequest>(version),
            ApiKey::CreateTopics => enc::<CreateTopicsRequest>(version),
            ApiKey::DeleteTopics => enc::<DeleteTopicsRequest>(version),
            ApiKey::DeleteRecords => enc::<DeleteRecordsRequest>(version),
            ApiKey::InitProducerId => enc::<InitProducerIdRequest>(version),
            ApiKey::OffsetForLeaderEpoch => enc::<OffsetForLeaderEpochRequest>(version),
            ApiKey::DescribeConfigs => enc::<DescribeConfigsRequest>(version),
            ApiKey::AlterConfigs => enc::<AlterConfigsRequest>(version),
            ApiKey::CreatePartitions => enc::<CreatePartitionsRequest>(version),
            ApiKey::IncrementalAlterConfigs => enc::<IncrementalAlterConfigsRequest>(version),
            ApiKey::DescribeCluster => enc::<DescribeClusterRequest>(version),
            ApiKey::DescribeTopicPartitions => enc::<DescribeTopicPartitionsRequest>(version),
            ApiKey::FindCoordinator => enc::<FindCoordinatorRequest>(version),
            ApiKey::JoinGroup => enc::<JoinGroupRequest>(version),
            ApiKey::SyncGroup => enc::<SyncGroupRequest>(version),
            ApiKey::Heartbeat => enc::<HeartbeatRequest>(version),
            ApiKey::LeaveGroup => enc::<LeaveGroupRequest>(version),
            ApiKey::OffsetCommit => enc::<OffsetCommitRequest>(version),
            ApiKey::OffsetFetch => enc::<OffsetFetchRequest>(version),
            ApiKey::ListGroups => enc::<ListGroupsRequest>(version),
            ApiKey::DescribeGroups => enc::<DescribeGroupsRequest>(version),
            ApiKey::DeleteGroups => enc::<DeleteGroupsRequest>(version),
            ApiKey::OffsetDelete => enc::<OffsetDeleteRequest>(version),
            ApiKey::ConsumerGroupHeartbeat => enc::<ConsumerGroupHeartbeatRequest>(version),
            ApiKey::ConsumerGroupDescribe => enc::<ConsumerGroupDescribeRequest>(version),
            ApiKey::AddPartitionsToTxn => enc::<AddPartitionsToTxnRequest>(version),
            ApiKey::AddOffsetsToTxn => enc::<AddOffsetsToTxnRequest>(version),
            ApiKey::EndTxn => enc::<EndTxnRequest>(version),
            ApiKey::TxnOffsetCommit => enc::<TxnOffsetCommitRequest>(version),
            ApiKey::DescribeProducers => enc::<DescribeProducersRequest>(version),
            ApiKey::DescribeTransactions => enc::<DescribeTransactionsRequest>(version),
            ApiKey::ListTransactions => enc::<ListTransactionsRequest>(version),
            _ => None,
        }
    }

    fn frame(api: ApiKey, version: i16, body: &[u8]) -> Bytes {
        let mut h = RequestHeader::default();
        h.request_api_key = api as i16;
        h.request_api_version = version;
        h.correlation_id = 5;
        h.client_id = Some(kafka_protocol::protocol::StrBytes::from_static_str("fuzz"));
        let mut b = BytesMut::new();
        let _ = h.encode(&mut b, api.request_header_version(version));
        b.extend_from_slice(body);
        b.freeze()
    }

    /// Runs one frame through the connection path and encodes whatever answer it produces.
    async fn exercise(broker: &Arc<Broker>, f: Bytes) -> Result<(), String> {
        let mut ctx = RequestContext::default();
        let Ok(Some(p)) = handle_frame(broker, &mut ctx, f) else {
            return Ok(());
        };
        let body = match p.reply {
            Reply::Now(r) => r,
            Reply::Later(fut) => match tokio::time::timeout(Duration::from_secs(2), fut).await {
                Ok(r) => r,
                Err(_) => return Ok(()),
            },
            Reply::None => return Ok(()),
        };
        let mut out = BytesMut::new();
        let pending = Pending {
            correlation_id: p.correlation_id,
            header_version: p.header_version,
            body_version: p.body_version,
            reply: Reply::None,
        };
        encode(&mut out, &pending, &body)
    }

    fn supported() -> Vec<(ApiKey, i16)> {
        ApiKey::iter()
            .filter_map(|k| {
                api_versions::BROKER
                    .supported_range(k)
                    .map(|(lo, hi)| (k, lo, hi))
            })
            .flat_map(|(k, lo, hi)| (lo..=hi).map(move |v| (k, v)))
            .collect()
    }

    #[tokio::test]
    async fn every_supported_api_version_answers_and_encodes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let (broker, _) = Broker::open(cfg).unwrap();
        let all = supported();
        assert!(all.len() > 100);
        for (api, v) in all {
            let body = encode_default(api, v)
                .unwrap_or_else(|| panic!("{api:?} v{v} has no request encoder"));
            exercise(&broker, frame(api, v, &body))
                .await
                .unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
        }
    }

    #[tokio::test]
    async fn mutated_frames_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let (broker, _) = Broker::open(cfg).unwrap();
        let seeds: Vec<Bytes> = supported()
            .into_iter()
            .filter_map(|(k, v)| encode_default(k, v).map(|b| frame(k, v, &b)))
            .collect();
        let mut x = 0x2545f4914f6cdd1du64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut f = seeds[(rnd() % seeds.len() as u64) as usize].to_vec();
            for _ in 0..(1 + rnd() % 4) {
                match rnd() % 4 {
                    0 if !f.is_empty() => {
                        let i = (rnd() % f.len() as u64) as usize;
                        f[i] = rnd() as u8;
                    }
                    1 => f.extend((0..rnd() % 16).map(|_| rnd() as u8)),
                    2 if f.len() > 8 => {
                        let n = 8 + (rnd() % (f.len() as u64 - 8)) as usize;
                        f.truncate(n);
                    }
                    _ => {
                        let i = 8 + (rnd() % 24) as usize;
                        if i + 4 <= f.len() {
                            f[i..i + 4].copy_from_slice(&(rnd() as i32).to_be_bytes());
                        }
                    }
                }
            }
            // A panic fails the test; errors are fine (the connection would be closed).
            let _ = exercise(&broker, Bytes::from(f)).await;
        }
    }
}
