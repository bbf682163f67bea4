//! The REST API: info, listing, snapshots in every format, posting updates,
//! deleting documents, health.

use crate::support::{
    decode_sv, doc_from_update, insert, segment, state_vector, sv_base64, text_of, text_update,
    wait_text, Rest, WAIT,
};
use anyhow::{ensure, Context, Result};
use base64::Engine;
use quire_client::testing::TestServer;
use quire_client::Client;
use serde_json::{json, Value};
use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, Doc, GetString, Map, ReadTxn, StateVector, Transact, Update, XmlElementPrelim,
    XmlFragment, XmlTextPrelim,
};

/// Builds a document with one root of every kind through `client`.
fn write_every_kind(client: &Client) {
    let doc = client.doc();
    let text = doc.get_or_insert_text("content");
    let meta = doc.get_or_insert_map("meta");
    let list = doc.get_or_insert_array("list");
    let prose = doc.get_or_insert_xml_fragment("prosemirror");
    let mut txn = doc.transact_mut();
    yrs::Text::insert(&text, &mut txn, 0, "Hello, world");
    meta.insert(&mut txn, "title", "Minutes");
    meta.insert(&mut txn, "pages", 3);
    list.push_back(&mut txn, "one");
    list.push_back(&mut txn, 2);
    list.push_back(&mut txn, true);
    let paragraph = prose.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
    paragraph.push_back(&mut txn, XmlTextPrelim::new("typed text"));
}

fn json_of(doc: &Doc) -> Value {
    let txn = doc.transact();
    let any = |v: Any| serde_json::to_value(v).unwrap_or(Value::Null);
    let prose = txn
        .get_xml_fragment("prosemirror")
        .map(|x| x.get_string(&txn))
        .unwrap_or_default();
    json!({
        "content": text_of(doc, "content"),
        "meta": txn.get_map("meta").map(|m| any(m.to_json(&txn))),
        "list": txn.get_array("list").map(|a| any(a.to_json(&txn))),
        "prosemirror": prose,
    })
}

#[tokio::test]
async fn an_absent_document_is_404_everywhere_but_post() -> Result<()> {
    let server = TestServer::start().await?;
    let rest = Rest::new(&server);
    for path in [
        "/api/docs/nope",
        "/api/docs/nope/snapshot?format=yjs",
        "/api/docs/nope/snapshot?format=text&root=content",
    ] {
        let response = rest.get(path).await?;
        assert_eq!(response.status().as_u16(), 404, "GET {path}");
        let body: Value = response.json().await.context("JSON error body")?;
        assert!(body["error"].is_string(), "GET {path}: {body}");
    }
    assert_eq!(rest.delete("/api/docs/nope").await?.status().as_u16(), 404);

    // POST creates it.
    let response = rest
        .post("/api/docs/nope/updates", text_update("content", "created"))
        .await?;
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(rest.get("/api/docs/nope").await?.status().as_u16(), 200);
    assert_eq!(rest.text("nope", "content").await?, "created");
    Ok(())
}

#[tokio::test]
async fn health_endpoints_answer_200() -> Result<()> {
    let server = TestServer::start().await?;
    let rest = Rest::new(&server);
    assert_eq!(rest.get("/healthz").await?.status().as_u16(), 200);
    assert_eq!(rest.get("/readyz").await?.status().as_u16(), 200);
    Ok(())
}

