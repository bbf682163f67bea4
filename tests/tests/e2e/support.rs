//! Helpers shared by the end-to-end tests.

use anyhow::{bail, Context, Result};
use base64::Engine;
use quire_client::testing::TestServer;
use quire_client::Client;
use std::future::Future;
use std::time::Duration;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

/// Generous guard for anything that should happen "soon".
pub const WAIT: Duration = Duration::from_secs(10);

/// Inserts `chunk` at `index` of root text `root`, in one transaction.
pub fn insert(client: &Client, root: &str, index: u32, chunk: &str) {
    let text = client.doc().get_or_insert_text(root);
    text.insert(&mut client.doc().transact_mut(), index, chunk);
}

/// Appends `chunk` to root text `root`.
pub fn append(client: &Client, root: &str, chunk: &str) {
    let text = client.doc().get_or_insert_text(root);
    let mut txn = client.doc().transact_mut();
    let end = text.len(&txn);
    text.insert(&mut txn, end, chunk);
}

/// Plain text of root `root` in `doc` (empty if absent).
pub fn text_of(doc: &Doc, root: &str) -> String {
    let txn = doc.transact();
    txn.get_text(root)
        .map(|t| t.get_string(&txn))
        .unwrap_or_default()
}

/// Waits until `client`'s text `root` equals `expected`.
pub async fn wait_text(client: &Client, root: &str, expected: &str) -> Result<()> {
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
pub fn doc_from_update(update: &[u8]) -> Result<Doc> {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(update)?)
        .context("applying update")?;
    Ok(doc)
}

/// A v1 update that inserts `chunk` at the start of text `root`, made by a
/// fresh client id.
pub fn text_update(root: &str, chunk: &str) -> Vec<u8> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text(root);
    text.insert(&mut doc.transact_mut(), 0, chunk);
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    update
}

pub fn state_vector(doc: &Doc) -> StateVector {
    doc.transact().state_vector()
}

pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Percent-encodes a document name for a REST path segment (`/` → `%2F`).
pub fn segment(name: &str) -> String {
    quire_client::endpoint::percent_encode(name)
}

/// Thin REST client for one server.
pub struct Rest {
    http: reqwest::Client,
    base: String,
}

impl Rest {
    pub fn new(server: &TestServer) -> Rest {
        Rest {
            http: reqwest::Client::new(),
            base: server.http_url(""),
        }
    }

    pub async fn get(&self, path: &str) -> Result<reqwest::Response> {
        Ok(self.http.get(format!("{}{path}", self.base)).send().await?)
    }

    pub async fn post(&self, path: &str, body: Vec<u8>) -> Result<reqwest::Response> {
        Ok(self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await?)
    }

    pub async fn delete(&self, path: &str) -> Result<reqwest::Response> {
        Ok(self
            .http
            .delete(format!("{}{path}", self.base))
            .send()
            .await?)
    }

    /// `GET /api/docs/{doc}/snapshot?{query}`, which must succeed.
    pub async fn snapshot(&self, doc: &str, query: &str) -> Result<Vec<u8>> {
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
    pub async fn text(&self, doc: &str, root: &str) -> Result<String> {
        let bytes = self
            .snapshot(doc, &format!("format=text&root={root}"))
            .await?;
        Ok(String::from_utf8(bytes)?)
    }

    /// The server's document, rebuilt from its `format=yjs` snapshot.
    pub async fn doc(&self, doc: &str) -> Result<Doc> {
        doc_from_update(&self.snapshot(doc, "format=yjs").await?)
    }

    /// Polls the server until its text of `root` equals `expected`.
    pub async fn wait_text(&self, doc: &str, root: &str, expected: &str) -> Result<()> {
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
pub async fn eventually<T, F, Fut>(mut probe: F) -> Result<T>
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
pub fn sv_base64(sv: &StateVector) -> String {
    base64(&sv.encode_v1())
}

/// Decodes a base64 state vector from a JSON field.
pub fn decode_sv(b64: &str) -> Result<StateVector> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    Ok(StateVector::decode_v1(&bytes)?)
}
