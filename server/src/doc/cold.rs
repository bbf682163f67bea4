//! Cold documents: a document loaded from a compacted snapshot (and nothing
//! logged after it) is integrated into yrs only when a command first needs
//! it.
//!
//! A page load needs none of it: the server's sync step 1 is the stored
//! state vector, and the answer to an empty sync step 1 is the snapshot's
//! own bytes. So the first client of a cold document is synced after one
//! storage read, not after decoding and integrating the whole document, and
//! a document only ever read is never integrated at all. Anything that
//! reads or changes the content (an update, a diff, an export, compaction,
//! cluster healing) integrates first.

use super::actor::DocActor;
use super::command::{CloseReason, DocCommand};
use bytes::Bytes;
use crdt_core::{Document, ValidationLimits};

/// A snapshot not yet integrated, and its state vector.
pub(super) struct Deferred {
    pub snapshot: Bytes,
    pub state_vector_v1: Vec<u8>,
}

impl DocActor {
    /// `Y.encodeStateVector(doc)`, without integrating a deferred snapshot.
    pub(super) fn state_vector_v1(&self) -> Vec<u8> {
        match &self.deferred {
            Some(deferred) => deferred.state_vector_v1.clone(),
            None => self.doc.state_vector_v1(),
        }
    }

    /// Whether `command` can be served while the snapshot is deferred.
    pub(super) fn can_defer(&self, command: &DocCommand) -> bool {
        match command {
            DocCommand::Connect { .. }
            | DocCommand::Disconnect { .. }
            | DocCommand::Awareness { .. }
            | DocCommand::QueryAwareness { .. }
            | DocCommand::Info { .. }
            | DocCommand::Delete { .. } => true,
            DocCommand::SyncStep1 { state_vector, .. } => {
                state_vector.is_empty() && self.full_sync.is_some()
            }
            _ => false,
        }
    }

    /// Integrates the deferred snapshot, if any. False if it does not load:
    /// every connection is then closed (1011) and the actor must stop
    /// without writing anything, so that storage keeps what it has.
    pub(super) fn integrate_deferred(&mut self) -> bool {
        let Some(deferred) = self.deferred.take() else {
            return true;
        };
        match Document::load_stored(Some(&deferred.snapshot), [], ValidationLimits::default()) {
            Ok(doc) => {
                self.doc = doc;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "stored snapshot does not load; closing the document");
                self.close_all(CloseReason::new(
                    CloseReason::INTERNAL,
                    "stored document does not load",
                ));
                self.registry.remove_actor(&self.name, self.actor_id);
                false
            }
        }
    }
}
