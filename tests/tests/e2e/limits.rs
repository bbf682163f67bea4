//! Hardening: every configured limit, crossed once.
//!
//! Each test starts a server with one limit set low, has one client cross
//! it, and checks two things: the offender gets the documented refusal
//! (an HTTP status before the upgrade, or a close code after it), and
//! everyone else goes on as if nothing happened.

use crate::support::{
    eventually, insert, metric, state_vector, text_update, upgrade_with, wait_text, HandClient,
    Rest, Upgrade, WAIT,
};
use anyhow::{ensure, Context, Result};
use crdt_core::protocol::{encode_update, MSG_QUERY_AWARENESS};
use futures_util::StreamExt;
use quire_client::testing::TestServer;
use quire_client::{Client, ClientError, RawSocket, Status};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::{ReadTxn, Text, Transact};

#[tokio::test]
async fn upgrades_past_max_connections_get_503_until_one_closes() -> Result<()> {
    let server = TestServer::start_with(["--max-connections", "2"]).await?;
    let mut first = server.client("room").await?;
    let second = server.client("room").await?;

    // The limit is per server, whichever document is asked for.
    for doc in ["room", "elsewhere"] {
        match Client::connect(server.client_config(doc)).await {
            Err(ClientError::Rejected { status, body }) => {
                assert_eq!(status, 503, "third upgrade to {doc}: {body}");
                let error: Value = serde_json::from_str(&body)?;
                ensure!(error["error"].is_string(), "refusal body {body:?}");
            }
            other => panic!("a third connection to {doc} was not refused: {other:?}"),
        }
    }
    // The two that got in are unaffected.
    insert(&second, "content", 0, "two is company");
    wait_text(&first, "content", "two is company").await?;

    // Once one leaves (its slot frees when the server has closed the socket),
    // a newcomer gets in.
    first.disconnect().await?;
    let newcomer = eventually(|| async {
        match Client::connect(server.client_config("room")).await {
            Ok(client) => Ok(Some(client)),
            Err(ClientError::Rejected { status: 503, .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await
    .context("no slot freed after a client left")?;
    newcomer.wait_synced(WAIT).await?;
    wait_text(&newcomer, "content", "two is company").await?;
    Ok(())
}

/// Connects an offender on `doc` that sends `frames` as fast as it can;
/// returns its close frame.
async fn flood(server: &TestServer, doc: &str, frames: Vec<Vec<u8>>) -> Result<(u16, String)> {
    let mut offender = RawSocket::connect(&server.ws_url(doc)).await?;
    for frame in frames {
        // The server may close mid-flood; the close frame is what counts.
        if offender.send_binary(frame).await.is_err() {
            break;
        }
    }
    let close = offender
        .wait_close(WAIT)
        .await?
        .context("the offender's connection ended without a close frame")?;
    Ok((close.code, close.reason))
}

/// Two well-behaved clients on `doc` that keep editing through the same
/// connections, and see each other's edits, after an offender was closed.
async fn assert_bystanders_unaffected(calm: &Client, watcher: &Client) -> Result<()> {
    assert_eq!(calm.status(), Status::Synced);
    assert_eq!(watcher.status(), Status::Synced);
    insert(calm, "notes", 0, "calm");
    wait_text(watcher, "notes", "calm").await?;
    insert(watcher, "notes", 4, " and collected");
    wait_text(calm, "notes", "calm and collected").await?;
    Ok(())
}

#[tokio::test]
async fn a_client_sending_more_messages_than_its_rate_is_closed_with_1008() -> Result<()> {
    // 5 messages a second, with a burst of one second's worth.
    let server =
        TestServer::start_with(["--rate-messages-per-sec", "5", "--rate-burst-secs", "1"]).await?;
    let calm = server.client("busy").await?;
    let watcher = server.client("busy").await?;

    // Fifty query-awareness messages: each valid, tiny and harmless.
    let frames = vec![vec![MSG_QUERY_AWARENESS as u8]; 50];
    let (code, reason) = flood(&server, "busy", frames).await?;
    assert_eq!(code, 1008, "closed with {code} {reason:?}");
    ensure!(reason.contains("rate"), "close reason {reason:?}");

    assert_bystanders_unaffected(&calm, &watcher).await
}

#[tokio::test]
async fn a_client_sending_more_bytes_than_its_rate_is_closed_with_1008() -> Result<()> {
    // 2 KiB a second; the burst is at least one maximal message (4 KiB).
    let server = TestServer::start_with([
        "--rate-bytes-per-sec",
        "2048",
        "--rate-burst-secs",
        "1",
        "--max-message-bytes",
        "4096",
    ])
    .await?;
    let calm = server.client("busy").await?;
    let watcher = server.client("busy").await?;

    // Twenty valid updates of about 1 KiB each (a paste flood): far fewer
    // messages than the default message rate allows, far more bytes.
    let source = yrs::Doc::new();
    let text = source.get_or_insert_text("flood");
    let frames = (0..20)
        .map(|_| {
            let before = source.transact().state_vector();
            text.insert(&mut source.transact_mut(), 0, &"f".repeat(1000));
            encode_update(&source.transact().encode_diff_v1(&before))
        })
        .collect();
    let (code, reason) = flood(&server, "busy", frames).await?;
    assert_eq!(code, 1008, "closed with {code} {reason:?}");
    ensure!(
        reason.contains("rate") && reason.contains("bytes"),
        "close reason {reason:?}"
    );

    assert_bystanders_unaffected(&calm, &watcher).await
}

#[tokio::test]
async fn an_update_past_max_doc_bytes_is_refused_and_changes_nothing() -> Result<()> {
    let server = TestServer::start_with(["--max-doc-bytes", "4096"]).await?;
    let rest = Rest::new(&server);
    let alice = server.client("bounded").await?;
    let bob = server.client("bounded").await?;
    insert(&alice, "content", 0, "small start");
    wait_text(&bob, "content", "small start").await?;
    rest.wait_text("bounded", "content", "small start").await?;
    let before = rest.snapshot("bounded", "format=yjs").await?;

    // Over WebSocket: a valid update that would take the document past the
    // limit closes its sender with 1009...
    let greedy = server.client("bounded").await?;
    insert(&greedy, "content", 0, &"x".repeat(5000));
    let close = greedy
        .wait_closed(WAIT)
        .await?
        .context("the sender was not closed with a close frame")?;
    assert_eq!(close.code, 1009, "{close:?}");
    ensure!(
        close.reason.contains("max-doc-bytes"),
        "close reason {:?}",
        close.reason
    );
    // ...and is not applied: the server's document is byte for byte the same.
    assert_eq!(rest.snapshot("bounded", "format=yjs").await?, before);
    assert_eq!(alice.text("content"), "small start");

    // Everyone else carries on.
    assert_eq!(alice.status(), Status::Synced);
    assert_eq!(bob.status(), Status::Synced);
    insert(&bob, "content", 0, "still ");
    wait_text(&alice, "content", "still small start").await?;
    rest.wait_text("bounded", "content", "still small start")
        .await?;

    // Over REST the same kind of update is 413, and changes nothing either.
    let before = rest.snapshot("bounded", "format=yjs").await?;
    let response = rest
        .post(
            "/api/docs/bounded/updates",
            text_update("content", &"y".repeat(5000)),
        )
        .await?;
    assert_eq!(response.status().as_u16(), 413);
    let error: Value = response.json().await?;
    ensure!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("max-doc-bytes")),
        "error body {error}"
    );
    assert_eq!(rest.snapshot("bounded", "format=yjs").await?, before);
    assert_eq!(alice.text("content"), "still small start");
    Ok(())
}

#[tokio::test]
async fn upgrades_from_origins_not_allowed_get_403() -> Result<()> {
    let server = TestServer::start_with(["--allowed-origins", "http://good.example"]).await?;
    let url = server.ws_url("page");

    match upgrade_with(&url, &[("Origin", "http://evil.example")]).await? {
        Upgrade::Refused { status, body } => {
            assert_eq!(status, 403, "{body}");
            let error: Value = serde_json::from_str(&body)?;
            ensure!(error["error"].is_string(), "refusal body {body:?}");
        }
        Upgrade::Open(_) => panic!("an upgrade from http://evil.example was accepted"),
    }

    // The allowed origin gets a working connection: the server's sync step 1.
    let Upgrade::Open(mut socket) =
        upgrade_with(&url, &[("Origin", "http://good.example")]).await?
    else {
        panic!("an upgrade from the allowed origin was refused");
    };
    let first = tokio::time::timeout(WAIT, socket.next())
        .await
        .context("no frame from the server")?
        .context("the connection ended")??;
    let WsMessage::Binary(frame) = first else {
        panic!("first frame is not binary: {first:?}");
    };
    assert_eq!(&frame[..2], [0, 0], "not a sync step 1: {frame:?}");
    Ok(())
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_dropped() -> Result<()> {
    let server = TestServer::start_with(["--ping-interval-secs", "1"]).await?;
    let rest = Rest::new(&server);

    // Completes the handshake by hand, then never reads and never answers.
    let mut silent = HandClient::upgrade(server.addr(), "/ws/quiet", &[], None).await?;
    assert_eq!(silent.status, 101, "{}", silent.head);
    // A normal client answers pings (its WebSocket library does).
    let healthy = server.client("quiet").await?;
    rest.wait_metric("quire_connections", &[], |n| n == 2.0)
        .await?;

    // Two silent ping intervals later, only the healthy one is left.
    rest.wait_metric("quire_connections", &[], |n| n == 1.0)
        .await
        .context("the silent peer was never dropped")?;
    silent
        .drain_to_end(WAIT)
        .await
        .context("the server kept the silent peer's socket open")?;
    assert_eq!(healthy.status(), Status::Synced);
    insert(&healthy, "content", 0, "still here");
    rest.wait_text("quiet", "content", "still here").await?;

    drop(healthy);
    rest.wait_metric("quire_connections", &[], |n| n == 0.0)
        .await?;
    Ok(())
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")
}

/// Replaces the whole of root text `root` with `chunk`, in one
/// transaction: an update carrying `chunk` and the deletion of what it
/// replaces, so the document does not grow however many are sent.
fn replace_text(client: &Client, root: &str, chunk: &str) {
    let text = client.doc().get_or_insert_text(root);
    let mut txn = client.doc().transact_mut();
    let len = text.len(&txn);
    text.remove_range(&mut txn, 0, len);
    text.insert(&mut txn, 0, chunk);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_without_holding_up_anyone() -> Result<()> {
    const CHUNK_BYTES: usize = 8 * 1024;
    const BATCH: usize = 8;
    /// Failure guard: far more than socket buffers and the queue can hold.
    const MAX_SENT: usize = 32 << 20;
    let server =
        TestServer::start_with(["--outbound-queue", "8", "--max-outbound-bytes", "65536"]).await?;
    let rest = Rest::new(&server);
    let writer = server.client("firehose").await?;
    let reader = server.client("firehose").await?;
    // Joins, then never reads again. A small receive buffer keeps the kernel
    // from absorbing much on its behalf.
    let mut stalled = HandClient::upgrade(server.addr(), "/ws/firehose", &[], Some(4096)).await?;
    assert_eq!(stalled.status, 101, "{}", stalled.head);
    rest.wait_metric("quire_connections", &[], |n| n == 3.0)
        .await?;
    let rss_before = server.pid().map(rss_kib).transpose()?;

    // The writer sends ~8 KiB updates in batches; the healthy reader keeps
    // up with every batch; the stalled client falls behind until the
    // server gives up on it.
    let mut sent = 0;
    let mut round = 0usize;
    loop {
        for _ in 0..BATCH {
            let letter = char::from(b'a' + (round % 26) as u8);
            replace_text(&writer, "content", &letter.to_string().repeat(CHUNK_BYTES));
            sent += CHUNK_BYTES;
            round += 1;
        }
        let expected = state_vector(writer.doc());
        reader
            .wait_for(WAIT, |doc| state_vector(doc) == expected)
            .await
            .with_context(|| format!("the healthy reader fell behind after {sent} bytes"))?;
        let open = metric(&rest.metrics().await?, "quire_connections", &[]);
        if open == Some(2.0) {
            break;
        }
        ensure!(
            sent < MAX_SENT,
            "the stalled client was still connected after {sent} bytes (connections: {open:?})"
        );
    }
    // The writer goes on after the stalled client is gone.
    replace_text(&writer, "content", "the end");

    // It was dropped for being slow...
    ensure!(
        server.logs().contains("client too slow"),
        "the server never logged closing a slow client"
    );
    // ...and its socket is closed: once it reads again, it reaches the end.
    stalled
        .drain_to_end(WAIT)
        .await
        .context("the stalled client's socket was never closed")?;
    // Every update reached the server and the healthy reader: each one
    // deletes what the previous one inserted, so a lost update would leave
    // every later one pending and the state vectors apart.
    wait_text(&reader, "content", "the end").await?;
    rest.wait_text("firehose", "content", "the end").await?;
    assert_eq!(state_vector(reader.doc()), state_vector(writer.doc()));
    assert_eq!(
        state_vector(&rest.doc("firehose").await?),
        state_vector(writer.doc())
    );
    assert_eq!(writer.status(), Status::Synced);
    assert_eq!(reader.status(), Status::Synced);

    // Memory stayed bounded. The document keeps one chunk, so the server
    // needs little more than at the start; a coarse guard against holding
    // what the stalled client never read (the loop sends until it is gone,
    // up to MAX_SENT).
    if let (Some(before), Some(after)) = (rss_before, server.pid().map(rss_kib).transpose()?) {
        let grown = after.saturating_sub(before);
        ensure!(
            grown < 48 * 1024,
            "server RSS grew by {grown} KiB (from {before} to {after}) while {sent} bytes were sent"
        );
    }
    Ok(())
}
