//! A document's content: cold (the stored snapshot, not integrated yet) or
//! warm (a yrs document).
//!
//! A document loaded from a compacted snapshot with nothing logged after it
//! starts cold. A page load needs none of its content: the server's sync
//! step 1 is the stored state vector, and the answer to an empty sync step 1
//! is the snapshot's own bytes. So the first client of a cold document is
//! synced after one storage read, not after decoding and integrating the
//! whole document, and a document only ever read is never integrated at
//! all. Anything that reads or changes the content (an update, a diff, an
//! export, compaction, cluster healing) warms it first: [`need`] decides.

use super::command::DocCommand;
use bytes::Bytes;
use crdt_core::protocol::encode_sync_step2;
use crdt_core::{Document, DocumentError, ValidationLimits};

pub(super) enum Content {
    Cold(Cold),
    Warm(Warm),
}

/// A stored snapshot that is the whole document, not integrated yet.
pub(super) struct Cold {
    /// Sync step 2 carrying the snapshot; it ends with the snapshot's bytes.
    full_sync: Bytes,
    snapshot_len: usize,
    state_vector_v1: Vec<u8>,
}

pub(super) struct Warm {
    doc: Document,
    /// Sync step 2 carrying the whole current state, shared by every client
    /// that connects with nothing (a page load); dropped on any change.
    full_sync: Option<Bytes>,
}

/// What serving a command takes from the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// Connections, presence, figures or the full state: a cold document answers.
    Nothing,
    /// The content itself: a cold document is integrated first.
    Content,
}

/// Whether `command` can be served by a cold document.
pub(super) fn need(command: &DocCommand) -> Need {
    match command {
        DocCommand::Connect { .. }
        | DocCommand::Disconnect { .. }
        | DocCommand::Awareness { .. }
        | DocCommand::QueryAwareness { .. }
        | DocCommand::Info { .. }
        | DocCommand::Delete { .. }
        // A cold document's state is its snapshot, as stored.
        | DocCommand::Backup { .. }
        | DocCommand::PeerGone { .. }
        | DocCommand::Stateless { .. }
        // A cold document is what storage holds already.
        | DocCommand::Persist { .. } => Need::Nothing,
        // A client with nothing gets the whole state: the snapshot itself.
        DocCommand::SyncStep1 { state_vector, .. } if state_vector.is_empty() => Need::Nothing,
        DocCommand::SyncStep1 { .. }
        | DocCommand::Update { .. }
        | DocCommand::CheckContained { .. }
        | DocCommand::Snapshot { .. }
        | DocCommand::ApplyUpdate { .. }
        | DocCommand::Subscribe { .. }
        | DocCommand::Remote(_)
        | DocCommand::ClusterResync
        | DocCommand::AwaitPeers { .. }
        | DocCommand::History(_) => Need::Content,
    }
}

fn full_sync_of(snapshot: &[u8]) -> Bytes {
    Bytes::from(encode_sync_step2(snapshot))
}

impl Content {
    /// A document already integrated. `stored_snapshot` is the stored
    /// snapshot when it alone is the whole state, so that the first full
    /// sync is not encoded again.
    pub(super) fn warm(doc: Document, stored_snapshot: Option<&[u8]>) -> Self {
        Content::Warm(Warm {
            doc,
            full_sync: stored_snapshot.map(full_sync_of),
        })
    }

    /// A stored snapshot that is the whole state, with its state vector.
    pub(super) fn cold(snapshot: &[u8], state_vector_v1: Vec<u8>) -> Self {
        Content::Cold(Cold {
            full_sync: full_sync_of(snapshot),
            snapshot_len: snapshot.len(),
            state_vector_v1,
        })
    }

    pub(super) fn is_cold(&self) -> bool {
        matches!(self, Content::Cold(_))
    }

    /// `Y.encodeStateVector(doc)`, cold or warm.
    pub(super) fn state_vector_v1(&self) -> Vec<u8> {
        match self {
            Content::Cold(cold) => cold.state_vector_v1.clone(),
            Content::Warm(warm) => warm.doc.state_vector_v1(),
        }
    }

