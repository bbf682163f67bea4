//! `fanout`: writers typing into shared documents, many readers receiving.
//!
//! Each writer keeps its own yrs document and appends one character per op
//! to its own run of text (a person typing at their caret), at a fixed rate.
//! Every op is one v1 update of one struct, so the writer's clock is the op
//! number; the writer stamps the op's send time into a table indexed by
//! clock. A sampled reader decodes each update it receives, reads the
//! update's state vector, and for every op between the last clock it saw
//! from that writer and the new one records `now - sent`: the latency of
//! every update, measured on one clock (this process's monotonic clock).
//! The other readers only count frames, so the load generator stays light.
//! Sampled readers are spread evenly over the connection order (every
//! `readers / sampled`-th), so that the sample sees what readers see on
//! average, whatever order a server relays in.
//!
//! The same machinery measures `cluster`: readers are spread over reader
//! groups (same node as the writers, other node), each with its own
//! percentiles.

use crate::conn::Conn;
use crate::proc::{round3, Procs, Usage};
use crate::stats::{percentiles, Percentiles};
use crate::target::Target;
use crate::wire::{self, Msg};
use anyhow::{Context, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, Text, Transact, Update};

/// How long one connection may take to open and sync.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug, Clone, Serialize)]
pub(crate) struct FanoutArgs {
    /// Documents; each gets its own writers and readers.
    #[arg(long, default_value_t = 1)]
    pub docs: usize,
    /// Writers per document.
    #[arg(long, default_value_t = 10)]
    pub writers: usize,
    /// Ops (typed characters) per second per writer.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Readers per document.
    #[arg(long, default_value_t = 300)]
    pub readers: usize,
    /// Measured seconds of typing (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seconds of typing before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Longest wait, after typing stops, for sampled readers to catch up.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Readers per document whose latency is measured (the rest count frames).
    #[arg(long, default_value_t = 30)]
    pub sampled: usize,
    /// Connections opened at once while setting up.
    #[arg(long, default_value_t = 32)]
    pub connect_concurrency: usize,
    /// A few seconds with a handful of clients: a smoke test.
    #[arg(long)]
    pub quick: bool,
}

impl FanoutArgs {
    pub(crate) fn resolved(&self) -> FanoutArgs {
        if !self.quick {
            return self.clone();
        }
        FanoutArgs {
            docs: 1,
            writers: 2,
            rate: 20.0,
            readers: 8,
            duration: 2.0,
            warmup: 0.5,
            drain: 5.0,
            sampled: 4,
            connect_concurrency: 8,
            quick: true,
        }
    }
}

