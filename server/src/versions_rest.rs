//! REST handlers of version history (`crate::history`): list, record,
//! export, diff and restore versions of a document.
//!
//! The version's snapshot is read where versions are kept (sled, or
//! PostgreSQL in a cluster); rebuilding it needs the live document, so the
//! document's actor does that part (`DocCommand::History`).

use crate::auth::Access;
use crate::doc::{ApplyError, DocCommand, HistoryCommand, HistoryFailure, IfAbsent};
use crate::error::AppError;
use crate::extract::{Body, Json, Query};
use crate::history::{StoredVersion, Trigger, VersionMeta, Versions};
use crate::names::DocName;
use crate::rest::{Auth, Binary, ErrorBody, SnapshotFormatName};
use crate::state::AppState;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::Required;
use utoipa::{IntoParams, ToSchema};

/// Ids are at most 2^53 - 1: what a JSON number holds exactly.
const MAX_VERSION_ID: u64 = (1 << 53) - 1;
/// Longest label, in characters.
pub const MAX_LABEL_CHARS: usize = 200;

fn doc_param() -> Parameter {
    let mut params = <crate::rest::DocPath as IntoParams>::into_params(|| None);
    params.remove(0)
}

fn id_param(name: &str, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(Schema::from(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(MAX_VERSION_ID)),
        )))
        .build()
}

fn parse_id(raw: &str) -> Result<u64, AppError> {
    raw.parse::<u64>()
        .ok()
        .filter(|id| (1..=MAX_VERSION_ID).contains(id))
        .ok_or_else(|| {
            AppError::BadRequest(format!(
                "version id must be a whole number from 1 to {MAX_VERSION_ID}, not {raw:?}"
            ))
        })
}

/// `{doc}` of the version routes.
pub struct VersionsPath(DocName);

impl<S: Send + Sync> FromRequestParts<S> for VersionsPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(raw): Path<String> = Path::from_request_parts(parts, state).await?;
        Ok(VersionsPath(DocName::parse(&raw)?))
    }
}

impl IntoParams for VersionsPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![doc_param()]
    }
}

/// `{doc}` and `{id}`.
pub struct VersionPath(DocName, u64);

impl<S: Send + Sync> FromRequestParts<S> for VersionPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path((doc, id)): Path<(String, String)> =
            Path::from_request_parts(parts, state).await?;
        let doc = DocName::parse(&doc)?;
        Ok(VersionPath(doc, parse_id(&id)?))
    }
}

impl IntoParams for VersionPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![doc_param(), id_param("id", "The version's id.")]
    }
}

/// `{doc}`, `{from}` and `{to}` (an id or `live`).
pub struct DiffPath(DocName, u64, Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for DiffPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path((doc, from, to)): Path<(String, String, String)> =
            Path::from_request_parts(parts, state).await?;
        let doc = DocName::parse(&doc)?;
        let to = match to.as_str() {
            "live" => None,
            id => Some(parse_id(id)?),
        };
        Ok(DiffPath(doc, parse_id(&from)?, to))
    }
}

impl IntoParams for DiffPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let to = ParameterBuilder::new()
            .name("to")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some(
                "A version's id, or `live` for the document as it is now.",
            ))
            .schema(Some(Schema::from(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^(live|[1-9][0-9]{0,14})$")),
            )))
            .build();
        vec![doc_param(), id_param("from", "The older version's id."), to]
    }
}

/// A version, as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionBody {
    id: u64,
    /// When it was recorded (RFC 3339, UTC).
    created_at: String,
    #[schema(nullable = true)]
    label: Option<String>,
    trigger: Trigger,
    /// Bytes of its snapshot.
    size: u64,
    /// Connections to the document on the recording node at the time.
    clients: u32,
    /// Who they were, as far as their tokens say (a token's `sub`, or
    /// `admin`); empty in open mode. Each once, sorted, at most 50.
    users: Vec<String>,
}

