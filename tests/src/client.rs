//! [`Client`]: one yrs document kept in sync with a document on a server.

use crate::connection::Connection;
use crate::endpoint::doc_url;
use crate::shared::Shared;
use crate::{ClientError, REMOTE_ORIGIN};
use crdt_core::protocol::{encode_awareness, MSG_QUERY_AWARENESS};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use yrs::{Doc, GetString, Origin, ReadTxn, Transact};

/// Where to connect and as whom.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server base address: `ws://HOST:PORT` (or `http://HOST:PORT`).
    pub address: String,
    /// Document name, placed in the path as given.
    pub doc: String,
    /// Access token, sent as `?token=`.
    pub token: Option<String>,
    /// The document to edit; a fresh `Doc` when `None`.
    pub ydoc: Option<Doc>,
}

impl ClientConfig {
    /// Document `doc` on the server at `address`, no token.
    pub fn new(address: impl Into<String>, doc: impl Into<String>) -> Self {
        ClientConfig {
            address: address.into(),
            doc: doc.into(),
            token: None,
            ydoc: None,
        }
    }

    /// Sends `token` on the upgrade request.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Edits `doc` instead of a fresh document.
    pub fn ydoc(mut self, doc: Doc) -> Self {
        self.ydoc = Some(doc);
        self
    }
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No connection (never opened, closed by either side, or lost).
    Disconnected,
    /// The upgrade request is in flight.
    Connecting,
    /// Open; the server's sync step 2 has not arrived yet.
    Connected,
    /// Open, and the server's sync step 2 has been applied.
    Synced,
}

/// The close frame the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    pub code: u16,
    pub reason: String,
}

/// A headless y-websocket client.
///
/// Edits go through [`doc`](Self::doc): every transaction not applied by
/// the client itself is sent to the server as a sync update. Do not hold a
/// transaction across an `.await`: the connection's reader applies remote
/// updates on the same `Doc`.
pub struct Client {
    config: ClientConfig,
    url: String,
    shared: Arc<Shared>,
    connection: Option<Connection>,
    /// Keeps the update observer registered for as long as the client lives.
    _observer: ObserverKey,
}

