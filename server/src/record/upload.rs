//! Moves this node's spool to PostgreSQL.
//!
//! Every `UPLOAD_EVERY`, the oldest spooled updates (at most `BATCH`) go up
//! in one transaction: each document's updates merged into one row keyed by
//! (node id, highest spool sequence), inserted with `ON CONFLICT DO
//! NOTHING`, then removed from the spool. A crash between the commit and
//! the removal re-uploads the same rows, which conflict and are dropped; a
//! batch cut differently duplicates content, which a CRDT merge absorbs.
//! Updates applied before a document's deletion are dropped here, so a node
//! that comes back with an old spool cannot bring a deleted document back.
//! Documents with many rows since their snapshot are then compacted. With
//! webhooks, the same transaction marks the documents it uploads and writes
//! `document.created` for the ones it creates (`webhooks.rs`).

use super::sql::{self, Row};
use super::webhooks::{self, Before};
use super::{Record, RecordError};
use crate::store::{Queued, Store};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the spool is uploaded: the upload lag of a healthy node.
const UPLOAD_EVERY: Duration = Duration::from_millis(20);
/// Spooled updates per transaction.
const BATCH: usize = 2000;
/// Rows since a document's snapshot that start its compaction.
const COMPACT_AFTER_ROWS: i32 = 64;
/// Retries after a failure wait this long, doubling up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The rows one upload inserts: per document, the updates applied after
/// its deletion (all of them if it was never deleted), merged.
pub(super) fn rows(entries: &[Queued], deleted_at: &HashMap<String, Option<i64>>) -> Vec<Row> {
    let mut by_doc: BTreeMap<&str, Vec<&Queued>> = BTreeMap::new();
    for entry in entries {
        let deleted = deleted_at.get(&entry.doc).copied().flatten();
        if deleted.is_some_and(|at| entry.applied_ms <= at) {
            continue;
        }
        by_doc.entry(&entry.doc).or_default().push(entry);
    }
    let mut rows = Vec::new();
    for (doc, entries) in by_doc {
        let merged = crdt_core::merge_updates_v1(entries.iter().map(|e| e.update.as_slice()));
        match merged {
            Ok(payload) => rows.push(Row {
                doc: doc.to_owned(),
                node_seq: entries.iter().map(|e| e.seq).max().unwrap_or(0) as i64,
                applied_at_ms: entries.iter().map(|e| e.applied_ms).max().unwrap_or(0),
                payload,
            }),
            // Each was valid when it applied; should a merge still fail,
            // they go up one by one rather than not at all.
            Err(e) => {
                tracing::warn!(doc, error = %e, "cannot merge spooled updates; uploading them one by one");
                rows.extend(entries.iter().map(|e| Row {
                    doc: doc.to_owned(),
                    node_seq: e.seq as i64,
                    applied_at_ms: e.applied_ms,
                    payload: e.update.clone(),
                }));
            }
        }
    }
    rows
}

/// Uploads one batch; returns how many spooled updates it took (0: the
/// spool is empty).
pub async fn upload_once(record: &Record, store: &Store) -> Result<usize, UploadError> {
    let entries = store.spooled(BATCH).await.map_err(UploadError::Spool)?;
    let Some(last) = entries.last().map(|e| e.seq) else {
        record.set_oldest_waiting(None);
        return Ok(0);
    };
    record.set_oldest_waiting(entries.iter().map(|e| e.applied_ms).min());
    metrics::gauge!("quire_spool_updates").set(entries.len() as f64);
    let count = entries.len();
    let to_compact = record.insert(entries).await.map_err(UploadError::Record)?;
    store.unspool(last).await.map_err(UploadError::Spool)?;
    for doc in to_compact {
        if let Err(e) = record.compact(&doc).await {
            tracing::debug!(doc, error = %e, "compaction in PostgreSQL failed; retried after the next upload");
        }
    }
    Ok(count)
}

