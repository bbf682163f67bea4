//! Durable storage of documents in sled.
//!
//! All access goes through one dedicated thread, in the order requests were
//! sent. That ordering is load-bearing: a document unloaded and loaded again
//! at once reads everything its previous actor appended, because the load
//! request queues behind those appends. The thread also implements group
//! commit: appends are written to sled at once and `flush`ed (fsync) when the
//! oldest unflushed one is `--flush-interval-ms` old.
//!
//! The key layout is described once, in ARCHITECTURE.md ("Storage layout");
//! change it there together with the `*_key` functions below.

use crate::names::DocName;
use bytes::Bytes;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Bound of the request queue; senders wait when it is full.
const QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("storage has shut down")]
    Closed,
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
    Flush {
        reply: Reply<()>,
    },
    Shutdown {
        reply: Reply<()>,
    },
}

/// Cheap, cloneable handle to the storage thread.
#[derive(Clone)]
pub struct Store {
    tx: flume::Sender<Op>,
    healthy: Arc<AtomicBool>,
}

pub struct StoreOptions {
    pub cache_bytes: u64,
    pub flush_interval: Duration,
}

impl Store {
    /// Opens (or creates) the database and starts the storage thread.
    pub fn open(
        path: &Path,
        options: StoreOptions,
    ) -> Result<(Store, std::thread::JoinHandle<()>), StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(None)
            .open()?;
        let (tx, rx) = flume::bounded(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let worker = Worker {
            db,
            healthy: healthy.clone(),
            flush_interval: options.flush_interval,
            dirty_since: None,
            waiters: Vec::new(),
            pending: None,
        };
        let thread = std::thread::Builder::new()
            .name("quire-store".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| StoreError::Corrupt(format!("cannot start storage thread: {e}")))?;
        Ok((Store { tx, healthy }, thread))
    }

    /// False after a write or flush failed, until one succeeds again.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
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

