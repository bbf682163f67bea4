//! [`RawSocket`]: a WebSocket with no protocol logic, for sending frames a
//! well-behaved client never would and observing how the server closes.

use crate::client::CloseInfo;
use crate::ClientError;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One thing read from a [`RawSocket`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawFrame {
    Binary(Vec<u8>),
    Text(String),
    /// The server's close frame (`None`: a close frame without a code).
    Close(Option<CloseInfo>),
    /// The connection ended without (further) frames.
    Ended,
}

/// A raw WebSocket connection to any URL.
pub struct RawSocket {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawSocket {
    /// Connects to `url` exactly as given (no path normalisation). An HTTP
    /// answer other than 101 is [`ClientError::Rejected`] with its status.
    pub async fn connect(url: &str) -> Result<RawSocket, ClientError> {
        let (socket, _response) = tokio_tungstenite::connect_async(url).await?;
        Ok(RawSocket { socket })
    }

    /// Sends `bytes` as one binary frame.
    pub async fn send_binary(&mut self, bytes: impl Into<Vec<u8>>) -> Result<(), ClientError> {
        Ok(self.socket.send(WsMessage::binary(bytes.into())).await?)
    }

    /// Sends `text` as one text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        Ok(self.socket.send(WsMessage::text(text)).await?)
    }

    /// Reads the next data or close frame; pings and pongs are skipped.
    pub async fn recv(&mut self, timeout: Duration) -> Result<RawFrame, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .map_err(|_| ClientError::Timeout {
                    what: "a frame",
                    timeout,
                })?;
            return Ok(match next {
                None => RawFrame::Ended,
                Some(Err(err)) if is_end(&err) => RawFrame::Ended,
                Some(Err(err)) => return Err(err.into()),
                Some(Ok(WsMessage::Binary(bytes))) => RawFrame::Binary(bytes.to_vec()),
                Some(Ok(WsMessage::Text(text))) => RawFrame::Text(text.to_string()),
                Some(Ok(WsMessage::Close(frame))) => RawFrame::Close(frame.map(|f| CloseInfo {
                    code: u16::from(f.code),
                    reason: f.reason.to_string(),
                })),
                Some(Ok(_)) => continue,
            });
        }
    }

    /// Reads until the server closes; returns its close frame, skipping data
    /// frames. `Ok(None)` when the connection ended without a close frame.
    pub async fn wait_close(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<CloseInfo>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Ok(RawFrame::Close(info)) => return Ok(info),
                Ok(RawFrame::Ended) => return Ok(None),
                Ok(_) => {}
                Err(ClientError::Timeout { what, .. }) => {
                    return Err(ClientError::Timeout { what, timeout })
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Sends a close frame with `code` and ends the connection.
    pub async fn close(mut self, code: u16) -> Result<(), ClientError> {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let frame = CloseFrame {
            code: code.into(),
            reason: "".into(),
        };
        Ok(self.socket.close(Some(frame)).await?)
    }
}

/// Resets and aborts after the server closed are the end of the stream,
/// not failures of the test.
fn is_end(err: &tokio_tungstenite::tungstenite::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    match err {
        Error::ConnectionClosed | Error::AlreadyClosed => true,
        Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::UnexpectedEof
        ),
        Error::Protocol(p) => matches!(
            p,
            tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake
        ),
        _ => false,
    }
}
