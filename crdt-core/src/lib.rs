//! Sans-IO core of Quire.
//!
//! Everything here is pure computation over bytes: the y-websocket protocol
//! codecs ([`protocol`], [`awareness`], [`state_vector`]), a document that
//! accepts untrusted updates ([`Document`], guarded by [`validate`] and a
//! bound on how deeply shared types nest), exports ([`export`]), versions ([`history`]) and the
//! node-to-node messages of a cluster ([`cluster`]). The Hocuspocus dialect
//! ([`hocuspocus`]) wraps the same sync and awareness bodies in an address
//! and adds a per-document session state machine. `docs/fuzzing.md` says
//! what each guard stops.
//!
//! **Architecture invariant:** this crate never depends on tokio, axum, sled or
//! redis, and never does I/O.

#![warn(missing_docs)]

pub mod awareness;
pub mod cluster;
pub mod document;
pub mod export;
pub mod history;
pub mod hocuspocus;
mod nesting;
pub mod protocol;
pub mod state_vector;
pub mod validate;
pub mod wire;

pub use awareness::{AwarenessChange, AwarenessError, AwarenessTable, AwarenessUpdate};
pub use document::{decode_update_v1, merge_updates_v1, Document, DocumentError, MAX_HELD_BYTES};
pub use protocol::{Message, ProtocolError};
pub use validate::{validate_update_v1, UpdateSummary, ValidationError, ValidationLimits};
pub use yrs;
