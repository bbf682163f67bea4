//! The one error type of HTTP handlers: `{"error": "..."}` with a fitting status.
//!
//! Every refusal the REST API makes goes through [`AppError`], extractor
//! rejections included (see [`crate::extract`]), so clients always get JSON.
//! An [`AppError::Internal`] carries detail for the log only: the client sees
//! `{"error":"internal error","request_id":"…"}` and quotes the id, which
//! finds the detail in the log (the request span has the same id).

use crate::doc::OpenError;
use crate::names::NameError;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// What an internal error shows its client, whatever went wrong.
pub const INTERNAL_ERROR_MESSAGE: &str = "internal error";

/// `Retry-After` of a write refused while storage fails, in seconds.
const STORAGE_RETRY_AFTER_SECS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid document name: {0}")]
    BadName(#[from] NameError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Storage is failing: writes are refused until it recovers (503 with
    /// `Retry-After`).
    #[error("storage unavailable, retry")]
    StorageUnavailable,
    /// Storage, I/O, a bug: the text is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Marks a response as an internal error's, so the request-id layer
/// ([`crate::request`]) adds the request's id to its body.
#[derive(Debug, Clone, Copy)]
pub struct InternalErrorResponse;

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadName(_) | AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Unavailable(_) | AppError::StorageUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// An extractor's rejection by the status axum gives it; the text is
    /// axum's description of what was wrong with the request, nothing more.
    fn rejected(status: StatusCode, text: String) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge(text),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => AppError::UnsupportedMediaType(text),
            // A body that cannot be read is the server's problem only when
            // axum says so; everything else is a malformed request, 400
            // (axum answers 422 for JSON that does not fit the type: one
            // status for every malformed body is simpler for clients).
            status if status.is_server_error() => AppError::Internal(text),
            _ => AppError::BadRequest(text),
        }
    }
}

impl From<PathRejection> for AppError {
    fn from(r: PathRejection) -> Self {
        AppError::rejected(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::rejected(r.status(), r.body_text())
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        AppError::rejected(r.status(), r.body_text())
    }
}

impl From<BytesRejection> for AppError {
    fn from(r: BytesRejection) -> Self {
        AppError::rejected(r.status(), r.body_text())
    }
}

impl From<OpenError> for AppError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::NotFound => AppError::NotFound("document not found".into()),
            OpenError::ShuttingDown => AppError::Unavailable(e.to_string()),
            OpenError::Store(crate::store::StoreError::Unavailable)
            | OpenError::Record(crate::record::RecordError::Unavailable(_)) => {
                AppError::StorageUnavailable
            }
            OpenError::Store(_) | OpenError::Corrupt(_) | OpenError::Record(_) => {
                AppError::Internal(e.to_string())
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let AppError::Internal(detail) = &self {
            // Inside the request's span: the log line carries its request id.
            tracing::error!(error = %detail, "request failed");
            let mut response = (
                status,
                Json(serde_json::json!({ "error": INTERNAL_ERROR_MESSAGE })),
            )
                .into_response();
            response.extensions_mut().insert(InternalErrorResponse);
            return response;
        }
        tracing::debug!(error = %self, status = status.as_u16(), "request rejected");
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if let AppError::StorageUnavailable = self {
            // About when storage's probe backoff tries again at its slowest.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(STORAGE_RETRY_AFTER_SECS),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(error: AppError) -> (StatusCode, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn an_internal_error_shows_its_client_nothing_of_its_cause() {
        let (status, body) = body_of(AppError::Internal(
            "sled: I/O error at /var/lib/quire/db/conf".into(),
        ))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, serde_json::json!({ "error": "internal error" }));
    }

    #[tokio::test]
    async fn a_write_storage_cannot_take_is_503_with_retry_after() {
        let response = AppError::StorageUnavailable.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("5")
        );
        let (_, body) = body_of(AppError::StorageUnavailable).await;
        assert_eq!(
            body,
            serde_json::json!({ "error": "storage unavailable, retry" })
        );
    }

    #[tokio::test]
    async fn a_refusal_says_what_was_wrong() {
        let (status, body) = body_of(AppError::BadRequest("limit must be 1 to 1000".into())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            serde_json::json!({ "error": "limit must be 1 to 1000" })
        );
    }
}
