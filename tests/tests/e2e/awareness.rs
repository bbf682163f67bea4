//! Presence: awareness states relayed, snapshotted, queried and removed.

use crate::support::WAIT;
use anyhow::{bail, Context, Result};
use crdt_core::protocol::MSG_QUERY_AWARENESS;
use crdt_core::{AwarenessUpdate, Message};
use quire_client::testing::TestServer;
use quire_client::{RawFrame, RawSocket};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn awareness_is_seen_by_others_and_removed_on_disconnect() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.client("room").await?;
    alice
        .set_awareness(json!({"user": {"name": "alice"}, "cursor": 3}))
        .await?;

    // A late joiner gets the current states when it connects.
    let mut bob = server.client("room").await?;
    let alice_id = alice.client_id();
    bob.wait_for_awareness(WAIT, |states| {
        states.get(&alice_id) == Some(&json!({"user": {"name": "alice"}, "cursor": 3}))
    })
    .await
    .context("bob never saw alice")?;

    // Changes are relayed live.
    bob.set_awareness(json!({"user": {"name": "bob"}})).await?;
    let bob_id = bob.client_id();
    alice
        .wait_for_awareness(WAIT, |states| {
            states.get(&bob_id) == Some(&json!({"user": {"name": "bob"}}))
        })
        .await
        .context("alice never saw bob")?;
    alice
        .set_awareness(json!({"user": {"name": "alice"}, "cursor": 9}))
        .await?;
    bob.wait_for_awareness(WAIT, |states| {
        states.get(&alice_id).and_then(|s| s.get("cursor")) == Some(&json!(9))
    })
    .await?;

    bob.disconnect().await?;
    alice
        .wait_for_awareness(WAIT, |states| !states.contains_key(&bob_id))
        .await
        .context("bob's state outlived his connection")?;
    Ok(())
}

#[tokio::test]
async fn awareness_is_removed_when_a_connection_drops_without_goodbye() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.client("room").await?;
    let mut bob = server.client("room").await?;
    bob.set_awareness(json!({"user": "bob"})).await?;
    let bob_id = bob.client_id();
    alice
        .wait_for_awareness(WAIT, |states| states.contains_key(&bob_id))
        .await?;

    // No removal message, no close frame: the server must notice the close.
    bob.drop_connection().await;
    alice
        .wait_for_awareness(WAIT, |states| !states.contains_key(&bob_id))
        .await
        .context("the server did not broadcast the removal of a dropped client")?;

    // And a client joining afterwards is not told about bob either.
    let carol = server.client("room").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!carol.awareness_states().contains_key(&bob_id));
    Ok(())
}

#[tokio::test]
async fn a_reconnecting_client_announces_its_state_again() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.client("room").await?;
    let mut bob = server.client("room").await?;
    bob.set_awareness(json!({"user": "bob"})).await?;
    let bob_id = bob.client_id();
    alice
        .wait_for_awareness(WAIT, |states| states.contains_key(&bob_id))
        .await?;
    bob.disconnect().await?;
    alice
        .wait_for_awareness(WAIT, |states| !states.contains_key(&bob_id))
        .await?;

    bob.reconnect().await?;
    alice
        .wait_for_awareness(WAIT, |states| {
            states.get(&bob_id) == Some(&json!({"user": "bob"}))
        })
        .await
        .context("bob's state did not come back after reconnecting")?;
    Ok(())
}

#[tokio::test]
async fn query_awareness_is_answered_with_every_state() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.client("room").await?;
    let bob = server.client("room").await?;
    alice.set_awareness(json!({"user": "alice"})).await?;
    bob.set_awareness(json!({"user": "bob"})).await?;
    let (alice_id, bob_id) = (alice.client_id(), bob.client_id());
    bob.wait_for_awareness(WAIT, |states| states.contains_key(&alice_id))
        .await?;
    alice
        .wait_for_awareness(WAIT, |states| states.contains_key(&bob_id))
        .await?;

    let mut raw = RawSocket::connect(&server.ws_url("room")).await?;
    // Let the opening messages (sync step 1, current awareness) go by.
    while let Ok(frame) = raw.recv(Duration::from_millis(300)).await {
        if !matches!(frame, RawFrame::Binary(_)) {
            bail!("unexpected frame before the query: {frame:?}");
        }
    }

    raw.send_binary(vec![MSG_QUERY_AWARENESS as u8]).await?;
    let answer = loop {
        match raw.recv(WAIT).await? {
            RawFrame::Binary(bytes) => {
                if let Message::Awareness(update) = Message::decode(&bytes)? {
                    break AwarenessUpdate::decode(update)?;
                }
            }
            other => bail!("expected an awareness answer, got {other:?}"),
        }
    };
    let states: Vec<(u64, serde_json::Value)> = answer
        .entries
        .iter()
        .filter_map(|e| Some((e.client, serde_json::from_str(e.state.as_deref()?).ok()?)))
        .collect();
    assert!(
        states.contains(&(alice_id, json!({"user": "alice"})))
            && states.contains(&(bob_id, json!({"user": "bob"}))),
        "query answer lacks a state: {states:?}"
    );
    Ok(())
}

/// y-websocket providers reconnect after 30 s without a message, and pings
/// do not count: a lone editor's own awareness renewals, echoed back as the
/// reference server does, are what keep its connection alive.
#[tokio::test]
async fn every_awareness_change_is_echoed_to_its_sender_renewals_included() -> Result<()> {
    let server = TestServer::start().await?;
    let mut raw = RawSocket::connect(&server.ws_url("alone")).await?;
    while let Ok(frame) = raw.recv(Duration::from_millis(300)).await {
        if !matches!(frame, RawFrame::Binary(_)) {
            bail!("unexpected frame before the first awareness update: {frame:?}");
        }
    }
    let entry = |clock| crdt_core::awareness::AwarenessEntry {
        client: 7,
        clock,
        state: Some(r#"{"user":"alone"}"#.to_owned()),
    };
    // The first state, then a renewal: same state, next clock.
    for clock in [1, 2] {
        let update = AwarenessUpdate {
            entries: vec![entry(clock)],
        };
        raw.send_binary(crdt_core::protocol::encode_awareness(&update.encode()))
            .await?;
        let echoed = loop {
            match raw.recv(WAIT).await? {
                RawFrame::Binary(bytes) => {
                    if let Message::Awareness(update) = Message::decode(&bytes)? {
                        break AwarenessUpdate::decode(update)?;
                    }
                }
                other => bail!("expected the echo of clock {clock}, got {other:?}"),
            }
        };
        assert_eq!(echoed.entries, vec![entry(clock)], "echo of clock {clock}");
    }
    Ok(())
}
