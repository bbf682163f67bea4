//! What every HTTP request but a WebSocket upgrade goes through: an id, a
//! span, and JSON for the refusals the router itself makes (no such route,
//! method not allowed).
//!
//! The id is the request's `x-request-id` if it has one (a proxy's, so one id
//! follows a request through both logs), else a fresh UUID v4. It is echoed
//! in the response's `x-request-id`, is a field of the `request` span every
//! log line of the request is in, and is in the body of a 500, so that a
//! client reporting one gives what finds the cause in the log.
//!
//! WebSocket upgrades stay outside: a connection runs for hours in its own
//! `conn` span, and a request span would only be its idle parent.

use crate::error::{AppError, InternalErrorResponse, INTERNAL_ERROR_MESSAGE};
use axum::extract::Request;
use axum::http::{Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

/// Wraps every route of `router` (and its fallbacks) in the request id and
/// span layers.
pub fn layer<S>(router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // The last layer added runs first: the id is set, then the span opened
    // with it, then the id copied to the response, then a 500's body
    // completed with it.
    router
        .layer(axum::middleware::from_fn(complete_internal_error))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                // An internal error is logged at ERROR where it happens, with
                // its cause; a 503 while draining is expected.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        // MakeRequestUuid: a UUID v4 (the `uuid` crate).
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

fn request_id(request: &Request) -> Option<&str> {
    request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
}

fn make_span(request: &Request) -> tracing::Span {
    // The path only: the query may hold `?token=`, which must not be logged.
    tracing::info_span!(
        "request",
        request_id = request_id(request).unwrap_or_default(),
        method = %request.method(),
        path = request.uri().path(),
    )
}

/// Adds the request's id to the body of an internal error ([`AppError`]
/// renders it without: it does not know the request).
async fn complete_internal_error(request: Request, next: Next) -> Response {
    let id = request_id(&request).map(str::to_owned);
    let response = next.run(request).await;
    match id {
        Some(id)
            if response
                .extensions()
                .get::<InternalErrorResponse>()
                .is_some() =>
        {
            let (parts, _) = response.into_parts();
            let body = serde_json::json!({ "error": INTERNAL_ERROR_MESSAGE, "request_id": id });
            (parts, axum::Json(body)).into_response()
        }
        _ => response,
    }
}

/// The router's fallback: no route has this path.
pub async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// A route has this path, but not this method. axum adds the `Allow` header.
pub async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn routing_refusals_are_json() {
        let app = layer(
            Router::new()
                .route("/only-get", get(|| async { "ok" }))
                .fallback(not_found)
                .method_not_allowed_fallback(method_not_allowed),
        );
        for (method, uri, status) in [("GET", "/nowhere", 404), ("POST", "/only-get", 405)] {
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .expect("a valid request");
            let response = app.clone().oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), status, "{method} {uri}");
            assert_eq!(
                response.headers().get("content-type").map(|v| v.as_bytes()),
                Some(&b"application/json"[..]),
                "{method} {uri}"
            );
        }
    }
}
