//! `many-docs`: ten thousand documents touched once each (connect, sync,
//! write a line, close), then the server is watched while it is left alone:
//! does memory come back as documents unload, and do they reload intact?

use crate::conn::Conn;
use crate::proc::{round3, Procs, Usage};
use crate::stats::{percentiles, Percentiles};
use crate::target::{Flavor, Target};
use crate::{trace, wire};
use anyhow::{Context, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;
use yrs::{Text, Transact};

#[derive(clap::Args, Debug, Clone, Serialize)]
pub(crate) struct ManyDocsArgs {
    /// Documents to touch.
    #[arg(long, default_value_t = 10_000)]
    pub docs: usize,
    /// Documents touched at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds to watch the idle server after the last touch.
    #[arg(long, default_value_t = 40.0)]
    pub observe: f64,
    /// Seconds between readings while watching.
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// Documents reopened at the end to check their content and time the reload.
    #[arg(long, default_value_t = 100)]
    pub recheck: usize,
    /// A few seconds with a few documents: a smoke test.
    #[arg(long)]
    pub quick: bool,
}

impl ManyDocsArgs {
    fn resolved(&self) -> ManyDocsArgs {
        if !self.quick {
            return self.clone();
        }
        ManyDocsArgs {
            docs: 50,
            concurrency: 8,
            observe: 1.0,
            interval: 0.5,
            recheck: 5,
            quick: true,
        }
    }
}

/// One reading while the server sat idle.
#[derive(Debug, Serialize)]
pub(crate) struct Reading {
    pub t_seconds: f64,
    pub rss_mib: Option<f64>,
    /// `quire_documents_loaded` from Quire's `/metrics`.
    pub documents_loaded: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ManyDocsReport {
    pub params: ManyDocsArgs,
    pub touch_seconds: f64,
    pub docs_per_sec: f64,
    pub rss_before_mib: Option<f64>,
    /// Right after the last touch.
    pub rss_touched_mib: Option<f64>,
    /// At the end of the watch.
    pub rss_end_mib: Option<f64>,
    /// `(touched - before) / docs`.
    pub rss_per_touched_doc_kib: Option<f64>,
    pub readings: Vec<Reading>,
    /// Server CPU while touching.
    pub touching: Option<Usage>,
    /// Server CPU while idle (unloading happens here).
    pub watching: Option<Usage>,
    /// Connect → synced for the rechecked documents (reloaded if unloaded).
    pub reload: Percentiles,
    pub recheck_ok: usize,
}

pub(crate) async fn run(
    target: &Target,
    procs: &Procs,
    args: &ManyDocsArgs,
) -> Result<ManyDocsReport> {
    let args = args.resolved();
    let run_id = crate::run_id();
    let name = |i: usize| format!("bench-many-{run_id}-{i}");
    let line = |i: usize| format!("document {i} was here\n");

    let before = procs.sample();
    let started = Instant::now();
    stream::iter(0..args.docs)
        .map(|i| {
            let (name, line) = (name(i), line(i));
            async move {
                let mut conn = Conn::open(target, &name).await?;
                conn.sync_empty().await?;
                let doc = crate::new_doc();
                let text = doc.get_or_insert_text(trace::ROOT);
                let update = {
                    let mut txn = doc.transact_mut();
                    text.insert(&mut txn, 0, &line);
                    txn.encode_update_v1()
                };
                conn.send(&wire::sync_update(&update)).await?;
                conn.close().await;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await
        .context("touching documents")?;
    let touch_seconds = started.elapsed().as_secs_f64();
    let touched = procs.sample();

    let mut readings = Vec::new();
    let watch_started = Instant::now();
    let watch_end = watch_started + Duration::from_secs_f64(args.observe);
    loop {
        let sample = procs.sample();
        readings.push(Reading {
            t_seconds: round3(watch_started.elapsed().as_secs_f64()),
            rss_mib: sample.map(|s| round3(s.rss_mib())),
            documents_loaded: documents_loaded(target).await,
        });
        if Instant::now() >= watch_end {
            break;
        }
        tokio::time::sleep(Duration::from_secs_f64(args.interval)).await;
    }
    let end = procs.sample();

    // Reopen documents spread over the whole range.
    let step = (args.docs / args.recheck.max(1)).max(1);
    let mut reload = Vec::new();
    let mut ok = 0;
    for i in (0..args.docs).step_by(step).take(args.recheck) {
        let t = Instant::now();
        let mut conn = Conn::open(target, &name(i)).await?;
        let state = conn.sync_empty().await?;
        reload.push(t.elapsed().as_micros() as u64);
        conn.close().await;
        if trace::text_of(&state).is_ok_and(|text| text == line(i)) {
            ok += 1;
        }
    }

    Ok(ManyDocsReport {
        touch_seconds: round3(touch_seconds),
        docs_per_sec: round3(args.docs as f64 / touch_seconds.max(1e-9)),
        rss_before_mib: before.map(|s| round3(s.rss_mib())),
        rss_touched_mib: touched.map(|s| round3(s.rss_mib())),
        rss_end_mib: end.map(|s| round3(s.rss_mib())),
        rss_per_touched_doc_kib: match (before, touched) {
            (Some(b), Some(t)) => Some(round3(
                (t.rss_kib as f64 - b.rss_kib as f64) / args.docs as f64,
            )),
            _ => None,
        },
        readings,
        touching: Usage::between(before, touched),
        watching: Usage::between(touched, end),
        reload: percentiles(reload),
        recheck_ok: ok,
        params: args,
    })
}

/// Quire's `quire_documents_loaded` gauge; `None` for other servers.
async fn documents_loaded(target: &Target) -> Option<f64> {
    if target.flavor != Flavor::Quire {
        return None;
    }
    let body = crate::http::get(&target.http_base(), "/metrics")
        .await
        .ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("quire_documents_loaded "))
        .and_then(|v| v.trim().parse().ok())
}