#[tokio::test]
async fn snapshots_round_trip_in_every_format() -> Result<()> {
    let server = TestServer::start().await?;
    let writer = server.client("team/minutes").await?;
    write_every_kind(&writer);
    let rest = Rest::new(&server);
    rest.wait_text("team/minutes", "content", "Hello, world")
        .await?;
    let expected = json_of(writer.doc());

    // yjs: applying it to an empty doc reproduces the document.
    let v1 = rest.snapshot("team/minutes", "format=yjs").await?;
    let copy = doc_from_update(&v1)?;
    assert_eq!(json_of(&copy), expected);
    assert_eq!(state_vector(&copy), state_vector(writer.doc()));

    // yjs-v2: the same content in update format v2.
    let v2 = rest.snapshot("team/minutes", "format=yjs-v2").await?;
    let copy = Doc::new();
    copy.transact_mut()
        .apply_update(Update::decode_v2(&v2).context("v2 snapshot decodes")?)?;
    assert_eq!(json_of(&copy), expected);

    // json: every root by its inferred kind.
    let exported: Value =
        serde_json::from_slice(&rest.snapshot("team/minutes", "format=json").await?)?;
    assert_eq!(
        exported,
        json!({
            "content": "Hello, world",
            "meta": {"title": "Minutes", "pages": 3},
            "list": ["one", 2, true],
            "prosemirror": expected["prosemirror"],
        })
    );
    assert_eq!(expected["prosemirror"], "<paragraph>typed text</paragraph>");

    // text: one root.
    assert_eq!(rest.text("team/minutes", "content").await?, "Hello, world");
    assert_eq!(
        rest.text("team/minutes", "prosemirror").await?,
        "<paragraph>typed text</paragraph>"
    );

    // info: name, size and the state vector.
    let info: Value = rest
        .get(&format!("/api/docs/{}", segment("team/minutes")))
        .await?
        .json()
        .await?;
    assert_eq!(info["name"], "team/minutes");
    assert!(info["bytes"].as_u64().unwrap_or(0) > 0, "{info}");
    let sv = decode_sv(info["state_vector"].as_str().context("state_vector")?)?;
    assert_eq!(sv, state_vector(writer.doc()));

    // listing.
    let list: Value = rest.get("/api/docs").await?.json().await?;
    let names: Vec<&str> = list["docs"]
        .as_array()
        .context("docs array")?
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["team/minutes"], "{list}");
    Ok(())
}

#[tokio::test]
async fn a_state_vector_snapshot_holds_only_what_the_holder_lacks() -> Result<()> {
    let server = TestServer::start().await?;
    let writer = server.client("log").await?;
    insert(&writer, "content", 0, "first part. ");
    let rest = Rest::new(&server);
    rest.wait_text("log", "content", "first part. ").await?;

    // A reader that holds the first part...
    let reader = doc_from_update(&rest.snapshot("log", "format=yjs").await?)?;
    let held = state_vector(&reader);

    let len = writer.text("content").len() as u32;
    insert(&writer, "content", len, "second part.");
    rest.wait_text("log", "content", "first part. second part.")
        .await?;

    // ...asks only for the rest, in standard and URL-safe base64.
    let standard = sv_base64(&held);
    let url_safe = base64::engine::general_purpose::URL_SAFE
        .encode(yrs::updates::encoder::Encode::encode_v1(&held));
    let diff = rest
        .snapshot(
            "log",
            &format!("format=yjs&state_vector={}", segment(&standard)),
        )
        .await?;
    let diff_url_safe = rest
        .snapshot("log", &format!("format=yjs&state_vector={url_safe}"))
        .await?;
    assert_eq!(diff, diff_url_safe);
    let full = rest.snapshot("log", "format=yjs").await?;
    ensure!(
        diff.len() < full.len(),
        "the diff is not smaller than the whole"
    );
    // The diff alone does not contain the first part...
    assert_eq!(text_of(&doc_from_update(&diff)?, "content"), "");
    // ...but completes the reader's copy.
    reader
        .transact_mut()
        .apply_update(Update::decode_v1(&diff)?)?;
    assert_eq!(text_of(&reader, "content"), "first part. second part.");
    assert_eq!(state_vector(&reader), state_vector(writer.doc()));

    // An empty state vector asks for everything.
    let everything = rest
        .snapshot(
            "log",
            &format!(
                "state_vector={}",
                segment(&sv_base64(&StateVector::default()))
            ),
        )
        .await?;
    assert_eq!(
        text_of(&doc_from_update(&everything)?, "content"),
        "first part. second part."
    );
    Ok(())
}

#[tokio::test]
async fn a_posted_update_reaches_connected_clients() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.client("inbox").await?;
    let bob = server.client("inbox").await?;
    let response = Rest::new(&server)
        .post(
            "/api/docs/inbox/updates",
            text_update("content", "from REST"),
        )
        .await?;
    assert_eq!(response.status().as_u16(), 204);
    wait_text(&alice, "content", "from REST").await?;
    wait_text(&bob, "content", "from REST").await?;
    Ok(())
}

