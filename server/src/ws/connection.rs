//! One WebSocket connection: a reader loop that decodes frames and hands
//! them to the document actor, and a writer task that drains the bounded
//! outbound queue and pings. When either ends, the other is stopped.

use super::Peer;
use crate::doc::{CloseReason, ConnId, DocCommand, DocHandle, Outbound, OutboundReceiver};
use crate::limits::{ConnectionLimits, RateExceeded};
use crate::names::DocName;
use crate::state::AppState;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use bytes::Bytes;
use crdt_core::protocol::encode_auth_denied;
use crdt_core::{AwarenessUpdate, Message};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub async fn run(socket: WebSocket, app: AppState, name: DocName, id: ConnId, peer: Peer) {
    let span = tracing::info_span!(
        "conn",
        conn = id,
        doc = %name,
        node = %app.node_id,
        peer = %peer.addr,
        sub = %peer.subject,
    );
    async move {
        let (outbound, outbound_rx) = Outbound::channel(app.config.outbound_queue);
        let Some((handle, kick_rx)) = join(&app, &name, id, outbound.clone()).await else {
            return;
        };
        tracing::debug!(read_only = !peer.can_write, "connected");
        crate::metrics::connection_opened();
        let (sink, stream) = socket.split();
        let (close_tx, close_rx) = oneshot::channel();
        let done = app.shutdown.child_token();
        let started = Instant::now();
        let last_seen = Arc::new(AtomicU64::new(0));
        let writer = app.tracker.spawn(
            Writer {
                sink,
                outbound: outbound_rx,
                kick: kick_rx,
                close: close_rx,
                shutdown: app.shutdown.clone(),
                done: done.clone(),
                ping_interval: app.config.ping_interval(),
                started,
                last_seen: last_seen.clone(),
            }
            .run()
            .in_current_span(),
        );
        let reader = Reader {
            handle: &handle,
            id,
            peer: &peer,
            outbound: &outbound,
            close: Some(close_tx),
            done: &done,
            limits: ConnectionLimits::new(
                app.config.rate_messages_per_sec,
                app.config.rate_bytes_per_sec,
                Duration::from_secs(app.config.rate_burst_secs),
                app.config.max_message_bytes,
            ),
            started,
            last_seen: &last_seen,
        };
        let mut stream = stream;
        let refused = reader.run(&mut stream).await;
        let _ = handle.send(DocCommand::Disconnect { id }).await;
        done.cancel();
        let _ = writer.await;
        if refused {
            linger(stream).await;
        }
        crate::metrics::connection_closed();
        tracing::debug!("disconnected");
    }
    .instrument(span)
    .await
}

/// Registers the connection with the document's actor, reopening the
/// document if it unloaded since the upgrade was accepted.
async fn join(
    app: &AppState,
    name: &DocName,
    id: ConnId,
    outbound: Outbound,
) -> Option<(DocHandle, oneshot::Receiver<CloseReason>)> {
    let joined = app
        .registry
        .with_doc(name, true, |handle| {
            let outbound = outbound.clone();
            async move {
                let (kick, kick_rx) = oneshot::channel();
                handle
                    .request(|reply| DocCommand::Connect {
                        id,
                        outbound,
                        kick,
                        reply,
                    })
                    .await?;
                Ok((handle, kick_rx))
            }
        })
        .await;
    match joined {
        Ok(joined) => Some(joined),
        Err(e) => {
            tracing::warn!(error = %e, "could not join document");
            None
        }
    }
}

struct Reader<'a> {
    handle: &'a DocHandle,
    id: ConnId,
    peer: &'a Peer,
    outbound: &'a Outbound,
    /// Where the reader's reason to close goes, once.
    close: Option<oneshot::Sender<CloseReason>>,
    done: &'a CancellationToken,
    limits: ConnectionLimits,
    started: Instant,
    last_seen: &'a AtomicU64,
}

