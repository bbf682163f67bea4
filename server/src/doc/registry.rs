//! Documents by name: loads a document on first use into a running actor,
//! finds it again while it runs, deletes it.
//!
//! A document unloads itself when idle; the next use loads it anew.

use super::actor::{ActorEnv, DocActor};
use super::command::{BackupState, DeleteOrigin, DocCommand, Gone};
use super::content::Content;
use super::directory::Directory;
use super::handle::{DocHandle, DocStats};
use super::load::{self, Loaded, OpenError, Warmth};
use super::log::LogPosition;
use super::mailbox::mailbox;
use super::settings::ActorSettings;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::names::DocName;
use crate::record::Record;
use crate::store::Store;
use crdt_core::Document;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Commands queued for one document before senders wait.
const COMMAND_QUEUE: usize = 1024;

/// What opening a name that nothing is stored under does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfAbsent {
    /// Starts an empty document (a client connecting, a write).
    Create,
    /// Fails with [`OpenError::NotFound`] (reads, deletes). In cluster mode
    /// only once no peer answered for it either.
    NotFound,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    directory: Directory,
    store: Store,
    settings: Arc<ActorSettings>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    next_actor_id: AtomicU64,
    cluster: OnceLock<Cluster>,
    record: OnceLock<Record>,
    unpersisted: Arc<AtomicUsize>,
    /// Loaded documents still to persist their whole state since storage
    /// last recovered: the node is not ready until none is left.
    recovering: AtomicUsize,
}

impl Registry {
    pub fn new(
        store: Store,
        config: &Config,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Registry {
            inner: Arc::new(Inner {
                directory: Directory::default(),
                store,
                settings: Arc::new(ActorSettings::from_config(config)),
                tracker,
                shutdown,
                next_actor_id: AtomicU64::new(1),
                cluster: OnceLock::new(),
                record: OnceLock::new(),
                unpersisted: Arc::new(AtomicUsize::new(0)),
                recovering: AtomicUsize::new(0),
            }),
        }
    }

