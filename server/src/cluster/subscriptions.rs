//! Quire's own resubscription on a Redis Cluster (pure).
//!
//! redis-rs 1.8.2 does not restore sharded subscriptions after a primary
//! failover (it only reports `Disconnection`) nor after a slot migration
//! (Redis sends an unsolicited `sunsubscribe`, and the library drops the
//! channel from its own tracker). Both were measured, see docs/cluster.md.
//! So Quire keeps the list of channels it wants (the subscriber's owners)
//! and decides here what a push means and what to subscribe again:
//!
//! - `Disconnection` (any node's link): every wanted document channel, and
//!   the control channels;
//! - `sunsubscribe` of a wanted document channel: that channel;
//! - `unsubscribe` of a control channel: the control channels;
//! - a channel this node published to without hearing its own message back
//!   within [`ECHO_TIMEOUT`]: that channel. Redis delivers a message to its
//!   publisher's subscription too, so a missing echo is a subscription lost
//!   without any push saying so. This catches what the two rules above
//!   miss, whatever the cause: once in about twenty loaded test runs a node
//!   stayed deaf to a document's channel after a failover although its
//!   resubscription had succeeded. Every loaded document publishes at
//!   least a sync request per `--cluster-resync-secs`, so a deaf
//!   subscription is found within that plus [`ECHO_TIMEOUT`].
//!
//! Each channel is then subscribed again one per call (a multi-channel
//! `SSUBSCRIBE` must stay within one slot), retried with backoff until Redis
//! says Ok, and its document heals by state vector.

use super::Owners;
use redis::{PushInfo, PushKind, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// First pause after a failed (re)subscription; doubles up to [`MAX_RETRY`].
const MIN_RETRY: Duration = Duration::from_millis(50);
/// Short: a shard's failover ends when its replica is promoted, and the
/// first relayed update after that waits for this at most.
const MAX_RETRY: Duration = Duration::from_millis(500);
/// How long this node's own message may take to come back to it.
pub(super) const ECHO_TIMEOUT: Duration = Duration::from_secs(3);

/// What a push from the cluster connection means to Quire.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Push {
    /// A published message (classic or sharded).
    Message { channel: Vec<u8>, payload: Vec<u8> },
    /// Some subscriptions may be gone.
    Lost(Lost),
    /// Confirmations and anything else.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Lost {
    /// A link to some node dropped: any subscription may be gone.
    Everything,
    /// Redis unsubscribed this shard channel (its slot moved), or Quire did.
    Channel(String),
    /// Redis unsubscribed a classic channel.
    Classic(String),
    /// This node's own message on the channel never came back.
    Deaf(String),
}

pub(super) fn classify(push: PushInfo) -> Push {
    let mut data = push.data.into_iter();
    match push.kind {
        PushKind::Message | PushKind::SMessage => match (data.next(), data.next()) {
            (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) => {
                Push::Message { channel, payload }
            }
            _ => Push::Other,
        },
        PushKind::Disconnection => Push::Lost(Lost::Everything),
        PushKind::SUnsubscribe | PushKind::Unsubscribe => {
            let channel = match data.next() {
                Some(Value::BulkString(channel)) => String::from_utf8(channel).ok(),
                _ => None,
            };
            match (channel, push.kind) {
                (Some(channel), PushKind::SUnsubscribe) => Push::Lost(Lost::Channel(channel)),
                (Some(channel), _) => Push::Lost(Lost::Classic(channel)),
                (None, _) => Push::Other,
            }
        }
        _ => Push::Other,
    }
}

fn is_control(channel: &str) -> bool {
    channel == super::CONTROL_CHANNEL || channel == super::HEARTBEAT_CHANNEL
}

/// Channels this node published to, waiting for its own message to come
/// back (the earliest unanswered publish of each).
#[derive(Debug, Default)]
pub(super) struct Echoes {
    awaiting: HashMap<String, Instant>,
}

impl Echoes {
    /// Redis took a message of ours for `channel`.
    pub(super) fn published(&mut self, channel: &str, now: Instant) {
        if !self.awaiting.contains_key(channel) {
            self.awaiting.insert(channel.to_owned(), now);
        }
    }

    /// A message of ours came back on `channel`: it is heard.
    pub(super) fn heard(&mut self, channel: &str) {
        self.awaiting.remove(channel);
    }

    /// Channels whose message has not come back within [`ECHO_TIMEOUT`],
    /// forgotten (each is reported once).
    pub(super) fn deaf(&mut self, now: Instant) -> Vec<String> {
        let mut deaf = Vec::new();
        self.awaiting.retain(|channel, since| {
            let overdue = now.saturating_duration_since(*since) > ECHO_TIMEOUT;
            if overdue {
                deaf.push(channel.clone());
            }
            !overdue
        });
        deaf.sort_unstable();
        deaf
    }
}

