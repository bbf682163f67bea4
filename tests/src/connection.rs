//! One live WebSocket connection: a reader task and a writer task.
//!
//! The reader decodes each frame, applies it to the shared state and hands
//! any reply to the writer over a bounded channel (awaiting when it is
//! full, never dropping). The writer also drains the local-update outbox.
//! When either task ends it cancels the other, so a connection never lingers
//! half-alive.

use crate::client::{CloseInfo, Status};
use crate::shared::Shared;
use crate::{ClientError, REMOTE_ORIGIN};
use crdt_core::protocol::{encode_awareness, encode_sync_step1, encode_sync_step2, encode_update};
use crdt_core::{AwarenessUpdate, Message};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, Transact, Update};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Replies queued by the reader before it waits for the writer.
const OUTGOING_CAPACITY: usize = 64;

/// How long a clean close waits for the server to answer the close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long, after the server's close frame, the reader waits for the
/// server to end the TCP connection (RFC 6455: the server closes it first).
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// What the writer is asked to send.
enum Outgoing {
    Frame(Vec<u8>),
    /// Flush local updates, send `farewell` frames, then the close frame.
    Close {
        farewell: Vec<Vec<u8>>,
        code: u16,
        reason: String,
    },
}

/// Handle to the tasks of one connection; dropping it aborts them.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<Outgoing>,
    cancel: CancellationToken,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl Connection {
    /// Connects to `url` and starts the sync handshake: sends sync step 1
    /// with the document's state vector and, if set, the local awareness.
    pub(crate) async fn open(url: &str, shared: Arc<Shared>) -> Result<Connection, ClientError> {
        shared.update(|s| s.status = Status::Connecting);
        let socket = match tokio_tungstenite::connect_async(url).await {
            Ok((socket, _response)) => socket,
            Err(err) => {
                shared.update(|s| s.status = Status::Disconnected);
                return Err(err.into());
            }
        };
        // Collect local edits from here on; older ones reach the server
        // through our answer to its sync step 1.
        shared.outbox.open();
        let mut initial = vec![encode_sync_step1(
            &shared.doc.transact().state_vector().encode_v1(),
        )];
        shared.update(|s| {
            s.status = Status::Connected;
            s.close = None;
            s.error = None;
            if let Some(announce) = s.awareness.announce() {
                initial.push(encode_awareness(&announce.encode()));
            }
        });

        let (sink, stream) = socket.split();
        let (outgoing, queue) = mpsc::channel(OUTGOING_CAPACITY);
        let cancel = CancellationToken::new();
        let writer = tokio::spawn(write_loop(
            sink,
            queue,
            initial,
            Arc::clone(&shared),
            cancel.clone(),
        ));
        let reader = tokio::spawn(read_loop(
            stream,
            outgoing.clone(),
            Arc::clone(&shared),
            cancel.clone(),
        ));
        Ok(Connection {
            shared,
            outgoing,
            cancel,
            reader: Some(reader),
            writer: Some(writer),
        })
    }

    /// Queues one binary frame, waiting while the writer is behind.
    pub(crate) async fn send(&self, frame: Vec<u8>) -> Result<(), ClientError> {
        self.outgoing
            .send(Outgoing::Frame(frame))
            .await
            .map_err(|_| ClientError::NotConnected)
    }

    /// Closes cleanly: pending local updates and the `farewell` frames go out,
    /// then a close frame; waits (bounded) for the server's answer.
    pub(crate) async fn close(mut self, farewell: Vec<Vec<u8>>, code: u16, reason: &str) {
        let request = Outgoing::Close {
            farewell,
            code,
            reason: reason.to_owned(),
        };
        if self.outgoing.send(request).await.is_ok() {
            if let Some(mut reader) = self.reader.take() {
                if tokio::time::timeout(CLOSE_TIMEOUT, &mut reader)
                    .await
                    .is_err()
                {
                    reader.abort();
                    let _ = reader.await;
                }
            }
        }
        self.shutdown().await;
    }

    /// Stops both tasks, waits until they are gone, and marks the client
    /// disconnected (an aborted reader may not have got to it).
    pub(crate) async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in [self.reader.take(), self.writer.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
            let _ = task.await;
        }
        finish(&self.shared, None);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.cancel.cancel();
        for task in [&self.reader, &self.writer].into_iter().flatten() {
            task.abort();
        }
    }
}

async fn write_loop(
    mut sink: SplitSink<Socket, WsMessage>,
    mut queue: mpsc::Receiver<Outgoing>,
    initial: Vec<Vec<u8>>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let result: Result<(), tokio_tungstenite::tungstenite::Error> = async {
        for frame in initial {
            sink.feed(WsMessage::binary(frame)).await?;
        }
        sink.flush().await?;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                request = queue.recv() => match request {
                    Some(Outgoing::Frame(frame)) => sink.send(WsMessage::binary(frame)).await?,
                    Some(Outgoing::Close { farewell, code, reason }) => {
                        send_local_updates(&mut sink, &shared).await?;
                        for frame in farewell {
                            sink.feed(WsMessage::binary(frame)).await?;
                        }
                        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                        sink.send(WsMessage::Close(Some(frame))).await?;
                        // The reader finishes when the server answers.
                        return Ok(());
                    }
                    None => return Ok(()),
                },
                () = shared.outbox.ready() => send_local_updates(&mut sink, &shared).await?,
            }
        }
    }
    .await;
    if let Err(err) = result {
        tracing::debug!(%err, "writer stopped");
        cancel.cancel();
    }
}

