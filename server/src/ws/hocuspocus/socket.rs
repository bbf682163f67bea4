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
//!   makes itself for a session (Authenticated, read-only acks, token
//!   requests) go through the same queue, so they keep their order with
//!   the actor's frames. Frames for no session (PermissionDenied, CLOSE,
//!   Ping) go through a small socket queue written first.

use super::grant;
use super::policy::{self, ActorClosed, PreAuth, AUTH_TIMEOUT};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::doc::Registry;
use crate::doc::{
    CloseReason, ConnId, Dialect, DocCommand, DocHandle, Gone, IfAbsent, Offer, Outbound,
    OutboundReceiver, Permit, Received,
};
use crate::limits::{ConnectionLimits, RateExceeded};
use crate::names::DocName;
use crate::state::AppState;
use crate::ws::connection::{close_socket, lost, refuse, too_big, Ending, READS_PER_POLL};
use axum::extract::ws::{Message as WsMessage, WebSocket};
use bytes::Bytes;
use crdt_core::hocuspocus::session::{
    Effect, Event, Phase, QueueLimits, Reply, Session, CLOSE_INVALID_MESSAGE,
};
use crdt_core::hocuspocus::{ClientFrame, ServerMessage, PING_FRAME};
use crdt_core::wire::Writer;
use crdt_core::AwarenessUpdate;
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
    Joining(Box<(DocName, Outbound)>),
    /// Joined (the join may have been taken to run).
    Joined(Option<DocHandle>),
}

/// When the provider is asked for a fresh token, and when the session ends
/// without one; each `None` once passed.
struct TokenDeadlines {
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
        self.token = exp.map(|exp| {
            let now_unix = chrono::Utc::now().timestamp().max(0) as u64;
            let (ask, ends) = grant::deadlines(exp, now_unix);
            let now = Instant::now();
            Box::new(TokenDeadlines {
                ask_at: Some(now + ask),
                ends_at: Some(now + ends),
            })
        });
    }
}

/// What the work queue waits for; reading waits too.
enum Stall {
    /// The session's document opening and taking the connection.
    Join {
        key: u64,
        joined: Pin<Box<dyn Future<Output = Option<DocHandle>> + Send>>,
    },
    /// Room in an actor's full mailbox for `command`.
    Mailbox {
        /// Taken when sent.
        command: Option<DocCommand>,
        handle: DocHandle,
        permit: Pin<Box<dyn Future<Output = Result<Permit, Gone>> + Send>>,
    },
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
        let bytes = match next {
            Some(Ok(WsMessage::Binary(bytes))) => {
                crate::metrics::frame_received(bytes.len());
                bytes
            }
            Some(Ok(WsMessage::Text(_))) => {
                return Some(refuse(CloseReason::new(
                    CloseReason::UNSUPPORTED,
                    "text frames are not supported; send binary Hocuspocus messages",
                )));
            }
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => return None,
            Some(Ok(WsMessage::Close(_))) | None => return Some(Ending::Left),
            Some(Err(e)) => {
                return Some(match too_big(&e) {
                    Some(reason) => refuse(reason),
                    None => lost("read", &e),
                });
            }
        };
        if let Err(exceeded) = self.limits.admit(bytes.len()) {
            let what = match exceeded {
                RateExceeded::Messages => "messages",
                RateExceeded::Bytes => "bytes",
            };
            return Some(refuse(CloseReason::new(
                CloseReason::POLICY,
                format!("rate limit exceeded ({what} per second)"),
            )));
        }
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

    // --- performing effects -----------------------------------------------

    /// Performs queued effects in order until done or waiting.
    fn drive(&mut self) -> Result<(), Ending> {
        while self.stall.is_none() {
            let Some((key, effect)) = self.work.pop_front() else {
                // Most sockets sit idle between bursts: give it back.
                self.work.shrink_to_fit();
                break;
            };
            self.perform(key, effect)?;
        }
        Ok(())
    }

    fn find(&self, key: u64) -> Option<usize> {
        self.entries.iter().position(|e| e.key == key)
    }

