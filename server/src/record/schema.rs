//! The PostgreSQL schema, created and migrated by Quire at first use.
//!
//! Every node runs the migration when it first connects; an advisory lock
//! held for the transaction makes concurrent starts take turns, and
//! `quire_schema` records the version reached. A new version is a new entry
//! in `MIGRATIONS`, never an edit of an old one.

use super::RecordError;

/// Any fixed number: the lock only has to be the same on every node.
const MIGRATION_LOCK: i64 = 0x7175_6972_6501; // "quire", 1

/// Each entry moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: documents and the updates uploaded since their snapshot.
    r#"
    CREATE TABLE quire_docs (
        -- "C": names sort by bytes, as in sled and in listing cursors.
        name text COLLATE "C" PRIMARY KEY,
        -- Every update merged before the rows below (v1), if any, as an
        -- integrated document encodes it, and that document's state vector:
        -- with no rows, a node greets clients from these bytes (cold).
        snapshot bytea,
        state_vector bytea,
        -- Snapshot plus update bytes, for listing.
        bytes bigint NOT NULL DEFAULT 0,
        -- Update rows since the snapshot; compaction starts past a bound.
        pending_rows integer NOT NULL DEFAULT 0,
        updated_at_ms bigint NOT NULL,
        -- Set by a delete: the authority. Updates applied before it are
        -- never uploaded; one applied after it re-creates the document.
        deleted_at_ms bigint
    );
    CREATE TABLE quire_updates (
        doc text COLLATE "C" NOT NULL,
        -- (node_id, node_seq): the spool entry this row came from (the
        -- highest, when a batch merged several), so a retried upload
        -- conflicts and is dropped.
        node_id text NOT NULL,
        node_seq bigint NOT NULL,
        applied_at_ms bigint NOT NULL,
        payload bytea NOT NULL,
        PRIMARY KEY (doc, node_id, node_seq)
    );
    "#,
    // 2: versions of documents (`crate::history`), deleted with them.
    r#"
    CREATE TABLE quire_versions (
        doc text COLLATE "C" NOT NULL,
        -- Per document, one past the highest stored.
        id bigint NOT NULL,
        created_at_ms bigint NOT NULL,
        label text,
        -- auto, unload, manual or restore.
        trigger text NOT NULL,
        -- Connections on the recording node.
        clients integer NOT NULL,
        -- A Yjs snapshot (delete set, state vector), v1.
        snapshot bytea NOT NULL,
        PRIMARY KEY (doc, id)
    );
    "#,
    // 3: the webhook outbox (`crate::record::webhooks`), written in the
    // upload and delete transactions.
    r#"
    -- Documents changed since their last document.updated event: one row
    -- per document, whichever nodes uploaded the changes.
    CREATE TABLE quire_webhook_marks (
        doc text COLLATE "C" PRIMARY KEY,
        first_ms bigint NOT NULL,
        last_ms bigint NOT NULL,
        changes bigint NOT NULL
    );
    -- The state vector of each document's last document.updated event (v1).
    CREATE TABLE quire_webhook_sealed (
        doc text COLLATE "C" PRIMARY KEY,
        state_vector bytea NOT NULL
    );
    -- One row per event and endpoint. next_ms is the next attempt, or the
    -- end of the lease of the node delivering it.
    CREATE TABLE quire_webhook_outbox (
        id bigserial PRIMARY KEY,
        event_id text NOT NULL,
        kind text NOT NULL,
        doc text NOT NULL,
        endpoint text NOT NULL,
        body text NOT NULL,
        created_ms bigint NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_ms bigint NOT NULL,
        last_error text,
        dead boolean NOT NULL DEFAULT false
    );
    -- Claiming, and counting what is pending; listing and counting dead
    -- letters. Both counts are then index-only scans.
    CREATE INDEX quire_webhook_outbox_due ON quire_webhook_outbox (next_ms) WHERE NOT dead;
    CREATE INDEX quire_webhook_outbox_dead ON quire_webhook_outbox (id) WHERE dead;
    "#,
    // 4: who was connected when a version was recorded (token subjects).
    r#"
    ALTER TABLE quire_versions ADD COLUMN users text[] NOT NULL DEFAULT '{}';
    "#,
];

pub(super) async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), RecordError> {
    let txn = client.transaction().await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    txn.batch_execute("CREATE TABLE IF NOT EXISTS quire_schema (version integer NOT NULL)")
        .await?;
    let row = txn
        .query_opt("SELECT version FROM quire_schema", &[])
        .await?;
    let current = match row {
        Some(row) => row.try_get::<_, i32>(0)?,
        None => {
            txn.execute("INSERT INTO quire_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    let known = MIGRATIONS.len() as i32;
    if current > known {
        return Err(RecordError::Corrupt(format!(
            "the schema is at version {current}, newer than this Quire knows ({known})"
        )));
    }
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        txn.batch_execute(migration).await?;
        let reached = version as i32 + 1;
        txn.execute("UPDATE quire_schema SET version = $1", &[&reached])
            .await?;
        tracing::info!(version = reached, "PostgreSQL schema migrated");
    }
    txn.commit().await?;
    Ok(())
}
