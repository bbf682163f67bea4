//! Edits and presence typed on one node reach clients of every other node.

use crate::support::{
    client, connect, text_of, type_words, wait_presence, wait_words, Cluster, Rest, ROOT, WAIT,
};
use crate::trace::{load_txns, replay, utf16_doc};
use anyhow::{ensure, Context, Result};
use crdt_core::awareness::{AwarenessEntry, AwarenessUpdate};
use crdt_core::protocol::encode_awareness;
use crdt_core::Message;
use quire_client::{Client, RawFrame, RawSocket};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn words_typed_concurrently_on_three_nodes_converge_everywhere() -> Result<()> {
    const DOC: &str = "relay/words";
    let cluster = Cluster::start(3).await?;
    let alice = client(cluster.node(0), DOC).await?;
    let bob = client(cluster.node(1), DOC).await?;
    let carol = client(cluster.node(2), DOC).await?;

    // Everyone types at once, each word at a random place of their own view.
    let pace = Duration::from_millis(1);
    let (a, b, c) = tokio::join!(
        type_words(&alice, "alice", 150, pace, 1),
        type_words(&bob, "bob", 150, pace, 2),
        type_words(&carol, "carol", 150, pace, 3),
    );
    let typed: Vec<String> = [a, b, c].concat();

    for client in [&alice, &bob, &carol] {
        wait_words(client, &typed).await?;
    }
    let text = alice.text(ROOT);
    ensure!(bob.text(ROOT) == text, "bob's order differs from alice's");
    ensure!(
        carol.text(ROOT) == text,
        "carol's order differs from alice's"
    );
    for node in &cluster.nodes {
        Rest::new(node).wait_text(DOC, &text).await?;
    }
    Ok(())
}