impl Reader<'_> {
    /// Reads until the client leaves or is refused; true if refused.
    async fn run(mut self, stream: &mut SplitStream<WebSocket>) -> bool {
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = self.done.cancelled() => return false,
            };
            self.last_seen
                .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
            let frame = match next {
                Some(Ok(WsMessage::Binary(frame))) => {
                    crate::metrics::frame_received(frame.len());
                    frame
                }
                Some(Ok(WsMessage::Text(_))) => {
                    return self
                        .refuse(CloseReason::new(
                            CloseReason::UNSUPPORTED,
                            "text frames are not supported; send binary y-websocket messages",
                        ))
                        .await;
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                Some(Ok(WsMessage::Close(_))) | None => return false,
                Some(Err(e)) => {
                    return match too_big(&e) {
                        Some(reason) => self.refuse(reason).await,
                        None => {
                            tracing::debug!(error = %e, "read failed");
                            false
                        }
                    };
                }
            };
            if let Err(exceeded) = self.limits.admit(frame.len()) {
                let what = match exceeded {
                    RateExceeded::Messages => "messages",
                    RateExceeded::Bytes => "bytes",
                };
                return self
                    .refuse(CloseReason::new(
                        CloseReason::POLICY,
                        format!("rate limit exceeded ({what} per second)"),
                    ))
                    .await;
            }
            match self.to_command(&frame) {
                Ok(Some(command)) => {
                    if self.handle.send(command).await.is_err() {
                        return false;
                    }
                }
                Ok(None) => {}
                Err(reason) => return self.refuse(reason).await,
            }
        }
    }

    async fn refuse(&mut self, reason: CloseReason) -> bool {
        crate::metrics::rejected_frame(reason.label());
        tracing::info!(code = reason.code, reason = %reason.reason, "closing connection");
        if let Some(close) = self.close.take() {
            let _ = close.send(reason);
        }
        true
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
            Message::SyncStep1(state_vector) => DocCommand::SyncStep1 { id, state_vector },
            Message::SyncStep2(update) | Message::Update(update) => {
                if !self.peer.can_write {
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
                DocCommand::Awareness { id, update }
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
        // A full queue means the actor is about to disconnect this client anyway.
        let _ = self.outbound.try_send_direct(denied);
    }
}

/// After refusing a client, keeps the socket open until the client answers
/// our close frame, for at most [`LINGER`]. Dropping a socket with unread
/// bytes (the rest of an oversized message) makes the kernel send a reset,
/// which can reach the client before our close frame does.
async fn linger(mut stream: SplitStream<WebSocket>) {
    let deadline = Instant::now() + LINGER;
    let _ = tokio::time::timeout_at(deadline, async {
        while let Some(next) = stream.next().await {
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

fn too_big(e: &axum::Error) -> Option<CloseReason> {
    let source = std::error::Error::source(e)?;
    match source.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(c) => {
            Some(CloseReason::new(CloseReason::TOO_BIG, c.to_string()))
        }
        _ => None,
    }
}

struct Writer {
    sink: SplitSink<WebSocket, WsMessage>,
    outbound: OutboundReceiver,
    kick: oneshot::Receiver<CloseReason>,
    close: oneshot::Receiver<CloseReason>,
    shutdown: CancellationToken,
    done: CancellationToken,
    ping_interval: Duration,
    started: Instant,
    last_seen: Arc<AtomicU64>,
}

impl Writer {
    async fn run(self) {
        let Writer {
            mut sink,
            mut outbound,
            mut kick,
            mut close,
            shutdown,
            done,
            ping_interval,
            started,
            last_seen,
        } = self;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
        // Every wait, a write into a backed-up socket included, also waits
        // for a reason to stop: a client that stopped reading must not keep
        // its writer stuck.
        let stop = stop_signal(&shutdown, &mut close, &mut kick, &done);
        tokio::pin!(stop);
        let reason = loop {
            tokio::select! {
                biased;
                reason = &mut stop => break reason,
                frame = outbound.recv() => {
                    let Some(frame) = frame else { break None };
                    tokio::select! {
                        biased;
                        reason = &mut stop => break reason,
                        written = write_batch(&mut sink, &mut outbound, frame) => {
                            if !written {
                                break None;
                            }
                        }
                    }
                }
                _ = ping.tick() => {
                    let silent_ms = (started.elapsed().as_millis() as u64)
                        .saturating_sub(last_seen.load(Ordering::Relaxed));
                    if silent_ms > 2 * ping_interval.as_millis() as u64 {
                        tracing::info!(silent_ms, "peer stopped answering pings");
                        break Some(CloseReason::new(CloseReason::GOING_AWAY, "ping timeout"));
                    }
                    tokio::select! {
                        biased;
                        reason = &mut stop => break reason,
                        sent = sink.send(WsMessage::Ping(Bytes::new())) => {
                            if sent.is_err() {
                                break None;
                            }
                        }
                    }
                }
            }
        };
        if let Some(reason) = reason {
            let frame = CloseFrame {
                code: reason.code,
                reason: reason.reason.into(),
            };
            // A client that does not read cannot take a close frame either.
            let _ =
                tokio::time::timeout(CLOSE_SEND_TIMEOUT, sink.send(WsMessage::Close(Some(frame))))
                    .await;
        }
        let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, sink.close()).await;
        done.cancel();
    }
}

const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Resolves when the writer must stop, with the close frame to send, if any.
async fn stop_signal(
    shutdown: &CancellationToken,
    close: &mut oneshot::Receiver<CloseReason>,
    kick: &mut oneshot::Receiver<CloseReason>,
    done: &CancellationToken,
) -> Option<CloseReason> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {
            Some(CloseReason::new(CloseReason::GOING_AWAY, "server shutting down"))
        }
        // The reader's own refusal wins over anything the actor does after
        // the reader left (dropping the kick sender included). A reader that
        // ended without refusing dropped its sender: the client left.
        refused = close => refused.ok(),
        kicked = kick => match kicked {
            Ok(reason) => Some(reason),
            // The actor dropped us without a reason: it stopped.
            Err(_) => Some(CloseReason::new(CloseReason::GOING_AWAY, "document closed")),
        },
        // The reader ended: the client is gone or already closing.
        _ = done.cancelled() => None,
    }
}

/// Writes `first` and whatever else is queued, with one flush.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, WsMessage>,
    outbound: &mut OutboundReceiver,
    first: Bytes,
) -> bool {
    let mut next = Some(first);
    while let Some(frame) = next {
        crate::metrics::frame_sent(frame.len());
        if sink.feed(WsMessage::Binary(frame)).await.is_err() {
            return false;
        }
        next = outbound.try_recv();
    }
    sink.flush().await.is_ok()
}
