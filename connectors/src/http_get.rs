//! A minimal HTTP/1.0 client for plain `http://` URLs, with bounded time and size: used to
//! scrape Prometheus endpoints, by `trib pipeline top` / `trib agent status`, and by `trib
//! query` / `trib index` against the broker's index endpoint.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response read.
const MAX_BODY: u64 = 32 << 20;

/// Splits `http://host:port/path` into (host:port, /path).
pub fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("`{url}`: only http:// URLs"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    anyhow::ensure!(!host.is_empty(), "`{url}` has no host");
    Ok((host.to_string(), format!("/{path}")))
}

/// The body of a 200 answer; any other status, a timeout or a connection error is an error.
pub async fn http_get(url: &str, timeout: Duration) -> anyhow::Result<String> {
    let (status, head, body) = http_call("GET", url, timeout).await?;
    anyhow::ensure!(status == 200, "{url} answered {head}");
    Ok(body)
}

/// Sends `method` (without a body) and returns the status code, the status line and the body.
pub async fn http_call(
    method: &str,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String, String)> {
    let (host, path) = split_url(url)?;
    tokio::time::timeout(timeout, async {
        let mut s = tokio::net::TcpStream::connect(&host).await?;
        s.write_all(
            format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        (&mut s).take(MAX_BODY).read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("{url}: not an HTTP response"))?;
        let line = head.lines().next().unwrap_or("").to_string();
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, line, body.to_string()))
    })
    .await
    .map_err(|_| anyhow::anyhow!("{url}: timed out after {timeout:?}"))?
}

/// Percent-encodes a query-string value (everything but unreserved characters).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
