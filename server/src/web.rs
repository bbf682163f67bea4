//! The browser client, embedded in the binary so a fresh clone serves it
//! without Node.js.

use axum::response::Html;

const INDEX: &str = include_str!("../../web-client/index.html");

pub async fn index() -> Html<&'static str> {
    Html(INDEX)
}