    fn perform(&mut self, key: u64, effect: Effect) -> Result<(), Ending> {
        // Work of a session that ended since is void.
        let Some(at) = self.find(key) else {
            return Ok(());
        };
        match effect {
            Effect::VerifyToken {
                token,
                provider_version,
            } => self.verify(at, &token, provider_version.is_some()),
            Effect::Send(reply) => self.reply(at, &reply),
            Effect::SendAwarenessStates => {
                let Some(link) = &mut self.entries[at].link else {
                    return Ok(());
                };
                match std::mem::replace(&mut link.doc, LinkDoc::Joined(None)) {
                    LinkDoc::Joining(joining) => {
                        let (name, outbound) = *joining;
                        self.join(at, name, outbound);
                        Ok(())
                    }
                    joined => {
                        link.doc = joined;
                        self.command(at, |id| DocCommand::QueryAwareness { id })
                    }
                }
            }
            Effect::AnswerSyncStep1(state_vector) => self.command(at, |id| DocCommand::SyncStep1 {
                id,
                state_vector: Box::new(state_vector),
            }),
            Effect::Apply(update) => self.command(at, |id| DocCommand::Update {
                id,
                update: Bytes::from(update),
            }),
            Effect::AckIfContained(update) => self.command(at, |id| DocCommand::CheckContained {
                id,
                update: Bytes::from(update),
            }),
            Effect::ApplyAwareness(bytes) => match AwarenessUpdate::decode(&bytes) {
                Ok(update) => self.command(at, |id| DocCommand::Awareness {
                    id,
                    update: Box::new(update),
                }),
                Err(e) => {
                    tracing::debug!(error = %e, "invalid awareness update");
                    crate::metrics::rejected_frame("invalid_payload");
                    self.end(at, Some(format!("{CLOSE_INVALID_MESSAGE}awareness")))
                }
            },
            Effect::RelayStateless(payload) => self.command(at, |id| DocCommand::Stateless {
                from: Some(id),
                payload: payload.into_boxed_str(),
            }),
            Effect::Ignore(label) => {
                tracing::debug!(label, "ignored frame");
                Ok(())
            }
            Effect::End { close } => self.end(at, close),
        }
    }

    /// Decides an Auth and hands the verdict to the session; what it
    /// returns is performed next, before any other work.
    fn verify(&mut self, at: usize, token: &str, v4: bool) -> Result<(), Ending> {
        if v4 && self.hp_ping_at.is_none() {
            self.hp_ping_at = self
                .env
                .config
                .hocuspocus_ping()
                .map(|d| Instant::now() + d);
        }
        let open = self.entries.iter().filter(|e| e.link.is_some()).count();
        let entry = &mut self.entries[at];
        let opening = entry.link.is_none();
        let document = entry.address.split('\0').next().unwrap_or_default();
        let verdict = if opening && open >= self.env.config.hocuspocus_max_sessions {
            Err(TOO_MANY_SESSIONS.to_owned())
        } else {
            grant::grant(&self.env.auth, document, token, self.url_token.as_deref())
        };
        let effects = entry.session.handle(Event::Verdict(
            verdict.as_ref().map(|g| g.scope).map_err(Clone::clone),
        ));
        match verdict {
            Ok(granted) => match &mut entry.link {
                Some(link) => link.set_deadlines(granted.exp),
                None => {
                    let (outbound, rx) = Outbound::channel(self.env.config.outbound_queue);
                    let mut link = Link {
                        id: self.env.next_conn_id.fetch_add(1, Ordering::Relaxed),
                        rx,
                        doc: LinkDoc::Joining(Box::new((granted.name, outbound))),
                        token: None,
                    };
                    link.set_deadlines(granted.exp);
                    entry.link = Some(link);
                    self.auth_deadline = None;
                }
            },
            Err(reason) => {
                tracing::debug!(address = %entry.address, %reason, "authentication denied");
            }
        }
        let key = entry.key;
        for effect in effects.into_iter().rev() {
            self.work.push_front((key, effect));
        }
        Ok(())
    }

    /// A frame the session decided on: through its queue once it has one,
    /// else (a denial) directly.
    fn reply(&mut self, at: usize, reply: &Reply) -> Result<(), Ending> {
        let body = reply.message().encode_body();
        let entry = &mut self.entries[at];
        match &entry.link {
            Some(link) => {
                if !link.rx.push_reply(Bytes::from(body)) {
                    return Err(too_slow());
                }
            }
            None => {
                let frame = frame(&entry.address, &body);
                // Denied and holding nothing: forget the address, so that
                // it stops counting as pending; a later Auth starts afresh.
                if entry.session.phase() == Phase::Pending && entry.session.queued() == (0, 0) {
                    self.entries.swap_remove(at);
                }
                self.push_direct(frame)?;
            }
        }
        Ok(())
    }

