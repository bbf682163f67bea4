//! Which peer nodes are alive, from their heartbeats.
//!
//! Every node publishes its id on the heartbeat channel every
//! `--cluster-heartbeat-ms`. A peer heard from and then silent for
//! [`MISSED_BEATS`] intervals is declared dead once: the presence it relayed
//! is dropped on this node (`DocCommand::PeerGone`), since a crashed node
//! never sends its clients' removals. A dead node heard again is revived:
//! its clients' presence is asked for again.
//!
//! Silence only counts while this node hears the channel: while its own
//! link is down every peer looks silent, so judging is paused, and on
//! resuming every known peer starts a fresh silence count.
//!
//! Beats go out on a connection of their own, not through the publish
//! queue: a queue held up by a message for a shard that is failing over
//! must not make this node look dead (its clients are not).

use super::seeds::Topology;
use super::sharded::SharedEchoes;
use super::{Cluster, HEARTBEAT_CHANNEL};
use redis::cluster_async::ClusterConnection;
use redis::RedisResult;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Beats a peer may miss before it is declared dead.
pub(super) const MISSED_BEATS: u32 = 3;
/// Dead nodes remembered, to tell a revived one from a new one.
const REMEMBERED_DEAD: usize = 256;

/// What a heartbeat says about its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Beat {
    /// Alive and already known (or never declared dead).
    Alive,
    /// Declared dead earlier, beating again: its presence is to be asked for.
    Revived,
}

#[derive(Debug)]
pub(super) struct Liveness {
    /// A peer is dead after this much silence.
    timeout: Duration,
    /// Last beat of each live peer.
    last_beat: HashMap<Arc<str>, Instant>,
    /// Peers declared dead, newest last.
    dead: VecDeque<Arc<str>>,
    /// This node's link is down: silence means nothing.
    paused: bool,
}

impl Liveness {
    pub(super) fn new(interval: Duration) -> Self {
        Liveness {
            timeout: interval * MISSED_BEATS,
            last_beat: HashMap::new(),
            dead: VecDeque::new(),
            paused: true,
        }
    }

    pub(super) fn beat(&mut self, node: &str, now: Instant) -> Beat {
        let revived = match self.dead.iter().position(|dead| &**dead == node) {
            Some(at) => {
                self.dead.remove(at);
                true
            }
            None => false,
        };
        match self.last_beat.get_mut(node) {
            Some(last) => *last = now,
            None => {
                self.last_beat.insert(Arc::from(node), now);
            }
        }
        if revived {
            Beat::Revived
        } else {
            Beat::Alive
        }
    }

    /// This node stopped hearing the channel.
    pub(super) fn pause(&mut self) {
        self.paused = true;
    }

    /// This node hears the channel again: every peer's silence starts now.
    pub(super) fn resume(&mut self, now: Instant) {
        self.paused = false;
        for last in self.last_beat.values_mut() {
            *last = now;
        }
    }

    /// Peers silent for too long, declared dead now (each once).
    pub(super) fn declare_dead(&mut self, now: Instant) -> Vec<Arc<str>> {
        if self.paused {
            return Vec::new();
        }
        let timeout = self.timeout;
        let mut gone = Vec::new();
        self.last_beat.retain(|node, last| {
            let silent = now.saturating_duration_since(*last) > timeout;
            if silent {
                gone.push(node.clone());
            }
            !silent
        });
        gone.sort_unstable();
        for node in &gone {
            if self.dead.len() == REMEMBERED_DEAD {
                self.dead.pop_front();
            }
            self.dead.push_back(node.clone());
        }
        gone
    }
}

/// Where beats are published, connected on first use and again after a
/// failure.
enum Link {
    Single {
        client: redis::Client,
        connection: Option<redis::aio::MultiplexedConnection>,
    },
    Cluster {
        client: redis::cluster::ClusterClient,
        connection: Option<ClusterConnection>,
        /// The subscriber listens for this node's own beats (its control
        /// subscription is deaf without them).
        echoes: SharedEchoes,
    },
}

impl Link {
    async fn publish(&mut self, beat: &[u8]) -> RedisResult<()> {
        let publish = redis::cmd("PUBLISH")
            .arg(HEARTBEAT_CHANNEL)
            .arg(beat)
            .clone();
        match self {
            Link::Single { client, connection } => {
                if connection.is_none() {
                    *connection = Some(client.get_multiplexed_async_connection().await?);
                }
                if let Some(conn) = connection.as_mut() {
                    let sent: RedisResult<i64> = publish.query_async(conn).await;
                    if let Err(e) = sent {
                        *connection = None;
                        return Err(e);
                    }
                }
                Ok(())
            }
            Link::Cluster {
                client,
                connection,
                echoes,
            } => {
                if connection.is_none() {
                    *connection = Some(client.get_async_connection().await?);
                }
                if let Some(conn) = connection.as_mut() {
                    // The connection heals itself: it is kept across failures.
                    let _: i64 = publish.query_async(conn).await?;
                    echoes.published(HEARTBEAT_CHANNEL);
                }
                Ok(())
            }
        }
    }
}