    /// The whole state as one v1 update and its state vector, cold or
    /// warm: a cold document's is its snapshot, not integrated.
    pub(super) fn whole_state(&self) -> (Bytes, Vec<u8>) {
        match self {
            Content::Cold(cold) => (
                cold.full_sync
                    .slice(cold.full_sync.len() - cold.snapshot_len..),
                cold.state_vector_v1.clone(),
            ),
            Content::Warm(warm) => (
                Bytes::from(warm.doc.encode_state_v1()),
                warm.doc.state_vector_v1(),
            ),
        }
    }

    /// Sync step 2 with the whole state, encoded once per change.
    pub(super) fn full_sync_frame(&mut self) -> Bytes {
        match self {
            Content::Cold(cold) => cold.full_sync.clone(),
            Content::Warm(warm) => warm.full_sync_frame(),
        }
    }

    /// Integrates the snapshot if cold. If it does not load, the content
    /// stays cold and untouched, so that storage keeps what it has.
    pub(super) fn warm_up(&mut self) -> Result<(), DocumentError> {
        if let Content::Cold(cold) = self {
            let snapshot = &cold.full_sync[cold.full_sync.len() - cold.snapshot_len..];
            let doc = Document::load_stored(Some(snapshot), [], ValidationLimits::default())?;
            // The frame stays valid: the document is exactly the snapshot.
            let full_sync = Some(cold.full_sync.clone());
            *self = Content::Warm(Warm { doc, full_sync });
        }
        Ok(())
    }

    /// The warm document, to change, if it is warm.
    pub(super) fn as_warm_mut(&mut self) -> Option<&mut Warm> {
        match self {
            Content::Warm(warm) => Some(warm),
            Content::Cold(_) => None,
        }
    }

    /// The warm document, if it is warm.
    pub(super) fn as_warm(&self) -> Option<&Warm> {
        match self {
            Content::Warm(warm) => Some(warm),
            Content::Cold(_) => None,
        }
    }
}

impl Warm {
    pub(super) fn doc(&self) -> &Document {
        &self.doc
    }

    /// Applies an untrusted v1 update; true if it changed the document.
    pub(super) fn apply_update_v1(&mut self, update: &[u8]) -> Result<bool, DocumentError> {
        let changed = self.doc.apply_update_v1(update)?;
        if changed {
            self.full_sync = None;
        }
        Ok(changed)
    }

    pub(super) fn into_doc(self) -> Document {
        self.doc
    }

    /// Replaces the document with one rebuilt from storage.
    pub(super) fn replace(&mut self, doc: Document) {
        self.doc = doc;
        self.full_sync = None;
    }

