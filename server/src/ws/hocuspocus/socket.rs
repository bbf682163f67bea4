//! One Hocuspocus socket, driven by one task: many document sessions.
//!
//! Like a y-websocket connection (`ws/connection.rs`) the task polls reads
//! and writes in one state machine, so that a socket backed up by a client
//! that stopped reading never stops the task from seeing an actor close it.
//!
//! - **Reading.** Each frame's address picks its [`Session`] (crdt-core's
//!   state machine of one document: pre-auth queue, verdicts, acks,
//!   read-only rules); the [`Effect`]s it returns go to a work queue that
//!   is performed in order. Nothing more is read while work remains: the
//!   only waits are joining a document and an actor's full mailbox, and
//!   the client waits for those, not the server.
//! - **Writing.** Each open session is a connection of its document's
//!   actor with its own bounded outbound queue of frame *bodies* (sync and
//!   awareness bodies are byte-identical to y-websocket frames, so the
//!   actor's relay is shared by both dialects); the socket prefixes each
//!   with the session's raw address as it writes it. Replies the socket
//!   makes itself for a session (Authenticated, a read-only Update's
//!   `SyncStatus(0)`, token requests) go into the same queue when they are
//!   decided: Authenticated before the session joins its actor, so before
//!   anything of the actor's; the others may pass actor answers still in
//!   the mailbox (acks are counted, not matched, by providers). Frames
//!   for no session (PermissionDenied, CLOSE, Ping) go through a small
//!   socket queue written first.

use super::grant;
use super::policy::{self, ActorClosed, PreAuth, AUTH_TIMEOUT};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::doc::Registry;
use crate::doc::{
    CloseReason, ConnId, DocCommand, DocHandle, Outbound, OutboundReceiver, Received,
};
use crate::limits::ConnectionLimits;
use crate::names::DocName;
use crate::state::AppState;
use crate::ws::connection::{binary_frame, close_socket, lost, refuse, Ending, READS_PER_POLL};
use axum::extract::ws::{Message as WsMessage, WebSocket};
use bytes::Bytes;
use crdt_core::hocuspocus::session::{Effect, Event, QueueLimits, Session};
use crdt_core::hocuspocus::{ClientFrame, ServerMessage, PING_FRAME};
use crdt_core::wire::Writer;
use futures_util::{Sink, Stream};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

mod effects;

use effects::{poll_stall, Stall};

/// The reason of a denial past `--hocuspocus-max-sessions`.
const TOO_MANY_SESSIONS: &str = "too many documents on this socket";
/// The reason of the CLOSE of a session whose token ran out unrefreshed.
const TOKEN_EXPIRED: &str = "token expired";
/// The reason of the CLOSE of a session whose document could not be opened.
const UNAVAILABLE: &str = "document unavailable";

/// What an accepted upgrade hands the socket.
pub(super) struct Setup {
    pub app: AppState,
    pub peer_addr: SocketAddr,
    /// `?token=` or `Authorization` of the upgrade: the default token.
    pub url_token: Option<String>,
    /// Held for the socket's life: `--max-connections` counts sockets.
    pub permit: OwnedSemaphorePermit,
}

/// The socket's whole life, as one boxed future.
pub(super) fn run(
    socket: WebSocket,
    setup: Box<Setup>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let id = setup.app.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!(
        "hocuspocus",
        socket = id,
        node = %setup.app.node_id,
        peer = %setup.peer_addr,
    );
    Box::pin(serve(Box::new(socket), setup).instrument(span))
}

async fn serve(socket: Box<WebSocket>, setup: Box<Setup>) {
    crate::metrics::hocuspocus_socket_opened();
    tracing::debug!("connected");
    let Setup {
        app,
        url_token,
        permit,
        ..
    } = *setup;
    let now = Instant::now();
    let config = &app.config;
    let shutdown = app.shutdown.clone().cancelled_owned();
    let mut socket = Socket {
        socket,
        limits: ConnectionLimits::new(
            config.rate_messages_per_sec,
            config.rate_bytes_per_sec,
            Duration::from_secs(config.rate_burst_secs),
            config.max_message_bytes,
        ),
        ping_interval: config.ping_interval(),
        ws_ping_at: now + config.ping_interval(),
        hp_ping_at: None,
        auth_deadline: Some(now + config.hocuspocus_auth_timeout()),
        url_token: url_token.map(String::into_boxed_str),
        entries: Vec::new(),
        next_key: 0,
        work: VecDeque::new(),
        stall: None,
        direct: VecDeque::new(),
        cursor: 0,
        unflushed: false,
        ping_due: false,
        hp_ping_due: false,
        last_seen: now,
        // Only what the socket's life needs: an idle socket's size counts.
        env: Env {
            config: app.config.clone(),
            registry: app.registry.clone(),
            auth: app.auth.clone(),
            next_conn_id: app.next_conn_id.clone(),
        },
    };
    drop(app);
    let ending = {
        let timer = tokio::time::sleep_until(socket.next_deadline());
        tokio::pin!(shutdown, timer);
        std::future::poll_fn(|cx| socket.poll_until_done(cx, &mut shutdown, &mut timer)).await
    };
    Box::pin(socket.finish(ending)).await;
    drop(permit);
    crate::metrics::hocuspocus_socket_closed();
    tracing::debug!("disconnected");
}

