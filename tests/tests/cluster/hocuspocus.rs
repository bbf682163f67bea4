//! A Hocuspocus session on one node and a y-websocket client on another
//! edit one document together: updates, presence and stateless messages
//! cross nodes whichever dialect sent them.

use crate::support::{client, text_of, Cluster, Rest, ROOT, WAIT};
use anyhow::{ensure, Result};
use quire_client::hocuspocus::{Heard, HocuspocusSocket, ServerMsg};
use serde_json::json;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

const DOC: &str = "cross/dialect";

fn update_inserting(chunk: &str) -> Vec<u8> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text(ROOT);
    text.insert(&mut doc.transact_mut(), 0, chunk);
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    update
}

fn awareness(client: u64, clock: u64, state: &str) -> Vec<u8> {
    let mut w = crdt_core::wire::Writer::default();
    w.write_var_u64(1);
    w.write_var_u64(client);
    w.write_var_u64(clock);
    w.write_var_string(state);
    w.into_inner()
}

fn names_client(update: &[u8], client: u64) -> bool {
    crdt_core::AwarenessUpdate::decode(update)
        .is_ok_and(|u| u.entries.iter().any(|e| e.client == client))
}

async fn open(node: &quire_client::testing::TestServer) -> Result<HocuspocusSocket> {
    let mut hp = HocuspocusSocket::connect(&format!("{}/hocuspocus", node.ws_address())).await?;
    hp.auth(DOC, "", Some("4.8.0")).await?;
    hp.sync_step1(DOC, &StateVector::default().encode_v1())
        .await?;
    let (step2, _) = hp
        .until(DOC, WAIT, |m| matches!(m, ServerMsg::SyncStep2(_)))
        .await?;
    ensure!(matches!(step2, ServerMsg::SyncStep2(_)));
    Ok(hp)
}

#[tokio::test]
async fn a_hocuspocus_session_and_a_y_websocket_client_on_two_nodes_converge() -> Result<()> {
    let cluster = Cluster::start(2).await?;
    let bob = client(cluster.node(1), DOC).await?;
    bob.set_awareness(json!({"user": "bob"})).await?;
    let mut hp = open(cluster.node(0)).await?;

    // Updates: Hocuspocus on A → y-websocket on B, acknowledged on A.
    hp.update(DOC, &update_inserting("hp ")).await?;
    let (ack, _) = hp
        .until(DOC, WAIT, |m| matches!(m, ServerMsg::SyncStatus(_)))
        .await?;
    assert_eq!(ack, ServerMsg::SyncStatus(1));
    bob.wait_for(WAIT, |doc| text_of(doc, ROOT).contains("hp "))
        .await?;
    // y-websocket on B → Hocuspocus on A.
    let text = bob.doc().get_or_insert_text(ROOT);
    text.push(&mut bob.doc().transact_mut(), "bob");
    hp.until(DOC, WAIT, |m| matches!(m, ServerMsg::Update(_)))
        .await?;
    Rest::new(cluster.node(0))
        .wait_text(DOC, &bob.text(ROOT))
        .await?;

    // Presence both ways.
    hp.awareness(DOC, &awareness(4242, 1, r#"{"user":"hp"}"#))
        .await?;
    bob.wait_for_awareness(WAIT, |states| states.contains_key(&4242))
        .await?;
    // Bob's presence may have come with any frame read so far: ask for all.
    let bob_id = bob.client_id();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        hp.query_awareness(DOC).await?;
        let (states, _) = hp
            .until(DOC, WAIT, |m| matches!(m, ServerMsg::Awareness(_)))
            .await?;
        if matches!(&states, ServerMsg::Awareness(u) if names_client(u, bob_id)) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "bob's presence never reached node A"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The session leaves: its presence leaves node B's clients too.
    hp.close_document(DOC).await?;
    bob.wait_for_awareness(WAIT, |states| !states.contains_key(&4242))
        .await?;
    Ok(())
}

#[tokio::test]
async fn stateless_messages_reach_hocuspocus_sessions_on_other_nodes() -> Result<()> {
    let cluster = Cluster::start(2).await?;
    let mut a = open(cluster.node(0)).await?;
    let mut b = open(cluster.node(1)).await?;
    a.stateless(DOC, "from a").await?;
    let (got, _) = b
        .until(DOC, WAIT, |m| matches!(m, ServerMsg::Stateless(_)))
        .await?;
    assert_eq!(got, ServerMsg::Stateless("from a".into()));
    // A REST push on node B reaches the session on node A.
    let pushed = reqwest::Client::new()
        .post(
            cluster
                .node(1)
                .http_url(&format!("/api/docs/{}/stateless", "cross%2Fdialect")),
        )
        .json(&json!({"payload": "pushed"}))
        .send()
        .await?;
    assert_eq!(pushed.status(), 204);
    let (got, before) = a
        .until(DOC, WAIT, |m| matches!(m, ServerMsg::Stateless(_)))
        .await?;
    assert_eq!(got, ServerMsg::Stateless("pushed".into()));
    ensure!(
        !before.iter().any(|h| matches!(
            h,
            Heard::Frame {
                message: ServerMsg::Stateless(_),
                ..
            }
        )),
        "the sender got its own message back: {before:?}"
    );
    Ok(())
}
