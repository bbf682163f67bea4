//! REST on one node acts on the document of the whole cluster.

use crate::support::{
    client, eventually, segment, text_of, text_update, type_words, wait_words, Cluster, Rest, ROOT,
    WAIT,
};
use anyhow::{ensure, Context, Result};
use quire_client::testing::TestServer;
use quire_client::Client;
use std::time::Duration;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Transact, Update};

#[tokio::test]
async fn an_update_posted_to_one_node_reaches_clients_of_another_and_reads_of_a_third() -> Result<()>
{
    const DOC: &str = "rest/posted";
    let cluster = Cluster::start(3).await?;
    let bob = client(cluster.node(1), DOC).await?;

    let response = Rest::new(cluster.node(0))
        .post(
            &format!("/api/docs/{}/updates", segment(DOC)),
            text_update(ROOT, "posted on node a"),
        )
        .await?;
    ensure!(
        response.status() == 204,
        "POST on node a: {}",
        response.status()
    );
    bob.wait_for(WAIT, |doc| text_of(doc, ROOT) == "posted on node a")
        .await
        .context("the client on node b never received the posted update")?;

    // Node C never loaded the document and stores nothing: it asks its peers.
    let carol = Rest::new(cluster.node(2));
    ensure!(carol.text(DOC).await? == "posted on node a");
    let (status, snapshot) = carol.snapshot(DOC, "format=yjs").await?;
    ensure!(status == 200, "yjs snapshot on node c: {status}");
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&snapshot)?)?;
    ensure!(text_of(&doc, ROOT) == "posted on node a");
    let info = carol.get(&format!("/api/docs/{}", segment(DOC))).await?;
    ensure!(
        info.status() == 200,
        "metadata on node c: {}",
        info.status()
    );
    Ok(())
}

#[tokio::test]
async fn a_document_no_node_holds_is_404_on_every_node() -> Result<()> {
    const DOC: &str = "rest/nowhere";
    let cluster = Cluster::start(2).await?;
    for round in 0..2 {
        for node in &cluster.nodes {
            let (status, body) = Rest::new(node).snapshot(DOC, "format=json").await?;
            ensure!(
                status == 404,
                "round {round}, {}: {status} {}",
                node.addr(),
                String::from_utf8_lossy(&body)
            );
        }
    }
    // Asking did not leave a phantom behind on either node.
    for node in &cluster.nodes {
        let list = Rest::new(node).get("/api/docs").await?.text().await?;
        ensure!(!list.contains(DOC), "{} lists {DOC}: {list}", node.addr());
    }
    Ok(())
}

#[tokio::test]
async fn deleting_on_one_node_closes_sockets_on_every_node_with_4404() -> Result<()> {
    const DOC: &str = "rest/doomed";
    let cluster = Cluster::start(2).await?;
    let alice = client(cluster.node(0), DOC).await?;
    let bob = client(cluster.node(1), DOC).await?;
    let typed = type_words(&alice, "doomed", 10, Duration::ZERO, 7).await;
    wait_words(&bob, &typed).await?;

    delete_and_expect_4404(
        cluster.node(0),
        DOC,
        &[("alice on node a", &alice), ("bob on node b", &bob)],
    )
    .await?;
    // Gone on every node, not only where it was deleted.
    for node in &cluster.nodes {
        let rest = Rest::new(node);
        eventually(|| async {
            let (status, _) = rest.snapshot(DOC, "format=json").await?;
            Ok((status == 404).then_some(()))
        })
        .await
        .with_context(|| format!("{DOC} still served by {}", node.addr()))?;
    }
    Ok(())
}

#[tokio::test]
async fn redis_traffic_is_counted_in_metrics() -> Result<()> {
    const DOC: &str = "rest/metrics";
    let cluster = Cluster::start(2).await?;
    let alice = client(cluster.node(0), DOC).await?;
    let bob = client(cluster.node(1), DOC).await?;
    let typed = type_words(&alice, "counted", 5, Duration::ZERO, 9).await;
    wait_words(&bob, &typed).await?;

    let (a, b) = (Rest::new(cluster.node(0)), Rest::new(cluster.node(1)));
    let published = a.counter("quire_redis_published_total").await?;
    let received = b.counter("quire_redis_received_total").await?;
    let resyncs = b.counter("quire_redis_resyncs_total").await?;
    ensure!(published >= 1.0, "node a published {published}");
    ensure!(received >= 1.0, "node b received {received}");
    // Loading the document on node b asked its peers for what it lacked.
    ensure!(resyncs >= 1.0, "node b resynced {resyncs} times");
    Ok(())
}

#[tokio::test]
async fn a_delete_sent_to_a_node_that_never_saw_the_document_deletes_it_everywhere() -> Result<()> {
    const DOC: &str = "rest/deleted-from-afar";
    let cluster = Cluster::start(3).await?;
    let alice = client(cluster.node(0), DOC).await?;
    let typed = type_words(&alice, "word", 5, Duration::ZERO, 11).await;
    let bob = client(cluster.node(1), DOC).await?;
    wait_words(&bob, &typed).await?;

    // Node c has neither loaded nor stored the document.
    delete_and_expect_4404(
        cluster.node(2),
        DOC,
        &[("alice on node a", &alice), ("bob on node b", &bob)],
    )
    .await?;
    Ok(())
}

/// Deletes `doc` through `node`, then expects every one of `clients` to be
/// closed with 4404, wherever it is connected.
async fn delete_and_expect_4404(
    node: &TestServer,
    doc: &str,
    clients: &[(&str, &Client)],
) -> Result<()> {
    let response = Rest::new(node)
        .delete(&format!("/api/docs/{}", segment(doc)))
        .await?;
    ensure!(response.status() == 204, "DELETE: {}", response.status());
    for (who, client) in clients {
        let close = client
            .wait_closed(WAIT)
            .await
            .with_context(|| format!("{who} was not disconnected"))?;
        ensure!(
            close.as_ref().map(|c| c.code) == Some(4404),
            "{who} closed with {close:?}"
        );
    }
    Ok(())
}