#[tokio::test]
async fn the_b4_trace_typed_in_turns_on_two_nodes_ends_identical_everywhere() -> Result<()> {
    const DOC: &str = "relay/paper.tex";
    /// Transactions replayed, and how many one client types before handing over.
    const TXNS: usize = 1500;
    const TURN: usize = 250;
    let txns = load_txns(TXNS)?;
    let cluster = Cluster::start(3).await?;
    let on = |node: usize| cluster.node(node).client_config(DOC).ydoc(utf16_doc());
    let alice = connect(on(0)).await?;
    let bob = connect(on(1)).await?;

    let mut reference: Vec<char> = Vec::new();
    for (turn, chunk) in txns.chunks(TURN).enumerate() {
        let (typist, other) = if turn % 2 == 0 {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        for txn in chunk {
            replay(typist, ROOT, &mut reference, txn)?;
        }
        let expected: String = reference.iter().collect();
        // The other node's client must hold every keystroke before taking over.
        other
            .wait_for(WAIT, |doc| text_of(doc, ROOT) == expected)
            .await
            .with_context(|| format!("turn {turn}: the client on the other node diverged"))?;
    }

    let expected: String = reference.iter().collect();
    ensure!(!expected.is_empty(), "replayed nothing");
    ensure!(alice.text(ROOT) == expected && bob.text(ROOT) == expected);
    for node in &cluster.nodes[..2] {
        Rest::new(node).wait_text(DOC, &expected).await?;
    }
    // A third node that never saw the document serves all of it to a newcomer.
    let late = connect(on(2)).await?;
    late.wait_for(WAIT, |doc| text_of(doc, ROOT) == expected)
        .await
        .context("a client of the third node never received the whole trace")?;
    Ok(())
}

/// Waits until `observer` no longer sees any presence of `subject`.
async fn wait_absent(observer: &Client, subject: u64) -> Result<()> {
    observer
        .wait_for_awareness(WAIT, |states| !states.contains_key(&subject))
        .await
        .with_context(|| {
            format!(
                "{} still sees client {subject}: {:?}",
                observer.url(),
                observer.peer_states()
            )
        })
}

#[tokio::test]
async fn presence_set_on_one_node_is_seen_on_another_and_removed_when_its_client_leaves(
) -> Result<()> {
    const DOC: &str = "relay/presence";
    let cluster = Cluster::start(2).await?;
    let mut alice = client(cluster.node(0), DOC).await?;
    let bob = client(cluster.node(1), DOC).await?;

    let state = json!({"user": {"name": "alice", "color": "#30bced"}});
    alice.set_awareness(state.clone()).await?;
    wait_presence(&bob, alice.client_id(), &state).await?;

    // An update of the state crosses too.
    let moved = json!({"user": {"name": "alice", "color": "#30bced"}, "cursor": 7});
    alice.set_awareness(moved.clone()).await?;
    wait_presence(&bob, alice.client_id(), &moved).await?;

    alice.disconnect().await?;
    wait_absent(&bob, alice.client_id()).await
}

#[tokio::test]
async fn presence_of_a_client_whose_connection_drops_is_removed_on_other_nodes() -> Result<()> {
    const DOC: &str = "relay/vanishing";
    let cluster = Cluster::start(2).await?;
    let mut alice = client(cluster.node(0), DOC).await?;
    let bob = client(cluster.node(1), DOC).await?;
    let state = json!({"user": "alice"});
    alice.set_awareness(state.clone()).await?;
    wait_presence(&bob, alice.client_id(), &state).await?;

    // No close frame, no awareness removal: node A must notice and tell B.
    alice.drop_connection().await;
    wait_absent(&bob, alice.client_id()).await
}

#[tokio::test]
async fn a_client_joining_on_another_node_sees_the_presence_already_there() -> Result<()> {
    const DOC: &str = "relay/late-presence";
    let cluster = Cluster::start(3).await?;
    let alice = client(cluster.node(0), DOC).await?;
    let carol = client(cluster.node(2), DOC).await?;
    let state = json!({"user": "alice"});
    alice.set_awareness(state.clone()).await?;
    // Carol's node heard it: the live relay of that change is over.
    wait_presence(&carol, alice.client_id(), &state).await?;

    // Node b has never loaded the document: loading it must fetch presence too.
    let bob = client(cluster.node(1), DOC).await?;
    wait_presence(&bob, alice.client_id(), &state).await?;
    // And presence set later on b reaches a.
    let bobs = json!({"user": "bob"});
    bob.set_awareness(bobs.clone()).await?;
    wait_presence(&alice, bob.client_id(), &bobs).await
}

/// A lone editor stays connected only through the echo of its own presence
/// (y-websocket providers reconnect after 30 s of silence): every node
/// echoes it, whichever node the editor is on.
#[tokio::test]
async fn every_node_echoes_a_clients_presence_to_that_client() -> Result<()> {
    const DOC: &str = "relay/echo";
    let cluster = Cluster::start(2).await?;
    for (index, node) in cluster.nodes.iter().enumerate() {
        let mut raw = RawSocket::connect(&node.ws_url(DOC)).await?;
        // Let the opening messages go by.
        while raw.recv(Duration::from_millis(300)).await.is_ok() {}
        let client = 100 + index as u64;
        let update = AwarenessUpdate {
            entries: vec![AwarenessEntry {
                client,
                clock: 1,
                state: Some(r#"{"user":"alone"}"#.to_owned()),
            }],
        };
        raw.send_binary(encode_awareness(&update.encode())).await?;
        let echoed = loop {
            match raw
                .recv(WAIT)
                .await
                .with_context(|| format!("no echo on node {index}"))?
            {
                RawFrame::Binary(bytes) => {
                    if let Message::Awareness(echo) = Message::decode(&bytes)? {
                        break AwarenessUpdate::decode(echo)?;
                    }
                }
                other => anyhow::bail!("expected the echo on node {index}, got {other:?}"),
            }
        };
        assert_eq!(echoed, update, "echo on node {index}");
    }
    Ok(())
}
