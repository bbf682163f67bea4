//! The map from document names to running actors.
//!
//! A document is loaded on first use and unloads itself when idle. The map's
//! lock is never held across an `.await`.

use super::actor::{ActorSettings, DocActor, LoadedState};
use super::command::{DocCommand, Gone};
use super::mailbox::{mailbox, MailboxReceiver, MailboxSender, Offer, Permit};
use crate::cluster::Cluster;
use crate::names::DocName;
use crate::store::{Store, StoreError};
use crdt_core::{Document, DocumentError, ValidationLimits};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Commands queued for one document before senders wait.
const COMMAND_QUEUE: usize = 1024;

/// Figures of a loaded document readable without asking its actor.
#[derive(Debug, Default)]
pub struct DocStats {
    pub clients: AtomicUsize,
    pub bytes: AtomicU64,
    pub updated_at_ms: AtomicI64,
}

#[derive(Clone)]
pub struct DocHandle {
    tx: MailboxSender,
    pub stats: Arc<DocStats>,
    actor_id: u64,
}

impl DocHandle {
    /// Sends a command whose reply tells the actor served it.
    pub async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> DocCommand,
    ) -> Result<T, Gone> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| Gone)?;
        rx.await.map_err(|_| Gone)
    }

    /// Sends a command that needs no reply; fails if the actor has stopped.
    pub async fn send(&self, command: DocCommand) -> Result<(), Gone> {
        self.tx.send(command).await.map_err(|_| Gone)
    }

    /// Sends without waiting; fails if the actor is gone or its queue is full.
    pub fn try_send(&self, command: DocCommand) -> Result<(), Gone> {
        self.tx.offer(command).map_err(|_| Gone)
    }

    /// Sends without waiting; a full queue hands the command back.
    pub fn offer(&self, command: DocCommand) -> Result<(), Offer> {
        self.tx.offer(command)
    }

    /// Resolves with room for one command in the actor's queue.
    pub fn reserve(
        &self,
    ) -> impl std::future::Future<Output = Result<Permit, Gone>> + Send + 'static {
        self.tx.reserve()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("document not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored document does not load: {0}")]
    Corrupt(#[from] DocumentError),
    #[error("server is shutting down")]
    ShuttingDown,
}

pub struct RegistryOptions {
    pub flush_interval: Duration,
    pub idle_unload: Duration,
    pub compact_log_bytes: u64,
    pub max_doc_bytes: u64,
    pub max_outbound_bytes: usize,
    pub broadcast_window: Duration,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    docs: Mutex<HashMap<DocName, DocHandle>>,
    store: Store,
    settings: Arc<ActorSettings>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    next_actor_id: AtomicU64,
    cluster: OnceLock<Cluster>,
}

impl Registry {
    pub fn new(
        store: Store,
        options: RegistryOptions,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Registry {
            inner: Arc::new(Inner {
                docs: Mutex::new(HashMap::new()),
                store,
                settings: Arc::new(ActorSettings {
                    flush_interval: options.flush_interval,
                    idle_unload: options.idle_unload,
                    compact_log_bytes: options.compact_log_bytes,
                    max_doc_bytes: options.max_doc_bytes,
                    max_outbound_bytes: options.max_outbound_bytes,
                    broadcast_window: options.broadcast_window,
                }),
                tracker,
                shutdown,
                next_actor_id: AtomicU64::new(1),
                cluster: OnceLock::new(),
            }),
        }
    }

    fn docs(&self) -> MutexGuard<'_, HashMap<DocName, DocHandle>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every critical section is a single insert, remove or read).
        self.inner
            .docs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Cluster mode: documents heal from and relay to other nodes.
    pub fn set_cluster(&self, cluster: Cluster) {
        let _ = self.inner.cluster.set(cluster);
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        self.inner.cluster.get()
    }

    pub fn loaded_names(&self) -> Vec<DocName> {
        self.docs().keys().cloned().collect()
    }

    /// The loaded document's handle, if it is loaded.
    pub fn loaded(&self, name: &DocName) -> Option<DocHandle> {
        self.docs().get(name).cloned()
    }