    /// Opens the document and joins its actor; work waits until then.
    fn join(&mut self, at: usize, name: DocName, outbound: Outbound) {
        let entry = &self.entries[at];
        let Some(link) = &entry.link else { return };
        let (id, key, registry) = (link.id, entry.key, self.env.registry.clone());
        let joined = Box::pin(async move {
            let joined = registry
                .with_doc(&name, IfAbsent::Create, |handle| {
                    let outbound = outbound.clone();
                    async move {
                        handle
                            .request(|reply| DocCommand::Connect {
                                id,
                                outbound,
                                dialect: Dialect::Hocuspocus,
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
        });
        self.stall = Some(Box::new(Stall::Join { key, joined }));
    }

    /// Sends the session's actor a command; a full mailbox stalls the work.
    fn command(
        &mut self,
        at: usize,
        make: impl FnOnce(ConnId) -> DocCommand,
    ) -> Result<(), Ending> {
        let Some(link) = &self.entries[at].link else {
            return Ok(());
        };
        let Some(handle) = link.handle() else {
            return Ok(());
        };
        match handle.offer(make(link.id)) {
            Ok(()) => Ok(()),
            Err(Offer::Full(command)) => {
                let handle = handle.clone();
                let permit = Box::pin(handle.reserve());
                self.stall = Some(Box::new(Stall::Mailbox {
                    command: Some(command),
                    handle,
                    permit,
                }));
                Ok(())
            }
            Err(Offer::Gone) => self.end(at, Some(UNAVAILABLE.to_owned())),
        }
    }

    /// Ends a session: leaves its document (the actor removes and
    /// broadcasts its presence), then sends CLOSE(reason) if there is one.
    fn end(&mut self, at: usize, close: Option<String>) -> Result<(), Ending> {
        let entry = self.entries.swap_remove(at);
        forget(&entry);
        if let Some((link, handle)) = entry
            .link
            .as_ref()
            .and_then(|link| link.handle().map(|h| (link, h)))
        {
            match handle.offer(DocCommand::Disconnect { id: link.id }) {
                Ok(()) | Err(Offer::Gone) => {}
                Err(Offer::Full(command)) => {
                    self.stall = Some(Box::new(Stall::Mailbox {
                        command: Some(command),
                        handle: handle.clone(),
                        permit: Box::pin(handle.reserve()),
                    }));
                }
            }
        }
        match close {
            Some(reason) => {
                tracing::debug!(address = %entry.address, %reason, "session closed");
                self.push_direct(frame(
                    &entry.address,
                    &ServerMessage::Close(&reason).encode_body(),
                ))
            }
            None => Ok(()),
        }
    }

    /// Carries on after what the work waited for.
    fn unstall(&mut self, done: Unstalled) -> Result<(), Ending> {
        match done {
            Unstalled::Joined { key, handle } => {
                let Some(at) = self.find(key) else {
                    // Ended meanwhile (cannot happen: work waited); leave.
                    return Ok(());
                };
                match handle {
                    Some(handle) => {
                        if let Some(link) = &mut self.entries[at].link {
                            link.doc = LinkDoc::Joined(Some(handle));
                            crate::metrics::hocuspocus_sessions(1.0);
                        }
                        Ok(())
                    }
                    None => self.end(at, Some(UNAVAILABLE.to_owned())),
                }
            }
            Unstalled::Sent => Ok(()),
        }
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

/// What a stall ended with.
enum Unstalled {
    Joined { key: u64, handle: Option<DocHandle> },
    Sent,
}

fn poll_stall(stall: &mut Stall, cx: &mut Context<'_>) -> Poll<Unstalled> {
    match stall {
        Stall::Join { key, joined } => joined
            .as_mut()
            .poll(cx)
            .map(|handle| Unstalled::Joined { key: *key, handle }),
        Stall::Mailbox {
            command, permit, ..
        } => match permit.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(permit)) => {
                if let Some(command) = command.take() {
                    permit.send(command);
                }
                Poll::Ready(Unstalled::Sent)
            }
            // The document stopped; the session's queue will say how.
            Poll::Ready(Err(Gone)) => Poll::Ready(Unstalled::Sent),
        },
    }
}
