//! Prometheus metrics through the `metrics` facade.
//!
//! Hot-path counters are resolved once into handles; gauges that change per
//! frame (queue depth) are plain atomics copied into the registry at scrape
//! time, so a broadcast costs no registry lookups.

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

struct Handles {
    prometheus: Option<PrometheusHandle>,
    frames_received: Counter,
    bytes_received: Counter,
    frames_sent: Counter,
    bytes_sent: Counter,
    updates_applied: Counter,
    flush_seconds: Histogram,
    apply_seconds: Histogram,
    connections: Gauge,
    hocuspocus_sockets: Gauge,
    y_websocket_sessions: Gauge,
    hocuspocus_sessions: Gauge,
    documents_loaded: Gauge,
    outbound_queued: Gauge,
    redis_published: Counter,
    redis_received: Counter,
    redis_resyncs: Counter,
    storage_healthy: Gauge,
    storage_failures: Counter,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();
static OUTBOUND_QUEUED: AtomicI64 = AtomicI64::new(0);

const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

fn handles() -> &'static Handles {
    HANDLES.get_or_init(|| {
        let prometheus = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .ok()
            .and_then(|b| b.install_recorder().ok());
        describe();
        Handles {
            prometheus,
            frames_received: metrics::counter!("quire_frames_received_total"),
            bytes_received: metrics::counter!("quire_bytes_received_total"),
            frames_sent: metrics::counter!("quire_frames_sent_total"),
            bytes_sent: metrics::counter!("quire_bytes_sent_total"),
            updates_applied: metrics::counter!("quire_updates_applied_total"),
            flush_seconds: metrics::histogram!("quire_flush_seconds"),
            apply_seconds: metrics::histogram!("quire_update_apply_seconds"),
            connections: metrics::gauge!("quire_connections", "protocol" => "y-websocket"),
            hocuspocus_sockets: metrics::gauge!("quire_connections", "protocol" => "hocuspocus"),
            y_websocket_sessions: metrics::gauge!("quire_sessions", "protocol" => "y-websocket"),
            hocuspocus_sessions: metrics::gauge!("quire_sessions", "protocol" => "hocuspocus"),
            documents_loaded: metrics::gauge!("quire_documents_loaded"),
            outbound_queued: metrics::gauge!("quire_broadcast_queue_depth"),
            redis_published: metrics::counter!("quire_redis_published_total"),
            redis_received: metrics::counter!("quire_redis_received_total"),
            redis_resyncs: metrics::counter!("quire_redis_resyncs_total"),
            storage_healthy: metrics::gauge!("quire_storage_healthy"),
            storage_failures: metrics::counter!("quire_storage_failures_total"),
        }
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "quire_connections",
        "Open WebSockets, by protocol (what --max-connections counts)"
    );
    describe_gauge!(
        "quire_sessions",
        "Open document sessions, by protocol: one per y-websocket connection, one per authenticated document of a Hocuspocus socket"
    );
    describe_gauge!("quire_documents_loaded", "Documents loaded in memory");
    describe_gauge!(
        "quire_broadcast_queue_depth",
        "Frames queued for clients, all connections"
    );
    describe_counter!("quire_frames_received_total", "WebSocket frames received");
    describe_counter!(
        "quire_bytes_received_total",
        Unit::Bytes,
        "WebSocket bytes received"
    );
    describe_counter!("quire_frames_sent_total", "WebSocket frames sent");
    describe_gauge!(
        "quire_storage_healthy",
        "1 while storage accepts writes, 0 while it is failing (updates are refused)"
    );
    describe_counter!(
        "quire_storage_failures_total",
        "Times storage started failing (each outage counts once)"
    );
    describe_counter!(
        "quire_bytes_sent_total",
        Unit::Bytes,
        "WebSocket bytes sent"
    );
    describe_counter!("quire_updates_applied_total", "Document updates applied");
    describe_counter!(
        "quire_redis_resubscriptions_total",
        "Document channels subscribed again after Redis lost the subscription, by reason"
    );
    describe_counter!(
        "quire_redis_dropped_total",
        "Messages from Redis dropped because the subscriber lagged (healed at the next resync)"
    );
    describe_counter!(
        "quire_cluster_peers_declared_dead_total",
        "Peer nodes declared dead after missing their heartbeats"
    );
    describe_counter!("quire_frames_rejected_total", "Frames refused, by reason");
    describe_counter!(
        "quire_backups_total",
        "GET /api/backup archives, by result: written (manifest included) or failed (cut short)"
    );
    describe_counter!(
        "quire_versions_recorded_total",
        "Versions of documents recorded, by trigger (auto, unload, manual, restore)"
    );
    describe_histogram!(
        "quire_version_record_seconds",
        Unit::Seconds,
        "Time an actor spends recording a version: the snapshot and its write"
    );
    describe_histogram!(
        "quire_flush_seconds",
        Unit::Seconds,
        "Storage flush (fsync) latency"
    );
    describe_histogram!(
        "quire_update_apply_seconds",
        Unit::Seconds,
        "Time to apply one update"
    );
}

/// Starts the recorder; call once at start-up so every series is exported from the first scrape.
pub fn init() {
    let h = handles();
    // Touch the labelled counters so they show up at zero.
    h.connections.increment(0.0);
    h.hocuspocus_sockets.increment(0.0);
    h.y_websocket_sessions.increment(0.0);
    h.hocuspocus_sessions.increment(0.0);
    h.storage_failures.increment(0);
    for outcome in [BackupOutcome::Written, BackupOutcome::Failed] {
        metrics::counter!("quire_backups_total", "result" => outcome.label()).increment(0);
    }
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    let h = handles();
    h.outbound_queued
        .set(OUTBOUND_QUEUED.load(Ordering::Relaxed) as f64);
    h.prometheus
        .as_ref()
        .map(|p| p.render())
        .unwrap_or_default()
}

pub fn frame_received(bytes: usize) {
    let h = handles();
    h.frames_received.increment(1);
    h.bytes_received.increment(bytes as u64);
}

pub fn frame_sent(bytes: usize) {
    let h = handles();
    h.frames_sent.increment(1);
    h.bytes_sent.increment(bytes as u64);
}

pub fn rejected_frame(reason: &'static str) {
    metrics::counter!("quire_frames_rejected_total", "reason" => reason).increment(1);
}

pub fn version_recorded(trigger: &'static str, elapsed: Duration) {
    metrics::counter!("quire_versions_recorded_total", "trigger" => trigger).increment(1);
    metrics::histogram!("quire_version_record_seconds").record(elapsed.as_secs_f64());
}

pub fn update_applied(elapsed: Duration) {
    let h = handles();
    h.updates_applied.increment(1);
    h.apply_seconds.record(elapsed.as_secs_f64());
}

pub fn flushed(elapsed: Duration) {
    handles().flush_seconds.record(elapsed.as_secs_f64());
}

/// A y-websocket connection: one socket, one document session.
pub fn connection_opened() {
    let h = handles();
    h.connections.increment(1.0);
    h.y_websocket_sessions.increment(1.0);
}

pub fn connection_closed() {
    let h = handles();
    h.connections.decrement(1.0);
    h.y_websocket_sessions.decrement(1.0);
}

pub fn hocuspocus_socket_opened() {
    handles().hocuspocus_sockets.increment(1.0);
}

pub fn hocuspocus_socket_closed() {
    handles().hocuspocus_sockets.decrement(1.0);
}

/// A document of a Hocuspocus socket joined (+1) or left (-1).
pub fn hocuspocus_sessions(delta: f64) {
    handles().hocuspocus_sessions.increment(delta);
}

pub fn document_loaded() {
    handles().documents_loaded.increment(1.0);
}

pub fn document_unloaded() {
    handles().documents_loaded.decrement(1.0);
}

pub fn outbound_queued(delta: i64) {
    OUTBOUND_QUEUED.fetch_add(delta, Ordering::Relaxed);
}

pub fn redis_published() {
    handles().redis_published.increment(1);
}

pub fn redis_received() {
    handles().redis_received.increment(1);
}

pub fn redis_resync() {
    handles().redis_resyncs.increment(1);
}

/// A document channel subscribed again after Redis lost the subscription
/// (`reason`: `disconnection` or `slot_moved`).
pub fn redis_resubscribed(reason: &'static str) {
    metrics::counter!("quire_redis_resubscriptions_total", "reason" => reason).increment(1);
}

/// A message from Redis dropped because the subscriber lagged.
pub fn redis_dropped() {
    metrics::counter!("quire_redis_dropped_total").increment(1);
}

/// A peer node stopped beating and was declared dead.
pub fn peer_declared_dead() {
    metrics::counter!("quire_cluster_peers_declared_dead_total").increment(1);
}

pub fn storage_healthy(healthy: bool) {
    handles()
        .storage_healthy
        .set(if healthy { 1.0 } else { 0.0 });
}

/// Storage started failing: one outage, however many writes it refuses.
pub fn storage_failed() {
    let h = handles();
    h.storage_failures.increment(1);
    h.storage_healthy.set(0.0);
}

/// How a backup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupOutcome {
    /// Every document and the manifest sent.
    Written,
    /// Cut short: the client went away, storage failed, shutdown.
    Failed,
}

