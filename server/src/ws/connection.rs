//! One WebSocket connection, driven by one task.
//!
//! The task reads frames and hands them to the document actor, and writes
//! what the actor queued for it, pings, and the close frame. Both sides are
//! polled in one state machine ([`Connection::poll_until_done`]) rather than
//! in a reader and a writer task: an idle connection then costs one small
//! future, and no lock is shared between halves of the socket. Each side
//! still progresses on its own: a socket backed up by a client that stopped
//! reading does not stop the task reading that client (nor noticing that the
//! actor closed it), and a full actor queue stops reading, never writing.

use super::Peer;
use crate::doc::{
    CloseReason, ConnId, Dialect, DocCommand, DocHandle, Gone, IfAbsent, Offer, Outbound,
    OutboundReceiver, Permit, Received, Registry,
};
use crate::limits::{ConnectionLimits, RateExceeded};
use crate::names::DocName;
use crate::state::AppState;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use bytes::Bytes;
use crdt_core::protocol::encode_auth_denied;
use crdt_core::{AwarenessUpdate, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

/// What an accepted upgrade hands the connection.
pub(super) struct Setup {
    pub app: AppState,
    pub name: DocName,
    pub id: ConnId,
    pub peer: Peer,
    /// Held for the connection's life: `--max-connections`.
    pub permit: OwnedSemaphorePermit,
}

impl Setup {
    fn into_permit(self: Box<Self>) -> OwnedSemaphorePermit {
        self.permit
    }
}

/// The connection's whole life, as one boxed future: idle connections are
/// what a node holds most of, so every byte of this future counts. The
/// socket is boxed too, so that no layer of the future keeps a copy of it.
pub(super) fn run(
    socket: WebSocket,
    setup: Box<Setup>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let span = tracing::info_span!(
        "conn",
        conn = setup.id,
        doc = %setup.name,
        node = %setup.app.node_id,
        peer = %setup.peer.addr,
        sub = %setup.peer.subject,
    );
    Box::pin(serve(Box::new(socket), setup).instrument(span))
}

async fn serve(socket: Box<WebSocket>, setup: Box<Setup>) {
    let (outbound, outbound_rx) = Outbound::channel(setup.app.config.outbound_queue);
    // Boxed: joining is a one-off, and its future would otherwise make
    // every connection's future as large as itself for its whole life.
    let Some(handle) = Box::pin(join(
        &setup.app.registry,
        &setup.name,
        setup.id,
        outbound,
        Dialect::YWebsocket,
        setup.peer.who.clone(),
    ))
    .await
    else {
        return;
    };
    tracing::debug!(read_only = !setup.peer.can_write, "connected");
    crate::metrics::connection_opened();
    let config = &setup.app.config;
    let mut connection = Connection {
        socket,
        outbound: outbound_rx,
        handle,
        id: setup.id,
        can_write: setup.peer.can_write,
        limits: ConnectionLimits::new(
            config.rate_messages_per_sec,
            config.rate_bytes_per_sec,
            Duration::from_secs(config.rate_burst_secs),
            config.max_message_bytes,
        ),
        blocked: None,
        unflushed: false,
        ping_due: false,
        ping_interval: config.ping_interval(),
        last_seen: Instant::now(),
    };
    let shutdown = setup.app.shutdown.clone().cancelled_owned();
    // Only the permit lives on; the rest of the setup is freed here.
    let permit = setup.into_permit();
    let ending = {
        let ping = tokio::time::sleep(connection.ping_interval);
        tokio::pin!(shutdown, ping);
        std::future::poll_fn(|cx| connection.poll_until_done(cx, &mut shutdown, &mut ping)).await
    };
    Box::pin(connection.finish(ending)).await;
    drop(permit);
    crate::metrics::connection_closed();
    tracing::debug!("disconnected");
}

/// Registers the connection (a Hocuspocus session too) with the
/// document's actor, reopening the document if it unloaded since the
/// connection was accepted.
pub(super) async fn join(
    registry: &Registry,
    name: &DocName,
    id: ConnId,
    outbound: Outbound,
    dialect: Dialect,
    who: Option<Arc<str>>,
) -> Option<DocHandle> {
    let joined = registry
        .with_doc(name, IfAbsent::Create, |handle| {
            let outbound = outbound.clone();
            let who = who.clone();
            async move {
                handle
                    .request(|reply| DocCommand::Connect {
                        id,
                        outbound,
                        dialect,
                        who,
                        reply,
                    })
                    .await?;
                Ok(handle)
            }
        })
        .await;
    match joined {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, doc = %name, "could not join document");
            None
        }
    }
}

