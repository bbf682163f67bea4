//! Redis goes down: every node keeps serving its own clients and says it is
//! not ready; when Redis returns (same address, empty), nodes heal by state
//! vector with no restart, and every client ends with every edit.

use crate::support::{
    client, eventually, sorted, type_words, wait_ready, wait_words, wipe_data_dir, words, Cluster,
    Rest, ROOT,
};
use anyhow::{ensure, Context, Result};
use std::time::Duration;

const DOC: &str = "outage/notes";

#[tokio::test]
async fn edits_made_while_redis_is_down_converge_after_it_returns_without_restarts() -> Result<()> {
    let mut cluster = Cluster::start(2).await?;
    edit_through_a_redis_outage(&mut cluster).await?;
    Ok(())
}

/// With PostgreSQL as the record, persisting goes on while Redis is down:
/// each node uploads what its clients type, and the converged text is what
/// fresh nodes on empty disks read back.
#[tokio::test]
async fn with_postgres_persisting_goes_on_while_redis_is_down() -> Result<()> {
    let mut cluster = Cluster::start_recorded(2, &[]).await?;
    let text = edit_through_a_redis_outage(&mut cluster).await?;
    for node in &mut cluster.nodes {
        let status = node.terminate().await?;
        ensure!(status.success(), "exit {status:?}\n{}", node.logs());
        wipe_data_dir(node)?;
        node.restart().await?;
    }
    Rest::new(cluster.node(1)).wait_text(DOC, &text).await?;
    Ok(())
}

/// Both nodes' clients type before, during and after a Redis outage;
/// returns the converged text.
async fn edit_through_a_redis_outage(cluster: &mut Cluster) -> Result<String> {
    let recorded = cluster.postgres.is_some();
    let a1 = client(cluster.node(0), DOC).await?;
    let a2 = client(cluster.node(0), DOC).await?;
    let b1 = client(cluster.node(1), DOC).await?;

    // Before: the relay works.
    let (before_a, before_b) = tokio::join!(
        type_words(&a1, "before-a", 20, Duration::from_millis(1), 1),
        type_words(&b1, "before-b", 20, Duration::from_millis(1), 2),
    );
    let before = [before_a, before_b].concat();
    for client in [&a1, &a2, &b1] {
        wait_words(client, &before).await?;
    }

    cluster.redis.stop().await?;
    for node in &cluster.nodes {
        let rest = Rest::new(node);
        let reason = eventually(|| async {
            let (status, body) = rest.readyz().await?;
            Ok((status == 503).then_some(body))
        })
        .await
        .with_context(|| format!("{} stayed ready without redis", node.addr()))?;
        ensure!(
            reason.to_lowercase().contains("redis"),
            "{}: the 503 does not say why: {reason}",
            node.addr()
        );
    }

    let uploaded_before = if recorded {
        Rest::new(cluster.node(0))
            .counter("quire_uploaded_updates_total")
            .await?
    } else {
        0.0
    };
    // Both sides keep editing for about two seconds of outage.
    let pace = Duration::from_millis(40);
    let (down_a, down_b) = tokio::join!(
        type_words(&a1, "down-a", 50, pace, 3),
        type_words(&b1, "down-b", 50, pace, 4),
    );
    // Node a still serves its own clients...
    wait_words(&a2, &[before.clone(), down_a.clone()].concat()).await?;
    // ...and nothing can have crossed to node b.
    ensure!(
        words(&b1.text(ROOT)) == sorted(&[before.clone(), down_b.clone()].concat()),
        "node b's client got edits from node a while redis was down: {}",
        b1.text(ROOT)
    );
    for node in &cluster.nodes {
        let (status, _) = Rest::new(node).readyz().await?;
        ensure!(
            status == 503,
            "{} became ready while redis was down",
            node.addr()
        );
    }
    if recorded {
        let rest = Rest::new(cluster.node(0));
        eventually(|| async {
            let uploaded = rest.counter("quire_uploaded_updates_total").await?;
            Ok((uploaded >= uploaded_before + down_a.len() as f64).then_some(()))
        })
        .await
        .context("node a stopped uploading to PostgreSQL while redis was down")?;
    }

    cluster.redis.restart().await?;
    // Edits keep coming while the nodes find Redis again.
    let (after_a, after_b) = tokio::join!(
        type_words(&a2, "after-a", 10, Duration::from_millis(5), 5),
        type_words(&b1, "after-b", 10, Duration::from_millis(5), 6),
    );
    for node in &cluster.nodes {
        wait_ready(node).await?;
    }

    let every_word = [before, down_a, down_b, after_a, after_b].concat();
    for client in [&a1, &a2, &b1] {
        wait_words(client, &every_word).await?;
    }
    let text = a1.text(ROOT);
    ensure!(
        a2.text(ROOT) == text && b1.text(ROOT) == text,
        "clients disagree on order"
    );
    for node in &cluster.nodes {
        Rest::new(node).wait_text(DOC, &text).await?;
    }
    Ok(text)
}

#[tokio::test]
async fn after_redis_returns_a_node_that_never_loaded_a_document_still_reads_it_from_its_peers(
) -> Result<()> {
    const DOC: &str = "outage/read-after";
    let mut cluster = Cluster::start(2).await?;
    let alice = client(cluster.node(0), DOC).await?;
    let typed = type_words(&alice, "word", 5, Duration::ZERO, 7).await;
    let expected = alice.text(ROOT);
    // Node b has talked to Redis before (it asked its peers about some
    // document) but has nothing loaded when Redis goes away.
    let (status, _) = Rest::new(cluster.node(1))
        .snapshot("outage/never-written", "format=json")
        .await?;
    ensure!(status == 404, "a document nobody wrote: {status}");

    // A short outage with no edits at all.
    cluster.redis.stop().await?;
    for node in &cluster.nodes {
        let rest = Rest::new(node);
        eventually(|| async { Ok((rest.readyz().await?.0 == 503).then_some(())) })
            .await
            .with_context(|| format!("{} stayed ready without redis", node.addr()))?;
    }
    cluster.redis.restart().await?;
    for node in &cluster.nodes {
        wait_ready(node).await?;
    }

    // Both nodes say they are ready: a read on node b must find the document.
    let (status, body) = Rest::new(cluster.node(1))
        .snapshot(DOC, &format!("format=text&root={ROOT}"))
        .await?;
    ensure!(
        status == 200 && body == expected.as_bytes(),
        "node b answered {status} {} for a document node a holds ({} words)",
        String::from_utf8_lossy(&body),
        typed.len()
    );
    Ok(())
}