/// One address of the socket.
struct Entry {
    /// Which entry work belongs to: addresses can end and start again.
    key: u64,
    /// The raw address, echoed on every frame to the session.
    address: Box<str>,
    session: Session,
    /// Once authenticated: the session's connection to its document.
    link: Option<Link>,
}

struct Link {
    id: ConnId,
    rx: OutboundReceiver,
    doc: LinkDoc,
    /// Tokens with an `exp` only.
    token: Option<Box<TokenDeadlines>>,
}

/// The session's document.
enum LinkDoc {
    /// Not joined yet: the document and the sending side for its actor.
    Joining(Box<(DocName, Outbound, Option<std::sync::Arc<str>>)>),
    /// Joined (the join may have been taken to run).
    Joined(Option<DocHandle>),
}

/// When the provider is asked for a fresh token, and when the session ends
/// without one; each `None` once passed.
struct TokenDeadlines {
    /// The token's `exp`.
    exp: u64,
    ask_at: Option<Instant>,
    ends_at: Option<Instant>,
}

impl Link {
    fn handle(&self) -> Option<&DocHandle> {
        match &self.doc {
            LinkDoc::Joined(handle) => handle.as_ref(),
            LinkDoc::Joining(_) => None,
        }
    }

    fn set_deadlines(&mut self, exp: Option<u64>) {
        let before = self.token.as_ref().map(|t| grant::Asked {
            exp: t.exp,
            asked: t.ask_at.is_none(),
        });
        self.token = exp.map(|exp| {
            let now_unix = chrono::Utc::now().timestamp().max(0) as u64;
            let (ask, ends) = grant::deadlines(exp, now_unix);
            let now = Instant::now();
            Box::new(TokenDeadlines {
                exp,
                ask_at: grant::ask_again(before, exp).then(|| now + ask),
                ends_at: Some(now + ends),
            })
        });
    }
}

/// What a socket keeps of the server's state.
struct Env {
    config: Arc<Config>,
    registry: Registry,
    auth: Arc<Authenticator>,
    next_conn_id: Arc<AtomicU64>,
}

struct Socket {
    socket: Box<WebSocket>,
    env: Env,
    url_token: Option<Box<str>>,
    limits: ConnectionLimits,
    /// Boxed: a `Vec`'s first allocation has room for four, and most
    /// sockets hold one document; a search by address or key is linear,
    /// over at most `--hocuspocus-max-sessions` plus the pending ones.
    #[allow(clippy::vec_box)]
    entries: Vec<Box<Entry>>,
    next_key: u64,
    work: VecDeque<(u64, Effect)>,
    stall: Option<Box<Stall>>,
    /// Whole frames for no session's queue; written before the sessions'.
    direct: VecDeque<Bytes>,
    /// The session whose queue is read first next time (fairness).
    cursor: usize,
    unflushed: bool,
    ping_due: bool,
    ping_interval: Duration,
    ws_ping_at: Instant,
    /// Set once a v4 provider authenticated: Hocuspocus Ping is due then.
    hp_ping_at: Option<Instant>,
    hp_ping_due: bool,
    /// Until the first document authenticates.
    auth_deadline: Option<Instant>,
    last_seen: Instant,
}

/// A whole frame: the address, then the body.
fn frame(address: &str, body: &[u8]) -> Bytes {
    let mut w = Writer::with_capacity(address.len() + 2 + body.len());
    w.write_var_string(address);
    let mut frame = w.into_inner();
    frame.extend_from_slice(body);
    Bytes::from(frame)
}

fn too_slow() -> Ending {
    Ending::Close(CloseReason::new(
        CloseReason::POLICY,
        "client too slow; reconnect to resync",
    ))
}

