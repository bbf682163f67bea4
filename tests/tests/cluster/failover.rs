//! `kill -9` of a node: its clients, behind a load balancer with no sticky
//! sessions, reconnect to a surviving node and nothing anyone typed is lost.

use crate::support::{
    connect, eventually, insert_word, segment, text_update, wait_ready, wait_words, wipe_data_dir,
    Cluster, Rest, Rng, ROOT, WAIT,
};
use anyhow::{bail, ensure, Context, Result};
use quire_client::{Client, ClientConfig, Status};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

const DOC: &str = "failover/notes";
/// Words each client types.
const WORDS: usize = 120;
/// Words the clients of the doomed node type before it is killed.
const KILL_AFTER: usize = 40;
/// Typing speed: continuous, with the network free to interleave.
const PACE: Duration = Duration::from_millis(3);

/// What one typing client ended with.
struct Typed {
    client: Client,
    words: Vec<String>,
    /// How many times it moved to another node.
    moves: usize,
}

/// A client that types `WORDS` words without pause, as a browser tab behind
/// a load balancer would: `route` is the order in which the balancer offers
/// nodes (by `ws://` address). When its connection drops it goes to the
/// next node in the route that accepts it, keeping its yrs `Doc`, so
/// whatever the dead node never relayed is handed over by the state-vector
/// handshake. Words typed while disconnected stay in the `Doc` too.
async fn type_behind_load_balancer(
    route: Vec<String>,
    prefix: &'static str,
    seed: u64,
    progress: watch::Sender<usize>,
) -> Result<Typed> {
    let mut at = 0;
    let mut client = connect(ClientConfig::new(&route[at], DOC)).await?;
    let mut rng = Rng::new(seed);
    let mut words = Vec::with_capacity(WORDS);
    let mut moves = 0;
    for n in 0..WORDS {
        let word = format!("{prefix}{n}");
        insert_word(&client, &word, &mut rng);
        words.push(word);
        progress.send_replace(words.len());
        if client.status() == Status::Disconnected {
            client = fail_over(client, &route, &mut at).await?;
            moves += 1;
        }
        tokio::time::sleep(PACE).await;
    }
    if client.status() == Status::Disconnected {
        // The last words went into the `Doc` of a dead connection.
        client = fail_over(client, &route, &mut at).await?;
        moves += 1;
    }
    Ok(Typed {
        client,
        words,
        moves,
    })
}

/// Replaces a client whose node went away by one on the next node of the
/// route that accepts the connection, editing the same `Doc`.
async fn fail_over(old: Client, route: &[String], at: &mut usize) -> Result<Client> {
    let doc = old.doc().clone();
    // Unregisters the old client's observer from the shared `Doc`.
    drop(old);
    let deadline = Instant::now() + WAIT;
    loop {
        *at = (*at + 1) % route.len();
        match connect(ClientConfig::new(&route[*at], DOC).ydoc(doc.clone())).await {
            Ok(client) => return Ok(client),
            // Refused: that node is down too; the balancer tries the next.
            Err(err) if Instant::now() < deadline => {
                tracing::debug!(%err, "node refused; trying the next");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => return Err(err.context("no node accepted the client")),
        }
    }
}

/// What node a loses when it is killed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// Its process only: the data directory survives.
    Process,
    /// Its disk too: the data directory is emptied while it is down.
    Disk,
}

