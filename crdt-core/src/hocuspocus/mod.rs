//! The Hocuspocus dialect: what `@hocuspocus/provider` 3.x and 4.x speak.
//!
//! ```text
//! frame     = varString(address) body            every frame but Ping and Pong
//!           | 0x09                                Ping, server -> client (v4 providers only)
//!           | 0x0a                                Pong, client -> server
//! address   = documentName                        (v3, v4 by default)
//!           | documentName "\0" sessionId         (v4 with sessionAwareness)
//! body      = varUint(type) payload
//! type 0 sync            = y-websocket sync body (step 1, step 2, update)   both ways
//! type 1 awareness       = varUint8Array(awareness update)                 both ways
//! type 2 auth, client    = varUint(0) varString(token) [varString(version)]  (v4 sends the version)
//! type 2 auth, server    = varUint(0)                      token sync request
//!                        | varUint(1) varString(reason)    permission denied
//!                        | varUint(2) varString(scope)     authenticated: "read-write" | "readonly"
//! type 3 query awareness = (empty)                                         client -> server
//! type 5 stateless       = varString(payload)                              both ways
//! type 7 close           = (empty) client -> server | varString(reason) server -> client
//! type 8 sync status     = varUint(1 | 0)                                  server -> client
//! types 4 (sync reply), 6 (broadcast stateless), 8 and 9 (ping) are never sent by a client.
//! ```
//!
//! For types 0, 1 and 3 the body is byte-identical to a y-websocket frame, so
//! it is decoded and encoded by [`crate::protocol`]. Decoding happens in two
//! steps: [`ClientFrame::decode`] reads the address (a failure there is a
//! socket-level error, WebSocket 1007), then [`ClientMessage::decode`] reads
//! the body (a failure there concerns only that document's session). Both
//! borrow from the frame. Every server frame to a session carries the
//! session's exact raw [`Address`].
//!
//! The per-document rules (pre-auth queue, acknowledgements, read-only
//! sessions, closing) are the state machine in [`session`].
//!
//! Reference: `hocuspocus-protocol.md`, §1 (wire protocol), §4 (behaviours a
//! compatible server implements), §5 (gotchas) and its appendix of captured
//! frames, which the tests below decode and encode byte for byte.

pub mod session;

use crate::protocol::{self, Message, ProtocolError};
use crate::state_vector::encode_state_vector;
use crate::wire::{Reader, WireError, Writer};
use thiserror::Error;
use yrs::StateVector;

/// Longest accepted address (document name, `\0` and session id) in bytes.
/// Hocuspocus has no bound; names are short in practice and the session id
/// of a v4 provider is about 11 characters.
pub const MAX_ADDRESS_BYTES: usize = 1024;
/// Longest accepted Auth token in bytes; JWTs are a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest accepted provider version string in bytes (e.g. `"4.8.0"`).
pub const MAX_VERSION_BYTES: usize = 64;
/// Longest accepted Stateless payload in bytes. Sync and awareness payloads
/// are bounded only by the server's frame size limit.
pub const MAX_STATELESS_BYTES: usize = 64 * 1024;

/// Frame type: a y-protocols sync message.
pub const MSG_SYNC: u64 = 0;
/// Frame type: an awareness update.
pub const MSG_AWARENESS: u64 = 1;
/// Frame type: authentication (token, token sync request, denial, success).
pub const MSG_AUTH: u64 = 2;
/// Frame type: a request for every awareness state.
pub const MSG_QUERY_AWARENESS: u64 = 3;
/// Frame type: server-internal sync reply; never sent to or by a provider.
pub const MSG_SYNC_REPLY: u64 = 4;
/// Frame type: an application message as a string.
pub const MSG_STATELESS: u64 = 5;
/// Frame type: server-internal stateless broadcast; a client must not send it.
pub const MSG_BROADCAST_STATELESS: u64 = 6;
/// Frame type: the end of one document's session.
pub const MSG_CLOSE: u64 = 7;
/// Frame type: the acknowledgement of one SyncStep2 or Update.
pub const MSG_SYNC_STATUS: u64 = 8;
/// Frame type number of Ping (sent only as the single byte [`PING_FRAME`]).
pub const MSG_PING: u64 = 9;
/// Frame type number of Pong (received only as the single byte [`PONG_FRAME`]).
pub const MSG_PONG: u64 = 10;

