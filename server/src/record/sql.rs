//! The queries. Each function is one transaction.

use super::webhooks::Before;
use super::RecordError;
use crate::store::DocMeta;

/// What PostgreSQL holds for one document.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The compacted state, with its state vector.
    pub snapshot: Option<(Vec<u8>, Vec<u8>)>,
    /// The update rows since the snapshot.
    pub updates: Vec<Vec<u8>>,
    /// When it was last deleted, if ever (and not re-created since).
    pub deleted_at_ms: Option<i64>,
    pub updated_at_ms: Option<i64>,
}

impl Recorded {
    /// The snapshot, then every update: together, the document.
    pub fn parts(&self) -> impl Iterator<Item = &[u8]> {
        self.snapshot
            .iter()
            .map(|(snapshot, _)| snapshot.as_slice())
            .chain(self.updates.iter().map(Vec::as_slice))
    }

    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.updates.is_empty()
    }
}

pub(super) async fn load(
    client: &impl deadpool_postgres::GenericClient,
    doc: &str,
) -> Result<Recorded, RecordError> {
    // One statement, so one snapshot of the database: a compaction that
    // commits meanwhile cannot hide the rows it merged from both reads. And
    // one round trip, prepared once per connection: this is the cold load.
    let statement = client
        .prepare_cached(
            "SELECT d.snapshot, d.state_vector, d.updated_at_ms, d.deleted_at_ms,
                    ARRAY(SELECT u.payload FROM quire_updates u WHERE u.doc = d.name
                          ORDER BY u.node_id, u.node_seq)
             FROM quire_docs d WHERE d.name = $1",
        )
        .await?;
    let Some(row) = client.query_opt(&statement, &[&doc]).await? else {
        return Ok(Recorded::default());
    };
    let snapshot: Option<Vec<u8>> = row.try_get(0)?;
    let state_vector: Option<Vec<u8>> = row.try_get(1)?;
    Ok(Recorded {
        snapshot: snapshot.zip(state_vector),
        updated_at_ms: Some(row.try_get(2)?),
        deleted_at_ms: row.try_get(3)?,
        updates: row.try_get(4)?,
    })
}

pub(super) async fn delete(
    client: &mut deadpool_postgres::Object,
    doc: &str,
    at_ms: i64,
    webhooks: Option<&crate::webhooks::Settings>,
) -> Result<bool, RecordError> {
    let txn = client.transaction().await?;
    let existed = txn
        .query_opt(
            "SELECT deleted_at_ms IS NULL FROM quire_docs WHERE name = $1 FOR UPDATE",
            &[&doc],
        )
        .await?
        .map(|row| row.try_get::<_, bool>(0))
        .transpose()?
        .unwrap_or(false);
    // A row even for a name never uploaded: updates some node still spools
    // from before the delete must find it.
    txn.execute(
        "INSERT INTO quire_docs (name, updated_at_ms, deleted_at_ms) VALUES ($1, $2, $2)
         ON CONFLICT (name) DO UPDATE SET
             deleted_at_ms = GREATEST(COALESCE(quire_docs.deleted_at_ms, $2), $2),
             snapshot = NULL, state_vector = NULL, bytes = 0, pending_rows = 0",
        &[&doc, &at_ms],
    )
    .await?;
    txn.execute("DELETE FROM quire_updates WHERE doc = $1", &[&doc])
        .await?;
    txn.execute("DELETE FROM quire_versions WHERE doc = $1", &[&doc])
        .await?;
    super::webhooks::deleted(&txn, webhooks, doc, existed, at_ms).await?;
    txn.commit().await?;
    Ok(existed)
}

pub(super) async fn list(
    client: &deadpool_postgres::Object,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, DocMeta)>, RecordError> {
    let after = after.unwrap_or("");
    let limit = limit as i64;
    let rows = client
        .query(
            "SELECT name, updated_at_ms, bytes FROM quire_docs
             WHERE deleted_at_ms IS NULL AND name >= $1 AND starts_with(name, $1) AND name > $2
             ORDER BY name LIMIT $3",
            &[&prefix, &after, &limit],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<_, String>(0)?,
                DocMeta {
                    updated_at_ms: row.try_get(1)?,
                    bytes: row.try_get::<_, i64>(2)?.max(0) as u64,
                    last_seq: 0,
                },
            ))
        })
        .collect()
}

/// One document's share of an upload: its spooled updates, merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    pub(super) doc: String,
    /// The highest spool sequence number merged into it.
    pub(super) node_seq: i64,
    pub(super) applied_at_ms: i64,
    pub(super) payload: Vec<u8>,
}

