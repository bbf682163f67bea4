//! Webhooks on one node: a real HTTP receiver (in the test) that fails,
//! times out and then accepts; every event arrives at least once, signed,
//! with an idempotency key that makes duplicates droppable; a `kill -9`
//! between a change and its delivery loses nothing; a receiver down for
//! good ends in the dead-letter list, and a replay delivers it.

use crate::support::{append, metric, text_of, text_update, wait_text, Rest, WAIT};
use anyhow::{ensure, Context, Result};
use base64::Engine;
use quire_client::testing::webhook_receiver::{verify, Answer, Received};
use quire_client::testing::{TestServer, WebhookReceiver};
use quire_client::Client;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

/// A Standard Webhooks secret, and the key it stands for.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn key() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .unwrap_or_default()
}

/// Long enough for deliveries that retry a few times.
const DELIVERED: Duration = Duration::from_secs(30);

fn flags(receiver: &WebhookReceiver, extra: &[&str]) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--webhook-url",
        &receiver.url(),
        "--webhook-secret",
        SECRET,
        "--webhook-debounce-ms",
        "200",
        "--webhook-timeout-ms",
        "500",
        "--webhook-retry-ms",
        "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

fn decode(b64: &str) -> Result<Vec<u8>> {
    Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
}

/// The state vector the server holds for `doc`.
async fn server_state_vector(rest: &Rest, doc: &str) -> Result<StateVector> {
    let state = rest.doc(doc).await?;
    let sv = state.transact().state_vector();
    Ok(sv)
}

/// The state vector a `document.updated` carries (compared decoded: its
/// encoding lists clients in no fixed order).
fn carried_state_vector(event: &Received) -> Option<StateVector> {
    let b64 = event.event["data"]["state_vector"].as_str()?;
    StateVector::decode_v1(&decode(b64).ok()?).ok()
}

/// Waits until the server lists `n` dead letters, and returns them.
async fn dead_letters(rest: &Rest, n: usize) -> Result<Vec<serde_json::Value>> {
    crate::support::eventually(|| async {
        let listed: serde_json::Value =
            rest.get("/api/webhooks/dead-letters").await?.json().await?;
        let dead = listed["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok((dead.len() == n).then_some(dead))
    })
    .await
}

/// The events of `kind` for `doc` the receiver kept (deduplicated).
fn kept<'a>(events: &'a [Received], kind: &str, doc: &str) -> Vec<&'a Received> {
    events
        .iter()
        .filter(|e| e.kind() == kind && e.document() == doc)
        .collect()
}

