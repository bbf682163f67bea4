//! What every document actor is configured with, taken from [`Config`] in
//! one place.

use crate::config::Config;
use crate::webhooks::ConnectionEvents;
use std::time::Duration;

#[derive(Debug, Clone)]
pub(super) struct ActorSettings {
    /// Zero: every update is on disk before it is relayed.
    pub(super) flush_interval: Duration,
    pub(super) idle_unload: Duration,
    pub(super) compact_log_bytes: u64,
    pub(super) max_doc_bytes: u64,
    pub(super) max_outbound_bytes: usize,
    pub(super) broadcast_window: Duration,
    /// How long a document leaving memory at shutdown keeps trying to
    /// persist while storage fails: `--drain-grace-secs`, at least 5 s.
    pub(super) persist_retry: Duration,
    /// `--history-quiet-secs`.
    pub(super) history_quiet: Duration,
    /// `--history-max-versions`.
    pub(super) history_max_versions: usize,
    /// `--webhook-events` with connection events.
    pub(super) connection_events: Option<ConnectionEvents>,
}

/// How an actor logs an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// On disk (fsynced) before the update is relayed.
    BeforeRelay,
    /// Written in the next group commit, within the flush interval.
    GroupCommit,
}

impl ActorSettings {
    pub(super) fn from_config(config: &Config) -> Self {
        ActorSettings {
            flush_interval: config.flush_interval(),
            idle_unload: config.idle_unload(),
            compact_log_bytes: config.compact_log_bytes,
            max_doc_bytes: config.max_doc_bytes,
            max_outbound_bytes: config.max_outbound_bytes,
            broadcast_window: config.broadcast_window(),
            persist_retry: Duration::from_secs(config.drain_grace_secs.max(5)),
            history_quiet: Duration::from_secs(config.history_quiet_secs.max(1)),
            history_max_versions: config.history_max_versions.max(1) as usize,
            connection_events: ConnectionEvents::from_config(config),
        }
    }

    pub(super) fn durability(&self) -> Durability {
        if self.flush_interval.is_zero() {
            Durability::BeforeRelay
        } else {
            Durability::GroupCommit
        }
    }
}