    /// Names and figures of every loaded document.
    pub fn loaded_stats(&self) -> Vec<(DocName, Arc<DocStats>)> {
        self.docs()
            .iter()
            .map(|(name, handle)| (name.clone(), handle.stats.clone()))
            .collect()
    }

    pub fn loaded_count(&self) -> usize {
        self.docs().len()
    }

    /// Returns the running actor, loading the document from storage first if
    /// needed. With `create` false an unknown document is `NotFound`; in
    /// cluster mode only once no peer answered for it either.
    pub async fn open(&self, name: &DocName, create: bool) -> Result<DocHandle, OpenError> {
        match self.open_local(name, create).await {
            Err(OpenError::NotFound) if self.cluster().is_some() => {
                let handle = self.open_local(name, true).await?;
                match handle
                    .request(|reply| DocCommand::AwaitPeers { reply })
                    .await
                {
                    Ok(true) => Ok(handle),
                    _ => Err(OpenError::NotFound),
                }
            }
            other => other,
        }
    }

    /// Like [`Registry::open`], but `NotFound` unless this node stores the
    /// document: for answering peers, which must not create phantoms.
    pub async fn open_stored(&self, name: &DocName) -> Result<DocHandle, OpenError> {
        self.open_local(name, false).await
    }

    async fn open_local(&self, name: &DocName, create: bool) -> Result<DocHandle, OpenError> {
        if let Some(handle) = self.loaded(name) {
            return Ok(handle);
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(OpenError::ShuttingDown);
        }
        let (state, tombstone_ms) = load_state(&self.inner.store, name, Defer::Allowed).await?;
        let state = match (state, create) {
            (Some(state), _) => state,
            (None, true) => LoadedState {
                doc: Document::new(),
                next_seq: 1,
                first_unsnapshotted_seq: 1,
                snapshot_bytes: 0,
                log_bytes: 0,
                updated_at_ms: chrono::Utc::now().timestamp_millis(),
                tombstone_ms,
                snapshot_if_whole: None,
                deferred_state_vector: None,
            },
            (None, false) => return Err(OpenError::NotFound),
        };
        let mut docs = self.docs();
        if let Some(handle) = docs.get(name) {
            // Someone loaded it while we did; theirs wins.
            return Ok(handle.clone());
        }
        let (tx, rx) = mailbox(COMMAND_QUEUE);
        let stats = Arc::new(DocStats::default());
        stats
            .updated_at_ms
            .store(state.updated_at_ms, Ordering::Relaxed);
        stats
            .bytes
            .store(state.snapshot_bytes + state.log_bytes, Ordering::Relaxed);
        let actor_id = self.inner.next_actor_id.fetch_add(1, Ordering::Relaxed);
        let handle = DocHandle {
            tx,
            stats: stats.clone(),
            actor_id,
        };
        docs.insert(name.clone(), handle.clone());
        drop(docs);
        // Boxed, and moved as a box: each layer of the task's future would
        // otherwise keep its own copy of the actor's fields.
        let actor = Box::new(DocActor::new(
            name.clone(),
            actor_id,
            state,
            self.inner.store.clone(),
            self.clone(),
            stats,
            self.inner.settings.clone(),
            self.inner.shutdown.clone(),
            self.inner.cluster.get().cloned(),
        ));
        crate::metrics::document_loaded();
        self.inner.tracker.spawn(async move {
            actor.run(rx).await;
            crate::metrics::document_unloaded();
        });
        Ok(handle)
    }

    /// Runs `f` against the document's actor, reopening it if the actor
    /// unloaded in between.
    pub async fn with_doc<T, F, Fut>(
        &self,
        name: &DocName,
        create: bool,
        f: F,
    ) -> Result<T, OpenError>
    where
        F: Fn(DocHandle) -> Fut,
        Fut: std::future::Future<Output = Result<T, Gone>>,
    {
        for _ in 0..3 {
            let handle = self.open(name, create).await?;
            match f(handle).await {
                Ok(value) => return Ok(value),
                Err(Gone) => tokio::task::yield_now().await,
            }
        }
        // Deleted or unloaded every time we looked: treat as absent.
        Err(OpenError::NotFound)
    }

