//! Three nodes on a Redis Cluster (3 primaries, 3 replicas) given as
//! `--redis-url` seeds: document channels use sharded pub/sub, and survive
//! the two events redis-rs alone does not recover from, an in-place slot
//! migration and a primary's failover, without the periodic resync (out of
//! reach, as in the whole suite). Each test prints what it measured.

use crate::support::{
    client, insert_word, sorted, type_words, wait_words, words, Rest, Rng, ShardedCluster, ROOT,
    WAIT,
};
use anyhow::{ensure, Context, Result};
use quire_client::Client;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Typing speed of the scenarios (not a wait for anything).
const PACE: Duration = Duration::from_millis(5);

fn channel_of(doc: &str) -> String {
    format!("quire:doc:{{{doc}}}")
}

/// Waits until `client`'s text holds `word`; how long that took.
async fn wait_word(client: &Client, word: &str) -> Result<Duration> {
    let started = Instant::now();
    client
        .wait_for(WAIT, |doc| {
            words(&crate::support::text_of(doc, ROOT))
                .iter()
                .any(|w| w == word)
        })
        .await
        .with_context(|| format!("{} never received {word:?}", client.url()))?;
    Ok(started.elapsed())
}

#[tokio::test]
async fn words_typed_on_one_node_reach_readers_on_two_others_through_sharded_pub_sub() -> Result<()>
{
    const DOC: &str = "sharded/relay";
    let cluster = ShardedCluster::start(3).await?;
    let writer = client(cluster.node(0), DOC).await?;
    let readers = [
        client(cluster.node(1), DOC).await?,
        client(cluster.node(2), DOC).await?,
    ];
    // Every node holds the document's channel as a shard channel.
    let subscribers = cluster.redis.shard_subscribers(&channel_of(DOC)).await?;
    ensure!(
        subscribers == 3,
        "{subscribers} shard subscribers of {DOC}'s channel, expected one per node"
    );
    let typed = type_words(&writer, "w", 200, PACE, 1).await;
    for reader in &readers {
        wait_words(reader, &typed).await?;
    }
    Ok(())
}

#[tokio::test]
async fn after_the_documents_slot_moves_to_another_shard_the_next_update_is_still_relayed(
) -> Result<()> {
    const DOC: &str = "sharded/migrating";
    let cluster = ShardedCluster::start(3).await?;
    let alice = client(cluster.node(0), DOC).await?;
    let bob = client(cluster.node(1), DOC).await?;
    let mut expected = type_words(&alice, "before", 3, PACE, 1).await;
    wait_words(&bob, &expected).await?;

    let channel = channel_of(DOC);
    let slot = cluster.redis.keyslot(&channel).await?;
    let from = cluster.redis.owner_of(slot).await?;
    let primaries = cluster.redis.primaries().await?;
    let to = *primaries
        .iter()
        .find(|p| **p != from)
        .context("no other primary")?;
    let moved_at = cluster.redis.migrate_slot(slot, to).await?;

    // Redis unsubscribed every node from the channel; only Quire's own
    // resubscription (or healing triggered by it) brings this word to Bob.
    insert_word(&alice, "after", &mut Rng::new(2));
    expected.push("after".to_owned());
    wait_word(&bob, "after").await?;
    eprintln!(
        "slot {slot} moved from redis node {from} to {to}: the next update reached node b {:?} after SETSLOT NODE",
        moved_at.elapsed()
    );
    ensure!(
        cluster.redis.owner_of(slot).await? == to,
        "the slot did not move"
    );
    for index in [0, 1] {
        let resubscribed = Rest::new(cluster.node(index))
            .counter_where(
                "quire_redis_resubscriptions_total",
                r#"reason="slot_moved""#,
            )
            .await?;
        ensure!(
            resubscribed >= 1.0,
            "node {index} never subscribed to the moved channel again"
        );
    }
    ensure!(
        cluster.redis.shard_subscribers(&channel).await? == 2,
        "the new owner of the slot does not hold both nodes' subscriptions"
    );
    // And the channel keeps relaying, both ways.
    expected.extend(type_words(&alice, "alice", 20, PACE, 3).await);
    expected.extend(type_words(&bob, "bob", 20, PACE, 4).await);
    wait_words(&alice, &expected).await?;
    wait_words(&bob, &expected).await
}