    fn full_sync_frame(&mut self) -> Bytes {
        let doc = &self.doc;
        self.full_sync
            .get_or_insert_with(|| full_sync_of(&doc.encode_state_v1()))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::super::command::{DeleteOrigin, SnapshotFormat, SnapshotRequest};
    use super::super::outbound::Outbound;
    use super::*;
    use crdt_core::yrs::updates::encoder::Encode;
    use crdt_core::yrs::{Doc, ReadTxn, StateVector, Text, Transact};
    use tokio::sync::oneshot;

    /// A v1 update of a document whose "body" is `text`, by client `client`.
    fn typed(client: u64, text: &str) -> Doc {
        let doc = Doc::with_client_id(client);
        doc.get_or_insert_text("body")
            .insert(&mut doc.transact_mut(), 0, text);
        doc
    }

    /// A stored snapshot of "body" = `text`, and its state vector.
    fn stored(text: &str) -> (Vec<u8>, Vec<u8>) {
        let doc = typed(1, text);
        let txn = doc.transact();
        (
            txn.encode_state_as_update_v1(&StateVector::default()),
            txn.state_vector().encode_v1(),
        )
    }

    #[test]
    fn which_commands_a_cold_document_answers_without_integrating() {
        let update = || bytes::Bytes::from_static(b"\0\0");
        let some_state = {
            let mut sv = StateVector::default();
            sv.set_max(crdt_core::yrs::block::ClientID::new(1), 1);
            sv
        };
        let cases: Vec<(&str, DocCommand, Need)> = vec![
            (
                "a connection joins",
                DocCommand::Connect {
                    id: 1,
                    outbound: Outbound::channel(1).0,
                    dialect: super::super::command::Dialect::YWebsocket,
                    who: None,
                    reply: oneshot::channel().0,
                },
                Need::Nothing,
            ),
            (
                "a connection leaves",
                DocCommand::Disconnect { id: 1 },
                Need::Nothing,
            ),
            (
                "presence",
                DocCommand::Awareness {
                    id: 1,
                    update: Box::default(),
                },
                Need::Nothing,
            ),
            (
                "a presence query",
                DocCommand::QueryAwareness { id: 1 },
                Need::Nothing,
            ),
            (
                "figures",
                DocCommand::Info {
                    reply: oneshot::channel().0,
                },
                Need::Nothing,
            ),
            (
                "a delete",
                DocCommand::Delete {
                    origin: DeleteOrigin::Here,
                    reply: oneshot::channel().0,
                },
                Need::Nothing,
            ),
            (
                "a page load (empty state vector)",
                DocCommand::SyncStep1 {
                    id: 1,
                    state_vector: Box::default(),
                },
                Need::Nothing,
            ),
            (
                "a returning client (a diff)",
                DocCommand::SyncStep1 {
                    id: 1,
                    state_vector: Box::new(some_state),
                },
                Need::Content,
            ),
            (
                "an edit",
                DocCommand::Update {
                    id: 1,
                    update: update(),
                },
                Need::Content,
            ),
            (
                "an export",
                DocCommand::Snapshot {
                    request: Box::new(SnapshotRequest {
                        format: SnapshotFormat::Json,
                        state_vector: None,
                    }),
                    reply: oneshot::channel().0,
                },
                Need::Content,
            ),
            (
                "a REST edit",
                DocCommand::ApplyUpdate {
                    update: update(),
                    reply: oneshot::channel().0,
                },
                Need::Content,
            ),
            (
                "a change feed",
                DocCommand::Subscribe {
                    reply: oneshot::channel().0,
                },
                Need::Content,
            ),
            (
                "healing after a reconnect",
                DocCommand::ClusterResync,
                Need::Content,
            ),
            (
                "waiting for peers",
                DocCommand::AwaitPeers {
                    reply: oneshot::channel().0,
                },
                Need::Content,
            ),
        ];
        for (case, command, expected) in cases {
            assert_eq!(need(&command), expected, "{case}");
        }
    }

    #[test]
    fn a_cold_document_answers_from_the_stored_bytes_and_warms_into_the_same_state() {
        let (snapshot, state_vector) = stored("hello");
        let mut content = Content::cold(&snapshot, state_vector.clone());
        assert!(content.is_cold());
        assert_eq!(content.state_vector_v1(), state_vector);
        let frame = content.full_sync_frame();
        assert_eq!(frame, full_sync_of(&snapshot));
        assert!(
            content.is_cold(),
            "answering a page load integrated the snapshot"
        );

        content.warm_up().expect("the snapshot loads");
        let warm = content.as_warm().expect("warm");
        assert_eq!(warm.doc().root_text("body").as_deref(), Some("hello"));
        assert_eq!(content.state_vector_v1(), state_vector);
        assert_eq!(content.full_sync_frame(), frame, "the stored frame is kept");
    }

    #[test]
    fn a_snapshot_that_does_not_load_leaves_the_document_cold() {
        let mut content = Content::cold(&[1, 2, 3], vec![0]);
        assert!(content.warm_up().is_err());
        assert!(content.is_cold());
    }

    #[test]
    fn a_change_drops_the_cached_full_sync() {
        let (snapshot, _) = stored("hello");
        let mut content = Content::warm(
            Document::load_stored(Some(&snapshot), [], ValidationLimits::default()).expect("loads"),
            Some(&snapshot),
        );
        let before = content.full_sync_frame();
        let update = typed(2, "more ")
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        content.warm_up().expect("warm");
        let warm = content.as_warm_mut().expect("warm");
        assert_eq!(warm.apply_update_v1(&update), Ok(true));
        let after = content.full_sync_frame();
        assert_ne!(before, after);
        let text = content.as_warm().and_then(|w| w.doc().root_text("body"));
        assert!(text.is_some_and(|t| t.contains("more") && t.contains("hello")));
    }
}
