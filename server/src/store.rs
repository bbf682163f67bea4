//! Durable storage of documents in sled.
//!
//! All access goes through one dedicated thread, in the order requests were
//! sent. That ordering is load-bearing: a document unloaded and loaded again
//! at once reads everything its previous actor appended, because the load
//! request queues behind those appends. The thread also implements group
//! commit: appends are written to sled at once and `flush`ed (fsync) when the
//! oldest unflushed one is `--flush-interval-ms` old.
//!
//! When a write or flush fails, the thread marks storage unhealthy (an
//! atomic the hot path reads), refuses writes without touching sled, and
//! probes in the background with backoff. sled stays failed after an I/O
//! error, so each probe reopens it from what is on disk; when a probe's
//! write and flush succeed, storage is healthy again and the registry has
//! every loaded document persist its whole state (see `doc::registry`).
//!
//! `quire check` (`crate::backup::check`) reads a stopped server's data
//! directory with the same functions ([`open_db`], [`load`], [`list`],
//! [`stored_commit`]), on its own thread, with no storage thread running.
//!
//! The key layout is described once, in ARCHITECTURE.md ("Storage layout");
//! change it there together with the `*_key` functions below.

use crate::datadir::DataDirError;
use crate::history::{NewVersion, StoredVersion, VersionMeta};
use crate::journal::{Journal, Loss, Record, Verdict};
use crate::names::DocName;
use crate::webhooks::local::{
    LocalEvents, LocalOutbox, Replier, Reply as WebhookReply, Request as WebhookRequest, Work,
};
use crate::webhooks::{Claimed, Counts, Entry, Mark, Settle};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Bound of the request queue; senders wait when it is full.
const QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// Not a `source`: the message says it all, on one line.
    #[error("cannot open the sled database in {path}: {error}")]
    Open { path: String, error: sled::Error },
    /// sled no longer has writes it acknowledged (see `journal`).
    #[error("refusing to start: {path} lost acknowledged writes: {loss}. Restore the data directory from a backup, or start with --accept-data-loss to serve what survived")]
    DataLoss { path: String, loss: Loss },
    /// The commit journal or another file beside sled.
    #[error(transparent)]
    Files(#[from] DataDirError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("storage has shut down")]
    Closed,
    /// Storage failed and has not recovered yet: the write was not made.
    #[error("storage is unavailable; retry later")]
    Unavailable,
}

/// The first probe after a failure comes this soon; each later one waits
/// twice as long as the one before, up to [`PROBE_MAX`].
const PROBE_FIRST: Duration = Duration::from_millis(100);
const PROBE_MAX: Duration = Duration::from_secs(5);
/// How often a failure that lasts is logged again.
const REMINDER_EVERY: Duration = Duration::from_secs(30);

/// How long to wait before probe number `attempt` (0 for the first).
fn probe_delay(attempt: u32) -> Duration {
    PROBE_FIRST
        .checked_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .map_or(PROBE_MAX, |d| d.min(PROBE_MAX))
}

/// Whether a failure still going on is worth another log line, this long
/// after the last one: one line when it starts, then one per
/// [`REMINDER_EVERY`], never one per failed write.
fn reminder_due(since_last_line: Duration) -> bool {
    since_last_line >= REMINDER_EVERY
}

/// What the storage thread and every [`Store`] handle share.
struct Health {
    /// Read on every update (an atomic load, no round trip).
    healthy: AtomicBool,
    /// How many times storage has started failing: a document that
    /// persisted its whole state at count N holds nothing storage lost
    /// unless the count moved since.
    outages: AtomicU64,
    /// Health changes, for whoever reacts to recovery.
    changes: watch::Sender<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DocMeta {
    pub updated_at_ms: i64,
    /// Snapshot plus log bytes.
    pub bytes: u64,
    /// Highest log sequence number ever written for this document, so a
    /// reloaded document never reuses one that a queued compaction removes.
    pub last_seq: u64,
}

impl DocMeta {
    fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.updated_at_ms.to_be_bytes());
        out[8..16].copy_from_slice(&self.bytes.to_be_bytes());
        out[16..].copy_from_slice(&self.last_seq.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let fixed: [u8; 24] = bytes
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("meta of {} bytes", bytes.len())))?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&fixed[i * 8..(i + 1) * 8]);
            w
        };
        Ok(DocMeta {
            updated_at_ms: i64::from_be_bytes(word(0)),
            bytes: u64::from_be_bytes(word(1)),
            last_seq: u64::from_be_bytes(word(2)),
        })
    }
}

/// A compacted document: its whole state as one v1 update, and the state
/// vector of that state, so that a cold document can greet its first client
/// (sync step 1) before the snapshot is integrated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub update: Vec<u8>,
    pub state_vector_v1: Vec<u8>,
}

/// What a document's storage holds.
#[derive(Debug, Default)]
pub struct StoredDoc {
    pub snapshot: Option<Vec<u8>>,
    /// The snapshot's state vector; absent for snapshots stored before
    /// Quire recorded it.
    pub snapshot_state_vector: Option<Vec<u8>>,
    pub log: Vec<(u64, Vec<u8>)>,
    pub meta: Option<DocMeta>,
    /// When a document of this name was last deleted, if ever: in a cluster,
    /// a copy older than this on another node must not bring it back.
    pub tombstone_ms: Option<i64>,
}

/// Whether a request only reads sled (tried even while storage fails) or
/// writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// When a write is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Once written to sled; on disk at the next group commit.
    Written,
    /// Once the group commit that carries it is on disk.
    OnDisk,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Op {
    Append {
        doc: DocName,
        seq: u64,
        update: Bytes,
        meta: DocMeta,
        flushed: Option<Reply<()>>,
    },
    Compact {
        doc: DocName,
        snapshot: Snapshot,
        through_seq: u64,
        meta: DocMeta,
        answer: Answer,
        done: Reply<()>,
    },
    Delete {
        doc: DocName,
        at_ms: i64,
        only_if_older: bool,
        done: Reply<bool>,
    },
    Tombstone {
        doc: DocName,
        reply: Reply<Option<i64>>,
    },
    Load {
        doc: DocName,
        reply: Reply<StoredDoc>,
    },
    List {
        prefix: String,
        after: Option<String>,
        limit: usize,
        reply: Reply<Vec<(String, DocMeta)>>,
    },
    NodeId {
        generate: String,
        reply: Reply<String>,
    },
    /// A document's whole state into the spool (after storage failed, what
    /// no queued append may hold).
    Enqueue {
        doc: DocName,
        update: Vec<u8>,
        done: Reply<()>,
    },
    /// The oldest spooled updates, in order.
    Spooled {
        limit: usize,
        reply: Reply<Vec<Queued>>,
    },
    /// Removes spooled updates up to `through` (uploaded).
    Unspool {
        through: u64,
        reply: Reply<()>,
    },
    Flush {
        reply: Reply<()>,
    },
    /// Records a version (next id) and prunes down to `keep`.
    SaveVersion {
        doc: DocName,
        version: NewVersion,
        keep: usize,
        reply: Reply<VersionMeta>,
    },
    /// A document's versions, newest first.
    Versions {
        doc: DocName,
        reply: Reply<Vec<VersionMeta>>,
    },
    Version {
        doc: DocName,
        id: u64,
        reply: Reply<Option<StoredVersion>>,
    },
    /// The webhook outbox (`crate::webhooks::local`).
    Webhooks(WebhookRequest),
    Shutdown {
        reply: Reply<()>,
    },
}

