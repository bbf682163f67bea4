//! REST handlers: extract, ask the registry or the document's actor, map to
//! a response. Errors go through [`AppError`], extractor rejections too
//! ([`crate::extract`]).
//!
//! The OpenAPI document is generated from the annotations here, and states
//! every constraint a handler enforces that JSON Schema can express: a
//! request the document calls valid is not refused with 400, and one it
//! calls invalid is (`scripts/schemathesis` checks both).

use crate::auth::{Access, Claims, Scope};
use crate::doc::{DocCommand, DocInfo, IfAbsent, SnapshotBody, SnapshotFormat, SnapshotRequest};
use crate::error::AppError;
use crate::extract::{Body, Json, Query};
use crate::names::DocName;
use crate::state::AppState;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Required};
use utoipa::{IntoParams, PartialSchema, ToSchema};

pub const DEFAULT_LIST_LIMIT: usize = 100;
pub const MAX_LIST_LIMIT: usize = 1000;
/// The longest lifetime `POST /api/tokens` grants: a year. Longer-lived
/// access is what the admin token is for.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 60 * 60;

/// A `{doc}` path segment, percent-decoded and validated.
pub struct DocPath(pub DocName);

impl<S: Send + Sync> FromRequestParts<S> for DocPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(raw): Path<String> = Path::from_request_parts(parts, state).await?;
        Ok(DocPath(DocName::parse(&raw)?))
    }
}

/// The `{doc}` parameter of every route that has one, with the name grammar.
impl IntoParams for DocPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![ParameterBuilder::new()
            .name("doc")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some(
                "Document name: 1 to 200 of `A-Z a-z 0-9 . _ ~ -` and `/`, no empty, `.` or \
                 `..` segment. Percent-encoded in the path (`/` as `%2F`).",
            ))
            .schema(Some(DocName::schema()))
            .example(Some(serde_json::Value::from("team/notes")))
            .build()]
    }
}

/// Raw bytes: a Yjs update, in a request or response body.
pub(crate) struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Binary {}

fn integer_schema(minimum: u64, maximum: u64, description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .description(Some(description))
        .into()
}

fn limit_schema() -> Schema {
    integer_schema(
        1,
        MAX_LIST_LIMIT as u64,
        "Page size, 1 to 1000 (default 100).",
    )
}

fn ttl_schema() -> Schema {
    integer_schema(
        1,
        MAX_TOKEN_TTL_SECS,
        "Lifetime of the token in seconds, 1 to 31536000 (a year).",
    )
}

/// The caller's access, from `Authorization: Bearer` or `?token=`.
pub struct Auth(pub Access);

impl FromRequestParts<AppState> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, AppError> {
        let token = crate::auth::token_from(&parts.headers, parts.uri.query());
        Ok(Auth(app.auth.authenticate(token.as_deref())?))
    }
}

pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only names starting with this.
    #[param(example = "team/")]
    prefix: Option<String>,
    #[param(schema_with = limit_schema)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocSummary {
    name: String,
    bytes: u64,
    updated_at: String,
    clients: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocList {
    docs: Vec<DocSummary>,
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/docs", tag = "documents",
    params(ListQuery),
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 200, description = "Documents in name order", body = DocList),
        (status = 400, description = "Invalid query: limit, a repeated parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Token grants nothing under this prefix", body = ErrorBody),
        (status = 500, description = "Storage failed; the detail is in the log under request_id", body = ErrorBody),
    ))]
