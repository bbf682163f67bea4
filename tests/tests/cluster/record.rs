//! PostgreSQL as the shared record (`--postgres-url`): no document depends
//! on one node's disk, a PostgreSQL crash costs readiness, not data, and a
//! delete decided in the record holds against a node's old spool.

use crate::support::{
    client, eventually, segment, type_words, wait_ready, wait_words, wipe_data_dir, Cluster, Rest,
    ROOT,
};
use anyhow::{ensure, Context, Result};
use std::time::Duration;

/// `GET /api/docs/{doc}`'s state vector (base64), or the status if not 200.
async fn state_vector(rest: &Rest, doc: &str) -> Result<String> {
    let response = rest.get(&format!("/api/docs/{}", segment(doc))).await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    ensure!(status.is_success(), "info of {doc}: {status} {body}");
    body["state_vector"]
        .as_str()
        .map(str::to_owned)
        .context("no state_vector")
}

#[tokio::test]
async fn fresh_nodes_on_empty_disks_serve_every_document_from_postgres_with_identical_state_vectors(
) -> Result<()> {
    let mut cluster = Cluster::start_recorded(3, &[]).await?;
    // Six documents, each written through one node only.
    let docs: Vec<String> = (0..6).map(|i| format!("record/doc-{i}")).collect();
    let mut before = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let writer = client(cluster.node(i % 3), doc).await?;
        let words = type_words(&writer, &format!("w{i}-"), 30, Duration::ZERO, i as u64).await;
        wait_words(&writer, &words).await?;
        // Every node agrees before the disks go.
        let node = Rest::new(cluster.node(i % 3));
        eventually(|| async {
            let text = node.text(doc).await.unwrap_or_default();
            Ok(text.contains(&words[29]).then_some(()))
        })
        .await?;
        before.push((
            doc.clone(),
            state_vector(&node, doc).await?,
            writer.text(ROOT),
        ));
    }

    for node in &mut cluster.nodes {
        let status = node.terminate().await?;
        ensure!(status.success(), "exit {status:?}\n{}", node.logs());
        wipe_data_dir(node)?;
    }
    for node in &mut cluster.nodes {
        node.restart().await?;
        wait_ready(node).await?;
    }

    for node in &cluster.nodes {
        let rest = Rest::new(node);
        for (doc, vector, text) in &before {
            ensure!(
                &state_vector(&rest, doc).await? == vector,
                "{doc} on a fresh node has another state vector"
            );
            ensure!(
                &rest.text(doc).await? == text,
                "{doc} on a fresh node differs"
            );
        }
        let listed = rest.get("/api/docs?prefix=record/").await?.text().await?;
        for doc in &docs {
            ensure!(listed.contains(doc.as_str()), "{doc} not listed: {listed}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_postgres_crash_under_writes_costs_readiness_not_data() -> Result<()> {
    let mut cluster = Cluster::start_recorded(2, &["--postgres-lag-secs", "1"]).await?;
    let doc = "record/through-a-crash";
    let a = client(cluster.node(0), doc).await?;
    let b = client(cluster.node(1), doc).await?;
    let postgres = cluster.postgres.as_ref().context("a recorded cluster")?;
    let mut words = type_words(&a, "before-", 20, Duration::from_millis(5), 1).await;

    postgres.crash().await?;
    // Typing goes on: both nodes serve and spool.
    words.extend(type_words(&a, "during-a-", 20, Duration::from_millis(50), 2).await);
    words.extend(type_words(&b, "during-b-", 20, Duration::from_millis(50), 3).await);
    let node_a = Rest::new(cluster.node(0));
    let (status, reason) = node_a.readyz().await?;
    ensure!(
        status == 503 && reason.contains("storage lagging"),
        "readyz while PostgreSQL is down: {status} {reason}"
    );
    wait_words(&b, &words).await?;

    postgres.start_again().await?;
    for node in &cluster.nodes {
        wait_ready(node).await?;
    }
    words.extend(type_words(&b, "after-", 10, Duration::from_millis(5), 4).await);
    wait_words(&a, &words).await?;
    let text = a.text(ROOT);

    // Nothing lost: fresh nodes on empty disks read it all from PostgreSQL.
    drop((a, b));
    for node in &mut cluster.nodes {
        let status = node.terminate().await?;
        ensure!(status.success(), "exit {status:?}\n{}", node.logs());
        wipe_data_dir(node)?;
        node.restart().await?;
    }
    Rest::new(cluster.node(1)).wait_text(doc, &text).await?;
    Ok(())
}

#[tokio::test]
async fn a_delete_made_while_a_node_was_down_holds_when_it_returns_with_an_old_spool() -> Result<()>
{
    let mut cluster = Cluster::start_recorded(3, &[]).await?;
    let doc = "record/deleted-while-c-was-down";
    let writer = client(cluster.node(2), doc).await?;
    let words = type_words(&writer, "w", 40, Duration::ZERO, 7).await;
    let a = Rest::new(cluster.node(0));
    eventually(|| async {
        Ok(a.get("/api/docs?prefix=record/")
            .await?
            .text()
            .await?
            .contains(doc)
            .then_some(()))
    })
    .await
    .context("never listed on node a")?;
    // Node c dies with the document in its sled copy and, likely, the last
    // words still in its spool.
    wait_words(&writer, &words).await?;
    drop(writer);
    cluster.nodes[2].kill().await?;

    let deleted = a.delete(&format!("/api/docs/{}", segment(doc))).await?;
    ensure!(
        deleted.status().as_u16() == 204,
        "delete: {}",
        deleted.status()
    );

    cluster.nodes[2].restart().await?;
    wait_ready(cluster.node(2)).await?;
    // Whatever c uploads or serves now, the document stays deleted.
    let c = Rest::new(cluster.node(2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for rest in [&a, &c] {
        let info = rest.get(&format!("/api/docs/{}", segment(doc))).await?;
        ensure!(
            info.status().as_u16() == 404,
            "after the delete: {}",
            info.status()
        );
        let listed = rest.get("/api/docs?prefix=record/").await?.text().await?;
        ensure!(!listed.contains(doc), "still listed: {listed}");
    }
    // And a new document of that name starts empty.
    let fresh = client(cluster.node(2), doc).await?;
    ensure!(
        fresh.text(ROOT).is_empty(),
        "came back: {:?}",
        fresh.text(ROOT)
    );
    Ok(())
}
