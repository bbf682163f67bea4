//! Helpers shared by the end-to-end tests.

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use quire_client::testing::TestServer;
use quire_client::Client;
use std::future::Future;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

/// Generous guard for anything that should happen "soon".
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Inserts `chunk` at `index` of root text `root`, in one transaction.
pub(crate) fn insert(client: &Client, root: &str, index: u32, chunk: &str) {
    let text = client.doc().get_or_insert_text(root);
    text.insert(&mut client.doc().transact_mut(), index, chunk);
}

/// Appends `chunk` to root text `root`.
pub(crate) fn append(client: &Client, root: &str, chunk: &str) {
    let text = client.doc().get_or_insert_text(root);
    let mut txn = client.doc().transact_mut();
    let end = text.len(&txn);
    text.insert(&mut txn, end, chunk);
}

/// Plain text of root `root` in `doc` (empty if absent).
pub(crate) fn text_of(doc: &Doc, root: &str) -> String {
    let txn = doc.transact();
    txn.get_text(root)
        .map(|t| t.get_string(&txn))
        .unwrap_or_default()
}

/// Waits until `client`'s text `root` equals `expected`.
pub(crate) async fn wait_text(client: &Client, root: &str, expected: &str) -> Result<()> {
    client
        .wait_for(WAIT, |doc| text_of(doc, root) == expected)
        .await
        .with_context(|| {
            format!(
                "text {root:?} never became {expected:?}; it is {:?}",
                client.text(root)
            )
        })
}

/// A document holding whatever `update` (v1) contains.
pub(crate) fn doc_from_update(update: &[u8]) -> Result<Doc> {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(update)?)
        .context("applying update")?;
    Ok(doc)
}

/// A v1 update that inserts `chunk` at the start of text `root`, made by a
/// fresh client id.
pub(crate) fn text_update(root: &str, chunk: &str) -> Vec<u8> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text(root);
    text.insert(&mut doc.transact_mut(), 0, chunk);
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    update
}

pub(crate) fn state_vector(doc: &Doc) -> StateVector {
    doc.transact().state_vector()
}

/// A response's `content-type`, or "" without one.
pub(crate) fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

pub(crate) fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Percent-encodes a document name for a REST path segment (`/` → `%2F`).
pub(crate) fn segment(name: &str) -> String {
    quire_client::endpoint::percent_encode(name)
}

/// Thin REST client for one server.
pub(crate) struct Rest {
    http: reqwest::Client,
    base: String,
    /// Sent as `Authorization: Bearer …` on every request, when set.
    token: Option<String>,
}

impl Rest {
    pub(crate) fn new(server: &TestServer) -> Rest {
        Rest {
            http: reqwest::Client::new(),
            base: server.http_url(""),
            token: None,
        }
    }

    /// The same server, with `token` as the bearer token of every request.
    pub(crate) fn with_token(server: &TestServer, token: &str) -> Rest {
        Rest {
            token: Some(token.to_owned()),
            ..Rest::new(server)
        }
    }