impl Client {
    /// A client that is not connected yet; edits made before
    /// [`open`](Self::open) reach the server during the sync handshake.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let url = doc_url(&config.address, &config.doc, config.token.as_deref())?;
        let doc = config.ydoc.clone().unwrap_or_default();
        let shared = Arc::new(Shared::new(doc));
        let observer = ObserverKey::register(&shared)?;
        Ok(Client {
            config,
            url,
            shared,
            connection: None,
            _observer: observer,
        })
    }

    /// Creates a client and connects it.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let mut client = Client::new(config)?;
        client.open().await?;
        Ok(client)
    }

    /// Opens a connection (closing the current one first, if any) and starts
    /// the sync handshake: our step 1 and awareness go out, the server's step
    /// 1 is answered with step 2 (whatever it lacks, offline edits included).
    pub async fn open(&mut self) -> Result<(), ClientError> {
        if let Some(connection) = self.connection.take() {
            connection.shutdown().await;
        }
        self.connection = Some(Connection::open(&self.url, Arc::clone(&self.shared)).await?);
        Ok(())
    }

    /// Closes cleanly: sends pending edits, the removal of our awareness
    /// state (clock + 1, `null`), and a 1000 close frame. The local
    /// awareness state is kept and announced again by the next [`open`](Self::open).
    pub async fn disconnect(&mut self) -> Result<(), ClientError> {
        let connection = self.connection.take().ok_or(ClientError::NotConnected)?;
        let farewell = self
            .shared
            .state()
            .awareness
            .departure()
            .map(|u| encode_awareness(&u.encode()))
            .into_iter()
            .collect();
        connection.close(farewell, 1000, "client disconnect").await;
        Ok(())
    }

    /// Drops the connection without a close frame or awareness removal, the
    /// way a crashed tab or a network cut looks to the server.
    pub async fn drop_connection(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.shutdown().await;
        }
    }

    /// Closes (if open) and opens again; the new connection resyncs by state
    /// vector in both directions, as y-websocket does.
    pub async fn reconnect(&mut self) -> Result<(), ClientError> {
        if self.connection.is_some() && self.status() != Status::Disconnected {
            self.disconnect().await?;
        }
        self.open().await
    }

    /// The document this client edits.
    pub fn doc(&self) -> &Doc {
        &self.shared.doc
    }

    /// The document's name on the server.
    pub fn doc_name(&self) -> &str {
        &self.config.doc
    }

    /// The upgrade URL this client connects to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This client's id, shared by the `Doc` and awareness.
    pub fn client_id(&self) -> u64 {
        self.shared.doc.client_id().get()
    }

    pub fn status(&self) -> Status {
        self.shared.state().status
    }

    /// Whether the server's sync step 2 has arrived on the current connection.
    pub fn is_synced(&self) -> bool {
        self.status() == Status::Synced
    }

    /// The close frame the server sent on the last connection, if any.
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.shared.state().close.clone()
    }

    /// Why the last connection ended when it was not a close frame (a
    /// transport error, or a malformed message from the server).
    pub fn last_error(&self) -> Option<String> {
        self.shared.state().error.clone()
    }

    /// Reasons of every auth permission-denied message the server sent.
    pub fn denied(&self) -> Vec<String> {
        self.shared.state().denied.clone()
    }

    /// Plain text of the root text type `root` (empty if absent).
    pub fn text(&self, root: &str) -> String {
        let txn = self.shared.doc.transact();
        txn.get_text(root)
            .map(|t| t.get_string(&txn))
            .unwrap_or_default()
    }

    /// Encoded v1 state of the whole document (`Y.encodeStateAsUpdate`).
    pub fn encode_state(&self) -> Vec<u8> {
        use yrs::StateVector;
        self.shared
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    /// Sets the local awareness state and sends it if connected.
    pub async fn set_awareness(&self, state: serde_json::Value) -> Result<(), ClientError> {
        let update = self
            .shared
            .update(|s| s.awareness.set_local(Some(state.to_string())));
        self.send_awareness(update).await
    }

    /// Clears the local awareness state (`null`) and sends that if connected.
    pub async fn clear_awareness(&self) -> Result<(), ClientError> {
        let update = self.shared.update(|s| s.awareness.set_local(None));
        self.send_awareness(update).await
    }

    /// Every known awareness state by client id, our own included.
    pub fn awareness_states(&self) -> BTreeMap<u64, serde_json::Value> {
        self.shared.state().awareness.states()
    }

    /// Other clients' awareness states.
    pub fn peer_states(&self) -> BTreeMap<u64, serde_json::Value> {
        let own = self.client_id();
        let mut states = self.awareness_states();
        states.remove(&own);
        states
    }

    /// Asks the server for every awareness state (message type 3).
    pub async fn query_awareness(&self) -> Result<(), ClientError> {
        self.send_frame(vec![MSG_QUERY_AWARENESS as u8]).await
    }

    /// Sends raw bytes as one binary frame on the current connection; the
    /// reply, if any, is handled like any other server message.
    pub async fn send_frame(&self, frame: Vec<u8>) -> Result<(), ClientError> {
        self.connection
            .as_ref()
            .ok_or(ClientError::NotConnected)?
            .send(frame)
            .await
    }

    /// Waits until `condition` holds for the document, re-checking after
    /// every change. Fails with [`ClientError::Timeout`] after `timeout`.
    pub async fn wait_for<F>(&self, timeout: Duration, mut condition: F) -> Result<(), ClientError>
    where
        F: FnMut(&Doc) -> bool,
    {
        self.wait_until("document condition", timeout, |client| {
            condition(client.doc())
        })
        .await
    }

    /// Waits until the server's sync step 2 has arrived.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(), ClientError> {
        self.wait_until("sync step 2", timeout, |client| {
            client.status() == Status::Synced
        })
        .await?;
        Ok(())
    }

    /// Waits until `condition` holds for the awareness states (own included).
    pub async fn wait_for_awareness<F>(
        &self,
        timeout: Duration,
        mut condition: F,
    ) -> Result<(), ClientError>
    where
        F: FnMut(&BTreeMap<u64, serde_json::Value>) -> bool,
    {
        self.wait_until("awareness condition", timeout, |client| {
            condition(&client.awareness_states())
        })
        .await
    }

    /// Waits until the connection has ended; returns the server's close
    /// frame, if it sent one.
    pub async fn wait_closed(&self, timeout: Duration) -> Result<Option<CloseInfo>, ClientError> {
        self.wait_until("connection close", timeout, |client| {
            client.status() == Status::Disconnected
        })
        .await?;
        Ok(self.close_info())
    }

    /// Waits until `condition` holds for the whole client.
    pub async fn wait_until<F>(
        &self,
        what: &'static str,
        timeout: Duration,
        mut condition: F,
    ) -> Result<(), ClientError>
    where
        F: FnMut(&Client) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut changes = self.shared.subscribe();
        loop {
            changes.borrow_and_update();
            if condition(self) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in `shared`, which we hold: cannot close.
                Ok(Err(_)) | Err(_) => return Err(ClientError::Timeout { what, timeout }),
            }
        }
    }

    async fn send_awareness(&self, update: crdt_core::AwarenessUpdate) -> Result<(), ClientError> {
        match &self.connection {
            Some(_) if self.status() != Status::Disconnected => {
                self.send_frame(encode_awareness(&update.encode())).await
            }
            // Offline: announced by the next connection.
            _ => Ok(()),
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("client_id", &self.client_id())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// The update observer that feeds local transactions to the outbox,
/// registered under a key unique to one client and removed on drop.
struct ObserverKey {
    key: String,
    doc: Doc,
}

static NEXT_OBSERVER: AtomicU64 = AtomicU64::new(0);

impl ObserverKey {
    fn register(shared: &Arc<Shared>) -> Result<Self, ClientError> {
        let key = format!(
            "quire-client/{}",
            NEXT_OBSERVER.fetch_add(1, Ordering::Relaxed)
        );
        let remote = Origin::from(REMOTE_ORIGIN);
        // Weak: the observer lives in the Doc, which lives in `shared`.
        let weak = Arc::downgrade(shared);
        shared
            .doc
            .observe_update_v1(key.as_str(), move |txn, event| {
                let Some(shared) = weak.upgrade() else { return };
                if txn.origin() != Some(&remote) {
                    shared.outbox.push(event.update.clone());
                }
                shared.notify();
            })
            .map_err(|_| ClientError::DocumentBusy)?;
        Ok(ObserverKey {
            key,
            doc: shared.doc.clone(),
        })
    }
}

impl Drop for ObserverKey {
    fn drop(&mut self) {
        let _ = self.doc.unobserve_update_v1(self.key.as_str());
    }
}

#[cfg(test)]
mod tests;
