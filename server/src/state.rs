//! What every handler shares.

use crate::auth::Authenticator;
use crate::config::Config;
use crate::doc::Registry;
use crate::store::Store;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub registry: Registry,
    pub store: Store,
    /// One permit per open WebSocket; upgrades past `--max-connections` get 503.
    pub connections: Arc<Semaphore>,
    pub next_conn_id: Arc<AtomicU64>,
    /// Cancelled when draining starts: `/readyz` 503, upgrades refused.
    pub draining: CancellationToken,
    /// Cancelled when the grace period ends: sockets close, actors stop.
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub node_id: Arc<str>,
    /// Shared: Hocuspocus sockets keep it for their life (Auth frames).
    pub auth: Arc<Authenticator>,
    /// Set in cluster mode (`--redis-url`).
    pub cluster: Option<crate::cluster::Cluster>,
    /// Set with `--webhook-url`: where the outbox is, for its admin routes.
    pub webhooks: Option<crate::webhooks::Outbox>,
}