    /// Has every loaded document persist its whole state each time storage
    /// recovers from a failure: what it applied while appends failed is in
    /// memory only. Runs until shutdown.
    pub fn persist_on_recovery(&self) {
        let registry = self.clone();
        let mut health = self.inner.store.health_changes();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            loop {
                tokio::select! {
                    changed = health.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    _ = shutdown.cancelled() => return,
                }
                // Until every loaded document answered that it is on disk,
                // or storage failed again.
                while *health.borrow_and_update() {
                    registry.persist_all().await;
                    if registry.recovering() == 0 {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        });
    }

    /// Asks every loaded document to persist, all at once so that their
    /// writes share group commits, then counts the answers down. A document
    /// that could not (storage failed again) keeps the count above zero
    /// until the next recovery starts over.
    async fn persist_all(&self) {
        let names = self.loaded_names();
        self.inner.recovering.store(names.len(), Ordering::Release);
        let mut answers = Vec::with_capacity(names.len());
        for name in names {
            let Some(handle) = self.loaded(&name) else {
                // Gone: it persisted on its way out.
                self.inner.recovering.fetch_sub(1, Ordering::AcqRel);
                continue;
            };
            let (reply, answer) = tokio::sync::oneshot::channel();
            if handle.send(DocCommand::Persist { reply }).await.is_err() {
                self.inner.recovering.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            answers.push(answer);
        }
        for answer in answers {
            // An actor that stopped before answering persisted on its way
            // out, or counted itself as unpersisted.
            if answer.await.unwrap_or(true) {
                self.inner.recovering.fetch_sub(1, Ordering::AcqRel);
            }
        }
        match self.inner.recovering.load(Ordering::Acquire) {
            0 => tracing::info!("every loaded document is on disk again: ready"),
            left => tracing::warn!(left, "loaded documents not yet on disk again; retrying"),
        }
    }

    /// Loaded documents that have not yet persisted their whole state since
    /// storage recovered.
    pub fn recovering(&self) -> usize {
        self.inner.recovering.load(Ordering::Acquire)
    }

    /// Documents that stopped without their state on disk (at shutdown,
    /// while storage failed).
    pub fn unpersisted(&self) -> usize {
        self.inner.unpersisted.load(Ordering::Acquire)
    }

    /// Cluster mode: documents heal from and relay to other nodes.
    pub fn set_cluster(&self, cluster: Cluster) {
        let _ = self.inner.cluster.set(cluster);
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        self.inner.cluster.get()
    }

    /// With `--postgres-url`: documents load from, and are deleted in, the
    /// shared record. Set before the first document opens.
    pub fn set_record(&self, record: Record) {
        let _ = self.inner.record.set(record);
    }

    pub fn record(&self) -> Option<&Record> {
        self.inner.record.get()
    }

    pub fn loaded_names(&self) -> Vec<DocName> {
        self.inner.directory.names()
    }

    /// The loaded document's handle, if it is loaded.
    pub fn loaded(&self, name: &DocName) -> Option<DocHandle> {
        self.inner.directory.get(name)
    }

    /// Names and figures of every loaded document.
    pub fn loaded_stats(&self) -> Vec<(DocName, Arc<DocStats>)> {
        self.inner.directory.stats()
    }

    /// Returns the running actor, loading the document from storage first if
    /// needed.
    pub async fn open(&self, name: &DocName, if_absent: IfAbsent) -> Result<DocHandle, OpenError> {
        match self.open_local(name, if_absent).await {
            Err(OpenError::NotFound) if self.cluster().is_some() => {
                let handle = self.open_local(name, IfAbsent::Create).await?;
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
        self.open_local(name, IfAbsent::NotFound).await
    }

    async fn open_local(
        &self,
        name: &DocName,
        if_absent: IfAbsent,
    ) -> Result<DocHandle, OpenError> {
        if let Some(handle) = self.loaded(name) {
            return Ok(handle);
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(OpenError::ShuttingDown);
        }
        let stored = load::load(
            &self.inner.store,
            self.inner.record.get(),
            name,
            Warmth::ColdIfSnapshot,
        )
        .await?;
        let loaded = match (stored.doc, if_absent) {
            (Some(loaded), _) => loaded,
            (None, IfAbsent::Create) => Loaded {
                content: Content::warm(Document::new(), None),
                position: LogPosition::new_document(chrono::Utc::now().timestamp_millis()),
            },
            (None, IfAbsent::NotFound) => return Err(OpenError::NotFound),
        };
        let stats = Arc::new(DocStats::default());
        stats
            .updated_at_ms
            .store(loaded.position.updated_at_ms(), Ordering::Relaxed);
        stats
            .bytes
            .store(loaded.position.bytes(), Ordering::Relaxed);
        let actor_id = self.inner.next_actor_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mailbox(COMMAND_QUEUE);
        let inserted = self
            .inner
            .directory
            .insert_unless_present(name, || DocHandle::new(tx, stats.clone(), actor_id));
        let handle = match inserted {
            Ok(handle) => handle,
            // Someone loaded it while we did; theirs wins.
            Err(theirs) => return Ok(theirs),
        };
        // Boxed, and moved as a box: each layer of the task's future would
        // otherwise keep its own copy of the actor's fields.
        let actor = Box::new(DocActor::new(
            name.clone(),
            actor_id,
            loaded,
            stored.tombstone_ms,
            stats,
            ActorEnv {
                store: self.inner.store.clone(),
                directory: self.inner.directory.clone(),
                settings: self.inner.settings.clone(),
                shutdown: self.inner.shutdown.clone(),
                cluster: self.inner.cluster.get().cloned(),
                record: self.inner.record.get().cloned(),
                unpersisted: self.inner.unpersisted.clone(),
            },
        ));
        crate::metrics::document_loaded();
        self.inner.tracker.spawn(async move {
            actor.run(rx).await;
            crate::metrics::document_unloaded();
        });
        Ok(handle)
    }

    /// What storage holds for `name` (this node's store, and the shared
    /// record if there is one), read as a load reads it but without
    /// starting an actor: for a backup of a document that is not loaded. A
    /// lone stored snapshot comes as is; anything else is integrated. None
    /// when nothing is stored.
    pub async fn stored_state(&self, name: &DocName) -> Result<Option<BackupState>, OpenError> {
        let stored = load::load(
            &self.inner.store,
            self.record(),
            name,
            Warmth::ColdIfSnapshot,
        )
        .await?;
        Ok(stored.doc.map(|loaded| {
            let (update, state_vector_v1) = loaded.content.whole_state();
            BackupState {
                update,
                state_vector_v1,
                updated_at_ms: loaded.position.updated_at_ms(),
            }
        }))
    }

    /// Runs `f` against the document's actor, reopening it if the actor
    /// unloaded in between.
    pub async fn with_doc<T, F, Fut>(
        &self,
        name: &DocName,
        if_absent: IfAbsent,
        f: F,
    ) -> Result<T, OpenError>
    where
        F: Fn(DocHandle) -> Fut,
        Fut: std::future::Future<Output = Result<T, Gone>>,
    {
        for _ in 0..3 {
            let handle = self.open(name, if_absent).await?;
            match f(handle).await {
                Ok(value) => return Ok(value),
                Err(Gone) => tokio::task::yield_now().await,
            }
        }
        // Deleted or unloaded every time we looked: treat as absent.
        Err(OpenError::NotFound)
    }

    /// Deletes a document everywhere; false if it did not exist.
    pub async fn delete(&self, name: &DocName) -> Result<bool, OpenError> {
        for _ in 0..3 {
            let handle = match self.open(name, IfAbsent::NotFound).await {
                Ok(handle) => handle,
                Err(OpenError::NotFound) => return Ok(false),
                Err(e) => return Err(e),
            };
            let deleted = handle
                .request(|reply| DocCommand::Delete {
                    origin: DeleteOrigin::Here,
                    reply,
                })
                .await;
            match deleted {
                Ok(Ok(())) => return Ok(true),
                Ok(Err(e)) => return Err(OpenError::Record(e)),
                // Unloaded meanwhile: open it again.
                Err(Gone) => continue,
            }
        }
        Ok(false)
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
}
