//! [`HocuspocusSocket`]: a raw client of the Hocuspocus dialect
//! (`@hocuspocus/provider`'s frames, built with crdt-core's codecs), for
//! tests that assert exact frames: acks, addresses, CLOSEs, close codes.
//!
//! It keeps no document: tests build updates with yrs and read what the
//! server says, frame by frame.

use crate::client::CloseInfo;
use crate::raw::{RawFrame, RawSocket};
use crate::ClientError;
use crdt_core::hocuspocus::{
    AUTH_AUTHENTICATED, AUTH_PERMISSION_DENIED, AUTH_TOKEN, MSG_AUTH, MSG_AWARENESS,
    MSG_BROADCAST_STATELESS, MSG_CLOSE, MSG_QUERY_AWARENESS, MSG_STATELESS, MSG_SYNC,
    MSG_SYNC_STATUS, PING_FRAME, PONG_FRAME,
};
use crdt_core::protocol::{
    encode_awareness, encode_sync_step1, encode_sync_step2, encode_update, SYNC_STEP_1,
    SYNC_STEP_2, SYNC_UPDATE,
};
use crdt_core::wire::{Reader, Writer};
use std::time::Duration;
use tokio::time::Instant;

/// A server message, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    /// The server's state vector (v1).
    SyncStep1(Vec<u8>),
    /// A v1 update answering a SyncStep1.
    SyncStep2(Vec<u8>),
    /// A relayed v1 update.
    Update(Vec<u8>),
    /// An awareness update.
    Awareness(Vec<u8>),
    /// The scope: `read-write` or `readonly`.
    Authenticated(String),
    PermissionDenied(String),
    /// "Send your token again".
    TokenSyncRequest,
    /// The acknowledgement of one SyncStep2 or Update: 1 or 0.
    SyncStatus(u64),
    Stateless(String),
    /// The document's session ended; the socket lives on.
    Close(String),
    /// Anything else: the type and the rest of the body.
    Other(u64, Vec<u8>),
}

/// One thing the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// The one-byte Ping (`09`).
    Ping,
    /// A frame for one address.
    Frame { address: String, message: ServerMsg },
    /// The socket's close frame (`None`: closed without one).
    Closed(Option<CloseInfo>),
}

/// A raw Hocuspocus connection.
pub struct HocuspocusSocket {
    raw: RawSocket,
}

/// The frame a provider sends: the address, then the body.
pub fn client_frame(address: &str, body: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.write_var_string(address);
    let mut frame = w.into_inner();
    frame.extend_from_slice(body);
    frame
}

/// An Auth body: token, then the version a v4 provider adds.
pub fn auth_body(token: &str, version: Option<&str>) -> Vec<u8> {
    let mut w = Writer::default();
    w.write_var_u64(MSG_AUTH);
    w.write_var_u64(AUTH_TOKEN);
    w.write_var_string(token);
    if let Some(version) = version {
        w.write_var_string(version);
    }
    w.into_inner()
}

fn string_body(kind: u64, text: &str) -> Vec<u8> {
    let mut w = Writer::default();
    w.write_var_u64(kind);
    w.write_var_string(text);
    w.into_inner()
}

/// Decodes one server frame.
pub fn decode_server_frame(bytes: &[u8]) -> Result<Heard, String> {
    if bytes == PING_FRAME {
        return Ok(Heard::Ping);
    }
    let e = |e: crdt_core::wire::WireError| e.to_string();
    let mut r = Reader::new(bytes);
    let address = r.read_var_string("address").map_err(e)?.to_owned();
    let message = match r.read_var_u64("type").map_err(e)? {
        MSG_SYNC => {
            let sub = r.read_var_u64("sync type").map_err(e)?;
            let payload = r.read_var_bytes("payload").map_err(e)?.to_vec();
            match sub {
                SYNC_STEP_1 => ServerMsg::SyncStep1(payload),
                SYNC_STEP_2 => ServerMsg::SyncStep2(payload),
                SYNC_UPDATE => ServerMsg::Update(payload),
                other => return Err(format!("sync type {other}")),
            }
        }
        MSG_AWARENESS => ServerMsg::Awareness(r.read_var_bytes("awareness").map_err(e)?.to_vec()),
        MSG_AUTH => match r.read_var_u64("auth type").map_err(e)? {
            AUTH_TOKEN => ServerMsg::TokenSyncRequest,
            AUTH_PERMISSION_DENIED => {
                ServerMsg::PermissionDenied(r.read_var_string("reason").map_err(e)?.to_owned())
            }
            AUTH_AUTHENTICATED => {
                ServerMsg::Authenticated(r.read_var_string("scope").map_err(e)?.to_owned())
            }
            other => return Err(format!("auth type {other}")),
        },
        MSG_SYNC_STATUS => ServerMsg::SyncStatus(r.read_var_u64("status").map_err(e)?),
        MSG_STATELESS => ServerMsg::Stateless(r.read_var_string("payload").map_err(e)?.to_owned()),
        MSG_CLOSE => ServerMsg::Close(r.read_var_string("reason").map_err(e)?.to_owned()),
        other => ServerMsg::Other(other, bytes[r.position()..].to_vec()),
    };
    if !matches!(message, ServerMsg::Other(..)) {
        r.finish().map_err(e)?;
    }
    Ok(Heard::Frame { address, message })
}