impl Socket {
    fn poll_until_done(
        &mut self,
        cx: &mut Context<'_>,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
        timer: &mut Pin<&mut Sleep>,
    ) -> Poll<Ending> {
        if shutdown.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ending::Close(CloseReason::new(
                CloseReason::GOING_AWAY,
                "server shutting down",
            )));
        }
        if timer.as_mut().poll(cx).is_ready() {
            if let Some(ending) = self.on_deadlines(Instant::now()) {
                return Poll::Ready(ending);
            }
        }
        let polled = self.poll_inner(cx);
        if polled.is_pending() {
            // Work may have added or moved deadlines (a session's token,
            // the first v4 provider, the first authentication).
            let next = self.next_deadline();
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
            if timer.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        polled
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        for _ in 0..READS_PER_POLL {
            if let Poll::Ready(ending) = self.poll_write(cx) {
                return Poll::Ready(ending);
            }
            if let Some(stall) = &mut self.stall {
                match poll_stall(stall, cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(done) => {
                        self.stall = None;
                        if let Err(ending) = self.unstall(done) {
                            return Poll::Ready(ending);
                        }
                        continue;
                    }
                }
            }
            if !self.work.is_empty() {
                if let Err(ending) = self.drive() {
                    return Poll::Ready(ending);
                }
                continue;
            }
            let next = match Pin::new(&mut self.socket).poll_next(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => return Poll::Pending,
            };
            if let Some(ending) = self.on_read(next) {
                return Poll::Ready(ending);
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    // --- timers -----------------------------------------------------------

    fn next_deadline(&self) -> Instant {
        let tokens = self
            .entries
            .iter()
            .filter_map(|e| e.link.as_ref()?.token.as_ref())
            .flat_map(|token| [token.ask_at, token.ends_at])
            .flatten();
        [self.hp_ping_at, self.auth_deadline]
            .into_iter()
            .flatten()
            .chain(tokens)
            .fold(self.ws_ping_at, Instant::min)
    }

    fn on_deadlines(&mut self, now: Instant) -> Option<Ending> {
        if self.auth_deadline.is_some_and(|at| at <= now) {
            tracing::info!("no document authenticated in time");
            return Some(Ending::Close(CloseReason::new(
                AUTH_TIMEOUT,
                "authentication timeout",
            )));
        }
        if self.ws_ping_at <= now {
            let silent = self.last_seen.elapsed();
            if silent > 2 * self.ping_interval {
                tracing::info!(
                    silent_ms = silent.as_millis() as u64,
                    "peer stopped answering pings"
                );
                return Some(Ending::Close(CloseReason::new(
                    CloseReason::GOING_AWAY,
                    "ping timeout",
                )));
            }
            self.ping_due = true;
            self.ws_ping_at = now + self.ping_interval;
        }
        if let (Some(at), Some(every)) = (self.hp_ping_at, self.env.config.hocuspocus_ping()) {
            if at <= now {
                self.hp_ping_due = true;
                self.hp_ping_at = Some(now + every);
            }
        }
        for entry in &mut self.entries {
            let Some(link) = &mut entry.link else {
                continue;
            };
            let Some(token) = &mut link.token else {
                continue;
            };
            if token.ends_at.is_some_and(|at| at <= now) {
                link.token = None;
                self.work.push_back((
                    entry.key,
                    Effect::End {
                        close: Some(TOKEN_EXPIRED.to_owned()),
                    },
                ));
            } else if token.ask_at.is_some_and(|at| at <= now) {
                token.ask_at = None;
                let body = ServerMessage::TokenSyncRequest.encode_body();
                if !link.rx.push_reply(Bytes::from(body)) {
                    return Some(too_slow());
                }
            }
        }
        None
    }

    // --- writing ----------------------------------------------------------

    /// Hands the socket everything queued, then flushes. Ready only when
    /// the socket must close.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        loop {
            let ready = match Pin::new(&mut self.socket).poll_ready(cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(e)) => return Poll::Ready(lost("write", &e)),
                Poll::Pending => false,
            };
            let next = if !ready {
                None
            } else if self.ping_due {
                self.ping_due = false;
                Some(WsMessage::Ping(Bytes::new()))
            } else if self.hp_ping_due {
                self.hp_ping_due = false;
                Some(WsMessage::Binary(Bytes::from_static(&PING_FRAME)))
            } else {
                let frame = self.direct.pop_front();
                if frame.is_some() && self.direct.is_empty() {
                    self.direct.shrink_to_fit();
                }
                frame.map(WsMessage::Binary)
            };
            let next = match next {
                Some(message) => Some(message),
                // Actors' closes are taken even when the socket is backed up.
                None => match self.poll_sessions(cx, ready) {
                    Ok(frame) => frame.map(WsMessage::Binary),
                    Err(ending) => return Poll::Ready(ending),
                },
            };
            let Some(message) = next else {
                // A session that just ended left its CLOSE to write.
                if ready && !self.direct.is_empty() {
                    continue;
                }
                break;
            };
            if let WsMessage::Binary(frame) = &message {
                crate::metrics::frame_sent(frame.len());
            }
            if let Err(e) = Pin::new(&mut self.socket).start_send(message) {
                return Poll::Ready(lost("write", &e));
            }
            self.unflushed = true;
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

    /// The next session frame to write (when `want_frame`), starting after
    /// the session served last; sessions their actor closed end on the way.
    fn poll_sessions(
        &mut self,
        cx: &mut Context<'_>,
        want_frame: bool,
    ) -> Result<Option<Bytes>, Ending> {
        let mut i = 0;
        while i < self.entries.len() {
            let at = (self.cursor + i) % self.entries.len();
            let entry = &mut self.entries[at];
            let Some(link) = &mut entry.link else {
                i += 1;
                continue;
            };
            match link.rx.poll_recv(cx, want_frame) {
                Poll::Ready(Received::Frame(body)) => {
                    self.cursor = at + 1;
                    return Ok(Some(frame(&entry.address, &body)));
                }
                Poll::Ready(Received::Closed(reason)) => match policy::actor_closed(&reason) {
                    ActorClosed::Socket(reason) => return Err(Ending::Close(reason)),
                    ActorClosed::Document(text) => {
                        tracing::info!(address = %entry.address, reason = %text, "document closed the session");
                        // The actor let go of it already: no Disconnect.
                        let entry = self.entries.swap_remove(at);
                        forget(&entry);
                        self.push_direct(frame(
                            &entry.address,
                            &ServerMessage::Close(&text).encode_body(),
                        ))?;
                    }
                },
                Poll::Pending => i += 1,
            }
        }
        Ok(None)
    }

    /// Queues a whole frame outside every session's queue.
    fn push_direct(&mut self, frame: Bytes) -> Result<(), Ending> {
        if self.direct.len() >= self.env.config.outbound_queue {
            return Err(too_slow());
        }
        self.direct.push_back(frame);
        Ok(())
    }

    // --- reading ----------------------------------------------------------

    fn on_read(&mut self, next: Option<Result<WsMessage, axum::Error>>) -> Option<Ending> {
        self.last_seen = Instant::now();
        let bytes = match binary_frame(next, &mut self.limits, "Hocuspocus") {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(ending) => return Some(ending),
        };
        let (address, body) = match ClientFrame::decode(&bytes) {
            Ok(ClientFrame::Pong) => return None,
            Ok(ClientFrame::Addressed { address, body }) => (address, body),
            Err(e) => {
                return Some(refuse(CloseReason::new(
                    CloseReason::INVALID_PAYLOAD,
                    e.to_string(),
                )))
            }
        };
        let at = match self
            .entries
            .iter()
            .position(|e| *e.address == *address.raw())
        {
            Some(at) => at,
            None => {
                self.next_key += 1;
                self.entries.push(Box::new(Entry {
                    key: self.next_key,
                    address: address.raw().into(),
                    // The bounds are the socket's, across its sessions
                    // (`policy::check_pre_auth`), checked after each frame.
                    session: Session::new(QueueLimits {
                        max_frames: usize::MAX,
                        max_bytes: usize::MAX,
                    }),
                    link: None,
                }));
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[at];
        let key = entry.key;
        for effect in entry.session.handle(Event::Frame(body)) {
            self.work.push_back((key, effect));
        }
        if let Err(reason) = policy::check_pre_auth(self.pre_auth()) {
            return Some(refuse(reason));
        }
        self.drive().err()
    }

    fn pre_auth(&self) -> PreAuth {
        self.entries
            .iter()
            .filter(|e| e.link.is_none())
            .fold(PreAuth::default(), |sum, e| {
                let (frames, bytes) = e.session.queued();
                PreAuth {
                    pending_addresses: sum.pending_addresses + 1,
                    frames: sum.frames + frames,
                    bytes: sum.bytes + bytes,
                }
            })
    }

    /// Leaves every document, then closes the socket as `ending` says.
    async fn finish(mut self, ending: Ending) {
        if let Some(stall) = self.stall.take() {
            if let Stall::Mailbox {
                command: Some(command),
                handle,
                ..
            } = *stall
            {
                let _ = handle.send(command).await;
            }
        }
        for entry in std::mem::take(&mut self.entries) {
            forget(&entry);
            if let Some(link) = &entry.link {
                if let Some(handle) = link.handle() {
                    let _ = handle.send(DocCommand::Disconnect { id: link.id }).await;
                }
            }
        }
        close_socket(&mut self.socket, ending).await;
    }
}

/// A session leaves the metrics.
fn forget(entry: &Entry) {
    if entry.link.as_ref().is_some_and(|l| l.handle().is_some()) {
        crate::metrics::hocuspocus_sessions(-1.0);
    }
}