impl BackupOutcome {
    fn label(self) -> &'static str {
        match self {
            BackupOutcome::Written => "written",
            BackupOutcome::Failed => "failed",
        }
    }
}

pub fn backup_finished(outcome: BackupOutcome) {
    metrics::counter!("quire_backups_total", "result" => outcome.label()).increment(1);
}

/// The webhook outbox's size, after each dispatcher round.
pub fn webhook_counts(counts: crate::webhooks::Counts) {
    metrics::gauge!("quire_webhook_outbox_entries").set(counts.pending as f64);
    metrics::gauge!("quire_webhook_dead_letters").set(counts.dead as f64);
    metrics::gauge!("quire_webhook_marked_documents").set(counts.marked as f64);
}

/// One delivery attempt's outcome.
pub fn webhook_attempt(outcome: &crate::webhooks::Settle) {
    let label = match outcome {
        crate::webhooks::Settle::Delivered => "delivered",
        crate::webhooks::Settle::Retry { .. } => "retried",
        crate::webhooks::Settle::Dead { .. } => "dead",
    };
    metrics::counter!("quire_webhook_deliveries_total", "outcome" => label).increment(1);
}

/// Describes the webhook series and shows them at zero (called when
/// webhooks are configured).
pub fn webhooks_enabled() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "quire_webhook_outbox_entries",
        "Webhook deliveries waiting in the outbox (one per event and receiver), retries included"
    );
    describe_gauge!(
        "quire_webhook_dead_letters",
        "Webhook deliveries that ran out of attempts; list and replay them over /api/webhooks/dead-letters"
    );
    describe_gauge!(
        "quire_webhook_marked_documents",
        "Documents with changes not yet sealed into a document.updated event"
    );
    describe_counter!(
        "quire_webhook_deliveries_total",
        "Webhook delivery attempts, by outcome (delivered, retried, dead)"
    );
    for outcome in ["delivered", "retried", "dead"] {
        metrics::counter!("quire_webhook_deliveries_total", "outcome" => outcome).increment(0);
    }
    webhook_counts(crate::webhooks::Counts::default());
}