    /// Replaces the snapshot and drops the log up to `through_seq`, atomically.
    pub async fn compact(
        &self,
        doc: DocName,
        snapshot: Snapshot,
        through_seq: u64,
        meta: DocMeta,
    ) -> Result<(), StoreError> {
        self.call(|done| Op::Compact {
            doc,
            snapshot,
            through_seq,
            meta,
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

struct Worker {
    db: sled::Db,
    healthy: Arc<AtomicBool>,
    flush_interval: Duration,
    /// When the oldest write not yet flushed happened.
    dirty_since: Option<Instant>,
    /// Callers waiting for their append to be on disk.
    waiters: Vec<Reply<()>>,
    /// Appends not yet written to sled: one batch per flush window rather
    /// than one per keystroke (each write wakes sled's I/O threads). Written
    /// before any other request is served, so reads see every append.
    pending: Option<sled::Batch>,
}

impl Worker {
    fn run(mut self, rx: flume::Receiver<Op>) {
        loop {
            let next = match self.dirty_since {
                None => rx.recv().map_err(|_| flume::RecvTimeoutError::Disconnected),
                Some(since) => rx.recv_deadline(since + self.flush_interval),
            };
            match next {
                Ok(Op::Shutdown { reply }) => {
                    let result = self.flush();
                    let _ = reply.send(result);
                    return;
                }
                Ok(op) => self.handle(op),
                Err(flume::RecvTimeoutError::Timeout) => {
                    let _ = self.flush();
                    continue;
                }
                Err(flume::RecvTimeoutError::Disconnected) => {
                    let _ = self.flush();
                    return;
                }
            }
            // Someone waits for durability: flush once the queue is drained,
            // so one fsync covers every append that arrived meanwhile.
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

    fn record<T>(&self, result: Result<T, sled::Error>) -> Result<T, StoreError> {
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, "storage write failed");
                Err(e.into())
            }
        }
    }

    /// Writes the appends batched so far (not yet durable).
    fn write_pending(&mut self) -> Result<(), StoreError> {
        match self.pending.take() {
            Some(batch) => {
                let result = self.db.apply_batch(batch);
                self.record(result)
            }
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = match self.write_pending() {
            Ok(()) => self.db.flush().map(|_| ()).map_err(StoreError::from),
            Err(e) => Err(e),
        };
        self.dirty_since = None;
        let ok = result.is_ok();
        if ok {
            self.healthy.store(true, Ordering::Relaxed);
        } else {
            self.healthy.store(false, Ordering::Relaxed);
            tracing::error!("storage flush failed");
        }
        crate::metrics::flushed(started.elapsed());
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(if ok {
                Ok(())
            } else {
                Err(StoreError::Corrupt("flush failed".into()))
            });
        }
        result
    }

    fn handle(&mut self, op: Op) {
        if !matches!(op, Op::Append { .. }) {
            // Errors are recorded (readiness) and reported at the next flush.
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
                let batch = self.pending.get_or_insert_with(sled::Batch::default);
                batch.insert(log_key(doc.as_str(), seq), update.as_ref());
                batch.insert(meta_key(doc.as_str()), &meta.encode()[..]);
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
                done,
            } => {
                let result = self.compact(&doc, snapshot, through_seq, meta);
                self.mark_dirty();
                let _ = done.send(result);
            }
            Op::Delete {
                doc,
                at_ms,
                only_if_older,
                done,
            } => {
                let result = self.delete(&doc, at_ms, only_if_older);
                self.mark_dirty();
                let _ = done.send(result);
            }
            Op::Tombstone { doc, reply } => {
                let _ = reply.send(self.tombstone(&doc));
            }
            Op::Load { doc, reply } => {
                let _ = reply.send(self.load(&doc));
            }
            Op::List {
                prefix,
                after,
                limit,
                reply,
            } => {
                let _ = reply.send(self.list(&prefix, after.as_deref(), limit));
            }
            Op::NodeId { generate, reply } => {
                let _ = reply.send(self.node_id(generate));
            }
            Op::Flush { reply } => {
                let _ = reply.send(self.flush());
            }
            Op::Shutdown { .. } => {}
        }
    }

    fn compact(
        &self,
        doc: &DocName,
        snapshot: Snapshot,
        through_seq: u64,
        meta: DocMeta,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let prefix = log_prefix(doc.as_str());
        for entry in self.db.scan_prefix(&prefix) {
            let (key, _) = self.record(entry)?;
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
        let result = self.db.apply_batch(batch);
        self.record(result)
    }

    fn delete(&self, doc: &DocName, at_ms: i64, only_if_older: bool) -> Result<bool, StoreError> {
        let meta = match self.record(self.db.get(meta_key(doc.as_str())))? {
            Some(raw) => Some(DocMeta::decode(&raw)?),
            None => None,
        };
        let mut batch = sled::Batch::default();
        let newer = self.tombstone(doc)?.is_some_and(|t| t >= at_ms);
        if !newer {
            batch.insert(tombstone_key(doc.as_str()), &at_ms.to_be_bytes()[..]);
        }
        let remove = meta.is_some_and(|m| !only_if_older || m.updated_at_ms <= at_ms);
        if remove {
            for entry in self.db.scan_prefix(log_prefix(doc.as_str())) {
                let (key, _) = self.record(entry)?;
                batch.remove(key);
            }
            batch.remove(snapshot_key(doc.as_str()));
            batch.remove(snapshot_state_vector_key(doc.as_str()));
            batch.remove(meta_key(doc.as_str()));
        }
        let result = self.db.apply_batch(batch);
        self.record(result)?;
        Ok(remove)
    }

    fn tombstone(&self, doc: &DocName) -> Result<Option<i64>, StoreError> {
        Ok(self
            .record(self.db.get(tombstone_key(doc.as_str())))?
            .and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
            .map(i64::from_be_bytes))
    }

    fn load(&self, doc: &DocName) -> Result<StoredDoc, StoreError> {
        let meta = match self.record(self.db.get(meta_key(doc.as_str())))? {
            Some(raw) => Some(DocMeta::decode(&raw)?),
            None => None,
        };
        let snapshot = self
            .record(self.db.get(snapshot_key(doc.as_str())))?
            .map(|v| v.to_vec());
        let snapshot_state_vector = self
            .record(self.db.get(snapshot_state_vector_key(doc.as_str())))?
            .map(|v| v.to_vec());
        let prefix = log_prefix(doc.as_str());
        let mut log = Vec::new();
        for entry in self.db.scan_prefix(&prefix) {
            let (key, value) = self.record(entry)?;
            log.push((seq_of(&key, prefix.len())?, value.to_vec()));
        }
        Ok(StoredDoc {
            snapshot,
            snapshot_state_vector,
            log,
            meta,
            tombstone_ms: self.tombstone(doc)?,
        })
    }

    fn list(
        &self,
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
        for entry in self.db.range(start..) {
            let (key, value) = self.record(entry)?;
            if !key.starts_with(&scan_prefix) || out.len() >= limit {
                break;
            }
            let name = String::from_utf8(key[1..].to_vec())
                .map_err(|_| StoreError::Corrupt("document name is not UTF-8".into()))?;
            out.push((name, DocMeta::decode(&value)?));
        }
        Ok(out)
    }

    fn node_id(&mut self, generate: String) -> Result<String, StoreError> {
        let result =
            self.db
                .compare_and_swap(b"node_id", None as Option<&[u8]>, Some(generate.as_bytes()));
        match self.record(result)? {
            Ok(()) => {
                self.mark_dirty();
                Ok(generate)
            }
            Err(existing) => existing
                .current
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .ok_or_else(|| StoreError::Corrupt("node id vanished".into())),
        }
    }
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
            },
        )
        .expect("open")
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
