//! Backups an operator can trust (issue 12): `GET /api/backup` while
//! clients type, `quire check` and `quire restore` on what it wrote, and
//! on archives that are damaged, cut short, or pointed at the wrong place.

use crate::support::{append, damage_sled_files, decode_sv, eventually, text_update, Rest, WAIT};
use anyhow::{ensure, Context, Result};
use quire_client::testing::archive::{manifest_of, tar_entries};
use quire_client::testing::{quire_binary, TestServer};
use quire_client::Client;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ADMIN: &str = "e2e-backup-admin";
/// Typed into by every client, each into its own root text.
const TYPED: [&str; 4] = ["notes/a", "notes/b", "plain", "deep/x/y"];
/// Written once over REST and left to unload: stored, not loaded.
const COLD: [&str; 2] = ["cold/1", "cold/2"];
const CLIENTS: usize = 3;
/// Documents of 4 MiB each, for a backup that outlasts its client.
const BIG_DOCUMENTS: usize = 4;

fn root(client: usize) -> String {
    format!("c{client}")
}

/// `GET /api/backup` with the admin token; the whole archive.
async fn take_backup(server: &TestServer) -> Result<Vec<u8>> {
    let response = Rest::with_token(server, ADMIN).get("/api/backup").await?;
    let status = response.status().as_u16();
    let kind = crate::support::content_type(&response);
    let body = response.bytes().await?.to_vec();
    ensure!(
        status == 200,
        "GET /api/backup: {status} {}",
        String::from_utf8_lossy(&body)
    );
    ensure!(kind == "application/x-tar", "content-type {kind}");
    Ok(body)
}

/// Document name → manifest entry.
fn documents_of(manifest: &Value) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for doc in manifest["documents"].as_array().context("documents")? {
        let name = doc["name"].as_str().context("name")?.to_owned();
        out.insert(name, doc.clone());
    }
    Ok(out)
}

/// `quire ARGS…` to its exit: whether it succeeded, and what it printed.
async fn quire(args: &[&OsStr]) -> Result<(bool, String)> {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(quire_binary().await?)
            .args(args)
            .env("NO_COLOR", "1")
            // The message as an operator sees it, without anyhow's backtrace.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("quire {args:?} did not exit"))??;
    Ok((
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    ))
}

async fn check_archive(archive: &Path) -> Result<(bool, String)> {
    quire(&["check".as_ref(), "--archive".as_ref(), archive.as_os_str()]).await
}

async fn check_data_dir(data_dir: &Path) -> Result<(bool, String)> {
    quire(&[
        "check".as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
    ])
    .await
}

