//! `quire-bench`: a load generator for any server of the y-websocket
//! protocol (Quire, y-websocket's reference server, y-sweet, Hocuspocus
//! with its framing, and a byte relay as the floor). Prints one JSON
//! document per run on stdout; progress goes to stderr.
//!
//! | module | what it holds |
//! |---|---|
//! | [`fanout`] | writers typing, readers receiving, latency per update; also `cluster` |
//! | [`idle`] | resident memory per idle connection and per small document |
//! | [`cold_load`] | a large real document, stored, the server restarted, time to sync |
//! | [`many_docs`] | ten thousand documents touched; memory and unloading |
//! | [`relay`] | the no-CRDT floor server |
//! | [`conn`], [`target`], [`wire`] | lean connections, server flavours, framing |
//! | [`proc`], [`stats`], [`trace`], [`http`] | `/proc` readings, percentiles, editing traces, a bare GET |
//!
//! Smoke test (a few seconds, against a running server):
//! `quire-bench fanout --url ws://127.0.0.1:8080 --quick`.

mod cold_load;
mod conn;
mod fanout;
mod http;
mod idle;
mod many_docs;
mod proc;
mod relay;
mod stats;
mod target;
mod trace;
mod wire;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use proc::Procs;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};
use target::{Flavor, Target};

#[derive(Parser)]
#[command(
    name = "quire-bench",
    about = "Load generator for y-websocket protocol servers: fanout, idle, cold-load, many-docs, cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writers typing into shared documents; latency at sampled readers.
    Fanout {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        args: fanout::FanoutArgs,
    },
    /// Idle connections over small documents; RSS per connection and per document.
    Idle {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        args: idle::IdleArgs,
    },
    /// A large document stored, the server restarted (by the caller), time to sync.
    ColdLoad {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        args: cold_load::ColdLoadArgs,
    },
    /// Many documents touched once; memory and unloading while idle.
    ManyDocs {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        args: many_docs::ManyDocsArgs,
    },
    /// Fanout across two nodes: writers on --url, readers split between
    /// --url (same node) and --url-b (cross node).
    Cluster {
        #[command(flatten)]
        target: TargetArgs,
        /// The second node.
        #[arg(long)]
        url_b: String,
        #[command(flatten)]
        args: fanout::FanoutArgs,
    },
    /// The floor: a WebSocket relay with no CRDT work.
    Relay {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

/// The server under test.
#[derive(clap::Args, Debug)]
struct TargetArgs {
    /// Base address, `ws://HOST:PORT`.
    #[arg(long)]
    url: String,
    /// What kind of server it is (URL layout and framing).
    #[arg(long, value_enum, default_value = "quire")]
    flavor: Flavor,
    /// Path template overriding the flavour's, e.g. `/ws/{doc}`.
    #[arg(long)]
    path: Option<String>,
    /// Server process(es) whose CPU time and RSS are read from /proc.
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Name in the report (default: the flavour).
    #[arg(long)]
    label: Option<String>,
    /// Also write the JSON report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

impl TargetArgs {
    fn target(&self) -> Target {
        Target::new(&self.url, self.flavor, self.path.as_deref())
    }

    fn procs(&self) -> Procs {
        Procs::new(self.pids.clone())
    }
}

/// The envelope of every report.
#[derive(Serialize)]
struct Envelope<R: Serialize> {
    scenario: &'static str,
    label: String,
    flavor: Flavor,
    url: String,
    pids: Vec<u32>,
    /// The command line that produced this report.
    command: String,
    unix_time: u64,
    cpus: usize,
    /// 1-minute load average of the machine when the run started and
    /// ended: other work on the machine shows up here.
    load_average: [Option<f64>; 2],
    report: R,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    LOAD_AT_START.get_or_init(load_average);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Fanout { target, args } => {
            let t = target.target();
            let groups = [("readers".to_owned(), t.clone())];
            let report = fanout::run(&t, &groups, &target.procs(), &args).await?;
            emit("fanout", &target, report)
        }
        Command::Idle { target, args } => {
            let report = idle::run(&target.target(), &target.procs(), &args).await?;
            emit("idle", &target, report)
        }
        Command::ColdLoad { target, args } => {
            let report = cold_load::run(&target.target(), &target.procs(), &args).await?;
            emit("cold-load", &target, report)
        }
        Command::ManyDocs { target, args } => {
            let report = many_docs::run(&target.target(), &target.procs(), &args).await?;
            emit("many-docs", &target, report)
        }
        Command::Cluster {
            target,
            url_b,
            args,
        } => {
            let a = target.target();
            let b = Target::new(&url_b, target.flavor, target.path.as_deref());
            let groups = [
                ("same-node".to_owned(), a.clone()),
                ("cross-node".to_owned(), b),
            ];
            let report = fanout::run(&a, &groups, &target.procs(), &args).await?;
            emit("cluster", &target, report)
        }
        Command::Relay { listen } => relay::serve(listen).await,
    }
}

fn emit<R: Serialize>(scenario: &'static str, target: &TargetArgs, report: R) -> Result<()> {
    let envelope = Envelope {
        scenario,
        label: target
            .label
            .clone()
            .unwrap_or_else(|| format!("{:?}", target.flavor).to_lowercase()),
        flavor: target.flavor,
        url: target.url.clone(),
        pids: target.pids.clone(),
        command: std::iter::once("quire-bench".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average: [LOAD_AT_START.get().copied().flatten(), load_average()],
        report,
    };
    let json = serde_json::to_string_pretty(&envelope)?;
    if let Some(path) = &target.out {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{json}");
    Ok(())
}

static LOAD_AT_START: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A name part unique to this run, so runs never share documents.
pub fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{}", nanos % (1 << 48), std::process::id())
}

/// A random 32-bit client id, as Yjs makes them. yrs picks 53-bit ones,
/// which y-sweet 0.9.1 (on yrs 0.19, reading client ids as u32) relays
/// truncated; every client of the bench uses Yjs-sized ids instead.
pub fn yjs_client_id() -> u64 {
    (yrs::block::ClientID::random().get() & u64::from(u32::MAX)).max(1)
}

/// A fresh document with a Yjs-sized client id.
pub fn new_doc() -> yrs::Doc {
    yrs::Doc::with_client_id(yjs_client_id())
}