    /// A request to `path`, carrying the token if there is one.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Result<reqwest::Response> {
        Ok(self.request(reqwest::Method::GET, path).send().await?)
    }

    pub(crate) async fn post(&self, path: &str, body: Vec<u8>) -> Result<reqwest::Response> {
        Ok(self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await?)
    }

    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<reqwest::Response> {
        Ok(self
            .request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await?)
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<reqwest::Response> {
        Ok(self.request(reqwest::Method::DELETE, path).send().await?)
    }

    /// The Prometheus text of `/metrics`.
    pub(crate) async fn metrics(&self) -> Result<String> {
        let response = self.get("/metrics").await?;
        ensure!(
            response.status().is_success(),
            "GET /metrics: {}",
            response.status()
        );
        Ok(response.text().await?)
    }

    /// Polls `/metrics` until `name{labels}` satisfies `accept`; returns
    /// the value seen then.
    pub(crate) async fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        mut accept: impl FnMut(f64) -> bool,
    ) -> Result<f64> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = metric(&self.metrics().await?, name, labels);
            if let Some(value) = value.filter(|v| accept(*v)) {
                return Ok(value);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{name}{labels:?} stayed at {value:?} for {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /api/docs/{doc}/snapshot?{query}`, which must succeed.
    pub(crate) async fn snapshot(&self, doc: &str, query: &str) -> Result<Vec<u8>> {
        let path = format!("/api/docs/{}/snapshot?{query}", segment(doc));
        let response = self.get(&path).await?;
        let status = response.status();
        let body = response.bytes().await?.to_vec();
        if status != reqwest::StatusCode::OK {
            bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }

    /// The server's plain text of root `root` of `doc`.
    pub(crate) async fn text(&self, doc: &str, root: &str) -> Result<String> {
        let bytes = self
            .snapshot(doc, &format!("format=text&root={root}"))
            .await?;
        Ok(String::from_utf8(bytes)?)
    }

    /// The server's document, rebuilt from its `format=yjs` snapshot.
    pub(crate) async fn doc(&self, doc: &str) -> Result<Doc> {
        doc_from_update(&self.snapshot(doc, "format=yjs").await?)
    }

    /// Polls the server until its text of `root` equals `expected`.
    pub(crate) async fn wait_text(&self, doc: &str, root: &str, expected: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.text(doc, root).await;
            if matches!(&text, Ok(t) if t == expected) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("server text of {doc}/{root} never became {expected:?}; last: {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Re-runs `probe` every 20 ms until it yields `Some`, for at most [`WAIT`].
pub(crate) async fn eventually<T, F, Fut>(mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("condition not met within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Encodes a state vector for a query string.
pub(crate) fn sv_base64(sv: &StateVector) -> String {
    base64(&sv.encode_v1())
}

/// Decodes a base64 state vector from a JSON field.
pub(crate) fn decode_sv(b64: &str) -> Result<StateVector> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    Ok(StateVector::decode_v1(&bytes)?)
}

/// The sum of every series of metric `name` whose labels include `labels`,
/// in Prometheus text; `None` when no series matches.
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let wanted = labels.iter().all(|(k, v)| {
            series_labels
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        });
        if series_name == name && wanted {
            if let Ok(value) = value.parse::<f64>() {
                *sum.get_or_insert(0.0) += value;
            }
        }
    }
    sum
}

/// A WebSocket opened with `tokio-tungstenite`, for upgrades with headers.
pub(crate) type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How the server answered an upgrade request.
pub(crate) enum Upgrade {
    /// 101: the socket is open.
    Open(Box<WsStream>),
    /// Any other HTTP status, with the body.
    Refused { status: u16, body: String },
}

impl Upgrade {
    /// 101 for an open socket, else the refusal's status.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Upgrade::Open(_) => 101,
            Upgrade::Refused { status, .. } => *status,
        }
    }
}

/// Sends a WebSocket upgrade to `url` with extra request `headers`
/// (`Origin`, `Authorization`, …).
pub(crate) async fn upgrade_with(url: &str, headers: &[(&str, &str)]) -> Result<Upgrade> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)?,
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(Upgrade::Open(Box::new(socket))),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Ok(Upgrade::Refused {
            status: response.status().as_u16(),
            body: response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The status of a plain upgrade to `url`: 101 if it opened (the socket is
/// dropped again), else the HTTP status the server refused it with.
pub(crate) async fn upgrade_status(url: &str) -> Result<u16> {
    Ok(upgrade_with(url, &[]).await?.status())
}

/// A WebSocket client made by hand on a plain TCP stream: after the
/// handshake it does only what the test tells it to, so it can stop
/// reading, never answer pings, or hold its receive window shut.
pub(crate) struct HandClient {
    pub stream: tokio::net::TcpStream,
    /// The HTTP status of the upgrade answer.
    pub status: u16,
    /// The answer's head, status line and headers.
    pub head: String,
}

impl HandClient {
    /// Connects to `addr` and sends an upgrade request for `path` with extra
    /// `headers`; reads the answer's head and nothing after it. With
    /// `recv_buffer`, the socket's receive buffer is set that small first,
    /// so the kernel holds little on the client's behalf.
    pub(crate) async fn upgrade(
        addr: std::net::SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> Result<HandClient> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes)?;
        }
        let mut stream = socket.connect(addr).await?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        // Byte by byte, so no WebSocket frame after the head is consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            ensure!(head.len() < 16 * 1024, "upgrade answer head too long");
            let byte = tokio::time::timeout(WAIT, stream.read_u8())
                .await
                .context("no upgrade answer")??;
            head.push(byte);
        }
        let head = String::from_utf8(head)?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        Ok(HandClient {
            stream,
            status,
            head,
        })
    }

    /// Sends `payload` as one masked binary frame, as a client must.
    pub(crate) async fn send_binary(&mut self, payload: &[u8]) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(&masked_frame(0x2, payload)).await?;
        Ok(())
    }

    /// Reads and discards everything until the server ends the connection
    /// (EOF or reset); returns how many bytes arrived.
    pub(crate) async fn drain_to_end(&mut self, timeout: Duration) -> Result<usize> {
        use tokio::io::AsyncReadExt;
        let mut total = 0;
        let mut buf = vec![0; 64 * 1024];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => {
                    bail!("the connection was still open after {timeout:?} ({total} bytes read)")
                }
                Ok(Ok(0)) => return Ok(total),
                Ok(Ok(n)) => total += n,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(total),
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }
}

/// One final client-to-server frame with `opcode`, masked (RFC 6455 5.3).
pub(crate) fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    frame
}

/// Quire's own files in the data directory; everything else is sled's.
pub(crate) const QUIRE_FILES: [&str; 2] = ["node-id", "commits"];

/// Media damage, not a torn tail: 4 KiB of garbage every 64 KiB inside
/// every regular file of sled's (from 64 KiB on, so its small `conf`
/// survives and sled opens).
pub(crate) fn damage_sled_files(dir: &Path) -> Result<usize> {
    let mut overwritten = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut files = vec![dir.to_path_buf()];
    while let Some(path) = files.pop() {
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            if QUIRE_FILES.iter().any(|f| entry.file_name() == *f) {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                files.push(entry.path());
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let len = entry.metadata()?.len();
            let mut file = std::fs::OpenOptions::new().write(true).open(entry.path())?;
            let mut offset = 64 * 1024;
            while offset + 4096 <= len {
                let garbage: Vec<u8> = (0..4096)
                    .map(|_| {
                        // xorshift: repeatable garbage.
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                file.seek(SeekFrom::Start(offset))?;
                file.write_all(&garbage)?;
                overwritten += 1;
                offset += 64 * 1024;
            }
            file.sync_all()?;
        }
    }
    Ok(overwritten)
}
