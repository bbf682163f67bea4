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
