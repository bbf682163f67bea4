//! Storage that fails under the server, with real clients typing, in two
//! ways: the data directory on a small tmpfs that fills up and is grown
//! again (ENOSPC), and the process's file-size limit lowered to nothing and
//! raised again with prlimit(1) (EFBIG, an I/O error other than a full
//! disk: every write to a file fails, as on a failing device, while reads
//! work).
//!
//! These tests run as root (they mount, and change another process's
//! limits); one that cannot fails.

use crate::support::{append, text_update, wait_text, Rest, WAIT};
use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use quire_client::testing::{TestServer, WebhookReceiver};
use quire_client::Status;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Transact};

/// How a test breaks the server's storage while it runs, and mends it.
enum Fault {
    /// ENOSPC: the data directory's tmpfs is filled, then grown.
    DiskFull(Tmpfs),
    /// EFBIG: the server's soft RLIMIT_FSIZE becomes 0, then unlimited.
    FileSizeLimit(TempDir),
}

impl Fault {
    fn disk_full() -> Result<Fault> {
        Ok(Fault::DiskFull(Tmpfs::mount("4m")?))
    }

    fn file_size_limit() -> Result<Fault> {
        Ok(Fault::FileSizeLimit(
            tempfile::Builder::new().prefix("quire-fsize-").tempdir()?,
        ))
    }

    /// Where the server's data directory goes.
    fn parent(&self) -> &Path {
        match self {
            Fault::DiskFull(fs) => fs.path(),
            Fault::FileSizeLimit(dir) => dir.path(),
        }
    }

    /// The operating system's words for the error, in the server's log.
    fn error(&self) -> &'static str {
        match self {
            Fault::DiskFull(_) => "No space left on device",
            Fault::FileSizeLimit(_) => "File too large",
        }
    }

    fn inject(&self, server: &TestServer) -> Result<()> {
        match self {
            Fault::DiskFull(fs) => fs.fill(),
            Fault::FileSizeLimit(_) => set_file_size_limit(server, "0:unlimited"),
        }
    }

    /// Mends the fault. A server that is not running has nothing to mend
    /// for the file-size limit: the next process starts with its own.
    fn mend(&self, server: &TestServer) -> Result<()> {
        match self {
            Fault::DiskFull(fs) => fs.grow("200m"),
            Fault::FileSizeLimit(_) if !server.is_running() => Ok(()),
            Fault::FileSizeLimit(_) => set_file_size_limit(server, "unlimited:unlimited"),
        }
    }
}

