//! The task that owns one loaded document.
//!
//! The actor takes commands from its mailbox one at a time and drives the
//! parts that own the document's state: its [`Content`] (cold or warm), its
//! [`Connections`] (and what is relayed to each), its awareness table, its
//! [`LogPosition`] in storage and, in a cluster, its [`PeerSync`]. The
//! decisions are the parts' own (`need`, `heal`, the relay rules); the actor
//! performs them: storage writes, publishing, replies.
//!
//! **Invariant:** only this task touches the document's `Doc` and awareness;
//! nothing here holds a yrs transaction across an `.await`.

use super::close::CloseReason;
use super::command::{
    ApplyError, BackupState, ConnId, DeleteOrigin, Dialect, DocCommand, DocEvent, DocInfo,
    HistoryCommand, HistoryFailure, SnapshotBody, SnapshotFormat, SnapshotRequest, Subscription,
};
use super::conns::{Connections, Departures};
use super::content::{need, Content, Need, Warm};
use super::directory::Directory;
use super::faults::{self, AfterAppend, Refusal, Writer};
use super::handle::DocStats;
use super::heal::{self, RemoteDelete, RequestAnswer};
use super::load::{self, Loaded, Warmth};
use super::log::LogPosition;
use super::mailbox::MailboxReceiver;
use super::peers::{PeerSync, Presence, Reach};
use super::settings::{ActorSettings, Durability};
use crate::cluster::Cluster;
use crate::config::WebhookEvent;
use crate::history::{NewVersion, Trigger, VersionMeta, Versions};
use crate::names::DocName;
use crate::record::{Record, RecordError};
use crate::store::{Snapshot, Store, StoreError};
use crate::webhooks::Entry;
use bytes::Bytes;
use crdt_core::cluster::{Body, ClusterMessage, PeerState};
use crdt_core::hocuspocus::ServerMessage;
use crdt_core::protocol::{encode_awareness, encode_sync_step1, encode_sync_step2, encode_update};
use crdt_core::{AwarenessTable, AwarenessUpdate, Document, DocumentError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Events buffered per change-feed subscriber before it counts as lagging.
const EVENT_BUFFER: usize = 256;

/// Where an update came from: only local ones are published to peers, and
/// only a connection's own update is kept from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
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

    fn writer(self) -> Writer {
        match self {
            Source::Conn(_) => Writer::Conn,
            Source::Rest => Writer::Rest,
            Source::Peer => Writer::Peer,
        }
    }
}

/// Whether the actor goes on, and if not, whether it may write on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Live,
    /// Deleted: nothing of it may be written again.
    Deleted,
    /// Its stored snapshot does not load: storage keeps what it has.
    Unloadable,
}

/// What every actor shares with the registry that spawns it.
#[derive(Clone)]
pub(super) struct ActorEnv {
    pub(super) store: Store,
    pub(super) directory: Directory,
    pub(super) settings: Arc<ActorSettings>,
    pub(super) shutdown: CancellationToken,
    pub(super) cluster: Option<Cluster>,
    /// The shared record, in cluster mode with `--postgres-url`.
    pub(super) record: Option<Record>,
    /// Documents that left memory without their state on disk (shutdown
    /// while storage failed): the process must not exit 0.
    pub(super) unpersisted: Arc<AtomicUsize>,
}

