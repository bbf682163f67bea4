//! `GET /api/docs/{doc}/events`: the change feed as Server-Sent Events.
//!
//! Default: `event: snapshot` (base64 v1 update of the whole document), then
//! `event: update` per applied change. With `?format=text&root=NAME`:
//! `event: text` whose data is the whole text as a JSON string, at once and
//! after each change, at most every 50 ms. A deleted document ends the
//! stream with `event: deleted`. A subscriber that falls behind gets a
//! fresh `snapshot` (or `text`) instead of the updates it missed.

use crate::doc::{
    DocCommand, DocEvent, DocHandle, IfAbsent, SnapshotBody, SnapshotFormat, SnapshotRequest,
    Subscription,
};
use crate::error::AppError;
use crate::extract::Query;
use crate::rest::{Auth, DocPath};
use crate::state::AppState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use base64::Engine;
use futures_util::Stream;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const TEXT_THROTTLE: Duration = Duration::from_millis(50);
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events buffered for one HTTP client before the feed waits for it.
const CLIENT_BUFFER: usize = 64;

/// What the feed sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventsFormat {
    /// `snapshot`, then an `update` per change (base64 v1 updates).
    Yjs,
    /// `text`: the whole text of one root (`root`) as a JSON string.
    Text,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// `yjs` (default: snapshot + update events) or `text`.
    #[param(inline)]
    format: Option<EventsFormat>,
    /// The root whose text `format=text` sends; required with it.
    root: Option<String>,
}

/// One event of the feed, as the OpenAPI document describes a
/// `text/event-stream` response: the schema of each event. Only documents.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct FeedEvent {
    event: FeedEventName,
    /// `snapshot`, `update`: a base64 v1 update. `text`: the text as a JSON
    /// string. `deleted`: empty.
    data: String,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum FeedEventName {
    Snapshot,
    Update,
    Text,
    Deleted,
}

enum Feed {
    Updates,
    Text { root: String },
}

#[utoipa::path(get, path = "/api/docs/{doc}/events", tag = "documents",
    params(DocPath, EventsQuery),
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 200, description = "Server-Sent Events: snapshot, update, text, deleted", body = FeedEvent, content_type = "text/event-stream"),
        (status = 400, description = "Invalid name, format or root", body = crate::rest::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = crate::rest::ErrorBody),
        (status = 403, description = "Token does not cover the document", body = crate::rest::ErrorBody),
        (status = 404, description = "No such document", body = crate::rest::ErrorBody),
        (status = 500, description = "Storage failed; the detail is in the log under request_id", body = crate::rest::ErrorBody),
        (status = 503, description = "Shutting down", body = crate::rest::ErrorBody),
    ))]
pub async fn events(
    State(app): State<AppState>,
    Auth(access): Auth,
    DocPath(name): DocPath,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    access.require_read(&name)?;
    let feed = match q.format.unwrap_or(EventsFormat::Yjs) {
        EventsFormat::Yjs => Feed::Updates,
        EventsFormat::Text => Feed::Text {
            root: q
                .root
                .ok_or_else(|| AppError::BadRequest("format=text needs root=NAME".into()))?,
        },
    };
    let (handle, subscription) = subscribe(&app, &name).await?;
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let stop = app.shutdown.clone();
    let span = tracing::info_span!("sse", doc = %name);
    let task = async move {
        let result = match feed {
            Feed::Updates => feed_updates(&handle, subscription, &tx, &stop).await,
            Feed::Text { root } => feed_text(&handle, subscription, &root, &tx, &stop).await,
        };
        if result.is_err() {
            tracing::debug!("subscriber left");
        }
    };
    app.tracker
        .spawn(tracing::Instrument::instrument(task, span));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

async fn subscribe(
    app: &AppState,
    name: &crate::names::DocName,
) -> Result<(DocHandle, Subscription), AppError> {
    Ok(app
        .registry
        .with_doc(name, IfAbsent::NotFound, |h| async move {
            let sub = h.request(|reply| DocCommand::Subscribe { reply }).await?;
            Ok((h, sub))
        })
        .await?)
}

/// The HTTP client went away.
struct Gone;

async fn send(tx: &mpsc::Sender<Event>, event: Event) -> Result<(), Gone> {
    tx.send(event).await.map_err(|_| Gone)
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn feed_updates(
    handle: &DocHandle,
    mut sub: Subscription,
    tx: &mpsc::Sender<Event>,
    stop: &CancellationToken,
) -> Result<(), Gone> {
    send(
        tx,
        Event::default()
            .event("snapshot")
            .data(base64(&sub.snapshot)),
    )
    .await?;
    loop {
        let next = tokio::select! {
            next = sub.events.recv() => next,
            _ = tx.closed() => return Err(Gone),
            _ = stop.cancelled() => return Ok(()),
        };
        match next {
            Ok(DocEvent::Update(update)) => {
                send(tx, Event::default().event("update").data(base64(&update))).await?
            }
            Ok(DocEvent::Deleted) => {
                return send(tx, Event::default().event("deleted").data("")).await;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                match handle
                    .request(|reply| DocCommand::Subscribe { reply })
                    .await
                {
                    Ok(fresh) => sub = fresh,
                    Err(_) => return Ok(()),
                }
                send(
                    tx,
                    Event::default()
                        .event("snapshot")
                        .data(base64(&sub.snapshot)),
                )
                .await?;
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

async fn current_text(handle: &DocHandle, root: &str) -> Option<String> {
    let request = SnapshotRequest {
        format: SnapshotFormat::Text {
            root: root.to_owned(),
        },
        state_vector: None,
    };
    match handle
        .request(|reply| DocCommand::Snapshot {
            request: Box::new(request),
            reply,
        })
        .await
    {
        Ok(SnapshotBody::Text(text)) => Some(text),
        Ok(_) => Some(String::new()),
        Err(_) => None,
    }
}

fn text_event(text: &str) -> Event {
    Event::default()
        .event("text")
        .data(serde_json::Value::String(text.to_owned()).to_string())
}

async fn feed_text(
    handle: &DocHandle,
    mut sub: Subscription,
    root: &str,
    tx: &mpsc::Sender<Event>,
    stop: &CancellationToken,
) -> Result<(), Gone> {
    let Some(text) = current_text(handle, root).await else {
        return Ok(());
    };
    send(tx, text_event(&text)).await?;
    let mut last_sent = Instant::now();
    let mut last_text = text;
    loop {
        let next = tokio::select! {
            next = sub.events.recv() => next,
            _ = tx.closed() => return Err(Gone),
            _ = stop.cancelled() => return Ok(()),
        };
        match next {
            Ok(DocEvent::Update(_)) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Ok(DocEvent::Deleted) => {
                return send(tx, Event::default().event("deleted").data("")).await;
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
        // Coalesce every change of the throttle window into one event.
        tokio::time::sleep_until(last_sent + TEXT_THROTTLE).await;
        let mut deleted = false;
        loop {
            match sub.events.try_recv() {
                Ok(DocEvent::Deleted) => deleted = true,
                Ok(DocEvent::Update(_)) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        let Some(text) = current_text(handle, root).await else {
            return Ok(());
        };
        if text != last_text {
            send(tx, text_event(&text)).await?;
            last_text = text;
            last_sent = Instant::now();
        }
        if deleted {
            return send(tx, Event::default().event("deleted").data("")).await;
        }
    }
}