/// `GET /api/docs`: stored documents and loaded ones not stored yet, by name.
pub async fn list(
    State(app): State<AppState>,
    Auth(access): Auth,
    Query(q): Query<ListQuery>,
) -> Result<Json<DocList>, AppError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(AppError::BadRequest(format!(
            "limit must be 1 to {MAX_LIST_LIMIT}"
        )));
    }
    let prefix = q.prefix.unwrap_or_default();
    if !access.may_list_prefix(&prefix) {
        return Err(AppError::Forbidden(format!(
            "token grants no document under {prefix:?}"
        )));
    }
    // With a shared record, it lists every node's documents.
    let stored = match app.registry.record() {
        Some(record) => record
            .list(&prefix, q.cursor.as_deref(), limit + 1)
            .await
            .map_err(|e| match e {
                crate::record::RecordError::Unavailable(_) => AppError::StorageUnavailable,
                e => AppError::Internal(e.to_string()),
            })?,
        None => app
            .store
            .list(prefix.clone(), q.cursor.clone(), limit + 1)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Unavailable => AppError::StorageUnavailable,
                e => AppError::Internal(e.to_string()),
            })?,
    };
    let mut merged: BTreeMap<String, DocSummary> = stored
        .into_iter()
        .map(|(name, meta)| {
            let summary = DocSummary {
                name: name.clone(),
                bytes: meta.bytes,
                updated_at: rfc3339(meta.updated_at_ms),
                clients: 0,
            };
            (name, summary)
        })
        .collect();
    for (name, stats) in app.registry.loaded_stats() {
        let name = name.as_str();
        let after_cursor = q.cursor.as_deref().is_none_or(|c| name > c);
        if !name.starts_with(&prefix) || !after_cursor {
            continue;
        }
        merged.insert(
            name.to_owned(),
            DocSummary {
                name: name.to_owned(),
                bytes: stats.bytes.load(Ordering::Relaxed),
                updated_at: rfc3339(stats.updated_at_ms.load(Ordering::Relaxed)),
                clients: stats.clients.load(Ordering::Relaxed),
            },
        );
    }
    merged.retain(|name, _| access.may_list(name));
    let more = merged.len() > limit;
    let docs: Vec<DocSummary> = merged.into_values().take(limit).collect();
    let next_cursor = if more {
        docs.last().map(|d| d.name.clone())
    } else {
        None
    };
    Ok(Json(DocList { docs, next_cursor }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocDetails {
    name: String,
    bytes: u64,
    updated_at: String,
    clients: usize,
    state_vector: String,
}

#[utoipa::path(get, path = "/api/docs/{doc}", tag = "documents",
    params(DocPath),
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 200, description = "Document metadata", body = DocDetails),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Token does not cover the document", body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
        (status = 500, description = "Storage failed; the detail is in the log under request_id", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
    ))]
/// `GET /api/docs/{doc}`.
pub async fn info(
    State(app): State<AppState>,
    Auth(access): Auth,
    DocPath(name): DocPath,
) -> Result<Json<DocDetails>, AppError> {
    access.require_read(&name)?;
    let info: DocInfo = app
        .registry
        .with_doc(&name, IfAbsent::NotFound, |h| async move {
            h.request(|reply| DocCommand::Info { reply }).await
        })
        .await?;
    Ok(Json(DocDetails {
        name: name.to_string(),
        bytes: info.bytes,
        updated_at: rfc3339(info.updated_at_ms),
        clients: info.clients,
        state_vector: base64::engine::general_purpose::STANDARD.encode(info.state_vector),
    }))
}

/// What a snapshot holds and how it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotFormatName {
    /// A Yjs update, v1 encoding: `Y.applyUpdate` reproduces the document.
    Yjs,
    /// The same in update format v2.
    YjsV2,
    /// Every root as JSON, by its inferred kind.
    Json,
    /// The plain text of one root (`root`).
    Text,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SnapshotQuery {
    /// `yjs` (default), `yjs-v2`, `json` or `text`.
    #[param(inline)]
    format: Option<SnapshotFormatName>,
    /// The root to export; required with `format=text`.
    root: Option<String>,
    /// A Yjs state vector (v1 encoding) in standard or URL-safe base64,
    /// padding optional: the snapshot holds only what its holder lacks.
    /// Only with `format=yjs` or `yjs-v2`.
    #[param(pattern = "^[A-Za-z0-9+/_-]*={0,2}$")]
    state_vector: Option<String>,
}

/// Standard base64, or URL-safe; padding optional.
pub fn decode_base64(input: &str) -> Result<Vec<u8>, AppError> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let trimmed = input.trim().trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
        .map_err(|e| AppError::BadRequest(format!("state_vector is not base64: {e}")))
}