    /// Called by an idle actor: removes it unless a command is waiting.
    pub(super) fn remove_if_idle(
        &self,
        name: &DocName,
        actor_id: u64,
        rx: &MailboxReceiver,
    ) -> bool {
        let mut docs = self.docs();
        let ours = docs.get(name).is_some_and(|h| h.actor_id == actor_id);
        if ours && rx.is_empty() {
            docs.remove(name);
            true
        } else {
            false
        }
    }

    pub(super) fn remove_actor(&self, name: &DocName, actor_id: u64) {
        let mut docs = self.docs();
        if docs.get(name).is_some_and(|h| h.actor_id == actor_id) {
            docs.remove(name);
        }
    }

    /// Deletes a document everywhere; false if it did not exist.
    pub async fn delete(&self, name: &DocName) -> Result<bool, OpenError> {
        self.delete_with(name, true).await
    }
    /// Another node deleted this document at `at_ms` and it is not loaded
    /// here: drop the stored copy unless it changed since, and keep the tombstone.
    pub async fn delete_stored_if_older(
        &self,
        name: &DocName,
        at_ms: i64,
    ) -> Result<bool, OpenError> {
        Ok(self
            .inner
            .store
            .delete_if_older(name.clone(), at_ms)
            .await?)
    }

    pub async fn tombstone(&self, name: &DocName) -> Result<Option<i64>, OpenError> {
        Ok(self.inner.store.tombstone(name.clone()).await?)
    }

    async fn delete_with(&self, name: &DocName, propagate: bool) -> Result<bool, OpenError> {
        for _ in 0..3 {
            let handle = match self.open(name, false).await {
                Ok(handle) => handle,
                Err(OpenError::NotFound) => return Ok(false),
                Err(e) => return Err(e),
            };
            let deleted = handle
                .request(|reply| DocCommand::Delete { propagate, reply })
                .await;
            if deleted.is_ok() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Whether [`load_state`] may leave a lone snapshot unintegrated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Defer {
    /// When the stored state is one snapshot with its state vector (see `cold.rs`).
    Allowed,
    Never,
}

/// Reads a document's snapshot and log (`None` if nothing is stored), and
/// its tombstone.
pub(super) async fn load_state(
    store: &Store,
    name: &DocName,
    defer: Defer,
) -> Result<(Option<LoadedState>, Option<i64>), OpenError> {
    let stored = store.load(name.clone()).await?;
    let tombstone_ms = stored.tombstone_ms;
    let Some(meta) = stored.meta else {
        return Ok((None, tombstone_ms));
    };
    let log_bytes = stored.log.iter().map(|(_, u)| u.len() as u64).sum();
    let snapshot_bytes = stored.snapshot.as_ref().map_or(0, |s| s.len() as u64);
    let last_logged = stored.log.last().map_or(0, |(seq, _)| *seq);
    let first_logged = stored.log.first().map(|(seq, _)| *seq);
    let next_seq = meta.last_seq.max(last_logged) + 1;
    let lone_snapshot = stored.log.is_empty() && stored.snapshot.is_some();
    let deferred_state_vector = stored
        .snapshot_state_vector
        .filter(|_| lone_snapshot && defer == Defer::Allowed);
    let doc = if deferred_state_vector.is_some() {
        Document::new()
    } else {
        Document::load_stored(
            stored.snapshot.as_deref(),
            stored.log.iter().map(|(_, u)| u.as_slice()),
            ValidationLimits::default(),
        )?
    };
    let snapshot_if_whole = if lone_snapshot { stored.snapshot } else { None };
    Ok((
        Some(LoadedState {
            snapshot_if_whole,
            deferred_state_vector,
            doc,
            next_seq,
            first_unsnapshotted_seq: first_logged.unwrap_or(next_seq),
            snapshot_bytes,
            log_bytes,
            updated_at_ms: meta.updated_at_ms,
            tombstone_ms,
        }),
        tombstone_ms,
    ))
}
