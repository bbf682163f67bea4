//! An internal error answers its request id and logs its cause under it.
//!
//! Its own test binary, so its own process: whether a span is recorded is
//! decided per callsite, once, and tests on other threads that hit the
//! request span with no subscriber listening would race that decision.

use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use axum::Router;
use quire_server::error::AppError;
use quire_server::request::layer;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

/// Log lines, collected for the test to read.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut lines) = self.0.lock() {
            lines.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default()
    }
}

async fn failing() -> AppError {
    AppError::Internal("sled: I/O error reading /srv/quire/db/blobs/7".into())
}

#[tokio::test]
async fn an_internal_error_answers_its_request_id_and_logs_its_cause_under_it() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // The request span's callsite may have been registered by a test
    // on another thread, with no subscriber interested: ask again.
    tracing::callsite::rebuild_interest_cache();

    let app = layer(Router::new().route("/fails", get(failing)));
    let request = Request::builder()
        .uri("/fails?token=secret-token")
        .body(Body::empty())
        .expect("a valid request");
    let response = app.oneshot(request).await.expect("infallible");

    assert_eq!(response.status(), 500);
    let id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("an x-request-id header")
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("a body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!(
        body,
        serde_json::json!({ "error": "internal error", "request_id": id })
    );

    // The cause is in the log, in the request's span, with the same id;
    // the token of the query is not.
    let log = lines.text();
    let line = log
        .lines()
        .find(|l| l.contains("/srv/quire/db/blobs/7"))
        .unwrap_or_else(|| panic!("the cause is not logged:\n{log}"));
    let line: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(line["span"]["name"], "request", "{line}");
    assert_eq!(line["span"]["request_id"], id.as_str(), "{line}");
    assert_eq!(line["span"]["path"], "/fails", "{line}");
    assert!(!log.contains("secret-token"), "{log}");
}
