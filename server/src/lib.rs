//! The `quire` server: axum HTTP + WebSocket, one actor per loaded document,
//! sled storage.
//!
//! Module map: [`config`] (flags), [`server`] (wiring and shutdown), [`ws`]
//! (y-websocket endpoint), [`rest`] (REST API), [`doc`] (registry and
//! document actors), [`store`] (sled), [`names`] (document names).

pub mod auth;
pub mod backup;
pub mod cluster;
pub mod config;
pub mod datadir;
pub mod doc;
pub mod error;
pub mod extract;
pub mod fdlimit;
pub mod history;
pub mod journal;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod record;
pub mod request;
pub mod rest;
pub mod server;
pub mod sse;
pub mod state;
pub mod store;
pub mod versions_rest;
pub mod web;
pub mod webhooks;
pub mod ws;

pub use config::Config;
pub use server::serve;
