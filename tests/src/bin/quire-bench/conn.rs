//! A lean connection for load generation: one WebSocket, no tasks of its
//! own, no document unless the caller keeps one. Thousands of them must fit
//! in the load generator next to the server, so buffers are small.

use crate::target::Target;
use crate::wire::{self, Msg};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a close handshake may take before the socket is just dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One binary frame from the server, with any Hocuspocus prefix skipped.
pub(crate) struct Frame {
    bytes: Bytes,
    offset: usize,
}

impl Frame {
    /// The y-websocket message.
    pub(crate) fn body(&self) -> &[u8] {
        &self.bytes[self.offset..]
    }
}

/// One open connection to one document.
pub(crate) struct Conn {
    ws: Ws,
    target: Target,
    prefix: Vec<u8>,
}

impl Conn {
    /// Upgrades, with Nagle off, and sends the server's greeting if it
    /// needs one (Hocuspocus auth).
    pub(crate) async fn open(target: &Target, doc: &str) -> Result<Conn> {
        let url = target.url(doc);
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(256 << 20))
            .max_frame_size(Some(256 << 20));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config), true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let mut conn = Conn {
            ws,
            target: target.clone(),
            prefix: target.prefix(doc),
        };
        for message in target.greeting() {
            conn.send(&message).await?;
        }
        Ok(conn)
    }

    /// Sends one y-websocket message as one binary frame.
    pub(crate) async fn send(&mut self, body: &[u8]) -> Result<()> {
        let mut frame = Vec::with_capacity(self.prefix.len() + body.len());
        frame.extend_from_slice(&self.prefix);
        frame.extend_from_slice(body);
        self.ws.send(WsMessage::binary(frame)).await?;
        Ok(())
    }

    /// The next binary frame; `None` when the server closed the connection.
    /// Pings are answered by tungstenite while this is polled.
    pub(crate) async fn recv(&mut self) -> Result<Option<Frame>> {
        loop {
            match self.ws.next().await {
                None | Some(Ok(WsMessage::Close(_))) => return Ok(None),
                Some(Err(err)) => return Err(err.into()),
                Some(Ok(WsMessage::Binary(bytes))) => {
                    let offset = self
                        .target
                        .body_offset(&bytes)
                        .ok_or_else(|| anyhow!("frame without a document name"))?;
                    return Ok(Some(Frame { bytes, offset }));
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The y-websocket handshake from the client's side: sends sync step 1
    /// with `state_vector`, answers the server's step 1 with `diff(sv)`, and
    /// returns the payload of the server's sync step 2.
    pub(crate) async fn sync(
        &mut self,
        state_vector: &[u8],
        mut diff: impl FnMut(&[u8]) -> Vec<u8>,
    ) -> Result<Vec<u8>> {
        self.send(&wire::sync_step1(state_vector)).await?;
        loop {
            let Some(frame) = self.recv().await? else {
                bail!("the server closed the connection during the handshake");
            };
            match wire::parse(frame.body()) {
                Some(Msg::SyncStep1(sv)) => {
                    let reply = wire::sync_step2(&diff(sv));
                    self.send(&reply).await?;
                }
                Some(Msg::SyncStep2(update)) => return Ok(update.to_vec()),
                Some(_) => {}
                None => bail!("malformed frame from the server during the handshake"),
            }
        }
    }

    /// The handshake of a client with an empty document.
    pub(crate) async fn sync_empty(&mut self) -> Result<Vec<u8>> {
        self.sync(wire::EMPTY_STATE_VECTOR, |_| wire::EMPTY_UPDATE.to_vec())
            .await
    }

    /// Sends a close frame and waits (bounded) for the server to answer, so
    /// that everything sent before it has been read by the server.
    pub(crate) async fn close(mut self) {
        if self.ws.close(None).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}
