//! Webhooks in a cluster (`--postgres-url`): the outbox is in PostgreSQL,
//! so each event is written once however many nodes uploaded the change,
//! and delivered by one node; a node killed in the middle of a delivery
//! leaves it to the others once its lease ends; dead letters are the
//! cluster's, listed and replayed through any node; connection events,
//! written by each node, are delivered once too.

use crate::support::{
    client, eventually, node_id, segment, text_update, type_words, wait_ready, wait_words, Cluster,
    Rest, NO_PERIODIC_RESYNC, ROOT,
};
use anyhow::{ensure, Context, Result};
use base64::Engine;
use quire_client::testing::webhook_receiver::{verify, Answer, Received};
use quire_client::testing::{TestServer, WebhookReceiver};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use yrs::updates::decoder::Decode;
use yrs::StateVector;

/// The signing secret (used as its bytes: no `whsec_` prefix).
const SECRET: &str = "cluster-secret";

/// Long enough for a lease to end and a retry or two; a failure guard.
const DELIVERED: Duration = Duration::from_secs(45);

/// Every node's webhook flags; `timeout_ms` also sets the lease (+5 s).
fn flags(receiver: &WebhookReceiver, timeout_ms: &str) -> Vec<String> {
    [
        "--webhook-url",
        &receiver.url(),
        "--webhook-secret",
        SECRET,
        "--webhook-debounce-ms",
        "300",
        "--webhook-timeout-ms",
        timeout_ms,
        "--webhook-retry-ms",
        "100",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn decode_sv(b64: &str) -> Result<StateVector> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    Ok(StateVector::decode_v1(&bytes)?)
}

/// The state vector `node` serves for `doc`.
async fn served_state_vector(rest: &Rest, doc: &str) -> Result<StateVector> {
    let response = rest.get(&format!("/api/docs/{}", segment(doc))).await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    ensure!(status.is_success(), "info of {doc}: {status} {body}");
    decode_sv(body["state_vector"].as_str().context("no state_vector")?)
}

/// The state vector the last `document.updated` of `doc` carried.
fn last_updated(received: &[Received], doc: &str) -> Option<StateVector> {
    received
        .iter()
        .rfind(|r| r.kind() == "document.updated" && r.document() == doc)
        .and_then(|r| r.event["data"]["state_vector"].as_str())
        .and_then(|b64| decode_sv(b64).ok())
}

fn count(received: &[Received], kind: &str, doc: &str) -> usize {
    received
        .iter()
        .filter(|r| r.kind() == kind && r.document() == doc)
        .count()
}

/// Waits until every node's outbox gauges say nothing is pending, marked
/// or dead: after that no event can arrive without a new change.
async fn wait_drained(cluster: &Cluster) -> Result<()> {
    for node in &cluster.nodes {
        let rest = Rest::new(node);
        eventually(|| async {
            let pending = rest.counter("quire_webhook_outbox_entries").await?;
            let marked = rest.counter("quire_webhook_marked_documents").await?;
            let dead = rest.counter("quire_webhook_dead_letters").await?;
            Ok((pending + marked + dead == 0.0).then_some(()))
        })
        .await
        .with_context(|| format!("the outbox never drained as seen by {}", node.addr()))?;
    }
    Ok(())
}

#[tokio::test]
async fn each_event_is_written_once_and_delivered_once_whichever_nodes_made_the_change(
) -> Result<()> {
    let receiver = WebhookReceiver::start().await?;
    let flags = flags(&receiver, "2000");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = Cluster::start_recorded(3, &flags).await?;

    // Three documents, each typed into by a client on every node at once.
    let docs: Vec<String> = (0..3).map(|i| format!("hooks/doc-{i}")).collect();
    let mut clients = Vec::new();
    for doc in &docs {
        let mut per_doc = Vec::new();
        for node in &cluster.nodes {
            per_doc.push(client(node, doc).await?);
        }
        clients.push(per_doc);
    }
    for (d, per_doc) in clients.iter().enumerate() {
        let prefixes: Vec<String> = (0..per_doc.len()).map(|n| format!("d{d}n{n}w")).collect();
        let typing = per_doc
            .iter()
            .zip(&prefixes)
            .enumerate()
            .map(|(n, (c, prefix))| {
                type_words(c, prefix, 15, Duration::from_millis(10), (d * 3 + n) as u64)
            });
        let typed: Vec<String> = futures_util::future::join_all(typing)
            .await
            .into_iter()
            .flatten()
            .collect();
        for c in per_doc {
            wait_words(c, &typed).await?;
        }
    }
    let rest = Rest::new(cluster.node(0));
    let mut converged = BTreeMap::new();
    for doc in &docs {
        converged.insert(doc.clone(), served_state_vector(&rest, doc).await?);
    }

    // Every node's copy of the edits is uploaded, and the last event of
    // each document carries the state the clients converged on.
    receiver
        .wait_for(DELIVERED, |all| {
            docs.iter().all(|doc| {
                count(all, "document.created", doc) >= 1
                    && last_updated(all, doc).as_ref() == converged.get(doc)
            })
        })
        .await
        .map_err(anyhow::Error::msg)?;

    // A delete through node b; its clients leave first, so that none of
    // them brings the document back.
    let gone = &docs[2];
    drop(clients.pop());
    let deleted = Rest::new(cluster.node(1))
        .delete(&format!("/api/docs/{}", segment(gone)))
        .await?;
    ensure!(
        deleted.status().is_success(),
        "delete: {}",
        deleted.status()
    );
    receiver
        .wait_for(DELIVERED, |all| count(all, "document.deleted", gone) == 1)
        .await
        .map_err(anyhow::Error::msg)?;
    wait_drained(&cluster).await?;

    let received = receiver.received();
    let mut ids = BTreeSet::new();
    for r in &received {
        verify(SECRET.as_bytes(), r).map_err(anyhow::Error::msg)?;
        ensure!(
            r.answer == Answer::Status(200),
            "the receiver answered {:?} in a healthy run",
            r.answer
        );
        ensure!(
            ids.insert(r.id.clone()),
            "event {} ({} of {}) was delivered twice",
            r.id,
            r.kind(),
            r.document()
        );
        ensure!(
            r.event["id"] == r.id.as_str(),
            "webhook-id is the event's id"
        );
    }
    for doc in &docs {
        ensure!(
            count(&received, "document.created", doc) == 1,
            "{doc}: {} document.created",
            count(&received, "document.created", doc)
        );
        ensure!(
            last_updated(&received, doc).as_ref() == converged.get(doc),
            "{doc}: the last document.updated is not the converged state"
        );
    }
    ensure!(count(&received, "document.deleted", &docs[0]) == 0);
    ensure!(count(&received, "document.deleted", gone) == 1);
    Ok(())
}

#[tokio::test]
async fn a_node_killed_mid_delivery_leaves_its_leased_events_to_the_others() -> Result<()> {
    let receiver = WebhookReceiver::start().await?;
    // The first delivery gets no answer: the node that sent it is killed
    // while it waits, holding the entry's lease (1 s + 5 s).
    receiver.script([Answer::Hang(Duration::from_secs(30))]);
    let flags = flags(&receiver, "1000");
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    // Node a alone, so that it is the one that claims the first event.
    let mut cluster = Cluster::start_recorded(1, &flag_refs).await?;
    let doc = "hooks/crash";
    let writer = client(cluster.node(0), doc).await?;
    let typed = type_words(&writer, "w", 10, Duration::ZERO, 7).await;
    wait_words(&writer, &typed).await?;
    let first = receiver
        .wait_for(DELIVERED, |all| !all.is_empty())
        .await
        .map_err(anyhow::Error::msg)?;
    cluster.nodes[0].kill().await?;
    drop(writer);
    let leased = first[0].clone();
    ensure!(
        leased.kind() == "document.created" && leased.document() == doc,
        "the first delivery is {} of {}",
        leased.kind(),
        leased.document()
    );

    // Nodes b and c join; neither ever saw the document or the delivery.
    let postgres = cluster.postgres.as_ref().context("a recorded cluster")?;
    for index in 1..3 {
        let mut args = vec![
            "--redis-url".to_owned(),
            cluster.redis.url(),
            "--node-id".to_owned(),
            node_id(index),
            "--cluster-resync-secs".to_owned(),
            NO_PERIODIC_RESYNC.to_owned(),
            "--postgres-url".to_owned(),
            postgres.url(),
        ];
        args.extend(flags.iter().cloned());
        let node = TestServer::start_with(args).await?;
        wait_ready(&node).await?;
        cluster.nodes.push(node);
    }
    let sv = served_state_vector(&Rest::new(cluster.node(1)), doc).await?;
    let received = receiver
        .wait_for(DELIVERED, |all| {
            let again = all
                .iter()
                .skip(1)
                .any(|r| r.id == leased.id && r.answer == Answer::Status(200));
            again && last_updated(all, doc).as_ref() == Some(&sv)
        })
        .await
        .map_err(anyhow::Error::msg)?;
    for r in &received {
        verify(SECRET.as_bytes(), r).map_err(anyhow::Error::msg)?;
    }
    ensure!(
        count(&received, "document.created", doc) == 2,
        "document.created: sent once by the killed node, once after its lease"
    );
    Ok(())
}

/// `GET /api/webhooks/dead-letters` on one node.
async fn dead_letters(rest: &Rest) -> Result<Vec<serde_json::Value>> {
    let listed: serde_json::Value = rest.get("/api/webhooks/dead-letters").await?.json().await?;
    Ok(listed["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

#[tokio::test]
async fn dead_letters_are_the_clusters_listed_and_replayed_through_any_node() -> Result<()> {
    // The receiver is down: every attempt fails until it comes back.
    let receiver = WebhookReceiver::start().await?;
    let addr = receiver.addr();
    receiver.stop();
    let url = format!("http://{addr}/hooks");
    let cluster = Cluster::start_recorded(
        2,
        &[
            "--webhook-url",
            &url,
            "--webhook-secret",
            SECRET,
            "--webhook-debounce-ms",
            "100",
            "--webhook-timeout-ms",
            "500",
            "--webhook-retry-ms",
            "50",
            "--webhook-max-attempts",
            "3",
        ],
    )
    .await?;
    let (a, b) = (Rest::new(cluster.node(0)), Rest::new(cluster.node(1)));
    let doc = "hooks/unheard";
    let posted = a
        .post(
            &format!("/api/docs/{}/updates", segment(doc)),
            text_update(ROOT, "hello"),
        )
        .await?;
    ensure!(posted.status().is_success(), "post: {}", posted.status());

    // created and updated, each tried three times (by either node), then
    // parked; both nodes list the same dead letters.
    let dead = eventually(|| async {
        let dead = dead_letters(&b).await?;
        Ok((dead.len() == 2).then_some(dead))
    })
    .await?;
    for letter in &dead {
        ensure!(letter["attempts"] == 3, "{letter}");
        ensure!(letter["document"] == doc, "{letter}");
        ensure!(letter["endpoint"] == url.as_str(), "{letter}");
    }
    let kinds: BTreeSet<&str> = dead.iter().filter_map(|l| l["type"].as_str()).collect();
    ensure!(
        kinds == BTreeSet::from(["document.created", "document.updated"]),
        "{kinds:?}"
    );
    ensure!(
        dead_letters(&a).await? == dead,
        "node a lists other dead letters"
    );

    // The receiver is back: one replayed through node b, the rest through a.
    let receiver = WebhookReceiver::start_on(addr).await?;
    let first = dead[0]["id"].as_u64().context("id")?;
    let replayed = b
        .post(
            &format!("/api/webhooks/dead-letters/{first}/replay"),
            Vec::new(),
        )
        .await?;
    ensure!(
        replayed.status() == 202,
        "replay one: {}",
        replayed.status()
    );
    let missing = b
        .post("/api/webhooks/dead-letters/999999/replay", Vec::new())
        .await?;
    ensure!(
        missing.status() == 404,
        "replay of nothing: {}",
        missing.status()
    );
    let replayed = a
        .post("/api/webhooks/dead-letters/replay", Vec::new())
        .await?;
    ensure!(
        replayed.status() == 202,
        "replay all: {}",
        replayed.status()
    );
    let body: serde_json::Value = replayed.json().await?;
    ensure!(body["replayed"] == 1, "{body}");

    let dead_ids: BTreeSet<&str> = dead.iter().filter_map(|l| l["event_id"].as_str()).collect();
    let received = receiver
        .wait_for(DELIVERED, |all| all.len() >= dead_ids.len())
        .await
        .map_err(anyhow::Error::msg)?;
    wait_drained(&cluster).await?;
    // Each replayed event once, by one node, and nothing else.
    let mut received_ids: Vec<String> = receiver.received().into_iter().map(|r| r.id).collect();
    received_ids.sort_unstable();
    let expected: Vec<&str> = dead_ids.iter().copied().collect();
    ensure!(received_ids == expected, "{received_ids:?} vs {expected:?}");
    for r in &received {
        verify(SECRET.as_bytes(), r).map_err(anyhow::Error::msg)?;
    }
    ensure!(
        dead_letters(&a).await?.is_empty(),
        "dead letters left after replay"
    );
    Ok(())
}

#[tokio::test]
async fn connection_events_of_every_node_are_delivered_once_by_the_cluster() -> Result<()> {
    let receiver = WebhookReceiver::start().await?;
    let mut flags = flags(&receiver, "2000");
    flags.extend([
        "--webhook-events".to_owned(),
        "connection.opened,connection.closed".to_owned(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = Cluster::start_recorded(2, &flags).await?;
    let doc = "hooks/visited";
    // One client on each node, then both leave.
    let a = client(cluster.node(0), doc).await?;
    let b = client(cluster.node(1), doc).await?;
    receiver
        .wait_for(DELIVERED, |all| count(all, "connection.opened", doc) == 2)
        .await
        .map_err(anyhow::Error::msg)?;
    drop((a, b));
    receiver
        .wait_for(DELIVERED, |all| count(all, "connection.closed", doc) == 2)
        .await
        .map_err(anyhow::Error::msg)?;
    wait_drained(&cluster).await?;

    let received = receiver.received();
    let mut ids = BTreeSet::new();
    for r in &received {
        verify(SECRET.as_bytes(), r).map_err(anyhow::Error::msg)?;
        ensure!(ids.insert(r.id.clone()), "event {} delivered twice", r.id);
        ensure!(r.event["data"]["protocol"] == "y-websocket", "{}", r.event);
        // Each node counts its own connections: one joined, then none.
        let expected = if r.kind() == "connection.opened" {
            1
        } else {
            0
        };
        ensure!(r.event["data"]["connections"] == expected, "{}", r.event);
    }
    ensure!(
        received.len() == 4,
        "{} events: {:?}",
        received.len(),
        received.iter().map(Received::kind).collect::<Vec<_>>()
    );
    Ok(())
}
