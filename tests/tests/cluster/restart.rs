//! A node that was down while others edited restarts on its stale sled
//! copy and catches up from its peers when the document loads.

use crate::support::{
    client, delete_word, segment, type_words, wait_ready, wait_words, Cluster, Rest, ROOT, WAIT,
};
use anyhow::{ensure, Result};
use std::time::Duration;

#[tokio::test]
async fn a_node_restarted_on_a_stale_copy_catches_up_on_what_was_typed_and_deleted_meanwhile(
) -> Result<()> {
    const DOC: &str = "restart/notes";
    let mut cluster = Cluster::start(2).await?;
    let alice = client(cluster.node(0), DOC).await?;
    let bob = client(cluster.node(1), DOC).await?;
    let (by_alice, by_bob) = tokio::join!(
        type_words(&alice, "alice", 30, Duration::from_millis(1), 1),
        type_words(&bob, "bob", 30, Duration::from_millis(1), 2),
    );
    let mut expected = [by_alice, by_bob].concat();
    wait_words(&alice, &expected).await?;
    wait_words(&bob, &expected).await?;
    drop(bob);

    // Node b stops with everything on disk; node a goes on without it.
    let status = cluster.nodes[1].terminate().await?;
    ensure!(status.success(), "node b exited with {status}");
    expected.extend(type_words(&alice, "meanwhile", 30, Duration::ZERO, 3).await);
    for gone in ["bob0", "bob1", "alice2", "alice3"] {
        ensure!(delete_word(&alice, gone), "{gone} was not there");
        expected.retain(|w| w != gone);
    }
    wait_words(&alice, &expected).await?;

    cluster.nodes[1].restart().await?;
    // A newcomer on node b brings nothing: all it sees comes from node b's
    // sled copy and from what node b fetches from node a on load.
    let carol = client(cluster.node(1), DOC).await?;
    wait_words(&carol, &expected).await?;
    let text = alice.text(ROOT);
    ensure!(
        carol.text(ROOT) == text,
        "node b's newcomer sees another order"
    );
    Rest::new(cluster.node(1)).wait_text(DOC, &text).await
}

#[tokio::test]
async fn deletions_alone_made_while_a_node_was_down_reach_it_after_its_restart() -> Result<()> {
    // A deletion does not advance a state vector: only the delete-set digest
    // tells node b that its copy is stale.
    const DOC: &str = "restart/deletions";
    let mut cluster = Cluster::start(2).await?;
    let alice = client(cluster.node(0), DOC).await?;
    let mut expected = type_words(&alice, "word", 20, Duration::ZERO, 4).await;
    let bob = client(cluster.node(1), DOC).await?;
    wait_words(&bob, &expected).await?;
    drop(bob);

    let status = cluster.nodes[1].terminate().await?;
    ensure!(status.success(), "node b exited with {status}");
    for gone in ["word0", "word7", "word19"] {
        ensure!(delete_word(&alice, gone), "{gone} was not there");
        expected.retain(|w| w != gone);
    }

    cluster.nodes[1].restart().await?;
    let carol = client(cluster.node(1), DOC).await?;
    wait_words(&carol, &expected).await?;
    Rest::new(cluster.node(1))
        .wait_text(DOC, &alice.text(ROOT))
        .await
}

#[tokio::test]
async fn a_document_deleted_while_a_node_was_down_stays_deleted_when_it_returns() -> Result<()> {
    // DELETE "removes it from storage on every node" (SPEC): a node that was
    // down when the deletion was announced must not bring it back.
    const DOC: &str = "restart/deleted";
    let mut cluster = Cluster::start(2).await?;
    let alice = client(cluster.node(0), DOC).await?;
    let typed = type_words(&alice, "doomed", 10, Duration::ZERO, 5).await;
    let bob = client(cluster.node(1), DOC).await?;
    wait_words(&bob, &typed).await?;
    drop(bob);

    let status = cluster.nodes[1].terminate().await?;
    ensure!(status.success(), "node b exited with {status}");
    let path = format!("/api/docs/{}", segment(DOC));
    let deleted = Rest::new(cluster.node(0)).delete(&path).await?;
    ensure!(
        deleted.status() == 204,
        "DELETE on node a: {}",
        deleted.status()
    );
    alice.wait_closed(WAIT).await?;

    cluster.nodes[1].restart().await?;
    wait_ready(cluster.node(1)).await?;
    for node in &cluster.nodes {
        let (status, body) = Rest::new(node).snapshot(DOC, "format=json").await?;
        ensure!(
            status == 404,
            "{} serves the deleted document again: {status} {}",
            node.addr(),
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}
