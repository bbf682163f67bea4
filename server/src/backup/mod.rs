//! Backups an operator can trust (issue 12): an online, consistent
//! archive of every document, and offline restore and check.
//!
//! - `http.rs`: `GET /api/backup`, the archive streamed from a live server.
//! - `tarball.rs`: the tar framing, written and read.
//! - `manifest.rs`: `manifest.json` and what an archive must satisfy against it (pure).
//! - `archive.rs`: reading and verifying an archive file.
//! - `restore.rs`: `quire restore`, into an empty data directory, verified first.
//! - `check.rs`: `quire check --data-dir`, a stopped server's data directory.
//!
//! The archive format is described once, in docs/operations.md ("Backups").

pub mod archive;
pub mod check;
pub mod http;
pub mod manifest;
pub mod restore;
pub mod tarball;
