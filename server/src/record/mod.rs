//! The shared record of documents in cluster mode: PostgreSQL.
//!
//! With `--postgres-url`, PostgreSQL holds every document: a merged
//! snapshot per document and the updates uploaded since (`schema.rs`). Each
//! node's sled store becomes its spool: an applied update is group-committed
//! to sled as before, with a copy queued in the same batch, and `upload.rs`
//! moves the queue to PostgreSQL in idempotent batches keyed by node id and
//! spool sequence. Documents load from PostgreSQL, then the node's own
//! sled copy, then peers (healing by state vector, as before). Listing and
//! deletes are decided in PostgreSQL, so they are global. With webhooks,
//! their outbox is here too, written in the upload and delete transactions
//! (`webhooks.rs`).
//!
//! PostgreSQL down: loaded documents keep serving and spooling; loading a
//! document that is not in memory is refused with a retry (it cannot be
//! known whole), and `/readyz` says "storage lagging" once an update has
//! waited longer than `--postgres-lag-secs`.

mod schema;
mod sql;
pub mod upload;
mod versions;
mod webhooks;

use crate::store::DocMeta;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_postgres::NoTls;

pub use sql::Recorded;

/// Documents waiting to be compacted after leaving memory, at most.
const MAX_COMPACTION_HINTS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("invalid --postgres-url: {0}")]
    Config(String),
    /// PostgreSQL cannot be reached or refused the request; retried.
    #[error("PostgreSQL is unavailable: {0}")]
    Unavailable(String),
    #[error("PostgreSQL holds data Quire cannot read: {0}")]
    Corrupt(String),
}

