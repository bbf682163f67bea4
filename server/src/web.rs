//! The browser client: `web-client/dist`, built by Vite and committed, embedded
//! in the binary at compile time (debug builds too) so a fresh clone serves it
//! without Node.js and the binary never reads it from disk.
//!
//! - `/` and `/d/{*doc}` answer `index.html`; the client routes itself. It is
//!   revalidated on every load (`no-cache` with an `ETag`), so a new build shows
//!   at once.
//! - `/assets/{*path}` serves Vite's output, whose file names carry a content
//!   hash: cached for a year as immutable.
//!
//! Lookups go through the embedded table only, so a path can never reach the
//! file system (`..` simply matches no entry).

use crate::error::AppError;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;
use std::fmt::Write;

#[derive(RustEmbed)]
#[folder = "../web-client/dist/"]
struct Dist;

const INDEX: &str = "index.html";
/// For content-hashed files: a new build has new names.
const CACHE_HASHED: &str = "public, max-age=31536000, immutable";
/// For `index.html`: always ask, answered 304 while unchanged.
const CACHE_REVALIDATE: &str = "no-cache";

/// `GET /` and `GET /d/{*doc}`: the single-page app.
pub async fn index(headers: HeaderMap) -> Response {
    serve(INDEX, CACHE_REVALIDATE, &headers)
}

/// `GET /assets/{*path}`: scripts, styles and fonts of the build.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&format!("assets/{path}"), CACHE_HASHED, &headers)
}

fn serve(path: &str, cache_control: &'static str, request: &HeaderMap) -> Response {
    let Some(file) = Dist::get(path) else {
        return if path == INDEX {
            AppError::Internal("the web client was built without index.html".into()).into_response()
        } else {
            AppError::NotFound(format!("no such file: /{path}")).into_response()
        };
    };
    let etag = etag(&file.metadata.sha256_hash());
    let mut response = if if_none_match(request, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let content_type = content_type(file.metadata.mimetype());
        (
            [(header::CONTENT_TYPE, content_type)],
            file.data.into_owned(),
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    response
}

/// A strong validator from the content hash (the first 128 bits are plenty).
fn etag(sha256: &[u8; 32]) -> String {
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for byte in &sha256[..16] {
        let _ = write!(tag, "{byte:02x}");
    }
    tag.push('"');
    tag
}

/// Whether `If-None-Match` lists this ETag (or is `*`).
fn if_none_match(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|candidate| candidate.trim().trim_start_matches("W/"))
        .any(|candidate| candidate == etag || candidate == "*")
}

/// The guessed type, with an explicit charset for text (Vite emits UTF-8).
fn content_type(mime: &str) -> String {
    let textual = mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript" | "application/json" | "image/svg+xml"
        );
    if textual && !mime.contains("charset") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(tag) = if_none_match {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(tag).unwrap());
        }
        match path.strip_prefix("/assets/") {
            Some(rest) => asset(Path(rest.to_owned()), headers).await,
            None => index(headers).await,
        }
    }

    fn header_of(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The first `/assets/...` file that `index.html` references with `ext`.
    fn referenced_asset(ext: &str) -> String {
        let index = Dist::get(INDEX).expect("index.html is embedded");
        let html = String::from_utf8(index.data.into_owned()).unwrap();
        html.split('"')
            .find(|quoted| quoted.starts_with("/assets/") && quoted.ends_with(ext))
            .expect("index.html references an asset with that extension")
            .to_owned()
    }

    #[tokio::test]
    async fn index_is_html_and_revalidated() {
        let response = get("/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header_of(&response, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache");
        let etag = header_of(&response, header::ETAG).to_owned();
        assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert!(body.starts_with(b"<!doctype html>"));

        let again = get("/", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header_of(&again, header::ETAG), etag);
    }

    #[tokio::test]
    async fn hashed_assets_have_their_type_and_a_long_cache() {
        for (ext, mime) in [
            (".js", "text/javascript; charset=utf-8"),
            (".css", "text/css; charset=utf-8"),
        ] {
            let path = referenced_asset(ext);
            let response = get(&path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let content_type = header_of(&response, header::CONTENT_TYPE);
            assert!(
                content_type == mime
                    || (ext == ".js" && content_type == "application/javascript; charset=utf-8"),
                "{path}: {content_type}"
            );
            assert_eq!(
                header_of(&response, header::CACHE_CONTROL),
                "public, max-age=31536000, immutable"
            );
            assert_eq!(
                header_of(&response, header::X_CONTENT_TYPE_OPTIONS),
                "nosniff"
            );
        }
    }

    #[tokio::test]
    async fn fonts_are_served_as_fonts() {
        let font = Dist::iter()
            .find(|name| name.ends_with(".woff2"))
            .expect("the build ships its font");
        let response = get(&format!("/{font}"), None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header_of(&response, header::CONTENT_TYPE), "font/woff2");
    }

    #[tokio::test]
    async fn unknown_and_escaping_paths_are_404() {
        for path in [
            "/assets/nope.js",
            "/assets/../index.html",
            "/assets/../../Cargo.toml",
            "/assets/",
        ] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn etag_matching() {
        let mut headers = HeaderMap::new();
        let tag = "\"00112233445566778899aabbccddeeff\"";
        assert!(!if_none_match(&headers, tag));
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"other\", W/\"00112233445566778899aabbccddeeff\""),
        );
        assert!(if_none_match(&headers, tag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&headers, tag));
    }
}
