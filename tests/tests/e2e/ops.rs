//! Operations: Prometheus metrics, the SSE change feed, graceful drain,
//! the OpenAPI document and JSON logs.

use crate::support::{
    append, doc_from_update, eventually, insert, metric, segment, state_vector, text_of,
    text_update, upgrade_status, wait_text, HandClient, Rest, WAIT,
};
use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use quire_client::testing::TestServer;
use quire_client::{RawSocket, Status};
use serde_json::{json, Value};
use std::pin::Pin;
use std::time::Duration;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Transact, Update};

// ---------------------------------------------------------------- metrics

/// Every series SPEC requires of a single node.
const SPEC_METRICS: &[&str] = &[
    "quire_connections",
    "quire_documents_loaded",
    "quire_frames_received_total",
    "quire_frames_sent_total",
    "quire_bytes_received_total",
    "quire_bytes_sent_total",
    "quire_updates_applied_total",
];

#[tokio::test]
async fn metrics_follow_connections_traffic_and_rejections() -> Result<()> {
    let server = TestServer::start().await?;
    let rest = Rest::new(&server);
    let text = rest.metrics().await?;
    for name in SPEC_METRICS {
        ensure!(
            metric(&text, name, &[]).is_some(),
            "{name} missing:\n{text}"
        );
    }
    assert_eq!(metric(&text, "quire_connections", &[]), Some(0.0));

    // The connections gauge counts open clients...
    let mut alice = server.client("metered").await?;
    let mut bob = server.client("metered").await?;
    let mut carol = server.client("metered").await?;
    rest.wait_metric("quire_connections", &[], |n| n == 3.0)
        .await?;

    // ...counters grow with traffic...
    let text = rest.metrics().await?;
    let counter = |name| metric(&text, name, &[]).unwrap_or(0.0);
    let (applied, received, sent) = (
        counter("quire_updates_applied_total"),
        counter("quire_frames_received_total"),
        counter("quire_frames_sent_total"),
    );
    insert(&alice, "content", 0, "counted");
    wait_text(&bob, "content", "counted").await?;
    rest.wait_metric("quire_updates_applied_total", &[], |n| n > applied)
        .await?;
    rest.wait_metric("quire_frames_received_total", &[], |n| n > received)
        .await?;
    rest.wait_metric("quire_frames_sent_total", &[], |n| n > sent)
        .await?;
    rest.wait_metric("quire_documents_loaded", &[], |n| n >= 1.0)
        .await?;
    // ...and the applied update reached disk: the flush histogram has it.
    rest.wait_metric("quire_flush_seconds_count", &[], |n| n >= 1.0)
        .await?;
    let text = rest.metrics().await?;
    ensure!(
        text.contains("# TYPE quire_flush_seconds histogram")
            && metric(&text, "quire_flush_seconds_bucket", &[("le", "+Inf")]).is_some(),
        "quire_flush_seconds is not a histogram:\n{text}"
    );

    // A malformed frame is counted, by reason.
    let invalid = [("reason", "invalid_payload")];
    let rejected = metric(&text, "quire_frames_rejected_total", &invalid).unwrap_or(0.0);
    let mut offender = RawSocket::connect(&server.ws_url("metered")).await?;
    offender.send_binary(vec![0, 1, 10, 1, 2]).await?;
    let close = offender.wait_close(WAIT).await?.context("no close frame")?;
    assert_eq!(close.code, 1007);
    rest.wait_metric("quire_frames_rejected_total", &invalid, |n| {
        n == rejected + 1.0
    })
    .await?;

    // The gauge falls as clients leave, however they leave.
    carol.disconnect().await?;
    rest.wait_metric("quire_connections", &[], |n| n == 2.0)
        .await?;
    bob.drop_connection().await;
    rest.wait_metric("quire_connections", &[], |n| n == 1.0)
        .await?;
    alice.disconnect().await?;
    rest.wait_metric("quire_connections", &[], |n| n == 0.0)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------- SSE

/// One Server-Sent Event.
#[derive(Debug)]
struct SseEvent {
    event: String,
    data: String,
}

/// A reader of a `text/event-stream` response.
struct Sse {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: Vec<u8>,
}

impl Sse {
    /// `GET path`, which must answer 200 with an event stream.
    async fn open(rest: &Rest, path: &str) -> Result<Sse> {
        let response = rest.get(path).await?;
        ensure!(
            response.status().as_u16() == 200,
            "GET {path}: {}",
            response.status()
        );
        let content_type = crate::support::content_type(&response);
        ensure!(
            content_type.starts_with("text/event-stream"),
            "GET {path}: content-type {content_type:?}"
        );
        Ok(Sse {
            body: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
        })
    }

    /// The next event; `None` once the server ended the stream. Comments
    /// (keep-alives) are skipped.
    async fn next(&mut self) -> Result<Option<SseEvent>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_event(std::str::from_utf8(&block)?) {
                    return Ok(Some(event));
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => bail!("no event within {WAIT:?}"),
                Ok(None) => {
                    ensure!(
                        self.buffer.iter().all(u8::is_ascii_whitespace),
                        "stream ended inside an event: {:?}",
                        String::from_utf8_lossy(&self.buffer)
                    );
                    return Ok(None);
                }
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk?),
            }
        }
    }

    /// The next event, which must exist and be named `name`.
    async fn expect(&mut self, name: &str) -> Result<SseEvent> {
        let event = self
            .next()
            .await?
            .with_context(|| format!("the stream ended before an {name:?} event"))?;
        ensure!(event.event == name, "expected {name:?}, got {event:?}");
        Ok(event)
    }
}

