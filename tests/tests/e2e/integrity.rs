//! What Quire keeps beside sled so that a damaged store is never served as
//! whole (issue 12): the node id, and the record of what was durable.

use crate::support::{damage_sled_files, text_update, Rest};
use anyhow::{ensure, Context, Result};
use quire_client::testing::{quire_binary, TestServer};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

pub(crate) const DOCUMENTS: usize = 60;

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
    // Everything of sled's gone: the journal would (rightly) refuse that
    // start, so it goes too; the node id stays.
    remove_all_but(server.data_dir(), &["node-id"])?;
    server.restart().await?;
    assert_eq!(node_id(&server).await?, first);
    Ok(())
}

fn doc(i: usize) -> String {
    format!("damage-{i:02}")
}

/// Writes `DOCUMENTS` documents of about 2 KiB each over REST; each POST
/// answers once its update is durable.
pub(crate) async fn write_documents(rest: &Rest) -> Result<()> {
    for i in 0..DOCUMENTS {
        let body = text_update("content", &format!("document {i}: {}", "x".repeat(2048)));
        let response = rest
            .post(&format!("/api/docs/{}/updates", doc(i)), body)
            .await?;
        ensure!(
            response.status().as_u16() == 204,
            "POST {}: {}",
            doc(i),
            response.status()
        );
    }
    Ok(())
}

/// Runs the binary on `data_dir` until it exits; its status and stderr.
async fn run_to_exit(data_dir: &Path) -> Result<(std::process::ExitStatus, String)> {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(quire_binary().await?)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("NO_COLOR", "1")
            // The message as an operator sees it, without anyhow's backtrace.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("quire kept running on a damaged store")??;
    Ok((
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn a_damaged_store_is_refused_then_served_only_when_the_loss_is_accepted() -> Result<()> {
    let mut server = TestServer::start().await?;
    let rest = Rest::new(&server);
    write_documents(&rest).await?;
    ensure!(server.terminate().await?.success(), "clean stop");
    let overwritten = damage_sled_files(server.data_dir())?;
    ensure!(overwritten > 0, "sled's files are too small to damage");

    let (status, stderr) = run_to_exit(server.data_dir()).await?;
    ensure!(!status.success(), "started on a damaged store:\n{stderr}");
    let refusal = stderr
        .lines()
        .find(|line| line.contains("lost acknowledged writes"))
        .with_context(|| format!("no refusal in:\n{stderr}"))?;
    assert!(
        refusal.contains(&server.data_dir().display().to_string()),
        "{refusal}"
    );
    assert!(refusal.contains("--accept-data-loss"), "{refusal}");
    // One line, said once.
    assert_eq!(
        stderr.matches("lost acknowledged writes").count(),
        1,
        "{stderr}"
    );
    eprintln!("refusal: {refusal}");

    server.set_extra_args(["--accept-data-loss"]);
    server.restart().await?;
    assert_eq!(rest.get("/readyz").await?.status().as_u16(), 200);
    let logs = server.logs();
    assert!(logs.contains("starting with what survived"), "{logs}");
    let mut survived = 0;
    for i in 0..DOCUMENTS {
        let status = rest.get(&format!("/api/docs/{}", doc(i))).await?.status();
        if status.as_u16() == 200 {
            survived += 1;
        } else {
            // Every lost document is named in the log.
            assert!(logs.contains(&doc(i)), "{} lost without a word", doc(i));
        }
    }
    eprintln!("{survived} of {DOCUMENTS} documents survived; {overwritten} blocks overwritten");

    // What survived is the new baseline: the next start is clean.
    ensure!(server.terminate().await?.success(), "clean stop");
    server.set_extra_args::<[&str; 0], &str>([]);
    server.restart().await?;
    assert_eq!(rest.get("/readyz").await?.status().as_u16(), 200);
    Ok(())
}

#[tokio::test]
async fn a_clean_restart_raises_no_alarm() -> Result<()> {
    let mut server = TestServer::start().await?;
    let rest = Rest::new(&server);
    write_documents(&rest).await?;
    ensure!(server.terminate().await?.success(), "clean stop");
    server.restart().await?;
    assert_eq!(rest.get("/readyz").await?.status().as_u16(), 200);
    for i in [0, DOCUMENTS - 1] {
        assert_eq!(
            rest.get(&format!("/api/docs/{}", doc(i)))
                .await?
                .status()
                .as_u16(),
            200
        );
    }
    Ok(())
}

#[tokio::test]
async fn kill_9_in_the_middle_of_writes_is_not_a_loss() -> Result<()> {
    // A torn tail of writes never acknowledged is not a loss: only what
    // the journal says was durable counts.
    let mut server = TestServer::start_with(["--flush-interval-ms", "2"]).await?;
    let rest = Rest::new(&server);
    let url = server.http_url("");
    let writer = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut acknowledged = Vec::new();
        for i in 0.. {
            let body = text_update("content", &format!("write {i}"));
            match http
                .post(format!("{url}/api/docs/torn-{}/updates", i % 20))
                .header("content-type", "application/octet-stream")
                .body(body)
                .send()
                .await
            {
                Ok(response) if response.status().as_u16() == 204 => acknowledged.push(i),
                _ => break,
            }
        }
        acknowledged
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill().await?;
    let acknowledged = writer.await?;
    ensure!(
        acknowledged.len() > 20,
        "only {} writes before the kill",
        acknowledged.len()
    );
    server.restart().await?;
    assert_eq!(rest.get("/readyz").await?.status().as_u16(), 200);
    assert!(!server.logs().contains("LOST"), "{}", server.logs());
    for doc in 0..20 {
        let status = rest.get(&format!("/api/docs/torn-{doc}")).await?.status();
        assert_eq!(status.as_u16(), 200, "torn-{doc}");
    }
    Ok(())
}
