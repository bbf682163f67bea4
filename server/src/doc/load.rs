//! Opening a document: reading its snapshot and log from storage into its
//! first content, and why that can fail.

use super::content::Content;
use super::log::LogPosition;
use crate::names::DocName;
use crate::record::{Record, RecordError, Recorded};
use crate::store::{DocMeta, Store, StoreError};
use crdt_core::{Document, DocumentError, ValidationLimits};

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
    /// The shared record (PostgreSQL) could not be read: a document not in
    /// memory cannot be known whole.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Whether a lone stored snapshot may stay unintegrated (see `content.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Warmth {
    /// Cold when the stored state is one snapshot with its state vector.
    ColdIfSnapshot,
    /// Always integrated (cluster healing compares content; a reload needs it).
    Warm,
}

/// A document as storage holds it.
pub(super) struct Loaded {
    pub(super) content: Content,
    pub(super) position: LogPosition,
}

/// What storage holds for a name: the document, if any, and its tombstone.
pub(super) struct Stored {
    pub(super) doc: Option<Loaded>,
    /// When a document of this name was last deleted, if ever.
    pub(super) tombstone_ms: Option<i64>,
}

pub(super) async fn load(
    store: &Store,
    record: Option<&Record>,
    name: &DocName,
    warmth: Warmth,
) -> Result<Stored, OpenError> {
    let mut stored = store.load(name.clone()).await?;
    // The shared record first (it is whole), then this node's own copy,
    // which may hold what is still spooled; the CRDT merge makes their
    // overlap harmless.
    let recorded = match record {
        Some(record) => record.load(name.as_str()).await?,
        None => Recorded::default(),
    };
    if let Some(deleted_at) = recorded.deleted_at_ms {
        stored.tombstone_ms = stored.tombstone_ms.max(Some(deleted_at));
        if stored.meta.is_some_and(|m| m.updated_at_ms <= deleted_at) {
            // Deleted in the record while this node held an older copy
            // (down, or its delete gossip lost): the copy is gone.
            if let Err(e) = store.delete_if_older(name.clone(), deleted_at).await {
                tracing::debug!(error = %e, "cannot drop the local copy of a deleted document yet");
            }
            stored.meta = None;
            stored.snapshot = None;
            stored.snapshot_state_vector = None;
            stored.log.clear();
        }
    }
    let tombstone_ms = stored.tombstone_ms;
    let meta = match (stored.meta, recorded.parts.is_empty()) {
        (Some(meta), _) => meta,
        (None, false) => DocMeta {
            updated_at_ms: recorded.updated_at_ms.unwrap_or(0),
            bytes: 0,
            last_seq: 0,
        },
        (None, true) => {
            return Ok(Stored {
                doc: None,
                tombstone_ms,
            })
        }
    };
    let snapshot_bytes = stored.snapshot.as_ref().map_or(0, |s| s.len() as u64);
    let position = LogPosition::stored(meta, snapshot_bytes, &stored.log);
    let lone_snapshot = stored
        .snapshot
        .as_deref()
        .filter(|_| stored.log.is_empty() && recorded.parts.is_empty());
    let content = match (lone_snapshot, stored.snapshot_state_vector, warmth) {
        (Some(snapshot), Some(state_vector), Warmth::ColdIfSnapshot) => {
            Content::cold(snapshot, state_vector)
        }
        _ => Content::warm(
            Document::load_stored(
                stored.snapshot.as_deref(),
                stored
                    .log
                    .iter()
                    .map(|(_, u)| u.as_slice())
                    .chain(recorded.parts.iter().map(Vec::as_slice)),
                ValidationLimits::default(),
            )?,
            lone_snapshot,
        ),
    };
    Ok(Stored {
        doc: Some(Loaded { content, position }),
        tombstone_ms,
    })
}