/// Compacts the documents that left memory since the last call (their last
/// updates are uploaded by now: the spool is read in order, and they were
/// spooled before they were hinted).
async fn compact_unloaded(record: &Record) {
    for doc in record.take_compaction_hints() {
        if let Err(e) = record.compact(&doc).await {
            tracing::debug!(doc, error = %e, "compaction in PostgreSQL failed");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Record(RecordError),
    #[error("reading the spool: {0}")]
    Spool(crate::store::StoreError),
}

impl Record {
    /// One upload transaction; returns the documents due for compaction.
    async fn insert(&self, entries: Vec<Queued>) -> Result<Vec<String>, RecordError> {
        let mut client = self.client().await?;
        let result = async {
            let txn = client.transaction().await?;
            let mut names: Vec<&str> = entries.iter().map(|e| e.doc.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            let before: BTreeMap<String, Before> =
                sql::lock_docs(&txn, &names).await?.into_iter().collect();
            let deleted: HashMap<String, Option<i64>> = before
                .iter()
                .map(|(doc, before)| (doc.clone(), before.deleted_at_ms))
                .collect();
            let count = entries.len();
            let rows = tokio::task::spawn_blocking(move || rows(&entries, &deleted))
                .await
                .map_err(|e| RecordError::Corrupt(format!("merging a batch panicked: {e}")))?;
            let to_compact = if rows.is_empty() {
                Vec::new()
            } else {
                sql::insert_rows(&txn, &self.node_id, &rows, COMPACT_AFTER_ROWS).await?
            };
            if let Some(settings) = self.webhooks() {
                webhooks::uploaded(&txn, settings, &rows, &before, crate::webhooks::now_ms())
                    .await?;
            }
            txn.commit().await?;
            metrics::counter!("quire_uploaded_updates_total").increment(count as u64);
            Ok(to_compact)
        }
        .await;
        self.observe(&result);
        result
    }

    /// Merges `doc`'s snapshot and rows into a new snapshot, unless another
    /// node holds its compaction lock (then that node does it).
    pub async fn compact(&self, doc: &str) -> Result<(), RecordError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await?;
        let Some(compacting) = sql::read_for_compaction(&txn, doc).await? else {
            return Ok(());
        };
        let parts = compacting.parts;
        // Integrated, not merged: the snapshot is then exactly what a
        // document encodes, and its state vector is the document's, so a
        // node can greet clients from these bytes without integrating them.
        let (snapshot, state_vector) = tokio::task::spawn_blocking(move || {
            let doc = crdt_core::Document::load(None, parts.iter().map(Vec::as_slice))?;
            Ok::<_, crdt_core::DocumentError>((doc.encode_state_v1(), doc.state_vector_v1()))
        })
        .await
        .map_err(|e| RecordError::Corrupt(format!("compaction panicked: {e}")))?
        .map_err(|e| RecordError::Corrupt(format!("document {doc}: {e}")))?;
        sql::write_compaction(&txn, doc, &snapshot, &state_vector, &compacting.keys).await?;
        txn.commit().await?;
        metrics::counter!("quire_record_compactions_total").increment(1);
        tracing::debug!(doc, bytes = snapshot.len(), "compacted in PostgreSQL");
        Ok(())
    }
}

/// Uploads until `stop`, then returns; [`finish`] uploads what is left.
pub async fn run(record: Record, store: Store, stop: CancellationToken) {
    let mut retry = RETRY_FIRST;
    loop {
        let wait = match upload_once(&record, &store).await {
            Ok(n) if n > 0 => {
                retry = RETRY_FIRST;
                Duration::ZERO
            }
            Ok(_) => {
                retry = RETRY_FIRST;
                compact_unloaded(&record).await;
                UPLOAD_EVERY
            }
            Err(e) => {
                tracing::debug!(error = %e, "upload failed; retrying");
                let wait = retry;
                retry = (retry * 2).min(RETRY_MAX);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait.max(UPLOAD_EVERY)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// At shutdown, once every document has stopped: uploads the rest of the
/// spool, trying until `deadline`. What is left stays in the spool, on
/// disk, and goes up at the node's next start.
pub async fn finish(record: &Record, store: &Store, deadline: tokio::time::Instant) {
    loop {
        match upload_once(record, store).await {
            Ok(0) => {
                compact_unloaded(record).await;
                return;
            }
            Ok(_) => continue,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(error = %e, "updates are left in this node's spool, not in PostgreSQL: they upload at its next start (a lost data directory loses them)");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crdt_core::yrs::{self, Text, Transact};

    fn typed(client: u64, text: &str) -> Vec<u8> {
        let doc = yrs::Doc::with_client_id(client);
        let t = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, text);
        txn.encode_update_v1()
    }

    fn queued(seq: u64, doc: &str, applied_ms: i64, update: Vec<u8>) -> Queued {
        Queued {
            seq,
            doc: doc.into(),
            applied_ms,
            update,
        }
    }

    #[test]
    fn each_document_gets_one_row_of_its_merged_updates_keyed_by_the_highest_sequence() {
        let entries = [
            queued(1, "a", 10, typed(1, "x")),
            queued(2, "b", 11, typed(2, "y")),
            queued(3, "a", 12, typed(3, "z")),
        ];
        let rows = rows(&entries, &HashMap::new());
        let summary: Vec<(&str, i64, i64)> = rows
            .iter()
            .map(|r| (r.doc.as_str(), r.node_seq, r.applied_at_ms))
            .collect();
        assert_eq!(summary, [("a", 3, 12), ("b", 2, 11)]);
        let a = crdt_core::Document::load(Some(&rows[0].payload), []).expect("loads");
        let text = a.root_text("t").expect("a text");
        assert_eq!(text.len(), 2, "both of a's updates: {text:?}");
    }

    #[test]
    fn updates_applied_before_a_deletion_are_dropped_and_later_ones_kept() {
        let entries = [
            queued(1, "gone", 10, typed(1, "old")),
            queued(2, "gone", 20, typed(1, "at")),
            queued(3, "back", 10, typed(2, "old")),
            queued(4, "back", 30, typed(3, "new")),
            queued(5, "live", 5, typed(4, "x")),
        ];
        let deleted = HashMap::from([
            ("gone".to_owned(), Some(20)),
            ("back".to_owned(), Some(20)),
            ("live".to_owned(), None),
        ]);
        let rows = rows(&entries, &deleted);
        let kept: Vec<(&str, i64)> = rows.iter().map(|r| (r.doc.as_str(), r.node_seq)).collect();
        // (doc, rows kept): deleted at 20 drops what was applied at or
        // before 20; never deleted keeps everything.
        assert_eq!(kept, [("back", 4), ("live", 5)]);
    }
}