/// Sends everything in the outbox as one sync update message.
async fn send_local_updates(
    sink: &mut SplitSink<Socket, WsMessage>,
    shared: &Shared,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let updates = shared.outbox.take();
    let frames = match updates.len() {
        0 => return Ok(()),
        1 => updates,
        // Our own updates always decode; should merging fail anyway, send them one by one.
        _ => match yrs::merge_updates_v1(&updates) {
            Ok(merged) => vec![merged],
            Err(_) => updates,
        },
    };
    for update in frames {
        sink.feed(WsMessage::binary(encode_update(&update))).await?;
    }
    sink.flush().await
}

async fn read_loop(
    mut stream: SplitStream<Socket>,
    outgoing: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut error = None;
    // Set once a close frame went either way: the peer should end the
    // connection now, and is not waited for past this.
    let mut closing: Option<Instant> = None;
    loop {
        let linger = async {
            match closing {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let message = tokio::select! {
            _ = cancel.cancelled() => break,
            () = linger => break,
            message = stream.next() => message,
        };
        match message {
            None => break,
            Some(Err(err)) => {
                if closing.is_none() {
                    error = Some(err.to_string());
                }
                break;
            }
            Some(Ok(WsMessage::Binary(frame))) => match handle_frame(&shared, &frame) {
                Ok(replies) => {
                    for reply in replies {
                        if outgoing.send(Outgoing::Frame(reply)).await.is_err() {
                            break;
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "closing after a malformed frame from the server");
                    error = Some(err.to_string());
                    let close = Outgoing::Close {
                        farewell: Vec::new(),
                        code: 1007,
                        reason: "malformed message".to_owned(),
                    };
                    let _ = outgoing.send(close).await;
                    closing.get_or_insert_with(|| Instant::now() + CLOSE_TIMEOUT);
                }
            },
            Some(Ok(WsMessage::Close(frame))) => {
                let close = frame.map(|f| CloseInfo {
                    code: u16::from(f.code),
                    reason: f.reason.to_string(),
                });
                shared.update(|s| s.close = close);
                // Polling on sends tungstenite's answer; then the server
                // ends the TCP connection, or we stop waiting for it.
                closing.get_or_insert_with(|| Instant::now() + CLOSE_LINGER);
            }
            // Text frames are not part of the protocol; pings are answered by tungstenite.
            Some(Ok(_)) => {}
        }
    }
    finish(&shared, error);
    cancel.cancel();
}

/// Marks the connection over: no more outbox, no remote presence (as
/// y-websocket: peers' presence is unknown while offline). Idempotent.
fn finish(shared: &Shared, error: Option<String>) {
    shared.outbox.close();
    shared.update(|s| {
        s.status = Status::Disconnected;
        if s.error.is_none() {
            s.error = error;
        }
        s.awareness.clear_remote();
    });
}

/// Applies one frame from the server; returns the frames to send back.
fn handle_frame(shared: &Shared, frame: &[u8]) -> Result<Vec<Vec<u8>>, ClientError> {
    let message = Message::decode(frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
    match message {
        Message::SyncStep1(sv) => {
            let diff = shared.doc.transact().encode_diff_v1(&sv);
            Ok(vec![encode_sync_step2(&diff)])
        }
        Message::SyncStep2(update) => {
            apply_remote_update(shared, update)?;
            shared.update(|s| s.status = Status::Synced);
            Ok(Vec::new())
        }
        Message::Update(update) => {
            apply_remote_update(shared, update)?;
            Ok(Vec::new())
        }
        Message::Awareness(bytes) => {
            let update =
                AwarenessUpdate::decode(bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
            let mut state = shared.state();
            let outcome = state.awareness.apply_remote(update);
            drop(state);
            if outcome.changed {
                shared.notify();
            }
            Ok(outcome
                .reannounce
                .map(|u| encode_awareness(&u.encode()))
                .into_iter()
                .collect())
        }
        Message::AuthDenied(reason) => {
            shared.update(|s| s.denied.push(reason.to_owned()));
            Ok(Vec::new())
        }
        Message::QueryAwareness => {
            let all = shared.state().awareness.full_update();
            Ok(vec![encode_awareness(&all.encode())])
        }
    }
}

/// Applies an update under [`REMOTE_ORIGIN`] so that it is not sent back.
fn apply_remote_update(shared: &Shared, bytes: &[u8]) -> Result<(), ClientError> {
    let update = Update::decode_v1(bytes)
        .map_err(|e| ClientError::Protocol(format!("update does not decode: {e}")))?;
    shared
        .doc
        .transact_mut_with(REMOTE_ORIGIN)
        .apply_update(update)
        .map_err(|e| ClientError::Protocol(format!("update does not apply: {e}")))?;
    // The update observer notifies waiters, but an update that changes
    // nothing fires no event, and a waiter may be looking at the status.
    shared.notify();
    Ok(())
}
