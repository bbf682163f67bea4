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
