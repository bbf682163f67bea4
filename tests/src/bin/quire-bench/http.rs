//! A bare HTTP/1.0 GET, enough to read a server's `/metrics` or
//! `/readyz` without pulling an HTTP client into the load generator.

use anyhow::{bail, Context, Result};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(5);

/// GETs `path` from `base` (`http://HOST:PORT`); the body of a 200.
pub(crate) async fn get(base: &str, path: &str) -> Result<String> {
    let host = base
        .strip_prefix("http://")
        .context("only http:// is supported")?
        .trim_end_matches('/');
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(host).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("malformed HTTP response")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
        }
        Ok(body.to_owned())
    })
    .await
    .context("HTTP request timed out")?
}
