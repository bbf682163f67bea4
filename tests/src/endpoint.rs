//! WebSocket URLs for documents: `ws://HOST:PORT/ws/{doc}?token=…`.
//!
//! The document name goes into the path as given: valid names only use
//! `A-Z a-z 0-9 . _ ~ -` and `/`, which need no escaping, and tests of
//! invalid names must reach the server byte for byte (no `..` folding, no
//! re-encoding), so nothing here normalises the path.

use crate::ClientError;

/// Turns `http://h:p`, `ws://h:p` (with or without a trailing `/`) into the
/// WebSocket base `ws://h:p`.
pub fn ws_base(address: &str) -> Result<String, ClientError> {
    let trimmed = address.trim_end_matches('/');
    let invalid = |reason| ClientError::InvalidAddress {
        address: address.to_owned(),
        reason,
    };
    let (scheme, rest) = trimmed
        .split_once("://")
        .ok_or_else(|| invalid("missing scheme"))?;
    let scheme = match scheme {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        _ => return Err(invalid("scheme must be ws, wss, http or https")),
    };
    if rest.is_empty() {
        return Err(invalid("missing host"));
    }
    Ok(format!("{scheme}://{rest}"))
}

/// The upgrade URL of document `doc` on the server at `address`, with the
/// access token, if any, as the `token` query parameter.
pub fn doc_url(address: &str, doc: &str, token: Option<&str>) -> Result<String, ClientError> {
    let mut url = format!("{}/ws/{doc}", ws_base(address)?);
    if let Some(token) = token {
        url.push_str("?token=");
        url.push_str(&percent_encode(token));
    }
    Ok(url)
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_document_urls() {
        let cases: &[(&str, &str, Option<&str>, &str)] = &[
            ("ws://h:1", "a", None, "ws://h:1/ws/a"),
            ("http://h:1/", "a/b", None, "ws://h:1/ws/a/b"),
            (
                "https://h",
                "x",
                Some("t.k-n_"),
                "wss://h/ws/x?token=t.k-n_",
            ),
            (
                "ws://h:1",
                "..",
                Some("a b+"),
                "ws://h:1/ws/..?token=a%20b%2B",
            ),
        ];
        for (address, doc, token, expected) in cases {
            assert_eq!(doc_url(address, doc, *token).unwrap(), *expected);
        }
    }

    #[test]
    fn rejects_addresses_without_a_websocket_scheme() {
        for address in ["127.0.0.1:80", "ftp://h", "ws://"] {
            assert!(doc_url(address, "a", None).is_err(), "{address}");
        }
    }
}