/// Why a document channel is being subscribed (the metric's label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    /// First subscription, or made while Redis was unreachable.
    Connect,
    /// A link dropped (failover, restart, network).
    Disconnection,
    /// Redis unsubscribed it: its slot moved to another shard.
    SlotMoved,
    /// Its own messages stopped coming back.
    NoEcho,
}

impl Reason {
    pub(super) fn label(self) -> Option<&'static str> {
        match self {
            Reason::Connect => None,
            Reason::Disconnection => Some("disconnection"),
            Reason::SlotMoved => Some("slot_moved"),
            Reason::NoEcho => Some("no_echo"),
        }
    }
}

/// Channels to subscribe (again), and when to try next.
#[derive(Debug)]
pub(super) struct Resubscriptions {
    docs: BTreeMap<String, Reason>,
    /// The control and heartbeat channels.
    control: bool,
    retry: Duration,
    next_attempt: Instant,
}

impl Resubscriptions {
    /// Everything is to be subscribed: nothing is yet.
    pub(super) fn new(owners: &Owners, now: Instant) -> Self {
        Resubscriptions {
            docs: owners
                .keys()
                .map(|channel| (channel.clone(), Reason::Connect))
                .collect(),
            control: true,
            retry: MIN_RETRY,
            next_attempt: now,
        }
    }

    /// Notes what a push lost, given the channels Quire wants; attempts
    /// start at once.
    pub(super) fn lost(&mut self, lost: Lost, owners: &Owners, now: Instant) {
        match lost {
            Lost::Everything => {
                for channel in owners.keys() {
                    self.docs
                        .entry(channel.clone())
                        .or_insert(Reason::Disconnection);
                }
                self.control = true;
            }
            Lost::Channel(channel) => {
                if owners.contains_key(&channel) {
                    self.docs.entry(channel).or_insert(Reason::SlotMoved);
                } else {
                    // Quire unsubscribed it (the document unloaded).
                    return;
                }
            }
            Lost::Classic(channel) => {
                if is_control(&channel) {
                    self.control = true;
                } else {
                    return;
                }
            }
            Lost::Deaf(channel) => {
                if is_control(&channel) {
                    self.control = true;
                } else if owners.contains_key(&channel) {
                    self.docs.entry(channel).or_insert(Reason::NoEcho);
                } else {
                    return;
                }
            }
        }
        self.retry = MIN_RETRY;
        self.next_attempt = now;
    }

    /// A first subscription failed: retry it with the rest.
    pub(super) fn failed_first(&mut self, channel: String) {
        self.docs.entry(channel).or_insert(Reason::Connect);
    }

    /// The document unloaded: nothing to subscribe.
    pub(super) fn forget(&mut self, channel: &str) {
        self.docs.remove(channel);
    }

    pub(super) fn control_pending(&self) -> bool {
        self.control
    }

    /// When to attempt next, if anything is pending.
    pub(super) fn next_attempt(&self) -> Option<Instant> {
        (self.control || !self.docs.is_empty()).then_some(self.next_attempt)
    }

    /// Up to `limit` document channels to attempt now.
    pub(super) fn batch(&self, limit: usize) -> Vec<(String, Reason)> {
        self.docs
            .iter()
            .take(limit)
            .map(|(channel, reason)| (channel.clone(), *reason))
            .collect()
    }

    pub(super) fn subscribed(&mut self, channel: &str) {
        self.docs.remove(channel);
    }

    pub(super) fn control_subscribed(&mut self) {
        self.control = false;
    }

    /// An attempt failed: the next waits longer (up to [`MAX_RETRY`]).
    pub(super) fn failed(&mut self, now: Instant) {
        self.next_attempt = now + self.retry;
        self.retry = (self.retry * 2).min(MAX_RETRY);
    }

