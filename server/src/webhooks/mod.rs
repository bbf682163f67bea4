//! Webhooks with an outbox: document events POSTed to `--webhook-url`,
//! signed, retried, and never lost to a crash.
//!
//! An event is written to an outbox in the same storage write as the change
//! that caused it: on one node, in the sled batch of the append or delete
//! (`local.rs`); with `--postgres-url`, in the upload or delete transaction
//! in PostgreSQL (`crate::record::webhooks`). `document.updated` is
//! debounced: a change leaves a *mark* on its document (first and last
//! change, a change count); once the document has been quiet for
//! `--webhook-debounce-ms`, or marked for five times that, the dispatcher
//! *seals* the mark into an event carrying the state vector of that moment
//! (and, with `--webhook-include-update`, the update since the previous
//! event) and removes the mark unless it changed meanwhile (`seal.rs`).
//!
//! `dispatch.rs` delivers each outbox entry (one per event and endpoint):
//! it claims due entries with a lease (a crash mid-delivery means a later
//! redelivery, never a loss), POSTs them signed as the Standard Webhooks
//! specification says (`sign.rs`), and settles each: delivered (removed),
//! retried with exponential backoff and jitter (`retry.rs`), or, after
//! `--webhook-max-attempts`, parked as a dead letter that the admin REST
//! routes list and replay (`rest.rs`). In a cluster the outbox is one
//! PostgreSQL table and a lease is a row lock, so each event is delivered
//! by one node.

pub mod dispatch;
pub mod local;
pub mod rest;
pub mod retry;
pub mod seal;
pub mod sign;

use crate::config::{Config, WebhookEvent};
use crate::record::{Record, RecordError};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// A mark older than this many debounce windows is sealed even while the
/// document keeps changing, so a document edited without pause still
/// produces an event now and then.
pub const MAX_WAIT_WINDOWS: u32 = 5;

/// Outbox entries claimed per round.
pub const CLAIM_BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("--webhook-url needs --webhook-secret: deliveries are always signed")]
    NoSecret,
    #[error("--webhook-secret starts with whsec_ but the rest is not base64: {0}")]
    BadSecret(String),
    #[error("--webhook-url {url:?} is not an http(s) URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "webhooks in a cluster need --postgres-url: the outbox lives in the shared record, \
         so that each event is delivered by one node"
    )]
    ClusterWithoutRecord,
}

/// Validated webhook settings; `None` from [`Settings::from_config`] when no
/// URL is configured.
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoints: Vec<String>,
    pub key: Arc<[u8]>,
    pub events: Vec<WebhookEvent>,
    pub payload: Payload,
    pub debounce: Duration,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub first_retry: Duration,
}

/// The connection events a document's actor writes, if any are wanted.
#[derive(Debug, Clone)]
pub struct ConnectionEvents {
    pub endpoints: Vec<String>,
    pub opened: bool,
    pub closed: bool,
}

impl ConnectionEvents {
    /// From the flags `Settings::from_config` validated at start.
    pub fn from_config(config: &Config) -> Option<ConnectionEvents> {
        let wants = |event| config.webhook_events.contains(&event);
        let events = ConnectionEvents {
            endpoints: config.webhook_urls.clone(),
            opened: wants(WebhookEvent::ConnectionOpened),
            closed: wants(WebhookEvent::ConnectionClosed),
        };
        (!events.endpoints.is_empty() && (events.opened || events.closed)).then_some(events)
    }

    /// The entries of one connection event.
    pub fn entries(
        &self,
        kind: WebhookEvent,
        doc: &str,
        protocol: &str,
        connections: usize,
        now_ms: i64,
    ) -> Vec<Entry> {
        let body = EventBody::new(
            kind,
            doc,
            now_ms,
            EventData {
                protocol: Some(protocol.to_owned()),
                connections: Some(connections as u64),
                ..EventData::default()
            },
        );
        Entry::for_each(&self.endpoints, &body, now_ms)
    }
}

/// What a `document.updated` event carries besides the state vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    StateVector,
    StateVectorAndUpdate,
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Option<Settings>, WebhookConfigError> {
        if config.webhook_urls.is_empty() {
            return Ok(None);
        }
        let secret = config
            .webhook_secret
            .as_deref()
            .ok_or(WebhookConfigError::NoSecret)?;
        for url in &config.webhook_urls {
            let parsed = reqwest::Url::parse(url).map_err(|e| WebhookConfigError::BadUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(WebhookConfigError::BadUrl {
                    url: url.clone(),
                    reason: format!("the scheme is {:?}", parsed.scheme()),
                });
            }
        }
        if config.redis_url.is_some() && config.postgres_url.is_none() {
            return Err(WebhookConfigError::ClusterWithoutRecord);
        }
        let mut events = config.webhook_events.clone();
        events.sort_unstable();
        events.dedup();
        Ok(Some(Settings {
            endpoints: config.webhook_urls.clone(),
            key: sign::key(secret)?.into(),
            events,
            payload: if config.webhook_include_update {
                Payload::StateVectorAndUpdate
            } else {
                Payload::StateVector
            },
            debounce: Duration::from_millis(config.webhook_debounce_ms.max(1)),
            timeout: Duration::from_millis(config.webhook_timeout_ms.max(1)),
            max_attempts: config.webhook_max_attempts.max(1),
            first_retry: Duration::from_millis(config.webhook_retry_ms.max(1)),
        }))
    }

    pub fn wants(&self, event: WebhookEvent) -> bool {
        self.events.contains(&event)
    }

    /// How long a claimed entry is not claimed again: a delivery's timeout
    /// and a margin, after which a node that died mid-delivery has its
    /// entries delivered by another (or by itself after a restart).
    pub fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(5)
    }
}

