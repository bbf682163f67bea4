//! What Quire keeps beside sled so that a damaged store is never served as
//! whole (issue 12): the node id, and the record of what was durable.

use crate::support::Rest;
use anyhow::{ensure, Context, Result};
use quire_client::testing::TestServer;
use serde_json::Value;
use std::path::Path;

/// The node id `/readyz` reports.
async fn node_id(server: &TestServer) -> Result<String> {
    let ready: Value = Rest::new(server).get("/readyz").await?.json().await?;
    Ok(ready["node_id"].as_str().context("node_id")?.to_owned())
}

/// Removes every file and directory in `dir` but those named in `keep`.
fn remove_all_but(dir: &Path, keep: &[&str]) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if keep.iter().any(|k| entry.file_name() == *k) {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_node_id_survives_a_restart_and_the_loss_of_the_sled_files() -> Result<()> {
    let mut server = TestServer::start().await?;
    let first = node_id(&server).await?;
    let kept = std::fs::read_to_string(server.data_dir().join("node-id"))?;
    assert_eq!(kept.trim(), first);

    ensure!(server.terminate().await?.success(), "clean stop");
    server.restart().await?;
    assert_eq!(node_id(&server).await?, first);

    ensure!(server.terminate().await?.success(), "clean stop");
    remove_all_but(server.data_dir(), &["node-id"])?;
    server.restart().await?;
    assert_eq!(node_id(&server).await?, first);
    Ok(())
}