/// Cheap, cloneable handle to the storage thread.
#[derive(Clone)]
pub struct Store {
    tx: flume::Sender<Op>,
    health: Arc<Health>,
}

pub struct StoreOptions {
    pub cache_bytes: u64,
    pub flush_interval: Duration,
    /// Start even when sled lost acknowledged writes (each affected
    /// document is logged), and take what survived as the new baseline.
    pub accept_data_loss: bool,
    pub spool: Spool,
    /// The events the storage thread writes into sled's webhook outbox.
    pub webhooks: Option<LocalEvents>,
}

/// Whether this store is also a spool for a shared record (PostgreSQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spool {
    /// Single node: sled is the record.
    Off,
    /// Cluster with a shared record: every append is also queued, in the
    /// same batch, for upload (`record::upload`).
    Upload,
}

/// One update waiting in the spool for the shared record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The spool's own sequence number: with the node id, the update's key
    /// in the shared record, so an upload retried after a crash is a no-op.
    pub seq: u64,
    pub doc: String,
    /// When this node applied it (ms): a deletion decided later wins.
    pub applied_ms: i64,
    pub update: Vec<u8>,
}

impl Store {
    /// Opens (or creates) the database and starts the storage thread.
    pub fn open(
        path: &Path,
        options: StoreOptions,
    ) -> Result<(Store, std::thread::JoinHandle<()>), StoreError> {
        let db = open_db(path, options.cache_bytes).map_err(|error| StoreError::Open {
            path: path.display().to_string(),
            error,
        })?;
        let (commit, journal) = check_commits(&db, path, options.accept_data_loss)?;
        let spool = match options.spool {
            Spool::Off => None,
            Spool::Upload => Some(last_spooled_seq(&db)?),
        };
        let webhooks = options
            .webhooks
            .map(|events| LocalOutbox::open(&db, events))
            .transpose()?;
        let (tx, rx) = flume::bounded(QUEUE);
        let health = Arc::new(Health {
            healthy: AtomicBool::new(true),
            outages: AtomicU64::new(0),
            changes: watch::Sender::new(true),
        });
        crate::metrics::storage_healthy(true);
        let worker = Worker {
            db: Some(db),
            path: path.to_path_buf(),
            cache_bytes: options.cache_bytes,
            health: health.clone(),
            fault: None,
            flush_interval: options.flush_interval,
            dirty_since: None,
            waiters: Vec::new(),
            pending: None,
            commit,
            journal,
            touched: BTreeSet::new(),
            spool,
            webhooks,
        };
        let thread = std::thread::Builder::new()
            .name("quire-store".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| StoreError::Corrupt(format!("cannot start storage thread: {e}")))?;
        Ok((Store { tx, health }, thread))
    }

    /// False from a failed write or flush until a probe succeeds again.
    pub fn is_healthy(&self) -> bool {
        self.health.healthy.load(Ordering::Acquire)
    }

    /// How many times storage has started failing since it opened.
    pub fn outages(&self) -> u64 {
        self.health.outages.load(Ordering::Acquire)
    }

