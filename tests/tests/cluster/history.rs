//! Version history in a cluster with the shared record: versions live in
//! PostgreSQL, so a version recorded on one node is listed and restored on
//! another, and the restore reaches clients everywhere.

use crate::support::{client, eventually, segment, Cluster, Rest, ROOT, WAIT};
use anyhow::{ensure, Context, Result};
use serde_json::Value;
use yrs::{Text, Transact};

const DOC: &str = "history/shared";

fn append(client: &quire_client::Client, chunk: &str) {
    let text = client.doc().get_or_insert_text(ROOT);
    let mut txn = client.doc().transact_mut();
    let end = text.len(&txn);
    text.insert(&mut txn, end, chunk);
}

async fn post(rest: &Rest, path: &str) -> Result<(u16, Value)> {
    let response = rest.post(path, Vec::new()).await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.context("JSON body")?))
}

#[tokio::test]
async fn a_version_made_on_one_node_is_restored_on_another_and_reaches_a_client_of_the_first(
) -> Result<()> {
    let cluster = Cluster::start_recorded(2, &[]).await?;
    let (a, b) = (Rest::new(cluster.node(0)), Rest::new(cluster.node(1)));
    let versions = format!("/api/docs/{}/versions", segment(DOC));
    let writer = client(cluster.node(0), DOC).await?;
    append(&writer, "alpha");
    a.wait_text(DOC, "alpha").await?;
    let (status, v1) = post(&a, &versions).await?;
    ensure!(status == 201, "record on A: {status} {v1}");
    let v1 = v1["id"].as_u64().context("id")?;

    append(&writer, " beta");
    a.wait_text(DOC, "alpha beta").await?;
    // B serves the document as it is now, and lists A's version.
    b.wait_text(DOC, "alpha beta").await?;
    let listed: Value = b.get(&versions).await?.json().await?;
    let ids: Vec<u64> = listed["versions"]
        .as_array()
        .context("versions")?
        .iter()
        .filter_map(|v| v["id"].as_u64())
        .collect();
    assert_eq!(ids, vec![v1], "{listed}");

    let restored = eventually(|| async {
        let (status, body) = post(&b, &format!("{versions}/{v1}/restore")).await?;
        match status {
            201 => Ok(Some(body)),
            // B's copy has not caught up with the version yet.
            503 => Ok(None),
            _ => anyhow::bail!("restore on B: {status} {body}"),
        }
    })
    .await?;
    assert_eq!(restored["trigger"], "restore");
    writer
        .wait_for(WAIT, |doc| crate::support::text_of(doc, ROOT) == "alpha")
        .await
        .with_context(|| format!("A's client has {:?}", writer.text(ROOT)))?;
    // Both nodes list the restore, from the shared record.
    for rest in [&a, &b] {
        let listed: Value = rest.get(&versions).await?.json().await?;
        assert_eq!(listed["versions"][0]["trigger"], "restore", "{listed}");
        assert_eq!(listed["versions"].as_array().map(Vec::len), Some(2));
    }
    Ok(())
}
