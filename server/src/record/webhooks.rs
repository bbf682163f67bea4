//! The webhook outbox in PostgreSQL, for a cluster (`crate::webhooks`).
//!
//! Three tables (schema version 3): `quire_webhook_marks`, one row per
//! document changed since its last `document.updated`;
//! `quire_webhook_sealed`, the state vector that event carried; and
//! `quire_webhook_outbox`, one row per event and endpoint.
//!
//! Events are written in the transaction of the change: the upload
//! transaction marks every document it gives a row (and writes
//! `document.created` for one that was new or deleted before), the delete
//! transaction writes `document.deleted`. Every node uploads the updates it
//! applies, its peers' too, so a mark is per document, not per node, and a
//! burst of edits made on three nodes is still one `document.updated`.
//!
//! Any node seals and delivers. A mark is sealed under its row lock (`FOR
//! UPDATE SKIP LOCKED`), so one node seals it; an upload that marks it
//! meanwhile waits for the seal and then marks it again, and its changes go
//! into the next event. An entry is claimed by moving its `next_ms` to the
//! end of a lease, in the statement that selects it (`SKIP LOCKED` again),
//! so two nodes never deliver it at once; a node that dies mid-delivery
//! leaves it to whichever node claims it when the lease ends.

use super::sql::{self, Row};
use super::{Record, RecordError};
use crate::config::WebhookEvent;
use crate::webhooks::seal::{state_of, updated_event};
use crate::webhooks::{
    Claimed, Counts, Entry, EventBody, EventData, Payload, Settings, Settle, MAX_WAIT_WINDOWS,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Marks sealed per transaction: a short transaction holds few row locks.
const SEAL_BATCH: i64 = 16;

/// What the upload transaction knew of a document before this batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Before {
    /// `lock_docs` inserts a new name with 0; an upload sets it to when the
    /// update was applied, a delete to when it was deleted.
    pub(super) updated_at_ms: i64,
    pub(super) deleted_at_ms: Option<i64>,
}

/// Whether a document that gets a row in this upload is created by it: it
/// was new in `quire_docs`, or deleted (the rows kept are newer than the
/// deletion: `upload::rows` drops the older ones).
pub(super) fn created(before: Before) -> bool {
    before.deleted_at_ms.is_some() || before.updated_at_ms == 0
}

/// The documents an upload marks, each with its latest change (ms).
fn changed(rows: &[Row]) -> BTreeMap<&str, i64> {
    let mut changed: BTreeMap<&str, i64> = BTreeMap::new();
    for row in rows {
        let at = changed.entry(row.doc.as_str()).or_insert(row.applied_at_ms);
        *at = (*at).max(row.applied_at_ms);
    }
    changed
}

/// In the upload transaction, once `rows` are inserted: marks their
/// documents, and writes `document.created` for the ones it created.
pub(super) async fn uploaded(
    txn: &deadpool_postgres::Transaction<'_>,
    settings: &Settings,
    rows: &[Row],
    before: &BTreeMap<String, Before>,
    now_ms: i64,
) -> Result<(), RecordError> {
    let changed = changed(rows);
    if settings.wants(WebhookEvent::DocumentUpdated) && !changed.is_empty() {
        let docs: Vec<&str> = changed.keys().copied().collect();
        let at: Vec<i64> = changed.values().copied().collect();
        // Sorted by name, like `lock_docs`: concurrent uploads take these
        // row locks in the same order.
        txn.execute(
            "INSERT INTO quire_webhook_marks AS m (doc, first_ms, last_ms, changes)
             SELECT doc, at, at, 1 FROM unnest($1::text[], $2::int8[]) AS u(doc, at)
             ON CONFLICT (doc) DO UPDATE SET
                 last_ms = GREATEST(m.last_ms, excluded.last_ms),
                 changes = m.changes + 1",
            &[&docs, &at],
        )
        .await?;
    }
    if settings.wants(WebhookEvent::DocumentCreated) {
        let mut entries = Vec::new();
        for doc in changed.keys() {
            if before.get(*doc).copied().is_some_and(created) {
                let body = EventBody::new(
                    WebhookEvent::DocumentCreated,
                    doc,
                    now_ms,
                    EventData::default(),
                );
                entries.extend(Entry::for_each(&settings.endpoints, &body, now_ms));
            }
        }
        insert_entries(txn, &entries).await?;
    }
    Ok(())
}