/// The format a snapshot query asks for (live or of a version).
pub(crate) fn snapshot_format(
    format: Option<SnapshotFormatName>,
    root: Option<String>,
) -> Result<SnapshotFormat, AppError> {
    Ok(match format.unwrap_or(SnapshotFormatName::Yjs) {
        SnapshotFormatName::Yjs => SnapshotFormat::Yjs,
        SnapshotFormatName::YjsV2 => SnapshotFormat::YjsV2,
        SnapshotFormatName::Json => SnapshotFormat::Json,
        SnapshotFormatName::Text => SnapshotFormat::Text {
            root: root.ok_or_else(|| AppError::BadRequest("format=text needs root=NAME".into()))?,
        },
    })
}

/// A snapshot as its response: binary, JSON or text; 404 without the root.
pub(crate) fn snapshot_response(body: SnapshotBody) -> Result<Response, AppError> {
    Ok(match body {
        SnapshotBody::Binary(bytes) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        SnapshotBody::Json(value) => Json(value).into_response(),
        SnapshotBody::Text(text) => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
        }
        SnapshotBody::NoSuchRoot(root) => {
            return Err(AppError::NotFound(format!(
                "document has no root named {root:?}"
            )))
        }
    })
}

impl SnapshotQuery {
    fn into_request(self) -> Result<SnapshotRequest, AppError> {
        let format = snapshot_format(self.format, self.root)?;
        let state_vector = match self.state_vector {
            None => None,
            Some(encoded) => {
                if !matches!(format, SnapshotFormat::Yjs | SnapshotFormat::YjsV2) {
                    return Err(AppError::BadRequest(
                        "state_vector applies to the yjs and yjs-v2 formats".into(),
                    ));
                }
                let bytes = decode_base64(&encoded)?;
                Some(
                    crdt_core::state_vector::decode_state_vector(&bytes)
                        .map_err(|e| AppError::BadRequest(format!("invalid state_vector: {e}")))?,
                )
            }
        };
        Ok(SnapshotRequest {
            format,
            state_vector,
        })
    }
}

#[utoipa::path(get, path = "/api/docs/{doc}/snapshot", tag = "documents",
    params(DocPath, SnapshotQuery),
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 200, description = "The snapshot: `yjs` and `yjs-v2` as octet-stream, `json` as JSON, `text` as plain text", content(
            (inline(Binary) = "application/octet-stream"),
            (serde_json::Value = "application/json"),
            (String = "text/plain"),
        )),
        (status = 400, description = "Invalid name, format, root or state vector", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Token does not cover the document", body = ErrorBody),
        (status = 404, description = "No such document or root", body = ErrorBody),
        (status = 500, description = "Storage failed; the detail is in the log under request_id", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
    ))]
/// `GET /api/docs/{doc}/snapshot`.
pub async fn snapshot(
    State(app): State<AppState>,
    Auth(access): Auth,
    DocPath(name): DocPath,
    Query(q): Query<SnapshotQuery>,
) -> Result<Response, AppError> {
    access.require_read(&name)?;
    let request = q.into_request()?;
    let body = app
        .registry
        .with_doc(&name, IfAbsent::NotFound, |h| {
            let request = request.clone();
            async move {
                h.request(|reply| DocCommand::Snapshot {
                    request: Box::new(request),
                    reply,
                })
                .await
            }
        })
        .await?;
    snapshot_response(body)
}

#[utoipa::path(post, path = "/api/docs/{doc}/updates", tag = "documents",
    params(DocPath),
    security(("bearer" = []), ("token" = [])),
    request_body(content = inline(Binary), content_type = "application/octet-stream", description = "A Yjs update, v1 encoding (what `Y.encodeStateAsUpdate` returns)"),
    responses(
        (status = 204, description = "Applied, persisted and relayed (the document is created if absent)"),
        (status = 400, description = "Invalid name, or the update does not decode; document unchanged", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Token is read-only or does not cover the document", body = ErrorBody),
        (status = 413, description = "Body over --max-message-bytes, or the document would grow past --max-doc-bytes", body = ErrorBody),
        (status = 500, description = "Storage failed; the detail is in the log under request_id", body = ErrorBody),
        (status = 503, description = "Shutting down, or storage is failing (then with Retry-After; nothing was applied or relayed)", body = ErrorBody),
    ))]