/// Publishes this node's heartbeat every `interval` until shutdown, while
/// the subscriber is connected (beats that could not be heard back are
/// pointless, and peers judge nobody while their own link is down).
pub(super) async fn beat(
    cluster: Cluster,
    topology: Topology,
    echoes: SharedEchoes,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut link = match topology {
        Topology::Single(client) => Link::Single {
            client,
            connection: None,
        },
        Topology::Cluster(seeds) => match super::sharded::builder(&seeds).build() {
            Ok(client) => Link::Cluster {
                client,
                connection: None,
                echoes,
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot build the redis cluster client; no heartbeats");
                return;
            }
        },
    };
    let beat = cluster.node_id().as_bytes().to_vec();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if !cluster.is_connected() {
            continue;
        }
        let sent = tokio::select! {
            sent = tokio::time::timeout(interval, link.publish(&beat)) => sent,
            _ = shutdown.cancelled() => return,
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "heartbeat not published"),
            Err(_) => tracing::debug!("heartbeat not published in time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events at seconds from the start, with a 1 s interval (dead after 3 s
    /// of silence).
    #[derive(Debug, Clone, Copy)]
    enum Event {
        Heard(&'static str, Beat),
        Pause,
        Resume,
        /// Declares dead at this second; the nodes expected.
        Check(&'static [&'static str]),
    }
    use Event::{Check, Heard, Pause, Resume};

    #[test]
    fn a_peer_is_dead_after_three_missed_beats_while_this_node_hears_the_channel() {
        let a_alive = Heard("a", Beat::Alive);
        let b_alive = Heard("b", Beat::Alive);
        #[rustfmt::skip]
        let cases: &[(&str, &[(u64, Event)])] = &[
            ("beating peers live", &[(0, Resume), (0, a_alive), (1, a_alive), (2, a_alive), (3, a_alive), (4, Check(&[]))]),
            ("three beats missed is not yet dead", &[(0, Resume), (0, a_alive), (3, Check(&[]))]),
            ("more than three is", &[(0, Resume), (0, a_alive), (4, Check(&["a"]))]),
            ("declared once", &[(0, Resume), (0, a_alive), (4, Check(&["a"])), (9, Check(&[]))]),
            ("only the silent one", &[(0, Resume), (0, a_alive), (0, b_alive), (2, b_alive), (4, Check(&["a"])), (6, Check(&["b"]))]),
            ("a node never heard from is not judged", &[(0, Resume), (9, Check(&[]))]),
            ("nothing is judged while this node's link is down", &[(0, Resume), (0, a_alive), (1, Pause), (9, Check(&[]))]),
            ("silence restarts when the link is back", &[(0, Resume), (0, a_alive), (1, Pause), (9, Resume), (12, Check(&[])), (14, Check(&["a"]))]),
            ("a dead node beating again is revived", &[(0, Resume), (0, a_alive), (4, Check(&["a"])), (5, Heard("a", Beat::Revived)), (6, a_alive), (8, Check(&[]))]),
            ("and dies again", &[(0, Resume), (0, a_alive), (4, Check(&["a"])), (5, Heard("a", Beat::Revived)), (9, Check(&["a"]))]),
            ("before the link is up, beats are noted, not judged", &[(0, a_alive), (9, Check(&[])), (9, Resume), (13, Check(&["a"]))]),
        ];
        let start = Instant::now();
        for (case, events) in cases {
            let mut liveness = Liveness::new(Duration::from_secs(1));
            for (second, event) in *events {
                let now = start + Duration::from_secs(*second);
                match event {
                    Heard(node, expected) => {
                        assert_eq!(liveness.beat(node, now), *expected, "{case} at {second}s")
                    }
                    Pause => liveness.pause(),
                    Resume => liveness.resume(now),
                    Check(expected) => {
                        let dead = liveness.declare_dead(now);
                        let dead: Vec<&str> = dead.iter().map(|n| &**n).collect();
                        assert_eq!(dead, *expected, "{case} at {second}s");
                    }
                }
            }
        }
    }

    #[test]
    fn dead_nodes_remembered_are_bounded() {
        let start = Instant::now();
        let mut liveness = Liveness::new(Duration::from_secs(1));
        liveness.resume(start);
        for n in 0..REMEMBERED_DEAD + 10 {
            liveness.beat(&format!("node-{n}"), start);
        }
        let later = start + Duration::from_secs(10);
        assert_eq!(liveness.declare_dead(later).len(), REMEMBERED_DEAD + 10);
        assert_eq!(liveness.dead.len(), REMEMBERED_DEAD);
        assert!(liveness.last_beat.is_empty());
    }
}