#[tokio::test]
async fn every_event_arrives_signed_through_failures_and_timeouts_and_duplicates_share_their_key(
) -> Result<()> {
    let receiver = WebhookReceiver::start().await?;
    // The first three deliveries fail: an error, another, then no answer
    // within Quire's timeout (the receiver still processes that one).
    receiver.script([
        Answer::Status(500),
        Answer::Status(503),
        Answer::Hang(Duration::from_millis(1500)),
    ]);
    let server = TestServer::start_with(flags(&receiver, &["--webhook-include-update"])).await?;
    let rest = Rest::new(&server);

    // Three clients type into one document.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let client = Client::connect(server.client_config("typed")).await?;
        client.wait_synced(WAIT).await?;
        clients.push(client);
    }
    for round in 0..5 {
        for (i, client) in clients.iter().enumerate() {
            append(client, "t", &format!("{i}{round} "));
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // 15 edits of 3 characters each.
    for client in &clients {
        client
            .wait_for(WAIT, |doc| text_of(doc, "t").len() == 45)
            .await?;
    }
    let final_text = text_of(clients[0].doc(), "t");
    for client in &clients {
        wait_text(client, "t", &final_text).await?;
    }
    // A document made over REST, then deleted.
    let posted = rest
        .post("/api/docs/short-lived/updates", text_update("t", "brief"))
        .await?;
    ensure!(posted.status().is_success(), "post: {}", posted.status());

    let sv = server_state_vector(&rest, "typed").await?;
    receiver
        .wait_for(DELIVERED, |all| {
            let events: Vec<&Received> = {
                let mut seen = BTreeSet::new();
                all.iter()
                    .filter(|r| r.accepted() && seen.insert(r.id.clone()))
                    .collect()
            };
            let has = |kind: &str, doc: &str| {
                events
                    .iter()
                    .any(|e| e.kind() == kind && e.document() == doc)
            };
            let latest_sv = events
                .iter()
                .rfind(|e| e.kind() == "document.updated" && e.document() == "typed")
                .and_then(|e| carried_state_vector(e));
            has("document.created", "typed")
                && has("document.created", "short-lived")
                && has("document.updated", "short-lived")
                && latest_sv.as_ref() == Some(&sv)
        })
        .await
        .map_err(anyhow::Error::msg)?;
    let deleted = rest.delete("/api/docs/short-lived").await?;
    ensure!(
        deleted.status().is_success(),
        "delete: {}",
        deleted.status()
    );
    // The deletion arrives, and each of the three failed attempts is
    // followed by one the receiver answered 200, whether it was the same
    // event's or another's.
    let received = receiver
        .wait_for(DELIVERED, |all| {
            let deleted = all
                .iter()
                .any(|r| r.accepted() && r.kind() == "document.deleted");
            let retried = all.iter().take(3).all(|first| {
                all.iter()
                    .any(|r| r.id == first.id && r.answer == Answer::Status(200))
            });
            deleted && retried
        })
        .await
        .map_err(anyhow::Error::msg)?;

    // Every request is signed with the secret and carries its event's id.
    for r in &received {
        verify(&key(), r).map_err(anyhow::Error::msg)?;
        ensure!(r.id.starts_with("evt_"), "webhook-id {:?}", r.id);
        ensure!(
            r.event["id"] == r.id.as_str(),
            "body id {} vs header {}",
            r.event["id"],
            r.id
        );
    }
    // The failed first deliveries were sent again, with the same id and
    // body: the one that timed out was processed twice, and dropping by id
    // keeps it once.
    let attempts: BTreeMap<&str, Vec<&Received>> =
        received.iter().fold(BTreeMap::new(), |mut by_id, r| {
            by_id.entry(r.id.as_str()).or_default().push(r);
            by_id
        });
    let failed_first: Vec<&Received> = received.iter().take(3).collect();
    for first in &failed_first {
        let tries = &attempts[first.id.as_str()];
        ensure!(
            tries.len() >= 2,
            "event {} was not delivered again after {:?}: {:?}",
            first.id,
            first.answer,
            tries.iter().map(|t| t.answer).collect::<Vec<_>>()
        );
        ensure!(
            tries.iter().all(|t| t.body == first.body),
            "a retry changed the body of {}",
            first.id
        );
    }
    let processed_twice = attempts
        .values()
        .filter(|tries| tries.iter().filter(|t| t.accepted()).count() > 1)
        .count();
    ensure!(
        processed_twice >= 1,
        "the timed-out delivery was not repeated"
    );
    let events = receiver.events();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    ensure!(ids.len() == unique.len(), "dropping by id left duplicates");

    // One created per document; the deletion came after it.
    ensure!(kept(&events, "document.created", "typed").len() == 1);
    ensure!(kept(&events, "document.created", "short-lived").len() == 1);
    ensure!(kept(&events, "document.deleted", "short-lived").len() == 1);
    ensure!(kept(&events, "document.deleted", "typed").is_empty());

    // The updates carried, applied in order, are the document: a receiver
    // can mirror it from the events alone.
    let mirror = Doc::new();
    for event in kept(&events, "document.updated", "typed") {
        let update = event.event["data"]["update"]
            .as_str()
            .context("document.updated carries its update (--webhook-include-update)")?;
        mirror
            .transact_mut()
            .apply_update(Update::decode_v1(&decode(update)?)?)?;
    }
    ensure!(
        text_of(&mirror, "t") == final_text,
        "mirror {:?} vs {final_text:?}",
        text_of(&mirror, "t")
    );
    // Debounced: far fewer document.updated than the 15 edits.
    let updated = kept(&events, "document.updated", "typed").len();
    ensure!(updated < 15, "{updated} document.updated for 15 edits");

    let metrics = rest.metrics().await?;
    ensure!(
        metric(
            &metrics,
            "quire_webhook_deliveries_total",
            &[("outcome", "retried")]
        )
        .unwrap_or(0.0)
            >= 3.0,
        "retries not counted:\n{metrics}"
    );
    let logs = server.logs();
    ensure!(
        logs.contains("webhook delivery failed; retrying with backoff"),
        "no log line for the failing receiver"
    );
    Ok(())
}

#[tokio::test]
async fn a_kill_9_between_a_change_and_its_delivery_loses_nothing() -> Result<()> {
    let receiver = WebhookReceiver::start().await?;
    let addr = receiver.addr();
    // The receiver is down when the change is made.
    receiver.stop();
    let receiver_url = format!("http://{addr}/hooks");
    let mut args: Vec<String> = vec![
        "--webhook-url".into(),
        receiver_url,
        "--webhook-secret".into(),
        SECRET.into(),
        "--webhook-debounce-ms".into(),
        "200".into(),
        "--webhook-timeout-ms".into(),
        "500".into(),
        "--webhook-retry-ms".into(),
        "100".into(),
        // Relayed means on disk: when the reader sees the text, the change
        // and its outbox entries are durable.
        "--flush-interval-ms".into(),
        "0".into(),
    ];
    let mut server = TestServer::start_with(args.clone()).await?;
    let writer = Client::connect(server.client_config("crash")).await?;
    let reader = Client::connect(server.client_config("crash")).await?;
    writer.wait_synced(WAIT).await?;
    reader.wait_synced(WAIT).await?;
    append(&writer, "t", "survives a crash");
    wait_text(&reader, "t", "survives a crash").await?;
    server.kill().await?;
    drop((writer, reader));

    let receiver = WebhookReceiver::start_on(addr).await?;
    args.truncate(args.len() - 2);
    server.set_extra_args(args);
    server.restart().await?;
    let rest = Rest::new(&server);
    let sv = server_state_vector(&rest, "crash").await?;
    receiver
        .wait_for(DELIVERED, |all| {
            let created = all
                .iter()
                .any(|r| r.kind() == "document.created" && r.document() == "crash");
            let updated = all.iter().any(|r| {
                r.kind() == "document.updated" && carried_state_vector(r).as_ref() == Some(&sv)
            });
            created && updated
        })
        .await
        .map_err(anyhow::Error::msg)?;
    for r in receiver.received() {
        verify(&key(), &r).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

#[tokio::test]
async fn a_receiver_down_for_good_ends_in_the_dead_letter_list_and_a_replay_delivers_it(
) -> Result<()> {
    let receiver = WebhookReceiver::start().await?;
    let addr = receiver.addr();
    receiver.stop();
    let admin = "admin-token";
    let server = TestServer::start_with([
        "--webhook-url",
        &format!("http://{addr}/hooks"),
        "--webhook-secret",
        "plain secret",
        "--webhook-debounce-ms",
        "100",
        "--webhook-timeout-ms",
        "500",
        "--webhook-retry-ms",
        "50",
        "--webhook-max-attempts",
        "3",
        "--admin-token",
        admin,
    ])
    .await?;
    let rest = Rest::with_token(&server, admin);
    let posted = rest
        .post("/api/docs/unheard/updates", text_update("t", "hello"))
        .await?;
    ensure!(posted.status().is_success(), "post: {}", posted.status());

    // created and updated, each tried three times, then parked.
    let dead = dead_letters(&rest, 2).await?;
    for letter in &dead {
        ensure!(letter["attempts"] == 3, "{letter}");
        ensure!(letter["document"] == "unheard", "{letter}");
        ensure!(
            letter["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("could not be reached")),
            "{letter}"
        );
    }
    let kinds: BTreeSet<&str> = dead.iter().filter_map(|l| l["type"].as_str()).collect();
    ensure!(
        kinds == BTreeSet::from(["document.created", "document.updated"]),
        "{kinds:?}"
    );
    // The gauges follow within a dispatcher round.
    rest.wait_metric("quire_webhook_dead_letters", &[], |v| v == 2.0)
        .await?;
    ensure!(
        server.logs().contains("parked as a dead letter"),
        "no log line for the dead letter"
    );
    // Only the admin sees or replays them.
    let anonymous = Rest::new(&server);
    let refused = anonymous.get("/api/webhooks/dead-letters").await?;
    ensure!(refused.status() == 403, "{}", refused.status());

    // The receiver is back; replaying one, then the rest, delivers both.
    let receiver = WebhookReceiver::start_on(addr).await?;
    let first = dead[0]["id"].as_u64().context("id")?;
    let replayed = rest
        .post_json(
            &format!("/api/webhooks/dead-letters/{first}/replay"),
            &serde_json::json!({}),
        )
        .await?;
    ensure!(
        replayed.status() == 202,
        "replay one: {}",
        replayed.status()
    );
    let missing = rest
        .post_json(
            "/api/webhooks/dead-letters/999999/replay",
            &serde_json::json!({}),
        )
        .await?;
    ensure!(
        missing.status() == 404,
        "replay of nothing: {}",
        missing.status()
    );
    let replayed = rest
        .post_json("/api/webhooks/dead-letters/replay", &serde_json::json!({}))
        .await?;
    ensure!(
        replayed.status() == 202,
        "replay all: {}",
        replayed.status()
    );
    let received = receiver
        .wait_for(DELIVERED, |all| {
            all.iter().filter(|r| r.accepted()).count() >= 2
        })
        .await
        .map_err(anyhow::Error::msg)?;
    let ids: BTreeSet<&str> = received.iter().map(|r| r.id.as_str()).collect();
    let dead_ids: BTreeSet<&str> = dead.iter().filter_map(|l| l["event_id"].as_str()).collect();
    ensure!(ids == dead_ids, "{ids:?} vs {dead_ids:?}");
    for r in &received {
        verify(b"plain secret", r).map_err(anyhow::Error::msg)?;
    }
    rest.wait_metric("quire_webhook_dead_letters", &[], |v| v == 0.0)
        .await?;
    Ok(())
}

#[tokio::test]
async fn webhook_flags_are_checked_at_start() -> Result<()> {
    let without_secret =
        TestServer::start_with(["--webhook-url", "http://127.0.0.1:9/hooks"]).await;
    ensure!(without_secret.is_err(), "started without --webhook-secret");
    let not_http = TestServer::start_with([
        "--webhook-url",
        "ftp://example.com/hooks",
        "--webhook-secret",
        "s",
    ])
    .await;
    ensure!(not_http.is_err(), "started with an ftp receiver");
    let server = TestServer::start().await?;
    let response = Rest::new(&server).get("/api/webhooks/dead-letters").await?;
    ensure!(response.status() == 404, "{}", response.status());
    Ok(())
}

#[tokio::test]
async fn connection_events_are_sent_when_asked_for_and_only_the_events_asked_for() -> Result<()> {
    let receiver = WebhookReceiver::start().await?;
    let server = TestServer::start_with(flags(
        &receiver,
        &["--webhook-events", "connection.opened,connection.closed"],
    ))
    .await?;
    let mut first = Client::connect(server.client_config("visited")).await?;
    first.wait_synced(WAIT).await?;
    let mut second = Client::connect(server.client_config("visited")).await?;
    second.wait_synced(WAIT).await?;
    append(&first, "t", "typed, but document events were not asked for");
    wait_text(
        &second,
        "t",
        "typed, but document events were not asked for",
    )
    .await?;
    first.disconnect().await?;
    second.disconnect().await?;

    let received = receiver
        .wait_for(DELIVERED, |all| all.len() >= 4)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut seen: Vec<(String, u64)> = received
        .iter()
        .map(|r| {
            (
                r.kind().to_owned(),
                r.event["data"]["connections"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    seen.sort();
    ensure!(
        seen == [
            ("connection.closed".to_owned(), 0),
            ("connection.closed".to_owned(), 1),
            ("connection.opened".to_owned(), 1),
            ("connection.opened".to_owned(), 2),
        ],
        "{seen:?}"
    );
    for r in &received {
        ensure!(r.document() == "visited", "{:?}", r.event);
        ensure!(
            r.event["data"]["protocol"] == "y-websocket",
            "{:?}",
            r.event
        );
        verify(&key(), r).map_err(anyhow::Error::msg)?;
    }
    // Nothing else comes: the document's own events were not asked for.
    tokio::time::sleep(Duration::from_millis(600)).await;
    ensure!(receiver.received().len() == 4, "{:#?}", receiver.received());
    Ok(())
}

#[tokio::test]
async fn each_receiver_gets_every_event_whatever_becomes_of_the_others() -> Result<()> {
    let down = WebhookReceiver::start().await?;
    let down_url = down.url();
    down.stop();
    let up = WebhookReceiver::start().await?;
    let admin = "admin-token";
    let server = TestServer::start_with([
        "--webhook-url",
        &format!("{down_url},{}", up.url()),
        "--webhook-secret",
        SECRET,
        "--webhook-debounce-ms",
        "100",
        "--webhook-retry-ms",
        "50",
        "--webhook-max-attempts",
        "2",
        "--admin-token",
        admin,
    ])
    .await?;
    let rest = Rest::with_token(&server, admin);
    let posted = rest
        .post("/api/docs/for-both/updates", text_update("t", "for both"))
        .await?;
    ensure!(posted.status().is_success(), "post: {}", posted.status());

    let received = up
        .wait_for(DELIVERED, |all| {
            let kinds: BTreeSet<&str> = all.iter().map(Received::kind).collect();
            kinds.contains("document.created") && kinds.contains("document.updated")
        })
        .await
        .map_err(anyhow::Error::msg)?;
    // The same events, with the same ids, went to the receiver that is down
    // and ended as its dead letters only.
    let dead = dead_letters(&rest, 2).await?;
    ensure!(
        dead.iter().all(|l| l["endpoint"] == down_url.as_str()),
        "{dead:?}"
    );
    let dead_ids: BTreeSet<&str> = dead.iter().filter_map(|l| l["event_id"].as_str()).collect();
    let delivered_ids: BTreeSet<&str> = received.iter().map(|r| r.id.as_str()).collect();
    ensure!(
        dead_ids == delivered_ids,
        "{dead_ids:?} vs {delivered_ids:?}"
    );
    Ok(())
}