impl From<tokio_postgres::Error> for RecordError {
    fn from(e: tokio_postgres::Error) -> Self {
        RecordError::Unavailable(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for RecordError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        RecordError::Unavailable(e.to_string())
    }
}

/// Cheap, cloneable handle to PostgreSQL.
#[derive(Clone)]
pub struct Record {
    pool: Pool,
    node_id: Arc<str>,
    state: Arc<State>,
}

struct State {
    /// The schema was created or checked since start.
    migrated: AtomicBool,
    /// The last request reached PostgreSQL.
    up: AtomicBool,
    /// Documents that left memory: compacted after their last upload, so
    /// that their next load is one snapshot (bounded; a dropped hint only
    /// costs that load an integration).
    compaction_hints: Mutex<BTreeSet<String>>,
    /// When the oldest update still waiting in the spool was applied (ms),
    /// 0 when the spool is empty.
    oldest_waiting_ms: AtomicI64,
    lag_limit: Duration,
    /// With webhooks: the events the upload and delete transactions write.
    webhooks: OnceLock<Arc<crate::webhooks::Settings>>,
}

impl Record {
    /// A pool for `url`; connects on first use, so a node starts (and
    /// serves what it holds) while PostgreSQL is down.
    pub fn new(url: &str, node_id: Arc<str>, lag_limit: Duration) -> Result<Record, RecordError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| RecordError::Config(e.to_string()))?;
        config.connect_timeout(Duration::from_secs(3));
        config.application_name("quire");
        // Not the notices of `CREATE TABLE IF NOT EXISTS` on every start.
        config.options("-c client_min_messages=warning");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(3)))
            .recycle_timeout(Some(Duration::from_secs(3)))
            .build()
            .map_err(|e| RecordError::Config(e.to_string()))?;
        describe_metrics();
        // Rows are keyed by (this, spool sequence). A new id per process
        // start, so a sequence that restarts (a lost or replaced data
        // directory under a fixed --node-id) can never collide with rows
        // already uploaded and be dropped as a duplicate; the price is that
        // a batch in flight at a crash is uploaded twice, which merges away.
        let node_id = format!("{node_id}/{}", uuid::Uuid::new_v4()).into();
        Ok(Record {
            pool,
            node_id,
            state: Arc::new(State {
                migrated: AtomicBool::new(false),
                up: AtomicBool::new(true),
                compaction_hints: Mutex::new(BTreeSet::new()),
                oldest_waiting_ms: AtomicI64::new(0),
                lag_limit,
                webhooks: OnceLock::new(),
            }),
        })
    }

    /// A connection, with the schema in place.
    async fn client(&self) -> Result<deadpool_postgres::Object, RecordError> {
        let result = self.connect().await;
        self.observe(&result);
        result
    }

    async fn connect(&self) -> Result<deadpool_postgres::Object, RecordError> {
        let mut client = self.pool.get().await?;
        if !self.state.migrated.load(Ordering::Acquire) {
            schema::migrate(&mut client).await?;
            self.state.migrated.store(true, Ordering::Release);
        }
        Ok(client)
    }

    fn observe<T>(&self, result: &Result<T, RecordError>) {
        let up = !matches!(result, Err(RecordError::Unavailable(_)));
        let was = self.state.up.swap(up, Ordering::AcqRel);
        metrics::gauge!("quire_postgres_up").set(if up { 1.0 } else { 0.0 });
        match (was, up, result) {
            (true, false, Err(e)) => {
                tracing::error!(error = %e, "PostgreSQL unreachable: spooling updates on this node; documents not in memory cannot load")
            }
            (false, true, _) => tracing::info!("PostgreSQL reachable again"),
            _ => {}
        }
    }

    /// Connects and migrates the schema now, so that the first load does
    /// not wait for it. A failure is logged, and retried on use.
    pub async fn warm_up(&self) {
        let _ = self.client().await;
    }

    /// `doc` left this node's memory: compact it once its last updates are
    /// uploaded.
    pub fn hint_compaction(&self, doc: &str) {
        if let Ok(mut hints) = self.state.compaction_hints.lock() {
            if hints.len() < MAX_COMPACTION_HINTS {
                hints.insert(doc.to_owned());
            }
        }
    }

    fn take_compaction_hints(&self) -> BTreeSet<String> {
        self.state
            .compaction_hints
            .lock()
            .map(|mut hints| std::mem::take(&mut *hints))
            .unwrap_or_default()
    }

    /// Everything PostgreSQL holds for `doc`, read in one snapshot.
    pub async fn load(&self, doc: &str) -> Result<Recorded, RecordError> {
        let client = self.client().await?;
        let result = sql::load(&client, doc).await;
        self.observe(&result);
        result
    }

    /// Deletes `doc` as of `at_ms`: its content goes, and updates applied
    /// before `at_ms` that any node still spools are never uploaded. True if
    /// it held the document (then `document.deleted` is in the outbox).
    pub async fn delete(&self, doc: &str, at_ms: i64) -> Result<bool, RecordError> {
        let mut client = self.client().await?;
        let result = sql::delete(&mut client, doc, at_ms, self.webhooks()).await;
        self.observe(&result);
        result
    }

    /// Records a version of `doc`, pruning its versions down to `keep`.
    pub async fn save_version(
        &self,
        doc: &str,
        version: crate::history::NewVersion,
        keep: usize,
    ) -> Result<crate::history::VersionMeta, RecordError> {
        let mut client = self.client().await?;
        let result = versions::save(&mut client, doc, version, keep).await;
        self.observe(&result);
        result
    }

    /// Every version of `doc`, newest first.
    pub async fn versions(
        &self,
        doc: &str,
    ) -> Result<Vec<crate::history::VersionMeta>, RecordError> {
        let client = self.client().await?;
        let result = versions::list(&client, doc).await;
        self.observe(&result);
        result
    }

    pub async fn version(
        &self,
        doc: &str,
        id: u64,
    ) -> Result<Option<crate::history::StoredVersion>, RecordError> {
        let client = self.client().await?;
        let result = versions::get(&client, doc, id).await;
        self.observe(&result);
        result
    }

    /// Documents not deleted whose names start with `prefix`, after `after`,
    /// in name order (byte order: the column's collation is "C").
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, DocMeta)>, RecordError> {
        let client = self.client().await?;
        let result = sql::list(&client, prefix, after, limit).await;
        self.observe(&result);
        result
    }

    /// `Err(reason)` while the oldest spooled update has waited longer than
    /// `--postgres-lag-secs`.
    pub fn readiness(&self) -> Result<(), String> {
        let oldest = self.state.oldest_waiting_ms.load(Ordering::Acquire);
        if oldest == 0 {
            return Ok(());
        }
        let waited = chrono::Utc::now().timestamp_millis().saturating_sub(oldest);
        if waited > self.state.lag_limit.as_millis() as i64 {
            Err(format!(
                "storage lagging: an update has waited {:.1} s to reach PostgreSQL",
                waited as f64 / 1000.0
            ))
        } else {
            Ok(())
        }
    }

    fn set_oldest_waiting(&self, applied_ms: Option<i64>) {
        let ms = applied_ms.unwrap_or(0);
        self.state.oldest_waiting_ms.store(ms, Ordering::Release);
        let lag = match applied_ms {
            Some(ms) => (chrono::Utc::now().timestamp_millis() - ms).max(0) as f64 / 1000.0,
            None => 0.0,
        };
        metrics::gauge!("quire_upload_lag_seconds").set(lag);
    }
}

fn describe_metrics() {
    metrics::describe_gauge!(
        "quire_postgres_up",
        "1 while the last request reached PostgreSQL (cluster mode with --postgres-url)"
    );
    metrics::describe_gauge!(
        "quire_upload_lag_seconds",
        "How long the oldest update in this node's spool has waited to reach PostgreSQL"
    );
    metrics::describe_gauge!(
        "quire_spool_updates",
        "Updates in this node's spool, not yet in PostgreSQL, as of the last upload"
    );
    metrics::describe_counter!(
        "quire_uploaded_updates_total",
        "Spooled updates uploaded to PostgreSQL"
    );
    metrics::describe_counter!(
        "quire_record_compactions_total",
        "Documents compacted in PostgreSQL by this node"
    );
}