async fn restore(archive: &Path, data_dir: &Path) -> Result<(bool, String)> {
    quire(&[
        "restore".as_ref(),
        "--archive".as_ref(),
        archive.as_os_str(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
    ])
    .await
}

/// Text each client typed into each document, by (client, document).
type Typed = Arc<Mutex<BTreeMap<(usize, String), String>>>;

fn typed_now(typed: &Typed) -> Result<BTreeMap<(usize, String), String>> {
    Ok(typed
        .lock()
        .map_err(|_| anyhow::anyhow!("a typist panicked"))?
        .clone())
}

/// Client `user` types a token into its own root of each of its
/// documents every 10 ms until `stop`; every token is remembered.
async fn type_until_stopped(
    user: usize,
    clients: Vec<(String, Client)>,
    stop: Arc<AtomicBool>,
    typed: Typed,
) -> Result<Vec<(String, Client)>> {
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        for (doc, client) in &clients {
            let token = format!("u{user}-{n} ");
            append(client, &root(user), &token);
            typed
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .entry((user, doc.clone()))
                .or_default()
                .push_str(&token);
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(clients)
}

#[tokio::test]
async fn a_backup_taken_while_three_clients_type_restores_every_token_they_had_before_it(
) -> Result<()> {
    let mut server =
        TestServer::start_with(["--admin-token", ADMIN, "--idle-unload-secs", "1"]).await?;
    let admin = Rest::with_token(&server, ADMIN);
    for doc in COLD {
        let body = text_update("content", &format!("cold {doc}"));
        let path = format!("/api/docs/{}/updates", crate::support::segment(doc));
        ensure!(admin.post(&path, body).await?.status().as_u16() == 204);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let typed: Typed = Arc::default();
    let mut typists = Vec::new();
    for user in 0..CLIENTS {
        let mut clients = Vec::new();
        for doc in TYPED {
            clients.push((doc.to_owned(), server.client(doc).await?));
        }
        typists.push(tokio::spawn(type_until_stopped(
            user,
            clients,
            stop.clone(),
            typed.clone(),
        )));
    }
    // Typing for a while, and the REST-written documents unloaded: the
    // backup reads those from storage, the others from their actors.
    eventually(|| async {
        let now = typed_now(&typed)?;
        let enough = now.len() == CLIENTS * TYPED.len()
            && now.values().all(|t| t.split_whitespace().count() >= 20);
        Ok(enough.then_some(()))
    })
    .await?;
    admin
        .wait_metric("quire_documents_loaded", &[], |v| v == TYPED.len() as f64)
        .await?;

    // What every client had acknowledged before the backup started: all
    // it typed so far, once the server holds it. Typing goes on.
    let recorded = typed_now(&typed)?;
    for ((user, doc), text) in &recorded {
        eventually(|| async {
            let held = admin.text(doc, &root(*user)).await;
            Ok(matches!(held, Ok(t) if t.starts_with(text.as_str())).then_some(()))
        })
        .await
        .with_context(|| format!("server never held what client {user} typed into {doc}"))?;
    }
    let archive = take_backup(&server).await?;
    stop.store(true, Ordering::Release);
    for typist in typists {
        let clients = typist.await??;
        ensure!(clients.len() == TYPED.len());
    }
    ensure!(server.terminate().await?.success(), "clean stop");

    let work = tempfile::tempdir()?;
    let file = work.path().join("backup.tar");
    std::fs::write(&file, &archive)?;
    let (ok, out) = check_archive(&file).await?;
    ensure!(ok, "quire check --archive failed: {out}");
    let manifest = manifest_of(&archive)?;
    let documents = documents_of(&manifest)?;
    let mut expected: Vec<&str> = TYPED.iter().chain(&COLD).copied().collect();
    expected.sort_unstable();
    assert_eq!(documents.keys().collect::<Vec<_>>(), expected);

    let data = tempfile::Builder::new()
        .prefix("quire-restored-")
        .tempdir()?;
    let (ok, out) = restore(&file, data.path()).await?;
    ensure!(ok, "quire restore failed: {out}");
    ensure!(
        out.contains(&format!("restored {} document(s)", expected.len())),
        "{out}"
    );
    let (ok, out) = check_data_dir(data.path()).await?;
    ensure!(ok, "the restored data dir fails its check: {out}");
    let restored = TestServer::start_on(data, ["--admin-token", ADMIN]).await?;
    let rest = Rest::with_token(&restored, ADMIN);

    let listed: Value = rest.get("/api/docs").await?.json().await?;
    let names: Vec<&str> = listed["docs"]
        .as_array()
        .context("docs")?
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, expected, "every document is listed");
    for (name, entry) in &documents {
        let path = format!("/api/docs/{}", crate::support::segment(name));
        let info: Value = rest.get(&path).await?.json().await?;
        let held = decode_sv(info["state_vector"].as_str().context("state_vector")?)?;
        let backed_up = decode_sv(entry["state_vector"].as_str().context("state_vector")?)?;
        assert_eq!(held, backed_up, "state vector of {name}");
    }
    for ((user, doc), text) in &recorded {
        let held = rest.text(doc, &root(*user)).await?;
        ensure!(
            held.starts_with(text.as_str()),
            "client {user}'s text in {doc} lost tokens: typed before the backup {text:?}, restored {held:?}"
        );
    }
    for doc in COLD {
        assert_eq!(rest.text(doc, "content").await?, format!("cold {doc}"));
    }
    // A copy of a node is not that node.
    let ready: Value = rest.get("/readyz").await?.json().await?;
    assert_ne!(ready["node_id"], manifest["node_id"]);
    Ok(())
}

/// A server holding `docs`, each with a little text, and its backup.
async fn backup_of(docs: &[&str]) -> Result<(TestServer, Vec<u8>)> {
    let server = TestServer::start_with(["--admin-token", ADMIN]).await?;
    let admin = Rest::with_token(&server, ADMIN);
    for doc in docs {
        let body = text_update("content", &format!("{doc}: {}", "x".repeat(600)));
        let path = format!("/api/docs/{}/updates", crate::support::segment(doc));
        ensure!(admin.post(&path, body).await?.status().as_u16() == 204);
    }
    let archive = take_backup(&server).await?;
    Ok((server, archive))
}

#[tokio::test]
async fn an_archive_with_one_flipped_byte_fails_its_check_naming_the_document_and_is_not_restored(
) -> Result<()> {
    let (_server, mut archive) = backup_of(&["flip/a", "flip/b", "flip/c"]).await?;
    let documents = documents_of(&manifest_of(&archive)?)?;
    let entries = tar_entries(&archive)?;
    let (file, range) = &entries[1];
    let damaged = documents
        .iter()
        .find(|(_, entry)| entry["file"] == file.as_str())
        .map(|(name, _)| name.clone())
        .context("second file not in the manifest")?;
    archive[range.start + range.len() / 2] ^= 0x01;

    let work = tempfile::tempdir()?;
    let path = work.path().join("flipped.tar");
    std::fs::write(&path, &archive)?;
    let (ok, out) = check_archive(&path).await?;
    ensure!(!ok, "a damaged archive passed its check: {out}");
    ensure!(
        out.contains(&format!("document {damaged:?}")) && out.contains("SHA-256"),
        "the check does not name {damaged}: {out}"
    );
    for (name, _) in documents.iter().filter(|(name, _)| **name != damaged) {
        ensure!(!out.contains(&format!("{name:?}")), "{name} blamed: {out}");
    }

    let target = work.path().join("restored");
    let (ok, out) = restore(&path, &target).await?;
    ensure!(!ok, "a damaged archive was restored: {out}");
    ensure!(out.contains(&format!("document {damaged:?}")), "{out}");
    ensure!(!target.exists(), "restore wrote {}", target.display());
    Ok(())
}

#[tokio::test]
async fn an_archive_cut_short_has_no_manifest_and_is_refused_by_check_and_restore() -> Result<()> {
    let (_server, archive) = backup_of(&["cut/a", "cut/b"]).await?;
    let entries = tar_entries(&archive)?;
    let manifest_header = entries.last().context("entries")?.1.start - 512;
    let work = tempfile::tempdir()?;
    for (case, cut) in [
        ("inside a snapshot", entries[0].1.start + 10),
        ("before the manifest", manifest_header),
        ("inside the manifest", manifest_header + 600),
    ] {
        let path = work.path().join("cut.tar");
        std::fs::write(&path, &archive[..cut])?;
        let (ok, out) = check_archive(&path).await?;
        ensure!(!ok, "{case}: passed its check: {out}");
        ensure!(out.contains("no manifest.json"), "{case}: {out}");
        let target = work.path().join("restored");
        let (ok, out) = restore(&path, &target).await?;
        ensure!(!ok, "{case}: restored: {out}");
        ensure!(out.contains("no manifest.json"), "{case}: {out}");
        ensure!(
            !target.exists(),
            "{case}: restore wrote {}",
            target.display()
        );
    }
    Ok(())
}

#[tokio::test]
async fn restore_refuses_a_data_dir_that_is_not_empty() -> Result<()> {
    let (_server, archive) = backup_of(&["full/a"]).await?;
    let work = tempfile::tempdir()?;
    let path = work.path().join("backup.tar");
    std::fs::write(&path, &archive)?;
    let target = work.path().join("data");
    std::fs::create_dir(&target)?;
    std::fs::write(target.join("keep-me"), b"precious")?;

    let (ok, out) = restore(&path, &target).await?;
    ensure!(!ok, "restored into a non-empty directory: {out}");
    ensure!(out.contains("is not empty"), "{out}");
    let left: Vec<_> = std::fs::read_dir(&target)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(left, ["keep-me"]);
    assert_eq!(std::fs::read(target.join("keep-me"))?, b"precious");
    Ok(())
}

#[tokio::test]
async fn check_passes_a_good_data_dir_and_fails_one_whose_sled_files_were_damaged() -> Result<()> {
    let mut server = TestServer::start().await?;
    crate::integrity::write_documents(&Rest::new(&server)).await?;
    ensure!(server.terminate().await?.success(), "clean stop");

    let (ok, out) = check_data_dir(server.data_dir()).await?;
    ensure!(ok, "a good data dir failed its check: {out}");
    ensure!(
        out.contains(&format!("{} document(s)", crate::integrity::DOCUMENTS)),
        "{out}"
    );

    ensure!(damage_sled_files(server.data_dir())? > 0, "nothing damaged");
    let (ok, out) = check_data_dir(server.data_dir()).await?;
    ensure!(!ok, "a damaged data dir passed its check: {out}");
    // Where the garbage lands decides what sled makes of it: everything
    // after the first bad record dropped (the journal tells), or records
    // it can no longer read (listing or loading them tells). Each is named.
    let named = [
        "lost acknowledged writes",
        "does not load",
        "cannot read",
        "cannot open the sled database",
    ];
    ensure!(named.iter().any(|problem| out.contains(problem)), "{out}");
    Ok(())
}

#[tokio::test]
async fn the_backup_route_is_for_the_admin_token_only_refused_in_json() -> Result<()> {
    let server =
        TestServer::start_with(["--auth-secret", "e2e-backup-secret", "--admin-token", ADMIN])
            .await?;
    let minted: Value = Rest::with_token(&server, ADMIN)
        .post_json(
            "/api/tokens",
            &serde_json::json!({"docs": ["*"], "scope": "write", "ttl_secs": 600, "sub": "e2e"}),
        )
        .await?
        .json()
        .await?;
    let write_token = minted["token"].as_str().context("token")?;
    for (who, rest, expected) in [
        ("without a token", Rest::new(&server), 401),
        (
            "with a garbage token",
            Rest::with_token(&server, "garbage"),
            401,
        ),
        (
            "with a write token",
            Rest::with_token(&server, write_token),
            403,
        ),
    ] {
        let response = rest.get("/api/backup").await?;
        let status = response.status().as_u16();
        let kind = crate::support::content_type(&response);
        let body: Value = response.json().await?;
        ensure!(status == expected, "{who}: {status}, expected {expected}");
        ensure!(kind.starts_with("application/json"), "{who}: {kind}");
        ensure!(body["error"].is_string(), "{who}: {body}");
    }
    let within = tokio::time::timeout(WAIT, take_backup(&server)).await;
    ensure!(
        matches!(within, Ok(Ok(_))),
        "the admin token gets the archive"
    );
    Ok(())
}

#[tokio::test]
async fn a_backup_whose_client_leaves_midway_is_counted_failed_and_the_next_one_is_whole(
) -> Result<()> {
    // No compaction while writing: the debug build takes seconds per one.
    let server =
        TestServer::start_with(["--admin-token", ADMIN, "--compact-log-bytes", "1000000000"])
            .await?;
    let admin = Rest::with_token(&server, ADMIN);
    // 16 MiB: far more than the server's channel (2 MiB) and the socket
    // buffers hold, so the server is still writing when the client goes.
    for i in 0..BIG_DOCUMENTS {
        let body = text_update("content", &"z".repeat(4 << 20));
        let path = format!("/api/docs/big-{i}/updates");
        ensure!(admin.post(&path, body).await?.status().as_u16() == 204);
    }
    let mut response = admin.get("/api/backup").await?;
    ensure!(response.status().as_u16() == 200);
    ensure!(response.chunk().await?.is_some(), "the archive starts");
    drop(response);
    admin
        .wait_metric("quire_backups_total", &[("result", "failed")], |v| v == 1.0)
        .await?;
    eventually(|| async { Ok(server.logs().contains("backup aborted after").then_some(())) })
        .await?;

    let archive = take_backup(&server).await?;
    assert_eq!(documents_of(&manifest_of(&archive)?)?.len(), BIG_DOCUMENTS);
    admin
        .wait_metric("quire_backups_total", &[("result", "written")], |v| {
            v == 1.0
        })
        .await?;
    Ok(())
}
