//! Node heartbeats: the presence a node relayed disappears from the other
//! nodes' clients a few seconds after that node is killed, instead of
//! lingering (our headless clients never time presence out; browsers would
//! after 30 s). Nothing but the heartbeat can remove it: the killed node
//! sends no removal, and its client reconnects nowhere.

use crate::support::{client, wait_presence, Cluster, Rest, ShardedCluster};
use anyhow::{ensure, Context, Result};
use quire_client::testing::TestServer;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

/// Well under y-protocols' 30 s awareness timeout, well over three missed
/// 1 s beats: only the heartbeat removes presence this soon.
const WITHIN: Duration = Duration::from_secs(10);

/// Alice on node a (index 0) has presence, Bob on node b sees it; node a is
/// killed, and Bob stops seeing Alice.
async fn presence_of_a_killed_node_disappears(
    nodes: &mut [TestServer],
    doc: &str,
) -> Result<Duration> {
    let alice = client(&nodes[0], doc).await?;
    let bob = client(&nodes[1], doc).await?;
    let state = json!({ "user": "alice", "cursor": 3 });
    alice.set_awareness(state.clone()).await?;
    wait_presence(&bob, alice.client_id(), &state).await?;
    let bobs = json!({ "user": "bob" });
    bob.set_awareness(bobs.clone()).await?;

    nodes[0].kill().await?;
    let killed = Instant::now();
    let alice_id = alice.client_id();
    bob.wait_for_awareness(WITHIN, |states| !states.contains_key(&alice_id))
        .await
        .with_context(|| {
            format!(
                "Bob still sees Alice {WITHIN:?} after her node was killed: {:?}",
                bob.peer_states()
            )
        })?;
    let elapsed = killed.elapsed();
    ensure!(
        bob.awareness_states().get(&bob.client_id()) == Some(&bobs),
        "Bob's own presence went too"
    );
    let declared = Rest::new(&nodes[1])
        .counter("quire_cluster_peers_declared_dead_total")
        .await?;
    ensure!(
        declared == 1.0,
        "node b declared {declared} peers dead; only node a died"
    );
    Ok(elapsed)
}

#[tokio::test]
async fn presence_of_a_killed_node_disappears_within_seconds_on_a_single_redis() -> Result<()> {
    let mut cluster = Cluster::start(2).await?;
    let elapsed = presence_of_a_killed_node_disappears(&mut cluster.nodes, "beat/single").await?;
    eprintln!("single redis: presence of the killed node's client gone after {elapsed:?}");
    Ok(())
}

#[tokio::test]
async fn presence_of_a_killed_node_disappears_within_seconds_on_a_redis_cluster() -> Result<()> {
    let mut cluster = ShardedCluster::start(2).await?;
    let elapsed = presence_of_a_killed_node_disappears(&mut cluster.nodes, "beat/sharded").await?;
    eprintln!("redis cluster: presence of the killed node's client gone after {elapsed:?}");
    Ok(())
}