/// Auth subtype: the client's token, and a server's request to send it again.
pub const AUTH_TOKEN: u64 = 0;
/// Auth subtype: the server refuses the token, with a reason.
pub const AUTH_PERMISSION_DENIED: u64 = 1;
/// Auth subtype: the server accepts the token, with a scope.
pub const AUTH_AUTHENTICATED: u64 = 2;

/// The whole Ping frame, server to client. Send it only to v4 providers
/// (those whose Auth carried a version): a v3 provider throws on it.
pub const PING_FRAME: [u8; 1] = [MSG_PING as u8];
/// The whole Pong frame, a v4 provider's answer to [`PING_FRAME`].
pub const PONG_FRAME: [u8; 1] = [MSG_PONG as u8];

/// The raw address of a frame: a document name, optionally followed by `\0`
/// and a session id. Kept raw because every frame to a session must carry
/// exactly the address the client used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address<'a> {
    raw: &'a str,
}

impl<'a> Address<'a> {
    /// Checks the bounds of a raw address: non-empty (an empty address is
    /// what a y-websocket frame looks like) and at most
    /// [`MAX_ADDRESS_BYTES`].
    pub fn new(raw: &'a str) -> Result<Self, FrameError> {
        if raw.is_empty() {
            return Err(FrameError::EmptyAddress);
        }
        if raw.len() > MAX_ADDRESS_BYTES {
            return Err(FrameError::AddressTooLong { len: raw.len() });
        }
        Ok(Address { raw })
    }

    /// The address exactly as sent, to be echoed on every frame to the session.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// The document name: everything before the first `\0`. It may be empty
    /// (`"\0sid"`); the server's name rules decide what to do with it.
    pub fn document(&self) -> &'a str {
        self.raw.split('\0').next().unwrap_or_default()
    }

    /// The session id after the first `\0`, sent by v4 providers with
    /// `sessionAwareness: true`.
    pub fn session_id(&self) -> Option<&'a str> {
        self.raw.split_once('\0').map(|(_, session)| session)
    }
}

/// Why a frame has no readable address. The socket cannot route it, so it
/// closes (WebSocket 1007).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The address's lib0 encoding is malformed (empty frame, truncated,
    /// declared length past the end, not UTF-8).
    #[error("unreadable address: {0}")]
    Wire(#[from] WireError),
    /// The address is the empty string, as in a y-websocket frame.
    #[error("empty address")]
    EmptyAddress,
    /// The address is longer than [`MAX_ADDRESS_BYTES`].
    #[error("address of {len} bytes is longer than {MAX_ADDRESS_BYTES}")]
    AddressTooLong {
        /// Its length in bytes.
        len: usize,
    },
}

impl FrameError {
    /// Short, stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Wire(e) => e.reason(),
            FrameError::EmptyAddress => "empty_address",
            FrameError::AddressTooLong { .. } => "address_too_long",
        }
    }
}

/// A client-to-server frame with its address read, its body not yet decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    /// The single byte `0a`, a v4 provider's answer to a Ping.
    Pong,
    /// A frame for one document session.
    Addressed {
        /// Which session the frame is for.
        address: Address<'a>,
        /// `varUint(type) payload`, for [`ClientMessage::decode`].
        body: &'a [u8],
    },
}

impl<'a> ClientFrame<'a> {
    /// Reads the address of a frame. Only the address is checked here.
    pub fn decode(frame: &'a [u8]) -> Result<Self, FrameError> {
        if frame == PONG_FRAME {
            return Ok(ClientFrame::Pong);
        }
        let mut r = Reader::new(frame);
        let raw = r.read_var_string("address")?;
        let address = Address::new(raw)?;
        Ok(ClientFrame::Addressed {
            address,
            body: &frame[r.position()..],
        })
    }
}

