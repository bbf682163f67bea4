//! The task that owns one loaded document.
//!
//! **Invariant:** only this task touches the document's `Doc` and awareness;
//! nothing here holds a yrs transaction across an `.await`.

use super::command::ApplyError;
use super::command::{
    CloseReason, ConnId, DocCommand, DocEvent, DocInfo, SnapshotBody, SnapshotFormat,
    SnapshotRequest, Subscription,
};
use super::mailbox::MailboxReceiver;
use super::outbound::Outbound;
use super::registry::{Defer, DocStats, Registry};
use crate::cluster::Cluster;
use crate::names::DocName;
use crate::store::{DocMeta, Snapshot, Store};
use bytes::Bytes;
use crdt_core::cluster::Body;
use crdt_core::protocol::{encode_awareness, encode_sync_step1, encode_sync_step2, encode_update};
use crdt_core::{AwarenessTable, AwarenessUpdate, Document, DocumentError};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub(super) struct Link {
    pub(super) outbound: Outbound,
    /// Awareness client ids this connection introduced; removed when it
    /// leaves. Usually one: a `Vec` is the smallest set for that.
    pub(super) awareness_clients: Vec<u64>,
}

pub(super) struct ActorSettings {
    pub flush_interval: Duration,
    pub idle_unload: Duration,
    pub compact_log_bytes: u64,
    pub max_doc_bytes: u64,
    pub max_outbound_bytes: usize,
    pub broadcast_window: Duration,
}

pub(super) struct DocActor {
    pub name: DocName,
    pub actor_id: u64,
    pub doc: Document,
    pub awareness: AwarenessTable,
    pub store: Store,
    pub registry: Registry,
    pub stats: Arc<DocStats>,
    pub settings: Arc<ActorSettings>,
    pub shutdown: CancellationToken,
    /// Sequence number of the next logged update.
    pub next_seq: u64,
    /// Sequence number of the first update not yet in the snapshot.
    pub first_unsnapshotted_seq: u64,
    pub snapshot_bytes: u64,
    pub log_bytes: u64,
    pub updated_at_ms: i64,
    /// When a document of this name was last deleted, if ever.
    pub(super) tombstone_ms: Option<i64>,
    /// Sync step 2 carrying the whole current state, shared by every client
    /// that connects with nothing (a page load); dropped on any change.
    pub(super) full_sync: Option<Bytes>,
    /// The stored snapshot, while it is not integrated yet (`cold.rs`).
    pub(super) deferred: Option<super::cold::Deferred>,
    pub(super) conns: HashMap<ConnId, Link>,
    /// Applied updates not yet relayed (see `relay.rs`).
    pub(super) relay: super::relay::PendingRelay,
    /// Change feed for SSE subscribers; a lagging one resubscribes.
    /// Created on first subscription: its ring buffer would otherwise cost
    /// every loaded document more than the document itself.
    events: Option<broadcast::Sender<DocEvent>>,
    pub(super) cluster: Option<Cluster>,
    /// `AwaitPeers` callers and their deadlines.
    pub(super) peer_waiters: Vec<(oneshot::Sender<bool>, Instant)>,
}

/// Where an update came from: only local ones are published to peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Conn(ConnId),
    Rest,
    Peer,
}

impl Source {
    fn conn(self) -> Option<ConnId> {
        match self {
            Source::Conn(id) => Some(id),
            _ => None,
        }
    }
}

/// Events buffered per change-feed subscriber before it counts as lagging.
const EVENT_BUFFER: usize = 256;

pub(super) struct LoadedState {
    /// The stored snapshot, when it alone is the whole state (no log after
    /// it): the first full sync can send it without encoding the document.
    pub snapshot_if_whole: Option<Vec<u8>>,
    /// Set when `doc` is still empty and the snapshot (with this state
    /// vector) is to be integrated on first need (`cold.rs`).
    pub deferred_state_vector: Option<Vec<u8>>,
    pub tombstone_ms: Option<i64>,
    pub doc: Document,
    pub next_seq: u64,
    pub first_unsnapshotted_seq: u64,
    pub snapshot_bytes: u64,
    pub log_bytes: u64,
    pub updated_at_ms: i64,
}

pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl DocActor {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        name: DocName,
        actor_id: u64,
        loaded: LoadedState,
        store: Store,
        registry: Registry,
        stats: Arc<DocStats>,
        settings: Arc<ActorSettings>,
        shutdown: CancellationToken,
        cluster: Option<Cluster>,
    ) -> Self {
        DocActor {
            name,
            actor_id,
            doc: loaded.doc,
            awareness: AwarenessTable::default(),
            store,
            registry,
            stats,
            settings,
            shutdown,
            next_seq: loaded.next_seq,
            first_unsnapshotted_seq: loaded.first_unsnapshotted_seq,
            snapshot_bytes: loaded.snapshot_bytes,
            log_bytes: loaded.log_bytes,
            updated_at_ms: loaded.updated_at_ms,
            tombstone_ms: loaded.tombstone_ms,
            full_sync: None,
            deferred: None,
            conns: HashMap::new(),
            relay: Default::default(),
            events: None,
            cluster,
            peer_waiters: Vec::new(),
        }
        .with_stored_snapshot(loaded.snapshot_if_whole, loaded.deferred_state_vector)
    }

    fn with_stored_snapshot(
        mut self,
        snapshot: Option<Vec<u8>>,
        deferred_state_vector: Option<Vec<u8>>,
    ) -> Self {
        let Some(snapshot) = snapshot else {
            return self;
        };
        let frame = Bytes::from(encode_sync_step2(&snapshot));
        // The frame ends with the snapshot's bytes: share them.
        let bytes = frame.slice(frame.len() - snapshot.len()..);
        self.full_sync = Some(frame);
        self.deferred = deferred_state_vector.map(|state_vector_v1| super::cold::Deferred {
            snapshot: bytes,
            state_vector_v1,
        });
        self
    }

    pub(super) async fn run(mut self: Box<Self>, mut rx: MailboxReceiver) {
        let span = tracing::info_span!("doc", doc = %self.name);
        async move {
            tracing::debug!("loaded");
            // Healing with peers compares content: integrate first.
            if self.cluster.is_some() && !self.integrate_deferred() {
                return;
            }
            if let Some(cluster) = self.cluster.clone() {
                // Subscribe before asking, so no answer is missed.
                Box::pin(cluster.subscribe(&self.name, self.actor_id)).await;
                self.request_sync(true, true);
            }
            let resync_every = self
                .cluster
                .as_ref()
                .map_or(Duration::from_secs(3600), Cluster::resync_interval);
            // Only in cluster mode: an interval is a boxed timer.
            let mut resync = self
                .cluster
                .is_some()
                .then(|| tokio::time::interval_at(Instant::now() + resync_every, resync_every));
            let mut idle_since = Some(Instant::now());
            loop {
                let idle_deadline = idle_since.map(|t| t + self.settings.idle_unload);
                let waiter_deadline = self.peer_waiters.iter().map(|(_, at)| *at).min();
                let relay_deadline = self.relay.deadline(self.settings.broadcast_window);
                tokio::select! {
                    command = rx.recv() => match command {
                        Some(command) => {
                            if self.deferred.is_some() && !self.can_defer(&command) {
                                // Integrating takes a while: let the
                                // connections just answered from the
                                // snapshot write it out first.
                                tokio::task::yield_now().await;
                                if !self.integrate_deferred() {
                                    return;
                                }
                            }
                            // Boxed: the futures of the rarer commands
                            // (delete, reload, compaction) would otherwise
                            // size every idle document's task.
                            Box::pin(self.handle(command)).await;
                            if self.deleted() {
                                return;
                            }
                            if self.settings.broadcast_window.is_zero() && rx.is_empty() {
                                self.flush_relay();
                            }
                            idle_since = if self.conns.is_empty() { Some(Instant::now()) } else { None };
                        }
                        None => break,
                    },
                    _ = sleep_until(waiter_deadline) => {
                        if self.expire_peer_waiters(&rx) {
                            rx.close();
                            while rx.try_recv().is_some() {}
                            tracing::debug!("no peer holds this document; dropped");
                            break;
                        }
                    }
                    _ = tick(&mut resync) => self.request_sync(false, false),
                    _ = sleep_until(relay_deadline) => self.flush_relay(),
                    _ = sleep_until(idle_deadline) => {
                        // Change-feed subscribers keep a document loaded too.
                        if self.subscribers() == 0
                            && self.registry.remove_if_idle(&self.name, self.actor_id, &rx) {
                            rx.close();
                            // Commands that raced in are dropped: their reply
                            // channels close and the senders open the document anew.
                            while rx.try_recv().is_some() {}
                            tracing::debug!("unloading idle document");
                            break;
                        }
                        idle_since = Some(Instant::now());
                    }
                    _ = self.shutdown.cancelled() => break,
                }
            }
            self.flush_relay();
            if let Some(cluster) = &self.cluster {
                cluster.unsubscribe(&self.name, self.actor_id);
            }
            Box::pin(self.compact()).await;
        }
        .instrument(span)
        .await
    }

    /// Change-feed subscribers right now.
    fn subscribers(&self) -> usize {
        self.events
            .as_ref()
            .map_or(0, broadcast::Sender::receiver_count)
    }

    pub(super) fn deleted(&self) -> bool {
        self.next_seq == u64::MAX
    }

    async fn handle(&mut self, command: DocCommand) {
        match command {
            DocCommand::Connect {
                id,
                outbound,
                reply,
            } => {
                let mut first = vec![Bytes::from(encode_sync_step1(&self.state_vector_v1()))];
                let present = self.awareness.snapshot();
                if !present.is_empty() {
                    first.push(Bytes::from(encode_awareness(&present.encode())));
                }
                self.conns.insert(
                    id,
                    Link {
                        outbound,
                        awareness_clients: Vec::new(),
                    },
                );
                for frame in first {
                    self.send_to(id, frame);
                }
                self.stats
                    .clients
                    .store(self.conns.len(), Ordering::Relaxed);
                let _ = reply.send(());
            }
            DocCommand::Disconnect { id } => self.remove_conn(id),
            DocCommand::SyncStep1 { id, state_vector } => {
                let frame = if state_vector.is_empty() {
                    self.full_sync_frame()
                } else {
                    Bytes::from(encode_sync_step2(&self.doc.diff_v1(&state_vector)))
                };
                self.send_to(id, frame);
            }
            DocCommand::Update { id, update } => {
                if let Err(e) = self.apply(update, Source::Conn(id)).await {
                    let code = match e {
                        ApplyError::TooLarge { .. } => CloseReason::TOO_BIG,
                        ApplyError::Document(_) => CloseReason::INVALID_PAYLOAD,
                    };
                    crate::metrics::rejected_frame(match e {
                        ApplyError::TooLarge { .. } => "doc_too_large",
                        ApplyError::Document(_) => "bad_update",
                    });
                    self.kick(id, CloseReason::new(code, e.to_string()));
                }
            }
            DocCommand::Awareness { id, update } => self.apply_awareness(id, *update),
            DocCommand::QueryAwareness { id } => {
                let present = self.awareness.snapshot();
                self.send_to(id, Bytes::from(encode_awareness(&present.encode())));
            }
            DocCommand::Info { reply } => {
                let _ = reply.send(DocInfo {
                    bytes: self.snapshot_bytes + self.log_bytes,
                    updated_at_ms: self.updated_at_ms,
                    clients: self.conns.len(),
                    state_vector: self.state_vector_v1(),
                });
            }
            DocCommand::Snapshot { request, reply } => {
                let _ = reply.send(self.snapshot(*request));
            }
            DocCommand::ApplyUpdate { update, reply } => {
                let _ = reply.send(self.apply(update, Source::Rest).await);
            }
            DocCommand::Delete { propagate, reply } => {
                self.delete(now_ms(), propagate).await;
                let _ = reply.send(());
            }
            DocCommand::Subscribe { reply } => {
                let _ = reply.send(Subscription {
                    snapshot: self.doc.encode_state_v1(),
                    events: self
                        .events
                        .get_or_insert_with(|| broadcast::channel(EVENT_BUFFER).0)
                        .subscribe(),
                });
            }
            DocCommand::Remote(message) => self.on_remote(*message).await,
            DocCommand::ClusterResync => {
                self.request_sync(true, true);
                self.publish_local_awareness();
            }
            DocCommand::AwaitPeers { reply } => {
                if self.is_empty() {
                    let deadline = Instant::now() + super::peers::PEER_WAIT;
                    self.peer_waiters.push((reply, deadline));
                } else {
                    let _ = reply.send(true);
                }
            }
        }
    }

    fn snapshot(&self, request: SnapshotRequest) -> SnapshotBody {
        match request.format {
            SnapshotFormat::Yjs => SnapshotBody::Binary(match &request.state_vector {
                Some(sv) => self.doc.diff_v1(sv),
                None => self.doc.encode_state_v1(),
            }),
            SnapshotFormat::YjsV2 => SnapshotBody::Binary(match &request.state_vector {
                Some(sv) => self.doc.diff_v2(sv),
                None => self.doc.encode_state_v2(),
            }),
            SnapshotFormat::Json => SnapshotBody::Json(self.doc.to_json()),
            SnapshotFormat::Text { root } => match self.doc.root_text(&root) {
                Some(text) => SnapshotBody::Text(text),
                None => SnapshotBody::NoSuchRoot(root),
            },
        }
    }

    /// Applies an untrusted update, logs it, relays it to every connection
    /// but its origin. Nothing is logged or relayed unless it applied and
    /// changed the document.
    pub(super) async fn apply(&mut self, update: Bytes, source: Source) -> Result<(), ApplyError> {
        let origin = source.conn();
        let stored_bytes = self.snapshot_bytes + self.log_bytes;
        if stored_bytes.saturating_add(update.len() as u64) > self.settings.max_doc_bytes {
            return Err(ApplyError::TooLarge {
                limit: self.settings.max_doc_bytes,
            });
        }
        let started = std::time::Instant::now();
        let before = self.doc.state_vector();
        match self.doc.apply_update_v1(&update) {
            Ok(true) => {
                self.full_sync = None;
                // Before it is logged: the document must still encode into
                // something that loads, or a restart would lose it.
                if let Err(e) = self.doc.verify_since(&before) {
                    tracing::error!(error = %e, conn = origin, "update left the document unencodable; reloading");
                    self.reload().await;
                    return Err(ApplyError::Document(e));
                }
                crate::metrics::update_applied(started.elapsed());
            }
            Ok(false) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, conn = origin, "rejected update");
                if e == DocumentError::Poisoned {
                    self.reload().await;
                }
                return Err(ApplyError::Document(e));
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.log_bytes += update.len() as u64;
        self.updated_at_ms = now_ms();
        self.publish_stats();
        let meta = self.meta();
        let durable = self.settings.flush_interval.is_zero();
        let stored = if durable {
            self.store
                .append_durable(self.name.clone(), seq, update.clone(), meta)
                .await
        } else {
            self.store
                .append(self.name.clone(), seq, update.clone(), meta)
                .await
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, seq, "could not log update");
        }
        self.relay_update(Bytes::from(encode_update(&update)), origin);
        if source != Source::Peer {
            if let Some(cluster) = &self.cluster {
                cluster.publish(&self.name, Body::Update(update.to_vec()));
            }
        }
        self.resolve_peer_waiters();
        if let Some(events) = self.events.as_ref().filter(|e| e.receiver_count() > 0) {
            let _ = events.send(DocEvent::Update(update));
        }
        if self.log_bytes > self.settings.compact_log_bytes {
            self.compact().await;
        }
        Ok(())
    }

    fn apply_awareness(&mut self, id: ConnId, update: AwarenessUpdate) {
        let change = self.awareness.apply(update);
        if change.is_empty() {
            return;
        }
        if let Some(link) = self.conns.get_mut(&id) {
            // Sorted, so that an update naming many clients costs
            // O(n log n), never O(n²).
            let clients = &mut link.awareness_clients;
            clients.extend(change.added.iter().chain(&change.updated));
            clients.sort_unstable();
            clients.dedup();
            if !change.removed.is_empty() {
                let mut removed = change.removed.clone();
                removed.sort_unstable();
                clients.retain(|client| removed.binary_search(client).is_err());
            }
        }
        let encoded = change.effective.encode();
        // To the sender too, as y-websocket's server does: a provider that
        // hears nothing for 30 s reconnects, and a lone editor's own
        // renewals (every 15 s) are all it would hear.
        self.broadcast(Bytes::from(encode_awareness(&encoded)), None);
        if let Some(cluster) = &self.cluster {
            cluster.publish(&self.name, Body::Awareness(encoded));
        }
    }

    fn meta(&self) -> DocMeta {
        DocMeta {
            updated_at_ms: self.updated_at_ms,
            bytes: self.snapshot_bytes + self.log_bytes,
            last_seq: self.next_seq.saturating_sub(1),
        }
    }

    fn publish_stats(&self) {
        self.stats
            .bytes
            .store(self.snapshot_bytes + self.log_bytes, Ordering::Relaxed);
        self.stats
            .updated_at_ms
            .store(self.updated_at_ms, Ordering::Relaxed);
    }

    /// Sync step 2 with the whole state, encoded once per change.
    fn full_sync_frame(&mut self) -> Bytes {
        let doc = &self.doc;
        self.full_sync
            .get_or_insert_with(|| Bytes::from(encode_sync_step2(&doc.encode_state_v1())))
            .clone()
    }

    /// Merges the log into a fresh snapshot.
    async fn compact(&mut self) {
        if self.deleted() || self.next_seq == self.first_unsnapshotted_seq {
            return;
        }
        if let Err(e) = self.doc.verify_roundtrip() {
            // Keep the log, which loads; never replace it with a snapshot that does not.
            tracing::error!(error = %e, "snapshot would not reload; compaction skipped");
            return;
        }
        let snapshot = Snapshot {
            update: self.doc.encode_state_v1(),
            state_vector_v1: self.doc.state_vector_v1(),
        };
        let through_seq = self.next_seq - 1;
        self.snapshot_bytes = snapshot.update.len() as u64;
        self.log_bytes = 0;
        self.first_unsnapshotted_seq = self.next_seq;
        self.publish_stats();
        let meta = self.meta();
        match self
            .store
            .compact(self.name.clone(), snapshot, through_seq, meta)
            .await
        {
            Ok(()) => tracing::debug!(through_seq, bytes = meta.bytes, "compacted"),
            Err(e) => tracing::error!(error = %e, "compaction failed"),
        }
    }

    /// After yrs panicked mid-transaction the in-memory document is suspect;
    /// storage holds every update that applied before, so rebuild from it.
    async fn reload(&mut self) {
        match super::registry::load_state(&self.store, &self.name, Defer::Never).await {
            Ok((Some(state), _)) => {
                self.doc = state.doc;
                self.full_sync = None;
                tracing::warn!("reloaded document after engine panic");
            }
            Ok((None, _)) => {
                self.doc = Document::new();
                self.full_sync = None;
            }
            Err(e) => tracing::error!(error = %e, "reload after engine panic failed"),
        }
    }

    /// Deletes the document (closing its sockets with 4404) and leaves a
    /// tombstone dated `at_ms`; `propagate` tells every other node.
    pub(super) async fn delete(&mut self, at_ms: i64, propagate: bool) {
        if propagate {
            if let Some(cluster) = &self.cluster {
                cluster.publish_control(
                    &self.name,
                    Body::Deleted {
                        at_ms: at_ms.max(0) as u64,
                    },
                );
            }
        }
        self.close_all(CloseReason::new(CloseReason::DELETED, "document deleted"));
        self.registry.remove_actor(&self.name, self.actor_id);
        if let Some(events) = &self.events {
            let _ = events.send(DocEvent::Deleted);
        }
        if let Err(e) = self.store.delete(self.name.clone(), at_ms).await {
            tracing::error!(error = %e, "delete failed");
        }
        self.next_seq = u64::MAX;
        tracing::info!("deleted");
    }

    /// Closes every connection from the server side.
    pub(super) fn close_all(&mut self, reason: CloseReason) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.kick(id, reason.clone());
        }
    }

    /// Closes a connection from the server side.
    pub(super) fn kick(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(link) = self.conns.get_mut(&id) {
            tracing::info!(conn = id, code = reason.code, reason = %reason.reason, "closing connection");
            link.outbound.close(reason);
        }
        self.remove_conn(id);
    }

    pub(super) fn remove_conn(&mut self, id: ConnId) {
        let Some(link) = self.conns.remove(&id) else {
            return;
        };
        self.stats
            .clients
            .store(self.conns.len(), Ordering::Relaxed);
        let removal = self.awareness.remove(link.awareness_clients);
        if !removal.is_empty() {
            let encoded = removal.encode();
            self.broadcast(Bytes::from(encode_awareness(&encoded)), None);
            if let Some(cluster) = &self.cluster {
                cluster.publish(&self.name, Body::Awareness(encoded));
            }
        }
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