    /// A batch went through: the rest follows at once.
    pub(super) fn progressed(&mut self, now: Instant) {
        self.retry = MIN_RETRY;
        self.next_attempt = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn pushes_are_messages_lost_subscriptions_or_nothing() {
        let doc = "quire:doc:{a}";
        let cases = [
            (
                PushKind::SMessage,
                vec![bulk(doc), bulk("x")],
                Push::Message {
                    channel: doc.into(),
                    payload: b"x".to_vec(),
                },
            ),
            (
                PushKind::Message,
                vec![bulk("quire:control"), bulk("y")],
                Push::Message {
                    channel: b"quire:control".to_vec(),
                    payload: b"y".to_vec(),
                },
            ),
            (PushKind::SMessage, vec![bulk(doc)], Push::Other),
            (
                PushKind::Disconnection,
                vec![],
                Push::Lost(Lost::Everything),
            ),
            (
                PushKind::SUnsubscribe,
                vec![bulk(doc), Value::Int(0)],
                Push::Lost(Lost::Channel(doc.into())),
            ),
            (
                PushKind::Unsubscribe,
                vec![bulk("quire:control"), Value::Int(0)],
                Push::Lost(Lost::Classic("quire:control".into())),
            ),
            (PushKind::SUnsubscribe, vec![Value::Nil], Push::Other),
            (
                PushKind::SSubscribe,
                vec![bulk(doc), Value::Int(1)],
                Push::Other,
            ),
            (
                PushKind::Subscribe,
                vec![bulk("quire:control"), Value::Int(1)],
                Push::Other,
            ),
        ];
        for (kind, data, expected) in cases {
            let case = format!("{kind:?} {data:?}");
            assert_eq!(classify(PushInfo { kind, data }), expected, "{case}");
        }
    }

    #[test]
    fn what_is_subscribed_again_after_a_lost_subscription() {
        let owners: Owners = [("quire:doc:{a}", 1), ("quire:doc:{b}", 2)]
            .into_iter()
            .map(|(c, a)| (c.to_owned(), a))
            .collect();
        let a = ("quire:doc:{a}".to_owned(), Reason::SlotMoved);
        let both = vec![
            ("quire:doc:{a}".to_owned(), Reason::Disconnection),
            ("quire:doc:{b}".to_owned(), Reason::Disconnection),
        ];
        // (case, lost, expected document channels, expected control)
        type Case = (&'static str, Lost, Vec<(String, Reason)>, bool);
        let cases: Vec<Case> = vec![
            ("a link dropped: everything", Lost::Everything, both, true),
            (
                "a wanted channel's slot moved: that one",
                Lost::Channel("quire:doc:{a}".into()),
                vec![a],
                false,
            ),
            (
                "a channel Quire left: nothing",
                Lost::Channel("quire:doc:{gone}".into()),
                vec![],
                false,
            ),
            (
                "the control channel: control",
                Lost::Classic(crate::cluster::CONTROL_CHANNEL.into()),
                vec![],
                true,
            ),
            (
                "the heartbeat channel: control",
                Lost::Classic(crate::cluster::HEARTBEAT_CHANNEL.into()),
                vec![],
                true,
            ),
            (
                "another classic channel: nothing",
                Lost::Classic("other".into()),
                vec![],
                false,
            ),
            (
                "a wanted channel gone deaf: that one",
                Lost::Deaf("quire:doc:{b}".into()),
                vec![("quire:doc:{b}".to_owned(), Reason::NoEcho)],
                false,
            ),
            (
                "a deaf channel Quire left: nothing",
                Lost::Deaf("quire:doc:{gone}".into()),
                vec![],
                false,
            ),
            (
                "the heartbeat channel gone deaf: control",
                Lost::Deaf(crate::cluster::HEARTBEAT_CHANNEL.into()),
                vec![],
                true,
            ),
        ];
        let now = Instant::now();
        for (case, lost, docs, control) in cases {
            let mut resubscriptions = Resubscriptions::new(&Owners::new(), now);
            resubscriptions.control_subscribed();
            assert_eq!(
                resubscriptions.next_attempt(),
                None,
                "{case}: nothing pending"
            );
            resubscriptions.lost(lost, &owners, now);
            assert_eq!(resubscriptions.batch(10), docs, "{case}");
            assert_eq!(resubscriptions.control_pending(), control, "{case}");
        }
    }

    #[test]
    fn failed_attempts_back_off_and_progress_resets_the_pause() {
        let now = Instant::now();
        let owners: Owners = [("quire:doc:{a}".to_owned(), 1)].into_iter().collect();
        let mut resubscriptions = Resubscriptions::new(&owners, now);
        assert_eq!(resubscriptions.next_attempt(), Some(now));
        let mut pauses = Vec::new();
        for _ in 0..6 {
            resubscriptions.failed(now);
            pauses.push(resubscriptions.next_attempt().map(|at| at - now));
        }
        let ms = |ms| Some(Duration::from_millis(ms));
        assert_eq!(
            pauses,
            [ms(50), ms(100), ms(200), ms(400), ms(500), ms(500)]
        );
        resubscriptions.progressed(now);
        resubscriptions.failed(now);
        assert_eq!(resubscriptions.next_attempt(), Some(now + MIN_RETRY));
        resubscriptions.subscribed("quire:doc:{a}");
        resubscriptions.control_subscribed();
        assert_eq!(resubscriptions.next_attempt(), None);
    }

    #[test]
    fn a_channel_is_deaf_when_our_own_message_does_not_come_back_in_time() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut echoes = Echoes::default();
        echoes.published("a", at(0));
        echoes.published("a", at(2000)); // the earliest unanswered counts
        echoes.published("b", at(0));
        echoes.heard("b");
        echoes.published("c", at(1000));
        assert!(echoes.deaf(at(3000)).is_empty(), "not overdue yet");
        assert_eq!(echoes.deaf(at(3001)), ["a"]);
        assert!(echoes.deaf(at(3001)).is_empty(), "reported once");
        assert_eq!(echoes.deaf(at(9000)), ["c"]);
        echoes.heard("never published");
        assert!(echoes.deaf(at(20000)).is_empty());
    }
}
