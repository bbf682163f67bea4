//! The Redis bridge: several nodes serve the same documents.
//!
//! Redis is one more peer of every loaded document. Each document has a
//! pub/sub channel, subscribed while the document is loaded here; one
//! control channel, subscribed by every node, carries sync requests of
//! documents being loaded (so a node that has a document stored but not
//! loaded still answers) and deletions; one heartbeat channel says which
//! nodes are alive. Every message carries its origin node id; a node ignores
//! its own echoes.
//!
//! `--redis-url` is one Redis or a list of Redis Cluster seeds; which one is
//! decided by asking a seed (`seeds.rs`). One Redis is reached through
//! classic pub/sub (`single.rs`); a Redis Cluster through sharded pub/sub
//! for document channels, with Quire's own resubscription (`sharded.rs`,
//! `subscriptions.rs`). Either way messages land in one [`inbox::Inbox`].
//!
//! Pub/sub is at-most-once, so correctness never rests on it: nodes heal by
//! state vector (see `crdt_core::cluster`) when a document loads, after a
//! Redis reconnect or a resubscription, and every `--cluster-resync-secs`.

mod heartbeat;
mod inbox;
mod seeds;
mod sharded;
mod single;
mod subscriptions;

use crate::doc::Registry;
use crate::names::DocName;
use bytes::Bytes;
use crdt_core::cluster::{Body, ClusterMessage};
use seeds::Topology;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const CONTROL_CHANNEL: &str = "quire:control";
/// Node heartbeats. The hash tag puts it in the control channel's slot: in a
/// Redis Cluster both live on one shard, so a failover of that shard stops
/// the beats exactly while every node knows its control link is down (and
/// judges no peer meanwhile, see `heartbeat.rs`).
pub const HEARTBEAT_CHANNEL: &str = "{quire:control}:heartbeat";
/// Messages waiting to be published before publishing counts as failed.
const PUBLISH_QUEUE: usize = 16 * 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a remote message may wait for a busy document's queue.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Subscription requests of actors waiting for the subscriber task.
const SUBSCRIPTION_QUEUE: usize = 1024;

/// The channel of one document. The braces are a Redis Cluster hash tag:
/// with sharded pub/sub (`SSUBSCRIBE`) a document's channel lives on one shard.
pub fn doc_channel(doc: &str) -> String {
    format!("quire:doc:{{{doc}}}")
}

/// The document whose channel this is (see [`doc_channel`]).
fn doc_name_of_channel(channel: &str) -> Option<DocName> {
    let name = channel.strip_prefix("quire:doc:{")?.strip_suffix('}')?;
    DocName::parse(name).ok()
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid --redis-url: {0}")]
    Url(#[from] redis::RedisError),
    #[error("invalid --redis-url: {0}")]
    Seeds(String),
}

pub struct ClusterOptions {
    /// One `redis://` URL, or a comma-separated list of Redis Cluster seeds.
    pub redis_url: String,
    pub node_id: Arc<str>,
    pub resync_interval: Duration,
    /// How often this node says it is alive; peers declare it dead after
    /// [`heartbeat::MISSED_BEATS`] missed beats.
    pub heartbeat_interval: Duration,
}

/// Where a message is published (heartbeats have their own connection,
/// see `heartbeat.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Channel {
    /// A document's channel: sharded pub/sub on a Redis Cluster.
    Doc(String),
    Control,
}

impl Channel {
    fn name(&self) -> &str {
        match self {
            Channel::Doc(name) => name,
            Channel::Control => CONTROL_CHANNEL,
        }
    }
}

type Outgoing = (Channel, Bytes);

/// Subscription changes, tagged with the actor that asks: an actor that
/// unloads may send its unsubscribe after a new actor for the same document
/// subscribed, and must not unsubscribe its successor.
enum SubCommand {
    Subscribe(String, u64, oneshot::Sender<bool>),
    Unsubscribe(String, u64),
}

#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: Arc<str>,
    resync_interval: Duration,
    heartbeat_interval: Duration,
    publish: mpsc::Sender<Outgoing>,
    subscriptions: mpsc::Sender<SubCommand>,
    connected: AtomicBool,
    last_error: Mutex<String>,
}