    /// Every change of [`Store::is_healthy`].
    pub fn health_changes(&self) -> watch::Receiver<bool> {
        self.health.changes.subscribe()
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send_async(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Appends an update; it reaches disk within the flush interval.
    pub async fn append(
        &self,
        doc: DocName,
        seq: u64,
        update: Bytes,
        meta: DocMeta,
    ) -> Result<(), StoreError> {
        self.tx
            .send_async(Op::Append {
                doc,
                seq,
                update,
                meta,
                flushed: None,
            })
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Appends an update and returns once it is on disk.
    pub async fn append_durable(
        &self,
        doc: DocName,
        seq: u64,
        update: Bytes,
        meta: DocMeta,
    ) -> Result<(), StoreError> {
        self.call(|reply| Op::Append {
            doc,
            seq,
            update,
            meta,
            flushed: Some(reply),
        })
        .await
    }

    /// Replaces the snapshot and drops the log up to `through_seq`,
    /// atomically; on disk at the next group commit.
    pub async fn compact(
        &self,
        doc: DocName,
        snapshot: Snapshot,
        through_seq: u64,
        meta: DocMeta,
    ) -> Result<(), StoreError> {
        self.compact_answering(doc, snapshot, through_seq, meta, Answer::Written)
            .await
    }

    /// Like [`Store::compact`], and returns once it is on disk: what a
    /// document that must not lose its state (leaving memory, or after
    /// storage recovered) waits for.
    pub async fn compact_durable(
        &self,
        doc: DocName,
        snapshot: Snapshot,
        through_seq: u64,
        meta: DocMeta,
    ) -> Result<(), StoreError> {
        self.compact_answering(doc, snapshot, through_seq, meta, Answer::OnDisk)
            .await
    }

    async fn compact_answering(
        &self,
        doc: DocName,
        snapshot: Snapshot,
        through_seq: u64,
        meta: DocMeta,
        answer: Answer,
    ) -> Result<(), StoreError> {
        self.call(|done| Op::Compact {
            doc,
            snapshot,
            through_seq,
            meta,
            answer,
            done,
        })
        .await
    }

    /// Removes a document and leaves a tombstone dated `at_ms`; false if it
    /// was not stored.
    pub async fn delete(&self, doc: DocName, at_ms: i64) -> Result<bool, StoreError> {
        self.call(|done| Op::Delete {
            doc,
            at_ms,
            only_if_older: false,
            done,
        })
        .await
    }

    /// A deletion another node made at `at_ms`: removes the stored copy only
    /// if it was last changed no later than that (a newer copy was re-created
    /// since), and remembers the tombstone either way.
    pub async fn delete_if_older(&self, doc: DocName, at_ms: i64) -> Result<bool, StoreError> {
        self.call(|done| Op::Delete {
            doc,
            at_ms,
            only_if_older: true,
            done,
        })
        .await
    }

    pub async fn tombstone(&self, doc: DocName) -> Result<Option<i64>, StoreError> {
        self.call(|reply| Op::Tombstone { doc, reply }).await
    }

    pub async fn load(&self, doc: DocName) -> Result<StoredDoc, StoreError> {
        self.call(|reply| Op::Load { doc, reply }).await
    }

    /// Stored documents whose names start with `prefix`, after `after`, in name order.
    pub async fn list(
        &self,
        prefix: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, DocMeta)>, StoreError> {
        self.call(|reply| Op::List {
            prefix,
            after,
            limit,
            reply,
        })
        .await
    }

    /// The stored node id, or `generate` stored as the node id if there is none.
    pub async fn node_id(&self, generate: String) -> Result<String, StoreError> {
        self.call(|reply| Op::NodeId { generate, reply }).await
    }

    pub async fn flush(&self) -> Result<(), StoreError> {
        self.call(|reply| Op::Flush { reply }).await
    }

    /// Queues a document's whole state for upload to the shared record.
    pub async fn spool_state(&self, doc: DocName, update: Vec<u8>) -> Result<(), StoreError> {
        self.call(|done| Op::Enqueue { doc, update, done }).await
    }

    /// Up to `limit` of the oldest updates not yet uploaded.
    pub async fn spooled(&self, limit: usize) -> Result<Vec<Queued>, StoreError> {
        self.call(|reply| Op::Spooled { limit, reply }).await
    }

    /// Drops the spooled updates up to `through`, which the record holds.
    pub async fn unspool(&self, through: u64) -> Result<(), StoreError> {
        self.call(|reply| Op::Unspool { through, reply }).await
    }

    /// Records a version of `doc` and prunes its versions down to `keep`;
    /// written with the next group commit.
    pub async fn save_version(
        &self,
        doc: DocName,
        version: NewVersion,
        keep: usize,
    ) -> Result<VersionMeta, StoreError> {
        self.call(|reply| Op::SaveVersion {
            doc,
            version,
            keep,
            reply,
        })
        .await
    }

    /// Every version of `doc`, newest first.
    pub async fn versions(&self, doc: DocName) -> Result<Vec<VersionMeta>, StoreError> {
        self.call(|reply| Op::Versions { doc, reply }).await
    }

    pub async fn version(
        &self,
        doc: DocName,
        id: u64,
    ) -> Result<Option<StoredVersion>, StoreError> {
        self.call(|reply| Op::Version { doc, id, reply }).await
    }

    async fn webhooks<T>(
        &self,
        work: Work,
        reply: fn(WebhookReply<T>) -> Replier,
    ) -> Result<T, StoreError> {
        self.call(|tx| {
            Op::Webhooks(WebhookRequest {
                work,
                reply: reply(tx),
            })
        })
        .await
    }

    /// The documents whose marks are due for `document.updated` at `now_ms`.
    pub async fn webhook_marks(
        &self,
        now_ms: i64,
        debounce: Duration,
    ) -> Result<Vec<(String, Mark)>, StoreError> {
        self.webhooks(Work::Marks { now_ms, debounce }, Replier::Marks)
            .await
    }

    /// The state vector the last `document.updated` of `doc` carried.
    pub async fn webhook_sealed(&self, doc: String) -> Result<Option<Vec<u8>>, StoreError> {
        self.webhooks(Work::Sealed { doc }, Replier::Sealed).await
    }

    /// Writes a sealed event's entries (see `webhooks::local::Work::Seal`).
    pub async fn seal_webhook(
        &self,
        doc: String,
        seen: u64,
        now_ms: i64,
        state_vector: Option<Vec<u8>>,
        entries: Vec<Entry>,
    ) -> Result<(), StoreError> {
        let work = Work::Seal {
            doc,
            seen,
            now_ms,
            state_vector,
            entries,
        };
        self.webhooks(work, Replier::Done).await
    }

    /// Writes entries of events that no stored change carries, without
    /// waiting: what an actor calls. A refusal (storage failing) is the
    /// outage that is already logged and shown in `/readyz`.
    pub async fn enqueue_webhooks(&self, entries: Vec<Entry>) {
        let (reply, _) = oneshot::channel();
        let request = WebhookRequest {
            work: Work::Enqueue { entries },
            reply: Replier::Done(reply),
        };
        let _ = self.tx.send_async(Op::Webhooks(request)).await;
    }

    pub async fn claim_webhooks(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let work = Work::Claim {
            now_ms,
            lease_until_ms,
            limit,
        };
        self.webhooks(work, Replier::Claimed).await
    }

    pub async fn settle_webhook(&self, id: u64, outcome: Settle) -> Result<(), StoreError> {
        self.webhooks(Work::Settle { id, outcome }, Replier::Done)
            .await
    }

    pub async fn dead_webhooks(&self, limit: usize) -> Result<Vec<Claimed>, StoreError> {
        self.webhooks(Work::Dead { limit }, Replier::Claimed).await
    }

    pub async fn replay_webhooks(&self, id: Option<u64>, now_ms: i64) -> Result<u64, StoreError> {
        self.webhooks(Work::Replay { id, now_ms }, Replier::Count)
            .await
    }

    pub async fn webhook_counts(&self) -> Result<Counts, StoreError> {
        self.webhooks(Work::Counts, Replier::Counts).await
    }

    /// Flushes and stops the storage thread; later calls fail with `Closed`.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.call(|reply| Op::Shutdown { reply }).await
    }
}

fn meta_key(doc: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(doc.len() + 1);
    k.push(b'm');
    k.extend_from_slice(doc.as_bytes());
    k
}

fn snapshot_key(doc: &str) -> Vec<u8> {
    let mut k = meta_key(doc);
    k[0] = b's';
    k
}

fn snapshot_state_vector_key(doc: &str) -> Vec<u8> {
    let mut k = meta_key(doc);
    k[0] = b'v';
    k
}

fn tombstone_key(doc: &str) -> Vec<u8> {
    let mut k = meta_key(doc);
    k[0] = b't';
    k
}

fn log_prefix(doc: &str) -> Vec<u8> {
    let mut k = meta_key(doc);
    k[0] = b'l';
    k.push(0);
    k
}

fn log_key(doc: &str, seq: u64) -> Vec<u8> {
    let mut k = log_prefix(doc);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `h{name}\0`: the prefix of one document's versions.
fn version_prefix(doc: &str) -> Vec<u8> {
    let mut k = meta_key(doc);
    k[0] = b'h';
    k.push(0);
    k
}

fn version_key(doc: &str, id: u64) -> Vec<u8> {
    let mut k = version_prefix(doc);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn stored_versions(db: &sled::Db, doc: &DocName) -> Result<Vec<StoredVersion>, StoreError> {
    let prefix = version_prefix(doc.as_str());
    let mut versions = Vec::new();
    for entry in db.scan_prefix(&prefix) {
        let (key, value) = entry?;
        let id = seq_of(&key, prefix.len())?;
        versions.push(
            crate::history::decode_sled(id, &value)
                .ok_or_else(|| StoreError::Corrupt(format!("version {id} of {doc}")))?,
        );
    }
    Ok(versions)
}

fn save_version(
    db: &sled::Db,
    doc: &DocName,
    version: NewVersion,
    keep: usize,
) -> Result<VersionMeta, StoreError> {
    let existing: Vec<VersionMeta> = stored_versions(db, doc)?
        .into_iter()
        .map(|v| v.meta)
        .collect();
    let id = existing.iter().map(|v| v.id).max().unwrap_or(0) + 1;
    let meta = VersionMeta {
        id,
        created_at_ms: version.created_at_ms,
        label: version.label.clone(),
        trigger: version.trigger,
        clients: version.clients,
        users: version.users.clone(),
        size: version.snapshot.len() as u64,
    };
    let mut batch = sled::Batch::default();
    batch.insert(
        version_key(doc.as_str(), id),
        crate::history::encode_sled(&version),
    );
    let mut all = existing;
    all.push(meta.clone());
    for old in crate::history::to_prune(&all, keep) {
        batch.remove(version_key(doc.as_str(), old));
    }
    db.apply_batch(batch)?;
    Ok(meta)
}

/// A spooled update: `u{seq u64 BE}` (see ARCHITECTURE.md).
fn spool_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'u';
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn encode_spooled(applied_ms: i64, doc: &str, update: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + doc.len() + update.len());
    v.extend_from_slice(&applied_ms.to_be_bytes());
    v.extend_from_slice(&(doc.len() as u32).to_be_bytes());
    v.extend_from_slice(doc.as_bytes());
    v.extend_from_slice(update);
    v
}

fn decode_spooled(key: &[u8], value: &[u8]) -> Result<Queued, StoreError> {
    let corrupt = || StoreError::Corrupt("spooled update".into());
    let seq = seq_of(key, 1)?;
    let applied_ms = value
        .get(..8)
        .and_then(|raw| <[u8; 8]>::try_from(raw).ok())
        .map(i64::from_be_bytes)
        .ok_or_else(corrupt)?;
    let len = value
        .get(8..12)
        .and_then(|raw| <[u8; 4]>::try_from(raw).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(corrupt)? as usize;
    let doc = value
        .get(12..12 + len)
        .and_then(|raw| std::str::from_utf8(raw).ok())
        .ok_or_else(corrupt)?
        .to_owned();
    let update = value.get(12 + len..).ok_or_else(corrupt)?.to_vec();
    Ok(Queued {
        seq,
        doc,
        applied_ms,
        update,
    })
}

/// Where the spool's numbering resumes: after its last entry. Nothing is
/// kept for an empty spool: numbers only order the entries on this disk,
/// and an upload's key also names the process (see `record`), so a
/// number used again after its entry was uploaded cannot collide.
fn last_spooled_seq(db: &sled::Db) -> Result<u64, StoreError> {
    match db
        .range(&spool_key(0)[..]..=&spool_key(u64::MAX)[..])
        .next_back()
    {
        None => Ok(0),
        Some(entry) => seq_of(&entry?.0, 1),
    }
}

/// What a probe writes (and flushes) to learn whether storage works again.
const PROBE_KEY: &[u8] = b"probe";
/// The number of the last group commit, written last in each, before
/// sled's flush; compared at start with the commit journal.
const COMMIT_KEY: &[u8] = b"commit";

pub(crate) fn stored_commit(db: &sled::Db) -> Result<u64, StoreError> {
    match db.get(COMMIT_KEY)? {
        None => Ok(0),
        Some(raw) => <[u8; 8]>::try_from(raw.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt(format!("commit key of {} bytes", raw.len()))),
    }
}

/// Before serving: did sled keep every commit the journal says was
/// durable? Returns the last commit number and the open journal.
fn check_commits(
    db: &sled::Db,
    path: &Path,
    accept_data_loss: bool,
) -> Result<(u64, Journal), StoreError> {
    let recovered = stored_commit(db)?;
    let records = crate::journal::read(path)?;
    let expected = records
        .as_ref()
        .and_then(|r| r.last())
        .map_or(0, |r| r.commit);
    let commit = recovered.max(expected);
    let baseline = |db: &sled::Db| -> Result<Journal, StoreError> {
        // sled first: a crash between the two leaves sled ahead, which is clean.
        db.insert(COMMIT_KEY, &commit.to_be_bytes()[..])?;
        db.flush()?;
        Ok(Journal::start_over(
            path,
            &Record {
                commit,
                documents: Vec::new(),
            },
        )?)
    };
    match crate::journal::decide(records.as_deref(), recovered, accept_data_loss) {
        Verdict::Start if records.as_ref().is_some_and(|r| !r.is_empty()) => {
            Ok((commit, Journal::open(path)?))
        }
        // No journal yet (or none readable): this start is the baseline.
        Verdict::Start => Ok((commit, baseline(db)?)),
        Verdict::Refuse(loss) => Err(StoreError::DataLoss {
            path: path.display().to_string(),
            loss,
        }),
        Verdict::StartWithLoss(loss) => {
            for doc in &loss.documents {
                tracing::error!(
                    doc = doc.as_str(),
                    "document may have LOST acknowledged writes (storage damaged): it is served as it survived"
                );
            }
            tracing::error!(
                data_dir = %path.display(),
                documents = loss.documents.len(),
                "--accept-data-loss: starting with what survived: {loss}; this is the new baseline"
            );
            Ok((commit, baseline(db)?))
        }
    }
}

/// How long an open waits for sled's directory lock.
const LOCK_WAIT: Duration = Duration::from_secs(2);

pub(crate) fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    let started = Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .open();
        match opened {
            // sled's I/O threads release the lock of a database whose last
            // handle was dropped a moment later: a reopen in the same
            // process (a recovery probe, the tests) waits for it. Another
            // process holding it still gets the error.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// sled for `access`: a write only while storage is not failing, a read
/// whenever sled is open.
fn sled_for<'a>(
    access: Access,
    fault: &Option<Fault>,
    db: &'a Option<sled::Db>,
) -> Result<&'a sled::Db, StoreError> {
    match (access, fault, db) {
        (Access::Read, _, Some(db)) | (Access::Write, None, Some(db)) => Ok(db),
        _ => Err(StoreError::Unavailable),
    }
}

/// Storage is failing: since when, and when the next probe is.
struct Fault {
    since: Instant,
    probes: u32,
    next_probe: Instant,
    /// When the failure was last logged.
    last_line: Instant,
}

struct Worker {
    /// None after a reopen failed, until a probe opens it again.
    db: Option<sled::Db>,
    path: PathBuf,
    cache_bytes: u64,
    health: Arc<Health>,
    /// Some while storage is failing: writes are refused without touching sled.
    fault: Option<Fault>,
    flush_interval: Duration,
    /// When the oldest write not yet flushed happened.
    dirty_since: Option<Instant>,
    /// Callers waiting for their write to be on disk.
    waiters: Vec<Reply<()>>,
    /// Appends not yet written to sled: one batch per flush window rather
    /// than one per keystroke (each write wakes sled's I/O threads). Written
    /// before any other request is served, so reads see every append.
    pending: Option<sled::Batch>,
    /// The last group commit's number (see `journal`).
    commit: u64,
    journal: Journal,
    /// Documents written since the last group commit, which its journal
    /// record names.
    touched: BTreeSet<String>,
    /// With a shared record: the last spool sequence number given out.
    spool: Option<u64>,
    /// With webhooks: the outbox's marks and schedule.
    webhooks: Option<LocalOutbox>,
}

impl Worker {
    fn run(mut self, rx: flume::Receiver<Op>) {
        loop {
            let deadline = match &self.fault {
                Some(fault) => Some(fault.next_probe),
                None => {
                    let flush = self.dirty_since.map(|since| since + self.flush_interval);
                    // Records of the journal not yet synced are, within a second.
                    match (flush, self.journal.sync_due()) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                }
            };
            let next = match deadline {
                None => rx.recv().map_err(|_| flume::RecvTimeoutError::Disconnected),
                Some(deadline) => rx.recv_deadline(deadline),
            };
            match next {
                Ok(Op::Shutdown { reply }) => {
                    let result = self.flush().and_then(|()| Ok(self.journal.sync()?));
                    let _ = reply.send(result);
                    return;
                }
                Ok(op) => self.handle(op),
                Err(flume::RecvTimeoutError::Timeout) => {
                    if self.fault.is_some() {
                        self.probe();
                    } else {
                        let _ = self.flush();
                        // Idle: the last records become durable within a second.
                        if let Err(e) = self.journal.sync_if_due() {
                            self.fail(&e.to_string());
                        }
                    }
                    continue;
                }
                Err(flume::RecvTimeoutError::Disconnected) => {
                    let _ = self.flush();
                    return;
                }
            }
            // Someone waits for durability: flush once the queue is drained,
            // so one fsync covers every write that arrived meanwhile.
            let due = self
                .dirty_since
                .is_some_and(|since| since.elapsed() >= self.flush_interval);
            if (!self.waiters.is_empty() && rx.is_empty()) || due {
                let _ = self.flush();
            }
        }
    }

    fn mark_dirty(&mut self) {
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// sled, unless storage is failing.
    fn writable(&self) -> Result<&sled::Db, StoreError> {
        sled_for(Access::Write, &self.fault, &self.db)
    }

    /// sled for a read, which is tried even while writes fail.
    fn readable(&self) -> Result<&sled::Db, StoreError> {
        sled_for(Access::Read, &self.fault, &self.db)
    }

    /// sled as [`Worker::writable`] or [`Worker::readable`] give it, with
    /// the webhook outbox beside it (a request that writes both borrows both).
    fn with_webhooks(
        &mut self,
        access: Access,
    ) -> Result<(&sled::Db, Option<&mut LocalOutbox>), StoreError> {
        let db = sled_for(access, &self.fault, &self.db)?;
        Ok((db, self.webhooks.as_mut()))
    }

    /// Passes a request's result on; a sled error starts an outage.
    fn observe<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            Err(StoreError::Sled(e)) => {
                let error = e.to_string();
                self.fail(&error);
            }
            // A commit the journal cannot record is not acknowledged either.
            Err(StoreError::Files(e)) => {
                let error = e.to_string();
                self.fail(&error);
            }
            _ => {}
        }
        result
    }

    /// A read that failed starts an outage like a failed write, and its
    /// caller hears "unavailable" (a 503, a retry), not an internal error:
    /// the cause was logged once, by `fail`.
    fn observe_read<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.observe(result).map_err(|e| match e {
            StoreError::Sled(_) | StoreError::Files(_) => StoreError::Unavailable,
            other => other,
        })
    }

    fn fail(&mut self, error: &str) {
        // What was batched or awaited went with the failed write. The
        // documents still hold it in memory and persist their whole state
        // when storage recovers.
        self.pending = None;
        self.dirty_since = None;
        if let Some(outbox) = &mut self.webhooks {
            outbox.lost(&self.touched);
        }
        self.touched.clear();
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Err(StoreError::Unavailable));
        }
        if self.fault.is_some() {
            return;
        }
        let now = Instant::now();
        self.fault = Some(Fault {
            since: now,
            probes: 0,
            next_probe: now + probe_delay(0),
            last_line: now,
        });
        self.health.outages.fetch_add(1, Ordering::AcqRel);
        self.health.healthy.store(false, Ordering::Release);
        self.health.changes.send_replace(false);
        crate::metrics::storage_failed();
        tracing::error!(
            error,
            "storage failed: document updates are refused until a probe write succeeds"
        );
    }

    /// One recovery attempt: reopen sled (it stays failed after an I/O
    /// error) and write and flush the probe key.
    fn probe(&mut self) {
        let Some(mut fault) = self.fault.take() else {
            return;
        };
        fault.probes += 1;
        // The old handle goes first: sled locks its directory.
        self.db = None;
        let opened = open_db(&self.path, self.cache_bytes).map_err(StoreError::from);
        let result = opened.and_then(|db| {
            let written = db.insert(PROBE_KEY, &now_ms().to_be_bytes()[..]);
            // Kept either way: reads may still work.
            self.db = Some(db);
            // The probe is a commit like any other: sled's flush and the
            // journal must both work again.
            self.commit += 1;
            let commit = Some(self.commit);
            written.map_err(StoreError::from).and_then(|_| {
                let db = self.db.as_ref().ok_or(StoreError::Unavailable)?;
                db.insert(COMMIT_KEY, &self.commit.to_be_bytes()[..])?;
                db.flush()?;
                self.commit_journal(commit)
            })
        });
        match result {
            Ok(()) => {
                self.health.healthy.store(true, Ordering::Release);
                self.health.changes.send_replace(true);
                crate::metrics::storage_healthy(true);
                tracing::info!(
                    outage_ms = fault.since.elapsed().as_millis() as u64,
                    probes = fault.probes,
                    "storage recovered: accepting updates; loaded documents persist their whole state"
                );
            }
            Err(e) => {
                let now = Instant::now();
                fault.next_probe = now + probe_delay(fault.probes);
                if reminder_due(now - fault.last_line) {
                    fault.last_line = now;
                    tracing::warn!(
                        error = %e,
                        failing_for_secs = fault.since.elapsed().as_secs(),
                        probes = fault.probes,
                        "storage still failing; document updates are still refused"
                    );
                }
                self.fault = Some(fault);
            }
        }
    }

    /// Writes the appends batched so far (not yet durable).
    fn write_pending(&mut self) -> Result<(), StoreError> {
        let Some(batch) = self.pending.take() else {
            return Ok(());
        };
        let result = self
            .writable()
            .and_then(|db| db.apply_batch(batch).map_err(StoreError::from));
        self.observe(result)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        // A commit number only for a flush that carries writes.
        let commit = (self.pending.is_some() || self.dirty_since.is_some()).then(|| {
            self.commit += 1;
            self.commit
        });
        let result = self.write_pending().and_then(|()| self.commit_to(commit));
        let result = self.observe(result);
        self.dirty_since = None;
        crate::metrics::flushed(started.elapsed());
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(match &result {
                Ok(()) => Ok(()),
                Err(_) => Err(StoreError::Unavailable),
            });
        }
        result
    }

    /// sled's flush, with the commit number written last before it, then
    /// the journal record once sled's flush succeeded.
    fn commit_to(&mut self, commit: Option<u64>) -> Result<(), StoreError> {
        let db = self.writable()?;
        if let Some(commit) = commit {
            db.insert(COMMIT_KEY, &commit.to_be_bytes()[..])?;
        }
        db.flush()?;
        self.commit_journal(commit)
    }

    /// Records a commit sled has flushed as durable, naming what it wrote.
    fn commit_journal(&mut self, commit: Option<u64>) -> Result<(), StoreError> {
        if let Some(commit) = commit {
            let record = Record {
                commit,
                documents: std::mem::take(&mut self.touched).into_iter().collect(),
            };
            self.journal.append(&record)?;
        }
        Ok(())
    }

    fn handle(&mut self, op: Op) {
        if !matches!(op, Op::Append { .. }) {
            // A failure starts an outage, which the request below sees.
            let _ = self.write_pending();
        }
        match op {
            Op::Append {
                doc,
                seq,
                update,
                meta,
                flushed,
            } => {
                if self.fault.is_some() {
                    // Not written: the document holds the update in memory
                    // and writes its whole state when storage recovers.
                    if let Some(flushed) = flushed {
                        let _ = flushed.send(Err(StoreError::Unavailable));
                    }
                    return;
                }
                self.touched.insert(doc.as_str().to_owned());
                let batch = self.pending.get_or_insert_with(sled::Batch::default);
                batch.insert(log_key(doc.as_str(), seq), update.as_ref());
                batch.insert(meta_key(doc.as_str()), &meta.encode()[..]);
                if let Some(last) = &mut self.spool {
                    *last += 1;
                    batch.insert(
                        &spool_key(*last)[..],
                        encode_spooled(meta.updated_at_ms, doc.as_str(), &update),
                    );
                }
                if let (Some(outbox), Some(db)) = (&mut self.webhooks, &self.db) {
                    let marked = outbox.appended(
                        db,
                        batch,
                        doc.as_str(),
                        |db| Ok(db.contains_key(meta_key(doc.as_str()))?),
                        meta.updated_at_ms,
                    );
                    if let Err(e) = marked {
                        // The append goes with it: the document writes its
                        // whole state when storage recovers.
                        let _ = self.observe(Err::<(), _>(e));
                        if let Some(flushed) = flushed {
                            let _ = flushed.send(Err(StoreError::Unavailable));
                        }
                        return;
                    }
                }
                self.mark_dirty();
                if let Some(flushed) = flushed {
                    self.waiters.push(flushed);
                }
            }
            Op::Compact {
                doc,
                snapshot,
                through_seq,
                meta,
                answer,
                done,
            } => {
                let result = self
                    .with_webhooks(Access::Write)
                    .and_then(|(db, webhooks)| {
                        compact(db, &doc, snapshot, through_seq, meta, webhooks)
                    });
                match self.observe(result) {
                    Ok(()) => {
                        self.touched.insert(doc.as_str().to_owned());
                        self.mark_dirty();
                        match answer {
                            Answer::OnDisk => self.waiters.push(done),
                            Answer::Written => {
                                let _ = done.send(Ok(()));
                            }
                        }
                    }
                    Err(e) => {
                        let _ = done.send(Err(e));
                    }
                }
            }
            Op::Delete {
                doc,
                at_ms,
                only_if_older,
                done,
            } => {
                let result = self
                    .with_webhooks(Access::Write)
                    .and_then(|(db, webhooks)| delete(db, &doc, at_ms, only_if_older, webhooks));
                let result = self.observe(result);
                if result.is_ok() {
                    self.touched.insert(doc.as_str().to_owned());
                    self.mark_dirty();
                }
                let _ = done.send(result);
            }
            Op::Tombstone { doc, reply } => {
                let result = self.readable().and_then(|db| tombstone(db, &doc));
                let _ = reply.send(self.observe_read(result));
            }
            Op::Load { doc, reply } => {
                let result = match self.readable().and_then(|db| load(db, &doc)) {
                    // A record sled can no longer read (its checksum fails):
                    // this document is refused, loudly, and storage is not
                    // failing for the others.
                    Err(StoreError::Sled(sled::Error::Corruption { .. })) => {
                        metrics::counter!("quire_storage_damaged_reads_total").increment(1);
                        tracing::error!(doc = %doc, "a stored record of this document is damaged (checksum mismatch): it is not served; run `quire check --data-dir` and restore it from a backup");
                        Err(StoreError::Corrupt(format!(
                            "document {doc} is damaged in storage"
                        )))
                    }
                    other => self.observe_read(other),
                };
                let _ = reply.send(result);
            }
            Op::List {
                prefix,
                after,
                limit,
                reply,
            } => {
                let result = self
                    .readable()
                    .and_then(|db| list(db, &prefix, after.as_deref(), limit));
                let _ = reply.send(self.observe_read(result));
            }
            Op::NodeId { generate, reply } => {
                let result = self.writable().and_then(|db| node_id(db, generate));
                let result = self.observe(result).map(|(id, generated)| {
                    if generated {
                        self.mark_dirty();
                    }
                    id
                });
                let _ = reply.send(result);
            }
            Op::Flush { reply } => {
                let _ = reply.send(self.flush());
            }
            Op::SaveVersion {
                doc,
                version,
                keep,
                reply,
            } => {
                let result = self
                    .writable()
                    .and_then(|db| save_version(db, &doc, version, keep));
                let result = self.observe(result);
                if result.is_ok() {
                    self.touched.insert(doc.as_str().to_owned());
                    self.mark_dirty();
                }
                let _ = reply.send(result);
            }
            Op::Versions { doc, reply } => {
                let result = self.readable().and_then(|db| {
                    let mut metas: Vec<VersionMeta> = stored_versions(db, &doc)?
                        .into_iter()
                        .map(|v| v.meta)
                        .collect();
                    metas.reverse();
                    Ok(metas)
                });
                let _ = reply.send(self.observe_read(result));
            }
            Op::Version { doc, id, reply } => {
                let result = self.readable().and_then(|db| {
                    Ok(match db.get(version_key(doc.as_str(), id))? {
                        Some(raw) => {
                            Some(crate::history::decode_sled(id, &raw).ok_or_else(|| {
                                StoreError::Corrupt(format!("version {id} of {doc}"))
                            })?)
                        }
                        None => None,
                    })
                });
                let _ = reply.send(self.observe_read(result));
            }
            Op::Enqueue { doc, update, done } => {
                let result = match self.spool {
                    None => Ok(None),
                    Some(last) => self.writable().and_then(|db| {
                        let seq = last + 1;
                        let mut batch = sled::Batch::default();
                        batch.insert(
                            &spool_key(seq)[..],
                            encode_spooled(now_ms(), doc.as_str(), &update),
                        );
                        db.apply_batch(batch)?;
                        Ok(Some(seq))
                    }),
                }
                .map(|seq| {
                    if let (Some(last), Some(seq)) = (&mut self.spool, seq) {
                        *last = seq;
                    }
                });
                let result = self.observe(result);
                if result.is_ok() {
                    self.mark_dirty();
                }
                let _ = done.send(result);
            }
            Op::Spooled { limit, reply } => {
                let result = self.readable().and_then(|db| spooled(db, limit));
                let _ = reply.send(self.observe_read(result));
            }
            Op::Unspool { through, reply } => {
                let result = self.writable().and_then(|db| unspool(db, through));
                let result = self.observe(result);
                if result.is_ok() {
                    self.mark_dirty();
                }
                let _ = reply.send(result);
            }
            Op::Webhooks(WebhookRequest {
                work,
                reply: replier,
            }) => {
                let access = work.access();
                let result = self
                    .with_webhooks(access)
                    .and_then(|(db, outbox)| match outbox {
                        Some(outbox) => work.run(db, outbox),
                        None => Err(StoreError::Corrupt("webhooks are not configured".into())),
                    });
                let result = if access == Access::Write {
                    let result = self.observe(result);
                    if result.is_ok() {
                        self.mark_dirty();
                    }
                    result
                } else {
                    self.observe_read(result)
                };
                replier.send(result);
            }
            Op::Shutdown { .. } => {}
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn compact(
    db: &sled::Db,
    doc: &DocName,
    snapshot: Snapshot,
    through_seq: u64,
    meta: DocMeta,
    webhooks: Option<&mut LocalOutbox>,
) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    if let Some(outbox) = webhooks {
        outbox.whole_state(db, &mut batch, doc.as_str(), meta.updated_at_ms, |db| {
            Ok(db.contains_key(meta_key(doc.as_str()))?)
        })?;
    }
    let prefix = log_prefix(doc.as_str());
    for entry in db.scan_prefix(&prefix) {
        let (key, _) = entry?;
        if seq_of(&key, prefix.len())? <= through_seq {
            batch.remove(key);
        }
    }
    batch.insert(snapshot_key(doc.as_str()), snapshot.update);
    batch.insert(
        snapshot_state_vector_key(doc.as_str()),
        snapshot.state_vector_v1,
    );
    batch.insert(meta_key(doc.as_str()), &meta.encode()[..]);
    Ok(db.apply_batch(batch)?)
}

fn delete(
    db: &sled::Db,
    doc: &DocName,
    at_ms: i64,
    only_if_older: bool,
    webhooks: Option<&mut LocalOutbox>,
) -> Result<bool, StoreError> {
    let meta = match db.get(meta_key(doc.as_str()))? {
        Some(raw) => Some(DocMeta::decode(&raw)?),
        None => None,
    };
    let mut batch = sled::Batch::default();
    let newer = tombstone(db, doc)?.is_some_and(|t| t >= at_ms);
    if !newer {
        batch.insert(tombstone_key(doc.as_str()), &at_ms.to_be_bytes()[..]);
    }
    let remove = meta.is_some_and(|m| !only_if_older || m.updated_at_ms <= at_ms);
    if remove {
        for entry in db.scan_prefix(log_prefix(doc.as_str())) {
            let (key, _) = entry?;
            batch.remove(key);
        }
        // Its versions go with it.
        for entry in db.scan_prefix(version_prefix(doc.as_str())) {
            let (key, _) = entry?;
            batch.remove(key);
        }
        batch.remove(snapshot_key(doc.as_str()));
        batch.remove(snapshot_state_vector_key(doc.as_str()));
        batch.remove(meta_key(doc.as_str()));
        if let Some(outbox) = webhooks {
            outbox.deleted(&mut batch, doc.as_str(), at_ms);
        }
    }
    db.apply_batch(batch)?;
    Ok(remove)
}

fn tombstone(db: &sled::Db, doc: &DocName) -> Result<Option<i64>, StoreError> {
    Ok(db
        .get(tombstone_key(doc.as_str()))?
        .and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
        .map(i64::from_be_bytes))
}

pub(crate) fn load(db: &sled::Db, doc: &DocName) -> Result<StoredDoc, StoreError> {
    let meta = match db.get(meta_key(doc.as_str()))? {
        Some(raw) => Some(DocMeta::decode(&raw)?),
        None => None,
    };
    let snapshot = db.get(snapshot_key(doc.as_str()))?.map(|v| v.to_vec());
    let snapshot_state_vector = db
        .get(snapshot_state_vector_key(doc.as_str()))?
        .map(|v| v.to_vec());
    let prefix = log_prefix(doc.as_str());
    let mut log = Vec::new();
    for entry in db.scan_prefix(&prefix) {
        let (key, value) = entry?;
        log.push((seq_of(&key, prefix.len())?, value.to_vec()));
    }
    Ok(StoredDoc {
        snapshot,
        snapshot_state_vector,
        log,
        meta,
        tombstone_ms: tombstone(db, doc)?,
    })
}

pub(crate) fn list(
    db: &sled::Db,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, DocMeta)>, StoreError> {
    let scan_prefix = meta_key(prefix);
    let start = match after {
        // Strictly after the cursor: append a byte that sorts first.
        Some(after) if after.as_bytes() >= prefix.as_bytes() => {
            let mut k = meta_key(after);
            k.push(0);
            k
        }
        _ => scan_prefix.clone(),
    };
    let mut out = Vec::new();
    for entry in db.range(start..) {
        let (key, value) = entry?;
        if !key.starts_with(&scan_prefix) || out.len() >= limit {
            break;
        }
        let name = String::from_utf8(key[1..].to_vec())
            .map_err(|_| StoreError::Corrupt("document name is not UTF-8".into()))?;
        out.push((name, DocMeta::decode(&value)?));
    }
    Ok(out)
}

/// The stored node id, or `generate` stored now (then true: a write to flush).
fn node_id(db: &sled::Db, generate: String) -> Result<(String, bool), StoreError> {
    match db.compare_and_swap(b"node_id", None as Option<&[u8]>, Some(generate.as_bytes()))? {
        Ok(()) => Ok((generate, true)),
        Err(existing) => existing
            .current
            .map(|v| (String::from_utf8_lossy(&v).into_owned(), false))
            .ok_or_else(|| StoreError::Corrupt("node id vanished".into())),
    }
}

fn spooled(db: &sled::Db, limit: usize) -> Result<Vec<Queued>, StoreError> {
    let mut out = Vec::new();
    for entry in db.range(&spool_key(0)[..]..=&spool_key(u64::MAX)[..]) {
        if out.len() >= limit {
            break;
        }
        let (key, value) = entry?;
        out.push(decode_spooled(&key, &value)?);
    }
    Ok(out)
}

fn unspool(db: &sled::Db, through: u64) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for entry in db.range(&spool_key(0)[..]..=&spool_key(through)[..]) {
        let (key, _) = entry?;
        batch.remove(key);
    }
    Ok(db.apply_batch(batch)?)
}

