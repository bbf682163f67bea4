//! Wiring: storage, registry, router, listener, and the one shutdown path.

use crate::auth::Authenticator;
use crate::cluster::{Cluster, ClusterOptions};
use crate::config::{Config, WebhookEvent};
use crate::doc::Registry;
use crate::record::{upload, Record, RecordError};
use crate::state::AppState;
use crate::store::{Spool, Store, StoreError, StoreOptions};
use crate::webhooks::dispatch::Dispatcher;
use crate::webhooks::local::{DocumentEvents, LocalEvents};
use crate::webhooks::Outbox;
use crate::{request, rest, versions_rest, web, ws};
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    /// Opening storage, or its first requests; transparent so that a
    /// refusal to start is one line (each variant names the data dir).
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Files(#[from] crate::datadir::DataDirError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::WebhookConfigError),
    #[error("cannot start webhook deliveries: {0}")]
    WebhookClient(#[from] reqwest::Error),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
    /// Shutdown while storage failed: these documents' latest changes are
    /// lost (each is logged by name).
    #[error("{documents} document(s) could not be persisted before exit")]
    Unpersisted { documents: usize },
    #[error("final storage flush failed: {0}")]
    FinalFlush(StoreError),
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Quire", description = "Collaborative Yjs document server: REST API. The WebSocket endpoint `/ws/{doc}` speaks the y-websocket protocol and is described in the README. Every error is JSON, `{\"error\": \"...\"}`; a 500 also carries `request_id`, which every response has in its `x-request-id` header."),
    modifiers(&SecuritySchemes),
    tags(
        (name = "documents", description = "Documents, snapshots, updates and the change feed"),
        (name = "history", description = "Versions of documents: list, record, export, diff, restore"),
        (name = "access", description = "Access tokens"),
        (name = "operations", description = "Health, readiness, metrics, backups"),
    )
)]
struct ApiDoc;

/// The two ways to present a token, which the protected operations name.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token (HS256 JWT from POST /api/tokens) or the admin token. \
                         Not needed when the server runs without --auth-secret (open mode).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "The same token as a query parameter, for clients that cannot set headers \
                 (EventSource, WebSocket); Authorization wins when both are present.",
            ))),
        );
    }
}

/// The REST API; every route here is in the OpenAPI document, which is
/// generated from the same handlers' annotations and so cannot drift.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(rest::list))
        .routes(routes!(rest::info, rest::delete))
        .routes(routes!(rest::snapshot))
        .routes(routes!(crate::sse::events))
        .routes(routes!(rest::post_update))
        .routes(routes!(rest::post_stateless))
        .routes(routes!(versions_rest::list, versions_rest::save))
        .routes(routes!(versions_rest::snapshot))
        .routes(routes!(versions_rest::diff))
        .routes(routes!(versions_rest::restore))
        .routes(routes!(rest::mint_token))
        .routes(routes!(crate::backup::http::backup))
        .routes(routes!(crate::webhooks::rest::list))
        .routes(routes!(crate::webhooks::rest::replay_all))
        .routes(routes!(crate::webhooks::rest::replay_one))
        .routes(routes!(rest::healthz))
        .routes(routes!(rest::readyz))
        .routes(routes!(rest::metrics))
}

/// The OpenAPI document of the REST API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_message_bytes;
    let (api, spec) = api_routes().split_for_parts();
    let spec = Arc::new(spec);
    let http = Router::new()
        .route("/", get(web::index))
        .route("/d/{*doc}", get(web::index))
        .route("/assets/{*path}", get(web::asset))
        .route(
            "/api/openapi.json",
            get(move || {
                let spec = spec.clone();
                async move { axum::Json(spec.as_ref().clone()) }
            }),
        )
        .merge(api)
        .fallback(request::not_found)
        // After every route: it applies to the routes there are.
        .method_not_allowed_fallback(request::method_not_allowed);
    // The WebSocket routes are merged after the request layers, which so
    // stay off them (see `request`).
    Router::new()
        .route("/hocuspocus", get(ws::hocuspocus::upgrade))
        .route("/ws", get(ws::hocuspocus::upgrade))
        .route("/ws/", get(ws::hocuspocus::upgrade))
        .route("/ws/{*doc}", get(ws::upgrade))
        .merge(request::layer(http))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// This node's id, kept in its own file in the data directory (not only in