/// In the delete transaction: the document's mark and sealed state go, and
/// `document.deleted` comes if it `existed` (was not already deleted).
pub(super) async fn deleted(
    txn: &deadpool_postgres::Transaction<'_>,
    settings: Option<&Settings>,
    doc: &str,
    existed: bool,
    at_ms: i64,
) -> Result<(), RecordError> {
    // Marks before sealed states: the order a seal takes them in.
    txn.execute("DELETE FROM quire_webhook_marks WHERE doc = $1", &[&doc])
        .await?;
    txn.execute("DELETE FROM quire_webhook_sealed WHERE doc = $1", &[&doc])
        .await?;
    if let Some(settings) = settings.filter(|s| existed && s.wants(WebhookEvent::DocumentDeleted)) {
        let body = EventBody::new(
            WebhookEvent::DocumentDeleted,
            doc,
            at_ms,
            EventData::default(),
        );
        let now_ms = crate::webhooks::now_ms();
        insert_entries(txn, &Entry::for_each(&settings.endpoints, &body, now_ms)).await?;
    }
    Ok(())
}

async fn insert_entries(
    txn: &impl deadpool_postgres::GenericClient,
    entries: &[Entry],
) -> Result<(), RecordError> {
    if entries.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Entry) -> &str| entries.iter().map(f).collect::<Vec<&str>>();
    let ids = column(|e| &e.event_id);
    let kinds = column(|e| &e.kind);
    let docs = column(|e| &e.document);
    let endpoints = column(|e| &e.endpoint);
    let bodies = column(|e| &e.body);
    let created: Vec<i64> = entries.iter().map(|e| e.created_ms).collect();
    let next: Vec<i64> = entries.iter().map(|e| e.next_ms).collect();
    txn.execute(
        "INSERT INTO quire_webhook_outbox (event_id, kind, doc, endpoint, body, created_ms, next_ms)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::int8[], $7::int8[])",
        &[&ids, &kinds, &docs, &endpoints, &bodies, &created, &next],
    )
    .await?;
    Ok(())
}

const ENTRY_COLUMNS: &str =
    "id, event_id, kind, doc, endpoint, body, created_ms, attempts, next_ms, last_error";

fn claimed(row: &tokio_postgres::Row) -> Result<Claimed, RecordError> {
    let id: i64 = row.try_get(0)?;
    let attempts: i32 = row.try_get(7)?;
    Ok(Claimed {
        id: u64::try_from(id).map_err(|_| RecordError::Corrupt(format!("outbox id {id}")))?,
        entry: Entry {
            event_id: row.try_get(1)?,
            kind: row.try_get(2)?,
            document: row.try_get(3)?,
            endpoint: row.try_get(4)?,
            body: row.try_get(5)?,
            created_ms: row.try_get(6)?,
            attempts: u32::try_from(attempts).unwrap_or(0),
            next_ms: row.try_get(8)?,
            last_error: row.try_get(9)?,
        },
    })
}

/// An id from the REST routes: one that does not fit is no row.
fn row_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(-1)
}

impl Record {
    /// The webhook settings the upload and delete transactions write events
    /// for. Set once, before the first upload.
    pub fn set_webhooks(&self, settings: Arc<Settings>) {
        let _ = self.state.webhooks.set(settings);
    }

    pub(super) fn webhooks(&self) -> Option<&Settings> {
        self.state.webhooks.get().map(Arc::as_ref)
    }

    /// Writes entries of events that no recorded change carries
    /// (connection events, which reach here through each node's sled).
    pub async fn enqueue_webhooks(&self, entries: &[Entry]) -> Result<(), RecordError> {
        let client = self.client().await?;
        let result = insert_entries(&client, entries).await;
        self.observe(&result);
        result
    }

    /// Seals the due marks (at most a batch); returns how many.
    pub async fn seal_webhooks(
        &self,
        settings: &Settings,
        now_ms: i64,
    ) -> Result<usize, RecordError> {
        let mut client = self.client().await?;
        let result = seal(&mut client, settings, now_ms).await;
        self.observe(&result);
        result
    }

