//! `quire restore`: an archive into an empty data directory, offline.
//!
//! Nothing is written before the whole archive verified (manifest, every
//! SHA-256, every snapshot decoded and its state vector the manifest's).
//! Then each snapshot goes in through the store, exactly as a compaction
//! writes it, so the next start finds a commit journal that matches sled.
//! No node id is written: the restored node takes a new one at its first
//! start (a copy of a node is not that node).

use super::archive::{self, ArchiveError, Verified};
use crate::config::{DEFAULT_FLUSH_INTERVAL_MS, DEFAULT_SLED_CACHE_BYTES};
use crate::names::DocName;
use crate::store::{DocMeta, Snapshot, Spool, Store, StoreError, StoreOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("refusing to restore into {path}: it is not empty ({entries} entries); restore into a new or empty directory")]
    NotEmpty { path: String, entries: usize },
    #[error("cannot use {path} as the data directory: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("refusing to restore: {0}")]
    Archive(#[from] ArchiveError),
    /// After verification: the directory holds part of the archive.
    #[error("restore into {path} failed after writing started ({error}); remove the directory before trying again")]
    Write { path: String, error: String },
}

/// What a restore wrote.
#[derive(Debug)]
pub struct Summary {
    pub documents: usize,
    pub bytes: u64,
}

/// Refuses a data directory that exists and holds anything.
fn require_empty(dir: &Path) -> Result<(), RestoreError> {
    let shown = dir.display().to_string();
    match std::fs::read_dir(dir) {
        Ok(entries) => match entries.count() {
            0 => Ok(()),
            entries => Err(RestoreError::NotEmpty {
                path: shown,
                entries,
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RestoreError::DataDir {
            path: shown,
            source,
        }),
    }
}

/// Verifies `archive`, then writes it into `data_dir`, which must be empty
/// or absent.
pub async fn restore(archive: PathBuf, data_dir: PathBuf) -> Result<Summary, RestoreError> {
    require_empty(&data_dir)?;
    let path = archive.clone();
    let verified = blocking(move || archive::verify(&path).map_err(RestoreError::from)).await?;
    // Checked again: it may have filled while the archive was read.
    require_empty(&data_dir)?;
    let failed = |error: String| RestoreError::Write {
        path: data_dir.display().to_string(),
        error,
    };
    std::fs::create_dir_all(&data_dir).map_err(|e| failed(e.to_string()))?;
    let dir = data_dir.clone();
    let (store, thread) = blocking(move || {
        let options = StoreOptions {
            cache_bytes: DEFAULT_SLED_CACHE_BYTES,
            flush_interval: Duration::from_millis(DEFAULT_FLUSH_INTERVAL_MS),
            accept_data_loss: false,
            // A single node's data directory: a restored one is the record.
            spool: Spool::Off,
            webhooks: None,
        };
        Store::open(&dir, options).map_err(|e| RestoreError::Write {
            path: dir.display().to_string(),
            error: e.to_string(),
        })
    })
    .await?;
    let writer = store.clone();
    let runtime = tokio::runtime::Handle::current();
    let (dir, path) = (data_dir.clone(), archive.clone());
    let written = blocking(move || write_all(&path, &dir, &verified, &writer, &runtime)).await;
    // Every write is on disk, and in the journal, once this succeeds.
    let shut = store.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    let summary = written?;
    shut.map_err(|e| failed(e.to_string()))?;
    Ok(summary)
}

/// The second pass: each snapshot into the store, as its compaction.
fn write_all(
    archive: &Path,
    data_dir: &Path,
    verified: &Verified,
    store: &Store,
    runtime: &tokio::runtime::Handle,
) -> Result<Summary, RestoreError> {
    let failed = |error: String| RestoreError::Write {
        path: data_dir.display().to_string(),
        error,
    };
    let mut summary = Summary {
        documents: 0,
        bytes: 0,
    };
    archive::for_each_document(archive, &verified.manifest, |entry, update| {
        // Verified already: the name parses, the state vector decodes.
        let name = DocName::parse(&entry.name).map_err(|e| failed(e.to_string()))?;
        let state_vector =
            super::manifest::decode_manifest_state_vector(&entry.state_vector).map_err(failed)?;
        let bytes = update.len() as u64;
        let snapshot = Snapshot {
            update,
            state_vector_v1: crdt_core::state_vector::encode_state_vector(&state_vector),
        };
        let meta = DocMeta {
            updated_at_ms: entry.updated_at_ms,
            bytes,
            last_seq: 0,
        };
        runtime
            .block_on(store.compact(name, snapshot, 0, meta))
            .map_err(|e: StoreError| failed(e.to_string()))?;
        summary.documents += 1;
        summary.bytes += bytes;
        Ok::<(), RestoreError>(())
    })?;
    if summary.documents != verified.manifest.documents.len() {
        return Err(failed(format!(
            "the archive changed: {} of {} documents read",
            summary.documents,
            verified.manifest.documents.len()
        )));
    }
    Ok(summary)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RestoreError> + Send + 'static,
) -> Result<T, RestoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RestoreError::Write {
            path: String::new(),
            error: format!("worker thread failed: {e}"),
        })?
}
