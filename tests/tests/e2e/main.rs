//! End-to-end suite: every test starts the real `quire` binary on
//! `127.0.0.1:0` with its own data directory and talks to it only over
//! WebSocket and HTTP, as a user's program would.
//!
//! One test binary (modules below) keeps link time down. Timeouts are failure
//! guards, never speed assertions.

mod auth;
mod awareness;
mod backup;
mod history;
mod hocuspocus;
mod integrity;
mod limits;
mod malformed;
mod names;
mod ops;
mod persistence;
mod protocol;
mod rest;
mod storage_faults;
mod support;
mod sync;
mod trace;
mod webhooks;