impl From<VersionMeta> for VersionBody {
    fn from(meta: VersionMeta) -> Self {
        VersionBody {
            id: meta.id,
            created_at: crate::rest::rfc3339(meta.created_at_ms),
            label: meta.label,
            trigger: meta.trigger,
            size: meta.size,
            clients: meta.clients,
            users: meta.users,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    /// Newest first.
    versions: Vec<VersionBody>,
}

/// The optional body of `POST /api/docs/{doc}/versions`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SaveVersionRequest {
    /// A name for the version, 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200, nullable = false)]
    #[allow(dead_code)] // read by hand: null and non-strings are refused
    label: Option<String>,
}

fn versions(app: &AppState) -> Versions {
    Versions::new(&app.store, app.registry.record())
}

fn storage_error(e: crate::history::VersionsError) -> AppError {
    if e.is_unavailable() {
        AppError::StorageUnavailable
    } else {
        AppError::Internal(e.to_string())
    }
}

fn history_error(e: HistoryFailure) -> AppError {
    use crdt_core::history::HistoryError;
    match e {
        HistoryFailure::Version(HistoryError::AheadOfDocument { .. }) => AppError::Unavailable(
            "this node's copy of the document has not caught up with the version yet; retry".into(),
        ),
        HistoryFailure::Version(e) => AppError::Internal(e.to_string()),
        HistoryFailure::NotText(root) => AppError::NotFound(format!(
            "document has no Text or XmlFragment root named {root:?}"
        )),
        HistoryFailure::Apply(ApplyError::TooLarge { .. }) => {
            AppError::PayloadTooLarge(e.to_string())
        }
        HistoryFailure::Apply(ApplyError::StorageUnavailable) => AppError::StorageUnavailable,
        HistoryFailure::Apply(e) => AppError::Internal(e.to_string()),
        HistoryFailure::Storage(e) => storage_error(e),
    }
}

/// The stored version, or 404.
async fn stored(app: &AppState, doc: &DocName, id: u64) -> Result<StoredVersion, AppError> {
    versions(app)
        .get(doc, id)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| AppError::NotFound(format!("document has no version {id}")))
}

/// Sends a history command to the document's actor (404 if the document
/// does not exist).
async fn ask<T: Send + 'static>(
    app: &AppState,
    doc: &DocName,
    make: impl Fn(tokio::sync::oneshot::Sender<Result<T, HistoryFailure>>) -> HistoryCommand
        + Clone
        + Send
        + 'static,
) -> Result<T, AppError> {
    app.registry
        .with_doc(doc, IfAbsent::NotFound, |h| {
            let make = make.clone();
            async move {
                h.request(|reply| DocCommand::History(Box::new(make(reply))))
                    .await
            }
        })
        .await?
        .map_err(history_error)
}

/// Whether the document is loaded or stored, without loading it (a listing
/// must not keep a document in memory).
async fn exists(app: &AppState, name: &DocName) -> Result<bool, AppError> {
    if app.registry.loaded_stats().iter().any(|(n, _)| n == name) {
        return Ok(true);
    }
    let prefix = name.as_str().to_owned();
    let first = match app.registry.record() {
        Some(record) => record
            .list(&prefix, None, 1)
            .await
            .map_err(|e| storage_error(e.into()))?,
        None => app
            .store
            .list(prefix, None, 1)
            .await
            .map_err(|e| storage_error(e.into()))?,
    };
    Ok(first.first().is_some_and(|(n, _)| n == name.as_str()))
}

fn require_read(access: &Access, doc: &DocName) -> Result<(), AppError> {
    access.require_read(doc)
}

#[utoipa::path(get, path = "/api/docs/{doc}/versions", tag = "history",
    params(VersionsPath),
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 200, description = "The document's versions, newest first", body = VersionList),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Token does not cover the document", body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
        (status = 500, description = "Storage failed; the detail is in the log under request_id", body = ErrorBody),
        (status = 503, description = "Shutting down, or storage is failing", body = ErrorBody),
    ))]
/// `GET /api/docs/{doc}/versions`.
pub async fn list(
    State(app): State<AppState>,
    Auth(access): Auth,
    VersionsPath(name): VersionsPath,
) -> Result<Json<VersionList>, AppError> {
    require_read(&access, &name)?;
    let listed = versions(&app).list(&name).await.map_err(storage_error)?;
    if listed.is_empty() && !exists(&app, &name).await? {
        return Err(AppError::NotFound("document not found".into()));
    }
    Ok(Json(VersionList {
        versions: listed.into_iter().map(VersionBody::from).collect(),
    }))
}

