//! A Redis Cluster: sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`) for document
//! channels, so a document's traffic stays on the shard owning its slot;
//! classic pub/sub for the control and heartbeat channels (cluster-wide).
//!
//! One cluster connection publishes, another subscribes (RESP3, with a push
//! sender). The library's own resubscription is not relied on (see
//! `subscriptions.rs`): the subscriber subscribes every wanted channel
//! again itself after a lost link or a moved slot.
//!
//! **Bounded memory.** redis-rs hands pushes to an unbounded channel of its
//! own and from there to our [`PushSink`], which never blocks: messages go
//! into a bounded queue of [`DELIVERY_QUEUE`] (a full queue drops the
//! message, counted in `quire_redis_dropped_total`; the documents heal at
//! their next resync), and lost-subscription events into a small list
//! (past [`MAX_LOST_EVENTS`] it collapses into "everything lost"). So the
//! library's channel is drained as fast as pushes arrive, and a lagging
//! subscriber costs at most those two bounds.

use super::inbox::{Inbox, Sender};
use super::subscriptions::{classify, Echoes, Lost, Push, Resubscriptions};
use super::{
    doc_name_of_channel, note_subscription, refuse_subscriptions, Channel, Cluster, Outgoing,
    Owners, SubCommand, CONTROL_CHANNEL, HEARTBEAT_CHANNEL, MAX_BACKOFF, MIN_BACKOFF,
};
use redis::aio::{AsyncPushSender, SendError};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, RedisError, RedisResult};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Messages received but not yet handed to documents.
const DELIVERY_QUEUE: usize = 16 * 1024;
/// Lost-subscription events waiting for the subscriber.
const MAX_LOST_EVENTS: usize = 1024;
/// Document channels subscribed again at once (each its own call).
const RESUBSCRIBE_BATCH: usize = 64;
/// How long one (re)subscription or publish may take, library retries
/// included, before it counts as failed and is retried by us.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A failed publish is retried after at most this (a shard's failover ends
/// with its promotion; the first update after it should not wait long).
const MAX_PUBLISH_RETRY: Duration = Duration::from_millis(500);

/// Channels awaiting this node's own messages, shared by the publisher
/// (which notes what Redis took) and the subscriber (which hears them back).
#[derive(Clone, Default)]
pub(super) struct SharedEchoes(Arc<Mutex<Echoes>>);

impl SharedEchoes {
    pub(super) fn published(&self, channel: &str) {
        if let Ok(mut echoes) = self.0.lock() {
            echoes.published(channel, Instant::now());
        }
    }

    fn heard(&self, channel: &[u8]) {
        if let (Ok(channel), Ok(mut echoes)) = (std::str::from_utf8(channel), self.0.lock()) {
            echoes.heard(channel);
        }
    }

    fn deaf(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut echoes| echoes.deaf(Instant::now()))
            .unwrap_or_default()
    }
}

/// The cluster client's own retries are few and short: Quire retries
/// publishes and subscriptions itself, with its own bounds.
pub(super) fn builder(seeds: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(seeds.to_vec())
        .retries(4)
        .min_retry_wait(50)
        .max_retry_wait(500)
}

async fn within<T>(call: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "redis cluster did not answer in time",
            )))
        })
}