fn set_file_size_limit(server: &TestServer, soft_hard: &str) -> Result<()> {
    let pid = server.pid().context("the server is not running")?;
    let out = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--fsize={soft_hard}"))
        .output()
        .context("prlimit (util-linux) is required")?;
    ensure!(
        out.status.success(),
        "prlimit --fsize={soft_hard}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

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

/// The tests' waits on `/readyz`: until it answers `want`, within `WAIT`.
async fn wait_ready(rest: &Rest, want: u16, since: &str) -> Result<Duration> {
    let started = Instant::now();
    while readyz(rest).await? != want {
        ensure!(
            started.elapsed() < WAIT,
            "/readyz never answered {want} within {WAIT:?} {since}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

/// Live providers type before, during and after a storage fault; the server
/// refuses what it cannot store, recovers without a restart, and after a
/// SIGTERM restart holds every character.
async fn refuses_writes_recovers_without_a_restart_and_loses_nothing(fault: Fault) -> Result<()> {
    let mut server = TestServer::start_in(
        fault.parent(),
        ["--flush-interval-ms", "20", "--idle-unload-secs", "1"],
    )
    .await?;
    let rest = Rest::new(&server);
    // A document that is on disk but not in memory when storage fails.
    let cold = rest
        .post("/api/docs/faults%2Fcold/updates", text_update("t", "cold"))
        .await?;
    ensure!(cold.status().is_success(), "seeding: {}", cold.status());
    let doc = "faults/live";
    let mut writer = server.client(doc).await?;
    let reader = server.client(doc).await?;
    rest.wait_metric("quire_documents_loaded", &[], |v| v == 1.0)
        .await?;
    let mut typed = String::new();

    for c in "before ".chars() {
        type_char(&writer, &mut typed, c);
    }
    wait_text(&reader, "t", &typed).await?;
    let before = typed.chars().count();

    // Storage breaks; the writer types on until the server notices.
    fault.inject(&server)?;
    let broken = Instant::now();
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
        .post("/api/docs/faults%2Flive/updates", text_update("t", "never"))
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
    let served = rest.get("/api/docs/faults%2Flive").await?;
    ensure!(
        served.status().is_success(),
        "read of a loaded document refused: {}",
        served.status()
    );
    // A document that must be read from storage is served if storage can
    // still read, or refused with a retry; never an internal error.
    let cold = rest
        .get("/api/docs/faults%2Fcold/snapshot?format=text&root=t")
        .await?;
    let status = cold.status().as_u16();
    ensure!(
        status == 200 || (status == 503 && cold.headers().contains_key("retry-after")),
        "reading an unloaded document while storage fails: {status} {}",
        cold.text().await?
    );

    // Storage comes back: no restart.
    tokio::time::sleep(Duration::from_millis(500)).await;
    fault.mend(&server)?;
    let recovered = wait_ready(&rest, 200, "after the fault was mended").await?;
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
        logs.lines()
            .any(|l| l.contains("storage failed") && l.contains(fault.error())),
        "the failure line does not say {:?}:\n{logs}",
        fault.error()
    );
    ensure!(
        logs.matches("storage recovered").count() == 1,
        "one line when it recovers:\n{logs}"
    );
    eprintln!(
        "typed {} characters ({before} before, {during} while failing, 1 refused, 6 after); \
         failure noticed {:?} after the fault; ready {recovered:?} after it was mended; \
         unloaded document read while failing: {status}",
        typed.chars().count(),
        failed - broken,
    );
    drop(server);
    drop(fault);
    Ok(())
}

#[tokio::test]
async fn a_full_disk_refuses_writes_recovers_without_a_restart_and_loses_nothing() -> Result<()> {
    refuses_writes_recovers_without_a_restart_and_loses_nothing(Fault::disk_full()?).await
}

#[tokio::test]
async fn failing_writes_refuse_writes_recover_without_a_restart_and_lose_nothing() -> Result<()> {
    refuses_writes_recovers_without_a_restart_and_loses_nothing(Fault::file_size_limit()?).await
}

/// Ready again means on disk again: what the server applied while its
/// writes failed is written before `/readyz` answers 200, so a kill -9 at
/// that moment loses none of it.
async fn ready_again_means_every_loaded_document_is_on_disk(fault: Fault) -> Result<()> {
    let mut server = TestServer::start_in(fault.parent(), ["--flush-interval-ms", "20"]).await?;
    let rest = Rest::new(&server);
    let doc = "faults/ready";
    let writer = server.client(doc).await?;
    let reader = server.client(doc).await?;
    append(&writer, "t", "on disk ");
    wait_text(&reader, "t", "on disk ").await?;

    // Relayed but not stored: the group commit that would write them fails.
    fault.inject(&server)?;
    let mut sent = 0;
    while readyz(&rest).await? == 200 {
        append(&writer, "t", "m");
        sent += 1;
        ensure!(sent < 500, "storage never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What the server holds in memory, as the reader was shown it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = reader.text("t");
    drop(writer);
    drop(reader);

    fault.mend(&server)?;
    wait_ready(&rest, 200, "after the fault was mended").await?;
    server.kill().await?;
    server.restart().await?;
    let fresh = server.client(doc).await?;
    ensure!(
        fresh.text("t") == held,
        "after kill -9 at ready: {:?}, the server held {held:?}",
        fresh.text("t")
    );
    eprintln!("{sent} updates while failing; {held:?} survived a kill -9 at ready");
    drop(server);
    drop(fault);
    Ok(())
}

#[tokio::test]
async fn after_a_full_disk_ready_again_means_on_disk_again() -> Result<()> {
    ready_again_means_every_loaded_document_is_on_disk(Fault::disk_full()?).await
}

#[tokio::test]
async fn after_failing_writes_ready_again_means_on_disk_again() -> Result<()> {
    ready_again_means_every_loaded_document_is_on_disk(Fault::file_size_limit()?).await
}

/// With `--flush-interval-ms 0` an update is relayed only once it is on
/// disk: when storage fails, no client is shown what was not stored.
async fn with_flush_interval_0_no_client_sees_an_unstored_update(fault: Fault) -> Result<()> {
    let mut server = TestServer::start_in(fault.parent(), ["--flush-interval-ms", "0"]).await?;
    let doc = "faults/durable";
    let writer = server.client(doc).await?;
    let reader = server.client(doc).await?;
    append(&writer, "t", "ok ");
    wait_text(&reader, "t", "ok ").await?;

    fault.inject(&server)?;
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

    // The server dies before storage comes back: everything a client was
    // shown is stored. The store may hold more: a write whose flush
    // reported failure can still have reached the disk; its sender was
    // refused (1013) and hands it back anyway, and nobody was shown it.
    server.kill().await?;
    fault.mend(&server)?;
    server.restart().await?;
    let fresh = server.client(doc).await?;
    let stored = fresh.text("t");
    ensure!(
        stored.starts_with(&seen),
        "the reader saw {seen:?}, but only {stored:?} is stored"
    );
    eprintln!("{sent} updates sent, the reader saw {seen:?}; the restart holds {stored:?}");
    drop(server);
    drop(fault);
    Ok(())
}

#[tokio::test]
async fn with_flush_interval_0_and_a_full_disk_no_client_sees_an_update_the_server_did_not_store(
) -> Result<()> {
    with_flush_interval_0_no_client_sees_an_unstored_update(Fault::disk_full()?).await
}

#[tokio::test]
async fn with_flush_interval_0_and_failing_writes_no_client_sees_an_update_the_server_did_not_store(
) -> Result<()> {
    with_flush_interval_0_no_client_sees_an_unstored_update(Fault::file_size_limit()?).await
}

/// With webhooks, the changes around a storage failure are all told: the
/// ones whose write failed (the server kept them in memory) reach the
/// receiver once the document's whole state is stored again.
async fn webhooks_tell_of_every_change_made_around_a_storage_failure(fault: Fault) -> Result<()> {
    let receiver = WebhookReceiver::start().await?;
    let url = receiver.url();
    let server = TestServer::start_in(
        fault.parent(),
        [
            "--flush-interval-ms",
            "20",
            "--webhook-url",
            &url,
            "--webhook-secret",
            "s",
            "--webhook-debounce-ms",
            "300",
        ],
    )
    .await?;
    let rest = Rest::new(&server);
    let writer = server.client("faults/told").await?;
    let reader = server.client("faults/told").await?;
    let mut typed = String::new();
    for c in "before ".chars() {
        type_char(&writer, &mut typed, c);
    }
    wait_text(&reader, "t", &typed).await?;

    // The writer types until the server notices the fault: what it typed
    // last went with the write that failed.
    fault.inject(&server)?;
    let mut during = 0;
    while readyz(&rest).await? == 200 {
        type_char(&writer, &mut typed, 'd');
        during += 1;
        ensure!(during < 500, "storage never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    fault.mend(&server)?;
    wait_ready(&rest, 200, "after the fault was mended").await?;

    // The last document.updated carries the state the server holds.
    let held = rest.doc("faults/told").await?;
    let held_sv = held.transact().state_vector();
    receiver
        .wait_for(Duration::from_secs(30), |all| {
            all.iter()
                .rfind(|r| r.kind() == "document.updated")
                .and_then(|r| r.event["data"]["state_vector"].as_str().map(str::to_owned))
                .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                .and_then(|bytes| StateVector::decode_v1(&bytes).ok())
                .is_some_and(|sv| sv == held_sv)
        })
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("typed {during} characters while storage failed"))?;
    drop(server);
    drop(fault);
    Ok(())
}

#[tokio::test]
async fn webhooks_tell_of_every_change_made_around_a_full_disk() -> Result<()> {
    webhooks_tell_of_every_change_made_around_a_storage_failure(Fault::disk_full()?).await
}

#[tokio::test]
async fn webhooks_tell_of_every_change_made_around_failing_writes() -> Result<()> {
    webhooks_tell_of_every_change_made_around_a_storage_failure(Fault::file_size_limit()?).await
}

#[tokio::test]
async fn a_shutdown_that_cannot_persist_a_document_names_it_and_exits_non_zero() -> Result<()> {
    let fault = Fault::disk_full()?;
    let mut server = TestServer::start_in(fault.parent(), ["--flush-interval-ms", "20"]).await?;
    let rest = Rest::new(&server);
    let doc = "faults/unsaved";
    let writer = server.client(doc).await?;
    fault.inject(&server)?;
    let mut sent = 0;
    while readyz(&rest).await? == 200 {
        append(&writer, "t", "u");
        sent += 1;
        ensure!(sent < 500, "storage never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still failing: the document's last edits cannot be written.
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
    drop(fault);
    Ok(())
}
