//! Version history: versions recorded while clients type, exports of a
//! version equal to the document as it was then, restores that reach every
//! client and are versions themselves, diffs, and token scopes.

use crate::support::{append, doc_from_update, text_of, wait_text, Rest, WAIT};
use anyhow::{ensure, Context, Result};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use quire_client::testing::TestServer;
use quire_client::Client;
use serde_json::{json, Value};

const DOC: &str = "history-doc";

async fn clients(server: &TestServer, n: usize) -> Result<Vec<Client>> {
    let mut clients = Vec::new();
    for _ in 0..n {
        let client = Client::connect(server.client_config(DOC)).await?;
        client.wait_synced(WAIT).await?;
        clients.push(client);
    }
    Ok(clients)
}

async fn converge(clients: &[Client], root: &str, expected: &str) -> Result<()> {
    for client in clients {
        wait_text(client, root, expected).await?;
    }
    Ok(())
}

/// The versions of `DOC`, newest first.
async fn versions(rest: &Rest) -> Result<Vec<Value>> {
    let response = rest.get(&format!("/api/docs/{DOC}/versions")).await?;
    ensure!(response.status() == 200, "list: {}", response.status());
    let body: Value = response.json().await?;
    Ok(body["versions"].as_array().cloned().unwrap_or_default())
}