impl WebhookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::DocumentCreated => "document.created",
            WebhookEvent::DocumentUpdated => "document.updated",
            WebhookEvent::DocumentDeleted => "document.deleted",
            WebhookEvent::ConnectionOpened => "connection.opened",
            WebhookEvent::ConnectionClosed => "connection.closed",
        }
    }
}

/// The JSON body of one event: what a receiver parses, and what is signed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventBody {
    /// The idempotency key: the same for every attempt and every endpoint
    /// (also the `webhook-id` header).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// When the event was written to the outbox (RFC 3339, UTC).
    pub timestamp: String,
    pub document: String,
    pub data: EventData,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventData {
    /// `document.updated`: the document's state vector (v1, base64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_vector: Option<String>,
    /// `document.updated` with `--webhook-include-update`: the v1 update
    /// (base64) from the previous event's state vector to this one's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
    /// Connection events: `y-websocket` or `hocuspocus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Connection events: the document's connections on this node after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
}

impl EventBody {
    pub fn new(kind: WebhookEvent, document: &str, at_ms: i64, data: EventData) -> EventBody {
        let timestamp = chrono::DateTime::from_timestamp_millis(at_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        EventBody {
            id: format!("evt_{}", uuid::Uuid::new_v4().simple()),
            kind: kind.as_str().to_owned(),
            timestamp,
            document: document.to_owned(),
            data,
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One event for one endpoint, as the outbox keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub event_id: String,
    pub kind: String,
    pub document: String,
    pub endpoint: String,
    /// The JSON body, exactly as every attempt sends it.
    pub body: String,
    pub created_ms: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not claimed again before this (ms): the next retry, or a lease.
    pub next_ms: i64,
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Entry {
    /// One entry per endpoint for `body`.
    pub fn for_each(endpoints: &[String], body: &EventBody, now_ms: i64) -> Vec<Entry> {
        let json = body.to_json();
        endpoints
            .iter()
            .map(|endpoint| Entry {
                event_id: body.id.clone(),
                kind: body.kind.clone(),
                document: body.document.clone(),
                endpoint: endpoint.clone(),
                body: json.clone(),
                created_ms: now_ms,
                attempts: 0,
                next_ms: now_ms,
                last_error: None,
            })
            .collect()
    }
}

/// An outbox entry and where it is kept: its id in the outbox.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: u64,
    pub entry: Entry,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// The receiver answered 2xx: the entry is removed.
    Delivered,
    /// Tried again at `next_ms`.
    Retry { next_ms: i64, error: String },
    /// Out of attempts: parked as a dead letter.
    Dead { error: String },
}

/// A document with changes not yet sealed into an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub first_ms: i64,
    pub last_ms: i64,
    pub changes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Where the outbox is: sled on one node, PostgreSQL in a cluster.
#[derive(Clone)]
pub enum Outbox {
    Local(Store),
    /// The outbox is the record's; the node's sled only keeps the
    /// connection events its actors wrote, until [`Outbox::gather`] moves
    /// them up.
    Shared(Record, Store),
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub dead: u64,
    pub marked: u64,
}

/// How long connection events being moved to PostgreSQL stay claimed in
/// sled: a failed move is tried again after this.
const GATHER_LEASE_MS: i64 = 10_000;

impl Outbox {
    /// In a cluster: moves the connection events the node's actors wrote to
    /// sled (without waiting, as on one node) into PostgreSQL, where any
    /// node delivers them. A crash between the insert and sled's removal
    /// moves them twice: each is then delivered twice, with its id.
    pub async fn gather(&self, now_ms: i64) -> Result<usize, OutboxError> {
        let Outbox::Shared(record, store) = self else {
            return Ok(0);
        };
        let mut moved = 0;
        loop {
            let claimed = store
                .claim_webhooks(now_ms, now_ms + GATHER_LEASE_MS, CLAIM_BATCH)
                .await?;
            let full = claimed.len() == CLAIM_BATCH;
            if claimed.is_empty() {
                return Ok(moved);
            }
            let entries: Vec<Entry> = claimed.iter().map(|c| c.entry.clone()).collect();
            record.enqueue_webhooks(&entries).await?;
            for c in &claimed {
                store.settle_webhook(c.id, Settle::Delivered).await?;
            }
            moved += claimed.len();
            if !full {
                return Ok(moved);
            }
        }
    }

    /// Seals the marks that are due into events; returns how many.
    pub async fn seal_due(&self, settings: &Settings, now_ms: i64) -> Result<usize, OutboxError> {
        match self {
            Outbox::Local(store) => seal::seal_local(store, settings, now_ms).await,
            Outbox::Shared(record, _) => Ok(record.seal_webhooks(settings, now_ms).await?),
        }
    }

    /// Up to `limit` entries due at `now_ms`, leased until `lease_ms`.
    pub async fn claim(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, OutboxError> {
        match self {
            Outbox::Local(store) => Ok(store.claim_webhooks(now_ms, lease_until_ms, limit).await?),
            Outbox::Shared(record, _) => {
                Ok(record.claim_webhooks(now_ms, lease_until_ms, limit).await?)
            }
        }
    }

    /// Settles a claimed entry. In sled one dispatcher claims, so its lease
    /// is always current; PostgreSQL checks it (see `Record::settle_webhook`).
    pub async fn settle(&self, claimed: &Claimed, outcome: Settle) -> Result<(), OutboxError> {
        match self {
            Outbox::Local(store) => Ok(store.settle_webhook(claimed.id, outcome).await?),
            Outbox::Shared(record, _) => Ok(record
                .settle_webhook(claimed.id, claimed.entry.next_ms, outcome)
                .await?),
        }
    }

    /// Dead letters, oldest first, at most `limit`.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<Claimed>, OutboxError> {
        match self {
            Outbox::Local(store) => Ok(store.dead_webhooks(limit).await?),
            Outbox::Shared(record, _) => Ok(record.dead_webhooks(limit).await?),
        }
    }

    /// Puts dead letters back in the outbox with fresh attempts: `id`, or
    /// every one. Returns how many.
    pub async fn replay(&self, id: Option<u64>, now_ms: i64) -> Result<u64, OutboxError> {
        match self {
            Outbox::Local(store) => Ok(store.replay_webhooks(id, now_ms).await?),
            Outbox::Shared(record, _) => Ok(record.replay_webhooks(id, now_ms).await?),
        }
    }

    /// How often the dispatcher counts the outbox for the metrics: sled's
    /// counts are in memory, PostgreSQL's are scans that every node would
    /// otherwise run every round.
    pub fn count_every(&self) -> Duration {
        match self {
            Outbox::Local(_) => Duration::ZERO,
            Outbox::Shared(..) => Duration::from_secs(1),
        }
    }

    pub async fn counts(&self) -> Result<Counts, OutboxError> {
        match self {
            Outbox::Local(store) => Ok(store.webhook_counts().await?),
            Outbox::Shared(record, _) => Ok(record.webhook_counts().await?),
        }
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cli;
    use clap::Parser;

    fn settings(args: &[&str]) -> Result<Option<Settings>, WebhookConfigError> {
        let mut argv = vec!["quire"];
        argv.extend_from_slice(args);
        Settings::from_config(&Cli::parse_from(argv).serve)
    }

    #[test]
    fn webhooks_are_off_without_a_url_and_refused_without_a_secret() {
        assert!(matches!(settings(&[]), Ok(None)));
        assert!(matches!(
            settings(&["--webhook-url", "http://r/hooks"]),
            Err(WebhookConfigError::NoSecret)
        ));
    }

    #[test]
    fn receivers_must_be_http_urls_and_may_be_many() {
        let two = settings(&[
            "--webhook-url",
            "http://a/hooks,https://b/hooks",
            "--webhook-secret",
            "s",
        ]);
        assert!(matches!(two, Ok(Some(s)) if s.endpoints.len() == 2));
        for bad in ["ftp://a/hooks", "not a url", "/relative"] {
            assert!(
                matches!(
                    settings(&["--webhook-url", bad, "--webhook-secret", "s"]),
                    Err(WebhookConfigError::BadUrl { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_cluster_without_a_shared_record_has_nowhere_to_keep_the_outbox() {
        let hooks = ["--webhook-url", "http://a/hooks", "--webhook-secret", "s"];
        let redis = ["--redis-url", "redis://127.0.0.1:6379"];
        let postgres = ["--postgres-url", "postgres://quire@127.0.0.1/quire"];
        assert!(matches!(
            settings(&[&hooks[..], &redis[..]].concat()),
            Err(WebhookConfigError::ClusterWithoutRecord)
        ));
        // With the shared record, with or without Redis.
        assert!(matches!(
            settings(&[&hooks[..], &postgres[..]].concat()),
            Ok(Some(_))
        ));
        assert!(matches!(
            settings(&[&hooks[..], &redis[..], &postgres[..]].concat()),
            Ok(Some(_))
        ));
    }

    #[test]
    fn the_events_chosen_are_the_events_wanted() {
        let Ok(Some(s)) = settings(&[
            "--webhook-url",
            "http://a/hooks",
            "--webhook-secret",
            "s",
            "--webhook-events",
            "document.deleted,document.deleted",
        ]) else {
            panic!("valid flags");
        };
        assert!(s.wants(WebhookEvent::DocumentDeleted));
        assert!(!s.wants(WebhookEvent::DocumentUpdated));
        assert_eq!(s.events.len(), 1);
    }
}