/// The `event:` and `data:` lines of one block; `None` for a comment only.
fn parse_event(block: &str) -> Option<SseEvent> {
    let mut event = None;
    let mut data: Option<String> = None;
    for line in block.lines().map(|l| l.trim_end_matches('\r')) {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    if event.is_none() && data.is_none() {
        return None;
    }
    Some(SseEvent {
        event: event.unwrap_or_else(|| "message".to_owned()),
        data: data.unwrap_or_default(),
    })
}

fn apply_base64(doc: &Doc, data: &str) -> Result<()> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(data.trim())?;
    doc.transact_mut()
        .apply_update(Update::decode_v1(&bytes)?)?;
    Ok(())
}

#[tokio::test]
async fn the_change_feed_sends_a_snapshot_then_one_update_per_change() -> Result<()> {
    let server = TestServer::start().await?;
    let rest = Rest::new(&server);
    let alice = server.client("feed").await?;
    insert(&alice, "content", 0, "hello");
    rest.wait_text("feed", "content", "hello").await?;

    let mut feed = Sse::open(&rest, "/api/docs/feed/events").await?;
    // First the whole document, as a base64 v1 update.
    let snapshot = feed.expect("snapshot").await?;
    let mirror =
        doc_from_update(&base64::engine::general_purpose::STANDARD.decode(snapshot.data.trim())?)?;
    assert_eq!(text_of(&mirror, "content"), "hello");

    // Then one update per change, from a WebSocket client...
    append(&alice, "content", " world");
    apply_base64(&mirror, &feed.expect("update").await?.data)?;
    assert_eq!(text_of(&mirror, "content"), "hello world");
    // ...and from REST.
    let response = rest
        .post("/api/docs/feed/updates", text_update("title", "Greeting"))
        .await?;
    assert_eq!(response.status().as_u16(), 204);
    apply_base64(&mirror, &feed.expect("update").await?.data)?;
    assert_eq!(text_of(&mirror, "title"), "Greeting");
    assert_eq!(
        state_vector(&mirror),
        state_vector(&rest.doc("feed").await?)
    );

    // Deleting the document ends the stream.
    assert_eq!(rest.delete("/api/docs/feed").await?.status().as_u16(), 204);
    feed.expect("deleted").await?;
    ensure!(
        feed.next().await?.is_none(),
        "the stream went on after deleted"
    );

    // An absent document has no feed.
    assert_eq!(
        rest.get("/api/docs/feed/events").await?.status().as_u16(),
        404
    );
    assert_eq!(
        rest.get("/api/docs/never/events?format=text&root=content")
            .await?
            .status()
            .as_u16(),
        404
    );
    Ok(())
}