/// Types words named `{prefix}{n}` until `stop` turns true.
async fn type_until(
    client: &Client,
    prefix: &str,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut typed = Vec::new();
    while !*stop.borrow() {
        let word = format!("{prefix}{}", typed.len());
        insert_word(client, &word, &mut rng);
        typed.push(word);
        let _ = tokio::time::timeout(Duration::from_millis(20), stop.changed()).await;
    }
    typed
}

#[tokio::test]
async fn killing_the_primary_of_the_documents_slot_while_two_nodes_type_loses_no_word() -> Result<()>
{
    const DOC: &str = "sharded/failover";
    let mut cluster = ShardedCluster::start(3).await?;
    let alice = client(cluster.node(0), DOC).await?;
    let bob = client(cluster.node(1), DOC).await?;
    let slot = cluster.redis.keyslot(&channel_of(DOC)).await?;
    let owner = cluster.redis.owner_of(slot).await?;
    let (stop, stopped) = watch::channel(false);

    let redis = &mut cluster.redis;
    let fault = async {
        // Both type for a while before the primary dies, through its
        // failover, and for a while after.
        let failover = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            redis.kill(owner).await?;
            let killed = Instant::now();
            let promoted = redis.wait_failed_over(slot).await?;
            let promotion = killed.elapsed();
            insert_word(&alice, "probe", &mut Rng::new(9));
            let relayed = wait_word(&bob, "probe").await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            anyhow::Ok((promoted, promotion, relayed))
        };
        let outcome = failover.await;
        // Whatever happened, the typists stop.
        stop.send_replace(true);
        outcome
    };
    let (typed_a, typed_b, fault) = tokio::join!(
        type_until(&alice, "a", 1, stopped.clone()),
        type_until(&bob, "b", 2, stopped.clone()),
        fault
    );
    let (promoted, promotion, relayed) = fault?;
    eprintln!(
        "primary {owner} of slot {slot} killed: replica {promoted} promoted after {promotion:?}; \
         an update typed then reached node b {relayed:?} later"
    );

    let converging = Instant::now();
    let mut expected: Vec<String> = typed_a.into_iter().chain(typed_b).collect();
    expected.push("probe".to_owned());
    wait_words(&alice, &expected).await?;
    wait_words(&bob, &expected).await?;
    eprintln!(
        "{} words typed during the failover converged {:?} after typing stopped",
        expected.len(),
        converging.elapsed()
    );
    ensure!(
        alice.text(ROOT) == bob.text(ROOT),
        "same words, different order"
    );
    ensure!(sorted(&expected) == words(&alice.text(ROOT)));
    for index in [0, 1] {
        let resubscribed = Rest::new(cluster.node(index))
            .counter_where(
                "quire_redis_resubscriptions_total",
                r#"reason="disconnection""#,
            )
            .await?;
        ensure!(
            resubscribed >= 1.0,
            "node {index} never subscribed again after the failover"
        );
    }
    // Every Quire node lived through the failover: none may have been taken
    // for dead (its clients' presence would have flickered).
    for node in &cluster.nodes {
        let declared = Rest::new(node)
            .counter("quire_cluster_peers_declared_dead_total")
            .await?;
        ensure!(
            declared == 0.0,
            "{} declared {declared} live peers dead during the redis failover",
            node.addr()
        );
    }
    Ok(())
}

#[tokio::test]
async fn several_seeds_that_are_not_a_redis_cluster_are_refused_and_the_node_is_not_ready(
) -> Result<()> {
    let redis = quire_client::testing::RedisServer::start().await?;
    // Two independent servers would split the nodes into groups that never
    // hear each other; the same one twice is no cluster either.
    let seeds = format!("{},{}", redis.url(), redis.url());
    let node =
        quire_client::testing::TestServer::start_with(["--redis-url", seeds.as_str()]).await?;
    let rest = Rest::new(&node);
    let reason = crate::support::eventually(|| async {
        let (status, body) = rest.readyz().await?;
        Ok((status == 503 && body.contains("not a Redis Cluster")).then_some(body))
    })
    .await
    .context("/readyz never said why the seeds are refused")?;
    ensure!(reason.contains("2 seeds"), "{reason}");
    Ok(())
}