    /// Up to `limit` entries due at `now_ms`, leased until `lease_until_ms`.
    pub async fn claim_webhooks(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, RecordError> {
        let client = self.client().await?;
        let limit = limit as i64;
        let result = async {
            let rows = client
                .query(
                    &format!(
                        "UPDATE quire_webhook_outbox SET next_ms = $2
                         WHERE id IN (SELECT id FROM quire_webhook_outbox
                                      WHERE NOT dead AND next_ms <= $1
                                      ORDER BY next_ms LIMIT $3 FOR UPDATE SKIP LOCKED)
                         RETURNING {ENTRY_COLUMNS}"
                    ),
                    &[&now_ms, &lease_until_ms, &limit],
                )
                .await?;
            let mut out = rows.iter().map(claimed).collect::<Result<Vec<_>, _>>()?;
            out.sort_by_key(|c| (c.entry.created_ms, c.id));
            Ok(out)
        }
        .await;
        self.observe(&result);
        result
    }

    /// Settles an entry claimed with the lease `lease_ms`. A retry or dead
    /// letter is written only while that lease is the entry's: a delivery
    /// that outlasted it may have been claimed again by another node, whose
    /// state this must not overwrite (a success is a success either way).
    pub async fn settle_webhook(
        &self,
        id: u64,
        lease_ms: i64,
        outcome: Settle,
    ) -> Result<(), RecordError> {
        let client = self.client().await?;
        let id = row_id(id);
        let result = match outcome {
            Settle::Delivered => {
                client
                    .execute("DELETE FROM quire_webhook_outbox WHERE id = $1", &[&id])
                    .await
            }
            Settle::Retry { next_ms, error } => {
                client
                    .execute(
                        "UPDATE quire_webhook_outbox
                         SET attempts = attempts + 1, next_ms = $2, last_error = $3
                         WHERE id = $1 AND next_ms = $4",
                        &[&id, &next_ms, &error, &lease_ms],
                    )
                    .await
            }
            Settle::Dead { error } => {
                client
                    .execute(
                        "UPDATE quire_webhook_outbox
                         SET attempts = attempts + 1, last_error = $2, dead = true
                         WHERE id = $1 AND next_ms = $3",
                        &[&id, &error, &lease_ms],
                    )
                    .await
            }
        }
        .map(|_| ())
        .map_err(RecordError::from);
        self.observe(&result);
        result
    }

    /// Dead letters, oldest first, at most `limit`.
    pub async fn dead_webhooks(&self, limit: usize) -> Result<Vec<Claimed>, RecordError> {
        let client = self.client().await?;
        let limit = limit as i64;
        let result = async {
            let rows = client
                .query(
                    &format!(
                        "SELECT {ENTRY_COLUMNS} FROM quire_webhook_outbox WHERE dead
                         ORDER BY id LIMIT $1"
                    ),
                    &[&limit],
                )
                .await?;
            rows.iter().map(claimed).collect()
        }
        .await;
        self.observe(&result);
        result
    }

    /// Puts dead letters back with fresh attempts: `id`, or every one.
    pub async fn replay_webhooks(&self, id: Option<u64>, now_ms: i64) -> Result<u64, RecordError> {
        let client = self.client().await?;
        let id = id.map(row_id);
        let result = client
            .execute(
                "UPDATE quire_webhook_outbox SET dead = false, attempts = 0, next_ms = $2
                 WHERE dead AND ($1::int8 IS NULL OR id = $1)",
                &[&id, &now_ms],
            )
            .await
            .map_err(RecordError::from);
        self.observe(&result);
        result
    }

    pub async fn webhook_counts(&self) -> Result<Counts, RecordError> {
        let client = self.client().await?;
        let result = async {
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM quire_webhook_outbox WHERE NOT dead),
                            (SELECT count(*) FROM quire_webhook_outbox WHERE dead),
                            (SELECT count(*) FROM quire_webhook_marks)",
                    &[],
                )
                .await?;
            let count = |i: usize| row.try_get::<_, i64>(i).map(|n| n.max(0) as u64);
            Ok(Counts {
                pending: count(0)?,
                dead: count(1)?,
                marked: count(2)?,
            })
        }
        .await;
        self.observe(&result);
        result
    }
}

