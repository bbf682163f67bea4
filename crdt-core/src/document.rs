//! A Yjs document that accepts untrusted updates.
//!
//! **Invariant:** an update that fails to decode or apply leaves the document
//! exactly as it was. Decoding happens before any transaction is opened, and
//! both decoding and integration run under `catch_unwind`, because some
//! crafted inputs make yrs panic instead of returning an error.

use crate::export;
use std::panic::{catch_unwind, AssertUnwindSafe};
use thiserror::Error;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DocumentError {
    #[error("update does not decode: {0}")]
    Decode(String),
    #[error("update does not apply: {0}")]
    Apply(String),
    /// yrs panicked while integrating. The in-memory state can no longer be
    /// trusted; the owner must reload the document from storage.
    #[error("update crashed the CRDT engine while applying; document must be reloaded")]
    Poisoned,
}

pub struct Document {
    doc: Doc,
}

impl Default for Document {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("state_vector", &self.state_vector())
            .finish()
    }
}

/// Decodes a v1 update without touching any document.
pub fn decode_update_v1(bytes: &[u8]) -> Result<Update, DocumentError> {
    match catch_unwind(|| Update::decode_v1(bytes)) {
        Ok(Ok(update)) => Ok(update),
        Ok(Err(e)) => Err(DocumentError::Decode(e.to_string())),
        Err(_) => Err(DocumentError::Decode("decoder panicked".into())),
    }
}

impl Document {
    pub fn new() -> Self {
        Document { doc: Doc::new() }
    }

    /// Rebuilds a document from a snapshot and the updates logged after it.
    pub fn load<'a>(
        snapshot: Option<&'a [u8]>,
        log: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, DocumentError> {
        let mut doc = Document::new();
        for update in snapshot.into_iter().chain(log) {
            doc.apply_update_v1(update)?;
        }
        Ok(doc)
    }

