//! Versions in PostgreSQL (`quire_versions`): every node of a cluster sees
//! the same versions of a document. Each function is one transaction.

use super::RecordError;
use crate::history::{NewVersion, StoredVersion, Trigger, VersionMeta};

const COLUMNS: &str = "id, created_at_ms, label, trigger, clients, octet_length(snapshot), users";

fn meta(row: &tokio_postgres::Row) -> Result<VersionMeta, RecordError> {
    let trigger: String = row.try_get(3)?;
    Ok(VersionMeta {
        id: row.try_get::<_, i64>(0)? as u64,
        created_at_ms: row.try_get(1)?,
        label: row.try_get(2)?,
        trigger: Trigger::parse(&trigger)
            .ok_or_else(|| RecordError::Corrupt(format!("version trigger {trigger:?}")))?,
        clients: row.try_get::<_, i32>(4)?.max(0) as u32,
        size: row.try_get::<_, i32>(5)?.max(0) as u64,
        users: row.try_get(6)?,
    })
}

/// Inserts the next version of `doc` and prunes down to `keep`. Nodes
/// recording versions of one document at once take turns on a lock per
/// document, so ids are never handed out twice.
pub(super) async fn save(
    client: &mut deadpool_postgres::Object,
    doc: &str,
    version: NewVersion,
    keep: usize,
) -> Result<VersionMeta, RecordError> {
    let txn = client.transaction().await?;
    txn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('quire_versions:' || $1, 0))",
        &[&doc],
    )
    .await?;
    let row = txn
        .query_one(
            &format!(
                "INSERT INTO quire_versions (doc, id, created_at_ms, label, trigger, clients, snapshot, users)
                 SELECT $1, COALESCE(MAX(id), 0) + 1, $2, $3, $4, $5, $6, $7
                 FROM quire_versions WHERE doc = $1
                 RETURNING {COLUMNS}"
            ),
            &[
                &doc,
                &version.created_at_ms,
                &version.label,
                &version.trigger.as_str(),
                &(version.clients.min(i32::MAX as u32) as i32),
                &version.snapshot,
                &version.users,
            ],
        )
        .await?;
    let saved = meta(&row)?;
    let rows = txn
        .query(
            &format!("SELECT {COLUMNS} FROM quire_versions WHERE doc = $1"),
            &[&doc],
        )
        .await?;
    let all = rows.iter().map(meta).collect::<Result<Vec<_>, _>>()?;
    let prune: Vec<i64> = crate::history::to_prune(&all, keep)
        .into_iter()
        .map(|id| id as i64)
        .collect();
    if !prune.is_empty() {
        txn.execute(
            "DELETE FROM quire_versions WHERE doc = $1 AND id = ANY($2)",
            &[&doc, &prune],
        )
        .await?;
    }
    txn.commit().await?;
    Ok(saved)
}

pub(super) async fn list(
    client: &deadpool_postgres::Object,
    doc: &str,
) -> Result<Vec<VersionMeta>, RecordError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM quire_versions WHERE doc = $1 ORDER BY id DESC"),
            &[&doc],
        )
        .await?;
    rows.iter().map(meta).collect()
}

pub(super) async fn get(
    client: &deadpool_postgres::Object,
    doc: &str,
    id: u64,
) -> Result<Option<StoredVersion>, RecordError> {
    let Ok(id) = i64::try_from(id) else {
        return Ok(None);
    };
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS}, snapshot FROM quire_versions WHERE doc = $1 AND id = $2"),
            &[&doc, &id],
        )
        .await?;
    row.map(|row| {
        Ok(StoredVersion {
            meta: meta(&row)?,
            snapshot: row.try_get(7)?,
        })
    })
    .transpose()
}
