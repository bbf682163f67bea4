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

impl Dialect {
    /// As metrics and webhooks name it.
    pub fn protocol(self) -> &'static str {
        match self {
            Dialect::YWebsocket => "y-websocket",
            Dialect::Hocuspocus => "hocuspocus",
        }
    }
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

/// What a history request failed on.
#[derive(Debug, thiserror::Error)]
pub enum HistoryFailure {
    /// The version does not rebuild from this node's copy (a snapshot of
    /// another state, or one this node has not caught up with yet).
    #[error(transparent)]
    Version(#[from] crdt_core::history::HistoryError),
    /// A diff of a root that is neither Text nor XmlFragment.
    #[error("root {0:?} is not a Text or XmlFragment root")]
    NotText(String),
    /// The restore's update was refused; the document is unchanged.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The version could not be stored.
    #[error(transparent)]
    Storage(#[from] crate::history::VersionsError),
}

/// Requests about versions, served by the actor that holds the document
/// (rebuilding a version needs the live document).
pub enum HistoryCommand {
    /// Records a version now.
    Save {
        label: Option<String>,
        reply: oneshot::Sender<Result<crate::history::VersionMeta, HistoryFailure>>,
    },
    /// The document as it was at a version's snapshot, exported.
    Export {
        snapshot: Vec<u8>,
        format: SnapshotFormat,
        reply: oneshot::Sender<Result<SnapshotBody, HistoryFailure>>,
    },
    /// Text diff of `root` from one version to another (`None`: the live
    /// document).
    Diff {
        from: Vec<u8>,
        to: Option<Vec<u8>>,
        root: String,
        reply: oneshot::Sender<Result<Vec<crdt_core::history::DiffRun>, HistoryFailure>>,
    },
    /// Makes the live document equal to the version: one update, applied
    /// and relayed like any edit, then recorded as a version.
    Restore {
        id: u64,
        snapshot: Vec<u8>,
        reply: oneshot::Sender<Result<crate::history::VersionMeta, HistoryFailure>>,
    },
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
        /// Who it is, when a token says (versions list who was connected).
        who: Option<std::sync::Arc<str>>,
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
        /// The shared record refused the delete: nothing was deleted.
        reply: oneshot::Sender<Result<(), crate::record::RecordError>>,
    },
    Subscribe {
        reply: oneshot::Sender<Subscription>,
    },
    /// A message from another node, through Redis.
    Remote(Box<crdt_core::cluster::ClusterMessage>),
    /// Redis reconnected, or this document's channel was subscribed again
    /// after a lost subscription: heal by state vector and resend presence.
    ClusterResync,
    /// A peer node stopped beating: the presence it relayed is removed for
    /// this node's clients (the node cannot send those removals any more).
    PeerGone {
        node: std::sync::Arc<str>,
    },
    /// Resolves true once the document holds anything (peers answered a
    /// freshly loaded empty document), false at the deadline.
    AwaitPeers {
        reply: oneshot::Sender<bool>,
    },
    /// Storage recovered: write the whole state unless storage holds it
    /// for sure (no outage since the last time it did). Answers whether
    /// storage holds it now.
    Persist {
        reply: oneshot::Sender<bool>,
    },
    History(Box<HistoryCommand>),
    /// The whole state for a backup (`crate::backup`), without integrating
    /// a cold document.
    Backup {
        reply: oneshot::Sender<BackupState>,
    },
}

/// A document's whole state, both parts from the same turn of its actor,
/// so the state vector is exactly the update's.
#[derive(Debug, Clone)]
pub struct BackupState {
    /// `Y.encodeStateAsUpdate(doc)`: what a compaction would store.
    pub update: Bytes,
    pub state_vector_v1: Vec<u8>,
    pub updated_at_ms: i64,
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
