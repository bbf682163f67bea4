//! Storage that fails under the server: the data directory on a small
//! tmpfs that fills up and is grown again, with real clients typing.
//!
//! These tests run as root (they mount); one that cannot mount fails.

use crate::support::{append, text_update, wait_text, Rest, WAIT};
use anyhow::{bail, ensure, Context, Result};
use quire_client::testing::TestServer;
use quire_client::Status;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs> {
        let dir = tempfile::Builder::new().prefix("quire-tmpfs-").tempdir()?;
        run_mount(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            path_str(dir.path())?,
        ])
        .context("these tests mount a tmpfs and must run as root")?;
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Takes every free byte with a file of zeros.
    fn fill(&self) -> Result<()> {
        let mut file = std::fs::File::create(self.path().join("filler"))?;
        let chunk = vec![0u8; 64 << 10];
        loop {
            if let Err(e) = file.write_all(&chunk) {
                ensure!(
                    e.raw_os_error() == Some(28),
                    "filling the tmpfs: expected ENOSPC, got {e}"
                );
                return Ok(());
            }
        }
    }

    fn grow(&self, size: &str) -> Result<()> {
        run_mount(&[
            "-o",
            &format!("remount,size={size}"),
            path_str(self.path())?,
        ])
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: the server (dropped first) may still be exiting.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("temporary path is not UTF-8")
}

