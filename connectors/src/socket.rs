//! Network line sources: `syslog` (UDP datagrams, or TCP with newline or octet-counted framing)
//! and `socket` (newline-delimited text or NDJSON on TCP or a Unix socket). These inputs have no
//! acknowledgement, so events are handed on as they arrive; bounded buffers still apply (a full
//! pipeline stops reading, TCP then pushes back on the sender).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::io::BufReader;
use trib_pipelines::config::sources::{HttpDecoding, SocketSource, SyslogMode, SyslogSource};
use trib_pipelines::event::Event;
use trib_pipelines::runtime::{Source, SourceContext};
use trib_pipelines::transforms::parse_syslog;

use crate::line_reader::{read_lines, Overlong};

pub struct Syslog {
    cfg: SyslogSource,
}

impl Syslog {
    pub fn new(c: &SyslogSource) -> anyhow::Result<Self> {
        c.address
            .parse::<SocketAddr>()
            .map_err(|e| anyhow::anyhow!("address: `{}` is not host:port: {e}", c.address))?;
        anyhow::ensure!(
            c.max_message_bytes > 0,
            "max_message_bytes: must be at least 1"
        );
        Ok(Self { cfg: c.clone() })
    }
}

/// A syslog message as an event: parsed fields (with `host`), or the raw text if it does not
/// parse.
fn syslog_event(source: &Arc<str>, msg: &[u8], peer: &str, truncated: bool) -> Event {
    let text = String::from_utf8_lossy(msg);
    // Octet-counting framing (RFC 6587): "<len> <message>".
    let text = match text.split_once(' ') {
        Some((n, rest))
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && rest.starts_with('<') =>
        {
            rest
        }
        _ => &text,
    };
    let mut e = match parse_syslog(text.trim_end()) {
        Ok(mut f) => {
            f.insert("host".into(), Value::String(peer.to_string()));
            Event::from_fields(f)
        }
        Err(_) => Event::raw(text.as_bytes().to_vec()),
    };
    e.meta.source = source.clone();
    if truncated {
        e.headers
            .push(("truncated".into(), Bytes::from_static(b"true")));
    }
    e
}

impl Source for Syslog {
    fn run(self: Box<Self>, mut cx: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let addr = &self.cfg.address;
            match self.cfg.mode {
                SyslogMode::Udp => {
                    let sock = tokio::net::UdpSocket::bind(addr)
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot listen on udp {addr}: {e}"))?;
                    tracing::info!(source = %cx.name, address = %addr, "syslog source listening (udp)");
                    let mut buf = vec![0u8; self.cfg.max_message_bytes + 1];
                    loop {
                        let (n, peer) = tokio::select! {
                            r = sock.recv_from(&mut buf) => r?,
                            _ = cx.stopped() => return Ok(()),
                        };
                        let mut batch = Vec::new();
                        let take = |batch: &mut Vec<Event>,
                                    n: usize,
                                    peer: SocketAddr,
                                    buf: &[u8]| {
                            cx.metrics.bytes_in.inc_by(n as u64);
                            if n > self.cfg.max_message_bytes {
                                tracing::warn!(source = %cx.name, %peer, bytes = n, "syslog datagram larger than max_message_bytes; dropped");
                            } else {
                                batch.push(syslog_event(
                                    &cx.name,
                                    &buf[..n],
                                    &peer.ip().to_string(),
                                    false,
                                ));
                            }
                        };
                        take(&mut batch, n, peer, &buf);
                        // Whatever else has arrived goes in the same batch.
                        while batch.len() < 1000 {
                            match sock.try_recv_from(&mut buf) {
                                Ok((n, peer)) => take(&mut batch, n, peer, &buf),
                                Err(_) => break,
                            }
                        }
                        cx.metrics.events_in.inc_by(batch.len() as u64);
                        if !cx.out.send(batch).await {
                            return Ok(());
                        }
                    }
                }
                SyslogMode::Tcp => {
                    let l = tokio::net::TcpListener::bind(addr)
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot listen on tcp {addr}: {e}"))?;
                    tracing::info!(source = %cx.name, address = %addr, "syslog source listening (tcp)");
                    let max = self.cfg.max_message_bytes;
                    accept_tcp(l, cx, max, move |name, peer| {
                        Box::new(move |line: Vec<u8>, cut: bool| {
                            Some(syslog_event(&name, &line, &peer, cut))
                        })
                    })
                    .await
                }
            }
        })
    }
}

