//! `idle`: many synced connections that do nothing, over many small
//! documents; what each costs the server in resident memory.
//!
//! Four readings of the server's RSS: before anything (`start`), after
//! `--warmup-docs` documents were written and kept open (`base`), after one
//! connection per measured document has written a small text and stays open
//! (`docs`), and after the rest of the connections have joined those
//! documents and synced (`all`). Then
//! `per connection = (all - docs) / (connections - docs)` and
//! `per document = (docs - base) / docs - per connection`.
//!
//! The warm-up documents take one-time costs out of the per-document figure,
//! for every server alike: an allocator's first arenas, a store's first
//! write buffers, a JIT's first compilations. The figure with them,
//! `(docs - start) / (docs + warmup docs) - per connection`, is reported too.
//! Each reading is taken after the server has been left alone for
//! `--settle` seconds (garbage-collected servers need a moment).

use crate::conn::Conn;
use crate::proc::{round3, Procs, Usage};
use crate::target::Target;
use crate::wire;
use anyhow::{Context, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use yrs::{Text, Transact};

#[derive(clap::Args, Debug, Clone, Serialize)]
pub(crate) struct IdleArgs {
    /// Connections in all, the writers of the documents included.
    #[arg(long, default_value_t = 3000)]
    pub connections: usize,
    /// Documents the connections are spread over.
    #[arg(long, default_value_t = 300)]
    pub docs: usize,
    /// Documents written and kept open before the base reading (see the
    /// module's documentation); they are not counted in `docs`.
    #[arg(long, default_value_t = 30)]
    pub warmup_docs: usize,
    /// Characters each document's first connection writes.
    #[arg(long, default_value_t = 200)]
    pub doc_chars: usize,
    /// Seconds of quiet before each memory reading.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Seconds to hold every connection open at the end, measuring the
    /// CPU that idle connections cost (pings, timers).
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// A few seconds with a handful of clients: a smoke test.
    #[arg(long)]
    pub quick: bool,
}

impl IdleArgs {
    fn resolved(&self) -> IdleArgs {
        if !self.quick {
            return self.clone();
        }
        IdleArgs {
            connections: 40,
            docs: 4,
            warmup_docs: 1,
            doc_chars: 200,
            settle: 0.5,
            hold: 1.0,
            connect_concurrency: 16,
            quick: true,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct IdleReport {
    pub params: IdleArgs,
    pub rss_start_mib: Option<f64>,
    pub rss_base_mib: Option<f64>,
    pub rss_docs_mib: Option<f64>,
    pub rss_all_mib: Option<f64>,
    pub rss_per_connection_kib: Option<f64>,
    pub rss_per_doc_kib: Option<f64>,
    /// Per document with the one-time costs, over the warm-up documents too.
    pub rss_per_doc_with_first_use_kib: Option<f64>,
    /// Seconds to open and sync all connections.
    pub connect_seconds: f64,
    pub connections_per_sec: f64,
    /// Server CPU while everything sat idle for `hold` seconds.
    pub idle: Option<Usage>,
    /// Connections that ended before the end of the run.
    pub dropped_connections: usize,
}

pub(crate) async fn run(target: &Target, procs: &Procs, args: &IdleArgs) -> Result<IdleReport> {
    let args = args.resolved();
    let run_id = crate::run_id();
    let docs: Vec<String> = (0..args.docs)
        .map(|d| format!("bench-idle-{run_id}-{d}"))
        .collect();
    let settle = Duration::from_secs_f64(args.settle);
    let cancel = CancellationToken::new();
    let mut held = JoinSet::new();

    tokio::time::sleep(settle).await;
    let start = procs.sample();
    let content: String = "lorem ipsum dolor sit amet "
        .chars()
        .cycle()
        .take(args.doc_chars)
        .collect();
    let warmup: Vec<String> = (0..args.warmup_docs)
        .map(|d| format!("bench-idle-{run_id}-warmup-{d}"))
        .collect();
    let warm = open_writers(target, &warmup, &content, args.connect_concurrency)
        .await
        .context("opening the warm-up documents")?;
    for conn in warm {
        held.spawn(hold(conn, cancel.clone()));
    }
    tokio::time::sleep(settle).await;
    let base = procs.sample();

    // One connection per document writes a small text and stays.
    let started = Instant::now();
    let writers = open_writers(target, &docs, &content, args.connect_concurrency)
        .await
        .context("opening the documents")?;
    for conn in writers {
        held.spawn(hold(conn, cancel.clone()));
    }
    tokio::time::sleep(settle).await;
    let with_docs = procs.sample();

    // Everyone else joins and syncs.
    let extra = args.connections.saturating_sub(args.docs);
    let joiners: Vec<Conn> = stream::iter(0..extra)
        .map(|i| {
            let name = &docs[i % docs.len()];
            async move {
                let mut conn = Conn::open(target, name).await?;
                conn.sync_empty().await?;
                anyhow::Ok(conn)
            }
        })
        .buffer_unordered(args.connect_concurrency.max(1))
        .try_collect()
        .await
        .context("opening idle connections")?;
    let connect_seconds = started.elapsed().as_secs_f64() - args.settle;
    for conn in joiners {
        held.spawn(hold(conn, cancel.clone()));
    }
    tokio::time::sleep(settle).await;
    let with_all = procs.sample();
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let after_hold = procs.sample();

    let dropped = std::iter::from_fn(|| held.try_join_next()).count();
    cancel.cancel();
    while held.join_next().await.is_some() {}

    let mib = |s: Option<crate::proc::Sample>| s.map(|s| round3(s.rss_mib()));
    let per_connection = match (with_docs, with_all) {
        (Some(d), Some(a)) if extra > 0 => {
            Some((a.rss_kib as f64 - d.rss_kib as f64) / extra as f64)
        }
        _ => None,
    };
    let per_doc_over = |from: Option<crate::proc::Sample>, docs: usize| match (from, with_docs) {
        (Some(b), Some(d)) => Some(
            (d.rss_kib as f64 - b.rss_kib as f64) / docs.max(1) as f64
                - per_connection.unwrap_or(0.0),
        ),
        _ => None,
    };
    let per_doc = per_doc_over(base, args.docs);
    let per_doc_with_first_use = per_doc_over(start, args.docs + args.warmup_docs);
    Ok(IdleReport {
        params: args.clone(),
        rss_start_mib: mib(start),
        rss_base_mib: mib(base),
        rss_docs_mib: mib(with_docs),
        rss_all_mib: mib(with_all),
        rss_per_connection_kib: per_connection.map(round3),
        rss_per_doc_kib: per_doc.map(round3),
        rss_per_doc_with_first_use_kib: per_doc_with_first_use.map(round3),
        connect_seconds: round3(connect_seconds),
        connections_per_sec: round3(args.connections as f64 / connect_seconds.max(1e-9)),
        idle: Usage::between(with_all, after_hold),
        dropped_connections: dropped,
    })
}

/// One connection per document, each having written `content` into it.
async fn open_writers(
    target: &Target,
    names: &[String],
    content: &str,
    concurrency: usize,
) -> Result<Vec<Conn>> {
    stream::iter(names.iter())
        .map(|name| async move {
            let mut conn = Conn::open(target, name).await?;
            conn.sync_empty().await?;
            let doc = crate::new_doc();
            let text = doc.get_or_insert_text(crate::trace::ROOT);
            let update = {
                let mut txn = doc.transact_mut();
                text.insert(&mut txn, 0, content);
                txn.encode_update_v1()
            };
            conn.send(&wire::sync_update(&update)).await?;
            anyhow::Ok(conn)
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// Keeps a connection open, reading (which answers pings) until cancelled.
async fn hold(mut conn: Conn, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            frame = conn.recv() => if !matches!(frame, Ok(Some(_))) { return },
        }
    }
}