/// A y-protocols sync message, the payload of a type 0 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMessage<'a> {
    /// The sender's state vector; the answer is a step 2 with what it lacks.
    Step1(StateVector),
    /// A v1 update answering a step 1.
    Step2(&'a [u8]),
    /// An incremental v1 update.
    Update(&'a [u8]),
}

impl<'a> From<SyncMessage<'a>> for Message<'a> {
    fn from(sync: SyncMessage<'a>) -> Self {
        match sync {
            SyncMessage::Step1(sv) => Message::SyncStep1(sv),
            SyncMessage::Step2(update) => Message::SyncStep2(update),
            SyncMessage::Update(update) => Message::Update(update),
        }
    }
}

/// A decoded client-to-server body. Payloads borrow from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// Sync step 1, step 2 or update.
    Sync(SyncMessage<'a>),
    /// An awareness update (see [`crate::awareness`]).
    Awareness(&'a [u8]),
    /// The client's token for this address.
    Auth {
        /// The token; `""` when the provider has none.
        token: &'a str,
        /// The provider's version: sent by v4, absent from v3. Only a
        /// socket whose providers sent it may receive [`PING_FRAME`].
        provider_version: Option<&'a str>,
    },
    /// A request for every awareness state.
    QueryAwareness,
    /// An application message.
    Stateless(&'a str),
    /// The provider detached or was destroyed.
    Close,
}

/// The types only a server sends; a client sending one is misbehaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerOnlyType {
    /// Type 4, server-internal.
    SyncReply,
    /// Type 6, server-internal; Hocuspocus closes the session (4.1.1, #1103).
    BroadcastStateless,
    /// Type 8, the server's acknowledgement.
    SyncStatus,
    /// Type 9 with an address (a real Ping has none).
    Ping,
}

/// Why a body is not a client message. Each concerns one document session;
/// the socket stays open.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// The body's lib0 encoding is malformed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A Sync, Awareness or QueryAwareness body is not a valid y-websocket frame.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A type no version of the protocol defines: Hocuspocus logs and ignores it.
    #[error("unknown message type {0}")]
    UnknownType(u64),
    /// A type only servers send.
    #[error("message type {0:?} is never sent by a client")]
    ServerOnly(ServerOnlyType),
    /// An Auth subtype other than Token.
    #[error("unknown auth message type {0}")]
    UnknownAuthType(u64),
    /// A field longer than its bound.
    #[error("{what} of {len} bytes is longer than {max}")]
    TooLarge {
        /// The field.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
}

impl MessageError {
    /// Short, stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            MessageError::Wire(e) => e.reason(),
            MessageError::Protocol(e) => e.reason(),
            MessageError::UnknownType(_) => "unknown_type",
            MessageError::ServerOnly(ServerOnlyType::SyncReply) => "client_sync_reply",
            MessageError::ServerOnly(ServerOnlyType::BroadcastStateless) => {
                "client_broadcast_stateless"
            }
            MessageError::ServerOnly(ServerOnlyType::SyncStatus) => "client_sync_status",
            MessageError::ServerOnly(ServerOnlyType::Ping) => "client_ping",
            MessageError::UnknownAuthType(_) => "unknown_auth_type",
            MessageError::TooLarge { .. } => "too_large",
        }
    }
}

fn bounded<'a>(s: &'a str, what: &'static str, max: usize) -> Result<&'a str, MessageError> {
    if s.len() > max {
        return Err(MessageError::TooLarge {
            what,
            len: s.len(),
            max,
        });
    }
    Ok(s)
}

