//! Messages between Quire nodes over Redis pub/sub.
//!
//! ```text
//! message      = u8 version (1) | u8 kind | varString origin node | varString doc | body
//! kind 0 update       body = varUint8Array(v1 update)
//! kind 1 awareness    body = varUint8Array(awareness update)
//! kind 2 sync request body = state | varUint want awareness
//! kind 3 sync reply   body = varString target node | varUint8Array(v1 update)
//!                            | varUint has state | [state]
//! kind 4 deleted      body = varUint(deleted at, Unix millis)
//! kind 5 stateless    body = varString(payload of a Hocuspocus stateless message)
//! state               = varUint8Array(state vector) | varUint(delete-set digest)
//!                       | varUint(last change of this copy, Unix millis)
//! ```
//!
//! Pub/sub is at-most-once, so nodes heal by state vector: a node sends a
//! sync request with its state vector and a digest of its delete set (a
//! deletion does not advance a state vector); a peer that holds something
//! the requester lacks, or that lacks something itself, answers with a
//! sync reply carrying the diff and its own state, and the requester sends
//! back what the peer lacks.
//!
//! Deletions leave tombstones. A copy last changed before a tombstone is
//! stale (its node was away when the document was deleted): a node holding
//! the tombstone answers it with `deleted` instead of taking its content.

use crate::state_vector::{decode_state_vector, encode_state_vector};
use crate::wire::{Reader, WireError, Writer};
use thiserror::Error;
use yrs::StateVector;

/// Format version, the first byte; messages of any other version are
/// refused.
pub const VERSION: u8 = 1;
/// Kind byte of [`Body::Update`].
pub const KIND_UPDATE: u8 = 0;
/// Kind byte of [`Body::Awareness`].
pub const KIND_AWARENESS: u8 = 1;
/// Kind byte of [`Body::SyncRequest`].
pub const KIND_SYNC_REQUEST: u8 = 2;
/// Kind byte of [`Body::SyncReply`].
pub const KIND_SYNC_REPLY: u8 = 3;
/// Kind byte of [`Body::Deleted`].
pub const KIND_DELETED: u8 = 4;
/// Kind byte of [`Body::Stateless`].
pub const KIND_STATELESS: u8 = 5;

/// Why bytes from pub/sub are not a cluster message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// The lib0 encoding is malformed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Sent by a node that speaks another [`VERSION`].
    #[error("unsupported cluster message version {0}")]
    Version(u8),
    /// A kind byte this node does not know.
    #[error("unknown cluster message kind {0}")]
    Kind(u8),
    /// The state vector of a sync request or reply is malformed; the text
    /// says how.
    #[error("invalid state vector: {0}")]
    StateVector(String),
}

/// A node's state of one document, for healing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    /// Clocks of every client this copy holds.
    pub state_vector: StateVector,
    /// [`delete_set_digest`] of this copy's deletions, which the state
    /// vector does not show.
    pub delete_set_digest: u64,
    /// When this copy last changed (Unix millis), to compare with tombstones.
    pub updated_at_ms: u64,
}

/// What a cluster message says about its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A v1 update the origin applied, for peers to apply.
    Update(Vec<u8>),
    /// An encoded awareness update the origin accepted, for peers' clients.
    Awareness(Vec<u8>),
    /// The origin's state; a peer that holds more or less answers with a
    /// [`Body::SyncReply`].
    SyncRequest {
        /// The requester's state.
        state: PeerState,
        /// Whether peers should also publish their own clients' awareness
        /// states (the requester just arrived).
        want_awareness: bool,
    },
    /// An answer addressed to one node.
    SyncReply {
        /// Node id of the requester; other nodes ignore the reply.
        target: String,
        /// V1 diff of what the target lacks; empty when it lacks nothing.
        update: Vec<u8>,
        /// The replier's state, so the target sends back what the replier
        /// lacks; `None` on that last leg, which needs no answer.
        state: Option<PeerState>,
    },
    /// The document was deleted: copies last changed before `at_ms` are
    /// stale.
    Deleted {
        /// When it was deleted, Unix millis.
        at_ms: u64,
    },
    /// A Hocuspocus stateless payload, for peers' Hocuspocus sessions of
    /// the document. A node of an older version refuses the kind (logged,
    /// dropped); nothing else depends on it.
    Stateless(String),
}

/// One message on pub/sub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMessage {
    /// Node id of the sender, which ignores its own messages.
    pub origin: String,
    /// Name of the document it is about.
    pub doc: String,
    /// The kind of message, with its payload.
    pub body: Body,
}

fn write_state(w: &mut Writer, state: &PeerState) {
    w.write_var_bytes(&encode_state_vector(&state.state_vector));
    w.write_var_u64(state.delete_set_digest);
    w.write_var_u64(state.updated_at_ms);
}

fn read_state(r: &mut Reader<'_>) -> Result<PeerState, ClusterError> {
    let sv = r.read_var_bytes("state vector")?;
    let state_vector =
        decode_state_vector(sv).map_err(|e| ClusterError::StateVector(e.to_string()))?;
    let delete_set_digest = r.read_var_u64("delete set digest")?;
    let updated_at_ms = r.read_var_u64("updated at")?;
    Ok(PeerState {
        state_vector,
        delete_set_digest,
        updated_at_ms,
    })
}

