//! `cold-load`: a large real document, stored, the server restarted, and
//! the time from connecting to being synced.
//!
//! Two invocations around a restart that the caller performs
//! (`scripts/bench` does it for every server):
//!
//! - `--phase store`: replays the trace (by default the crdt-benchmarks
//!   "B4" trace, `automerge-paper`) into a yrs document, uploads it as one
//!   sync update, and waits until a second client receives all of it.
//! - `--phase load`: on the restarted server, times connect → sync step 2
//!   received, checks the text, then times a few warm loads.
//!
//! Both report yrs's own cost for the same update (decode, decode +
//! integrate into a fresh document, encode), measured in this process.

use crate::conn::Conn;
use crate::proc::{round3, Procs, Usage};
use crate::target::Target;
use crate::trace::{self, YrsCost};
use crate::wire;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;
use yrs::updates::decoder::Decode;
use yrs::{GetString, Transact};

/// How long the stored document may take to become visible to a reader.
const STORE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Phase {
    Store,
    Load,
}

#[derive(clap::Args, Debug, Clone, Serialize)]
pub(crate) struct ColdLoadArgs {
    #[arg(long, value_enum)]
    pub phase: Phase,
    /// A sequential editing trace (`.json` or `.json.gz`). The default is
    /// the repository's copy, relative to the repository root (where
    /// `scripts/bench` runs this), so reports record no machine's paths.
    #[arg(
        long,
        default_value = "tests/data/editing-traces/automerge-paper.json.gz"
    )]
    pub trace: PathBuf,
    /// Where the replayed document is cached between the two phases.
    #[arg(long, default_value = "target/quire-bench")]
    pub cache_dir: PathBuf,
    /// The document's name on the server (the same in both phases).
    #[arg(long, default_value = "bench-cold-b4")]
    pub doc: String,
    /// Replay only this many transactions of the trace.
    #[arg(long)]
    pub max_txns: Option<usize>,
    /// Warm loads timed after the cold one.
    #[arg(long, default_value_t = 5)]
    pub warm_runs: usize,
    /// Only the first 2,000 transactions: a smoke test.
    #[arg(long)]
    pub quick: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct DocumentInfo {
    pub trace: String,
    /// Trace transactions replayed (`None`: all of them, from the cache).
    pub transactions: Option<usize>,
    pub update_bytes: usize,
    pub text_chars: usize,
    /// Seconds yrs took to replay the trace (`None` when cached).
    pub replay_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct StoreReport {
    pub params: ColdLoadArgs,
    pub document: DocumentInfo,
    pub yrs: YrsCost,
    /// From sending the update to a second client receiving all of it.
    pub store_ms: f64,
    pub server: Option<Usage>,
}

#[derive(Debug, Serialize)]
pub(crate) struct LoadReport {
    pub params: ColdLoadArgs,
    pub document: DocumentInfo,
    pub yrs: YrsCost,
    /// Connect → sync step 2 received, on the freshly started server.
    pub cold_step2_ms: f64,
    /// Connect → the whole document received (the headline number).
    pub cold_sync_ms: f64,
    /// `cold_sync_ms / yrs.decode_apply_ms` (the target is at most 2).
    pub cold_over_yrs_decode: f64,
    /// Median of the warm loads (the document already in memory).
    pub warm_sync_ms: f64,
    pub step2_bytes: usize,
    /// Sync step 2 alone held the whole document (else the rest came as
    /// updates after it).
    pub step2_complete: bool,
    /// Server CPU and memory across the cold load.
    pub server: Option<Usage>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum ColdLoadReport {
    Store(StoreReport),
    Load(LoadReport),
}

pub(crate) async fn run(
    target: &Target,
    procs: &Procs,
    args: &ColdLoadArgs,
) -> Result<ColdLoadReport> {
    let mut args = args.clone();
    if args.quick && args.max_txns.is_none() {
        args.max_txns = Some(2000);
    }
    let (update, expected, document) = document(&args)?;
    let yrs = trace::yrs_cost(&update, 11)?;
    match args.phase {
        Phase::Store => {
            let before = procs.sample();
            let started = Instant::now();
            let mut writer = Conn::open(target, &args.doc).await?;
            writer.sync_empty().await?;
            writer.send(&wire::sync_update(&update)).await?;
            let deadline = Instant::now() + STORE_TIMEOUT;
            loop {
                let mut reader = Conn::open(target, &args.doc).await?;
                let state = reader.sync_empty().await?;
                reader.close().await;
                if trace::text_of(&state).is_ok_and(|text| text == expected) {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("the server did not hold the whole document after {STORE_TIMEOUT:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let store_ms = started.elapsed().as_secs_f64() * 1e3;
            writer.close().await;
            Ok(ColdLoadReport::Store(StoreReport {
                params: args,
                document,
                yrs,
                store_ms: round3(store_ms),
                server: Usage::between(before, procs.sample()),
            }))
        }
        Phase::Load => {
            let before = procs.sample();
            let cold = timed_load(target, &args.doc, &expected).await?;
            let after = procs.sample();
            let mut warm = Vec::new();
            for _ in 0..args.warm_runs {
                warm.push(timed_load(target, &args.doc, &expected).await?.complete);
            }
            let ms = |d: Duration| round3(d.as_secs_f64() * 1e3);
            Ok(ColdLoadReport::Load(LoadReport {
                cold_over_yrs_decode: round3(
                    cold.complete.as_secs_f64() * 1e3 / yrs.decode_apply_ms.max(1e-6),
                ),
                params: args,
                document,
                yrs,
                cold_step2_ms: ms(cold.step2),
                cold_sync_ms: ms(cold.complete),
                warm_sync_ms: trace::median_ms(warm),
                step2_bytes: cold.step2_bytes,
                step2_complete: cold.step2_complete,
                server: Usage::between(before, after),
            }))
        }
    }
}

/// One timed load of the document.
struct Load {
    /// Connect → sync step 2 received.
    step2: Duration,
    /// Connect → the whole document received. Servers that answer sync
    /// step 1 before their storage has loaded the document (y-websocket's
    /// `bindState` is asynchronous) send the rest as updates afterwards.
    complete: Duration,
    step2_bytes: usize,
    /// Step 2 alone held the whole document.
    step2_complete: bool,
}

async fn timed_load(target: &Target, doc: &str, expected: &str) -> Result<Load> {
    let started = Instant::now();
    let mut conn = Conn::open(target, doc).await?;
    let state = conn.sync_empty().await?;
    let step2 = started.elapsed();
    // Checking the content is the client's work, not the server's: the
    // times are those of the frames' arrival.
    let ydoc = yrs::Doc::new();
    let text = ydoc.get_or_insert_text(trace::ROOT);
    let apply = |update: &[u8]| -> Result<bool> {
        let mut txn = ydoc.transact_mut();
        txn.apply_update(yrs::Update::decode_v1(update)?)?;
        Ok(text.get_string(&txn) == expected)
    };
    let step2_complete = apply(&state)?;
    let mut complete = step2;
    let mut done = step2_complete;
    let deadline = started + STORE_TIMEOUT;
    while !done {
        let frame = tokio::time::timeout_at(deadline, conn.recv())
            .await
            .context("the whole document never arrived")??
            .context("the server closed the connection before sending the whole document")?;
        complete = started.elapsed();
        if let Some(wire::Msg::Update(update)) = wire::parse(frame.body()) {
            done = apply(update)?;
        }
    }
    conn.close().await;
    Ok(Load {
        step2,
        complete,
        step2_bytes: state.len(),
        step2_complete,
    })
}

/// The replayed trace (update, text), from the cache when an earlier run
/// left it there.
fn document(args: &ColdLoadArgs) -> Result<(Vec<u8>, String, DocumentInfo)> {
    let stem = args
        .trace
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("trace")
        .trim_end_matches(".gz")
        .trim_end_matches(".json")
        .to_owned();
    let cached = args.cache_dir.join(format!(
        "{stem}-{}.update",
        args.max_txns.map_or("all".to_owned(), |n| n.to_string())
    ));
    let (update, text, transactions, replay_seconds) = match std::fs::read(&cached) {
        Ok(update) => {
            let text = trace::text_of(&update)?;
            (update, text, None, None)
        }
        Err(_) => {
            eprintln!("replaying {} into yrs ...", args.trace.display());
            let replayed = trace::replay(&args.trace, args.max_txns)?;
            write_atomically(&cached, &replayed.update)?;
            (
                replayed.update,
                replayed.text,
                Some(replayed.transactions),
                Some(round3(replayed.replay_time.as_secs_f64())),
            )
        }
    };
    let text_chars = text.chars().count();
    let info = DocumentInfo {
        trace: stem,
        transactions: transactions.or(args.max_txns),
        update_bytes: update.len(),
        text_chars,
        replay_seconds,
    };
    Ok((update, text, info))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