/// Readers of one group, and what they saw.
#[derive(Debug, Serialize)]
pub(crate) struct GroupReport {
    pub name: String,
    pub readers: usize,
    pub sampled_readers: usize,
    /// Latency from a writer's send to a sampled reader's receive, per op.
    pub latency: Percentiles,
    /// Ops sent in the measured window that sampled readers never received
    /// before the drain ended (summed over sampled readers).
    pub undelivered_ops: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct FanoutReport {
    pub params: FanoutArgs,
    pub groups: Vec<GroupReport>,
    /// Every group's samples together.
    pub latency: Percentiles,
    pub ops_sent: u64,
    pub ops_per_sec: f64,
    /// Update frames received by all readers per second of measured typing
    /// (fewer than ops × readers where a server merges updates).
    pub frames_received_per_sec: f64,
    pub frames_sent_per_sec: f64,
    /// Update frames delivered to readers from the start of measuring to
    /// the end of the drain.
    pub delivered_frames: u64,
    /// Ops (updates as the writers sent them) delivered to readers in the
    /// same window: counted at the sampled readers, scaled to all readers.
    pub delivered_updates: u64,
    pub server: Option<Usage>,
    /// Server CPU per delivered update, microseconds.
    pub cpu_us_per_delivered_update: Option<f64>,
    /// The load generator's own CPU (it must not be the bottleneck).
    pub bench: Option<Usage>,
    /// Connections the server closed, or that failed, during the run.
    pub dropped_connections: u64,
    pub drain_seconds: f64,
}

/// Send times of one writer's ops, indexed by clock: nanoseconds since
/// the run's epoch, plus one (0 = not sent).
struct OpLog {
    sent: Vec<AtomicU64>,
    /// Ops sent so far.
    ops: AtomicU64,
}

/// What readers and writers share.
struct Run {
    epoch: Instant,
    /// Ops sent at or after this (ns since epoch) are measured.
    measure_from: AtomicU64,
    /// Readers count frames while this is set.
    counting: AtomicBool,
    /// Writer client id -> index into `logs`.
    writer_index: HashMap<u64, usize>,
    logs: Vec<OpLog>,
    frames_received: AtomicU64,
    /// Ops that sampled readers received while counting.
    sampled_ops_received: AtomicU64,
    frames_sent: AtomicU64,
    dropped: AtomicU64,
    /// Writers that have stopped typing.
    writers_done: AtomicUsize,
}

impl Run {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// A reader whose latency is measured.
struct Sampled {
    group: usize,
    /// Ops seen, for the drain check.
    seen: Arc<AtomicU64>,
    doc: usize,
}

pub(crate) async fn run(
    writer_target: &Target,
    groups: &[(String, Target)],
    procs: &Procs,
    args: &FanoutArgs,
) -> Result<FanoutReport> {
    let args = args.resolved();
    let run_id = crate::run_id();
    let doc_names: Vec<String> = (0..args.docs)
        .map(|d| format!("bench-fanout-{run_id}-{d}"))
        .collect();
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let capacity = ((args.warmup + args.duration) * args.rate).ceil() as usize + 16;

    // Writers' documents first: their (distinct) client ids key the op logs.
    let mut ids = std::collections::HashSet::new();
    while ids.len() < args.docs * args.writers {
        ids.insert(crate::yjs_client_id());
    }
    let mut ids = ids.into_iter();
    let writer_docs: Vec<(usize, Doc)> = (0..args.docs)
        .flat_map(|d| (0..args.writers).map(move |_| d))
        .map(|d| (d, Doc::with_client_id(ids.next().unwrap_or(1))))
        .collect();
    let run = Arc::new(Run {
        epoch: Instant::now(),
        measure_from: AtomicU64::new(u64::MAX),
        counting: AtomicBool::new(false),
        writer_index: writer_docs
            .iter()
            .enumerate()
            .map(|(i, (_, doc))| (doc.client_id().get(), i))
            .collect(),
        logs: (0..writer_docs.len())
            .map(|_| OpLog {
                sent: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
                ops: AtomicU64::new(0),
            })
            .collect(),
        frames_received: AtomicU64::new(0),
        sampled_ops_received: AtomicU64::new(0),
        frames_sent: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        writers_done: AtomicUsize::new(0),
    });
    let cancel = CancellationToken::new();

    // Readers: spread over groups round-robin. Every `stride`-th reader of
    // a document measures latency, so the sample spans the whole connection
    // order: a server that relays in connection order would otherwise serve
    // a sample of its first readers first, and look faster than its readers
    // are on average.
    let group_count = groups.len();
    let stride = (args.readers / args.sampled.max(1)).max(1);
    let plan: Vec<(usize, usize, Option<usize>)> = (0..args.docs)
        .flat_map(|d| {
            (0..args.readers).map(move |r| {
                let (group, nth) = (r % group_count, r / group_count);
                let sampled =
                    nth % stride == 0 && (nth / stride) * group_count + group < args.sampled;
                (d, group, sampled.then_some(r))
            })
        })
        .collect();
    let opened: Vec<(usize, usize, bool, Conn)> = stream::iter(plan)
        .map(|(d, g, sampled)| {
            let target = &groups[g].1;
            let name = &doc_names[d];
            async move {
                let conn = tokio::time::timeout(CONNECT_TIMEOUT, async {
                    let mut conn = Conn::open(target, name).await?;
                    conn.sync_empty().await?;
                    anyhow::Ok(conn)
                })
                .await
                .context("reader handshake timed out")??;
                anyhow::Ok((d, g, sampled.is_some(), conn))
            }
        })
        .buffer_unordered(args.connect_concurrency.max(1))
        .try_collect()
        .await
        .context("opening readers")?;
    let mut readers = JoinSet::new();
    let mut sampled_info = Vec::new();
    for (doc, group, sampled, conn) in opened {
        let sampled = sampled.then(|| {
            let seen = Arc::new(AtomicU64::new(0));
            sampled_info.push(Sampled {
                group,
                seen: Arc::clone(&seen),
                doc,
            });
            seen
        });
        readers.spawn(read_loop(
            conn,
            Arc::clone(&run),
            sampled.map(|seen| (group, seen)),
            cancel.clone(),
        ));
    }

    // Writers connect to the first group's server.
    let writer_conns: Vec<(usize, Doc, Conn)> = stream::iter(writer_docs)
        .map(|(d, doc)| {
            let name = &doc_names[d];
            async move {
                let mut conn = Conn::open(writer_target, name).await?;
                let sv = doc.transact().state_vector().encode_v1();
                let doc_for_diff = doc.clone();
                tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    conn.sync(&sv, move |remote| {
                        yrs::StateVector::decode_v1(remote)
                            .map(|sv| doc_for_diff.transact().encode_diff_v1(&sv))
                            .unwrap_or_else(|_| wire::EMPTY_UPDATE.to_vec())
                    }),
                )
                .await
                .context("writer handshake timed out")??;
                anyhow::Ok((d, doc, conn))
            }
        })
        .buffer_unordered(args.connect_concurrency.max(1))
        .try_collect()
        .await
        .context("opening writers")?;

