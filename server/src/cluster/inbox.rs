//! Where messages from Redis land, whatever the topology: document and
//! control messages go to the documents they concern, heartbeats to the
//! peers' [`Liveness`].

use super::heartbeat::{Beat, Liveness};
use super::{Cluster, DELIVERY_TIMEOUT, HEARTBEAT_CHANNEL};
use crate::doc::{DocCommand, Registry};
use crate::names::DocName;
use crdt_core::cluster::{Body, ClusterMessage};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// Who sent a delivered message: this node's own come back as echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sender {
    Us,
    Peer,
}

pub(super) struct Inbox {
    cluster: Cluster,
    registry: Registry,
    tracker: TaskTracker,
    liveness: Liveness,
    heartbeat_interval: Duration,
}

impl Inbox {
    pub(super) fn new(
        cluster: Cluster,
        registry: Registry,
        tracker: TaskTracker,
        heartbeat_interval: Duration,
    ) -> Self {
        Inbox {
            cluster,
            registry,
            tracker,
            liveness: Liveness::new(heartbeat_interval),
            heartbeat_interval,
        }
    }

    pub(super) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// How often [`check`](Self::check) runs.
    pub(super) fn check_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// The link is up and the control channel subscribed: ready, and
    /// every peer's silence counts from now.
    pub(super) fn connected(&mut self) {
        self.cluster.set_connected(true);
        self.liveness.resume(Instant::now());
    }

    /// The link (or the control channel's subscription) is down.
    pub(super) fn disconnected(&mut self, reason: impl std::fmt::Display) {
        self.cluster.set_connected(false);
        self.cluster.set_error(reason);
        self.liveness.pause();
    }

    /// Asks `doc` to heal by state vector and resend presence, if loaded.
    pub(super) fn resync(&self, doc: &DocName) {
        if let Some(handle) = self.registry.loaded(doc) {
            let _ = handle.try_send(DocCommand::ClusterResync);
        }
    }

    /// Every loaded document heals by state vector and resends presence.
    pub(super) fn resync_all(&self) {
        for name in self.registry.loaded_names() {
            self.resync(&name);
        }
    }

    /// One message from `channel`; whether it is this node's own.
    pub(super) async fn deliver(&mut self, channel: &[u8], payload: &[u8]) -> Sender {
        crate::metrics::redis_received();
        if channel == HEARTBEAT_CHANNEL.as_bytes() {
            return match std::str::from_utf8(payload) {
                Ok(node) if node == self.cluster.node_id() => Sender::Us,
                Ok(node) => {
                    self.heard_from(node);
                    Sender::Peer
                }
                Err(_) => {
                    tracing::warn!("heartbeat with a node id that is not UTF-8");
                    Sender::Peer
                }
            };
        }
        let message = match ClusterMessage::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable cluster message");
                return Sender::Peer;
            }
        };
        if message.origin == self.cluster.node_id() {
            return Sender::Us;
        }
        // Any message says its node is alive: a node killed before its
        // first beat reached us is still known, and judged, by the
        // presence it relayed.
        self.heard_from(&message.origin);
        route(&self.cluster, &self.registry, &self.tracker, message).await;
        Sender::Peer
    }

    fn heard_from(&mut self, node: &str) {
        if node == self.cluster.node_id() {
            return;
        }
        if self.liveness.beat(node, Instant::now()) == Beat::Revived {
            tracing::info!(
                node,
                "peer declared dead beats again; asking for its presence"
            );
            self.resync_all();
        }
    }

    /// Declares silent peers dead: every loaded document drops the presence
    /// they relayed.
    pub(super) fn check(&mut self) {
        for node in self.liveness.declare_dead(Instant::now()) {
            tracing::warn!(node = %node, "peer stopped beating; dropping the presence it relayed");
            crate::metrics::peer_declared_dead();
            for name in self.registry.loaded_names() {
                if let Some(handle) = self.registry.loaded(&name) {
                    let gone = DocCommand::PeerGone {
                        node: Arc::clone(&node),
                    };
                    if handle.try_send(gone).is_err() {
                        tracing::warn!(doc = %name, node = %node, "document too busy to drop a dead peer's presence");
                    }
                }
            }
        }
    }
}

/// Hands one message from Redis to the document it concerns.
async fn route(
    cluster: &Cluster,
    registry: &Registry,
    tracker: &TaskTracker,
    message: ClusterMessage,
) {
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