/// Publishes queued messages in order, each until Redis takes it (as the
/// single-server publisher does).
pub(super) async fn publisher(
    seeds: Vec<String>,
    mut rx: mpsc::Receiver<Outgoing>,
    cluster: Cluster,
    echoes: SharedEchoes,
    shutdown: CancellationToken,
) {
    let client = match builder(&seeds).build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the redis cluster client; not publishing");
            return;
        }
    };
    let mut connection: Option<ClusterConnection> = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        let (channel, payload) = tokio::select! {
            next = rx.recv() => match next {
                Some(next) => next,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        // Document channels are sharded; the others broadcast cluster-wide.
        let command = match channel {
            Channel::Doc(_) => "SPUBLISH",
            Channel::Control => "PUBLISH",
        };
        loop {
            if connection.is_none() {
                match within(client.get_async_connection()).await {
                    Ok(c) => connection = Some(c),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot publish: redis cluster unreachable");
                        cluster.set_error(&e);
                    }
                }
            }
            let mut retry_after = MAX_BACKOFF;
            if let Some(conn) = connection.as_mut() {
                // The connection heals itself (reconnects, slot refreshes
                // after MOVED): it is kept across failures.
                let published: RedisResult<i64> = within(
                    redis::cmd(command)
                        .arg(channel.name())
                        .arg(payload.as_ref())
                        .query_async(conn),
                )
                .await;
                match published {
                    Ok(_) => {
                        crate::metrics::redis_published();
                        echoes.published(channel.name());
                        backoff = MIN_BACKOFF;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, channel = channel.name(), "publish failed; retrying");
                        retry_after = MAX_PUBLISH_RETRY;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(retry_after);
        }
    }
}

/// Lost-subscription events from the push sink, for the subscriber.
#[derive(Default)]
struct LostEvents {
    events: Mutex<Vec<Lost>>,
    notify: Notify,
}

impl LostEvents {
    fn record(&self, lost: Lost) {
        if let Ok(mut events) = self.events.lock() {
            if events.len() >= MAX_LOST_EVENTS {
                // Everything covers whatever was listed.
                events.clear();
                events.push(Lost::Everything);
            } else {
                events.push(lost);
            }
        }
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<Lost> {
        self.events
            .lock()
            .map(|mut events| std::mem::take(&mut *events))
            .unwrap_or_default()
    }
}

/// Takes redis-rs's pushes without ever blocking it (see the module doc).
struct PushSink {
    deliveries: mpsc::Sender<(Vec<u8>, Vec<u8>)>,
    lost: Arc<LostEvents>,
}

impl AsyncPushSender for PushSink {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match classify(info) {
            Push::Message { channel, payload } => {
                if self.deliveries.try_send((channel, payload)).is_err() {
                    crate::metrics::redis_dropped();
                }
            }
            Push::Lost(lost) => self.lost.record(lost),
            Push::Other => {}
        }
        Ok(())
    }
}

async fn subscribe_control(connection: &mut ClusterConnection) -> RedisResult<()> {
    within(connection.subscribe(CONTROL_CHANNEL)).await?;
    within(connection.subscribe(HEARTBEAT_CHANNEL)).await
}

async fn subscribe_doc(mut connection: ClusterConnection, channel: &str) -> RedisResult<()> {
    within(connection.ssubscribe(channel)).await
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What the subscriber keeps across its loop.
pub(super) struct Subscriber {
    /// The document channels wanted, and by which actor.
    pub(super) owners: Owners,
    pub(super) inbox: Inbox,
    pub(super) echoes: SharedEchoes,
}

impl Subscriber {
    pub(super) async fn run(
        self,
        seeds: Vec<String>,
        mut commands: mpsc::Receiver<SubCommand>,
        shutdown: CancellationToken,
    ) {
        let Subscriber {
            mut owners,
            mut inbox,
            echoes,
        } = self;
        let (deliveries_tx, mut deliveries) = mpsc::channel(DELIVERY_QUEUE);
        let lost = Arc::new(LostEvents::default());
        let sink = PushSink {
            deliveries: deliveries_tx,
            lost: lost.clone(),
        };
        let client = match builder(&seeds)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(sink)
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the redis cluster client; not subscribing");
                inbox.disconnected(&e);
                return;
            }
        };
        let mut backoff = MIN_BACKOFF;
        let mut connection = loop {
            match within(client.get_async_connection()).await {
                Ok(connection) => break connection,
                Err(e) => {
                    tracing::debug!(error = %e, "redis cluster unreachable");
                    inbox.disconnected(&e);
                }
            }
            if refuse_subscriptions(&mut commands, &mut owners, backoff, &shutdown)
                .await
                .is_err()
            {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        };
        tracing::info!("connected to the redis cluster");
        let mut pending = Resubscriptions::new(&owners, Instant::now());
        let mut checks = tokio::time::interval(inbox.check_interval());
        loop {
            let next_attempt = pending.next_attempt();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => {
                        let unsubscribe = note_subscription(&mut owners, &command);
                        match command {
                            SubCommand::Subscribe(channel, _, ack) => {
                                let subscribed = subscribe_doc(connection.clone(), &channel).await;
                                if let Err(e) = &subscribed {
                                    tracing::debug!(error = %e, channel, "subscribing failed; retrying");
                                    pending.failed_first(channel);
                                }
                                let _ = ack.send(subscribed.is_ok());
                            }
                            SubCommand::Unsubscribe(channel, _) if unsubscribe => {
                                pending.forget(&channel);
                                let _ = within(connection.sunsubscribe(&channel)).await;
                            }
                            SubCommand::Unsubscribe(..) => {}
                        }
                    }
                    None => return,
                },
                delivery = deliveries.recv() => match delivery {
                    Some((channel, payload)) => {
                        if inbox.deliver(&channel, &payload).await == Sender::Us {
                            echoes.heard(&channel);
                        }
                    }
                    None => return,
                },
                _ = lost.notify.notified() => {
                    let now = Instant::now();
                    for event in lost.take() {
                        tracing::info!(lost = ?event, "redis cluster subscription lost; subscribing again");
                        pending.lost(event, &owners, now);
                    }
                    if pending.control_pending() {
                        inbox.disconnected("control channel subscription lost; subscribing again");
                    }
                }
                _ = sleep_until(next_attempt) => {
                    resubscribe(&mut connection, &mut pending, &mut inbox).await;
                }
                _ = checks.tick() => {
                    inbox.check();
                    let now = Instant::now();
                    for channel in echoes.deaf() {
                        if owners.contains_key(&channel) || channel == HEARTBEAT_CHANNEL {
                            tracing::warn!(channel, "our own message never came back; subscribing again");
                        }
                        pending.lost(Lost::Deaf(channel), &owners, now);
                    }
                    if pending.control_pending() {
                        inbox.disconnected("control channel deaf; subscribing again");
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// One round of (re)subscriptions: the control channels first, then a
/// batch of document channels, each its own call, concurrently. Every
/// document subscribed again heals by state vector.
async fn resubscribe(
    connection: &mut ClusterConnection,
    pending: &mut Resubscriptions,
    inbox: &mut Inbox,
) {
    if pending.control_pending() {
        match subscribe_control(connection).await {
            Ok(()) => {
                pending.control_subscribed();
                inbox.connected();
                tracing::info!("subscribed to the control channels");
            }
            Err(e) => {
                tracing::debug!(error = %e, "subscribing to the control channel failed; retrying");
                inbox.disconnected(&e);
                pending.failed(Instant::now());
                return;
            }
        }
    }
    let batch = pending.batch(RESUBSCRIBE_BATCH);
    let attempts = batch
        .iter()
        .map(|(channel, _)| subscribe_doc(connection.clone(), channel));
    let results = futures_util::future::join_all(attempts).await;
    let mut failed = 0;
    for ((channel, reason), result) in batch.into_iter().zip(results) {
        match result {
            Ok(()) => {
                pending.subscribed(&channel);
                if let Some(label) = reason.label() {
                    crate::metrics::redis_resubscribed(label);
                }
                if let Some(doc) = doc_name_of_channel(&channel) {
                    inbox.resync(&doc);
                }
            }
            Err(e) => {
                failed += 1;
                tracing::debug!(error = %e, channel, "subscribing again failed; retrying");
            }
        }
    }
    if failed > 0 {
        pending.failed(Instant::now());
    } else {
        pending.progressed(Instant::now());
    }
}