/// Four clients type, two of them on node a, which is killed mid-stream;
/// its clients move to survivors. Returns the converged text.
async fn kill_node_a_while_clients_type(cluster: &mut Cluster, loss: Loss) -> Result<String> {
    let [a, b, c] = [0, 1, 2].map(|i| cluster.node(i).ws_address());
    // Two clients on node a (the balancer will send them to b and to c next),
    // one on each survivor.
    let routes = [
        ("a1-", vec![a.clone(), b.clone(), c.clone()]),
        ("a2-", vec![a.clone(), c.clone(), b.clone()]),
        ("b1-", vec![b.clone(), c.clone(), a.clone()]),
        ("c1-", vec![c.clone(), b.clone(), a.clone()]),
    ];
    let mut typists = Vec::new();
    let mut progress = Vec::new();
    for (seed, (prefix, route)) in (1u64..).zip(routes) {
        let (report, watch) = watch::channel(0);
        typists.push(tokio::spawn(type_behind_load_balancer(
            route, prefix, seed, report,
        )));
        progress.push(watch);
    }

    // Node a dies mid-stream: its clients have typed words it may not have
    // relayed yet, and keep typing.
    for watch in &mut progress[..2] {
        if watch.wait_for(|typed| *typed >= KILL_AFTER).await.is_err() {
            break; // The typist failed; its error surfaces below.
        }
    }
    cluster.nodes[0].kill().await?;
    if loss == Loss::Disk {
        wipe_data_dir(&cluster.nodes[0])?;
    }

    let mut results = Vec::new();
    for typist in typists {
        results.push(typist.await.context("typist panicked")??);
    }
    for (index, typed) in results.iter().enumerate() {
        let moved = typed.moves;
        let url = typed.client.url();
        let on_a = url.starts_with(&format!("{a}/"));
        match index {
            0 | 1 if moved != 1 || on_a => {
                bail!("client {index} of node a moved {moved} times and is at {url}")
            }
            2 | 3 if moved != 0 => bail!("client {index} of a survivor moved {moved} times"),
            _ => {}
        }
    }
    ensure!(
        results[0].client.url() != results[1].client.url(),
        "both clients of node a went to the same survivor; the route was meant to split them"
    );

    let every_word: Vec<String> = results.iter().flat_map(|t| t.words.clone()).collect();
    ensure!(every_word.len() == 4 * WORDS);
    for typed in &results {
        wait_words(&typed.client, &every_word).await?;
    }
    let text = results[0].client.text(ROOT);
    for typed in &results[1..] {
        ensure!(
            typed.client.text(ROOT) == text,
            "{} holds the same words in another order",
            typed.client.url()
        );
    }
    for survivor in &cluster.nodes[1..] {
        Rest::new(survivor).wait_text(DOC, &text).await?;
    }
    Ok(text)
}

#[tokio::test]
async fn clients_of_a_killed_node_move_to_survivors_and_no_word_is_lost() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    kill_node_a_while_clients_type(&mut cluster, Loss::Process).await?;
    Ok(())
}

/// With PostgreSQL as the shared record, a node is only a cache: losing it
/// with its disk loses nothing, and what was created only through it is
/// listed and served by the others, and by it again on an empty disk.
#[tokio::test]
async fn with_postgres_a_node_lost_with_its_disk_loses_nothing_and_its_documents_stay_everywhere(
) -> Result<()> {
    let mut cluster = Cluster::start_recorded(3, &[]).await?;
    let only_a = "failover/only-on-a";
    let created = Rest::new(cluster.node(0))
        .post(
            &format!("/api/docs/{}/updates", segment(only_a)),
            text_update(ROOT, "created through node a"),
        )
        .await?;
    ensure!(created.status().is_success(), "{}", created.status());
    // Listed by node c, which never held it: the listing is PostgreSQL's.
    let c = Rest::new(cluster.node(2));
    eventually(|| async {
        let listed = c.get("/api/docs?prefix=failover/").await?.text().await?;
        Ok(listed.contains(only_a).then_some(()))
    })
    .await
    .context("node c never listed the document created through node a")?;

    let text = kill_node_a_while_clients_type(&mut cluster, Loss::Disk).await?;

    c.wait_text(only_a, "created through node a").await?;
    // Node a comes back on an empty disk and serves both from the record.
    cluster.nodes[0].restart().await?;
    wait_ready(cluster.node(0)).await?;
    let a = Rest::new(cluster.node(0));
    a.wait_text(only_a, "created through node a").await?;
    a.wait_text(DOC, &text).await?;
    let listed = a.get("/api/docs?prefix=failover/").await?.text().await?;
    ensure!(
        listed.contains(only_a) && listed.contains(DOC),
        "node a lists {listed}"
    );
    Ok(())
}