#[tokio::test]
async fn the_text_feed_sends_the_whole_text_at_once_and_after_changes() -> Result<()> {
    let server = TestServer::start().await?;
    let rest = Rest::new(&server);
    let alice = server.client("team/notes").await?;
    insert(&alice, "content", 0, "draft");
    rest.wait_text("team/notes", "content", "draft").await?;

    let path = format!(
        "/api/docs/{}/events?format=text&root=content",
        segment("team/notes")
    );
    let mut feed = Sse::open(&rest, &path).await?;
    let first: String = serde_json::from_str(&feed.expect("text").await?.data)?;
    assert_eq!(first, "draft");

    // A burst of changes: coalesced, but the final text always arrives.
    let words = [" one", " two", " three"];
    for word in words {
        append(&alice, "content", word);
    }
    let response = rest
        .post(
            &format!("/api/docs/{}/updates", segment("team/notes")),
            text_update("other-root", "not part of content"),
        )
        .await?;
    assert_eq!(response.status().as_u16(), 204);
    let expected = "draft one two three";
    let mut events = 0;
    loop {
        let text: String = serde_json::from_str(&feed.expect("text").await?.data)?;
        events += 1;
        if text == expected {
            break;
        }
        ensure!(
            expected.starts_with(&text),
            "a text event no state of the document had: {text:?}"
        );
    }
    ensure!(
        events <= words.len(),
        "{events} text events for {} changes",
        words.len()
    );

    assert_eq!(
        rest.delete(&format!("/api/docs/{}", segment("team/notes")))
            .await?
            .status()
            .as_u16(),
        204
    );
    feed.expect("deleted").await?;
    ensure!(
        feed.next().await?.is_none(),
        "the stream went on after deleted"
    );
    Ok(())
}

// ---------------------------------------------------------------- drain

/// Waits until process `pid` has exited (a zombie until its parent
/// collects it), without signalling it again.
async fn wait_exited(pid: u32) -> Result<()> {
    eventually(|| async {
        let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat,
            // Already reaped.
            Err(_) => return Ok(Some(())),
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_default();
        Ok(matches!(state, "Z" | "X").then_some(()))
    })
    .await
    .context("the server did not exit")
}