impl<'a> ClientMessage<'a> {
    /// Decodes the body of an addressed frame (see [`ClientFrame::decode`]),
    /// which must hold exactly one message.
    pub fn decode(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let message = match r.read_var_u64("message type")? {
            // Byte-identical to y-websocket: the body is a y-websocket frame.
            MSG_SYNC | MSG_AWARENESS | MSG_QUERY_AWARENESS => {
                return Ok(match Message::decode(body)? {
                    Message::SyncStep1(sv) => ClientMessage::Sync(SyncMessage::Step1(sv)),
                    Message::SyncStep2(update) => ClientMessage::Sync(SyncMessage::Step2(update)),
                    Message::Update(update) => ClientMessage::Sync(SyncMessage::Update(update)),
                    Message::Awareness(update) => ClientMessage::Awareness(update),
                    Message::QueryAwareness => ClientMessage::QueryAwareness,
                    // Unreachable: the type read above is 0, 1 or 3.
                    Message::AuthDenied(_) => return Err(MessageError::UnknownType(MSG_AUTH)),
                });
            }
            MSG_AUTH => match r.read_var_u64("auth type")? {
                AUTH_TOKEN => {
                    let token = bounded(r.read_var_string("token")?, "token", MAX_TOKEN_BYTES)?;
                    let provider_version = if r.is_empty() {
                        None
                    } else {
                        Some(bounded(
                            r.read_var_string("provider version")?,
                            "provider version",
                            MAX_VERSION_BYTES,
                        )?)
                    };
                    ClientMessage::Auth {
                        token,
                        provider_version,
                    }
                }
                other => return Err(MessageError::UnknownAuthType(other)),
            },
            MSG_STATELESS => ClientMessage::Stateless(bounded(
                r.read_var_string("stateless payload")?,
                "stateless payload",
                MAX_STATELESS_BYTES,
            )?),
            MSG_CLOSE => ClientMessage::Close,
            MSG_SYNC_REPLY => return Err(MessageError::ServerOnly(ServerOnlyType::SyncReply)),
            MSG_BROADCAST_STATELESS => {
                return Err(MessageError::ServerOnly(ServerOnlyType::BroadcastStateless))
            }
            MSG_SYNC_STATUS => return Err(MessageError::ServerOnly(ServerOnlyType::SyncStatus)),
            MSG_PING => return Err(MessageError::ServerOnly(ServerOnlyType::Ping)),
            other => return Err(MessageError::UnknownType(other)),
        };
        r.finish()?;
        Ok(message)
    }
}

/// What an `Authenticated` frame grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `"read-write"`: updates are applied.
    ReadWrite,
    /// `"readonly"`: updates are acknowledged but not applied.
    ReadOnly,
}

impl Scope {
    /// The scope string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReadWrite => "read-write",
            Scope::ReadOnly => "readonly",
        }
    }
}

