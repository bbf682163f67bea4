//! Document sync between clients through the server.

use crate::support::{append, eventually, insert, wait_text, Rest, WAIT};
use anyhow::{Context, Result};
use quire_client::testing::TestServer;
use quire_client::{Client, Status};
use serde_json::{json, Value};
use yrs::types::ToJson;
use yrs::{Array, Map, ReadTxn, Transact};

#[tokio::test]
async fn concurrent_edits_from_two_clients_converge() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.client("notes").await?;
    let bob = server.client("notes").await?;

    // Both type at once, without waiting for each other.
    for i in 0..20 {
        insert(&alice, "content", 0, &format!("a{i} "));
        append(&bob, "content", &format!("b{i} "));
    }

    let converged = |client: &Client| {
        let text = client.text("content");
        (0..20).all(|i| text.contains(&format!("a{i} ")) && text.contains(&format!("b{i} ")))
    };
    alice
        .wait_until("every edit", WAIT, |c| converged(c))
        .await?;
    bob.wait_until("every edit", WAIT, |c| converged(c)).await?;
    let text = alice.text("content");
    wait_text(&bob, "content", &text).await?;
    Rest::new(&server)
        .wait_text("notes", "content", &text)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_late_joiner_receives_everything() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.client("shared/board").await?;
    insert(&alice, "title", 0, "Plan");
    {
        let doc = alice.doc();
        let meta = doc.get_or_insert_map("meta");
        let list = doc.get_or_insert_array("items");
        let mut txn = doc.transact_mut();
        meta.insert(&mut txn, "owner", "alice");
        list.push_back(&mut txn, "first");
        list.push_back(&mut txn, 2);
    }
    let expected = json!({"title": "Plan", "meta": {"owner": "alice"}, "items": ["first", 2]});
    let rest = Rest::new(&server);
    eventually(|| async {
        let json: Value =
            serde_json::from_slice(&rest.snapshot("shared/board", "format=json").await?)?;
        Ok((json == expected).then_some(()))
    })
    .await
    .context("the server never held all of alice's edits")?;

    // Synced means the server's step 2 was applied: everything is here.
    let carol = server.client("shared/board").await?;
    assert_eq!(carol.text("title"), "Plan");
    let txn = carol.doc().transact();
    let meta = txn.get_map("meta").context("meta root")?;
    let items = txn.get_array("items").context("items root")?;
    assert_eq!(serde_json::to_value(meta.to_json(&txn))?, expected["meta"]);
    assert_eq!(
        serde_json::to_value(items.to_json(&txn))?,
        expected["items"]
    );
    assert_eq!(txn.state_vector(), alice.doc().transact().state_vector());
    Ok(())
}

#[tokio::test]
async fn offline_edits_are_delivered_on_reconnect() -> Result<()> {
    let server = TestServer::start().await?;
    let mut alice = server.client("notes").await?;
    let bob = server.client("notes").await?;
    insert(&alice, "content", 0, "shared ");
    wait_text(&bob, "content", "shared ").await?;

    alice.disconnect().await?;
    assert_eq!(alice.status(), Status::Disconnected);
    append(&alice, "content", "offline-a ");
    append(&bob, "content", "online-b ");
    // Bob's edit cannot reach Alice while she is away.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!alice.text("content").contains("online-b"));

    alice.reconnect().await?;
    alice.wait_synced(WAIT).await?;
    let both = |text: String| text.contains("offline-a") && text.contains("online-b");
    alice
        .wait_until("both edits", WAIT, |c| both(c.text("content")))
        .await?;
    bob.wait_until("both edits", WAIT, |c| both(c.text("content")))
        .await?;
    wait_text(&bob, "content", &alice.text("content")).await?;
    Ok(())
}

#[tokio::test]
async fn edits_made_before_the_first_connection_reach_the_server() -> Result<()> {
    let server = TestServer::start().await?;
    let mut early = Client::new(server.client_config("drafts"))?;
    insert(&early, "content", 0, "written offline");
    early.open().await?;
    early.wait_synced(WAIT).await?;

    Rest::new(&server)
        .wait_text("drafts", "content", "written offline")
        .await?;
    let reader = server.client("drafts").await?;
    assert_eq!(reader.text("content"), "written offline");
    Ok(())
}

/// Update frames a raw socket receives before the answer to a query it sends
/// now: the server answers after relaying everything already applied.
async fn updates_before_a_query(raw: &mut quire_client::RawSocket) -> Result<Vec<Vec<u8>>> {
    use crdt_core::Message;
    use quire_client::RawFrame;
    raw.send_binary(vec![3]).await?; // query awareness
    let mut updates = Vec::new();
    loop {
        match raw.recv(WAIT).await? {
            RawFrame::Binary(bytes) => match Message::decode(&bytes)? {
                Message::Update(update) => updates.push(update.to_vec()),
                Message::Awareness(_) => return Ok(updates),
                _ => {}
            },
            other => anyhow::bail!("unexpected frame {other:?}"),
        }
    }
}

/// The text that `updates`, applied in order to an empty document, hold.
fn text_of_updates(updates: &[Vec<u8>]) -> Result<String> {
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Transact};
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("content");
    let mut txn = doc.transact_mut();
    for update in updates {
        txn.apply_update(yrs::Update::decode_v1(update)?)?;
    }
    Ok(text.get_string(&txn))
}

#[tokio::test]
async fn with_a_broadcast_window_every_update_is_relayed_but_never_echoed() -> Result<()> {
    use crdt_core::protocol::encode_update;
    use quire_client::RawSocket;
    use yrs::{Doc, GetString, Text};

    // Long enough that the interleaved writes below share one batch.
    let server = TestServer::start_with(["--broadcast-window-ms", "300"]).await?;
    let mut alice = RawSocket::connect(&server.ws_url("batched")).await?;
    let mut bob = RawSocket::connect(&server.ws_url("batched")).await?;
    let observer = server.client("batched").await?;
    let (alice_doc, bob_doc) = (Doc::with_client_id(1001), Doc::with_client_id(2002));
    let type_into = |doc: &Doc, text: &str| {
        let root = doc.get_or_insert_text("content");
        let mut txn = doc.transact_mut();
        let end = root.get_string(&txn).chars().count() as u32;
        root.insert(&mut txn, end, text);
        encode_update(&txn.encode_update_v1())
    };
    for i in 0..5 {
        alice
            .send_binary(type_into(&alice_doc, &format!("a{i}")))
            .await?;
        bob.send_binary(type_into(&bob_doc, &format!("b{i}")))
            .await?;
    }
    observer
        .wait_until("all ten updates", WAIT, |c| {
            let text = c.text("content");
            (0..5).all(|i| text.contains(&format!("a{i}")) && text.contains(&format!("b{i}")))
        })
        .await?;

    for (socket, other) in [(&mut alice, "b"), (&mut bob, "a")] {
        let updates = updates_before_a_query(socket).await?;
        assert_eq!(
            updates.len(),
            5,
            "the other's five updates, none of its own"
        );
        let expected: String = (0..5).map(|i| format!("{other}{i}")).collect();
        assert_eq!(text_of_updates(&updates)?, expected);
    }
    Ok(())
}