fn run_mount(args: &[&str]) -> Result<()> {
    let out = Command::new("mount").args(args).output()?;
    if !out.status.success() {
        bail!(
            "mount {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Types `c` at the end of text `t`, and remembers it.
fn type_char(client: &quire_client::Client, typed: &mut String, c: char) {
    append(client, "t", &c.to_string());
    typed.push(c);
}

async fn readyz(rest: &Rest) -> Result<u16> {
    Ok(rest.get("/readyz").await?.status().as_u16())
}

#[tokio::test]
async fn a_full_disk_refuses_writes_recovers_without_a_restart_and_loses_nothing() -> Result<()> {
    let fs = Tmpfs::mount("4m")?;
    let mut server = TestServer::start_in(fs.path(), ["--flush-interval-ms", "20"]).await?;
    let rest = Rest::new(&server);
    let doc = "faults/full";
    let mut writer = server.client(doc).await?;
    let reader = server.client(doc).await?;
    let mut typed = String::new();

    for c in "before ".chars() {
        type_char(&writer, &mut typed, c);
    }
    wait_text(&reader, "t", &typed).await?;
    let before = typed.chars().count();

    // The disk fills; the writer types on until storage notices.
    fs.fill()?;
    let filled = Instant::now();
    let mut during = 0;
    while readyz(&rest).await? == 200 {
        ensure!(
            writer.status() == Status::Synced,
            "closed before storage failed"
        );
        type_char(&writer, &mut typed, 'd');
        during += 1;
        ensure!(during < 500, "storage never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed = Instant::now();
    rest.wait_metric("quire_storage_healthy", &[], |v| v == 0.0)
        .await?;

    // Writes are refused: REST with 503 and Retry-After, a WebSocket
    // writer with 1013; reads work.
    let refused = rest
        .post(
            &format!("/api/docs/{}/updates", "faults%2Ffull"),
            text_update("t", "never"),
        )
        .await?;
    ensure!(
        refused.status().as_u16() == 503,
        "REST write got {}",
        refused.status()
    );
    ensure!(
        refused.headers().contains_key("retry-after"),
        "no Retry-After"
    );
    type_char(&writer, &mut typed, 'x');
    let close = writer
        .wait_closed(WAIT)
        .await?
        .context("the writer's connection ended without a close frame")?;
    ensure!(close.code == 1013, "closed with {close:?}");
    ensure!(close.reason.contains("storage unavailable"), "{close:?}");
    ensure!(
        reader.status() == Status::Synced,
        "the reader was closed too"
    );
    let served = rest.get("/api/docs/faults%2Ffull").await?;
    ensure!(
        served.status().is_success(),
        "read refused: {}",
        served.status()
    );

    // Space comes back: no restart.
    tokio::time::sleep(Duration::from_millis(500)).await;
    fs.grow("200m")?;
    let grown = Instant::now();
    let deadline = grown + WAIT;
    while readyz(&rest).await? != 200 {
        ensure!(
            Instant::now() < deadline,
            "still not ready {WAIT:?} after the remount"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = grown.elapsed();
    rest.wait_metric("quire_storage_healthy", &[], |v| v == 1.0)
        .await?;
    rest.wait_metric("quire_storage_failures_total", &[], |v| v == 1.0)
        .await?;

    // The writer reconnects; sync resends what the server refused.
    writer.reconnect().await?;
    writer.wait_synced(WAIT).await?;
    for c in " after".chars() {
        type_char(&writer, &mut typed, c);
    }
    wait_text(&reader, "t", &typed).await?;

    let status = server.terminate().await?;
    ensure!(status.success(), "exit {status:?}\n{}", server.logs());
    server.restart().await?;
    let fresh = server.client(doc).await?;
    ensure!(
        fresh.text("t") == typed,
        "after the restart: {:?}, typed {typed:?}",
        fresh.text("t")
    );

    let logs = server.logs();
    ensure!(
        logs.matches("storage failed").count() == 1,
        "one line when storage fails:\n{logs}"
    );
    ensure!(
        logs.matches("storage recovered").count() == 1,
        "one line when it recovers:\n{logs}"
    );
    eprintln!(
        "typed {} characters ({before} before, {during} while filling, 1 refused, 6 after); \
         failure noticed {:?} after the fill; 503 for {:?}; ready {recovered:?} after the remount",
        typed.chars().count(),
        failed - filled,
        grown + recovered - failed,
    );
    drop(server);
    drop(fs);
    Ok(())
}

#[tokio::test]
async fn with_flush_interval_0_no_client_sees_an_update_the_server_did_not_store() -> Result<()> {
    let fs = Tmpfs::mount("4m")?;
    let mut server = TestServer::start_in(fs.path(), ["--flush-interval-ms", "0"]).await?;
    let doc = "faults/durable";
    let writer = server.client(doc).await?;
    let reader = server.client(doc).await?;
    append(&writer, "t", "ok ");
    wait_text(&reader, "t", "ok ").await?;

    fs.fill()?;
    let mut sent = 0;
    while writer.status() == Status::Synced {
        append(&writer, "t", "y");
        sent += 1;
        ensure!(sent < 500, "no update was ever refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let close = writer
        .close_info()
        .context("closed without a close frame")?;
    ensure!(close.code == 1013, "closed with {close:?}");
    // Whatever was relayed got there by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = reader.text("t");
    ensure!(
        seen.chars().count() < 3 + sent,
        "the reader saw the refused update: {seen:?} of {sent} sent"
    );

    // The server dies before storage comes back: what it had not stored
    // is gone, and no client was shown it.
    server.kill().await?;
    fs.grow("200m")?;
    server.restart().await?;
    let fresh = server.client(doc).await?;
    ensure!(
        fresh.text("t") == seen,
        "stored {:?}, but the reader saw {seen:?}",
        fresh.text("t")
    );
    eprintln!("{sent} updates sent, the reader saw {seen:?}; the restart holds exactly that");
    drop(server);
    drop(fs);
    Ok(())
}

#[tokio::test]
async fn a_shutdown_that_cannot_persist_a_document_names_it_and_exits_non_zero() -> Result<()> {
    let fs = Tmpfs::mount("4m")?;
    let mut server = TestServer::start_in(fs.path(), ["--flush-interval-ms", "20"]).await?;
    let rest = Rest::new(&server);
    let doc = "faults/unsaved";
    let writer = server.client(doc).await?;
    fs.fill()?;
    let mut sent = 0;
    while readyz(&rest).await? == 200 {
        append(&writer, "t", "u");
        sent += 1;
        ensure!(sent < 500, "storage never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still full: the document's last edits cannot be written.
    let status = server.terminate().await?;
    let logs = server.logs();
    ensure!(
        !status.success(),
        "exited 0 with a document unsaved:\n{logs}"
    );
    ensure!(
        logs.lines()
            .any(|l| l.contains("document NOT persisted") && l.contains(doc)),
        "the unsaved document is not named:\n{logs}"
    );
    drop(server);
    drop(fs);
    Ok(())
}