/// `POST /api/docs/{doc}/updates`: a v1 update, applied, persisted, relayed.
pub async fn post_update(
    State(app): State<AppState>,
    Auth(access): Auth,
    DocPath(name): DocPath,
    Body(body): Body,
) -> Result<StatusCode, AppError> {
    access.require_write(&name)?;
    // Refused before anything is loaded: storage could not keep it.
    if !app.store.is_healthy() {
        return Err(AppError::StorageUnavailable);
    }
    // Decode before anything is created, so garbage creates no document.
    crdt_core::decode_update_v1(&body).map_err(|e| AppError::BadRequest(e.to_string()))?;
    app.registry
        .with_doc(&name, IfAbsent::Create, |h| {
            let update = body.clone();
            async move {
                h.request(|reply| DocCommand::ApplyUpdate { update, reply })
                    .await
            }
        })
        .await?
        .map_err(|e| match e {
            crate::doc::ApplyError::TooLarge { .. } => AppError::PayloadTooLarge(e.to_string()),
            crate::doc::ApplyError::Document(_) => AppError::BadRequest(e.to_string()),
            crate::doc::ApplyError::StorageUnavailable => AppError::StorageUnavailable,
        })?;
    Ok(StatusCode::NO_CONTENT)
}

/// The longest stateless payload, in characters (at most 64 KiB of UTF-8:
/// what Quire accepts from a provider too).
pub const MAX_STATELESS_CHARS: usize = crdt_core::hocuspocus::MAX_STATELESS_BYTES / 4;

#[derive(Debug, Deserialize, ToSchema)]
pub struct StatelessRequest {
    /// What every Hocuspocus session of the document receives as a
    /// stateless message (the provider's `onStateless` `payload`); any
    /// string, often JSON.
    #[schema(max_length = 16384)]
    payload: String,
}

#[utoipa::path(post, path = "/api/docs/{doc}/stateless", tag = "documents",
    params(DocPath),
    security(("bearer" = []), ("token" = [])),
    request_body = StatelessRequest,
    responses(
        (status = 204, description = "Sent to every Hocuspocus session of the document, on every node; nothing is stored, and a document nobody has open reaches nobody"),
        (status = 400, description = "Invalid name, or not a stateless request (syntax, fields, payload too long)", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Token is read-only or does not cover the document", body = ErrorBody),
        (status = 413, description = "Body over --max-message-bytes", body = ErrorBody),
        (status = 415, description = "Body not declared as JSON (content-type)", body = ErrorBody),
    ))]
/// `POST /api/docs/{doc}/stateless`: a server-side push to the document's
/// Hocuspocus sessions (their providers' `onStateless`).
pub async fn post_stateless(
    State(app): State<AppState>,
    Auth(access): Auth,
    DocPath(name): DocPath,
    request: Result<Json<StatelessRequest>, AppError>,
) -> Result<StatusCode, AppError> {
    access.require_write(&name)?;
    let Json(request) = request?;
    if request.payload.chars().count() > MAX_STATELESS_CHARS {
        return Err(AppError::BadRequest(format!(
            "payload must be at most {MAX_STATELESS_CHARS} characters"
        )));
    }
    let payload = request.payload.into_boxed_str();
    match app.registry.loaded(&name) {
        // The actor relays it here and publishes it to the other nodes.
        Some(handle) => {
            let _ = handle
                .send(DocCommand::Stateless {
                    from: None,
                    payload,
                })
                .await;
        }
        None => {
            if let Some(cluster) = app.registry.cluster() {
                cluster.publish(
                    &name,
                    crdt_core::cluster::Body::Stateless(payload.into_string()),
                );
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/docs/{doc}", tag = "documents",
    params(DocPath),
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 204, description = "Deleted; its WebSockets were closed with 4404"),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
        (status = 500, description = "Storage failed; the detail is in the log under request_id", body = ErrorBody),
        (status = 503, description = "Shutting down, or storage is failing (then with Retry-After)", body = ErrorBody),
    ))]
/// `DELETE /api/docs/{doc}`: closes its connections (4404) and removes it.
pub async fn delete(
    State(app): State<AppState>,
    Auth(access): Auth,
    DocPath(name): DocPath,
) -> Result<StatusCode, AppError> {
    app.auth.require_admin(&access)?;
    if !app.store.is_healthy() {
        return Err(AppError::StorageUnavailable);
    }
    if app.registry.delete(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound("document not found".into()))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    token: String,
}