#[tokio::test]
async fn an_undecodable_posted_update_is_400_and_changes_nothing() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.client("inbox").await?;
    insert(&alice, "content", 0, "kept");
    let rest = Rest::new(&server);
    rest.wait_text("inbox", "content", "kept").await?;
    let before = rest.snapshot("inbox", "format=yjs").await?;

    let mut cut = text_update("content", "half an update");
    cut.truncate(cut.len() / 2);
    for body in [
        vec![0xff, 0xff, 0xff, 0xff, 0x0f],
        b"not an update".to_vec(),
        cut,
    ] {
        let response = rest.post("/api/docs/inbox/updates", body.clone()).await?;
        assert_eq!(response.status().as_u16(), 400, "body {body:?}");
        let error: Value = response.json().await?;
        assert!(error["error"].is_string(), "{error}");
    }
    let after = rest.snapshot("inbox", "format=yjs").await?;
    assert_eq!(
        state_vector(&doc_from_update(&after)?),
        state_vector(&doc_from_update(&before)?)
    );
    assert_eq!(rest.text("inbox", "content").await?, "kept");
    assert_eq!(alice.text("content"), "kept");
    Ok(())
}

#[tokio::test]
async fn deleting_a_document_closes_its_sockets_with_4404_and_then_it_is_gone() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.client("doomed/doc").await?;
    let bob = server.client("doomed/doc").await?;
    let bystander = server.client("other").await?;
    insert(&alice, "content", 0, "short-lived");
    let rest = Rest::new(&server);
    rest.wait_text("doomed/doc", "content", "short-lived")
        .await?;

    let path = format!("/api/docs/{}", segment("doomed/doc"));
    assert_eq!(rest.delete(&path).await?.status().as_u16(), 204);
    for client in [&alice, &bob] {
        let close = client
            .wait_closed(WAIT)
            .await?
            .context("closed without a close frame")?;
        assert_eq!(close.code, 4404, "{close:?}");
    }
    assert_eq!(rest.get(&path).await?.status().as_u16(), 404);
    assert_eq!(
        rest.get(&format!("{path}/snapshot?format=yjs"))
            .await?
            .status()
            .as_u16(),
        404
    );
    // Other documents are untouched.
    assert_eq!(bystander.status(), quire_client::Status::Synced);

    // The name can be used again, starting empty.
    let fresh = server.client("doomed/doc").await?;
    assert_eq!(fresh.text("content"), "");
    Ok(())
}

// ------------------------------------------------------- refusals are JSON

const SECRET: &str = "rest-secret";
const ADMIN: &str = "rest-admin";
/// `--max-message-bytes` of the refusal tests: small, to exceed cheaply.
const BODY_LIMIT: usize = 4096;

/// A request a test sends: method, path, and a body with its content type.
struct Call {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    body: Option<(Option<&'static str>, Vec<u8>)>,
}

impl Call {
    fn get(what: &'static str, path: &'static str) -> Call {
        Call {
            what,
            method: "GET",
            path,
            body: None,
        }
    }

    fn token_request(what: &'static str, body: Value) -> Call {
        Call::post(
            what,
            "/api/tokens",
            Some("application/json"),
            body.to_string().into_bytes(),
        )
    }

    fn post(
        what: &'static str,
        path: &'static str,
        content_type: Option<&'static str>,
        body: Vec<u8>,
    ) -> Call {
        Call {
            what,
            method: "POST",
            path,
            body: Some((content_type, body)),
        }
    }

    fn with_method(what: &'static str, method: &'static str, path: &'static str) -> Call {
        Call {
            what,
            method,
            path,
            body: None,
        }
    }

