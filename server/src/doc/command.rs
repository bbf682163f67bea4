//! The closed set of requests a document actor serves.

use super::outbound::Outbound;
use bytes::Bytes;
use crdt_core::yrs::StateVector;
use crdt_core::AwarenessUpdate;
use tokio::sync::{broadcast, oneshot};

pub type ConnId = u64;

/// Which protocol a connection speaks, which decides what the actor sends
/// it beyond the frames both dialects share (sync and awareness bodies are
/// byte-identical; a Hocuspocus socket prefixes them with the session's
/// address on the way out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `/ws/{doc}`: greeted with the server's SyncStep1 and presence.
    YWebsocket,
    /// One session of a `/hocuspocus` socket: greeted with presence only
    /// (no unsolicited SyncStep1), answered SyncStep1 then SyncStep2 on
    /// each SyncStep1, one SyncStatus per update, stateless messages.
    Hocuspocus,
}

/// Why an update was refused; the document is unchanged either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Document(#[from] crdt_core::DocumentError),
    #[error("update would grow the document past --max-doc-bytes ({limit} bytes)")]
    TooLarge { limit: u64 },
    /// Storage is failing; the update was not applied, or applied but not
    /// on disk and so not relayed.
    #[error("storage unavailable, retry")]
    StorageUnavailable,
}

/// The actor has stopped (unloaded or deleted); open the document again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotFormat {
    Yjs,
    YjsV2,
    Json,
    Text { root: String },
}

#[derive(Debug, Clone)]
pub struct SnapshotRequest {
    pub format: SnapshotFormat,
    /// Only what a holder of this state vector lacks (v1 and v2 formats).
    pub state_vector: Option<StateVector>,
}

#[derive(Debug)]
pub enum SnapshotBody {
    Binary(Vec<u8>),
    Json(serde_json::Value),
    Text(String),
    NoSuchRoot(String),
}

/// What change-feed subscribers (SSE) receive.
#[derive(Debug, Clone)]
pub enum DocEvent {
    /// An applied v1 update.
    Update(Bytes),
    /// The document was deleted; no more events follow.
    Deleted,
}

/// A change-feed subscription: the state at subscription time and every
/// change after it, with nothing in between.
pub struct Subscription {
    pub snapshot: Vec<u8>,
    pub events: broadcast::Receiver<DocEvent>,
}

#[derive(Debug, Clone)]
pub struct DocInfo {
    pub bytes: u64,
    pub updated_at_ms: i64,
    pub clients: usize,
    pub state_vector: Vec<u8>,
}

/// Where a delete was decided, which says whether to announce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOrigin {
    /// A client of this node asked: every other node is told.
    Here,
    /// Another node announced it: nothing to pass on.
    Peer,
}

/// Large payloads are boxed: every document's queue is a block of 32 of
/// these, allocated whether or not it is ever used.
pub enum DocCommand {
    Connect {
        id: ConnId,
        /// Frames for this client (full means the client is too slow), and
        /// how the actor closes the connection.
        outbound: Outbound,
        dialect: Dialect,
        reply: oneshot::Sender<()>,
    },
    Disconnect {
        id: ConnId,
    },
    SyncStep1 {
        id: ConnId,
        state_vector: Box<StateVector>,
    },
    /// Sync step 2 or update: both carry a v1 update to apply and relay.
    /// A Hocuspocus session gets one SyncStatus once it is appended and
    /// relayed (or its session ends, if it does not apply).
    Update {
        id: ConnId,
        update: Bytes,
    },
    /// A read-only Hocuspocus session's SyncStep2: never applied; answered
    /// SyncStatus(1) if the document holds all of it already, else (0).
    CheckContained {
        id: ConnId,
        update: Bytes,
    },
    /// A Hocuspocus stateless payload for every Hocuspocus session of the
    /// document but `from`, on every node.
    Stateless {
        from: Option<ConnId>,
        payload: Box<str>,
    },
    Awareness {
        id: ConnId,
        update: Box<AwarenessUpdate>,
    },
    QueryAwareness {
        id: ConnId,
    },
    Info {
        reply: oneshot::Sender<DocInfo>,
    },
    Snapshot {
        request: Box<SnapshotRequest>,
        reply: oneshot::Sender<SnapshotBody>,
    },
    /// An update from REST: applied, persisted and relayed to every client.
    ApplyUpdate {
        update: Bytes,
        reply: oneshot::Sender<Result<(), ApplyError>>,
    },
    Delete {
        origin: DeleteOrigin,
        reply: oneshot::Sender<()>,
    },
    Subscribe {
        reply: oneshot::Sender<Subscription>,
    },
    /// A message from another node, through Redis.
    Remote(Box<crdt_core::cluster::ClusterMessage>),
    /// Redis reconnected: heal by state vector and resend presence.
    ClusterResync,
    /// Resolves true once the document holds anything (peers answered a
    /// freshly loaded empty document), false at the deadline.
    AwaitPeers {
        reply: oneshot::Sender<bool>,
    },
    /// Storage recovered: write the whole state unless storage holds it
    /// for sure (no outage since the last time it did).
    Persist,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_small_enough_for_an_idle_documents_queue() {
        assert!(
            std::mem::size_of::<DocCommand>() <= 48,
            "DocCommand is {} bytes",
            std::mem::size_of::<DocCommand>()
        );
    }
}
