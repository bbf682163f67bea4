//! Opening a document: reading its snapshot and log from storage into its
//! first content, and why that can fail.

use super::content::Content;
use super::log::LogPosition;
use crate::names::DocName;
use crate::store::{Store, StoreError};
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
    name: &DocName,
    warmth: Warmth,
) -> Result<Stored, OpenError> {
    let stored = store.load(name.clone()).await?;
    let tombstone_ms = stored.tombstone_ms;
    let Some(meta) = stored.meta else {
        return Ok(Stored {
            doc: None,
            tombstone_ms,
        });
    };
    let snapshot_bytes = stored.snapshot.as_ref().map_or(0, |s| s.len() as u64);
    let position = LogPosition::stored(meta, snapshot_bytes, &stored.log);
    let lone_snapshot = stored.snapshot.as_deref().filter(|_| stored.log.is_empty());
    let content = match (lone_snapshot, stored.snapshot_state_vector, warmth) {
        (Some(snapshot), Some(state_vector), Warmth::ColdIfSnapshot) => {
            Content::cold(snapshot, state_vector)
        }
        _ => Content::warm(
            Document::load_stored(
                stored.snapshot.as_deref(),
                stored.log.iter().map(|(_, u)| u.as_slice()),
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
