//! The Redis bridge: several nodes serve the same documents.
//!
//! Redis is one more peer of every loaded document. Each document has a
//! pub/sub channel, subscribed while the document is loaded here; one
//! control channel, subscribed by every node, carries sync requests of
//! documents being loaded (so a node that has a document stored but not
//! loaded still answers) and deletions. Every message carries its origin
//! node id; a node ignores its own echoes.
//!
//! Pub/sub is at-most-once, so correctness never rests on it: nodes heal by
//! state vector (see `crdt_core::cluster`) when a document loads, after a
//! Redis reconnect, and every `--cluster-resync-secs`.

use crate::doc::{DocCommand, Registry};
use crate::names::DocName;
use bytes::Bytes;
use crdt_core::cluster::{Body, ClusterMessage};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const CONTROL_CHANNEL: &str = "quire:control";
/// Messages waiting to be published before publishing counts as failed.
const PUBLISH_QUEUE: usize = 16 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a remote message may wait for a busy document's queue.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(1);

/// The channel of one document. The braces are a Redis Cluster hash tag:
/// with sharded pub/sub (`SSUBSCRIBE`) a document's channel lives on one shard.
pub fn doc_channel(doc: &str) -> String {
    format!("quire:doc:{{{doc}}}")
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid --redis-url: {0}")]
    Url(#[from] redis::RedisError),
}

pub struct ClusterOptions {
    pub redis_url: String,
    pub node_id: Arc<str>,
    pub resync_interval: Duration,
}

/// Subscription changes, tagged with the actor that asks: an actor that
/// unloads may send its unsubscribe after a new actor for the same document
/// subscribed, and must not unsubscribe its successor.
enum SubCommand {
    Subscribe(String, u64, oneshot::Sender<bool>),
    Unsubscribe(String, u64),
}

#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: Arc<str>,
    resync_interval: Duration,
    publish: mpsc::Sender<(String, Bytes)>,
    subscriptions: mpsc::Sender<SubCommand>,
    connected: AtomicBool,
    last_error: Mutex<String>,
}

