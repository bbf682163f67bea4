//! A document's side of the cluster: what it publishes to other nodes, the
//! tombstone it defends, and who waits for peers to answer.
//!
//! What to send for a given pair of states is decided in `heal.rs`; this
//! part only knows how to say it.

use super::heal;
use crate::cluster::Cluster;
use crate::names::DocName;
use crdt_core::cluster::{Body, PeerState};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a freshly loaded, empty document waits for peers to answer
/// before it counts as absent (REST reads of a document this node never saw).
pub(super) const PEER_WAIT: Duration = Duration::from_millis(500);

/// Which nodes hear a sync request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// The control channel: every node, loaded or not (at load and after a
    /// reconnect, when peers may store the document without having it loaded).
    EveryNode,
    /// The document's channel: nodes that have it loaded.
    Loaded,
}

/// Whether peers are asked for their clients' presence too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Presence {
    Ask,
    Skip,
}

pub(super) struct PeerSync {
    cluster: Cluster,
    name: DocName,
    actor_id: u64,
    /// When a document of this name was last deleted, if ever.
    tombstone_ms: Option<i64>,
    /// `AwaitPeers` callers and their deadlines.
    waiters: Vec<(oneshot::Sender<bool>, Instant)>,
}

impl PeerSync {
    pub(super) fn new(
        cluster: Cluster,
        name: DocName,
        actor_id: u64,
        tombstone_ms: Option<i64>,
    ) -> Self {
        PeerSync {
            cluster,
            name,
            actor_id,
            tombstone_ms,
            waiters: Vec::new(),
        }
    }

    /// Subscribes to the document's channel; before asking, so no answer is missed.
    pub(super) async fn subscribe(&self) {
        self.cluster.subscribe(&self.name, self.actor_id).await;
    }

    pub(super) fn unsubscribe(&self) {
        self.cluster.unsubscribe(&self.name, self.actor_id);
    }

    pub(super) fn resync_interval(&self) -> Duration {
        self.cluster.resync_interval()
    }

    /// Whether a reply addressed to `target` is ours.
    pub(super) fn is_us(&self, target: &str) -> bool {
        target == self.cluster.node_id()
    }

    /// Asks peers for what this node lacks.
    pub(super) fn request_sync(&self, state: PeerState, reach: Reach, presence: Presence) {
        let body = Body::SyncRequest {
            state,
            want_awareness: presence == Presence::Ask,
        };
        match reach {
            Reach::EveryNode => self.cluster.publish_control(&self.name, body),
            Reach::Loaded => self.cluster.publish(&self.name, body),
        };
        crate::metrics::redis_resync();
    }

    pub(super) fn reply(&self, target: String, update: Vec<u8>, state: Option<PeerState>) {
        self.cluster.publish(
            &self.name,
            Body::SyncReply {
                target,
                update,
                state,
            },
        );
    }

    pub(super) fn publish_update(&self, update: Vec<u8>) {
        self.cluster.publish(&self.name, Body::Update(update));
    }

    pub(super) fn publish_awareness(&self, encoded: Vec<u8>) {
        self.cluster.publish(&self.name, Body::Awareness(encoded));
    }

    /// A Hocuspocus stateless payload, for the sessions on other nodes.
    pub(super) fn publish_stateless(&self, payload: String) {
        self.cluster.publish(&self.name, Body::Stateless(payload));
    }

    /// Tells every node the document was deleted at `at_ms`.
    pub(super) fn publish_delete(&self, at_ms: i64) {
        self.cluster.publish_control(
            &self.name,
            Body::Deleted {
                at_ms: at_ms.max(0) as u64,
            },
        );
    }

    /// Repeats our tombstone to a peer whose copy predates it.
    pub(super) fn announce_tombstone(&self) {
        if let Some(at) = self.tombstone_ms {
            self.publish_delete(at);
        }
    }

    /// A copy last changed at `updated_at_ms` predates our tombstone.
    pub(super) fn is_stale(&self, updated_at_ms: u64) -> bool {
        heal::is_stale(self.tombstone_ms, updated_at_ms)
    }

    /// Another node deleted the document at `at_ms`, but ours is newer.
    pub(super) fn remember_tombstone(&mut self, at_ms: i64) {
        self.tombstone_ms = self.tombstone_ms.max(Some(at_ms));
    }

    /// Answers `reply` once the document holds something, or at the deadline.
    pub(super) fn wait(&mut self, reply: oneshot::Sender<bool>) {
        self.waiters.push((reply, Instant::now() + PEER_WAIT));
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.waiters.iter().map(|(_, at)| *at).min()
    }

    /// The document holds something now: every waiter is answered.
    pub(super) fn resolve_waiters(&mut self) {
        for (waiter, _) in self.waiters.drain(..) {
            let _ = waiter.send(true);
        }
    }

    /// Answers the waiters whose deadline passed with `holds_something`;
    /// true if any was answered and none is left.
    pub(super) fn expire_waiters(&mut self, holds_something: bool) -> bool {
        let now = Instant::now();
        let before = self.waiters.len();
        let waiters = std::mem::take(&mut self.waiters);
        for (waiter, deadline) in waiters {
            if deadline <= now {
                let _ = waiter.send(holds_something);
            } else {
                self.waiters.push((waiter, deadline));
            }
        }
        self.waiters.len() < before && self.waiters.is_empty()
    }
}