type MakeEvent = Box<dyn FnMut(Vec<u8>, bool) -> Option<Event> + Send>;

/// Accepts TCP connections until stop; each is read line by line into events.
async fn accept_tcp(
    l: tokio::net::TcpListener,
    mut cx: SourceContext,
    max_line: usize,
    maker: impl Fn(Arc<str>, String) -> MakeEvent,
) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = tokio::select! {
            r = l.accept() => r?,
            _ = cx.stopped() => return Ok(()),
        };
        let make = maker(cx.name.clone(), peer.ip().to_string());
        spawn_reader(BufReader::new(stream), &cx, max_line, make);
    }
}

fn spawn_reader<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    input: BufReader<R>,
    cx: &SourceContext,
    max_line: usize,
    make: MakeEvent,
) {
    let (out, metrics, shutdown, name) = (
        cx.out.clone(),
        cx.metrics.clone(),
        cx.shutdown.clone(),
        cx.name.clone(),
    );
    tokio::spawn(async move {
        if let Err(e) = read_lines(
            input,
            &name,
            max_line,
            Overlong::Cut,
            shutdown,
            &out,
            &metrics,
            make,
            |_| {},
        )
        .await
        {
            tracing::warn!(source = %name, error = %e, "connection ended with an error");
        }
    });
}

pub struct Socket {
    cfg: SocketSource,
}

impl Socket {
    pub fn new(c: &SocketSource) -> anyhow::Result<Self> {
        match (&c.address, &c.path) {
            (Some(a), None) => {
                a.parse::<SocketAddr>()
                    .map_err(|e| anyhow::anyhow!("address: `{a}` is not host:port: {e}"))?;
            }
            (None, Some(_)) => {}
            _ => anyhow::bail!("give exactly one of `address` (TCP) or `path` (Unix socket)"),
        }
        anyhow::ensure!(
            c.decoding != HttpDecoding::Json,
            "decoding: use `text` or `ndjson` (one event per line)"
        );
        Ok(Self { cfg: c.clone() })
    }
}

fn socket_maker(decoding: HttpDecoding) -> impl Fn(Arc<str>, String) -> MakeEvent {
    move |name: Arc<str>, _peer: String| {
        Box::new(move |line: Vec<u8>, cut: bool| {
            let mut e = match decoding {
                HttpDecoding::Ndjson if !cut => match serde_json::from_slice::<Value>(&line) {
                    Ok(Value::Object(m)) => Event::from_fields(m),
                    _ => {
                        tracing::warn!(source = %name, "a line is not a JSON object; kept as raw text");
                        Event::raw(line)
                    }
                },
                _ => Event::raw(line),
            };
            e.meta.source = name.clone();
            if cut {
                e.headers
                    .push(("truncated".into(), Bytes::from_static(b"true")));
            }
            Some(e)
        })
    }
}

impl Source for Socket {
    fn run(self: Box<Self>, mut cx: SourceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let maker = socket_maker(self.cfg.decoding);
            let max = self.cfg.max_line_bytes;
            if let Some(addr) = &self.cfg.address {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on tcp {addr}: {e}"))?;
                tracing::info!(source = %cx.name, address = %addr, "socket source listening (tcp)");
                return accept_tcp(l, cx, max, maker).await;
            }
            let path = self.cfg.path.clone().unwrap_or_default();
            // A socket file left by a previous run would make bind fail.
            if std::fs::symlink_metadata(&path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                let _ = std::fs::remove_file(&path);
            }
            let l = tokio::net::UnixListener::bind(&path)
                .map_err(|e| anyhow::anyhow!("cannot listen on unix socket {path}: {e}"))?;
            tracing::info!(source = %cx.name, path = %path, "socket source listening (unix)");
            loop {
                let (stream, _) = tokio::select! {
                    r = l.accept() => r?,
                    _ = cx.stopped() => break,
                };
                let make = maker(cx.name.clone(), "unix".into());
                spawn_reader(BufReader::new(stream), &cx, max, make);
            }
            let _ = std::fs::remove_file(&path);
            Ok(())
        })
    }
}