/// What `docs` were before this transaction (creating rows for new names),
/// locked until the transaction ends, so that a delete waits for this
/// upload or this upload for it.
pub(super) async fn lock_docs(
    txn: &deadpool_postgres::Transaction<'_>,
    docs: &[&str],
) -> Result<Vec<(String, Before)>, RecordError> {
    txn.execute(
        "INSERT INTO quire_docs (name, updated_at_ms)
         SELECT name, 0 FROM unnest($1::text[]) AS name
         ON CONFLICT (name) DO NOTHING",
        &[&docs],
    )
    .await?;
    let rows = txn
        .query(
            "SELECT name, deleted_at_ms, updated_at_ms FROM quire_docs WHERE name = ANY($1)
             ORDER BY name FOR UPDATE",
            &[&docs],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get(0)?,
                Before {
                    deleted_at_ms: row.try_get(1)?,
                    updated_at_ms: row.try_get(2)?,
                },
            ))
        })
        .collect()
}

/// Inserts the rows (a retry's duplicates are dropped) and updates the
/// documents they belong to; returns the documents with `compact_after` or
/// more rows since their snapshot.
pub(super) async fn insert_rows(
    txn: &deadpool_postgres::Transaction<'_>,
    node_id: &str,
    rows: &[Row],
    compact_after: i32,
) -> Result<Vec<String>, RecordError> {
    let docs: Vec<&str> = rows.iter().map(|r| r.doc.as_str()).collect();
    let nodes: Vec<&str> = rows.iter().map(|_| node_id).collect();
    let seqs: Vec<i64> = rows.iter().map(|r| r.node_seq).collect();
    let applied: Vec<i64> = rows.iter().map(|r| r.applied_at_ms).collect();
    let payloads: Vec<&[u8]> = rows.iter().map(|r| r.payload.as_slice()).collect();
    let sizes: Vec<i64> = rows.iter().map(|r| r.payload.len() as i64).collect();
    txn.execute(
        "INSERT INTO quire_updates (doc, node_id, node_seq, applied_at_ms, payload)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::bytea[])
         ON CONFLICT DO NOTHING",
        &[&docs, &nodes, &seqs, &applied, &payloads],
    )
    .await?;
    let to_compact = txn
        .query(
            "UPDATE quire_docs AS d SET
                 updated_at_ms = GREATEST(d.updated_at_ms, u.applied_at_ms),
                 bytes = d.bytes + u.bytes,
                 pending_rows = d.pending_rows + 1,
                 deleted_at_ms = NULL
             FROM unnest($1::text[], $2::int8[], $3::int8[]) AS u(name, applied_at_ms, bytes)
             WHERE d.name = u.name
             RETURNING d.name, d.pending_rows",
            &[&docs, &applied, &sizes],
        )
        .await?;
    let mut out = Vec::new();
    for row in to_compact {
        if row.try_get::<_, i32>(1)? >= compact_after {
            out.push(row.try_get(0)?);
        }
    }
    Ok(out)
}

/// What a compaction merges: the snapshot and the rows after it.
pub(super) struct Compacting {
    pub(super) parts: Vec<Vec<u8>>,
    pub(super) keys: (Vec<String>, Vec<i64>),
}

/// Locks `doc` for compaction, unless another node compacts it now.
pub(super) async fn read_for_compaction(
    txn: &deadpool_postgres::Transaction<'_>,
    doc: &str,
) -> Result<Option<Compacting>, RecordError> {
    let locked: bool = txn
        .query_one(
            "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))",
            &[&doc],
        )
        .await?
        .try_get(0)?;
    if !locked {
        return Ok(None);
    }
    let Some(row) = txn
        .query_opt(
            "SELECT snapshot FROM quire_docs
             WHERE name = $1 AND deleted_at_ms IS NULL AND pending_rows > 0 FOR UPDATE",
            &[&doc],
        )
        .await?
    else {
        // Deleted, or nothing to merge.
        return Ok(None);
    };
    let mut compacting = Compacting {
        parts: row.try_get::<_, Option<Vec<u8>>>(0)?.into_iter().collect(),
        keys: (Vec::new(), Vec::new()),
    };
    for row in txn
        .query(
            "SELECT node_id, node_seq, payload FROM quire_updates WHERE doc = $1",
            &[&doc],
        )
        .await?
    {
        compacting.keys.0.push(row.try_get(0)?);
        compacting.keys.1.push(row.try_get(1)?);
        compacting.parts.push(row.try_get(2)?);
    }
    Ok(Some(compacting))
}

pub(super) async fn write_compaction(
    txn: &deadpool_postgres::Transaction<'_>,
    doc: &str,
    snapshot: &[u8],
    state_vector: &[u8],
    keys: &(Vec<String>, Vec<i64>),
) -> Result<(), RecordError> {
    let bytes = snapshot.len() as i64;
    txn.execute(
        "UPDATE quire_docs SET snapshot = $2, state_vector = $3, bytes = $4, pending_rows = 0
         WHERE name = $1",
        &[&doc, &snapshot, &state_vector, &bytes],
    )
    .await?;
    txn.execute(
        "DELETE FROM quire_updates WHERE doc = $1
         AND (node_id, node_seq) IN (SELECT * FROM unnest($2::text[], $3::int8[]))",
        &[&doc, &keys.0, &keys.1],
    )
    .await?;
    Ok(())
}
