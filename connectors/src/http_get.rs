//! A minimal HTTP/1.0 GET for plain `http://` URLs, with bounded time and size: used to scrape
//! Prometheus endpoints, and by `trib pipeline top` / `trib agent status`.

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
    let (host, path) = split_url(url)?;
    tokio::time::timeout(timeout, async {
        let mut s = tokio::net::TcpStream::connect(&host).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        (&mut s).take(MAX_BODY).read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("{url}: not an HTTP response"))?;
        let status = head.split_whitespace().nth(1).unwrap_or("");
        anyhow::ensure!(
            status == "200",
            "{url} answered {}",
            head.lines().next().unwrap_or("")
        );
        Ok(body.to_string())
    })
    .await
    .map_err(|_| anyhow::anyhow!("{url}: timed out after {timeout:?}"))?
}
