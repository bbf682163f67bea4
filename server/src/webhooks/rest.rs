//! Admin REST routes of the webhook outbox: the dead letters, and replaying
//! them.

use super::{now_ms, Claimed, Outbox, OutboxError};
use crate::error::AppError;
use crate::rest::{rfc3339, Auth, ErrorBody};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// Dead letters listed at most.
const LIST_LIMIT: usize = 1000;

/// One delivery that ran out of attempts.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetter {
    /// Its id in the outbox: what `…/{id}/replay` takes.
    pub id: u64,
    /// The event's id (the `webhook-id` header, the idempotency key).
    pub event_id: String,
    /// `document.created`, `document.updated`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub document: String,
    /// The receiver it was for.
    pub endpoint: String,
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the event was written (RFC 3339).
    pub created_at: String,
    /// The event's body, exactly as it was sent.
    pub body: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetters {
    /// Oldest first, at most 1000.
    pub dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    /// Dead letters put back in the outbox, each with a fresh set of attempts.
    pub replayed: u64,
}

fn outbox(app: &AppState, auth: &Auth) -> Result<Outbox, AppError> {
    app.auth.require_admin(&auth.0)?;
    app.webhooks
        .clone()
        .ok_or_else(|| AppError::NotFound("webhooks are not configured (--webhook-url)".into()))
}

fn failed(e: OutboxError) -> AppError {
    match e {
        OutboxError::Store(crate::store::StoreError::Unavailable)
        | OutboxError::Record(crate::record::RecordError::Unavailable(_)) => {
            AppError::StorageUnavailable
        }
        other => AppError::Internal(other.to_string()),
    }
}

impl From<Claimed> for DeadLetter {
    fn from(c: Claimed) -> DeadLetter {
        let e = c.entry;
        DeadLetter {
            id: c.id,
            body: serde_json::from_str(&e.body).unwrap_or(serde_json::Value::Null),
            event_id: e.event_id,
            kind: e.kind,
            document: e.document,
            endpoint: e.endpoint,
            attempts: e.attempts,
            last_error: e.last_error,
            created_at: rfc3339(e.created_ms),
        }
    }
}

#[utoipa::path(get, path = "/api/webhooks/dead-letters", tag = "operations",
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 200, description = "Deliveries that ran out of attempts, oldest first", body = DeadLetters),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "Webhooks are not configured", body = ErrorBody),
        (status = 500, description = "Storage failed; the detail is in the log under request_id", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    ))]
/// `GET /api/webhooks/dead-letters` (admin).
pub async fn list(State(app): State<AppState>, auth: Auth) -> Result<Json<DeadLetters>, AppError> {
    let outbox = outbox(&app, &auth)?;
    let dead = outbox.dead_letters(LIST_LIMIT).await.map_err(failed)?;
    Ok(Json(DeadLetters {
        dead_letters: dead.into_iter().map(DeadLetter::from).collect(),
    }))
}

#[utoipa::path(post, path = "/api/webhooks/dead-letters/replay", tag = "operations",
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 202, description = "Every dead letter is back in the outbox, delivered again with fresh attempts", body = Replayed),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "Webhooks are not configured", body = ErrorBody),
        (status = 500, description = "Storage failed; the detail is in the log under request_id", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    ))]
/// `POST /api/webhooks/dead-letters/replay` (admin): all of them.
pub async fn replay_all(
    State(app): State<AppState>,
    auth: Auth,
) -> Result<(StatusCode, Json<Replayed>), AppError> {
    let outbox = outbox(&app, &auth)?;
    let replayed = outbox.replay(None, now_ms()).await.map_err(failed)?;
    Ok((StatusCode::ACCEPTED, Json(Replayed { replayed })))
}

#[utoipa::path(post, path = "/api/webhooks/dead-letters/{id}/replay", tag = "operations",
    params(("id" = u64, Path, description = "The dead letter's id, from the list", minimum = 1)),
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 202, description = "The dead letter is back in the outbox", body = Replayed),
        (status = 400, description = "The id is not a whole number", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such dead letter, or webhooks are not configured", body = ErrorBody),
        (status = 500, description = "Storage failed; the detail is in the log under request_id", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    ))]
/// `POST /api/webhooks/dead-letters/{id}/replay` (admin): one of them.
pub async fn replay_one(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Replayed>), AppError> {
    let outbox = outbox(&app, &auth)?;
    let id: u64 = id.parse().map_err(|_| {
        AppError::BadRequest(format!("a dead letter's id is a whole number, not {id:?}"))
    })?;
    match outbox.replay(Some(id), now_ms()).await.map_err(failed)? {
        0 => Err(AppError::NotFound(format!("no dead letter {id}"))),
        replayed => Ok((StatusCode::ACCEPTED, Json(Replayed { replayed }))),
    }
}
