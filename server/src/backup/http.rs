//! `GET /api/backup` (admin): every document's whole state, streamed as a
//! tar archive with the manifest last.
//!
//! One task writes the archive into a channel of a few chunks that the
//! response body drains, so memory holds one document's state and the
//! manifest's entries (a few hundred bytes per document), never the
//! archive. Each document's state is consistent and holds everything its
//! clients were acknowledged before the request:
//!
//! - a loaded document answers its actor (`DocCommand::Backup`), in one
//!   turn: what it applied, including anything a storage outage kept in
//!   memory only; a cold one answers with its stored snapshot, unintegrated;
//! - any other is read as a load reads it (`Registry::stored_state`):
//!   this node's store in one request, which the storage thread serves
//!   after every append queued before it, and with `--postgres-url` the
//!   shared record too, which lists every node's documents. A document
//!   leaves memory only once its state is on disk, so one that unloads
//!   meanwhile (its actor answers `Gone`) is read from storage instead.
//!
//! On any failure the body ends in an error: the client sees a broken
//! transfer, and the archive has no manifest, which `quire check` and
//! `quire restore` refuse. One log line says why.

use super::manifest::{self, Entry, Manifest, FORMAT, MANIFEST_FILE};
use super::tarball;
use crate::doc::{BackupState, DocCommand, OpenError, Registry};
use crate::error::AppError;
use crate::names::DocName;
use crate::rest::{Auth, Binary, ErrorBody};
use crate::state::AppState;
use crate::store::{Store, StoreError};
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Chunks queued between the writer task and the response body.
const CHUNKS: usize = 8;
/// The largest chunk: a snapshot is sent as slices of this, not copied.
const CHUNK_BYTES: usize = 256 * 1024;
/// Documents listed per store request.
const PAGE: usize = 1000;
/// Snapshots larger than this are hashed on a blocking thread.
const HASH_INLINE_BYTES: usize = 64 * 1024;

/// What the writer sends the body: data, the end, or nothing (dropped) if
/// it stopped without finishing, which the body turns into an error too.
type Chunk = Result<Option<Bytes>, String>;

#[utoipa::path(get, path = "/api/backup", tag = "operations",
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 200, description = "A tar archive, streamed: `docs/NNNNNNNN.yjs`, each a document's whole state as a Yjs v1 update, then `manifest.json` (names, sizes, SHA-256s, state vectors). An archive cut short has no manifest; `quire check --archive` verifies one. See docs/operations.md, \"Backups\".",
            content((inline(Binary) = "application/x-tar"))),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
    ))]
