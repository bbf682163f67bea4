//! Backups with a shared record (`--postgres-url`): one node's archive holds
//! the documents every node wrote, read through the record.

use crate::support::{eventually, segment, text_of, text_update, Cluster, Rest, ROOT};
use anyhow::{ensure, Context, Result};
use quire_client::testing::archive::documents_of;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Transact, Update};

const DOCUMENTS: usize = 4;

#[tokio::test]
async fn with_postgres_one_nodes_backup_holds_the_documents_every_node_wrote() -> Result<()> {
    // Documents unload soon: the backup reads them from the record, not
    // from an actor.
    let cluster = Cluster::start_recorded(2, &["--idle-unload-secs", "1"]).await?;
    let mut written = Vec::new();
    for i in 0..DOCUMENTS {
        let (doc, text) = (
            format!("backup/doc-{i}"),
            format!("written on node {}", i % 2),
        );
        let path = format!("/api/docs/{}/updates", segment(&doc));
        let status = Rest::new(cluster.node(i % 2))
            .post(&path, text_update(ROOT, &text))
            .await?
            .status();
        ensure!(status.as_u16() == 204, "POST {doc}: {status}");
        written.push((doc, text));
    }
    // Node 0 lists the record: every document once uploaded.
    let rest = Rest::new(cluster.node(0));
    eventually(|| async {
        let listed = rest.get("/api/docs?prefix=backup/").await?.text().await?;
        Ok(written
            .iter()
            .all(|(doc, _)| listed.contains(doc.as_str()))
            .then_some(()))
    })
    .await
    .context("the record never listed every document")?;

    let response = rest.get("/api/backup").await?;
    ensure!(response.status().as_u16() == 200, "{}", response.status());
    let archive = response.bytes().await?;
    let documents = documents_of(&archive)?;
    ensure!(
        documents.len() == DOCUMENTS,
        "{} documents in the backup",
        documents.len()
    );
    for (doc, text) in &written {
        let (_, update) = documents
            .iter()
            .find(|(name, _)| name == doc)
            .with_context(|| format!("{doc} is not in the backup"))?;
        let held = Doc::new();
        held.transact_mut()
            .apply_update(Update::decode_v1(update)?)
            .context("applying the backed-up state")?;
        ensure!(&text_of(&held, ROOT) == text, "{doc} differs in the backup");
    }
    Ok(())
}
