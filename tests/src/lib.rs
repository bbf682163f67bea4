//! `quire_client`: a headless client of the y-websocket protocol, and the
//! support code the end-to-end suites use to run the real `quire` binary.
//!
//! # Code map
//!
//! | module | what it holds |
//! |---|---|
//! | [`client`] | [`Client`]: a yrs [`Doc`](yrs::Doc) kept in sync with one document on a server, plus presence |
//! | [`awareness`] | the y-protocols awareness rules as seen from one client |
//! | [`endpoint`] | building `ws://HOST:PORT/ws/{doc}?token=…` URLs |
//! | [`raw`] | [`RawSocket`]: arbitrary frames in, close frames out, for malformed-input tests |
//! | [`hocuspocus`] | [`HocuspocusSocket`](hocuspocus::HocuspocusSocket): raw frames of the Hocuspocus dialect, decoded server frames |
//! | [`testing`] | [`TestServer`](testing::TestServer): starts, signals and restarts the `quire` binary |
//! | [`error`] | [`ClientError`] |
//!
//! Internally, each live connection is a reader task and a writer task
//! (`connection`), sharing state with the [`Client`] handle through
//! `shared`.
//!
//! **Invariant:** updates that arrived from the server are applied under
//! [`REMOTE_ORIGIN`] and never sent back; every other transaction on the
//! client's `Doc` is sent to the server as a sync update.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quire_client::ClientError> {
//! use std::time::Duration;
//! use quire_client::{Client, ClientConfig};
//! use yrs::{GetString, Text, Transact};
//!
//! let mut alice = Client::connect(ClientConfig::new("ws://127.0.0.1:8080", "notes")).await?;
//! alice.wait_synced(Duration::from_secs(10)).await?;
//! let text = alice.doc().get_or_insert_text("content");
//! text.insert(&mut alice.doc().transact_mut(), 0, "hello");
//! alice.set_awareness(serde_json::json!({"user": "alice"})).await?;
//! alice.disconnect().await?;
//! # Ok(()) }
//! ```

pub mod awareness;
pub mod client;
pub mod endpoint;
pub mod error;
pub mod hocuspocus;
pub mod raw;
pub mod testing;

mod connection;
mod shared;

pub use client::{Client, ClientConfig, CloseInfo, Status};
pub use error::ClientError;
pub use raw::{RawFrame, RawSocket};

/// Origin of every transaction that applies data received from the server.
/// The update observer skips transactions with this origin, so nothing the
/// server sent is echoed back to it.
pub const REMOTE_ORIGIN: &str = "quire-client/remote";