fn seq_of(key: &[u8], prefix_len: usize) -> Result<u64, StoreError> {
    key.get(prefix_len..)
        .and_then(|raw| <[u8; 8]>::try_from(raw).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("log key without sequence number".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DocName {
        DocName::parse(s).expect("valid name")
    }

    fn open(dir: &Path) -> (Store, std::thread::JoinHandle<()>) {
        Store::open(
            dir,
            StoreOptions {
                cache_bytes: 1 << 20,
                flush_interval: Duration::from_millis(5),
                accept_data_loss: false,
                spool: Spool::Off,
                webhooks: None,
            },
        )
        .expect("open")
    }

    fn open_accepting_loss(dir: &Path) -> Result<(Store, std::thread::JoinHandle<()>), StoreError> {
        Store::open(
            dir,
            StoreOptions {
                cache_bytes: 1 << 20,
                flush_interval: Duration::from_millis(5),
                accept_data_loss: true,
                spool: Spool::Off,
                webhooks: None,
            },
        )
    }

    /// What sled keeps in its directory, as opposed to Quire's own files.
    fn remove_sled_files(dir: &Path) {
        for entry in std::fs::read_dir(dir).expect("list") {
            let entry = entry.expect("entry");
            let name = entry.file_name();
            if name == crate::journal::JOURNAL_FILE || name == crate::datadir::NODE_ID_FILE {
                continue;
            }
            if entry.file_type().expect("type").is_dir() {
                std::fs::remove_dir_all(entry.path()).expect("remove");
            } else {
                std::fs::remove_file(entry.path()).expect("remove");
            }
        }
    }

    #[tokio::test]
    async fn a_store_that_lost_acknowledged_writes_is_refused_unless_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, thread) = open(dir.path());
        let meta = DocMeta::default();
        for doc in ["a", "b"] {
            store
                .append_durable(name(doc), 1, Bytes::from_static(b"x"), meta)
                .await
                .expect("append");
        }
        store.shutdown().await.expect("shutdown");
        thread.join().expect("thread");

        // A clean reopen is no alarm.
        let (store, thread) = open(dir.path());
        store.shutdown().await.expect("shutdown");
        thread.join().expect("thread");

        // sled loses everything; the journal remembers.
        remove_sled_files(dir.path());
        let refused = Store::open(
            dir.path(),
            StoreOptions {
                cache_bytes: 1 << 20,
                flush_interval: Duration::from_millis(5),
                accept_data_loss: false,
                spool: Spool::Off,
                webhooks: None,
            },
        );
        let Err(StoreError::DataLoss { path, loss }) = refused else {
            panic!("expected a refusal");
        };
        assert_eq!(path, dir.path().display().to_string());
        assert_eq!(loss.found, 0);
        assert!(loss.expected >= 2, "{loss:?}");
        assert_eq!(
            loss.documents
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["a", "b"]
        );

        // Accepted: it serves what survived, and that is the new baseline.
        let (store, thread) = open_accepting_loss(dir.path()).expect("starts");
        assert!(store.load(name("a")).await.expect("load").meta.is_none());
        store.shutdown().await.expect("shutdown");
        thread.join().expect("thread");
        let (store, _thread) = open(dir.path());
        assert!(store.is_healthy());
    }

    #[test]
    fn probes_back_off_from_100_ms_doubling_to_5_s() {
        let cases: &[(u32, u64)] = &[
            // (probes so far, wait before the next, ms)
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1_600),
            (5, 3_200),
            (6, 5_000),
            (7, 5_000),
            (31, 5_000),
            (32, 5_000),
            (u32::MAX, 5_000),
        ];
        for &(probes, ms) in cases {
            assert_eq!(
                probe_delay(probes),
                Duration::from_millis(ms),
                "after {probes} probes"
            );
        }
    }

    #[test]
    fn a_lasting_failure_is_logged_again_every_30_s_not_per_write() {
        let cases: &[(u64, bool)] = &[
            // (ms since the last line about it, log another)
            (0, false),
            (10, false),
            (29_999, false),
            (30_000, true),
            (120_000, true),
        ];
        for &(ms, due) in cases {
            assert_eq!(
                reminder_due(Duration::from_millis(ms)),
                due,
                "{ms} ms after the last line"
            );
        }
    }

    #[tokio::test]
    async fn a_healthy_store_reports_no_outage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _thread) = open(dir.path());
        let health = store.health_changes();
        assert!(store.is_healthy());
        assert_eq!(store.outages(), 0);
        assert!(*health.borrow());
        store.flush().await.expect("flush");
        assert!(store.is_healthy());
    }

    #[tokio::test]
    async fn the_spool_keeps_appends_in_order_and_resumes_its_numbering_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spooling = || {
            Store::open(
                dir.path(),
                StoreOptions {
                    cache_bytes: 1 << 20,
                    flush_interval: Duration::from_millis(5),
                    accept_data_loss: false,
                    spool: Spool::Upload,
                    webhooks: None,
                },
            )
            .expect("open")
        };
        let meta = DocMeta {
            updated_at_ms: 7,
            bytes: 1,
            last_seq: 1,
        };
        let (store, thread) = spooling();
        for seq in 1..=3 {
            store
                .append_durable(name("d"), seq, Bytes::from(vec![seq as u8]), meta)
                .await
                .expect("append");
        }
        store.unspool(2).await.expect("unspool");
        store.shutdown().await.expect("shutdown");
        thread.join().expect("thread");

        let (store, thread) = spooling();
        store
            .append_durable(name("d"), 4, Bytes::from_static(&[4]), meta)
            .await
            .expect("append");
        let spooled: Vec<(u64, Vec<u8>)> = store
            .spooled(10)
            .await
            .expect("spooled")
            .into_iter()
            .map(|q| (q.seq, q.update))
            .collect();
        // The entry left from before the restart, then the new one after it.
        assert_eq!(spooled, vec![(3, vec![3]), (4, vec![4])]);
        store.shutdown().await.expect("shutdown");
        thread.join().expect("thread");
    }

    #[tokio::test]
    async fn appends_compaction_and_delete_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, thread) = open(dir.path());
        let meta = DocMeta {
            updated_at_ms: 7,
            bytes: 3,
            last_seq: 3,
        };
        for seq in 1..=3 {
            store
                .append(name("a/b"), seq, Bytes::from(vec![seq as u8]), meta)
                .await
                .expect("append");
        }
        // A document whose name extends another's must not see its log.
        store
            .append_durable(name("a/bc"), 1, Bytes::from_static(b"x"), meta)
            .await
            .expect("append");
        let loaded = store.load(name("a/b")).await.expect("load");
        assert_eq!(loaded.log, vec![(1, vec![1]), (2, vec![2]), (3, vec![3])]);

        let snapshot = Snapshot {
            update: b"snap".to_vec(),
            state_vector_v1: b"sv".to_vec(),
        };
        store
            .compact(name("a/b"), snapshot, 2, meta)
            .await
            .expect("compact");
        let loaded = store.load(name("a/b")).await.expect("load");
        assert_eq!(loaded.snapshot.as_deref(), Some(&b"snap"[..]));
        assert_eq!(loaded.snapshot_state_vector.as_deref(), Some(&b"sv"[..]));
        assert_eq!(loaded.log, vec![(3, vec![3])]);

        let listed = store.list("a/".into(), None, 10).await.expect("list");
        assert_eq!(
            listed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["a/b", "a/bc"]
        );
        let page = store
            .list(String::new(), Some("a/b".into()), 10)
            .await
            .expect("list");
        assert_eq!(page.len(), 1);

        assert!(store.delete(name("a/b"), 100).await.expect("delete"));
        assert!(!store.delete(name("a/b"), 100).await.expect("delete"));
        let gone = store.load(name("a/b")).await.expect("load");
        assert!(gone.snapshot.is_none() && gone.log.is_empty() && gone.meta.is_none());
        assert!(gone.snapshot_state_vector.is_none());
        assert_eq!(gone.tombstone_ms, Some(100));

        // A remote deletion older than the last change keeps the copy.
        assert!(!store
            .delete_if_older(name("a/bc"), 6)
            .await
            .expect("delete"));
        assert!(store.load(name("a/bc")).await.expect("load").meta.is_some());
        assert_eq!(store.tombstone(name("a/bc")).await.expect("t"), Some(6));

        store.shutdown().await.expect("shutdown");
        thread.join().expect("thread");
        assert!(matches!(store.flush().await, Err(StoreError::Closed)));

        // Everything survives reopening.
        let (store, _thread) = open(dir.path());
        let kept = store.load(name("a/bc")).await.expect("load");
        assert_eq!(kept.log, vec![(1, b"x".to_vec())]);
        let id = store.node_id("first".into()).await.expect("id");
        assert_eq!(store.node_id("second".into()).await.expect("id"), id);
    }
}