    async fn send(&self, rest: &Rest) -> Result<reqwest::Response> {
        let mut request = rest.request(self.method.parse()?, self.path);
        if let Some((content_type, body)) = &self.body {
            if let Some(content_type) = content_type {
                request = request.header("content-type", *content_type);
            }
            request = request.body(body.clone());
        }
        Ok(request.send().await?)
    }
}

fn mint(docs: Value, ttl_secs: Value) -> Value {
    json!({"docs": docs, "scope": "read", "ttl_secs": ttl_secs, "sub": "tester"})
}

/// A server with access control and a small body limit, holding `kept`.
async fn refusing_server() -> Result<TestServer> {
    let limit = BODY_LIMIT.to_string();
    let server = TestServer::start_with([
        "--auth-secret",
        SECRET,
        "--admin-token",
        ADMIN,
        "--max-message-bytes",
        limit.as_str(),
    ])
    .await?;
    let created = Rest::with_token(&server, ADMIN)
        .post("/api/docs/kept/updates", text_update("content", "kept"))
        .await?;
    ensure!(
        created.status().as_u16() == 204,
        "creating kept: {created:?}"
    );
    Ok(server)
}

#[tokio::test]
async fn every_refusal_has_its_documented_status_and_a_json_error() -> Result<()> {
    let server = refusing_server().await?;
    let admin = Rest::with_token(&server, ADMIN);
    let update = text_update("content", "fine");
    let cases: Vec<(Call, u16)> = vec![
        // Queries.
        (Call::get("limit below zero", "/api/docs?limit=-1"), 400),
        (Call::get("limit zero", "/api/docs?limit=0"), 400),
        (Call::get("limit past 1000", "/api/docs?limit=1001"), 400),
        (Call::get("limit not a number", "/api/docs?limit=ten"), 400),
        (Call::get("limit twice", "/api/docs?limit=1&limit=2"), 400),
        (
            Call::get(
                "unknown snapshot format",
                "/api/docs/kept/snapshot?format=bogus",
            ),
            400,
        ),
        (
            Call::get("empty snapshot format", "/api/docs/kept/snapshot?format="),
            400,
        ),
        (
            Call::get(
                "text snapshot without root",
                "/api/docs/kept/snapshot?format=text",
            ),
            400,
        ),
        (
            Call::get("unknown feed format", "/api/docs/kept/events?format=bogus"),
            400,
        ),
        // Names.
        (Call::get("a name with a space", "/api/docs/a%20b"), 400),
        (
            Call::get("a '..' segment", "/api/docs/a%2F..%2Fb/snapshot"),
            400,
        ),
        // Token requests.
        (
            Call::post(
                "token request that is not JSON",
                "/api/tokens",
                Some("application/json"),
                b"{\"docs\": [".to_vec(),
            ),
            400,
        ),
        (
            Call::token_request(
                "token request with docs not a list",
                mint(json!("team/*"), json!(60)),
            ),
            400,
        ),
        (
            Call::token_request(
                "token request without scope",
                json!({"docs": ["a"], "ttl_secs": 60, "sub": "tester"}),
            ),
            400,
        ),
        (
            Call::token_request("token request with empty docs", mint(json!([]), json!(60))),
            400,
        ),
        (
            Call::token_request("ttl_secs zero", mint(json!(["a"]), json!(0))),
            400,
        ),
        (
            Call::token_request("ttl_secs negative", mint(json!(["a"]), json!(-60))),
            400,
        ),
        (
            Call::token_request("ttl_secs fractional", mint(json!(["a"]), json!(60.5))),
            400,
        ),
        (
            Call::token_request(
                "ttl_secs past a year",
                mint(json!(["a"]), json!(365 * 24 * 3600 + 1)),
            ),
            400,
        ),
        (
            Call::token_request("ttl_secs past u64", mint(json!(["a"]), json!(1e30))),
            400,
        ),
        (
            Call::post(
                "token request without a content type",
                "/api/tokens",
                None,
                mint(json!(["a"]), json!(60)).to_string().into_bytes(),
            ),
            415,
        ),
        (
            Call::post(
                "token request as text/plain",
                "/api/tokens",
                Some("text/plain"),
                mint(json!(["a"]), json!(60)).to_string().into_bytes(),
            ),
            415,
        ),
        (
            Call::post(
                "token request over the body limit",
                "/api/tokens",
                Some("application/json"),
                mint(json!(["a".repeat(BODY_LIMIT)]), json!(60))
                    .to_string()
                    .into_bytes(),
            ),
            413,
        ),
        // Update bodies.
        (
            Call::post(
                "update that does not decode",
                "/api/docs/kept/updates",
                Some("application/octet-stream"),
                b"random bytes".to_vec(),
            ),
            400,
        ),
        (
            Call::post(
                "update over the body limit",
                "/api/docs/kept/updates",
                Some("application/octet-stream"),
                [update.as_slice(), &vec![0; BODY_LIMIT]].concat(),
            ),
            413,
        ),
        // Routes and methods.
        (Call::get("unknown /api route", "/api/nope"), 404),
        (
            Call::get("unknown route under a document", "/api/docs/kept/nope"),
            404,
        ),
        (
            Call::with_method("PUT on a document", "PUT", "/api/docs/kept"),
            405,
        ),
        (
            Call::with_method("GET of /api/tokens", "GET", "/api/tokens"),
            405,
        ),
        (
            Call::with_method("DELETE of /healthz", "DELETE", "/healthz"),
            405,
        ),
    ];

    let mut wrong = Vec::new();
    for (call, expected) in &cases {
        let response = call.send(&admin).await?;
        let status = response.status().as_u16();
        let content_type = crate::support::content_type(&response);
        let has_request_id = response.headers().contains_key("x-request-id");
        let allow = response.headers().get("allow").cloned();
        let body = response.text().await?;
        let error = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned));
        let mut problems = Vec::new();
        if status != *expected {
            problems.push(format!("status {status}, expected {expected}"));
        }
        if content_type != "application/json" {
            problems.push(format!("content-type {content_type:?}"));
        }
        if error.is_none_or(|e| e.is_empty()) {
            problems.push("no error field".to_owned());
        }
        if !has_request_id {
            problems.push("no x-request-id".to_owned());
        }
        if status == 405 && allow.is_none() {
            problems.push("405 without Allow".to_owned());
        }
        if !problems.is_empty() {
            wrong.push(format!(
                "{} ({} {}): {}; body {body}",
                call.what,
                call.method,
                call.path,
                problems.join(", ")
            ));
        }
    }
    ensure!(
        wrong.is_empty(),
        "wrong refusals:\n  {}",
        wrong.join("\n  ")
    );

    // None of the refused updates changed the document.
    assert_eq!(admin.text("kept", "content").await?, "kept");
    Ok(())
}