/// Every error body, as `AppError` renders it (this type only documents it).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong with the request; `internal error` for a 500.
    error: String,
    /// With a 500 only: the request's id (also in `x-request-id`), under which
    /// the server logged the cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    request_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MintRequest {
    /// Document names, or prefixes ending in `*`; at least one.
    #[schema(min_items = 1)]
    docs: Vec<String>,
    scope: Scope,
    #[schema(schema_with = ttl_schema)]
    #[serde(deserialize_with = "whole_number")]
    ttl_secs: u64,
    /// The token's subject (user), shown in logs.
    sub: String,
}

/// A non-negative whole number as JSON Schema's `integer` reads it: `600`
/// and `600.0` alike (serde's `u64` takes only the first). Too large
/// saturates, for the caller's range check to refuse.
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(whole) = number.as_u64() {
        return Ok(whole);
    }
    match number.as_f64() {
        Some(float) if float >= 0.0 && float.fract() == 0.0 => Ok(float as u64),
        _ => Err(serde::de::Error::custom(format!(
            "expected a non-negative whole number, not {number}"
        ))),
    }
}

#[utoipa::path(post, path = "/api/tokens", tag = "access",
    security(("bearer" = []), ("token" = [])),
    request_body = MintRequest,
    responses(
        (status = 200, description = "A signed token", body = TokenResponse),
        (status = 400, description = "Not a valid token request (syntax, fields, empty docs, ttl_secs out of range), or no --auth-secret configured", body = ErrorBody),
        (status = 401, description = "Invalid token", body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
        (status = 413, description = "Body over --max-message-bytes", body = ErrorBody),
        (status = 415, description = "Body not declared as JSON (content-type)", body = ErrorBody),
        (status = 500, description = "Signing failed; the detail is in the log under request_id", body = ErrorBody),
    ))]
/// `POST /api/tokens` (admin): mints an access token.
pub async fn mint_token(
    State(app): State<AppState>,
    Auth(access): Auth,
    request: Result<Json<MintRequest>, AppError>,
) -> Result<Json<TokenResponse>, AppError> {
    // Who may ask comes before whether the question is well formed.
    app.auth.require_admin(&access)?;
    let Json(request) = request?;
    if request.docs.is_empty() {
        return Err(AppError::BadRequest(
            "docs must name at least one document or prefix".into(),
        ));
    }
    if !(1..=MAX_TOKEN_TTL_SECS).contains(&request.ttl_secs) {
        return Err(AppError::BadRequest(format!(
            "ttl_secs must be 1 to {MAX_TOKEN_TTL_SECS}"
        )));
    }
    let claims = Claims {
        sub: request.sub,
        docs: request.docs,
        scope: request.scope,
        exp: crate::auth::now_secs().saturating_add(request.ttl_secs),
    };
    let token = app.auth.mint(&claims)?;
    Ok(Json(TokenResponse { token }))
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
/// `GET /metrics`: Prometheus text format.
pub async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Storage works and the server is not draining", body = serde_json::Value),
        (status = 503, description = "Not ready, with the reason", body = ErrorBody),
    ))]
/// `GET /readyz`: ready while storage works (and every loaded document is on
/// disk again after an outage) and the server is not draining.
pub async fn readyz(State(app): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    if app.draining.is_cancelled() {
        return Err(AppError::Unavailable("draining: shutting down".into()));
    }
    if !app.store.is_healthy() {
        return Err(AppError::Unavailable("storage is failing".into()));
    }
    let recovering = app.registry.recovering();
    if recovering > 0 {
        return Err(AppError::Unavailable(format!(
            "storage recovered; {recovering} loaded documents are still writing their whole state"
        )));
    }
    if let Some(cluster) = &app.cluster {
        cluster.readiness().map_err(AppError::Unavailable)?;
    }
    if let Some(record) = app.registry.record() {
        record.readiness().map_err(AppError::Unavailable)?;
    }
    Ok(Json(
        serde_json::json!({ "status": "ready", "node_id": &*app.node_id }),
    ))
}