pub(super) struct DocActor {
    name: DocName,
    actor_id: u64,
    content: Content,
    awareness: AwarenessTable,
    conns: Connections,
    position: LogPosition,
    lifecycle: Lifecycle,
    stats: Arc<DocStats>,
    env: ActorEnv,
    /// Change feed for SSE subscribers; a lagging one resubscribes.
    /// Created on first subscription: its ring buffer would otherwise cost
    /// every loaded document more than the document itself.
    events: Option<broadcast::Sender<DocEvent>>,
    /// Boxed: a single node's documents have none, and should not pay for
    /// its room.
    peers: Option<Box<PeerSync>>,
    /// The store's outage count when storage last held this document's
    /// whole state for sure: if it moved since, appends may have been lost
    /// and only a whole-state compaction is safe.
    persisted_outages: u64,
    /// When this node last changed the document (a client's or REST's
    /// update) with no version recorded since: a version is due once it
    /// has been quiet for `--history-quiet-secs`.
    unversioned_since: Option<Instant>,
    /// Connection events (webhooks) not yet handed to storage.
    connection_events: Vec<Entry>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl DocActor {
    pub(super) fn new(
        name: DocName,
        actor_id: u64,
        loaded: Loaded,
        tombstone_ms: Option<i64>,
        stats: Arc<DocStats>,
        env: ActorEnv,
    ) -> Self {
        let peers = env
            .cluster
            .clone()
            .map(|cluster| Box::new(PeerSync::new(cluster, name.clone(), actor_id, tombstone_ms)));
        let persisted_outages = env.store.outages();
        DocActor {
            name,
            actor_id,
            content: loaded.content,
            awareness: AwarenessTable::default(),
            conns: Connections::new(
                env.settings.max_outbound_bytes,
                env.settings.broadcast_window,
            ),
            position: loaded.position,
            lifecycle: Lifecycle::Live,
            stats,
            env,
            events: None,
            peers,
            persisted_outages,
            unversioned_since: None,
            connection_events: Vec::new(),
        }
    }

    pub(super) async fn run(mut self: Box<Self>, mut rx: MailboxReceiver) {
        let span = tracing::info_span!("doc", doc = %self.name);
        async move {
            tracing::debug!("loaded");
            if self.peers.is_some() {
                // Healing with peers compares content: warm up first.
                if self.warm().is_none() {
                    return;
                }
                if let Some(peers) = &self.peers {
                    // Subscribe before asking, so no answer is missed.
                    Box::pin(peers.subscribe()).await;
                }
                self.request_sync(Reach::EveryNode, Presence::Ask);
            }
            // Only in cluster mode: an interval is a boxed timer.
            let mut resync = self.peers.as_ref().map(|peers| {
                let every = peers.resync_interval();
                tokio::time::interval_at(Instant::now() + every, every)
            });
            let mut idle_since = Some(Instant::now());
            loop {
                self.write_connection_events().await;
                let idle_deadline = idle_since.map(|t| t + self.env.settings.idle_unload);
                let waiter_deadline = self.peers.as_ref().and_then(|peers| peers.next_deadline());
                let flush_deadline = self.conns.flush_deadline();
                let version_deadline = self
                    .unversioned_since
                    .map(|t| t + self.env.settings.history_quiet);
                tokio::select! {
                    command = rx.recv() => match command {
                        Some(command) => {
                            if self.content.is_cold() && need(&command) == Need::Content {
                                // Integrating takes a while: let the
                                // connections just answered from the
                                // snapshot write it out first.
                                tokio::task::yield_now().await;
                            }
                            // Boxed: the futures of the rarer commands
                            // (delete, reload, compaction) would otherwise
                            // size every idle document's task.
                            Box::pin(self.handle(command)).await;
                            if self.lifecycle != Lifecycle::Live {
                                return;
                            }
                            if self.conns.flushes_when_idle() && rx.is_empty() {
                                self.flush();
                            }
                            idle_since = self.conns.is_empty().then(Instant::now);
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
                    _ = tick(&mut resync) => self.request_sync(Reach::Loaded, Presence::Skip),
                    _ = sleep_until(flush_deadline) => self.flush(),
                    _ = sleep_until(version_deadline) => {
                        let _ = Box::pin(self.record_version(Trigger::Auto, None)).await;
                    }
                    _ = sleep_until(idle_deadline) => {
                        // Change-feed subscribers keep a document loaded too,
                        // and so does storage that cannot take its state:
                        // it leaves memory only once that is on disk.
                        if self.subscribers() == 0
                            && Box::pin(self.persist()).await.is_ok()
                            && self.env.directory.remove_if_idle(&self.name, self.actor_id, &rx) {
                            rx.close();
                            // Commands that raced in are dropped: their reply
                            // channels close and the senders open the document anew.
                            while rx.try_recv().is_some() {}
                            tracing::debug!("unloading idle document");
                            break;
                        }
                        idle_since = Some(Instant::now());
                    }
                    _ = self.env.shutdown.cancelled() => break,
                }
            }
            self.flush();
            self.write_connection_events().await;
            if let Some(peers) = &self.peers {
                peers.unsubscribe();
            }
            if self.unversioned_since.is_some() {
                let _ = Box::pin(self.record_version(Trigger::Unload, None)).await;
            }
            Box::pin(self.persist_before_exit()).await;
            if let Some(record) = &self.env.record {
                record.hint_compaction(self.name.as_str());
            }
        }
        .instrument(span)
        .await
    }

    /// The warm document, integrating a cold snapshot first. None if the
    /// snapshot does not load: every connection is then closed (1011) and
    /// the actor stops without writing anything, so that storage keeps what
    /// it has.
    fn warm(&mut self) -> Option<&mut Warm> {
        if let Err(e) = self.content.warm_up() {
            tracing::error!(error = %e, "stored snapshot does not load; closing the document");
            self.close_all(CloseReason::new(
                CloseReason::INTERNAL,
                "stored document does not load",
            ));
            self.env.directory.remove(&self.name, self.actor_id);
            self.lifecycle = Lifecycle::Unloadable;
            return None;
        }
        self.content.as_warm_mut()
    }

    /// Change-feed subscribers right now.
    fn subscribers(&self) -> usize {
        self.events
            .as_ref()
            .map_or(0, broadcast::Sender::receiver_count)
    }

    async fn handle(&mut self, command: DocCommand) {
        if need(&command) == Need::Content && self.warm().is_none() {
            return;
        }
        match command {
            DocCommand::Connect {
                id,
                outbound,
                dialect,
                who,
                reply,
            } => {
                let mut first = Vec::with_capacity(2);
                // A Hocuspocus provider answers every SyncStep1 with a
                // SyncStep2, whose ack would zero its unsynced count early:
                // it gets one only in answer to its own SyncStep1.
                if dialect == Dialect::YWebsocket {
                    first.push(Bytes::from(encode_sync_step1(
                        &self.content.state_vector_v1(),
                    )));
                }
                let present = self.awareness.snapshot();
                if !present.is_empty() {
                    first.push(Bytes::from(encode_awareness(&present.encode())));
                }
                let departed = self.conns.join(id, outbound, dialect, who, first);
                self.connection_event(WebhookEvent::ConnectionOpened, dialect);
                self.settle(departed);
                self.publish_clients();
                let _ = reply.send(());
            }
            DocCommand::Disconnect { id } => {
                let departed = self.conns.leave(id).into_iter().collect();
                self.settle(departed);
            }
            DocCommand::SyncStep1 { id, state_vector } => {
                if self.conns.dialect(id) == Some(Dialect::Hocuspocus) {
                    // Hocuspocus answers with its own SyncStep1 first.
                    let step1 = encode_sync_step1(&self.content.state_vector_v1());
                    self.send_to(id, Bytes::from(step1));
                }
                let frame = if state_vector.is_empty() {
                    self.content.full_sync_frame()
                } else {
                    let Some(warm) = self.warm() else { return };
                    Bytes::from(encode_sync_step2(&warm.doc().diff_v1(&state_vector)))
                };
                self.send_to(id, frame);
            }
            DocCommand::Update { id, update } => {
                let applied = self.apply(update, Source::Conn(id)).await;
                if applied.is_ok() && self.conns.dialect(id) == Some(Dialect::Hocuspocus) {
                    // Appended (on disk with --flush-interval-ms 0) and
                    // relayed: what Quire acknowledges.
                    self.send_to(id, sync_status(true));
                }
                if let Err(e) = applied {
                    let (reason, label) = match e {
                        ApplyError::TooLarge { .. } => (
                            CloseReason::new(CloseReason::TOO_BIG, e.to_string()),
                            "doc_too_large",
                        ),
                        ApplyError::Document(_) => (
                            CloseReason::new(CloseReason::INVALID_PAYLOAD, e.to_string()),
                            "bad_update",
                        ),
                        ApplyError::StorageUnavailable => match faults::refusal(Writer::Conn) {
                            Refusal::Close(reason) => (reason, "storage_unavailable"),
                            Refusal::Unavailable | Refusal::Ignore => return,
                        },
                    };
                    crate::metrics::rejected_frame(label);
                    let departed = self.conns.kick(id, reason);
                    self.settle(departed.into_iter().collect());
                }
            }
            DocCommand::CheckContained { id, update } => {
                let Some(warm) = self.warm() else { return };
                match warm.doc().contains_update_v1(&update) {
                    Ok(held) => self.send_to(id, sync_status(held)),
                    Err(e) => {
                        crate::metrics::rejected_frame("bad_update");
                        let reason = CloseReason::new(CloseReason::INVALID_PAYLOAD, e.to_string());
                        let departed = self.conns.kick(id, reason);
                        self.settle(departed.into_iter().collect());
                    }
                }
            }
            DocCommand::Stateless { from, payload } => {
                if let Some(peers) = &self.peers {
                    peers.publish_stateless(payload.to_string());
                }
                self.relay_stateless(from, &payload);
            }
            DocCommand::Awareness { id, update } => self.apply_awareness(id, *update),
            DocCommand::QueryAwareness { id } => {
                let present = self.awareness.snapshot();
                self.send_to(id, Bytes::from(encode_awareness(&present.encode())));
            }
            DocCommand::Info { reply } => {
                let _ = reply.send(DocInfo {
                    bytes: self.position.bytes(),
                    updated_at_ms: self.position.updated_at_ms(),
                    clients: self.conns.len(),
                    state_vector: self.content.state_vector_v1(),
                });
            }
            DocCommand::Snapshot { request, reply } => {
                if let Some(warm) = self.warm() {
                    let _ = reply.send(snapshot(warm.doc(), *request));
                }
            }
            DocCommand::ApplyUpdate { update, reply } => {
                let _ = reply.send(self.apply(update, Source::Rest).await);
            }
            DocCommand::Delete { origin, reply } => {
                let _ = reply.send(self.delete(now_ms(), origin).await);
            }
            DocCommand::Subscribe { reply } => {
                let Some(warm) = self.warm() else { return };
                let snapshot = warm.doc().encode_state_v1();
                let _ = reply.send(Subscription {
                    snapshot,
                    events: self
                        .events
                        .get_or_insert_with(|| broadcast::channel(EVENT_BUFFER).0)
                        .subscribe(),
                });
            }
            DocCommand::Remote(message) => self.on_remote(*message).await,
            DocCommand::ClusterResync => {
                self.request_sync(Reach::EveryNode, Presence::Ask);
                self.publish_local_awareness();
            }
            DocCommand::PeerGone { node } => self.drop_presence_of(&node),
            DocCommand::Persist { reply } => {
                let persisted = self.persist().await;
                if let Err(e) = &persisted {
                    tracing::debug!(error = %e, "not persisted yet; storage failed again");
                }
                let _ = reply.send(persisted.is_ok());
            }
            DocCommand::Backup { reply } => {
                let (update, state_vector_v1) = self.content.whole_state();
                let _ = reply.send(BackupState {
                    update,
                    state_vector_v1,
                    updated_at_ms: self.position.updated_at_ms(),
                });
            }
            DocCommand::History(command) => self.history(*command).await,
            DocCommand::AwaitPeers { reply } => {
                let empty = self.is_empty();
                match &mut self.peers {
                    Some(peers) if empty => peers.wait(reply),
                    _ => {
                        let _ = reply.send(!empty);
                    }
                }
            }
        }
    }

    /// Applies an untrusted update, logs it, relays it to every connection
    /// but its origin. Nothing is logged or relayed unless it applied and
    /// changed the document.
    async fn apply(&mut self, update: Bytes, source: Source) -> Result<(), ApplyError> {
        let origin = source.conn();
        // Not while storage is failing: see `faults.rs`.
        if !self.env.store.is_healthy() {
            return Err(ApplyError::StorageUnavailable);
        }
        let limit = self.env.settings.max_doc_bytes;
        if self.position.would_exceed(update.len(), limit) {
            return Err(ApplyError::TooLarge { limit });
        }
        // `handle` warmed the document for this command already; a
        // snapshot that does not load has stopped the actor.
        let Some(warm) = self.warm() else {
            return Err(ApplyError::Document(DocumentError::Poisoned));
        };
        let started = std::time::Instant::now();
        let before = warm.doc().state_vector();
        match warm.apply_update_v1(&update) {
            Ok(true) => {
                // Before it is logged: the document must still encode into
                // something that loads, or a restart would lose it.
                if let Err(e) = warm.doc().verify_since(&before) {
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
        let seq = self.position.append(update.len(), now_ms());
        self.publish_stats();
        let meta = self.position.meta();
        let (store, name) = (&self.env.store, self.name.clone());
        let durability = self.env.settings.durability();
        let stored = match durability {
            Durability::BeforeRelay => store.append_durable(name, seq, update.clone(), meta).await,
            Durability::GroupCommit => store.append(name, seq, update.clone(), meta).await,
        };
        if let Err(e) = &stored {
            // The storage thread logged the failure once; one line per
            // refused update would be a line per keystroke.
            tracing::debug!(error = %e, seq, "update not logged");
        }
        if faults::after_append(durability, stored.is_ok()) == AfterAppend::Withhold {
            return Err(ApplyError::StorageUnavailable);
        }
        if source != Source::Peer {
            // The node that took the edit records its versions.
            self.unversioned_since = Some(Instant::now());
        }
        let departed = self
            .conns
            .relay_update(Bytes::from(encode_update(&update)), origin);
        self.settle(departed);
        if let Some(peers) = &mut self.peers {
            if source != Source::Peer {
                peers.publish_update(update.to_vec());
            }
            peers.resolve_waiters();
        }
        if let Some(events) = self.events.as_ref().filter(|e| e.receiver_count() > 0) {
            let _ = events.send(DocEvent::Update(update));
        }
        if self
            .position
            .wants_compaction(self.env.settings.compact_log_bytes)
        {
            // Failures are the storage thread's to log, and the recovery
            // compaction's to make good.
            let _ = self.compact(false, false).await;
        }
        Ok(())
    }

    /// Records the document's current state as a version. A failure is
    /// logged (automatic versions) and returned (requested ones); the
    /// document stays due for a version.
    async fn record_version(
        &mut self,
        trigger: Trigger,
        label: Option<String>,
    ) -> Result<VersionMeta, HistoryFailure> {
        let Some(warm) = self.warm() else {
            return Err(HistoryFailure::Apply(ApplyError::Document(
                DocumentError::Poisoned,
            )));
        };
        let started = std::time::Instant::now();
        let snapshot = crdt_core::history::snapshot_v1(warm.doc());
        let version = NewVersion {
            created_at_ms: now_ms(),
            label,
            trigger,
            clients: self.conns.len().min(u32::MAX as usize) as u32,
            users: self.conns.who(crate::history::MAX_USERS),
            snapshot,
        };
        let versions = Versions::new(&self.env.store, self.env.record.as_ref());
        let keep = self.env.settings.history_max_versions;
        match versions.save(&self.name, version, keep).await {
            Ok(meta) => {
                self.unversioned_since = None;
                crate::metrics::version_recorded(trigger.as_str(), started.elapsed());
                tracing::debug!(id = meta.id, trigger = trigger.as_str(), "version recorded");
                Ok(meta)
            }
            Err(e) => {
                tracing::warn!(error = %e, trigger = trigger.as_str(), "version not recorded");
                // Retried after the next quiet period, not in a loop.
                if self.unversioned_since.is_some() {
                    self.unversioned_since = Some(Instant::now());
                }
                Err(HistoryFailure::Storage(e))
            }
        }
    }

    async fn history(&mut self, command: HistoryCommand) {
        match command {
            HistoryCommand::Save { label, reply } => {
                let _ = reply.send(self.record_version(Trigger::Manual, label).await);
            }
            HistoryCommand::Export {
                snapshot: version,
                format,
                reply,
            } => {
                let Some(warm) = self.warm() else { return };
                let body = crdt_core::history::document_at(warm.doc(), &version)
                    .map(|past| {
                        snapshot(
                            &past,
                            SnapshotRequest {
                                format,
                                state_vector: None,
                            },
                        )
                    })
                    .map_err(HistoryFailure::from);
                let _ = reply.send(body);
            }
            HistoryCommand::Diff {
                from,
                to,
                root,
                reply,
            } => {
                let Some(warm) = self.warm() else { return };
                let _ = reply.send(diff(warm.doc(), &from, to.as_deref(), root));
            }
            HistoryCommand::Restore {
                id,
                snapshot: version,
                reply,
            } => {
                let _ = reply.send(self.restore(id, &version).await);
            }
        }
    }

    /// One update that brings the live document back to `version`,
    /// applied like a REST update (persisted, relayed to every client and
    /// node), then the result recorded as a version.
    async fn restore(&mut self, id: u64, version: &[u8]) -> Result<VersionMeta, HistoryFailure> {
        let Some(warm) = self.warm() else {
            return Err(HistoryFailure::Apply(ApplyError::Document(
                DocumentError::Poisoned,
            )));
        };
        let past = crdt_core::history::document_at(warm.doc(), version)?;
        let update = crdt_core::history::restore_update_v1(warm.doc(), &past)?;
        drop(past);
        if let Some(update) = update {
            self.apply(Bytes::from(update), Source::Rest).await?;
        }
        self.record_version(Trigger::Restore, Some(format!("restore of version {id}")))
            .await
    }

    /// Applies a connection's presence and relays what changed to every
    /// connection, its sender included, as y-websocket's server does: a
    /// provider that hears nothing for 30 s reconnects, and a lone
    /// editor's own renewals (every 15 s) are all it would hear.
    fn apply_awareness(&mut self, id: ConnId, update: AwarenessUpdate) {
        let change = self.awareness.apply(update);
        if change.is_empty() {
            return;
        }
        let introduced: Vec<u64> = change
            .added
            .iter()
            .chain(&change.updated)
            .copied()
            .collect();
        self.conns.note_awareness(id, &introduced, &change.removed);
        let encoded = change.effective.encode();
        self.broadcast(Bytes::from(encode_awareness(&encoded)));
        if let Some(peers) = &self.peers {
            peers.publish_awareness(encoded);
        }
    }

    fn publish_stats(&self) {
        self.stats
            .bytes
            .store(self.position.bytes(), Ordering::Relaxed);
        self.stats
            .updated_at_ms
            .store(self.position.updated_at_ms(), Ordering::Relaxed);
    }

    fn publish_clients(&self) {
        self.stats
            .clients
            .store(self.conns.len(), Ordering::Relaxed);
    }

    /// Merges the log into a fresh snapshot (none if nothing was logged
    /// since the last, unless `force`); `durable` waits until it is on disk.
    async fn compact(&mut self, force: bool, durable: bool) -> Result<(), StoreError> {
        if self.lifecycle != Lifecycle::Live {
            return Ok(());
        }
        // A cold document is its snapshot already; a warm one may have
        // applied updates since.
        let Content::Warm(warm) = &self.content else {
            return Ok(());
        };
        let doc = warm.doc();
        if let Err(e) = doc.verify_roundtrip() {
            // Keep the log, which loads; never replace it with a snapshot that does not.
            tracing::error!(error = %e, "snapshot would not reload; compaction skipped");
            return Ok(());
        }
        let snapshot = Snapshot {
            update: doc.encode_state_v1(),
            state_vector_v1: doc.state_vector_v1(),
        };
        let compaction = if force {
            self.position.compact_all(snapshot.update.len())
        } else {
            match self.position.compact(snapshot.update.len()) {
                Some(compaction) => compaction,
                None => return Ok(()),
            }
        };
        self.publish_stats();
        let meta = self.position.meta();
        let (store, name) = (&self.env.store, self.name.clone());
        let written = if durable {
            store
                .compact_durable(name, snapshot, compaction.through_seq, meta)
                .await
        } else {
            store
                .compact(name, snapshot, compaction.through_seq, meta)
                .await
        };
        match &written {
            Ok(()) => tracing::debug!(
                through_seq = compaction.through_seq,
                bytes = meta.bytes,
                "compacted"
            ),
            // Storage logged the outage; this document persists on recovery.
            Err(e) => tracing::debug!(error = %e, "compaction failed"),
        }
        written
    }

    /// Makes sure storage holds the whole document: a compaction of what
    /// is new, or of everything if storage failed since it last held it.
    async fn persist(&mut self) -> Result<(), StoreError> {
        let outages = self.env.store.outages();
        let force = outages != self.persisted_outages;
        self.compact(force, true).await?;
        if force {
            // Appends lost in the failure were never spooled either: the
            // shared record gets the whole state.
            if self.env.record.is_some() {
                if let Some(warm) = self.warm() {
                    let state = warm.doc().encode_state_v1();
                    self.env.store.spool_state(self.name.clone(), state).await?;
                }
            }
            tracing::info!("persisted the whole document after a storage failure");
        }
        self.persisted_outages = outages;
        Ok(())
    }

    /// Leaving memory: persist, retrying while storage fails, for
    /// `persist_retry`. A document that still cannot is logged by name and
    /// counted, so that the process exits non-zero.
    async fn persist_before_exit(&mut self) {
        let deadline = Instant::now() + self.env.settings.persist_retry;
        let mut health = self.env.store.health_changes();
        loop {
            let error = match self.persist().await {
                Ok(()) => return,
                Err(e) => e,
            };
            if matches!(error, StoreError::Closed) || Instant::now() >= deadline {
                self.env.unpersisted.fetch_add(1, Ordering::AcqRel);
                tracing::error!(doc = %self.name, error = %error, "document NOT persisted: its changes since storage failed are lost");
                return;
            }
            // Again once storage recovered, or at the deadline; never faster
            // than every 100 ms.
            let _ = tokio::time::timeout_at(deadline, health.wait_for(|healthy| *healthy)).await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// After yrs panicked mid-transaction the in-memory document is suspect;
    /// storage holds every update that applied before, so rebuild from it.
    async fn reload(&mut self) {
        let doc = match load::load(
            &self.env.store,
            self.env.record.as_ref(),
            &self.name,
            Warmth::Warm,
        )
        .await
        {
            Ok(stored) => match stored.doc.map(|loaded| loaded.content) {
                Some(Content::Warm(warm)) => {
                    tracing::warn!("reloaded document after engine panic");
                    warm.into_doc()
                }
                // Never stored: nothing applied before, so nothing is lost.
                Some(Content::Cold(_)) | None => Document::new(),
            },
            Err(e) => {
                tracing::error!(error = %e, "reload after engine panic failed");
                return;
            }
        };
        if let Content::Warm(warm) = &mut self.content {
            warm.replace(doc);
        }
    }

    /// Deletes the document (closing its sockets with 4404) and leaves a
    /// tombstone dated `at_ms`; one decided here is announced to every other node.
    async fn delete(&mut self, at_ms: i64, origin: DeleteOrigin) -> Result<(), RecordError> {
        // The shared record decides: if it cannot, nothing changes here.
        if let (Some(record), DeleteOrigin::Here) = (&self.env.record, origin) {
            record.delete(self.name.as_str(), at_ms).await?;
        }
        if let (Some(peers), DeleteOrigin::Here) = (&self.peers, origin) {
            peers.publish_delete(at_ms);
        }
        self.close_all(CloseReason::new(CloseReason::DELETED, "document deleted"));
        self.env.directory.remove(&self.name, self.actor_id);
        if let Some(events) = &self.events {
            let _ = events.send(DocEvent::Deleted);
        }
        if let Err(e) = self.env.store.delete(self.name.clone(), at_ms).await {
            tracing::error!(error = %e, "delete failed");
        }
        self.lifecycle = Lifecycle::Deleted;
        tracing::info!("deleted");
        Ok(())
    }

    // --- sending: every send settles the connections that left ----------

    fn flush(&mut self) {
        let departed = self.conns.flush();
        self.settle(departed);
    }

    fn broadcast(&mut self, frame: Bytes) {
        let departed = self.conns.broadcast(frame);
        self.settle(departed);
    }

    /// A Hocuspocus stateless body to every Hocuspocus session but `from`.
    fn relay_stateless(&mut self, from: Option<ConnId>, payload: &str) {
        let body = Bytes::from(ServerMessage::Stateless(payload).encode_body());
        let departed = self.conns.broadcast_to(Dialect::Hocuspocus, from, body);
        self.settle(departed);
    }

    fn send_to(&mut self, id: ConnId, frame: Bytes) {
        let departed = self.conns.send_to(id, frame);
        self.settle(departed);
    }

    fn close_all(&mut self, reason: CloseReason) {
        let departed = self.conns.close_all(reason);
        self.settle(departed);
    }

    /// Removes the presence of connections that left and tells everyone
    /// else, which may find more connections gone.
    fn settle(&mut self, mut departed: Departures) {
        if departed.is_empty() {
            return;
        }
        while let Some(departure) = departed.pop() {
            self.connection_event(WebhookEvent::ConnectionClosed, departure.dialect);
            let removal = self.awareness.remove(departure.awareness_clients);
            if removal.is_empty() {
                continue;
            }
            let encoded = removal.encode();
            departed.extend(
                self.conns
                    .broadcast(Bytes::from(encode_awareness(&encoded))),
            );
            if let Some(peers) = &self.peers {
                peers.publish_awareness(encoded);
            }
        }
        self.publish_clients();
    }

    /// Queues a connection event, if webhooks want it; written by
    /// [`Self::write_connection_events`] before the actor waits again.
    fn connection_event(&mut self, kind: WebhookEvent, dialect: Dialect) {
        let Some(events) = &self.env.settings.connection_events else {
            return;
        };
        let wanted = match kind {
            WebhookEvent::ConnectionOpened => events.opened,
            _ => events.closed,
        };
        if wanted {
            self.connection_events.extend(events.entries(
                kind,
                self.name.as_str(),
                dialect.protocol(),
                self.conns.len(),
                now_ms(),
            ));
        }
    }

    async fn write_connection_events(&mut self) {
        if !self.connection_events.is_empty() {
            let entries = std::mem::take(&mut self.connection_events);
            Box::pin(self.env.store.enqueue_webhooks(entries)).await;
        }
    }

    // --- the cluster side -------------------------------------------------

    fn is_empty(&self) -> bool {
        self.position.bytes() == 0
            && self
                .content
                .as_warm()
                .is_some_and(|warm| warm.doc().state_vector().is_empty())
    }

    fn peer_state(&self) -> Option<PeerState> {
        let updated_at_ms = self.position.updated_at_ms().max(0) as u64;
        self.content
            .as_warm()
            .map(|warm| warm.doc().peer_state(updated_at_ms))
    }

    fn request_sync(&self, reach: Reach, presence: Presence) {
        if let (Some(peers), Some(state)) = (&self.peers, self.peer_state()) {
            peers.request_sync(state, reach, presence);
        }
    }

    /// Presence of this node's own clients, for peers that just arrived.
    fn publish_local_awareness(&self) {
        let Some(peers) = &self.peers else {
            return;
        };
        let update = self
            .awareness
            .snapshot_of(self.conns.local_awareness_clients());
        if !update.is_empty() {
            peers.publish_awareness(update.encode());
        }
    }

    async fn on_remote(&mut self, message: ClusterMessage) {
        let (Some(peers), Some(ours)) = (&self.peers, self.peer_state()) else {
            return;
        };
        match message.body {
            Body::Update(update) => self.apply_remote(update).await,
            Body::Awareness(bytes) => match AwarenessUpdate::decode(&bytes) {
                Ok(update) => {
                    if let Some(peers) = &mut self.peers {
                        let entries = update.entries.iter().map(|e| (e.client, e.state.is_some()));
                        peers.note_presence(&message.origin, entries);
                    }
                    let change = self.awareness.apply(update);
                    if !change.is_empty() {
                        let frame = encode_awareness(&change.effective.encode());
                        self.broadcast(Bytes::from(frame));
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
                if peers.is_stale(state.updated_at_ms) {
                    peers.announce_tombstone();
                    return;
                }
                if let RequestAnswer::Reply { with_diff } = heal::answer_request(&ours, &state) {
                    let update = match (with_diff, self.content.as_warm()) {
                        (true, Some(warm)) => warm.doc().diff_v1(&state.state_vector),
                        _ => Vec::new(),
                    };
                    peers.reply(message.origin, update, Some(ours));
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
                if !peers.is_us(&target) {
                    return;
                }
                if state
                    .as_ref()
                    .is_some_and(|s| peers.is_stale(s.updated_at_ms))
                {
                    // Their copy predates our deletion: do not resurrect it.
                    peers.announce_tombstone();
                    return;
                }
                if !update.is_empty() {
                    self.apply_remote(update).await;
                }
                if let Some(theirs) = state {
                    self.answer_peer_state(message.origin, theirs);
                }
            }
            Body::Stateless(payload) => self.relay_stateless(None, &payload),
            Body::Deleted { at_ms } => {
                match heal::remote_delete(self.position.updated_at_ms(), at_ms) {
                    RemoteDelete::Delete => {
                        let at_ms = i64::try_from(at_ms).unwrap_or(i64::MAX);
                        // A peer's delete touches no shared record: it cannot fail.
                        let _ = self.delete(at_ms, DeleteOrigin::Peer).await;
                    }
                    RemoteDelete::KeepNewer => {
                        if let Some(peers) = &mut self.peers {
                            peers.remember_tombstone(i64::try_from(at_ms).unwrap_or(i64::MAX));
                        }
                    }
                }
            }
        }
    }

    /// A peer node is dead: the presence it relayed goes, for this node's
    /// clients only. Peers are not told: each notices the silence itself.
    fn drop_presence_of(&mut self, node: &str) {
        let local = self.conns.local_awareness_clients();
        let Some(peers) = &mut self.peers else {
            return;
        };
        let clients = peers.forget_node(node, &local);
        let removal = self.awareness.remove(clients);
        if removal.is_empty() {
            return;
        }
        tracing::info!(
            node,
            clients = removal.entries.len(),
            "dropping the presence a dead node relayed"
        );
        self.broadcast(Bytes::from(encode_awareness(&removal.encode())));
    }

    /// The peer told us its state in a reply: send what it lacks, once.
    fn answer_peer_state(&self, peer: String, theirs: PeerState) {
        let (Some(peers), Some(ours), Some(warm)) =
            (&self.peers, self.peer_state(), self.content.as_warm())
        else {
            return;
        };
        if heal::send_diff_after_reply(&ours, &theirs) {
            peers.reply(peer, warm.doc().diff_v1(&theirs.state_vector), None);
        }
    }

    async fn apply_remote(&mut self, update: Vec<u8>) {
        match self.apply(Bytes::from(update), Source::Peer).await {
            Ok(()) => {}
            // Healed by state vector once storage works again.
            Err(ApplyError::StorageUnavailable) => {
                debug_assert_eq!(faults::refusal(Source::Peer.writer()), Refusal::Ignore);
                tracing::debug!("update from a peer refused: storage unavailable");
            }
            Err(e) => tracing::warn!(error = %e, "update from a peer did not apply"),
        }
    }

    /// Answers expired `AwaitPeers` callers. True when the document is
    /// still empty and unused, and has been removed from the directory:
    /// nobody holds it, and it must not linger as a phantom.
    fn expire_peer_waiters(&mut self, rx: &MailboxReceiver) -> bool {
        let empty = self.is_empty();
        let Some(peers) = &mut self.peers else {
            return false;
        };
        peers.expire_waiters(!empty)
            && empty
            && self.conns.is_empty()
            && self
                .env
                .directory
                .remove_if_idle(&self.name, self.actor_id, rx)
    }
}

/// A Hocuspocus SyncStatus body; the session's socket adds the address.
fn sync_status(applied: bool) -> Bytes {
    Bytes::from(ServerMessage::SyncStatus(applied).encode_body())
}

fn snapshot(doc: &Document, request: SnapshotRequest) -> SnapshotBody {
    match request.format {
        SnapshotFormat::Yjs => SnapshotBody::Binary(match &request.state_vector {
            Some(sv) => doc.diff_v1(sv),
            None => doc.encode_state_v1(),
        }),
        SnapshotFormat::YjsV2 => SnapshotBody::Binary(match &request.state_vector {
            Some(sv) => doc.diff_v2(sv),
            None => doc.encode_state_v2(),
        }),
        SnapshotFormat::Json => SnapshotBody::Json(doc.to_json()),
        SnapshotFormat::Text { root } => match doc.root_text(&root) {
            Some(text) => SnapshotBody::Text(text),
            None => SnapshotBody::NoSuchRoot(root),
        },
    }
}

/// The text diff of `root` from the version `from` to `to` (or the live
/// document).
fn diff(
    live: &Document,
    from: &[u8],
    to: Option<&[u8]>,
    root: String,
) -> Result<Vec<crdt_core::history::DiffRun>, HistoryFailure> {
    use crdt_core::history::{diff_text, document_at, text_diff};
    let old = document_at(live, from)?;
    let old = diff_text(&old, &root).ok_or_else(|| HistoryFailure::NotText(root.clone()))?;
    let new = match to {
        Some(to) => diff_text(&document_at(live, to)?, &root),
        None => diff_text(live, &root),
    }
    .ok_or(HistoryFailure::NotText(root))?;
    Ok(text_diff(&old, &new))
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