#[tokio::test]
async fn the_bounds_themselves_are_accepted() -> Result<()> {
    let server = refusing_server().await?;
    let admin = Rest::with_token(&server, ADMIN);
    for path in ["/api/docs?limit=1", "/api/docs?limit=1000"] {
        assert_eq!(admin.get(path).await?.status().as_u16(), 200, "{path}");
    }
    // JSON Schema's integer is any whole number, 60.0 as much as 60.
    for ttl_secs in [json!(1), json!(365 * 24 * 3600), json!(60.0)] {
        let response = admin
            .post_json("/api/tokens", &mint(json!(["kept"]), ttl_secs.clone()))
            .await?;
        assert_eq!(response.status().as_u16(), 200, "ttl_secs {ttl_secs}");
    }
    Ok(())
}

/// A UUID v4 in its text form: 8-4-4-4-12 hex digits, version nibble 4.
fn is_uuid_v4(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
        && groups[2].starts_with('4')
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_a_given_one() -> Result<()> {
    let server = TestServer::start().await?;
    let rest = Rest::new(&server);
    let mut ids = Vec::new();
    for path in ["/healthz", "/api/docs", "/api/docs/absent", "/api/nope"] {
        let response = rest.get(path).await?;
        let id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .with_context(|| format!("GET {path}: no x-request-id"))?
            .to_owned();
        ensure!(
            is_uuid_v4(&id),
            "GET {path}: x-request-id {id:?} is no UUID v4"
        );
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "request ids repeat: {ids:?}");

    // A proxy's id is kept, so one id follows the request through both logs.
    let response = rest
        .request(reqwest::Method::GET, "/healthz")
        .header("x-request-id", "from-the-proxy-42")
        .send()
        .await?;
    assert_eq!(
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("from-the-proxy-42")
    );
    Ok(())
}
