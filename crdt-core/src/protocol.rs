//! The y-websocket wire protocol: one message per binary frame.
//!
//! ```text
//! frame        = varUint(type) body
//! type 0 sync  = varUint(0) varUint8Array(state vector)   step 1
//!              | varUint(1) varUint8Array(update v1)      step 2
//!              | varUint(2) varUint8Array(update v1)      update
//! type 1       = varUint8Array(awareness update)
//! type 2 auth  = varUint(0) varString(reason)             permission denied
//! type 3       = (empty)                                  query awareness
//! ```
//!
//! Decoding borrows from the frame and never allocates for a payload: the
//! update bytes are validated separately by [`crate::Document`].

use crate::state_vector::{decode_state_vector, StateVectorError};
use crate::wire::{Reader, WireError, Writer};
use thiserror::Error;
use yrs::StateVector;

/// Frame type of sync messages (step 1, step 2, update).
pub const MSG_SYNC: u64 = 0;
/// Frame type of an awareness update.
pub const MSG_AWARENESS: u64 = 1;
/// Frame type of auth messages; y-websocket defines only permission denied.
pub const MSG_AUTH: u64 = 2;
/// Frame type asking for every awareness state; it has no body.
pub const MSG_QUERY_AWARENESS: u64 = 3;

/// Sync subtype: the sender's state vector, asking for what it lacks.
pub const SYNC_STEP_1: u64 = 0;
/// Sync subtype: the answer to step 1, a v1 update of what the asker lacks.
pub const SYNC_STEP_2: u64 = 1;
/// Sync subtype: an incremental v1 update.
pub const SYNC_UPDATE: u64 = 2;

/// Auth subtype: access refused, with a reason.
pub const AUTH_PERMISSION_DENIED: u64 = 0;

/// One decoded frame. Payloads borrow from it and are neither decoded nor
/// validated here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// The sender's state vector; the answer is a step 2 with what it lacks.
    SyncStep1(StateVector),
    /// A v1 update answering a step 1.
    SyncStep2(&'a [u8]),
    /// An incremental v1 update.
    Update(&'a [u8]),
    /// An awareness update (see [`crate::awareness`]).
    Awareness(&'a [u8]),
    /// Permission denied, with its reason. Only servers send it.
    AuthDenied(&'a str),
    /// A request for every present awareness state.
    QueryAwareness,
}

/// Why a frame is not a y-websocket message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The frame's lib0 encoding is malformed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The state vector of a sync step 1 is malformed.
    #[error("invalid state vector: {0}")]
    StateVector(#[from] StateVectorError),
    /// A frame type other than 0 to 3: a feature this server lacks.
    #[error("unknown message type {0}")]
    UnknownMessageType(u64),
    /// A sync message whose subtype is not 0 to 2.
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    /// An auth message other than permission denied (0).
    #[error("unknown auth message type {0}")]
    UnknownAuthType(u64),
}

impl ProtocolError {
    /// An unknown top-level type is a feature the server lacks (WebSocket 1003);
    /// everything else is a frame that does not decode (1007).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, ProtocolError::UnknownMessageType(_))
    }

    /// Short, stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ProtocolError::Wire(WireError::Truncated { .. }) => "truncated",
            ProtocolError::Wire(WireError::VarintOverflow { .. }) => "varint_overflow",
            ProtocolError::Wire(WireError::LengthTooLarge { .. }) => "length_too_large",
            ProtocolError::Wire(WireError::InvalidUtf8 { .. }) => "invalid_utf8",
            ProtocolError::Wire(WireError::TrailingBytes { .. }) => "trailing_bytes",
            ProtocolError::StateVector(_) => "bad_state_vector",
            ProtocolError::UnknownMessageType(_) => "unknown_type",
            ProtocolError::UnknownSyncType(_) => "unknown_sync_type",
            ProtocolError::UnknownAuthType(_) => "unknown_auth_type",
        }
    }
}

impl<'a> Message<'a> {
    /// Decodes a whole frame, which must hold exactly one message.
    pub fn decode(frame: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(frame);
        let message = match r.read_var_u64("message type")? {
            MSG_SYNC => match r.read_var_u64("sync type")? {
                SYNC_STEP_1 => {
                    let sv = r.read_var_bytes("state vector")?;
                    Message::SyncStep1(decode_state_vector(sv)?)
                }
                SYNC_STEP_2 => Message::SyncStep2(r.read_var_bytes("sync step 2 update")?),
                SYNC_UPDATE => Message::Update(r.read_var_bytes("update")?),
                other => return Err(ProtocolError::UnknownSyncType(other)),
            },
            MSG_AWARENESS => Message::Awareness(r.read_var_bytes("awareness update")?),
            MSG_AUTH => match r.read_var_u64("auth type")? {
                AUTH_PERMISSION_DENIED => Message::AuthDenied(r.read_var_string("auth reason")?),
                other => return Err(ProtocolError::UnknownAuthType(other)),
            },
            MSG_QUERY_AWARENESS => Message::QueryAwareness,
            other => return Err(ProtocolError::UnknownMessageType(other)),
        };
        r.finish()?;
        Ok(message)
    }