/// A server-to-client message; [`ServerMessage::encode`] puts the session's
/// address in front. Ping has no address: it is [`PING_FRAME`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage<'a> {
    /// The server's state vector, already v1-encoded.
    SyncStep1(&'a [u8]),
    /// The answer to a client's step 1: a v1 update.
    SyncStep2(&'a [u8]),
    /// An incremental v1 update.
    Update(&'a [u8]),
    /// An awareness update.
    Awareness(&'a [u8]),
    /// The token was accepted with this scope.
    Authenticated(Scope),
    /// The token was refused; the provider reports an authentication failure.
    PermissionDenied(&'a str),
    /// Asks the provider to send its token again (token refresh).
    TokenSyncRequest,
    /// The acknowledgement of one SyncStep2 or Update: `true` decrements the
    /// provider's unsynced count, `false` leaves it.
    SyncStatus(bool),
    /// An application message.
    Stateless(&'a str),
    /// This document's session ends; the socket stays open.
    Close(&'a str),
}

impl ServerMessage<'_> {
    /// The whole frame for the session at `address`.
    pub fn encode(&self, address: &Address<'_>) -> Vec<u8> {
        let mut w = Writer::with_capacity(address.raw().len() + 16 + self.payload_len());
        w.write_var_string(address.raw());
        self.write_body(&mut w);
        w.into_inner()
    }

    /// The frame without its address: `varUint(type) payload`. A server
    /// that queues frames per session puts the address in front when it
    /// writes them ([`prefix_body`]).
    pub fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(16 + self.payload_len());
        self.write_body(&mut w);
        w.into_inner()
    }

    fn write_body(&self, w: &mut Writer) {
        match self {
            ServerMessage::SyncStep1(sv) => write_sync(w, protocol::SYNC_STEP_1, sv),
            ServerMessage::SyncStep2(update) => write_sync(w, protocol::SYNC_STEP_2, update),
            ServerMessage::Update(update) => write_sync(w, protocol::SYNC_UPDATE, update),
            ServerMessage::Awareness(update) => {
                w.write_var_u64(MSG_AWARENESS);
                w.write_var_bytes(update);
            }
            ServerMessage::Authenticated(scope) => {
                w.write_var_u64(MSG_AUTH);
                w.write_var_u64(AUTH_AUTHENTICATED);
                w.write_var_string(scope.as_str());
            }
            ServerMessage::PermissionDenied(reason) => {
                w.write_var_u64(MSG_AUTH);
                w.write_var_u64(AUTH_PERMISSION_DENIED);
                w.write_var_string(reason);
            }
            ServerMessage::TokenSyncRequest => {
                w.write_var_u64(MSG_AUTH);
                w.write_var_u64(AUTH_TOKEN);
            }
            ServerMessage::SyncStatus(applied) => {
                w.write_var_u64(MSG_SYNC_STATUS);
                w.write_var_u64(u64::from(*applied));
            }
            ServerMessage::Stateless(payload) => {
                w.write_var_u64(MSG_STATELESS);
                w.write_var_string(payload);
            }
            ServerMessage::Close(reason) => {
                w.write_var_u64(MSG_CLOSE);
                w.write_var_string(reason);
            }
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            ServerMessage::SyncStep1(b)
            | ServerMessage::SyncStep2(b)
            | ServerMessage::Update(b)
            | ServerMessage::Awareness(b) => b.len(),
            ServerMessage::PermissionDenied(s)
            | ServerMessage::Stateless(s)
            | ServerMessage::Close(s) => s.len(),
            _ => 0,
        }
    }
}

fn write_sync(w: &mut Writer, sub_type: u64, payload: &[u8]) {
    w.write_var_u64(MSG_SYNC);
    w.write_var_u64(sub_type);
    w.write_var_bytes(payload);
}

/// The server's SyncStep1 for `address`, from a decoded state vector.
pub fn encode_sync_step1(address: &Address<'_>, state_vector: &StateVector) -> Vec<u8> {
    ServerMessage::SyncStep1(&encode_state_vector(state_vector)).encode(address)
}

/// A server frame body ([`ServerMessage::encode_body`], or a y-websocket
/// Sync or Awareness frame, which is the same body) prefixed with one
/// session's address.
pub fn prefix_body(address: &Address<'_>, body: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(address.raw().len() + 4 + body.len());
    w.write_var_string(address.raw());
    let mut frame = w.into_inner();
    frame.extend_from_slice(body);
    frame
}

/// A y-websocket frame from [`crate::protocol`] (Sync or Awareness), already
/// encoded once for every recipient, prefixed with one session's address:
/// the cost of a broadcast is one copy per distinct address.
pub fn prefix_y_websocket_frame(address: &Address<'_>, y_websocket_frame: &[u8]) -> Vec<u8> {
    debug_assert!(
        matches!(
            y_websocket_frame.first().map(|&t| u64::from(t)),
            Some(protocol::MSG_SYNC | protocol::MSG_AWARENESS)
        ),
        "only Sync and Awareness bodies are shared by both dialects"
    );
    let mut w = Writer::with_capacity(address.raw().len() + 4 + y_websocket_frame.len());
    w.write_var_string(address.raw());
    let mut frame = w.into_inner();
    frame.extend_from_slice(y_websocket_frame);
    frame
}

#[cfg(test)]
impl ClientMessage<'_> {
    /// The body a provider sends for this message (tests only: the server
    /// never encodes client messages).
    pub(crate) fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            ClientMessage::Sync(sync) => return Message::from(sync.clone()).encode(),
            ClientMessage::Awareness(update) => return protocol::encode_awareness(update),
            ClientMessage::QueryAwareness => return Message::QueryAwareness.encode(),
            ClientMessage::Auth {
                token,
                provider_version,
            } => {
                w.write_var_u64(MSG_AUTH);
                w.write_var_u64(AUTH_TOKEN);
                w.write_var_string(token);
                if let Some(version) = provider_version {
                    w.write_var_string(version);
                }
            }
            ClientMessage::Stateless(payload) => {
                w.write_var_u64(MSG_STATELESS);
                w.write_var_string(payload);
            }
            ClientMessage::Close => w.write_var_u64(MSG_CLOSE),
        }
        w.into_inner()
    }
}

#[cfg(test)]
mod tests;