/// One sealing transaction: the due marks this node could lock, each
/// turned into a `document.updated` event (or dropped, for a document
/// deleted meanwhile).
async fn seal(
    client: &mut deadpool_postgres::Object,
    settings: &Settings,
    now_ms: i64,
) -> Result<usize, RecordError> {
    let window = settings.debounce.as_millis() as i64;
    let quiet_since = now_ms.saturating_sub(window);
    let marked_since = now_ms.saturating_sub(window.saturating_mul(MAX_WAIT_WINDOWS as i64));
    let txn = client.transaction().await?;
    // Locked before the document is read: an upload that marks it commits
    // either before (its rows are read below) or after this transaction
    // (it waits on the lock, then marks it again).
    let due = txn
        .query(
            "SELECT doc FROM quire_webhook_marks WHERE last_ms <= $1 OR first_ms <= $2
             ORDER BY doc LIMIT $3 FOR UPDATE SKIP LOCKED",
            &[&quiet_since, &marked_since, &SEAL_BATCH],
        )
        .await?;
    let docs = due
        .iter()
        .map(|row| row.try_get::<_, String>(0))
        .collect::<Result<Vec<_>, _>>()?;
    if docs.is_empty() {
        return Ok(0);
    }
    if settings.wants(WebhookEvent::DocumentUpdated) {
        for doc in &docs {
            seal_one(&txn, settings, doc, now_ms).await?;
        }
    }
    txn.execute(
        "DELETE FROM quire_webhook_marks WHERE doc = ANY($1)",
        &[&docs],
    )
    .await?;
    txn.commit().await?;
    Ok(docs.len())
}

async fn seal_one(
    txn: &deadpool_postgres::Transaction<'_>,
    settings: &Settings,
    doc: &str,
    now_ms: i64,
) -> Result<(), RecordError> {
    let recorded = sql::load(txn, doc).await?;
    if recorded.deleted_at_ms.is_some() || recorded.is_empty() {
        // Deleted since it was marked: `document.deleted` says the rest.
        return Ok(());
    }
    let payload = settings.payload;
    // Only the update since the previous event needs its state vector.
    let previous: Option<Vec<u8>> = match payload {
        Payload::StateVectorAndUpdate => txn
            .query_opt(
                "SELECT state_vector FROM quire_webhook_sealed WHERE doc = $1",
                &[&doc],
            )
            .await?
            .map(|row| row.try_get(0))
            .transpose()?,
        Payload::StateVector => None,
    };
    let state = tokio::task::spawn_blocking(move || {
        state_of(recorded.parts(), previous.as_deref(), payload)
    })
    .await
    .map_err(|e| RecordError::Corrupt(format!("sealing panicked: {e}")))?;
    let state = match state {
        Ok(state) => state,
        Err(e) => {
            // No node can load it either; its mark goes rather than hold
            // up the marks sealed with it, round after round.
            tracing::error!(doc, error = %e, "document.updated not sent: the document in PostgreSQL does not load");
            return Ok(());
        }
    };
    let body = updated_event(doc, &state, now_ms);
    insert_entries(txn, &Entry::for_each(&settings.endpoints, &body, now_ms)).await?;
    txn.execute(
        "INSERT INTO quire_webhook_sealed (doc, state_vector) VALUES ($1, $2)
         ON CONFLICT (doc) DO UPDATE SET state_vector = excluded.state_vector",
        &[&doc, &state.state_vector],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_created_by_the_upload_that_finds_it_new_or_deleted() {
        let before = |updated_at_ms, deleted_at_ms| Before {
            updated_at_ms,
            deleted_at_ms,
        };
        let cases = [
            // Inserted by this upload's `lock_docs`.
            (before(0, None), true),
            // Uploaded before.
            (before(1_000, None), false),
            // Deleted; the rows of this upload are newer.
            (before(1_000, Some(2_000)), true),
            // Deleted before ever being uploaded (the delete made its row).
            (before(2_000, Some(2_000)), true),
        ];
        for (before, expected) in cases {
            assert_eq!(created(before), expected, "{before:?}");
        }
    }

    #[test]
    fn an_upload_marks_each_document_once_with_its_latest_change() {
        let row = |doc: &str, at| Row {
            doc: doc.into(),
            node_seq: 1,
            applied_at_ms: at,
            payload: Vec::new(),
        };
        // Updates that did not merge go up as several rows of one document.
        let rows = [row("a", 30), row("a", 10), row("b", 20)];
        let changed: Vec<(&str, i64)> = changed(&rows).into_iter().collect();
        assert_eq!(changed, [("a", 30), ("b", 20)]);
    }
}