/// sled, whose recovery can silently drop it): only the first start
/// generates one. A data directory from before that file takes the id sled
/// holds, so the node stays the same node.
async fn node_id(data_dir: &std::path::Path, store: &Store) -> Result<String, ServeError> {
    if let Some(id) = crate::datadir::read_node_id(data_dir)? {
        return Ok(id);
    }
    let id = store.node_id(uuid::Uuid::new_v4().to_string()).await?;
    crate::datadir::write_node_id(data_dir, &id)?;
    Ok(id)
}

/// Serves until `drain` is cancelled; then drains: `/readyz` answers 503 and
/// upgrades are refused at once, and after `--drain-grace-secs` every socket
/// is closed with 1001, every document compacted and flushed, and it returns.
pub async fn serve(config: Config, drain: CancellationToken) -> Result<(), ServeError> {
    let shutdown = CancellationToken::new();
    let grace = std::time::Duration::from_secs(config.drain_grace_secs);
    crate::metrics::init();
    // Before storage, the listener and the sockets open their descriptors.
    crate::fdlimit::raise_and_check(config.max_connections);
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let webhooks = crate::webhooks::Settings::from_config(&config)?.map(Arc::new);
    let path = config.data_dir.clone();
    let options = StoreOptions {
        cache_bytes: config.sled_cache_bytes,
        flush_interval: config.flush_interval(),
        accept_data_loss: config.accept_data_loss,
        spool: match config.postgres_url {
            Some(_) => Spool::Upload,
            None => Spool::Off,
        },
        webhooks: webhooks.as_ref().map(|settings| LocalEvents {
            endpoints: settings.endpoints.clone(),
            documents: match config.postgres_url {
                Some(_) => DocumentEvents::InRecord,
                None => DocumentEvents::Here,
            },
            created: settings.wants(WebhookEvent::DocumentCreated),
            deleted: settings.wants(WebhookEvent::DocumentDeleted),
        }),
    };
    let (store, store_thread) = tokio::task::spawn_blocking(move || Store::open(&path, options))
        .await
        .map_err(|e| StoreError::Corrupt(format!("storage open panicked: {e}")))??;
    let node_id: Arc<str> = match &config.node_id {
        Some(id) => id.as_str().into(),
        None => node_id(&config.data_dir, &store).await?.into(),
    };

    let tracker = TaskTracker::new();
    let registry = Registry::new(store.clone(), &config, tracker.clone(), shutdown.clone());
    registry.persist_on_recovery();
    // The uploader outlives the documents: it stops only after they have
    // all written their last updates to the spool, then uploads the rest.
    let uploader = match &config.postgres_url {
        Some(url) => {
            let record = Record::new(
                url,
                node_id.clone(),
                Duration::from_secs(config.postgres_lag_secs),
            )?;
            registry.set_record(record.clone());
            if let Some(settings) = &webhooks {
                record.set_webhooks(settings.clone());
            }
            let warming = record.clone();
            tokio::spawn(async move { warming.warm_up().await });
            let stop = CancellationToken::new();
            let task = tokio::spawn(upload::run(record.clone(), store.clone(), stop.clone()));
            tracing::info!("documents are recorded in PostgreSQL; this node's sled is its spool");
            Some((record, stop, task))
        }
        None => None,
    };
    let cluster = match &config.redis_url {
        Some(url) => {
            let cluster = Cluster::start(
                ClusterOptions {
                    redis_url: url.clone(),
                    node_id: node_id.clone(),
                    resync_interval: Duration::from_secs(config.cluster_resync_secs.max(1)),
                    heartbeat_interval: config.cluster_heartbeat(),
                },
                registry.clone(),
                &tracker,
                shutdown.clone(),
            )?;
            registry.set_cluster(cluster.clone());
            tracing::info!(node_id = %node_id, "cluster mode through redis");
            Some(cluster)
        }
        None => None,
    };
    // With a shared record the outbox is in it, so that each event is
    // delivered by one node of the cluster.
    let outbox = webhooks.as_ref().map(|_| match &uploader {
        Some((record, _, _)) => Outbox::Shared(record.clone(), store.clone()),
        None => Outbox::Local(store.clone()),
    });
    if let (Some(settings), Some(outbox)) = (&webhooks, &outbox) {
        crate::metrics::webhooks_enabled();
        let dispatcher = Dispatcher::new(outbox.clone(), settings.clone())?;
        tracker.spawn(dispatcher.run(shutdown.clone()));
        tracing::info!(
            receivers = settings.endpoints.len(),
            "webhooks: events are written to the outbox with the changes and delivered from it"
        );
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let auth = Authenticator::new(config.auth_secret.as_deref(), config.admin_token.as_deref());
    if auth.is_open() {
        tracing::warn!("no --auth-secret: open mode, anyone can read and write every document");
    }
    let state = AppState {
        cluster,
        webhooks: outbox,
        draining: drain.clone(),
        auth: Arc::new(auth),
        connections: Arc::new(Semaphore::new(config.max_connections)),
        config: Arc::new(config),
        registry,
        store: store.clone(),
        next_conn_id: Arc::new(AtomicU64::new(1)),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        node_id: node_id.clone(),
    };
    tracing::info!(%addr, node_id = %node_id, data_dir = %state.config.data_dir.display(), "quire listening on http://{addr}");

    let stop = shutdown.clone();
    tracker.spawn(async move {
        tokio::select! {
            _ = drain.cancelled() => {}
            _ = stop.cancelled() => return,
        }
        tracing::info!(
            grace_secs = grace.as_secs(),
            "draining: not ready, refusing upgrades"
        );
        tokio::time::sleep(grace).await;
        stop.cancel();
    });
    let registry = state.registry.clone();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    // Every frame is latency-sensitive (keystrokes): no Nagle delay. Writes
    // are already batched per burst by each connection's writer.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;

    tracing::info!("closing sockets and flushing documents");
    tracker.close();
    tracker.wait().await;
    if let Some((record, stop, task)) = uploader {
        stop.cancel();
        let _ = task.await;
        let deadline = tokio::time::Instant::now() + grace.max(Duration::from_secs(5));
        upload::finish(&record, &store, deadline).await;
    }
    let flushed = store.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || store_thread.join()).await;
    // An exit status of 0 says everything is on disk: only then.
    let unpersisted = registry.unpersisted();
    if unpersisted > 0 {
        tracing::error!(
            documents = unpersisted,
            "stopped with documents not persisted (named above)"
        );
        return Err(ServeError::Unpersisted {
            documents: unpersisted,
        });
    }
    if let Err(e) = flushed {
        tracing::error!(error = %e, "final flush failed");
        return Err(ServeError::FinalFlush(e));
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_data_dir_from_before_the_node_id_file_keeps_the_id_sled_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = || StoreOptions {
            cache_bytes: 1 << 20,
            flush_interval: Duration::from_millis(5),
            accept_data_loss: false,
            spool: Spool::Off,
            webhooks: None,
        };
        let (store, thread) = Store::open(dir.path(), options()).expect("open");
        // What an older Quire did: the id only in sled.
        let old = store.node_id("old-node".into()).await.expect("id");
        assert_eq!(old, "old-node");
        assert_eq!(
            node_id(dir.path(), &store).await.expect("id"),
            "old-node",
            "migrated, not regenerated"
        );
        store.shutdown().await.expect("shutdown");
        thread.join().expect("thread");
        assert_eq!(
            crate::datadir::read_node_id(dir.path())
                .expect("read")
                .as_deref(),
            Some("old-node")
        );

        // From now on the file decides, whatever sled says.
        let (store, _thread) = Store::open(dir.path(), options()).expect("open");
        std::fs::write(dir.path().join("node-id"), "renamed\n").expect("write");
        assert_eq!(node_id(dir.path(), &store).await.expect("id"), "renamed");
    }
}