impl Cluster {
    /// Starts the publisher and subscriber tasks. Redis need not be up: both
    /// reconnect with backoff, and `/readyz` says 503 until they are.
    pub fn start(
        options: ClusterOptions,
        registry: Registry,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Cluster, ClusterError> {
        let client = redis::Client::open(options.redis_url.as_str())?;
        let (publish, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (subscriptions, subscriptions_rx) = mpsc::channel(1024);
        let cluster = Cluster {
            inner: Arc::new(Inner {
                node_id: options.node_id,
                resync_interval: options.resync_interval,
                publish,
                subscriptions,
                connected: AtomicBool::new(false),
                last_error: Mutex::new("not connected yet".into()),
            }),
        };
        tracker.spawn(publisher(
            client.clone(),
            publish_rx,
            cluster.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(subscriber(
            client,
            subscriptions_rx,
            cluster.clone(),
            registry,
            tracker.clone(),
            shutdown,
        ));
        Ok(cluster)
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub fn resync_interval(&self) -> Duration {
        self.inner.resync_interval
    }

    /// `Err(reason)` while Redis is unreachable.
    pub fn readiness(&self) -> Result<(), String> {
        if self.inner.connected.load(Ordering::Relaxed) {
            Ok(())
        } else {
            let reason = self
                .inner
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default();
            Err(format!("redis unreachable: {reason}"))
        }
    }

    fn set_error(&self, error: impl std::fmt::Display) {
        if let Ok(mut last) = self.inner.last_error.lock() {
            *last = error.to_string();
        }
    }

    /// Queues a message for the document's channel; false if it could not
    /// be queued (the periodic resync repairs what peers miss).
    pub fn publish(&self, doc: &DocName, body: Body) -> bool {
        self.publish_on(doc_channel(doc.as_str()), doc, body)
    }

    /// Queues a message for the control channel every node subscribes to.
    pub fn publish_control(&self, doc: &DocName, body: Body) -> bool {
        self.publish_on(CONTROL_CHANNEL.to_owned(), doc, body)
    }

    fn publish_on(&self, channel: String, doc: &DocName, body: Body) -> bool {
        let message = ClusterMessage {
            origin: self.inner.node_id.to_string(),
            doc: doc.to_string(),
            body,
        };
        let queued = self
            .inner
            .publish
            .try_send((channel, Bytes::from(message.encode())))
            .is_ok();
        if !queued {
            tracing::warn!(doc = %doc, "cluster publish queue full; peers heal at the next resync");
        }
        queued
    }

    /// Subscribes to a document's channel; false if Redis is unreachable
    /// (the subscriber resubscribes every loaded document on reconnect).
    pub async fn subscribe(&self, doc: &DocName, actor_id: u64) -> bool {
        let (ack, rx) = oneshot::channel();
        if self
            .inner
            .subscriptions
            .send(SubCommand::Subscribe(
                doc_channel(doc.as_str()),
                actor_id,
                ack,
            ))
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    pub fn unsubscribe(&self, doc: &DocName, actor_id: u64) {
        let _ = self
            .inner
            .subscriptions
            .try_send(SubCommand::Unsubscribe(doc_channel(doc.as_str()), actor_id));
    }
}

/// Publishes queued messages in order. A message is not given up when a
/// publish fails: the publisher reconnects (with backoff) and sends it again,
/// so the sync request a node sends right after an outage is not lost to a
/// connection that only turned out dead when used. While Redis stays down the
/// queue fills and further messages are refused at the source; peers heal
/// those by state vector.
async fn publisher(
    client: redis::Client,
    mut rx: mpsc::Receiver<(String, Bytes)>,
    cluster: Cluster,
    shutdown: CancellationToken,
) {
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        let (channel, payload) = tokio::select! {
            next = rx.recv() => match next {
                Some(next) => next,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        loop {
            if connection.is_none() {
                match client.get_multiplexed_async_connection().await {
                    Ok(c) => connection = Some(c),
                    Err(e) => tracing::debug!(error = %e, "cannot publish: redis unreachable"),
                }
            }
            if let Some(conn) = connection.as_mut() {
                let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(payload.as_ref())
                    .query_async(conn)
                    .await;
                match published {
                    Ok(_) => {
                        crate::metrics::redis_published();
                        backoff = Duration::from_millis(50);
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "publish failed; reconnecting");
                        cluster.set_error(&e);
                        connection = None;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

async fn subscriber(
    client: redis::Client,
    mut commands: mpsc::Receiver<SubCommand>,
    cluster: Cluster,
    registry: Registry,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut owners: HashMap<String, u64> = HashMap::new();
    loop {
        match client.get_async_pubsub().await {
            Ok(pubsub) => {
                backoff = Duration::from_millis(50);
                let (mut sink, mut stream) = pubsub.split();
                let mut channels = vec![CONTROL_CHANNEL.to_owned()];
                channels.extend(
                    registry
                        .loaded_names()
                        .iter()
                        .map(|n| doc_channel(n.as_str())),
                );
                if let Err(e) = sink.subscribe(&channels).await {
                    tracing::warn!(error = %e, "subscribing failed");
                    cluster.set_error(&e);
                } else {
                    cluster.inner.connected.store(true, Ordering::Relaxed);
                    tracing::info!(channels = channels.len(), "connected to redis");
                    // Whatever was published while we were away is lost to
                    // us, and ours to them: heal every loaded document.
                    for name in registry.loaded_names() {
                        if let Some(handle) = registry.loaded(&name) {
                            let _ = handle.try_send(DocCommand::ClusterResync);
                        }
                    }
                    loop {
                        tokio::select! {
                            command = commands.recv() => match command {
                                Some(SubCommand::Subscribe(channel, actor, ack)) => {
                                    owners.insert(channel.clone(), actor);
                                    let _ = ack.send(sink.subscribe(&channel).await.is_ok());
                                }
                                Some(SubCommand::Unsubscribe(channel, actor)) => {
                                    if owners.get(&channel) == Some(&actor) {
                                        owners.remove(&channel);
                                        let _ = sink.unsubscribe(&channel).await;
                                    }
                                }
                                None => return,
                            },
                            message = stream.next() => match message {
                                Some(message) => {
                                    crate::metrics::redis_received();
                                    route(&cluster, &registry, &tracker, message.get_payload_bytes()).await;
                                }
                                None => break,
                            },
                            _ = shutdown.cancelled() => return,
                        }
                    }
                    cluster.inner.connected.store(false, Ordering::Relaxed);
                    cluster.set_error("connection lost");
                    tracing::warn!("lost redis connection; reconnecting");
                }
            }
            Err(e) => {
                cluster.inner.connected.store(false, Ordering::Relaxed);
                tracing::debug!(error = %e, "redis unreachable");
                cluster.set_error(&e);
            }
        }
        // Wait before retrying; refuse subscriptions meanwhile (they are
        // made again for every loaded document on reconnect).
        let retry = tokio::time::sleep(backoff);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = &mut retry => break,
                command = commands.recv() => match command {
                    Some(SubCommand::Subscribe(channel, actor, ack)) => {
                        owners.insert(channel, actor);
                        let _ = ack.send(false);
                    }
                    Some(SubCommand::Unsubscribe(channel, actor)) => {
                        if owners.get(&channel) == Some(&actor) {
                            owners.remove(&channel);
                        }
                    }
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Hands one message from Redis to the document it concerns.
async fn route(cluster: &Cluster, registry: &Registry, tracker: &TaskTracker, payload: &[u8]) {
    let message = match ClusterMessage::decode(payload) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable cluster message");
            return;
        }
    };
    if message.origin == cluster.node_id() {
        return;
    }
    let Ok(name) = DocName::parse(&message.doc) else {
        tracing::warn!(doc = %message.doc, "cluster message for an invalid name");
        return;
    };
    match &message.body {
        Body::Deleted { at_ms } if registry.loaded(&name).is_none() => {
            let at_ms = i64::try_from(*at_ms).unwrap_or(i64::MAX);
            let registry = registry.clone();
            tracker.spawn(async move {
                if let Err(e) = registry.delete_stored_if_older(&name, at_ms).await {
                    tracing::warn!(error = %e, doc = %name, "remote delete failed");
                }
            });
        }
        Body::SyncRequest { state, .. } if registry.loaded(&name).is_none() => {
            // Stored here but not loaded: load it so it can answer. Deleted
            // here since the requester's copy last changed: say so.
            let requester_at = i64::try_from(state.updated_at_ms).unwrap_or(i64::MAX);
            let registry = registry.clone();
            let cluster = cluster.clone();
            tracker.spawn(async move {
                match registry.open_stored(&name).await {
                    Ok(handle) => {
                        let _ = handle.send(DocCommand::Remote(Box::new(message))).await;
                    }
                    Err(_) => {
                        if let Ok(Some(at)) = registry.tombstone(&name).await {
                            if requester_at <= at {
                                cluster.publish_control(
                                    &name,
                                    Body::Deleted {
                                        at_ms: at.max(0) as u64,
                                    },
                                );
                            }
                        }
                    }
                }
            });
        }
        _ => {
            if let Some(handle) = registry.loaded(&name) {
                let delivered = tokio::time::timeout(
                    DELIVERY_TIMEOUT,
                    handle.send(DocCommand::Remote(Box::new(message))),
                )
                .await;
                if !matches!(delivered, Ok(Ok(()))) {
                    tracing::warn!(doc = %name, "document too busy for a cluster message; it heals at the next resync");
                }
            }
        }
    }
}