struct Connection {
    socket: Box<WebSocket>,
    outbound: OutboundReceiver,
    handle: DocHandle,
    id: ConnId,
    /// False for read-only tokens: their updates are refused, never applied.
    can_write: bool,
    limits: ConnectionLimits,
    /// A command the actor's full queue has no room for yet. Nothing more
    /// is read until it is handed over: the client waits, not the server.
    blocked: Option<Box<Blocked>>,
    /// Frames handed to the socket since it was last flushed.
    unflushed: bool,
    ping_due: bool,
    ping_interval: Duration,
    last_seen: Instant,
}

struct Blocked {
    command: DocCommand,
    permit: Pin<Box<dyn Future<Output = Result<Permit, Gone>> + Send>>,
}

/// How a connection ends.
#[derive(Debug)]
pub(super) enum Ending {
    /// The client left, or the socket failed: nothing more to send.
    Left,
    /// The server closes the connection with this frame.
    Close(CloseReason),
    /// The client's own input was refused with this frame. The socket stays
    /// open a moment for the client to read it (see [`linger`]).
    Refused(CloseReason),
}

/// Frames read in one poll before the task yields to others.
pub(super) const READS_PER_POLL: usize = 32;

impl Connection {
    /// Drives both directions until the connection must end.
    fn poll_until_done(
        &mut self,
        cx: &mut Context<'_>,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
        ping: &mut Pin<&mut Sleep>,
    ) -> Poll<Ending> {
        if shutdown.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ending::Close(CloseReason::new(
                CloseReason::GOING_AWAY,
                "server shutting down",
            )));
        }
        while ping.as_mut().poll(cx).is_ready() {
            let silent = self.last_seen.elapsed();
            if silent > 2 * self.ping_interval {
                tracing::info!(
                    silent_ms = silent.as_millis() as u64,
                    "peer stopped answering pings"
                );
                return Poll::Ready(Ending::Close(CloseReason::new(
                    CloseReason::GOING_AWAY,
                    "ping timeout",
                )));
            }
            self.ping_due = true;
            ping.as_mut().reset(Instant::now() + self.ping_interval);
        }
        for _ in 0..READS_PER_POLL {
            // Writing first: replies to what was just read go out in the
            // same flush as everything else queued.
            if let Poll::Ready(ending) = self.poll_write(cx) {
                return Poll::Ready(ending);
            }
            if let Some(blocked) = &mut self.blocked {
                match blocked.permit.as_mut().poll(cx) {
                    Poll::Ready(Ok(permit)) => {
                        if let Some(blocked) = self.blocked.take() {
                            permit.send(blocked.command);
                        }
                    }
                    Poll::Ready(Err(Gone)) => return Poll::Ready(Ending::Left),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let next = match Pin::new(&mut self.socket).poll_next(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => return Poll::Pending,
            };
            if let Some(ending) = self.on_read(next) {
                return Poll::Ready(ending);
            }
        }
        // More to read: let other tasks run first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Hands the socket everything queued, then flushes. Ready only when
    /// the connection must end.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        loop {
            let ready = match Pin::new(&mut self.socket).poll_ready(cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(e)) => return Poll::Ready(lost("write", &e)),
                Poll::Pending => false,
            };
            if ready && self.ping_due {
                self.ping_due = false;
                if let Err(e) = Pin::new(&mut self.socket).start_send(WsMessage::Ping(Bytes::new()))
                {
                    return Poll::Ready(lost("ping", &e));
                }
                self.unflushed = true;
                continue;
            }
            // The actor's close is taken even when the socket is backed up.
            match self.outbound.poll_recv(cx, ready) {
                Poll::Ready(Received::Frame(frame)) => {
                    crate::metrics::frame_sent(frame.len());
                    if let Err(e) = Pin::new(&mut self.socket).start_send(WsMessage::Binary(frame))
                    {
                        return Poll::Ready(lost("write", &e));
                    }
                    self.unflushed = true;
                }
                Poll::Ready(Received::Closed(reason)) => return Poll::Ready(Ending::Close(reason)),
                Poll::Pending => break,
            }
        }
        if self.unflushed {
            match Pin::new(&mut self.socket).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(lost("flush", &e)),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    /// One read from the socket; `Some` ends the connection.
    fn on_read(&mut self, next: Option<Result<WsMessage, axum::Error>>) -> Option<Ending> {
        self.last_seen = Instant::now();
        let frame = match binary_frame(next, &mut self.limits, "y-websocket") {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(ending) => return Some(ending),
        };
        let command = match self.to_command(&frame) {
            Ok(Some(command)) => command,
            Ok(None) => return None,
            Err(reason) => return Some(refuse(reason)),
        };
        match self.handle.offer(command) {
            Ok(()) => None,
            Err(Offer::Full(command)) => {
                self.blocked = Some(Box::new(Blocked {
                    command,
                    permit: Box::pin(self.handle.reserve()),
                }));
                None
            }
            Err(Offer::Gone) => Some(Ending::Left),
        }
    }

    /// Decodes one frame into the command for the actor; an error is the
    /// close frame the client gets.
    fn to_command(&self, frame: &Bytes) -> Result<Option<DocCommand>, CloseReason> {
        let id = self.id;
        let message = Message::decode(frame).map_err(|e| {
            let code = if e.is_unsupported() {
                CloseReason::UNSUPPORTED
            } else {
                CloseReason::INVALID_PAYLOAD
            };
            CloseReason::new(code, e.to_string())
        })?;
        Ok(Some(match message {
            Message::SyncStep1(state_vector) => DocCommand::SyncStep1 {
                id,
                state_vector: Box::new(state_vector),
            },
            Message::SyncStep2(update) | Message::Update(update) => {
                if !self.can_write {
                    self.deny_write(update);
                    return Ok(None);
                }
                DocCommand::Update {
                    id,
                    update: frame.slice_ref(update),
                }
            }
            Message::Awareness(bytes) => {
                let update = AwarenessUpdate::decode(bytes).map_err(|e| {
                    CloseReason::new(
                        CloseReason::INVALID_PAYLOAD,
                        format!("invalid awareness update: {e}"),
                    )
                })?;
                DocCommand::Awareness {
                    id,
                    update: Box::new(update),
                }
            }
            Message::QueryAwareness => DocCommand::QueryAwareness { id },
            Message::AuthDenied(_) => {
                return Err(CloseReason::new(
                    CloseReason::UNSUPPORTED,
                    "auth messages are sent by the server only",
                ))
            }
        }))
    }

    /// A read-only client sent an update: never applied; the client is told
    /// with y-websocket's permission-denied message and stays connected.
    fn deny_write(&self, update: &[u8]) {
        // What a read-only client with nothing new sends as sync step 2.
        if update == [0, 0] {
            return;
        }
        tracing::debug!("refused update from read-only connection");
        crate::metrics::rejected_frame("read_only");
        let denied = Bytes::from(encode_auth_denied(
            "read-only access: updates are not applied",
        ));
        // A full queue means the actor is about to close this client anyway.
        self.outbound.push_reply(denied);
    }

    /// Leaves the document, then closes the socket as `ending` says.
    async fn finish(mut self, ending: Ending) {
        let _ = self
            .handle
            .send(DocCommand::Disconnect { id: self.id })
            .await;
        close_socket(&mut self.socket, ending).await;
    }
}

