//! `quire-bench relay`: the floor. A WebSocket server that forwards every
//! frame of a room (the URL path) to the room's other connections and does
//! no CRDT work at all, so that what a real server adds over moving bytes
//! is visible. It answers a client's sync step 1 with an empty sync step 2
//! so that y-websocket clients consider themselves synced; everything else
//! is forwarded verbatim.
//!
//! Each connection is a reader loop and a writer task draining a bounded
//! queue (feeding what is queued, then flushing once). Broadcasts wait for
//! room in a slow peer's queue rather than dropping: the floor must deliver
//! everything, like the servers it is compared with.

use crate::wire;
use anyhow::Result;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::task::TaskTracker;

/// Frames queued for one connection.
const QUEUE: usize = 1024;

/// A room's members; replaced whole on join and leave, so a broadcast
/// clones one `Arc` under the lock and sends outside it.
type Members = Arc<Vec<(u64, mpsc::Sender<Bytes>)>>;

#[derive(Default)]
struct Rooms {
    rooms: Mutex<HashMap<String, Members>>,
    next_id: AtomicU64,
}

impl Rooms {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Members>) -> R) -> R {
        f(&mut self.rooms.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn join(&self, room: &str, sender: mpsc::Sender<Bytes>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.with(|rooms| {
            let members = rooms.entry(room.to_owned()).or_default();
            let mut next = members.as_ref().clone();
            next.push((id, sender));
            *members = Arc::new(next);
        });
        id
    }

    fn leave(&self, room: &str, id: u64) {
        self.with(|rooms| {
            if let Some(members) = rooms.get_mut(room) {
                let next: Vec<_> = members.iter().filter(|(m, _)| *m != id).cloned().collect();
                if next.is_empty() {
                    rooms.remove(room);
                } else {
                    *members = Arc::new(next);
                }
            }
        });
    }

    fn members(&self, room: &str) -> Members {
        self.with(|rooms| rooms.get(room).cloned().unwrap_or_default())
    }
}

/// Serves until ctrl-c.
pub(crate) async fn serve(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("relay listening on ws://{}", listener.local_addr()?);
    let rooms = Arc::new(Rooms::default());
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                tracker.spawn(connection(stream, Arc::clone(&rooms)));
            }
        }
    }
    tracker.close();
    Ok(())
}

// tungstenite's handshake callback returns its large error response by value.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, rooms: Arc<Rooms>) {
    let mut room = String::new();
    let callback = |request: &Request, response: Response| {
        room = request.uri().path().to_owned();
        Ok(response)
    };
    // Small buffers: the floor's memory per connection should be what
    // moving bytes needs, not tungstenite's 128 KiB default read buffer.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (sender, mut queue) = mpsc::channel::<Bytes>(QUEUE);
    let id = rooms.join(&room, sender.clone());
    let writer = tokio::spawn(async move {
        while let Some(frame) = queue.recv().await {
            if sink.feed(WsMessage::Binary(frame)).await.is_err() {
                return;
            }
            while let Ok(frame) = queue.try_recv() {
                if sink.feed(WsMessage::Binary(frame)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let empty_step2 = Bytes::from(wire::sync_step2(wire::EMPTY_UPDATE));
    while let Some(Ok(message)) = source.next().await {
        let WsMessage::Binary(frame) = message else {
            if message.is_close() {
                break;
            }
            continue;
        };
        let is_step1 = frame.starts_with(&[wire::MSG_SYNC as u8, wire::SYNC_STEP_1 as u8]);
        if is_step1 {
            if sender.send(empty_step2.clone()).await.is_err() {
                break;
            }
            continue;
        }
        for (member, peer) in rooms.members(&room).iter() {
            if *member != id {
                // A peer that left meanwhile is simply skipped.
                let _ = peer.send(frame.clone()).await;
            }
        }
    }
    rooms.leave(&room, id);
    drop(sender);
    writer.abort();
}