/// The label of a save request: absent, or a string of 1 to 200 characters.
fn label_of(headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, AppError> {
    if body.is_empty() {
        return Ok(None);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("application/json")
                || (v.starts_with("application/") && v.ends_with("+json"))
        });
    if !json {
        return Err(AppError::UnsupportedMediaType(
            "a body must be JSON (content-type: application/json)".into(),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| AppError::BadRequest(format!("body is not JSON: {e}")))?;
    let serde_json::Value::Object(object) = value else {
        return Err(AppError::BadRequest("body must be a JSON object".into()));
    };
    match object.get("label") {
        None => Ok(None),
        Some(serde_json::Value::String(label)) => {
            let chars = label.chars().count();
            if chars == 0 || chars > MAX_LABEL_CHARS {
                return Err(AppError::BadRequest(format!(
                    "label must be 1 to {MAX_LABEL_CHARS} characters"
                )));
            }
            Ok(Some(label.clone()))
        }
        Some(_) => Err(AppError::BadRequest("label must be a string".into())),
    }
}

#[utoipa::path(post, path = "/api/docs/{doc}/versions", tag = "history",
    params(VersionsPath),
    security(("bearer" = []), ("token" = [])),
    request_body(content = SaveVersionRequest, content_type = "application/json", description = "Optional: a label for the version"),
    responses(
        (status = 201, description = "The version recorded", body = VersionBody),
        (status = 400, description = "Invalid name, or a body that is not `{\"label\": \"…\"}`", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Token is read-only or does not cover the document", body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
        (status = 413, description = "Body over --max-message-bytes", body = ErrorBody),
        (status = 415, description = "A body not declared as JSON (content-type)", body = ErrorBody),
        (status = 500, description = "Storage failed; the detail is in the log under request_id", body = ErrorBody),
        (status = 503, description = "Shutting down, or storage is failing", body = ErrorBody),
    ))]
/// `POST /api/docs/{doc}/versions`: records the document as it is now.
pub async fn save(
    State(app): State<AppState>,
    Auth(access): Auth,
    VersionsPath(name): VersionsPath,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<(StatusCode, Json<VersionBody>), AppError> {
    access.require_write(&name)?;
    let label = label_of(&headers, &body)?;
    let meta = ask(&app, &name, move |reply| HistoryCommand::Save {
        label: label.clone(),
        reply,
    })
    .await?;
    Ok((StatusCode::CREATED, Json(VersionBody::from(meta))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionSnapshotQuery {
    /// `yjs` (default), `yjs-v2`, `json` or `text`.
    #[param(inline)]
    format: Option<SnapshotFormatName>,
    /// The root to export; required with `format=text`.
    root: Option<String>,
}

#[utoipa::path(get, path = "/api/docs/{doc}/versions/{id}/snapshot", tag = "history",
    params(VersionPath, VersionSnapshotQuery),
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 200, description = "The document as it was at the version: `yjs` and `yjs-v2` as octet-stream, `json` as JSON, `text` as plain text", content(
            (inline(Binary) = "application/octet-stream"),
            (serde_json::Value = "application/json"),
            (String = "text/plain"),
        )),
        (status = 400, description = "Invalid name, id, format or root", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Token does not cover the document", body = ErrorBody),
        (status = 404, description = "No such document, version or root", body = ErrorBody),
        (status = 500, description = "Storage failed; the detail is in the log under request_id", body = ErrorBody),
        (status = 503, description = "Shutting down, storage is failing, or this node has not caught up with the version yet", body = ErrorBody),
    ))]
/// `GET /api/docs/{doc}/versions/{id}/snapshot`.
pub async fn snapshot(
    State(app): State<AppState>,
    Auth(access): Auth,
    VersionPath(name, id): VersionPath,
    Query(q): Query<VersionSnapshotQuery>,
) -> Result<Response, AppError> {
    require_read(&access, &name)?;
    let format = crate::rest::snapshot_format(q.format, q.root)?;
    let version = stored(&app, &name, id).await?;
    let body = ask(&app, &name, move |reply| HistoryCommand::Export {
        snapshot: version.snapshot.clone(),
        format: format.clone(),
        reply,
    })
    .await?;
    crate::rest::snapshot_response(body)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The Text or XmlFragment root to compare.
    root: String,
}

/// One run of a diff.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiffRunBody {
    /// `equal`: in both; `insert`: only in `to`; `delete`: only in `from`.
    #[schema(pattern = "^(equal|insert|delete)$")]
    op: &'static str,
    text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DiffBody {
    root: String,
    from: u64,
    /// A version's id, or `live`.
    to: String,
    /// Runs of characters, in order: joined, the `equal` and `delete` runs
    /// are the older text, the `equal` and `insert` runs the newer one.
    runs: Vec<DiffRunBody>,
}

#[utoipa::path(get, path = "/api/docs/{doc}/versions/{from}/diff/{to}", tag = "history",
    params(DiffPath, DiffQuery),
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 200, description = "The text difference of the root (Myers' diff over characters; past 2000 edits, the changed middle as one deletion and one insertion)", body = DiffBody),
        (status = 400, description = "Invalid name, id or missing root", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Token does not cover the document", body = ErrorBody),
        (status = 404, description = "No such document or version, or the root is not Text or XmlFragment", body = ErrorBody),
        (status = 500, description = "Storage failed; the detail is in the log under request_id", body = ErrorBody),
        (status = 503, description = "Shutting down, storage is failing, or this node has not caught up with the version yet", body = ErrorBody),
    ))]