impl HocuspocusSocket {
    /// Opens a socket to `url` (e.g. `ws://host:port/hocuspocus`).
    pub async fn connect(url: &str) -> Result<HocuspocusSocket, ClientError> {
        Ok(HocuspocusSocket {
            raw: RawSocket::connect(url).await?,
        })
    }

    /// Sends `body` for `address`.
    pub async fn send(&mut self, address: &str, body: &[u8]) -> Result<(), ClientError> {
        self.raw.send_binary(client_frame(address, body)).await
    }

    /// Sends bytes as one binary frame, as they are.
    pub async fn send_raw(&mut self, bytes: impl Into<Vec<u8>>) -> Result<(), ClientError> {
        self.raw.send_binary(bytes).await
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.raw.send_text(text).await
    }

    /// Auth with `token`; `version` makes it a v4 provider's.
    pub async fn auth(
        &mut self,
        address: &str,
        token: &str,
        version: Option<&str>,
    ) -> Result<(), ClientError> {
        self.send(address, &auth_body(token, version)).await
    }

    /// SyncStep1 with a v1 state vector.
    pub async fn sync_step1(&mut self, address: &str, sv: &[u8]) -> Result<(), ClientError> {
        self.send(address, &encode_sync_step1(sv)).await
    }

    /// SyncStep2 with a v1 update.
    pub async fn sync_step2(&mut self, address: &str, update: &[u8]) -> Result<(), ClientError> {
        self.send(address, &encode_sync_step2(update)).await
    }

    /// An Update with a v1 update.
    pub async fn update(&mut self, address: &str, update: &[u8]) -> Result<(), ClientError> {
        self.send(address, &encode_update(update)).await
    }

    /// An awareness update.
    pub async fn awareness(&mut self, address: &str, update: &[u8]) -> Result<(), ClientError> {
        self.send(address, &encode_awareness(update)).await
    }

    /// QueryAwareness.
    pub async fn query_awareness(&mut self, address: &str) -> Result<(), ClientError> {
        self.send(address, &[MSG_QUERY_AWARENESS as u8]).await
    }

    /// A stateless message.
    pub async fn stateless(&mut self, address: &str, payload: &str) -> Result<(), ClientError> {
        self.send(address, &string_body(MSG_STATELESS, payload))
            .await
    }

    /// BroadcastStateless, which only servers may send.
    pub async fn broadcast_stateless(
        &mut self,
        address: &str,
        payload: &str,
    ) -> Result<(), ClientError> {
        self.send(address, &string_body(MSG_BROADCAST_STATELESS, payload))
            .await
    }

    /// CLOSE: the provider detached.
    pub async fn close_document(&mut self, address: &str) -> Result<(), ClientError> {
        self.send(address, &[MSG_CLOSE as u8]).await
    }

    /// Pong (`0a`).
    pub async fn pong(&mut self) -> Result<(), ClientError> {
        self.raw.send_binary(PONG_FRAME.to_vec()).await
    }

    /// The next thing the server sends, within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Heard, ClientError> {
        match self.raw.recv(timeout).await? {
            RawFrame::Binary(bytes) => {
                decode_server_frame(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
            }
            RawFrame::Text(text) => Err(ClientError::Protocol(format!("text frame {text:?}"))),
            RawFrame::Close(info) => Ok(Heard::Closed(info)),
            RawFrame::Ended => Ok(Heard::Closed(None)),
        }
    }

    /// Reads until a message for `address` satisfies `want`, within
    /// `timeout`; returns it and every frame read before it.
    pub async fn until(
        &mut self,
        address: &str,
        timeout: Duration,
        mut want: impl FnMut(&ServerMsg) -> bool,
    ) -> Result<(ServerMsg, Vec<Heard>), ClientError> {
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let heard = match self.recv(left).await {
                Err(ClientError::Timeout { .. }) => {
                    return Err(ClientError::Protocol(format!(
                        "no matching message for {address:?} within {timeout:?}; heard {before:?}"
                    )))
                }
                other => other?,
            };
            match heard {
                Heard::Frame {
                    address: a,
                    message,
                } if a == address && want(&message) => return Ok((message, before)),
                Heard::Closed(info) => {
                    return Err(ClientError::Protocol(format!(
                        "socket closed ({info:?}) while waiting for {address:?}; heard {before:?}"
                    )))
                }
                other => before.push(other),
            }
        }
    }

    /// Everything the server sends within `window` (it may be nothing).
    pub async fn drain(&mut self, window: Duration) -> Result<Vec<Heard>, ClientError> {
        let deadline = Instant::now() + window;
        let mut heard = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Ok(Heard::Closed(info)) => {
                    heard.push(Heard::Closed(info));
                    return Ok(heard);
                }
                Ok(h) => heard.push(h),
                Err(ClientError::Timeout { .. }) => return Ok(heard),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads until the socket closes; its close frame.
    pub async fn wait_close(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<CloseInfo>, ClientError> {
        self.raw.wait_close(timeout).await
    }
}
