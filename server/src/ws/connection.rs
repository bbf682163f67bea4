//! One WebSocket connection: a reader loop that decodes frames and hands
//! them to the document actor, and a writer task that drains the bounded
//! outbound queue. When either ends, the other is stopped.

use crate::doc::{CloseReason, ConnId, DocCommand, DocHandle};
use crate::names::DocName;
use crate::state::AppState;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use bytes::Bytes;
use crdt_core::{AwarenessUpdate, Message};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub async fn run(socket: WebSocket, app: AppState, name: DocName, handle: DocHandle, id: ConnId) {
    let span = tracing::info_span!("conn", conn = id, doc = %name);
    async move {
        let (outbound, outbound_rx) = mpsc::channel(app.config.outbound_queue);
        let Some((handle, kick_rx)) = join(&app, &name, handle, id, outbound).await else {
            return;
        };
        tracing::debug!("connected");
        let (sink, stream) = socket.split();
        let (close_tx, close_rx) = mpsc::channel(1);
        let done = app.shutdown.child_token();
        let writer = app.tracker.spawn(
            write_loop(
                sink,
                outbound_rx,
                kick_rx,
                close_rx,
                app.shutdown.clone(),
                done.clone(),
            )
            .in_current_span(),
        );
        read_loop(stream, &handle, id, &close_tx, &done).await;
        let _ = handle.send(DocCommand::Disconnect { id }).await;
        done.cancel();
        let _ = writer.await;
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
    mut handle: DocHandle,
    id: ConnId,
    outbound: mpsc::Sender<Bytes>,
) -> Option<(DocHandle, oneshot::Receiver<CloseReason>)> {
    for _ in 0..3 {
        let (kick, kick_rx) = oneshot::channel();
        let joined = handle
            .request(|reply| DocCommand::Connect {
                id,
                outbound: outbound.clone(),
                kick,
                reply,
            })
            .await;
        if joined.is_ok() {
            return Some((handle, kick_rx));
        }
        handle = match app.registry.open(name, true).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "document unavailable");
                return None;
            }
        };
    }
    tracing::warn!("could not join document");
    None
}

async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    handle: &DocHandle,
    id: ConnId,
    close: &mpsc::Sender<CloseReason>,
    done: &CancellationToken,
) {
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = done.cancelled() => return,
        };
        let frame = match next {
            Some(Ok(WsMessage::Binary(frame))) => frame,
            Some(Ok(WsMessage::Text(_))) => {
                let _ = close
                    .send(CloseReason::new(
                        CloseReason::UNSUPPORTED,
                        "text frames are not supported; send binary y-websocket messages",
                    ))
                    .await;
                return;
            }
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            Some(Ok(WsMessage::Close(_))) | None => return,
            Some(Err(e)) => {
                if let Some(reason) = too_big(&e) {
                    let _ = close.send(reason).await;
                } else {
                    tracing::debug!(error = %e, "read failed");
                }
                return;
            }
        };
        match to_command(id, &frame) {
            Ok(Some(command)) => {
                if handle.send(command).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(reason) => {
                tracing::info!(code = reason.code, reason = %reason.reason, "rejected frame");
                let _ = close.send(reason).await;
                return;
            }
        }
    }
}

/// Decodes one frame into the command for the actor; an error is the close
/// frame the client gets.
fn to_command(id: ConnId, frame: &Bytes) -> Result<Option<DocCommand>, CloseReason> {
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
        Message::SyncStep2(update) | Message::Update(update) => DocCommand::Update {
            id,
            update: frame.slice_ref(update),
        },
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

fn too_big(e: &axum::Error) -> Option<CloseReason> {
    let inner = e.source_tungstenite()?;
    match inner {
        tungstenite::Error::Capacity(c) => {
            Some(CloseReason::new(CloseReason::TOO_BIG, c.to_string()))
        }
        _ => None,
    }
}

trait SourceTungstenite {
    fn source_tungstenite(&self) -> Option<&tungstenite::Error>;
}

impl SourceTungstenite for axum::Error {
    fn source_tungstenite(&self) -> Option<&tungstenite::Error> {
        std::error::Error::source(self).and_then(|s| s.downcast_ref::<tungstenite::Error>())
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut outbound: mpsc::Receiver<Bytes>,
    mut kick: oneshot::Receiver<CloseReason>,
    mut close: mpsc::Receiver<CloseReason>,
    shutdown: CancellationToken,
    done: CancellationToken,
) {
    let reason = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Some(CloseReason::new(CloseReason::GOING_AWAY, "server shutting down")),
            kicked = &mut kick => match kicked {
                Ok(reason) => break Some(reason),
                // The actor dropped us without a reason: it stopped.
                Err(_) => break Some(CloseReason::new(CloseReason::GOING_AWAY, "document closed")),
            },
            Some(reason) = close.recv() => break Some(reason),
            frame = outbound.recv() => {
                let Some(frame) = frame else { break None };
                if sink.feed(WsMessage::Binary(frame)).await.is_err() {
                    break None;
                }
                // Batch whatever else is queued into one flush.
                let mut failed = false;
                while let Ok(frame) = outbound.try_recv() {
                    if sink.feed(WsMessage::Binary(frame)).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || sink.flush().await.is_err() {
                    break None;
                }
            }
            // The reader ended: the client is gone or already closing.
            _ = done.cancelled() => break None,
        }
    };
    if let Some(reason) = reason {
        let frame = CloseFrame {
            code: reason.code,
            reason: reason.reason.into(),
        };
        let _ = sink.send(WsMessage::Close(Some(frame))).await;
    }
    let _ = sink.close().await;
    done.cancel();
}