/// `GET /api/docs/{doc}/versions/{from}/diff/{to}`.
pub async fn diff(
    State(app): State<AppState>,
    Auth(access): Auth,
    DiffPath(name, from, to): DiffPath,
    Query(q): Query<DiffQuery>,
) -> Result<Json<DiffBody>, AppError> {
    use crdt_core::history::DiffRun;
    require_read(&access, &name)?;
    let older = stored(&app, &name, from).await?;
    let newer = match to {
        Some(id) => Some(stored(&app, &name, id).await?),
        None => None,
    };
    let root = q.root.clone();
    let runs = ask(&app, &name, move |reply| HistoryCommand::Diff {
        from: older.snapshot.clone(),
        to: newer.as_ref().map(|v| v.snapshot.clone()),
        root: root.clone(),
        reply,
    })
    .await?;
    Ok(Json(DiffBody {
        root: q.root,
        from,
        to: to.map_or_else(|| "live".to_owned(), |id| id.to_string()),
        runs: runs
            .into_iter()
            .map(|run| match run {
                DiffRun::Equal(text) => DiffRunBody { op: "equal", text },
                DiffRun::Insert(text) => DiffRunBody { op: "insert", text },
                DiffRun::Delete(text) => DiffRunBody { op: "delete", text },
            })
            .collect(),
    }))
}

#[utoipa::path(post, path = "/api/docs/{doc}/versions/{id}/restore", tag = "history",
    params(VersionPath),
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 201, description = "Restored: one update applied, persisted and relayed to every client; the version it produced (trigger `restore`)", body = VersionBody),
        (status = 400, description = "Invalid name or id", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Token is read-only or does not cover the document", body = ErrorBody),
        (status = 404, description = "No such document or version", body = ErrorBody),
        (status = 413, description = "The restore would grow the document past --max-doc-bytes", body = ErrorBody),
        (status = 500, description = "Storage failed; the detail is in the log under request_id", body = ErrorBody),
        (status = 503, description = "Shutting down, storage is failing (then with Retry-After; nothing was applied), or this node has not caught up with the version yet", body = ErrorBody),
    ))]
/// `POST /api/docs/{doc}/versions/{id}/restore`.
pub async fn restore(
    State(app): State<AppState>,
    Auth(access): Auth,
    VersionPath(name, id): VersionPath,
) -> Result<(StatusCode, Json<VersionBody>), AppError> {
    access.require_write(&name)?;
    if !app.store.is_healthy() {
        return Err(AppError::StorageUnavailable);
    }
    let version = stored(&app, &name, id).await?;
    let meta = ask(&app, &name, move |reply| HistoryCommand::Restore {
        id,
        snapshot: version.snapshot.clone(),
        reply,
    })
    .await?;
    Ok((StatusCode::CREATED, Json(VersionBody::from(meta))))
}
