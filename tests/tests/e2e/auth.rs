//! Access control: HS256 tokens on WebSocket upgrades and REST calls, the
//! admin token, read-only connections, and open mode.
//!
//! Tokens are minted here with `jsonwebtoken` exactly as SPEC describes
//! them (claims `sub`, `docs`, `scope`, `exp`), so the server is tested
//! against the contract rather than against its own minting code.

use crate::support::{
    insert, segment, state_vector, text_update, upgrade_status, upgrade_with, wait_text, Rest, WAIT,
};
use anyhow::{ensure, Context, Result};
use crdt_core::protocol::encode_update;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use quire_client::endpoint::percent_encode;
use quire_client::testing::TestServer;
use quire_client::{Client, RawFrame, RawSocket, Status};
use serde_json::{json, Value};

const SECRET: &str = "e2e-signing-secret";
const ADMIN: &str = "e2e-admin-token";

/// A server with `--auth-secret` and `--admin-token`.
async fn secured() -> Result<TestServer> {
    Ok(TestServer::start_with(["--auth-secret", SECRET, "--admin-token", ADMIN]).await?)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token signed with `secret` (HS256) for `docs` (names or `prefix*`).
fn sign(secret: &str, docs: &[&str], scope: &str, exp: u64) -> String {
    let claims = json!({"sub": "e2e-user", "docs": docs, "scope": scope, "exp": exp});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// A valid token for an hour.
fn token(docs: &[&str], scope: &str) -> String {
    sign(SECRET, docs, scope, now_secs() + 3600)
}

/// `url` with `?token=`.
fn with_token(url: &str, token: &str) -> String {
    format!("{url}?token={}", percent_encode(token))
}

/// A client on `doc` with `token`, synced.
async fn client(server: &TestServer, doc: &str, token: &str) -> Result<Client> {
    let client = Client::connect(server.client_config(doc).token(token)).await?;
    client.wait_synced(WAIT).await?;
    Ok(client)
}

/// Compares every `(what, seen, expected)` and fails listing all mismatches.
fn check_statuses(cases: &[(String, u16, u16)]) -> Result<()> {
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(_, seen, expected)| seen != expected)
        .map(|(what, seen, expected)| format!("{what}: {seen}, expected {expected}"))
        .collect();
    ensure!(
        wrong.is_empty(),
        "wrong statuses:\n  {}",
        wrong.join("\n  ")
    );
    Ok(())
}

#[tokio::test]
async fn websocket_upgrades_need_a_valid_token_for_the_document() -> Result<()> {
    let server = secured().await?;
    let url = server.ws_url("team/notes");
    let expired = sign(SECRET, &["*"], "write", now_secs() - 3600);
    let forged = sign("not-the-server-secret", &["*"], "write", now_secs() + 3600);
    let team = token(&["team/*"], "write");

    let mut cases = Vec::new();
    // No usable token: 401 before the upgrade.
    for (what, url) in [
        ("no token", url.clone()),
        ("a garbage token", with_token(&url, "garbage")),
        ("a forged token", with_token(&url, &forged)),
        ("an expired token", with_token(&url, &expired)),
    ] {
        cases.push((what.to_owned(), upgrade_status(&url).await?, 401));
    }
    // A good token for other documents: 403.
    cases.push((
        "a token for another document".to_owned(),
        upgrade_status(&with_token(&url, &token(&["team/other"], "write"))).await?,
        403,
    ));
    // Exact names and prefixes.
    cases.push((
        "a token naming the document".to_owned(),
        upgrade_status(&with_token(&url, &token(&["team/notes"], "read"))).await?,
        101,
    ));
    for (doc, expected) in [
        ("team/notes", 101),
        ("team/deep/plan", 101),
        ("teamwork", 403),
        ("other", 403),
    ] {
        cases.push((
            format!("team/* token for {doc}"),
            upgrade_status(&with_token(&server.ws_url(doc), &team)).await?,
            expected,
        ));
    }
    // The token may come as `Authorization: Bearer` instead of `?token=`.
    for (what, bearer, expected) in [
        ("Bearer team/* token", team.as_str(), 101),
        ("Bearer garbage", "garbage", 401),
        ("Bearer expired token", expired.as_str(), 401),
    ] {
        let header = format!("Bearer {bearer}");
        let status = upgrade_with(&url, &[("Authorization", &header)])
            .await?
            .status();
        cases.push((what.to_owned(), status, expected));
    }
    check_statuses(&cases)?;

    // A prefix token is a working write token.
    let writer = client(&server, "team/notes", &team).await?;
    insert(&writer, "content", 0, "by prefix");
    Rest::with_token(&server, &team)
        .wait_text("team/notes", "content", "by prefix")
        .await?;
    Ok(())
}

/// Decodes the `varString` at the start of `bytes` (varUint length + UTF-8).
fn var_string(bytes: &[u8]) -> Result<String> {
    let (mut len, mut shift, mut at) = (0usize, 0, 0);
    loop {
        let byte = *bytes.get(at).context("varUint cut short")?;
        len |= usize::from(byte & 0x7f) << shift;
        at += 1;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let rest = &bytes[at..];
    ensure!(
        rest.len() == len,
        "varString of {len} bytes, {} follow",
        rest.len()
    );
    Ok(String::from_utf8(rest.to_vec())?)
}

#[tokio::test]
async fn a_read_only_connection_sees_everything_and_changes_nothing() -> Result<()> {
    let server = secured().await?;
    let write = token(&["shared"], "write");
    let read = token(&["shared"], "read");
    let rest = Rest::with_token(&server, &write);
    let alice = client(&server, "shared", &write).await?;
    insert(&alice, "content", 0, "original");
    rest.wait_text("shared", "content", "original").await?;

    // It receives the document and every later change.
    let reader = client(&server, "shared", &read).await?;
    wait_text(&reader, "content", "original").await?;
    insert(&alice, "content", 8, "!");
    wait_text(&reader, "content", "original!").await?;

    // It may publish presence.
    reader.set_awareness(json!({"user": "reader"})).await?;
    let reader_id = reader.client_id();
    alice
        .wait_for_awareness(WAIT, |states| {
            states.get(&reader_id) == Some(&json!({"user": "reader"}))
        })
        .await
        .context("alice never saw the reader's presence")?;

    // Its edit is answered with permission denied, and it stays connected.
    insert(&reader, "content", 0, "vandalism ");
    reader
        .wait_until("permission denied", WAIT, |c| !c.denied().is_empty())
        .await?;
    assert_eq!(reader.status(), Status::Synced);
    // Alice edits after it: once the reader has her edit, the server has
    // long since handled the reader's own.
    insert(&alice, "content", 0, ">");
    reader
        .wait_for(WAIT, |doc| {
            crate::support::text_of(doc, "content").contains('>')
        })
        .await?;
    assert_eq!(rest.text("shared", "content").await?, ">original!");
    assert_eq!(alice.text("content"), ">original!");
    let server_sv = state_vector(&rest.doc("shared").await?);
    assert_eq!(
        server_sv.get(&reader.doc().client_id()),
        0,
        "the server holds something of the reader's"
    );
    rest.wait_metric(
        "quire_frames_rejected_total",
        &[("reason", "read_only")],
        |n| n >= 1.0,
    )
    .await
    .context("the refused update was not counted")?;

    // On the wire the answer is an auth message: [2, 0, varString reason].
    let mut raw = RawSocket::connect(&with_token(&server.ws_url("shared"), &read)).await?;
    raw.send_binary(encode_update(&text_update("content", "raw vandal")))
        .await?;
    let denied = loop {
        match raw.recv(WAIT).await? {
            RawFrame::Binary(frame) if frame.first() == Some(&2) => break frame,
            RawFrame::Binary(_) => {}
            other => panic!("expected an auth message, got {other:?}"),
        }
    };
    assert_eq!(denied[1], 0, "not permission denied: {denied:?}");
    let reason = var_string(&denied[2..])?;
    ensure!(!reason.is_empty(), "empty reason");
    assert_eq!(rest.text("shared", "content").await?, ">original!");
    Ok(())
}

#[tokio::test]
async fn rest_reads_need_a_token_covering_the_document() -> Result<()> {
    let server = secured().await?;
    let admin = Rest::with_token(&server, ADMIN);
    let created = admin
        .post(
            "/api/docs/report/updates",
            text_update("content", "figures"),
        )
        .await?;
    assert_eq!(created.status().as_u16(), 204);

    let anonymous = Rest::new(&server);
    let garbage = Rest::with_token(&server, "garbage");
    let outsider = Rest::with_token(&server, &token(&["other"], "read"));
    let reader = Rest::with_token(&server, &token(&["report"], "read"));
    let mut cases = Vec::new();
    for path in [
        "/api/docs/report",
        "/api/docs/report/snapshot?format=yjs",
        "/api/docs/report/events",
    ] {
        for (who, rest, expected) in [
            ("without a token", &anonymous, 401),
            ("with a garbage token", &garbage, 401),
            ("with a token for another document", &outsider, 403),
            ("with a read token", &reader, 200),
        ] {
            // The events stream is not read: its status is all that counts.
            let status = rest.get(path).await?.status().as_u16();
            cases.push((format!("GET {path} {who}"), status, expected));
        }
    }
    check_statuses(&cases)?;
    assert_eq!(reader.text("report", "content").await?, "figures");
    Ok(())
}

#[tokio::test]
async fn rest_updates_need_a_write_token() -> Result<()> {
    let server = secured().await?;
    let admin = Rest::with_token(&server, ADMIN);
    let path = "/api/docs/ledger/updates";
    assert_eq!(
        admin
            .post(path, text_update("content", "opening"))
            .await?
            .status()
            .as_u16(),
        204
    );

    let mut cases = Vec::new();
    for (who, rest, expected) in [
        ("without a token", Rest::new(&server), 401),
        (
            "with a garbage token",
            Rest::with_token(&server, "garbage"),
            401,
        ),
        (
            "with a write token for another document",
            Rest::with_token(&server, &token(&["other"], "write")),
            403,
        ),
        (
            "with a read token",
            Rest::with_token(&server, &token(&["ledger"], "read")),
            403,
        ),
    ] {
        let status = rest
            .post(path, text_update("content", "refused "))
            .await?
            .status()
            .as_u16();
        cases.push((format!("POST {path} {who}"), status, expected));
    }
    check_statuses(&cases)?;
    assert_eq!(admin.text("ledger", "content").await?, "opening");

    let writer = Rest::with_token(&server, &token(&["ledger"], "write"));
    let response = writer.post(path, text_update("entries", "first")).await?;
    assert_eq!(response.status().as_u16(), 204);
    writer.wait_text("ledger", "entries", "first").await?;
    assert_eq!(writer.text("ledger", "content").await?, "opening");
    Ok(())
}

#[tokio::test]
async fn deleting_a_document_needs_the_admin_token() -> Result<()> {
    let server = secured().await?;
    let admin = Rest::with_token(&server, ADMIN);
    let path = format!("/api/docs/{}", segment("team/doomed"));
    let recreate = || async {
        let response = admin
            .post(&format!("{path}/updates"), text_update("content", "here"))
            .await?;
        ensure!(
            response.status().as_u16() == 204,
            "recreating: {}",
            response.status()
        );
        anyhow::Ok(())
    };

    let mut cases = Vec::new();
    recreate().await?;
    for (who, rest, expected) in [
        ("without a token", Rest::new(&server), 401),
        (
            "with a garbage token",
            Rest::with_token(&server, "garbage"),
            401,
        ),
        (
            "with a read token",
            Rest::with_token(&server, &token(&["team/*"], "read")),
            403,
        ),
        (
            "with a write token",
            Rest::with_token(&server, &token(&["team/*"], "write")),
            403,
        ),
    ] {
        // None of these may delete it, so each finds the document there.
        let status = rest.delete(&path).await?.status().as_u16();
        cases.push((format!("DELETE {path} {who}"), status, expected));
    }
    check_statuses(&cases)?;
    assert_eq!(admin.text("team/doomed", "content").await?, "here");

    assert_eq!(admin.delete(&path).await?.status().as_u16(), 204);
    assert_eq!(admin.get(&path).await?.status().as_u16(), 404);
    Ok(())
}

#[tokio::test]
async fn the_admin_token_mints_working_tokens() -> Result<()> {
    let server = secured().await?;
    let request = json!({"docs": ["minted/*"], "scope": "write", "ttl_secs": 600, "sub": "bot"});

    let mut cases = Vec::new();
    for (who, rest, expected) in [
        ("without a token", Rest::new(&server), 401),
        (
            "with a garbage token",
            Rest::with_token(&server, "garbage"),
            401,
        ),
        (
            "with a write token",
            Rest::with_token(&server, &token(&["*"], "write")),
            403,
        ),
    ] {
        let status = rest
            .post_json("/api/tokens", &request)
            .await?
            .status()
            .as_u16();
        cases.push((format!("POST /api/tokens {who}"), status, expected));
    }
    check_statuses(&cases)?;

    let response = Rest::with_token(&server, ADMIN)
        .post_json("/api/tokens", &request)
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await?;
    let minted = body["token"].as_str().context("no token in the answer")?;

    // It carries what was asked for, signed with the server's secret.
    let claims = jsonwebtoken::decode::<Value>(
        minted,
        &DecodingKey::from_secret(SECRET.as_bytes()),
        &Validation::new(Algorithm::HS256),
    )?
    .claims;
    assert_eq!(claims["sub"], "bot");
    assert_eq!(claims["scope"], "write");
    assert_eq!(claims["docs"], json!(["minted/*"]));
    let exp = claims["exp"].as_u64().context("exp")?;
    ensure!(
        exp.abs_diff(now_secs() + 600) < 120,
        "exp {exp} is not about ten minutes from now"
    );

    // It works, for what it covers only.
    let bot = client(&server, "minted/log", minted).await?;
    insert(&bot, "content", 0, "beep");
    let rest = Rest::with_token(&server, minted);
    rest.wait_text("minted/log", "content", "beep").await?;
    assert_eq!(
        upgrade_status(&with_token(&server.ws_url("elsewhere"), minted)).await?,
        403
    );
    Ok(())
}

#[tokio::test]
async fn a_prefix_token_lists_only_the_documents_it_covers() -> Result<()> {
    let server = secured().await?;
    let admin = Rest::with_token(&server, ADMIN);
    for name in ["team/a", "team/b", "teamwork", "other"] {
        let path = format!("/api/docs/{}/updates", segment(name));
        let response = admin.post(&path, text_update("content", name)).await?;
        assert_eq!(response.status().as_u16(), 204, "creating {name}");
    }
    let names = |list: &Value| -> Vec<String> {
        list["docs"]
            .as_array()
            .map(|docs| {
                docs.iter()
                    .filter_map(|d| d["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };

    let team = Rest::with_token(&server, &token(&["team/*"], "read"));
    for query in ["", "?prefix=team/", "?prefix=t"] {
        let response = team.get(&format!("/api/docs{query}")).await?;
        assert_eq!(response.status().as_u16(), 200, "GET /api/docs{query}");
        let list: Value = response.json().await?;
        assert_eq!(names(&list), ["team/a", "team/b"], "GET /api/docs{query}");
    }
    assert_eq!(
        team.get("/api/docs?prefix=other").await?.status().as_u16(),
        403,
        "a prefix the token grants nothing under"
    );
    assert_eq!(
        Rest::new(&server).get("/api/docs").await?.status().as_u16(),
        401
    );

    let all: Value = admin.get("/api/docs").await?.json().await?;
    assert_eq!(names(&all), ["other", "team/a", "team/b", "teamwork"]);
    Ok(())
}

#[tokio::test]
async fn open_mode_lets_everything_through() -> Result<()> {
    // No --auth-secret, no --admin-token.
    let server = TestServer::start().await?;
    let rest = Rest::new(&server);

    assert_eq!(upgrade_status(&server.ws_url("public")).await?, 101);
    let alice = server.client("public").await?;
    insert(&alice, "content", 0, "anyone may write");
    rest.wait_text("public", "content", "anyone may write")
        .await?;

    let mut cases = Vec::new();
    for path in [
        "/api/docs",
        "/api/docs/public",
        "/api/docs/public/snapshot?format=yjs",
        "/api/docs/public/events",
    ] {
        let status = rest.get(path).await?.status().as_u16();
        cases.push((format!("GET {path}"), status, 200));
    }
    let status = rest
        .post("/api/docs/public/updates", text_update("posted", "by REST"))
        .await?
        .status()
        .as_u16();
    cases.push(("POST /api/docs/public/updates".to_owned(), status, 204));
    check_statuses(&cases)?;
    wait_text(&alice, "posted", "by REST").await?;

    assert_eq!(
        rest.delete("/api/docs/public").await?.status().as_u16(),
        204
    );
    let close = alice
        .wait_closed(WAIT)
        .await?
        .context("deleting closed no socket")?;
    assert_eq!(close.code, 4404);
    Ok(())
}