/// `GET /api/backup` (admin): every document, streamed as a tar archive.
pub async fn backup(State(app): State<AppState>, Auth(access): Auth) -> Result<Response, AppError> {
    app.auth.require_admin(&access)?;
    if app.shutdown.is_cancelled() || app.draining.is_cancelled() {
        return Err(AppError::Unavailable("shutting down".into()));
    }
    let started = chrono::Utc::now();
    let (tx, rx) = mpsc::channel::<Chunk>(CHUNKS);
    let writer = Writer {
        tx,
        registry: app.registry.clone(),
        store: app.store.clone(),
        shutdown: app.shutdown.clone(),
        mtime: started.timestamp().max(0) as u64,
        written: 0,
        entries: Vec::new(),
    };
    let manifest_head = ManifestHead {
        node_id: app.node_id.to_string(),
        created_at: started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    app.tracker.spawn(
        writer
            .run(manifest_head)
            .instrument(tracing::info_span!("backup")),
    );
    let body = futures_util::stream::unfold((rx, false), |(mut rx, ended)| async move {
        if ended {
            return None;
        }
        match rx.recv().await {
            Some(Ok(Some(bytes))) => Some((Ok(bytes), (rx, false))),
            Some(Ok(None)) => None,
            Some(Err(reason)) => Some((Err(std::io::Error::other(reason)), (rx, true))),
            None => Some((
                Err(std::io::Error::other("backup stopped before its end")),
                (rx, true),
            )),
        }
    });
    let filename = format!(
        "attachment; filename=\"quire-backup-{}.tar\"",
        started.format("%Y%m%dT%H%M%SZ")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (header::CONTENT_DISPOSITION, filename),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

struct ManifestHead {
    node_id: String,
    created_at: String,
}

/// Why a backup stopped before its end.
#[derive(Debug, thiserror::Error)]
enum Abort {
    #[error("the client went away")]
    ClientGone,
    #[error("the server is shutting down")]
    Shutdown,
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("document {name} does not load: {error}")]
    Corrupt { name: String, error: String },
    #[error("{0}")]
    Other(String),
}

struct Writer {
    tx: mpsc::Sender<Chunk>,
    registry: Registry,
    store: Store,
    shutdown: CancellationToken,
    mtime: u64,
    written: u64,
    entries: Vec<Entry>,
}

impl Writer {
    async fn run(mut self, head: ManifestHead) {
        let started = Instant::now();
        tracing::info!("backup started");
        let shutdown = self.shutdown.clone();
        let result = tokio::select! {
            result = self.write_archive(head) => result,
            _ = shutdown.cancelled() => Err(Abort::Shutdown),
        };
        let documents = self.entries.len();
        match result {
            Ok(()) => {
                crate::metrics::backup_finished(crate::metrics::BackupOutcome::Written);
                tracing::info!(
                    documents,
                    bytes = self.written,
                    ms = started.elapsed().as_millis() as u64,
                    "backup written"
                );
            }
            Err(e) => {
                crate::metrics::backup_finished(crate::metrics::BackupOutcome::Failed);
                // A client that leaves is its own business; anything else is the server's.
                if matches!(e, Abort::ClientGone) {
                    tracing::warn!(
                        documents,
                        bytes = self.written,
                        "backup aborted after {documents} document(s): {e}"
                    );
                } else {
                    tracing::error!(
                        documents,
                        bytes = self.written,
                        "backup aborted after {documents} document(s): {e}; the archive has no manifest"
                    );
                }
                // Never waits for a client that does not read (shutdown
                // waits for this task): with the queue full, dropping the
                // sender ends the body in an error just the same.
                let _ = self.tx.try_send(Err(format!("backup aborted: {e}")));
            }
        }
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), Abort> {
        self.written += bytes.len() as u64;
        self.tx
            .send(Ok(Some(bytes)))
            .await
            .map_err(|_| Abort::ClientGone)
    }

    /// One tar entry: header, the bytes in slices, padding.
    async fn entry(&mut self, name: &str, bytes: Bytes) -> Result<(), Abort> {
        let header = tarball::header(name, bytes.len() as u64, self.mtime)
            .map_err(|e| Abort::Other(e.to_string()))?;
        self.send(Bytes::copy_from_slice(&header)).await?;
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + CHUNK_BYTES).min(bytes.len());
            self.send(bytes.slice(at..end)).await?;
            at = end;
        }
        let padding = tarball::padding(bytes.len() as u64);
        if padding > 0 {
            self.send(Bytes::from_static(&tarball::END[..padding]))
                .await?;
        }
        Ok(())
    }

    async fn write_archive(&mut self, head: ManifestHead) -> Result<(), Abort> {
        // Loaded documents not stored yet are listed nowhere else.
        let mut unlisted: BTreeSet<DocName> = self.registry.loaded_names().into_iter().collect();
        let mut after: Option<String> = None;
        loop {
            let page = match self.registry.record() {
                // With a shared record, it lists every node's documents.
                Some(record) => record
                    .list("", after.as_deref(), PAGE)
                    .await
                    .map_err(|e| Abort::Other(format!("record: {e}")))?,
                None => self.store.list(String::new(), after.clone(), PAGE).await?,
            };
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (name, _) in page {
                let name = DocName::parse(&name)
                    .map_err(|e| Abort::Other(format!("stored name {name:?}: {e}")))?;
                unlisted.remove(&name);
                self.document(name).await?;
            }
        }
        for name in std::mem::take(&mut unlisted) {
            self.document(name).await?;
        }
        let manifest = Manifest {
            format: FORMAT,
            quire_version: env!("CARGO_PKG_VERSION").to_owned(),
            node_id: head.node_id,
            created_at: head.created_at,
            documents: std::mem::take(&mut self.entries),
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Abort::Other(e.to_string()))?;
        self.entries = manifest.documents;
        self.entry(MANIFEST_FILE, Bytes::from(json)).await?;
        self.send(Bytes::from_static(&tarball::END)).await?;
        self.tx.send(Ok(None)).await.map_err(|_| Abort::ClientGone)
    }

    /// One document into the archive; nothing if it is gone (deleted since).
    async fn document(&mut self, name: DocName) -> Result<(), Abort> {
        let Some(state) = whole_state(&self.registry, &name).await? else {
            return Ok(());
        };
        let update = state.update;
        let sha256 = if update.len() <= HASH_INLINE_BYTES {
            manifest::sha256_hex(&update)
        } else {
            let bytes = update.clone();
            tokio::task::spawn_blocking(move || manifest::sha256_hex(&bytes))
                .await
                .map_err(|e| Abort::Other(format!("hashing failed: {e}")))?
        };
        let file = manifest::document_file(self.entries.len() as u64 + 1);
        let entry = Entry {
            name: name.to_string(),
            file: file.clone(),
            bytes: update.len() as u64,
            sha256,
            state_vector: manifest::base64(&state.state_vector_v1),
            updated_at_ms: state.updated_at_ms,
        };
        self.entry(&file, update).await?;
        self.entries.push(entry);
        Ok(())
    }
}

/// A document's whole state: from its actor while it is loaded, else
/// from storage, as a load reads it. None when nothing is stored (deleted
/// meanwhile).
async fn whole_state(registry: &Registry, name: &DocName) -> Result<Option<BackupState>, Abort> {
    // An actor that stops between lookup and answer has its state on disk
    // (or was deleted): storage answers next.
    for _ in 0..3 {
        let Some(handle) = registry.loaded(name) else {
            break;
        };
        if let Ok(state) = handle.request(|reply| DocCommand::Backup { reply }).await {
            return Ok(Some(state));
        }
        tokio::task::yield_now().await;
    }
    registry.stored_state(name).await.map_err(|e| match e {
        OpenError::Corrupt(error) => Abort::Corrupt {
            name: name.to_string(),
            error: error.to_string(),
        },
        e => Abort::Other(e.to_string()),
    })
}