    /// The frame for this message; [`Message::decode`] reads it back.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::SyncStep1(sv) => {
                encode_sync(SYNC_STEP_1, &crate::state_vector::encode_state_vector(sv))
            }
            Message::SyncStep2(update) => encode_sync(SYNC_STEP_2, update),
            Message::Update(update) => encode_sync(SYNC_UPDATE, update),
            Message::Awareness(update) => encode_awareness(update),
            Message::AuthDenied(reason) => encode_auth_denied(reason),
            Message::QueryAwareness => vec![MSG_QUERY_AWARENESS as u8],
        }
    }
}

fn encode_sync(sub_type: u64, payload: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(payload.len() + 12);
    w.write_var_u64(MSG_SYNC);
    w.write_var_u64(sub_type);
    w.write_var_bytes(payload);
    w.into_inner()
}

/// Sync step 1 carrying an already encoded v1 state vector.
pub fn encode_sync_step1(state_vector_v1: &[u8]) -> Vec<u8> {
    encode_sync(SYNC_STEP_1, state_vector_v1)
}

/// Sync step 2 frame carrying an already encoded v1 update.
pub fn encode_sync_step2(update_v1: &[u8]) -> Vec<u8> {
    encode_sync(SYNC_STEP_2, update_v1)
}

/// Sync update frame carrying an already encoded v1 update.
pub fn encode_update(update_v1: &[u8]) -> Vec<u8> {
    encode_sync(SYNC_UPDATE, update_v1)
}

/// Awareness frame carrying an already encoded awareness update.
pub fn encode_awareness(awareness_update: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(awareness_update.len() + 6);
    w.write_var_u64(MSG_AWARENESS);
    w.write_var_bytes(awareness_update);
    w.into_inner()
}

/// Permission-denied frame; y-websocket clients log `reason` and stay
/// connected.
pub fn encode_auth_denied(reason: &str) -> Vec<u8> {
    let mut w = Writer::with_capacity(reason.len() + 8);
    w.write_var_u64(MSG_AUTH);
    w.write_var_u64(AUTH_PERMISSION_DENIED);
    w.write_var_string(reason);
    w.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames as the y-websocket npm client produces them.
    #[test]
    fn decodes_every_message_kind() {
        let mut sv = StateVector::default();
        sv.set_max(yrs::block::ClientID::new(7), 3);
        let cases: Vec<(Vec<u8>, Message)> = vec![
            (vec![0, 0, 1, 0], Message::SyncStep1(StateVector::default())),
            (vec![0, 0, 3, 1, 7, 3], Message::SyncStep1(sv)),
            (vec![0, 1, 2, 0, 0], Message::SyncStep2(&[0, 0])),
            (vec![0, 2, 3, 1, 2, 3], Message::Update(&[1, 2, 3])),
            (vec![1, 1, 0], Message::Awareness(&[0])),
            (vec![2, 0, 2, b'n', b'o'], Message::AuthDenied("no")),
            (vec![3], Message::QueryAwareness),
        ];
        for (frame, expected) in cases {
            let decoded = Message::decode(&frame);
            assert_eq!(decoded.as_ref(), Ok(&expected), "frame {frame:?}");
            assert_eq!(expected.encode(), frame, "re-encoding {expected:?}");
        }
    }

    #[test]
    fn malformed_frames_are_precise_errors() {
        let cases: &[(&[u8], &str)] = &[
            (&[], "truncated"),
            (&[0], "truncated"),
            (&[0, 2], "truncated"),
            (&[0, 2, 5, 1, 2], "length_too_large"),
            (&[0, 2, 0x80], "truncated"),
            (&[0, 9, 0], "unknown_sync_type"),
            (&[7, 0], "unknown_type"),
            (
                &[
                    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
                ],
                "varint_overflow",
            ),
            (&[3, 0], "trailing_bytes"),
            (&[0, 2, 1, 1, 9], "trailing_bytes"),
            (&[2, 0, 2, 0xff, 0xfe], "invalid_utf8"),
            (&[2, 5], "unknown_auth_type"),
            (&[0, 0, 2, 5, 1], "bad_state_vector"),
        ];
        for (frame, reason) in cases {
            let err = Message::decode(frame).expect_err("must not decode");
            assert_eq!(err.reason(), *reason, "frame {frame:?}: {err}");
        }
    }

    #[test]
    fn only_unknown_types_are_unsupported() {
        assert!(Message::decode(&[4]).unwrap_err().is_unsupported());
        assert!(!Message::decode(&[0, 4]).unwrap_err().is_unsupported());
    }
}