/// Closes the socket as `ending` says: the close frame, if any, and for a
/// refusal a moment for the client to read it.
pub(super) async fn close_socket(socket: &mut WebSocket, ending: Ending) {
    {
        let (reason, refused) = match ending {
            Ending::Left => (None, false),
            Ending::Close(reason) => (Some(reason), false),
            Ending::Refused(reason) => (Some(reason), true),
        };
        if let Some(reason) = reason {
            let frame = CloseFrame {
                code: reason.code,
                reason: reason.reason.into(),
            };
            // A client that does not read cannot take a close frame either.
            let _ = tokio::time::timeout(
                CLOSE_SEND_TIMEOUT,
                socket.send(WsMessage::Close(Some(frame))),
            )
            .await;
        }
        if refused {
            linger(socket).await;
        }
        let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, socket.close()).await;
    }
}

/// One read from a socket of either dialect: a binary frame within the
/// socket's rate limits (`Ok(Some)`), nothing to act on (a ping, a pong),
/// or how the connection ends: the client left, or is refused (a text frame,
/// a message too large, a rate exceeded). `dialect` names what to send
/// instead of text.
pub(super) fn binary_frame(
    next: Option<Result<WsMessage, axum::Error>>,
    limits: &mut ConnectionLimits,
    dialect: &str,
) -> Result<Option<Bytes>, Ending> {
    let frame = match next {
        Some(Ok(WsMessage::Binary(frame))) => {
            crate::metrics::frame_received(frame.len());
            frame
        }
        Some(Ok(WsMessage::Text(_))) => {
            return Err(refuse(CloseReason::new(
                CloseReason::UNSUPPORTED,
                format!("text frames are not supported; send binary {dialect} messages"),
            )));
        }
        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => return Ok(None),
        Some(Ok(WsMessage::Close(_))) | None => return Err(Ending::Left),
        Some(Err(e)) => {
            return Err(match too_big(&e) {
                Some(reason) => refuse(reason),
                None => lost("read", &e),
            });
        }
    };
    if let Err(exceeded) = limits.admit(frame.len()) {
        let what = match exceeded {
            RateExceeded::Messages => "messages",
            RateExceeded::Bytes => "bytes",
        };
        return Err(refuse(CloseReason::new(
            CloseReason::POLICY,
            format!("rate limit exceeded ({what} per second)"),
        )));
    }
    Ok(Some(frame))
}