/// Waits until `DOC` has `n` versions.
async fn wait_versions(rest: &Rest, n: usize) -> Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let listed = versions(rest).await?;
        if listed.len() >= n {
            return Ok(listed);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{} versions, waited for {n}",
            listed.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn version_text(rest: &Rest, id: u64, root: &str) -> Result<String> {
    let response = rest
        .get(&format!(
            "/api/docs/{DOC}/versions/{id}/snapshot?format=text&root={root}"
        ))
        .await?;
    ensure!(
        response.status() == 200,
        "text of {id}: {}",
        response.status()
    );
    Ok(response.text().await?)
}

/// Waits until the server's copy of text `root` of `DOC` is `expected`.
async fn wait_server_text(rest: &Rest, root: &str, expected: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = rest
            .get(&format!("/api/docs/{DOC}/snapshot?format=text&root={root}"))
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if status == 200 && text == expected {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "server text is {status} {text:?}, waited for {expected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// POSTs and expects 201 with a version.
async fn post_version(rest: &Rest, path: &str, body: Option<Value>) -> Result<Value> {
    let response = match body {
        Some(body) => rest.post_json(path, &body).await?,
        None => rest.post(path, Vec::new()).await?,
    };
    let status = response.status();
    let body: Value = response.json().await.context("JSON body")?;
    ensure!(status == 201, "POST {path}: {status} {body}");
    Ok(body)
}

#[tokio::test]
async fn versions_recorded_while_three_clients_type_export_the_document_as_it_was_then(
) -> Result<()> {
    let server = TestServer::start_with(["--history-quiet-secs", "1"]).await?;
    let rest = Rest::new(&server);
    let clients = clients(&server, 3).await?;
    let mut expected = String::new();
    // What a client saw when each burst of typing went quiet.
    let mut copies = Vec::new();
    for round in 0..3 {
        for (i, client) in clients.iter().enumerate() {
            let chunk = format!("[r{round}c{i}]");
            append(client, "t", &chunk);
            expected.push_str(&chunk);
        }
        // Appends race: wait until everyone agrees, then take a copy.
        clients[0]
            .wait_for(WAIT, |doc| text_of(doc, "t").len() == expected.len())
            .await?;
        let now = clients[0].text("t");
        converge(&clients, "t", &now).await?;
        copies.push((now, clients[0].encode_state()));
        wait_versions(&rest, round + 1).await?;
    }
    let listed = versions(&rest).await?;
    assert_eq!(listed.len(), 3, "{listed:?}");
    for (version, (text, _)) in listed.iter().rev().zip(&copies) {
        assert_eq!(version["trigger"], "auto", "{version}");
        assert_eq!(version["clients"], 3, "{version}");
        assert!(version["size"].as_u64().is_some_and(|s| s > 0), "{version}");
        let id = version["id"].as_u64().context("id")?;
        assert_eq!(&version_text(&rest, id, "t").await?, text, "version {id}");
        let json: Value = rest
            .get(&format!(
                "/api/docs/{DOC}/versions/{id}/snapshot?format=json"
            ))
            .await?
            .json()
            .await?;
        assert_eq!(json, json!({ "t": text }), "version {id}");
        for format in ["yjs", "yjs-v2"] {
            let bytes = rest
                .get(&format!(
                    "/api/docs/{DOC}/versions/{id}/snapshot?format={format}"
                ))
                .await?
                .bytes()
                .await?;
            let doc = if format == "yjs" {
                doc_from_update(&bytes)?
            } else {
                let doc = yrs::Doc::new();
                use yrs::updates::decoder::Decode;
                use yrs::Transact;
                doc.transact_mut()
                    .apply_update(yrs::Update::decode_v2(&bytes)?)?;
                doc
            };
            assert_eq!(&text_of(&doc, "t"), text, "version {id} as {format}");
        }
    }
    // Newest first, ids growing.
    let ids: Vec<u64> = listed.iter().filter_map(|v| v["id"].as_u64()).collect();
    assert_eq!(ids, vec![3, 2, 1]);
    Ok(())
}

#[tokio::test]
async fn a_restore_reaches_every_client_and_a_fresh_one_and_is_a_version_that_can_be_undone(
) -> Result<()> {
    let server = TestServer::start().await?;
    let rest = Rest::new(&server);
    let clients = clients(&server, 3).await?;
    append(&clients[0], "t", "the first draft");
    converge(&clients, "t", "the first draft").await?;
    let v1 = post_version(
        &rest,
        &format!("/api/docs/{DOC}/versions"),
        Some(json!({ "label": "draft" })),
    )
    .await?;
    assert_eq!(v1["label"], "draft");
    assert_eq!(v1["trigger"], "manual");
    let v1 = v1["id"].as_u64().context("id")?;

    append(&clients[1], "t", ", then rewritten");
    converge(&clients, "t", "the first draft, then rewritten").await?;
    let v2 = post_version(&rest, &format!("/api/docs/{DOC}/versions"), None).await?;
    assert_eq!(v2["label"], Value::Null);
    let v2 = v2["id"].as_u64().context("id")?;

    let diff: Value = rest
        .get(&format!("/api/docs/{DOC}/versions/{v1}/diff/{v2}?root=t"))
        .await?
        .json()
        .await?;
    assert_eq!(
        diff["runs"],
        json!([
            { "op": "equal", "text": "the first draft" },
            { "op": "insert", "text": ", then rewritten" },
        ]),
        "{diff}"
    );

    let restored = post_version(
        &rest,
        &format!("/api/docs/{DOC}/versions/{v1}/restore"),
        None,
    )
    .await?;
    assert_eq!(restored["trigger"], "restore");
    converge(&clients, "t", "the first draft").await?;
    let fresh = Client::connect(server.client_config(DOC)).await?;
    fresh.wait_synced(WAIT).await?;
    wait_text(&fresh, "t", "the first draft").await?;
    let live: Value = rest
        .get(&format!("/api/docs/{DOC}/versions/{v2}/diff/live?root=t"))
        .await?
        .json()
        .await?;
    assert_eq!(
        live["runs"],
        json!([
            { "op": "equal", "text": "the first draft" },
            { "op": "delete", "text": ", then rewritten" },
        ]),
        "{live}"
    );

    // Undo: back to what was there before the restore.
    post_version(
        &rest,
        &format!("/api/docs/{DOC}/versions/{v2}/restore"),
        None,
    )
    .await?;
    converge(&clients, "t", "the first draft, then rewritten").await?;
    wait_text(&fresh, "t", "the first draft, then rewritten").await?;
    // And the restore's own version brings the restored state back.
    let restore_id = restored["id"].as_u64().context("id")?;
    assert_eq!(
        version_text(&rest, restore_id, "t").await?,
        "the first draft"
    );
    post_version(
        &rest,
        &format!("/api/docs/{DOC}/versions/{restore_id}/restore"),
        None,
    )
    .await?;
    converge(&clients, "t", "the first draft").await?;
    // Clients keep editing on top of a restore.
    append(&clients[2], "t", "!");
    converge(&clients, "t", "the first draft!").await?;
    Ok(())
}

#[tokio::test]
async fn version_routes_answer_json_errors_for_what_does_not_exist() -> Result<()> {
    let server = TestServer::start().await?;
    let rest = Rest::new(&server);
    let client = Client::connect(server.client_config(DOC)).await?;
    client.wait_synced(WAIT).await?;
    append(&client, "t", "x");
    wait_server_text(&rest, "t", "x").await?;
    let v = post_version(&rest, &format!("/api/docs/{DOC}/versions"), None).await?;
    let id = v["id"].as_u64().context("id")?;
    let cases: Vec<(String, u16)> = vec![
        ("/api/docs/absent/versions".into(), 404),
        (format!("/api/docs/{DOC}/versions/99/snapshot"), 404),
        (format!("/api/docs/{DOC}/versions/0/snapshot"), 400),
        (format!("/api/docs/{DOC}/versions/x/snapshot"), 400),
        (
            format!("/api/docs/{DOC}/versions/{id}/snapshot?format=text"),
            400,
        ),
        (
            format!("/api/docs/{DOC}/versions/{id}/snapshot?format=text&root=nope"),
            404,
        ),
        (format!("/api/docs/{DOC}/versions/{id}/diff/live"), 400),
        (format!("/api/docs/{DOC}/versions/{id}/diff/99?root=t"), 404),
        (
            format!("/api/docs/{DOC}/versions/{id}/diff/live?root=t"),
            200,
        ),
    ];
    for (path, status) in cases {
        let response = rest.get(&path).await?;
        assert_eq!(response.status().as_u16(), status, "GET {path}");
        if status != 200 {
            let body: Value = response.json().await.context("JSON error")?;
            assert!(body["error"].is_string(), "GET {path}: {body}");
        }
    }
    for (body, status) in [
        (json!({ "label": "" }), 400),
        (json!({ "label": 7 }), 400),
        (json!({ "label": null }), 400),
        (json!([]), 400),
    ] {
        let response = rest
            .post_json(&format!("/api/docs/{DOC}/versions"), &body)
            .await?;
        assert_eq!(response.status().as_u16(), status, "POST {body}");
    }
    let restore = rest
        .post(&format!("/api/docs/{DOC}/versions/99/restore"), Vec::new())
        .await?;
    assert_eq!(restore.status().as_u16(), 404);
    Ok(())
}

const SECRET: &str = "history-secret";
const ADMIN: &str = "history-admin";

fn token(scope: &str) -> String {
    token_for("reader", scope)
}

fn token_for(sub: &str, scope: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let claims = json!({ "sub": sub, "docs": [DOC], "scope": scope, "exp": exp });
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

#[tokio::test]
async fn a_read_token_lists_and_exports_versions_but_cannot_record_or_restore() -> Result<()> {
    let server = TestServer::start_with(["--auth-secret", SECRET, "--admin-token", ADMIN]).await?;
    let writer = Client::connect(server.client_config(DOC).token(token("write"))).await?;
    writer.wait_synced(WAIT).await?;
    append(&writer, "t", "signed");
    let admin = Rest::with_token(&server, ADMIN);
    wait_server_text(&admin, "t", "signed").await?;
    let v = post_version(&admin, &format!("/api/docs/{DOC}/versions"), None).await?;
    let id = v["id"].as_u64().context("id")?;

    let reader = Rest::with_token(&server, &token("read"));
    assert_eq!(versions(&reader).await?.len(), 1);
    assert_eq!(version_text(&reader, id, "t").await?, "signed");
    let diff = reader
        .get(&format!("/api/docs/{DOC}/versions/{id}/diff/live?root=t"))
        .await?;
    assert_eq!(diff.status().as_u16(), 200);
    for path in [
        format!("/api/docs/{DOC}/versions"),
        format!("/api/docs/{DOC}/versions/{id}/restore"),
    ] {
        let response = reader.post(&path, Vec::new()).await?;
        assert_eq!(response.status().as_u16(), 403, "POST {path}");
        let body: Value = response.json().await?;
        assert!(body["error"].is_string());
    }
    let anonymous = Rest::new(&server);
    let response = anonymous.get(&format!("/api/docs/{DOC}/versions")).await?;
    assert_eq!(response.status().as_u16(), 401);

    let writer_rest = Rest::with_token(&server, &token("write"));
    post_version(
        &writer_rest,
        &format!("/api/docs/{DOC}/versions/{id}/restore"),
        None,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_version_says_who_was_connected_as_their_tokens_name_them() -> Result<()> {
    let server = TestServer::start_with(["--auth-secret", SECRET, "--admin-token", ADMIN]).await?;
    let mut connected = Vec::new();
    for (sub, scope) in [("bob", "read"), ("ada", "write"), ("ada", "write")] {
        let client =
            Client::connect(server.client_config(DOC).token(token_for(sub, scope))).await?;
        client.wait_synced(WAIT).await?;
        connected.push(client);
    }
    append(&connected[1], "t", "together");
    let admin = Rest::with_token(&server, ADMIN);
    wait_server_text(&admin, "t", "together").await?;
    let v = post_version(&admin, &format!("/api/docs/{DOC}/versions"), None).await?;
    assert_eq!(v["users"], json!(["ada", "bob"]), "{v}");
    assert_eq!(v["clients"], 3, "{v}");
    let listed = versions(&admin).await?;
    assert_eq!(listed[0]["users"], json!(["ada", "bob"]), "{listed:?}");
    Ok(())
}

#[tokio::test]
async fn a_document_leaving_memory_records_a_version_and_deleting_it_deletes_its_versions(
) -> Result<()> {
    let server = TestServer::start_with(["--idle-unload-secs", "1"]).await?;
    let rest = Rest::new(&server);
    let mut client = Client::connect(server.client_config(DOC)).await?;
    client.wait_synced(WAIT).await?;
    append(&client, "t", "before leaving");
    wait_server_text(&rest, "t", "before leaving").await?;
    client.disconnect().await?;
    let listed = wait_versions(&rest, 1).await?;
    assert_eq!(listed[0]["trigger"], "unload", "{listed:?}");
    // Open mode: nobody is named.
    assert_eq!(listed[0]["users"], json!([]), "{listed:?}");
    let id = listed[0]["id"].as_u64().context("id")?;
    assert_eq!(version_text(&rest, id, "t").await?, "before leaving");

    let deleted = rest.delete(&format!("/api/docs/{DOC}")).await?;
    assert_eq!(deleted.status().as_u16(), 204);
    let created = rest
        .post(
            &format!("/api/docs/{DOC}/updates"),
            crate::support::text_update("t", "anew"),
        )
        .await?;
    assert_eq!(created.status().as_u16(), 204);
    assert!(versions(&rest).await?.is_empty());
    let gone = rest
        .get(&format!("/api/docs/{DOC}/versions/{id}/snapshot"))
        .await?;
    assert_eq!(gone.status().as_u16(), 404);
    Ok(())
}