impl ClusterMessage {
    /// Encodes with the layout in the module doc.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64);
        let kind = match &self.body {
            Body::Update(_) => KIND_UPDATE,
            Body::Awareness(_) => KIND_AWARENESS,
            Body::SyncRequest { .. } => KIND_SYNC_REQUEST,
            Body::SyncReply { .. } => KIND_SYNC_REPLY,
            Body::Deleted { .. } => KIND_DELETED,
            Body::Stateless(_) => KIND_STATELESS,
        };
        let mut out = vec![VERSION, kind];
        w.write_var_string(&self.origin);
        w.write_var_string(&self.doc);
        match &self.body {
            Body::Update(bytes) | Body::Awareness(bytes) => w.write_var_bytes(bytes),
            Body::SyncRequest {
                state,
                want_awareness,
            } => {
                write_state(&mut w, state);
                w.write_var_u64(u64::from(*want_awareness));
            }
            Body::SyncReply {
                target,
                update,
                state,
            } => {
                w.write_var_string(target);
                w.write_var_bytes(update);
                match state {
                    Some(state) => {
                        w.write_var_u64(1);
                        write_state(&mut w, state);
                    }
                    None => w.write_var_u64(0),
                }
            }
            Body::Deleted { at_ms } => w.write_var_u64(*at_ms),
            Body::Stateless(payload) => w.write_var_string(payload),
        }
        out.extend_from_slice(&w.into_inner());
        out
    }

    /// Decodes one message; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, ClusterError> {
        let mut r = Reader::new(bytes);
        let version = r.read_u8("version")?;
        if version != VERSION {
            return Err(ClusterError::Version(version));
        }
        let kind = r.read_u8("kind")?;
        let origin = r.read_var_string("origin")?.to_owned();
        let doc = r.read_var_string("doc")?.to_owned();
        let body = match kind {
            KIND_UPDATE => Body::Update(r.read_var_bytes("update")?.to_vec()),
            KIND_AWARENESS => Body::Awareness(r.read_var_bytes("awareness")?.to_vec()),
            KIND_SYNC_REQUEST => Body::SyncRequest {
                state: read_state(&mut r)?,
                want_awareness: r.read_var_u64("want awareness")? != 0,
            },
            KIND_SYNC_REPLY => Body::SyncReply {
                target: r.read_var_string("target")?.to_owned(),
                update: r.read_var_bytes("update")?.to_vec(),
                state: match r.read_var_u64("has state")? {
                    0 => None,
                    _ => Some(read_state(&mut r)?),
                },
            },
            KIND_DELETED => Body::Deleted {
                at_ms: r.read_var_u64("deleted at")?,
            },
            KIND_STATELESS => Body::Stateless(r.read_var_string("stateless payload")?.to_owned()),
            other => return Err(ClusterError::Kind(other)),
        };
        r.finish()?;
        Ok(ClusterMessage { origin, doc, body })
    }
}

/// Whether every clock in `a` is at most the one in `b`: `b` holds
/// everything `a` does (deletions aside).
pub fn state_vector_le(a: &StateVector, b: &StateVector) -> bool {
    a.iter().all(|(client, clock)| b.get(client) >= *clock)
}

/// FNV-1a, stable across processes and versions (unlike `DefaultHasher`).
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A digest of a delete set that does not depend on how the ranges happen
/// to be split: adjacent and overlapping ranges are merged first.
pub fn delete_set_digest(delete_set: &yrs::IdSet) -> u64 {
    let mut canonical = Vec::new();
    for (client, ranges) in delete_set.iter() {
        let mut spans: Vec<(u32, u32)> = ranges.iter().map(|r| (r.start, r.end)).collect();
        spans.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        canonical.extend_from_slice(&client.get().to_le_bytes());
        for (start, end) in merged {
            canonical.extend_from_slice(&start.to_le_bytes());
            canonical.extend_from_slice(&end.to_le_bytes());
        }
    }
    digest(&canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::block::ClientID;

    fn sv(entries: &[(u64, u32)]) -> StateVector {
        let mut sv = StateVector::default();
        for (client, clock) in entries {
            sv.set_max(ClientID::new(*client), *clock);
        }
        sv
    }

    #[test]
    fn every_kind_round_trips() {
        let state = PeerState {
            state_vector: sv(&[(1, 5), (9, 2)]),
            delete_set_digest: 77,
            updated_at_ms: 1_700_000_000_000,
        };
        let bodies = vec![
            Body::Update(vec![1, 2, 3]),
            Body::Awareness(vec![0]),
            Body::SyncRequest {
                state: state.clone(),
                want_awareness: true,
            },
            Body::SyncReply {
                target: "node-b".into(),
                update: vec![0, 0],
                state: Some(state),
            },
            Body::SyncReply {
                target: "node-b".into(),
                update: vec![],
                state: None,
            },
            Body::Deleted { at_ms: 42 },
            Body::Stateless("{\"x\":1}".to_owned()),
        ];
        for body in bodies {
            let message = ClusterMessage {
                origin: "node-a".into(),
                doc: "team/notes".into(),
                body,
            };
            assert_eq!(
                ClusterMessage::decode(&message.encode()),
                Ok(message.clone())
            );
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (&[], "ends early"),
            (&[2, 0], "version 2"),
            (&[1, 9, 0, 0], "kind 9"),
            (&[1, 0, 1, b'a', 1, b'd', 5, 1], "declares 5 bytes"),
            (&[1, 4, 0, 0, 0, 0], "unexpected bytes"),
        ];
        for (input, needle) in cases {
            let err = ClusterMessage::decode(input).expect_err("malformed");
            assert!(err.to_string().contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn state_vector_order() {
        assert!(state_vector_le(&sv(&[]), &sv(&[(1, 1)])));
        assert!(state_vector_le(&sv(&[(1, 1)]), &sv(&[(1, 2)])));
        assert!(!state_vector_le(&sv(&[(1, 3)]), &sv(&[(1, 2)])));
        assert!(!state_vector_le(&sv(&[(2, 1)]), &sv(&[(1, 2)])));
    }

    #[test]
    fn digest_is_stable() {
        assert_eq!(digest(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(digest(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