    // Type: writers' ticks are spread evenly over one period.
    let start = Instant::now() + Duration::from_millis(200);
    let measure_at = start + Duration::from_secs_f64(args.warmup);
    let stop_at = measure_at + Duration::from_secs_f64(args.duration);
    let writer_count = writer_conns.len();
    let mut writers = JoinSet::new();
    for (_, ydoc, conn) in writer_conns {
        let index = run.writer_index[&ydoc.client_id().get()];
        let phase = period.mul_f64(index as f64 / writer_count as f64);
        writers.spawn(write_loop(
            conn,
            ydoc,
            index,
            Arc::clone(&run),
            start + phase,
            stop_at,
            period,
            cancel.clone(),
        ));
    }

    tokio::time::sleep_until(measure_at).await;
    run.measure_from.store(run.now_ns(), Relaxed);
    run.counting.store(true, Relaxed);
    let server_before = procs.sample();
    let bench_before = Procs::own();
    let frames_at_measure = run.frames_sent.load(Relaxed);

    // Writers stop typing on their own at `stop_at` (and keep reading).
    while run.writers_done.load(Relaxed) < writer_count {
        if let Some(result) = writers.try_join_next() {
            // Only a failed writer ends early.
            result.context("writer task")??;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut ops_per_doc = vec![0u64; args.docs];
    let mut ops_measured = 0u64;
    let from = run.measure_from.load(Relaxed);
    for (index, log) in run.logs.iter().enumerate() {
        let ops = log.ops.load(Relaxed);
        ops_per_doc[index / args.writers.max(1)] += ops;
        ops_measured += log.sent[..ops as usize]
            .iter()
            .filter(|t| t.load(Relaxed).saturating_sub(1) >= from)
            .count() as u64;
    }
    let typed_for = measure_at.elapsed().as_secs_f64();
    let frames_sent = run.frames_sent.load(Relaxed) - frames_at_measure;
    let frames_received_typing = run.frames_received.load(Relaxed);

    // Drain: until every sampled reader has seen every op of its document.
    let drain_started = Instant::now();
    let drain_deadline = drain_started + Duration::from_secs_f64(args.drain);
    loop {
        let behind = sampled_info
            .iter()
            .any(|s| s.seen.load(Relaxed) < ops_per_doc[s.doc]);
        if !behind || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    run.counting.store(false, Relaxed);
    let server_after = procs.sample();
    let bench_after = Procs::own();
    let delivered_frames = run.frames_received.load(Relaxed);
    // Servers may merge several ops into one frame (Hocuspocus coalesces
    // within an event-loop turn), so deliveries are counted in ops: what
    // the sampled readers received, scaled to every reader.
    let readers_total = (args.docs * args.readers) as f64;
    let sampled_total = sampled_info.len().max(1) as f64;
    let delivered_updates = (run.sampled_ops_received.load(Relaxed) as f64 * readers_total
        / sampled_total)
        .round() as u64;

    cancel.cancel();
    while let Some(result) = writers.join_next().await {
        result.context("writer task")??;
    }
    let mut per_group: Vec<Vec<u64>> = vec![Vec::new(); groups.len()];
    while let Some(result) = readers.join_next().await {
        if let Some((group, samples)) = result.context("reader task")? {
            per_group[group].extend(samples);
        }
    }
    let group_reports = groups
        .iter()
        .enumerate()
        .map(|(g, (name, _))| {
            let sampled: Vec<&Sampled> = sampled_info.iter().filter(|s| s.group == g).collect();
            let undelivered = sampled
                .iter()
                .map(|s| ops_per_doc[s.doc].saturating_sub(s.seen.load(Relaxed)))
                .sum();
            GroupReport {
                name: name.clone(),
                readers: args.docs * ((0..args.readers).filter(|r| r % groups.len() == g).count()),
                sampled_readers: sampled.len(),
                latency: percentiles(per_group[g].clone()),
                undelivered_ops: undelivered,
            }
        })
        .collect();
    let all: Vec<u64> = per_group.into_iter().flatten().collect();
    let server = Usage::between(server_before, server_after);
    let cpu_us_per_delivered_update = server
        .as_ref()
        .filter(|_| delivered_updates > 0)
        .map(|s| round3(s.cpu_seconds * 1e6 / delivered_updates as f64));
    Ok(FanoutReport {
        params: args.clone(),
        groups: group_reports,
        latency: percentiles(all),
        ops_sent: ops_measured,
        ops_per_sec: round3(ops_measured as f64 / typed_for),
        frames_received_per_sec: round3(frames_received_typing as f64 / typed_for),
        frames_sent_per_sec: round3(frames_sent as f64 / typed_for),
        delivered_frames,
        delivered_updates,
        server,
        cpu_us_per_delivered_update,
        bench: Usage::between(bench_before, bench_after),
        dropped_connections: run.dropped.load(Relaxed),
        drain_seconds: round3(drain_seconds),
    })
}

/// Appends one character per tick until `stop_at`, then keeps reading
/// (a writer that stops reading looks like a slow client to a server) until
/// the run is cancelled. Whatever the server relays is ignored.
#[allow(clippy::too_many_arguments)]
async fn write_loop(
    mut conn: Conn,
    doc: Doc,
    index: usize,
    run: Arc<Run>,
    first: Instant,
    stop_at: Instant,
    period: Duration,
    cancel: CancellationToken,
) -> Result<()> {
    let text = doc.get_or_insert_text(crate::trace::ROOT);
    let mut ticker = tokio::time::interval_at(first, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let log = &run.logs[index];
    let alphabet = b"abcdefghijklmnopqrstuvwxyz ";
    let mut typing = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick(), if typing => {
                let ops = log.ops.load(Relaxed) as usize;
                if Instant::now() >= stop_at || ops >= log.sent.len() {
                    typing = false;
                    run.writers_done.fetch_add(1, Relaxed);
                    continue;
                }
                let ch = alphabet[ops % alphabet.len()] as char;
                let update = {
                    let mut txn = doc.transact_mut();
                    let end = text.len(&txn);
                    text.insert(&mut txn, end, ch.encode_utf8(&mut [0; 4]));
                    txn.encode_update_v1()
                };
                // Stamped before sending, so a reader never sees an op
                // whose time is missing.
                log.sent[ops].store(run.now_ns() + 1, Relaxed);
                conn.send(&wire::sync_update(&update)).await?;
                log.ops.store(ops as u64 + 1, Relaxed);
                run.frames_sent.fetch_add(1, Relaxed);
            }
            frame = conn.recv() => if !matches!(frame, Ok(Some(_))) {
                run.dropped.fetch_add(1, Relaxed);
                anyhow::bail!(
                    "the server closed writer {index}'s connection after {} ops",
                    log.ops.load(Relaxed)
                );
            },
        }
    }
    Ok(())
}

/// Counts update frames; a sampled reader also measures each op's latency.
/// Returns the sampled reader's (group, latencies in microseconds).
async fn read_loop(
    mut conn: Conn,
    run: Arc<Run>,
    sampled: Option<(usize, Arc<AtomicU64>)>,
    cancel: CancellationToken,
) -> Option<(usize, Vec<u64>)> {
    let mut last = vec![0u32; run.logs.len()];
    let mut latencies = Vec::new();
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => break,
            frame = conn.recv() => frame,
        };
        let Ok(Some(frame)) = frame else {
            run.dropped.fetch_add(1, Relaxed);
            break;
        };
        let now = run.now_ns();
        let Some(Msg::Update(payload)) = wire::parse(frame.body()) else {
            continue;
        };
        if run.counting.load(Relaxed) {
            run.frames_received.fetch_add(1, Relaxed);
        }
        let Some((_, seen)) = &sampled else { continue };
        let Ok(update) = Update::decode_v1(payload) else {
            continue;
        };
        let from = run.measure_from.load(Relaxed);
        // The clock ranges this update inserts; each clock is one op. Ops
        // of one writer arrive in order, so clocks below `last` were seen.
        for (client, ranges) in update.insertions(true).iter() {
            let Some(&w) = run.writer_index.get(&client.get()) else {
                continue;
            };
            let log = &run.logs[w].sent;
            for range in ranges.iter() {
                let begin = range.start.max(last[w]);
                let end = range.end.min(log.len() as u32);
                for clock in begin..end {
                    let sent = log[clock as usize].load(Relaxed);
                    // `sent` is nanoseconds plus one: sent at or after `from`.
                    if sent > from {
                        latencies.push(now.saturating_sub(sent - 1) / 1000);
                    }
                }
                if end > begin {
                    seen.fetch_add(u64::from(end - begin), Relaxed);
                    if run.counting.load(Relaxed) {
                        run.sampled_ops_received
                            .fetch_add(u64::from(end - begin), Relaxed);
                    }
                    last[w] = end;
                }
            }
        }
    }
    sampled.map(|(group, _)| (group, latencies))
}
