//! A document actor's side of the cluster: healing by state vector,
//! relaying updates and presence to and from other nodes.

use super::actor::{DocActor, Source};
use bytes::Bytes;
use crdt_core::cluster::{state_vector_le, Body, ClusterMessage, PeerState};
use crdt_core::protocol::encode_awareness;
use crdt_core::AwarenessUpdate;
use std::time::Duration;
use tokio::time::Instant;

/// How long a freshly loaded, empty document waits for peers to answer
/// before it counts as absent (REST reads of a document this node never saw).
pub const PEER_WAIT: Duration = Duration::from_millis(500);

impl DocActor {
    pub(super) fn is_empty(&self) -> bool {
        self.doc.state_vector().is_empty() && self.snapshot_bytes + self.log_bytes == 0
    }

    fn peer_state(&self) -> PeerState {
        self.doc.peer_state(self.updated_at_ms.max(0) as u64)
    }

    /// A copy last changed at `updated_at_ms` predates our tombstone.
    fn is_stale(&self, updated_at_ms: u64) -> bool {
        self.tombstone_ms
            .is_some_and(|t| i64::try_from(updated_at_ms).unwrap_or(i64::MAX) <= t)
    }

    fn announce_tombstone(&self, cluster: &crate::cluster::Cluster) {
        if let Some(at) = self.tombstone_ms {
            cluster.publish_control(
                &self.name,
                Body::Deleted {
                    at_ms: at.max(0) as u64,
                },
            );
        }
    }

    /// Asks peers for what this node lacks. On the control channel every node
    /// hears it (used at load and after a reconnect, when peers may hold the
    /// document without having it loaded); otherwise only nodes that have it loaded.
    pub(super) fn request_sync(&self, control: bool, want_awareness: bool) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let body = Body::SyncRequest {
            state: self.peer_state(),
            want_awareness,
        };
        if control {
            cluster.publish_control(&self.name, body);
        } else {
            cluster.publish(&self.name, body);
        }
        crate::metrics::redis_resync();
    }

    /// Presence of this node's own clients, for peers that just arrived.
    pub(super) fn publish_local_awareness(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let local: Vec<u64> = self
            .conns
            .values()
            .flat_map(|link| link.awareness_clients.iter().copied())
            .collect();
        let update = self.awareness.snapshot_of(local);
        if !update.is_empty() {
            cluster.publish(&self.name, Body::Awareness(update.encode()));
        }
    }

    pub(super) async fn on_remote(&mut self, message: ClusterMessage) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        match message.body {
            Body::Update(update) => self.apply_remote(update).await,
            Body::Awareness(bytes) => match AwarenessUpdate::decode(&bytes) {
                Ok(update) => {
                    let change = self.awareness.apply(update);
                    if !change.is_empty() {
                        let frame = encode_awareness(&change.effective.encode());
                        self.broadcast(Bytes::from(frame), None);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, from = %message.origin, "bad remote awareness")
                }
            },
            Body::SyncRequest {
                state,
                want_awareness,
            } => {
                if self.is_stale(state.updated_at_ms) {
                    self.announce_tombstone(&cluster);
                    return;
                }
                let ours = self.peer_state();
                let they_lack = !state_vector_le(&ours.state_vector, &state.state_vector)
                    || ours.delete_set_digest != state.delete_set_digest;
                let we_lack = !state_vector_le(&state.state_vector, &ours.state_vector);
                if they_lack || we_lack {
                    let update = if they_lack {
                        self.doc.diff_v1(&state.state_vector)
                    } else {
                        Vec::new()
                    };
                    cluster.publish(
                        &self.name,
                        Body::SyncReply {
                            target: message.origin,
                            update,
                            state: Some(ours),
                        },
                    );
                }
                if want_awareness {
                    self.publish_local_awareness();
                }
            }
            Body::SyncReply {
                target,
                update,
                state,
            } => {
                if target != cluster.node_id() {
                    return;
                }
                if state
                    .as_ref()
                    .is_some_and(|s| self.is_stale(s.updated_at_ms))
                {
                    // Their copy predates our deletion: do not resurrect it.
                    self.announce_tombstone(&cluster);
                    return;
                }
                if !update.is_empty() {
                    self.apply_remote(update).await;
                }
                if let Some(theirs) = state {
                    self.answer_peer_state(&cluster, message.origin, theirs);
                }
            }
            Body::Deleted { at_ms } => {
                let at_ms = i64::try_from(at_ms).unwrap_or(i64::MAX);
                if self.updated_at_ms <= at_ms {
                    self.delete(at_ms, false).await;
                } else {
                    // Re-created here after that deletion: keep it.
                    self.tombstone_ms = self.tombstone_ms.max(Some(at_ms));
                }
            }
        }
    }

    /// The peer told us its state in a reply: send what it lacks, once.
    fn answer_peer_state(
        &self,
        cluster: &crate::cluster::Cluster,
        peer: String,
        theirs: PeerState,
    ) {
        let ours = self.peer_state();
        let they_lack = !state_vector_le(&ours.state_vector, &theirs.state_vector)
            || ours.delete_set_digest != theirs.delete_set_digest;
        if they_lack {
            cluster.publish(
                &self.name,
                Body::SyncReply {
                    target: peer,
                    update: self.doc.diff_v1(&theirs.state_vector),
                    state: None,
                },
            );
        }
    }

    async fn apply_remote(&mut self, update: Vec<u8>) {
        if let Err(e) = self.apply(Bytes::from(update), Source::Peer).await {
            tracing::warn!(error = %e, "update from a peer did not apply");
        }
    }

    /// Answers `AwaitPeers` callers once the document holds something.
    pub(super) fn resolve_peer_waiters(&mut self) {
        if self.peer_waiters.is_empty() || self.is_empty() {
            return;
        }
        for (waiter, _) in self.peer_waiters.drain(..) {
            let _ = waiter.send(true);
        }
    }

    /// Answers expired `AwaitPeers` callers. Returns true when the document
    /// is still empty and unused, and has been removed from the registry:
    /// nobody holds it, and it must not linger as a phantom.
    pub(super) fn expire_peer_waiters(&mut self, rx: &super::mailbox::MailboxReceiver) -> bool {
        let now = Instant::now();
        let empty = self.is_empty();
        let mut answered = false;
        let waiters = std::mem::take(&mut self.peer_waiters);
        for (waiter, deadline) in waiters {
            if deadline <= now {
                let _ = waiter.send(!empty);
                answered = true;
            } else {
                self.peer_waiters.push((waiter, deadline));
            }
        }
        answered
            && empty
            && self.conns.is_empty()
            && self.peer_waiters.is_empty()
            && self.registry.remove_if_idle(&self.name, self.actor_id, rx)
    }
}
