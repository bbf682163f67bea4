//! Errors of the client library.

use std::time::Duration;
use thiserror::Error;

/// Everything that can go wrong while talking to a server.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The address given is not a `ws://`, `wss://`, `http://` or `https://` base URL.
    #[error("invalid server address {address:?}: {reason}")]
    InvalidAddress {
        address: String,
        reason: &'static str,
    },
    /// The server answered the upgrade request with an HTTP error instead of
    /// switching protocols (400 for a bad name, 401/403 for tokens, 503 when full).
    #[error("server refused the WebSocket upgrade with HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
    /// Transport or WebSocket protocol failure.
    #[error("websocket: {0}")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// A wait did not see its condition come true in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    /// The operation needs a live connection and there is none.
    #[error("not connected")]
    NotConnected,
    /// The document given to a new client is in the middle of a transaction,
    /// so its update observer cannot be registered.
    #[error("the document is inside a transaction; cannot observe it")]
    DocumentBusy,
    /// The server sent bytes that are not a valid y-websocket message.
    #[error("server sent a malformed message: {0}")]
    Protocol(String),
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(err: tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::Error;
        match err {
            Error::Http(response) => ClientError::Rejected {
                status: response.status().as_u16(),
                body: response
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            },
            other => ClientError::WebSocket(Box::new(other)),
        }
    }
}
