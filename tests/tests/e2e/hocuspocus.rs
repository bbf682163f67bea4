//! The Hocuspocus dialect (`/hocuspocus`, bare `/ws`) against the real
//! binary, frame by frame, with the raw client of `quire_client::hocuspocus`.
//! The rules are those of the reference's §4; its H13 robustness cases are
//! here too. The real `@hocuspocus/provider` runs in `tests/interop`.

use crate::support::{metric, text_of, text_update, upgrade_with, HandClient, Rest, WAIT};
use anyhow::{bail, ensure, Context, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use quire_client::hocuspocus::{Heard, HocuspocusSocket, ServerMsg};
use quire_client::testing::TestServer;
use serde_json::json;
use std::time::Duration;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact, Update};

const SECRET: &str = "hocuspocus-secret";
const ADMIN: &str = "hocuspocus-admin";
const V4: Option<&str> = Some("4.8.0");

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sign(docs: &[&str], scope: &str, exp: u64) -> String {
    let claims = json!({"sub": "hp-user", "docs": docs, "scope": scope, "exp": exp});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

fn token(docs: &[&str], scope: &str) -> String {
    sign(docs, scope, now_secs() + 3600)
}

async fn secured(extra: &[&str]) -> Result<TestServer> {
    let mut args = vec!["--auth-secret", SECRET, "--admin-token", ADMIN];
    args.extend_from_slice(extra);
    Ok(TestServer::start_with(args).await?)
}

async fn socket(server: &TestServer) -> Result<HocuspocusSocket> {
    Ok(HocuspocusSocket::connect(&format!("{}/hocuspocus", server.ws_address())).await?)
}

fn empty_sv() -> Vec<u8> {
    StateVector::default().encode_v1()
}

/// What a provider sends on open: Auth, SyncStep1 (empty), awareness with
/// clock 0 (ignored by the server, by design); then the answer up to and
/// including the server's SyncStep2, which must come in the reference's
/// order. Returns the server's SyncStep2 update.
async fn handshake(
    hp: &mut HocuspocusSocket,
    address: &str,
    token: &str,
    scope: &str,
) -> Result<Vec<u8>> {
    hp.auth(address, token, V4).await?;
    hp.sync_step1(address, &empty_sv()).await?;
    hp.awareness(address, &awareness(7, 0, "{}")).await?;
    let first = next_for(hp, address).await?;
    ensure!(
        first == ServerMsg::Authenticated(scope.into()),
        "the first frame for {address:?} is {first:?}"
    );
    let (step1, _) = hp
        .until(address, WAIT, |m| !matches!(m, ServerMsg::Awareness(_)))
        .await?;
    ensure!(matches!(step1, ServerMsg::SyncStep1(_)), "then {step1:?}");
    let step2 = next_for(hp, address).await?;
    match step2 {
        ServerMsg::SyncStep2(update) => Ok(update),
        other => bail!("the server's SyncStep2 expected, got {other:?}"),
    }
}

/// The next message for `address`; nothing for another address may come
/// in between.
async fn next_for(hp: &mut HocuspocusSocket, address: &str) -> Result<ServerMsg> {
    match hp.recv(WAIT).await? {
        Heard::Frame {
            address: a,
            message,
        } if a == address => Ok(message),
        other => bail!("expected a frame for {address:?}, got {other:?}"),
    }
}

/// Sends SyncStep1 and reads up to its answer: everything the server
/// queued for `address` before it comes first, so this is how a test
/// knows it has heard all of it. Returns the messages for `address` read
/// before the answer.
async fn barrier(hp: &mut HocuspocusSocket, address: &str) -> Result<Vec<ServerMsg>> {
    hp.sync_step1(address, &empty_sv()).await?;
    let (_, before) = hp
        .until(address, WAIT, |m| matches!(m, ServerMsg::SyncStep1(_)))
        .await?;
    let answer = next_for(hp, address).await?;
    ensure!(matches!(answer, ServerMsg::SyncStep2(_)), "then {answer:?}");
    Ok(before
        .into_iter()
        .filter_map(|h| match h {
            Heard::Frame {
                address: a,
                message,
            } if a == address => Some(message),
            _ => None,
        })
        .collect())
}

fn acks(messages: &[ServerMsg]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            ServerMsg::SyncStatus(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// A y-protocols awareness update with one client's state.
fn awareness(client: u64, clock: u64, state: &str) -> Vec<u8> {
    let mut w = crdt_core::wire::Writer::default();
    w.write_var_u64(1);
    w.write_var_u64(client);
    w.write_var_u64(clock);
    w.write_var_string(state);
    w.into_inner()
}

/// The states of an awareness update, as (client, JSON text).
fn awareness_states(update: &[u8]) -> Result<Vec<(u64, String)>> {
    let mut r = crdt_core::wire::Reader::new(update);
    let count = r.read_var_u64("count")?;
    let mut states = Vec::new();
    for _ in 0..count {
        let client = r.read_var_u64("client")?;
        let _clock = r.read_var_u64("clock")?;
        states.push((client, r.read_var_string("state")?.to_owned()));
    }
    Ok(states)
}

fn text_in(update: &[u8], root: &str) -> Result<String> {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(update)?)?;
    Ok(text_of(&doc, root))
}

#[tokio::test]
async fn a_provider_authenticates_syncs_and_gets_exactly_one_ack_per_update() -> Result<()> {
    let server = TestServer::start().await?;
    let rest = Rest::new(&server);
    rest.post("/api/docs/hp%2Fa/updates", text_update("content", "seeded"))
        .await?;
    let mut hp = socket(&server).await?;
    let state = handshake(&mut hp, "hp/a", "", "read-write").await?;
    assert_eq!(
        text_in(&state, "content")?,
        "seeded",
        "REST content is synced"
    );

    // The provider's answer to the server's SyncStep1 is acknowledged once.
    hp.sync_step2("hp/a", &[0, 0]).await?;
    assert_eq!(next_for(&mut hp, "hp/a").await?, ServerMsg::SyncStatus(1));

    // Three updates, three acks, and no unsolicited SyncStep1 in between.
    for chunk in ["one ", "two ", "three "] {
        hp.update("hp/a", &text_update("edits", chunk)).await?;
    }
    let heard = barrier(&mut hp, "hp/a").await?;
    assert_eq!(acks(&heard), vec![1, 1, 1], "heard {heard:?}");
    ensure!(
        !heard.iter().any(|m| matches!(m, ServerMsg::SyncStep1(_))),
        "a SyncStep1 nobody asked for: {heard:?}"
    );
    let edits = rest.text("hp/a", "edits").await?;
    assert_eq!(
        edits.len(),
        "one two three ".len(),
        "all applied: {edits:?}"
    );

    // The bare /ws speaks the same dialect.
    for path in ["/ws", "/ws/"] {
        let url = format!("{}{path}", server.ws_address());
        let mut bare = HocuspocusSocket::connect(&url).await?;
        let state = handshake(&mut bare, "hp/a", "", "read-write").await?;
        assert_eq!(text_in(&state, "edits")?, edits, "{path}");
    }
    Ok(())
}

#[tokio::test]
async fn a_read_only_session_is_acknowledged_only_for_what_the_document_holds() -> Result<()> {
    let server = secured(&[]).await?;
    let writer = Rest::with_token(&server, ADMIN);
    // A document with a deletion: the delete set a synced client sends back.
    let doc = Doc::new();
    let text = doc.get_or_insert_text("content");
    text.insert(&mut doc.transact_mut(), 0, "hello world");
    text.remove_range(&mut doc.transact_mut(), 0, 6);
    let whole = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    writer.post("/api/docs/ro/updates", whole.clone()).await?;
    let only_deletions = doc
        .transact()
        .encode_state_as_update_v1(&doc.transact().state_vector());

    let mut hp = socket(&server).await?;
    handshake(&mut hp, "ro", &token(&["ro"], "read"), "readonly").await?;
    hp.sync_step2("ro", &only_deletions).await?;
    hp.sync_step2("ro", &whole).await?;
    hp.sync_step2("ro", &text_update("content", "new")).await?;
    hp.update("ro", &text_update("content", "sneaky")).await?;
    let heard = barrier(&mut hp, "ro").await?;
    // The read-only Update's 0 is the socket's own answer, which need not
    // come after the document's answers to the SyncStep2s: only the count
    // of 1s moves a provider.
    let mut got = acks(&heard);
    got.sort_unstable();
    assert_eq!(
        got,
        vec![0, 0, 1, 1],
        "held delete set: 1, held state: 1, new SyncStep2: 0, any Update: 0; {heard:?}"
    );
    hp.sync_step2("ro", &only_deletions).await?;
    assert_eq!(
        acks(&barrier(&mut hp, "ro").await?),
        vec![1],
        "the delete set alone"
    );
    assert_eq!(writer.text("ro", "content").await?, "world");
    Ok(())
}

#[tokio::test]
async fn one_socket_carries_several_documents_each_with_its_own_content() -> Result<()> {
    let server = TestServer::start().await?;
    let rest = Rest::new(&server);
    rest.post("/api/docs/m%2F1/updates", text_update("content", "first"))
        .await?;
    rest.post("/api/docs/m%2F2/updates", text_update("content", "second"))
        .await?;
    let mut hp = socket(&server).await?;
    let one = handshake(&mut hp, "m/1", "", "read-write").await?;
    let two = handshake(&mut hp, "m/2", "", "read-write").await?;
    assert_eq!(text_in(&one, "content")?, "first");
    assert_eq!(text_in(&two, "content")?, "second");

    hp.update("m/2", &text_update("more", "only in two"))
        .await?;
    assert_eq!(acks(&barrier(&mut hp, "m/2").await?), vec![1]);
    assert_eq!(rest.text("m/2", "more").await?, "only in two");
    assert_eq!(text_of(&rest.doc("m/1").await?, "more"), "");

    rest.wait_metric("quire_connections", &[("protocol", "hocuspocus")], |n| {
        n == 1.0
    })
    .await?;
    rest.wait_metric("quire_sessions", &[("protocol", "hocuspocus")], |n| {
        n == 2.0
    })
    .await?;

    // A v4 provider with sessionAwareness: its address is echoed exactly.
    let address = "m/1\u{0}1lf4wtu9hf3";
    handshake(&mut hp, address, "", "read-write").await?;
    hp.update(address, &text_update("more", "via session"))
        .await?;
    assert_eq!(acks(&barrier(&mut hp, address).await?), vec![1]);
    assert_eq!(rest.text("m/1", "more").await?, "via session");
    Ok(())
}

#[tokio::test]
async fn hocuspocus_and_y_websocket_clients_edit_one_document_together() -> Result<()> {
    let server = TestServer::start().await?;
    let yws = server.client("shared").await?;
    yws.wait_synced(WAIT).await?;
    yws.set_awareness(json!({"user": "yws"})).await?;
    let mut hp = socket(&server).await?;
    hp.auth("shared", "", V4).await?;
    hp.sync_step1("shared", &empty_sv()).await?;
    // Presence of the y-websocket client comes right after Authenticated.
    assert_eq!(
        next_for(&mut hp, "shared").await?,
        ServerMsg::Authenticated("read-write".into())
    );
    let (presence, _) = hp
        .until("shared", WAIT, |m| matches!(m, ServerMsg::Awareness(_)))
        .await?;
    let ServerMsg::Awareness(presence) = presence else {
        unreachable!()
    };
    assert_eq!(
        awareness_states(&presence)?,
        vec![(yws.client_id(), r#"{"user":"yws"}"#.to_owned())]
    );

    // Hocuspocus → y-websocket.
    hp.update("shared", &text_update("content", "from hp"))
        .await?;
    yws.wait_for(WAIT, |doc| text_of(doc, "content") == "from hp")
        .await?;
    // y-websocket → Hocuspocus.
    let text = yws.doc().get_or_insert_text("content");
    text.insert(&mut yws.doc().transact_mut(), 0, "yws ");
    let (update, _) = hp
        .until("shared", WAIT, |m| matches!(m, ServerMsg::Update(_)))
        .await?;
    let ServerMsg::Update(update) = update else {
        unreachable!()
    };
    ensure!(!update.is_empty());
    // Hocuspocus presence → y-websocket, and back to its sender.
    hp.awareness("shared", &awareness(4242, 1, r#"{"user":"hp"}"#))
        .await?;
    yws.wait_for_awareness(WAIT, |states| states.contains_key(&4242))
        .await?;
    let (echo, _) = hp
        .until("shared", WAIT, |m| {
            matches!(m, ServerMsg::Awareness(u) if awareness_states(u).is_ok_and(|s| s.iter().any(|(c, _)| *c == 4242)))
        })
        .await?;
    ensure!(matches!(echo, ServerMsg::Awareness(_)));
    Ok(())
}

#[tokio::test]
async fn a_denied_document_leaves_the_others_on_the_socket_working() -> Result<()> {
    let server = secured(&[]).await?;
    let mut hp = socket(&server).await?;
    let only_ok = token(&["ok"], "write");
    hp.auth("secret", &only_ok, V4).await?;
    match next_for(&mut hp, "secret").await? {
        ServerMsg::PermissionDenied(reason) => ensure!(!reason.is_empty()),
        other => bail!("expected a denial, got {other:?}"),
    }
    handshake(&mut hp, "ok", &only_ok, "read-write").await?;
    hp.update("ok", &text_update("content", "fine")).await?;
    assert_eq!(acks(&barrier(&mut hp, "ok").await?), vec![1]);

    // A later Auth on the denied address, with a token that covers it.
    handshake(
        &mut hp,
        "secret",
        &token(&["secret"], "write"),
        "read-write",
    )
    .await?;
    // Names Quire does not accept are denied, not a socket close.
    hp.auth("not a name", "", None).await?;
    assert_eq!(
        next_for(&mut hp, "not a name").await?,
        ServerMsg::PermissionDenied("invalid document name".into())
    );
    hp.update("ok", &text_update("content", "still ")).await?;
    assert_eq!(acks(&barrier(&mut hp, "ok").await?), vec![1]);
    Ok(())
}

#[tokio::test]
async fn sessions_past_the_per_socket_cap_are_denied() -> Result<()> {
    let server = TestServer::start_with(["--hocuspocus-max-sessions", "2"]).await?;
    let mut hp = socket(&server).await?;
    handshake(&mut hp, "c/1", "", "read-write").await?;
    handshake(&mut hp, "c/2", "", "read-write").await?;
    hp.auth("c/3", "", V4).await?;
    assert_eq!(
        next_for(&mut hp, "c/3").await?,
        ServerMsg::PermissionDenied("too many documents on this socket".into())
    );
    // One closes: there is room again.
    hp.close_document("c/1").await?;
    handshake(&mut hp, "c/3", "", "read-write").await?;
    Ok(())
}

#[tokio::test]
async fn a_token_refresh_that_fails_closes_only_that_document() -> Result<()> {
    let server = secured(&[]).await?;
    let mut hp = socket(&server).await?;
    handshake(&mut hp, "t/1", &token(&["t/*"], "write"), "read-write").await?;
    handshake(&mut hp, "t/2", &token(&["t/*"], "write"), "read-write").await?;
    // A good refresh changes nothing.
    hp.auth("t/1", &token(&["t/1"], "write"), V4).await?;
    hp.update("t/1", &text_update("content", "x")).await?;
    assert_eq!(acks(&barrier(&mut hp, "t/1").await?), vec![1]);
    // A refresh with a token for other documents ends the session.
    hp.auth("t/1", &token(&["elsewhere"], "write"), V4).await?;
    match next_for(&mut hp, "t/1").await? {
        ServerMsg::Close(reason) => ensure!(reason.contains("elsewhere") || !reason.is_empty()),
        other => bail!("expected CLOSE, got {other:?}"),
    }
    hp.update("t/2", &text_update("content", "y")).await?;
    assert_eq!(acks(&barrier(&mut hp, "t/2").await?), vec![1]);
    Ok(())
}

#[tokio::test]
async fn a_session_whose_token_runs_out_is_asked_for_another_then_closed() -> Result<()> {
    let server = secured(&[]).await?;
    let mut hp = socket(&server).await?;
    // Within the 60 s leeway, a few seconds from running out.
    let expiring = sign(&["e"], "write", now_secs() - 57);
    hp.auth("e", &expiring, V4).await?;
    assert_eq!(
        next_for(&mut hp, "e").await?,
        ServerMsg::Authenticated("read-write".into())
    );
    assert_eq!(next_for(&mut hp, "e").await?, ServerMsg::TokenSyncRequest);
    let (closed, _) = hp
        .until("e", WAIT, |m| matches!(m, ServerMsg::Close(_)))
        .await?;
    assert_eq!(closed, ServerMsg::Close("token expired".into()));
    // The socket lives on.
    handshake(&mut hp, "e", &token(&["e"], "write"), "read-write").await?;
    Ok(())
}

#[tokio::test]
async fn stateless_messages_reach_the_other_sessions_and_rest_pushes_reach_all() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = socket(&server).await?;
    let mut b = socket(&server).await?;
    handshake(&mut a, "s", "", "read-write").await?;
    handshake(&mut a, "other", "", "read-write").await?;
    handshake(&mut b, "s", "", "read-write").await?;
    a.stateless("s", r#"{"x":1}"#).await?;
    let (got, _) = b
        .until("s", WAIT, |m| matches!(m, ServerMsg::Stateless(_)))
        .await?;
    assert_eq!(got, ServerMsg::Stateless(r#"{"x":1}"#.into()));
    let heard = barrier(&mut a, "s").await?;
    ensure!(
        !heard.iter().any(|m| matches!(m, ServerMsg::Stateless(_))),
        "the sender got its own stateless message: {heard:?}"
    );

    let rest = Rest::new(&server);
    let pushed = rest
        .post_json(
            "/api/docs/s/stateless",
            &json!({"payload": "from the server"}),
        )
        .await?;
    assert_eq!(pushed.status(), 204);
    for hp in [&mut a, &mut b] {
        let (got, _) = hp
            .until("s", WAIT, |m| matches!(m, ServerMsg::Stateless(_)))
            .await?;
        assert_eq!(got, ServerMsg::Stateless("from the server".into()));
    }

    // BroadcastStateless is the server's: the document closes, not the rest.
    a.broadcast_stateless("s", "nope").await?;
    let (closed, _) = a
        .until("s", WAIT, |m| matches!(m, ServerMsg::Close(_)))
        .await?;
    ensure!(matches!(closed, ServerMsg::Close(_)));
    a.update("other", &text_update("content", "fine")).await?;
    assert_eq!(acks(&barrier(&mut a, "other").await?), vec![1]);
    Ok(())
}

#[tokio::test]
async fn rest_stateless_pushes_need_write_access_and_a_string_payload() -> Result<()> {
    let server = secured(&[]).await?;
    let path = "/api/docs/p/stateless";
    let body = json!({"payload": "hi"});
    let cases: Vec<(&str, Rest, serde_json::Value, u16)> = vec![
        ("no token", Rest::new(&server), body.clone(), 401),
        (
            "read token",
            Rest::with_token(&server, &token(&["p"], "read")),
            body.clone(),
            403,
        ),
        (
            "write token",
            Rest::with_token(&server, &token(&["p"], "write")),
            body.clone(),
            204,
        ),
        (
            "admin token",
            Rest::with_token(&server, ADMIN),
            body.clone(),
            204,
        ),
        (
            "no payload",
            Rest::with_token(&server, ADMIN),
            json!({}),
            400,
        ),
        (
            "payload not a string",
            Rest::with_token(&server, ADMIN),
            json!({"payload": 1}),
            400,
        ),
        (
            "payload too long",
            Rest::with_token(&server, ADMIN),
            json!({"payload": "x".repeat(16385)}),
            400,
        ),
    ];
    for (case, rest, body, status) in cases {
        let response = rest.post_json(path, &body).await?;
        assert_eq!(response.status().as_u16(), status, "{case}");
    }
    Ok(())
}

#[tokio::test]
async fn deleting_a_document_closes_its_session_and_no_other() -> Result<()> {
    let server = TestServer::start().await?;
    let mut hp = socket(&server).await?;
    handshake(&mut hp, "d/1", "", "read-write").await?;
    handshake(&mut hp, "d/2", "", "read-write").await?;
    hp.update("d/1", &text_update("content", "doomed")).await?;
    assert_eq!(acks(&barrier(&mut hp, "d/1").await?), vec![1]);
    let deleted = Rest::new(&server).delete("/api/docs/d%2F1").await?;
    assert_eq!(deleted.status(), 204);
    let (closed, _) = hp
        .until("d/1", WAIT, |m| matches!(m, ServerMsg::Close(_)))
        .await?;
    assert_eq!(closed, ServerMsg::Close("document deleted".into()));
    hp.update("d/2", &text_update("content", "alive")).await?;
    assert_eq!(acks(&barrier(&mut hp, "d/2").await?), vec![1]);
    Ok(())
}

#[tokio::test]
async fn an_update_that_does_not_apply_closes_only_its_document() -> Result<()> {
    let server = TestServer::start().await?;
    let mut hp = socket(&server).await?;
    handshake(&mut hp, "bad", "", "read-write").await?;
    handshake(&mut hp, "good", "", "read-write").await?;
    hp.update("bad", &[0xff, 0xff, 0xff]).await?;
    let (closed, before) = hp
        .until("bad", WAIT, |m| matches!(m, ServerMsg::Close(_)))
        .await?;
    ensure!(
        !before.iter().any(|h| matches!(
            h,
            Heard::Frame {
                message: ServerMsg::SyncStatus(_),
                ..
            }
        )),
        "a bad update is not acknowledged: {before:?}"
    );
    ensure!(matches!(closed, ServerMsg::Close(_)));
    hp.update("good", &text_update("content", "ok")).await?;
    assert_eq!(acks(&barrier(&mut hp, "good").await?), vec![1]);
    Ok(())
}

#[tokio::test]
async fn a_client_close_ends_the_session_and_its_presence_without_a_reply() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = socket(&server).await?;
    let mut b = socket(&server).await?;
    handshake(&mut a, "p", "", "read-write").await?;
    handshake(&mut b, "p", "", "read-write").await?;
    a.awareness("p", &awareness(99, 1, r#"{"user":"a"}"#))
        .await?;
    for hp in [&mut a, &mut b] {
        hp.until("p", WAIT, |m| {
            matches!(m, ServerMsg::Awareness(u) if awareness_states(u).is_ok_and(|s| s.contains(&(99, r#"{"user":"a"}"#.to_owned()))))
        })
        .await?;
    }
    a.close_document("p").await?;
    b.until("p", WAIT, |m| {
        matches!(m, ServerMsg::Awareness(u) if awareness_states(u).is_ok_and(|s| s.contains(&(99, "null".to_owned()))))
    })
    .await?;
    // Re-attaching at once: the first frame for the address is Authenticated
    // (no CLOSE reply landed on the new session).
    a.auth("p", "", V4).await?;
    loop {
        match a.recv(WAIT).await? {
            Heard::Frame { address, message } if address == "p" => {
                assert_eq!(message, ServerMsg::Authenticated("read-write".into()));
                break;
            }
            Heard::Closed(info) => bail!("socket closed: {info:?}"),
            _ => {}
        }
    }
    Ok(())
}

#[tokio::test]
async fn only_v4_sockets_get_the_hocuspocus_ping() -> Result<()> {
    let server = TestServer::start_with(["--hocuspocus-ping-secs", "1"]).await?;
    let mut v3 = socket(&server).await?;
    v3.auth("k", "", None).await?;
    let mut v4 = socket(&server).await?;
    v4.auth("k", "", V4).await?;
    let mut pings = 0;
    while pings < 2 {
        match v4.recv(WAIT).await? {
            Heard::Ping => {
                pings += 1;
                v4.pong().await?;
            }
            Heard::Closed(info) => bail!("closed: {info:?}"),
            _ => {}
        }
    }
    // The v3 socket has been open as long: it heard no Ping.
    let heard = v3.drain(Duration::from_millis(200)).await?;
    ensure!(
        !heard.contains(&Heard::Ping),
        "a v3 socket got a Ping: {heard:?}"
    );
    ensure!(
        heard.iter().all(|h| matches!(h, Heard::Frame { .. })),
        "{heard:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_upgrade_checks_the_origin_and_max_connections_counts_sockets() -> Result<()> {
    let server = TestServer::start_with([
        "--max-connections",
        "1",
        "--allowed-origins",
        "http://app.example",
    ])
    .await?;
    let url = format!("{}/hocuspocus", server.ws_address());
    let bad = upgrade_with(&url, &[("origin", "http://evil.example")]).await?;
    assert_eq!(bad.status(), 403);
    let good = [("origin", "http://app.example")];
    let open = upgrade_with(&url, &good).await?;
    assert_eq!(open.status(), 101);
    // One socket, whatever it carries, is one connection.
    let second = upgrade_with(&url, &good).await?;
    assert_eq!(second.status(), 503);
    drop(open);
    Ok(())
}

#[tokio::test]
async fn a_socket_that_stops_reading_is_closed_without_holding_up_anyone() -> Result<()> {
    const CHUNK: usize = 8 * 1024;
    const MAX_SENT: usize = 32 << 20;
    let server =
        TestServer::start_with(["--outbound-queue", "8", "--max-outbound-bytes", "65536"]).await?;
    let rest = Rest::new(&server);
    let writer = server.client("firehose").await?;
    writer.wait_synced(WAIT).await?;
    let reader = server.client("firehose").await?;
    reader.wait_synced(WAIT).await?;
    // Authenticates a document, then never reads again; a small receive
    // buffer keeps the kernel from absorbing much on its behalf.
    let mut stalled = HandClient::upgrade(server.addr(), "/hocuspocus", &[], Some(4096)).await?;
    assert_eq!(stalled.status, 101, "{}", stalled.head);
    stalled
        .send_binary(&quire_client::hocuspocus::client_frame(
            "firehose",
            &quire_client::hocuspocus::auth_body("", None),
        ))
        .await?;
    rest.wait_metric("quire_sessions", &[("protocol", "hocuspocus")], |n| {
        n == 1.0
    })
    .await?;
    let mut sent = 0;
    let mut round = 0usize;
    loop {
        for _ in 0..8 {
            let letter = char::from(b'a' + (round % 26) as u8);
            let text = writer.doc().get_or_insert_text("content");
            let mut txn = writer.doc().transact_mut();
            let len = text.len(&txn);
            text.remove_range(&mut txn, 0, len);
            text.insert(&mut txn, 0, &letter.to_string().repeat(CHUNK));
            sent += CHUNK;
            round += 1;
        }
        // A healthy y-websocket reader keeps up with every batch.
        let expected = crate::support::state_vector(writer.doc());
        reader
            .wait_for(WAIT, |doc| crate::support::state_vector(doc) == expected)
            .await
            .with_context(|| format!("the healthy reader fell behind after {sent} bytes"))?;
        let open = metric(
            &rest.metrics().await?,
            "quire_connections",
            &[("protocol", "hocuspocus")],
        );
        if open == Some(0.0) {
            break;
        }
        ensure!(
            sent < MAX_SENT,
            "the stalled socket was still open after {sent} bytes"
        );
    }
    ensure!(
        server.logs().contains("client too slow"),
        "the server never logged closing a slow client"
    );
    stalled
        .drain_to_end(WAIT)
        .await
        .context("the stalled socket was never closed")?;
    assert_eq!(
        metric(
            &rest.metrics().await?,
            "quire_sessions",
            &[("protocol", "hocuspocus")]
        ),
        Some(0.0)
    );
    // The writer went on undisturbed: the server holds everything it sent.
    let text = writer.doc().get_or_insert_text("content");
    text.insert(&mut writer.doc().transact_mut(), 0, "the end ");
    let expected = writer.text("content");
    let server_has = crate::support::eventually(|| async {
        let got = rest.text("firehose", "content").await?;
        Ok((got == expected).then_some(()))
    })
    .await;
    ensure!(
        server_has.is_ok(),
        "the server never got the writer's last update"
    );
    Ok(())
}

// --- H13: robustness --------------------------------------------------------

#[tokio::test]
async fn malformed_sockets_close_with_the_reference_codes() -> Result<()> {
    let server = TestServer::start().await?;
    // (case, frames, close code)
    let many_addresses: Vec<Vec<u8>> = (0..101)
        .map(|i| quire_client::hocuspocus::client_frame(&format!("doc{i}"), &[0, 0, 1, 0]))
        .collect();
    let many_frames: Vec<Vec<u8>> = (0..1001)
        .map(|_| quire_client::hocuspocus::client_frame("q", &[0, 0, 1, 0]))
        .collect();
    // Six updates of 1 MiB each (their content does not matter: they are
    // never decoded before authentication).
    let big: Vec<Vec<u8>> = (0..6)
        .map(|_| {
            let update = vec![0u8; 1024 * 1024];
            let body = crdt_core::protocol::encode_update(&update);
            quire_client::hocuspocus::client_frame("q", &body)
        })
        .collect();
    let cases: Vec<(&str, Vec<Vec<u8>>, u16)> = vec![
        ("a truncated address", vec![vec![0x05, b'a', b'b']], 1007),
        (
            "101 addresses awaiting authentication",
            many_addresses,
            1008,
        ),
        (
            "1001 frames queued before authentication",
            many_frames,
            1008,
        ),
        ("more than 5 MiB before authentication", big, 1009),
    ];
    for (case, frames, code) in cases {
        let mut hp = socket(&server).await?;
        for frame in frames {
            if hp.send_raw(frame).await.is_err() {
                break;
            }
        }
        let closed = hp.wait_close(WAIT).await?.context(case)?;
        assert_eq!(closed.code, code, "{case}: {closed:?}");
    }
    let mut hp = socket(&server).await?;
    hp.send_text("hello").await?;
    assert_eq!(
        hp.wait_close(WAIT).await?.map(|c| c.code),
        Some(1003),
        "a text frame"
    );
    Ok(())
}

#[tokio::test]
async fn a_pong_is_accepted_and_a_socket_that_never_authenticates_is_closed() -> Result<()> {
    let server = TestServer::start_with(["--hocuspocus-auth-timeout-secs", "1"]).await?;
    // A lone 0a is a Pong: nothing happens, the socket goes on.
    let mut hp = socket(&server).await?;
    hp.pong().await?;
    handshake(&mut hp, "fine", "", "read-write").await?;
    // Authenticated once: the deadline is over for this socket.
    hp.update("fine", &text_update("content", "x")).await?;
    assert_eq!(acks(&barrier(&mut hp, "fine").await?), vec![1]);

    let mut silent = socket(&server).await?;
    silent.sync_step1("never", &empty_sv()).await?;
    let closed = silent
        .wait_close(WAIT)
        .await?
        .context("closed without a frame")?;
    assert_eq!(closed.code, 4408);
    // The other socket was not affected.
    hp.update("fine", &text_update("content", "y")).await?;
    assert_eq!(acks(&barrier(&mut hp, "fine").await?), vec![1]);
    Ok(())
}