impl Cluster {
    /// Starts the bridge. Redis need not be up: the bridge asks the seeds
    /// what they are until one answers, then publisher and subscriber
    /// reconnect with backoff; `/readyz` says 503 until they are connected.
    pub fn start(
        options: ClusterOptions,
        registry: Registry,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Cluster, ClusterError> {
        let seeds = seeds::parse(&options.redis_url)?;
        let (publish, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (subscriptions, subscriptions_rx) = mpsc::channel(SUBSCRIPTION_QUEUE);
        let cluster = Cluster {
            inner: Arc::new(Inner {
                node_id: options.node_id,
                resync_interval: options.resync_interval,
                heartbeat_interval: options.heartbeat_interval,
                publish,
                subscriptions,
                connected: AtomicBool::new(false),
                last_error: Mutex::new("not connected yet".into()),
            }),
        };
        let bridge = Bridge {
            cluster: cluster.clone(),
            registry,
            tracker: tracker.clone(),
            shutdown,
        };
        tracker.spawn(bridge.run(seeds, publish_rx, subscriptions_rx));
        Ok(cluster)
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub fn resync_interval(&self) -> Duration {
        self.inner.resync_interval
    }

    /// `Err(reason)` while Redis is unreachable.
    pub fn readiness(&self) -> Result<(), String> {
        if self.inner.connected.load(Ordering::Relaxed) {
            Ok(())
        } else {
            let reason = self
                .inner
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default();
            Err(format!("redis unreachable: {reason}"))
        }
    }

    fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    fn set_connected(&self, connected: bool) {
        self.inner.connected.store(connected, Ordering::Relaxed);
    }

    fn set_error(&self, error: impl std::fmt::Display) {
        if let Ok(mut last) = self.inner.last_error.lock() {
            *last = error.to_string();
        }
    }

    /// Queues a message for the document's channel; false if it could not
    /// be queued (the periodic resync repairs what peers miss).
    pub fn publish(&self, doc: &DocName, body: Body) -> bool {
        self.publish_on(Channel::Doc(doc_channel(doc.as_str())), doc, body)
    }

    /// Queues a message for the control channel every node subscribes to.
    pub fn publish_control(&self, doc: &DocName, body: Body) -> bool {
        self.publish_on(Channel::Control, doc, body)
    }

    fn publish_on(&self, channel: Channel, doc: &DocName, body: Body) -> bool {
        let message = ClusterMessage {
            origin: self.inner.node_id.to_string(),
            doc: doc.to_string(),
            body,
        };
        let queued = self
            .inner
            .publish
            .try_send((channel, Bytes::from(message.encode())))
            .is_ok();
        if !queued {
            tracing::warn!(doc = %doc, "cluster publish queue full; peers heal at the next resync");
        }
        queued
    }

    /// Subscribes to a document's channel; false if Redis is unreachable
    /// (the subscriber resubscribes every loaded document on reconnect).
    pub async fn subscribe(&self, doc: &DocName, actor_id: u64) -> bool {
        let (ack, rx) = oneshot::channel();
        if self
            .inner
            .subscriptions
            .send(SubCommand::Subscribe(
                doc_channel(doc.as_str()),
                actor_id,
                ack,
            ))
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    pub fn unsubscribe(&self, doc: &DocName, actor_id: u64) {
        let _ = self
            .inner
            .subscriptions
            .try_send(SubCommand::Unsubscribe(doc_channel(doc.as_str()), actor_id));
    }
}

/// What the bridge's tasks share.
struct Bridge {
    cluster: Cluster,
    registry: Registry,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Bridge {
    /// Finds out what the seeds are, then runs that topology's publisher and
    /// subscriber, and the heartbeat.
    async fn run(
        self,
        seeds: Vec<String>,
        publish: mpsc::Receiver<Outgoing>,
        mut subscriptions: mpsc::Receiver<SubCommand>,
    ) {
        let mut backoff = MIN_BACKOFF;
        // Document channels wanted, and by which actor.
        let mut owners = Owners::new();
        let topology = loop {
            match seeds::detect(&seeds).await {
                Ok(topology) => break topology,
                Err(e) => {
                    tracing::debug!(error = %e, "redis seeds unreachable");
                    self.cluster.set_error(e);
                }
            }
            // Nothing is subscribed yet: the subscriber subscribes every
            // loaded document once connected.
            let waited =
                refuse_subscriptions(&mut subscriptions, &mut owners, backoff, &self.shutdown)
                    .await;
            if waited.is_err() {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        };
        let echoes = sharded::SharedEchoes::default();
        self.tracker.spawn(heartbeat::beat(
            self.cluster.clone(),
            topology.clone(),
            echoes.clone(),
            self.cluster.inner.heartbeat_interval,
            self.shutdown.clone(),
        ));
        let inbox = inbox::Inbox::new(
            self.cluster.clone(),
            self.registry.clone(),
            self.tracker.clone(),
            self.cluster.inner.heartbeat_interval,
        );
        match topology {
            Topology::Single(client) => {
                tracing::info!("redis is a single server: classic pub/sub");
                self.tracker.spawn(single::publisher(
                    client.clone(),
                    publish,
                    self.cluster.clone(),
                    self.shutdown.clone(),
                ));
                single::subscriber(client, subscriptions, owners, inbox, self.shutdown).await;
            }
            Topology::Cluster(seeds) => {
                tracing::info!(seeds = seeds.len(), "redis is a cluster: sharded pub/sub");
                self.tracker.spawn(sharded::publisher(
                    seeds.clone(),
                    publish,
                    self.cluster.clone(),
                    echoes.clone(),
                    self.shutdown.clone(),
                ));
                let subscriber = sharded::Subscriber {
                    owners,
                    inbox,
                    echoes,
                };
                subscriber.run(seeds, subscriptions, self.shutdown).await;
            }
        }
    }
}

/// The document channels this node wants, each with the actor that asked.
type Owners = std::collections::HashMap<String, u64>;

/// Records a subscription change in `owners`; true if the channel is to be
/// unsubscribed (only its current owner may do that).
fn note_subscription(owners: &mut Owners, command: &SubCommand) -> bool {
    match command {
        SubCommand::Subscribe(channel, actor, _) => {
            owners.insert(channel.clone(), *actor);
            false
        }
        SubCommand::Unsubscribe(channel, actor) => {
            let owned = owners.get(channel) == Some(actor);
            if owned {
                owners.remove(channel);
            }
            owned
        }
    }
}

/// Waits `pause` while Redis is unreachable, noting subscription requests
/// in `owners` and answering them "not subscribed": every wanted channel
/// is subscribed once connected. `Err` on shutdown or when the senders
/// are gone.
async fn refuse_subscriptions(
    commands: &mut mpsc::Receiver<SubCommand>,
    owners: &mut Owners,
    pause: Duration,
    shutdown: &CancellationToken,
) -> Result<(), ()> {
    let retry = tokio::time::sleep(pause);
    tokio::pin!(retry);
    loop {
        tokio::select! {
            _ = &mut retry => return Ok(()),
            command = commands.recv() => match command {
                Some(command) => {
                    note_subscription(owners, &command);
                    if let SubCommand::Subscribe(_, _, ack) = command {
                        let _ = ack.send(false);
                    }
                }
                None => return Err(()),
            },
            _ = shutdown.cancelled() => return Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_channel_names_its_document() {
        for name in ["notes", "a/b c", "with}brace", "{x}"] {
            let channel = doc_channel(name);
            assert_eq!(
                doc_name_of_channel(&channel).map(|n| n.to_string()),
                DocName::parse(name).ok().map(|n| n.to_string()),
                "{channel}"
            );
        }
        assert_eq!(doc_name_of_channel(CONTROL_CHANNEL), None);
        assert_eq!(doc_name_of_channel("quire:doc:notes"), None);
    }

    #[test]
    fn only_the_actor_that_subscribed_last_may_unsubscribe() {
        let subscribe = |actor| SubCommand::Subscribe("c".into(), actor, oneshot::channel().0);
        let unsubscribe = |actor| SubCommand::Unsubscribe("c".into(), actor);
        // (commands in order, whether the last one unsubscribes, owner after)
        let cases: Vec<(&str, Vec<SubCommand>, bool, Option<u64>)> = vec![
            ("its own", vec![subscribe(1), unsubscribe(1)], true, None),
            (
                "a successor's",
                vec![subscribe(1), subscribe(2), unsubscribe(1)],
                false,
                Some(2),
            ),
            ("never subscribed", vec![unsubscribe(1)], false, None),
            (
                "subscribing again",
                vec![subscribe(1), subscribe(1)],
                false,
                Some(1),
            ),
        ];
        for (case, commands, expected, owner) in cases {
            let mut owners = Owners::new();
            let mut last = false;
            for command in &commands {
                last = note_subscription(&mut owners, command);
            }
            assert_eq!(last, expected, "{case}");
            assert_eq!(owners.get("c").copied(), owner, "{case}");
        }
    }
}
