//! `/hocuspocus` and the bare `/ws`: the Hocuspocus dialect
//! (`@hocuspocus/provider` 3.x and 4.x), many documents over one socket.
//!
//! The upgrade carries no document and usually no token (browsers cannot
//! set headers and providers send the token in each document's Auth frame),
//! so only the origin and the connection cap are checked here; everything
//! else is decided per document, on the socket ([`socket`]), under the
//! pre-auth bounds of [`policy`].
//!
//! Each authenticated document is one session: a connection of that
//! document's actor (dialect [`crate::doc::Dialect::Hocuspocus`]) with its
//! own outbound queue, so relay order, presence and slow-consumer closes
//! are the actor's, as for y-websocket connections. The socket prefixes
//! each frame with the session's raw address when it writes it.

mod grant;
mod policy;
mod socket;

use super::{admit, check_origin, sized};
use crate::error::AppError;
use crate::state::AppState;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use std::net::SocketAddr;

pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer_addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Result<Response, AppError> {
    check_origin(&app, &headers)?;
    let permit = admit(&app)?;
    // The default for Auth frames whose token is "" (a provider keeps a
    // query string the app wrote into its URL).
    let url_token = crate::auth::token_from(&headers, uri.query());
    let max = app.config.max_message_bytes;
    let tracker = app.tracker.clone();
    let setup = Box::new(socket::Setup {
        app,
        peer_addr,
        url_token,
        permit,
    });
    Ok(sized(ws, max).on_upgrade(move |socket| tracker.track_future(socket::run(socket, setup))))
}
