//! The TCP server: binds the listener, caps concurrent connections, runs retention and the
//! field indexer, and stops cleanly (flushing every partition and writing indexes) when asked.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::broker::Broker;
use crate::connection;
use crate::log::partition::now_ms;

/// Accepts connections on `listener` until `shutdown` resolves, then closes the log cleanly.
pub async fn run(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(broker.config.max_connections));
    // Decided transactions are completed and hanging ones aborted before any client connects.
    broker.txns.recover(&broker).await;
    let b = broker.clone();
    let txn_ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        loop {
            every.tick().await;
            b.txns.tick(&b).await;
        }
    });
    let retention = tokio::spawn(retention_loop(broker.clone()));
    let indexer = tokio::spawn(crate::index::run(
        broker.clone(),
        Duration::from_millis(100),
    ));
    let groups = broker.groups.clone();
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            groups.tick();
        }
    });
    if let Some(addr) = broker.config.http {
        let b = broker.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::http::serve(b, addr).await {
                tracing::error!(%addr, error = %e, "http endpoint failed");
            }
        });
    }
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let b = broker.clone();
        tokio::spawn(async move {
            b.metrics.connection_opened();
            connection::serve(b.clone(), stream, peer).await;
            b.metrics.connection_closed();
            drop(permit);
        });
    }
    retention.abort();
    ticker.abort();
    txn_ticker.abort();
    indexer.abort();
    tracing::info!("shutting down: flushing partitions");
    let b = broker.clone();
    tokio::task::spawn_blocking(move || {
        b.index.checkpoint_all(&b.topics.list());
        b.txns.close()?;
        b.groups.close()?;
        b.topics.close()
    })
    .await
    .map_err(std::io::Error::other)??;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn retention_loop(broker: Arc<Broker>) {
    let every = Duration::from_millis(broker.config.retention_check_interval_ms.max(100));
    loop {
        tokio::time::sleep(every).await;
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            for t in b.topics.list() {
                for p in t.partitions() {
                    match p.enforce_retention(now) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(topic = %t.name, partition = p.index, segments = n, "retention deleted segments"),
                        Err(e) => tracing::warn!(topic = %t.name, partition = p.index, error = %e, "retention failed"),
                    }
                }
            }
        })
        .await;
    }
}