#[tokio::test]
async fn sigterm_drains_then_closes_with_1001_and_loses_nothing() -> Result<()> {
    let mut server = TestServer::start_with(["--drain-grace-secs", "2"]).await?;
    let rest = Rest::new(&server);
    let alice = server.client("minutes").await?;
    let bob = server.client("minutes").await?;
    insert(&alice, "content", 0, "before");
    wait_text(&bob, "content", "before").await?;

    let pid = server.pid().context("the server has no pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;

    // At once: not ready, and no new connections.
    eventually(|| async {
        let response = rest.get("/readyz").await?;
        Ok((response.status().as_u16() == 503).then_some(()))
    })
    .await
    .context("/readyz never answered 503 after SIGTERM")?;
    assert_eq!(upgrade_status(&server.ws_url("minutes")).await?, 503);

    // Meanwhile the connected clients keep working.
    assert_eq!(alice.status(), Status::Synced);
    append(&alice, "content", " during");
    wait_text(&bob, "content", "before during").await?;
    append(&bob, "content", " grace");
    wait_text(&alice, "content", "before during grace").await?;

    // After the grace period they are closed with 1001...
    for client in [&alice, &bob] {
        let close = client
            .wait_closed(WAIT)
            .await?
            .context("closed without a close frame")?;
        assert_eq!(close.code, 1001, "{close:?}");
    }
    // ...and the process exits 0.
    wait_exited(pid).await?;
    let status = server.terminate().await?;
    ensure!(status.success(), "quire exited with {status}");

    // A restart has everything.
    server.restart().await?;
    rest.wait_text("minutes", "content", "before during grace")
        .await?;
    Ok(())
}

// ---------------------------------------------------------------- OpenAPI

const SECRET: &str = "openapi-secret";
const ADMIN: &str = "openapi-admin";

/// The REST routes SPEC names, as (method, OpenAPI path).
const SPEC_ROUTES: &[(&str, &str)] = &[
    ("get", "/api/docs"),
    ("get", "/api/docs/{doc}"),
    ("get", "/api/docs/{doc}/snapshot"),
    ("post", "/api/docs/{doc}/updates"),
    ("delete", "/api/docs/{doc}"),
    ("get", "/api/docs/{doc}/events"),
    ("post", "/api/tokens"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

#[tokio::test]
async fn every_documented_operation_answers_with_a_documented_status() -> Result<()> {
    let server = TestServer::start_with(["--auth-secret", SECRET, "--admin-token", ADMIN]).await?;
    let anonymous = Rest::new(&server);
    let admin = Rest::with_token(&server, ADMIN);

    let response = anonymous.get("/api/openapi.json").await?;
    assert_eq!(response.status().as_u16(), 200);
    let spec: Value = response.json().await?;
    let version = spec["openapi"].as_str().unwrap_or_default();
    ensure!(version.starts_with("3."), "not OpenAPI 3: {version:?}");

    // Every (method, path) with its documented status codes.
    let mut operations = Vec::new();
    for (path, item) in spec["paths"].as_object().context("no paths")? {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let codes: Vec<u16> = operation["responses"]
                .as_object()
                .with_context(|| format!("{method} {path} documents no responses"))?
                .keys()
                .filter_map(|code| code.parse().ok())
                .collect();
            operations.push((method.to_owned(), path.clone(), codes));
        }
    }
    for (method, path) in SPEC_ROUTES {
        ensure!(
            operations.iter().any(|(m, p, _)| m == method && p == path),
            "{} {path} is missing from the OpenAPI document",
            method.to_uppercase()
        );
    }

    // Call each one, without a token and with the admin token, on a
    // document that exists; DELETE last.
    let doc = "spec/doc";
    let create = admin
        .post(
            &format!("/api/docs/{}/updates", segment(doc)),
            text_update("content", "x"),
        )
        .await?;
    assert_eq!(create.status().as_u16(), 204);
    operations.sort_by_key(|(method, _, _)| method == "delete");
    let mut wrong = Vec::new();
    for (method, path, codes) in &operations {
        let url = path.replace("{doc}", &segment(doc));
        for (who, rest) in [("without a token", &anonymous), ("as admin", &admin)] {
            let request = rest.request(method.to_uppercase().parse()?, &url);
            let request = match (method.as_str(), path.as_str()) {
                ("post", "/api/tokens") => request.json(&json!({
                    "docs": [doc], "scope": "read", "ttl_secs": 60, "sub": "openapi"
                })),
                ("post", _) => request
                    .header("content-type", "application/octet-stream")
                    .body(text_update("content", "posted")),
                _ => request,
            };
            // Only the head is read (the events stream is left unread).
            let response = request.send().await?;
            let status = response.status().as_u16();
            if !codes.contains(&status) {
                wrong.push(format!(
                    "{} {url} {who}: {status}, documented {codes:?}",
                    method.to_uppercase()
                ));
            }
            // Every error is documented as the JSON error body.
            let content_type = response.headers().get("content-type");
            if status >= 400 && content_type.is_none_or(|c| c != "application/json") {
                wrong.push(format!(
                    "{} {url} {who}: {status} as {content_type:?}, not JSON",
                    method.to_uppercase()
                ));
            }
        }
    }
    ensure!(
        wrong.is_empty(),
        "undocumented answers:\n  {}",
        wrong.join("\n  ")
    );
    Ok(())
}

// ---------------------------------------------------------------- logs

#[tokio::test]
async fn json_logs_are_objects_and_carry_the_connection_span() -> Result<()> {
    let server = TestServer::start_with(["--log-format", "json"]).await?;
    // A hand-made client, so its own address (the server's "peer") is known.
    let mut hand = HandClient::upgrade(server.addr(), "/ws/logged/doc", &[], None).await?;
    assert_eq!(hand.status, 101, "{}", hand.head);
    let peer = hand.stream.local_addr()?.to_string();
    // A frame that does not decode: the server logs closing this connection.
    hand.send_binary(&[0, 1, 10, 1, 2]).await?;

    let line = eventually(|| async {
        Ok(server.logs().lines().find_map(|line| {
            let value: Value = serde_json::from_str(line).ok()?;
            (value["span"]["name"] == "conn").then_some(value)
        }))
    })
    .await
    .with_context(|| format!("no log line in a connection span:\n{}", server.logs()))?;
    assert_eq!(line["span"]["doc"], "logged/doc", "{line}");
    assert_eq!(line["span"]["peer"], peer.as_str(), "{line}");
    ensure!(line["span"]["conn"].is_u64(), "no conn id: {line}");

    // Every line the server wrote is one JSON object.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for text in server.logs().lines().filter(|l| !l.trim().is_empty()) {
        let value: Value =
            serde_json::from_str(text).with_context(|| format!("not JSON: {text:?}"))?;
        ensure!(value.is_object(), "not an object: {text}");
        ensure!(value["level"].is_string(), "no level: {text}");
    }
    Ok(())
}