pub(super) fn refuse(reason: CloseReason) -> Ending {
    crate::metrics::rejected_frame(reason.label());
    tracing::info!(code = reason.code, reason = %reason.reason, "closing connection");
    Ending::Refused(reason)
}

pub(super) fn lost(what: &str, e: &axum::Error) -> Ending {
    tracing::debug!(error = %e, "{what} failed");
    Ending::Left
}

const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// After refusing a client, keeps the socket open until the client answers
/// our close frame, for at most [`LINGER`]. Dropping a socket with unread
/// bytes (the rest of an oversized message) makes the kernel send a reset,
/// which can reach the client before our close frame does.
async fn linger(socket: &mut WebSocket) {
    let deadline = Instant::now() + LINGER;
    let _ = tokio::time::timeout_at(deadline, async {
        while let Some(next) = socket.next().await {
            match next {
                Ok(WsMessage::Close(_)) => return,
                Ok(_) => {}
                // The stream is unusable after a protocol error; just hold it.
                Err(_) => break,
            }
        }
        tokio::time::sleep_until(deadline).await;
    })
    .await;
}

const LINGER: Duration = Duration::from_secs(1);

pub(super) fn too_big(e: &axum::Error) -> Option<CloseReason> {
    let source = std::error::Error::source(e)?;
    match source.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(c) => {
            Some(CloseReason::new(CloseReason::TOO_BIG, c.to_string()))
        }
        _ => None,
    }
}