    /// Applies a v1 update from an untrusted source. Returns whether it
    /// changed anything: an update the document already holds (a
    /// reconnecting client's step 2 repeats the whole delete set) is not
    /// worth logging or relaying. Updates kept pending for missing
    /// dependencies count as changes, since they must be kept.
    pub fn apply_update_v1(&mut self, bytes: &[u8]) -> Result<bool, DocumentError> {
        let update = decode_update_v1(bytes)?;
        let doc = &self.doc;
        let applied = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            txn.apply_update(update)?;
            Ok::<bool, yrs::error::UpdateError>(
                !txn.insert_set().is_empty()
                    || !txn.delete_set().is_empty()
                    || txn.has_missing_updates(),
            )
        }));
        match applied {
            Ok(Ok(changed)) => Ok(changed),
            Ok(Err(e)) => Err(DocumentError::Apply(e.to_string())),
            Err(_) => Err(DocumentError::Poisoned),
        }
    }

    pub fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    /// `Y.encodeStateVector(doc)`.
    pub fn state_vector_v1(&self) -> Vec<u8> {
        self.state_vector().encode_v1()
    }

    /// `Y.encodeStateAsUpdate(doc)`, pending structs included.
    pub fn encode_state_v1(&self) -> Vec<u8> {
        self.diff_v1(&StateVector::default())
    }

    /// `Y.encodeStateAsUpdateV2(doc)`.
    pub fn encode_state_v2(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v2(&StateVector::default())
    }

    /// What a peer holding `sv` lacks, as a v1 update.
    pub fn diff_v1(&self, sv: &StateVector) -> Vec<u8> {
        self.doc.transact().encode_state_as_update_v1(sv)
    }

    /// What a peer holding `sv` lacks, as a v2 update.
    pub fn diff_v2(&self, sv: &StateVector) -> Vec<u8> {
        self.doc.transact().encode_state_as_update_v2(sv)
    }

    /// This node's state for cluster healing: the state vector and a digest
    /// of the delete set (deletions do not advance a state vector).
    pub fn peer_state(&self, updated_at_ms: u64) -> crate::cluster::PeerState {
        let txn = self.doc.transact();
        let snapshot = txn.snapshot();
        crate::cluster::PeerState {
            state_vector: snapshot.state_map,
            delete_set_digest: crate::cluster::delete_set_digest(&snapshot.delete_set),
            updated_at_ms,
        }
    }

    /// Every root as JSON: Text as string, Map as object, Array as array,
    /// XmlFragment as its XML string.
    pub fn to_json(&self) -> serde_json::Value {
        export::roots_to_json(&self.doc.transact())
    }

    /// Plain text of one root, if the document has a root of that name.
    pub fn root_text(&self, name: &str) -> Option<String> {
        export::root_text(&self.doc.transact(), name)
    }

    /// Names of every root, sorted.
    pub fn root_names(&self) -> Vec<String> {
        let txn = self.doc.transact();
        let mut names: Vec<String> = txn.root_refs().map(|(name, _)| name.to_owned()).collect();
        names.sort();
        names
    }

    /// The underlying yrs document, for callers that edit locally (tests, clients).
    pub fn yrs(&self) -> &Doc {
        &self.doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Map, Text};

    fn typed(text: &str) -> Vec<u8> {
        let doc = Doc::new();
        let t = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, text);
        txn.encode_update_v1()
    }

    #[test]
    fn malformed_updates_leave_the_document_unchanged() {
        let mut doc = Document::new();
        doc.apply_update_v1(&typed("hello")).expect("valid update");
        let before = doc.encode_state_v1();
        let cases: &[&[u8]] = &[
            &[],
            &[0xff],
            &[1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f],
            b"not an update at all",
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
            ],
        ];
        for bad in cases {
            let err = doc.apply_update_v1(bad).expect_err("malformed");
            assert!(
                matches!(err, DocumentError::Decode(_) | DocumentError::Apply(_)),
                "{bad:?}: {err}"
            );
            assert_eq!(doc.encode_state_v1(), before, "after {bad:?}");
        }
        assert_eq!(doc.root_text("t").as_deref(), Some("hello"));
    }

    #[test]
    fn applying_what_is_already_there_is_no_change() {
        let mut doc = Document::new();
        let update = typed("abc");
        assert_eq!(doc.apply_update_v1(&update), Ok(true));
        assert_eq!(doc.apply_update_v1(&update), Ok(false));
        assert_eq!(doc.apply_update_v1(&doc.encode_state_v1()), Ok(false));

        let client = Doc::new();
        client
            .transact_mut()
            .apply_update(Update::decode_v1(&update).expect("decodes"))
            .expect("applies");
        let text = client.get_or_insert_text("t");
        let deletion = {
            let mut txn = client.transact_mut();
            text.remove_range(&mut txn, 0, 1);
            txn.encode_update_v1()
        };
        assert_eq!(doc.apply_update_v1(&deletion), Ok(true));
        assert_eq!(doc.apply_update_v1(&deletion), Ok(false));
        assert_eq!(doc.root_text("t").as_deref(), Some("bc"));
    }

    #[test]
    fn updates_with_missing_dependencies_are_kept() {
        let client = Doc::new();
        let text = client.get_or_insert_text("t");
        let first = {
            let mut txn = client.transact_mut();
            text.insert(&mut txn, 0, "a");
            txn.encode_update_v1()
        };
        let second = {
            let mut txn = client.transact_mut();
            text.insert(&mut txn, 1, "b");
            txn.encode_update_v1()
        };
        let mut doc = Document::new();
        assert_eq!(
            doc.apply_update_v1(&second),
            Ok(true),
            "pending is a change"
        );
        assert_eq!(doc.apply_update_v1(&first), Ok(true));
        assert_eq!(doc.root_text("t").as_deref(), Some("ab"));
    }

    #[test]
    fn diff_carries_exactly_what_a_peer_lacks() {
        let mut server = Document::new();
        let client = Doc::new();
        let text = client.get_or_insert_text("t");
        text.insert(&mut client.transact_mut(), 0, "abc");
        server
            .apply_update_v1(
                &client
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default()),
            )
            .expect("apply");
        text.insert(&mut client.transact_mut(), 3, "def");
        let extra = client.transact().encode_diff_v1(&server.state_vector());
        server.apply_update_v1(&extra).expect("apply");
        // The client already has everything: the diff is an empty update.
        let diff = server.diff_v1(&client.transact().state_vector());
        let probe = Doc::new();
        probe
            .transact_mut()
            .apply_update(Update::decode_v1(&diff).expect("decodes"))
            .expect("applies");
        assert_eq!(probe.transact().state_vector(), StateVector::default());
        assert_eq!(server.root_text("t").as_deref(), Some("abcdef"));
    }

    #[test]
    fn snapshots_reload_to_the_same_state() {
        let mut doc = Document::new();
        doc.apply_update_v1(&typed("x")).expect("apply");
        let map_doc = Doc::new();
        let m = map_doc.get_or_insert_map("m");
        m.insert(&mut map_doc.transact_mut(), "k", 1);
        doc.apply_update_v1(
            &map_doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default()),
        )
        .expect("apply");
        let snapshot = doc.encode_state_v1();
        let reloaded = Document::load(Some(&snapshot), []).expect("reload");
        assert_eq!(reloaded.state_vector(), doc.state_vector());
        assert_eq!(reloaded.to_json(), doc.to_json());
        let v2 = doc.encode_state_v2();
        let probe = Doc::new();
        probe
            .transact_mut()
            .apply_update(Update::decode_v2(&v2).expect("v2"))
            .expect("apply");
        assert_eq!(
            probe.get_or_insert_text("t").get_string(&probe.transact()),
            "x"
        );
    }
}
