//! `/ws/{doc}`: the y-websocket protocol; `/hocuspocus` and the bare `/ws`:
//! the Hocuspocus dialect ([`hocuspocus`]).
//!
//! For y-websocket, everything that can be refused is refused before the
//! upgrade, as an HTTP status: the name (400), the origin (403), capacity
//! (503). A Hocuspocus upgrade names no document: only the origin and
//! capacity are checked before it.

mod connection;
pub mod hocuspocus;

/// What the server knows of the client behind a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// False for read-only tokens: their updates are refused, never applied.
    pub can_write: bool,
    pub subject: String,
    /// `Access::known_subject`: who versions say was connected.
    pub who: Option<std::sync::Arc<str>>,
    pub addr: SocketAddr,
}

use crate::doc::IfAbsent;
use crate::error::AppError;
use crate::names::DocName;
use crate::state::AppState;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use tokio::sync::OwnedSemaphorePermit;

/// Small socket buffers: most frames are keystrokes, and memory per idle
/// connection is what limits how many a node holds.
const READ_BUFFER: usize = 512;
const WRITE_BUFFER: usize = 1024;

pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer_addr): ConnectInfo<SocketAddr>,
    Path(raw_name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Result<Response, AppError> {
    let name = DocName::parse(&raw_name)?;
    check_origin(&app, &headers)?;
    let token = crate::auth::token_from(&headers, uri.query());
    let access = app.auth.authenticate(token.as_deref())?;
    access.require_read(&name)?;
    let peer = Peer {
        can_write: access.can_write(&name),
        subject: access.subject().to_owned(),
        who: access.known_subject(),
        addr: peer_addr,
    };
    let permit = admit(&app)?;
    // Load (or create) it before upgrading, so that failing to is an HTTP status.
    app.registry.open(&name, IfAbsent::Create).await?;
    let id = app.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let max = app.config.max_message_bytes;
    let tracker = app.tracker.clone();
    // One pointer in axum's upgrade task instead of every field.
    let setup = Box::new(connection::Setup {
        app,
        name,
        id,
        peer,
        permit,
    });
    Ok(sized(ws, max)
        .on_upgrade(move |socket| tracker.track_future(connection::run(socket, setup))))
}

/// Refused while draining and at `--max-connections` (counted in sockets,
/// whatever the dialect); otherwise the permit the socket holds while it
/// lives.
fn admit(app: &AppState) -> Result<OwnedSemaphorePermit, AppError> {
    if app.draining.is_cancelled() {
        return Err(AppError::Unavailable("server is shutting down".into()));
    }
    app.connections
        .clone()
        .try_acquire_owned()
        .map_err(|_| AppError::Unavailable("too many connections".into()))
}

/// The socket's buffers and message bounds, the same for both dialects.
fn sized(ws: WebSocketUpgrade, max_message_bytes: usize) -> WebSocketUpgrade {
    ws.max_message_size(max_message_bytes)
        .max_frame_size(max_message_bytes)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + max_message_bytes)
}

fn check_origin(app: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let Some(allowed) = &app.config.allowed_origins else {
        return Ok(());
    };
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if allowed.iter().any(|a| a == origin) {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "origin {origin:?} is not allowed"
        )))
    }
}
