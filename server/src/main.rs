use anyhow::bail;
use clap::Parser;
use quire_server::backup::{archive, check, restore};
use quire_server::config::{CheckArgs, Cli, Command, Config, LogFormat, RestoreArgs};
use std::io::IsTerminal;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// jemalloc, configured in `.cargo/config.toml` without thread caches and
/// with freed pages returned within a second by a background thread: glibc's
/// per-thread caches were a third of the memory of an idle document
/// (docs/benchmarks.md, "idle").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().into_command() {
        Command::Serve(config) => serve(config).await,
        Command::Restore(args) => restore(args).await,
        Command::Check(args) => check(args).await,
    }
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_logs(config.log_format);
    survive_file_size_limit()?;
    let drain = CancellationToken::new();
    let signals = drain.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        signals.cancel();
        // A second signal skips the grace period.
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(1);
    });
    quire_server::serve(config, drain).await?;
    Ok(())
}

/// `quire restore`: one line on stdout when it worked.
async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    init_logs(LogFormat::Pretty);
    let summary = restore::restore(args.archive.clone(), args.data_dir.clone()).await?;
    println!(
        "restored {} document(s), {} bytes, from {} into {}; the node takes a new id at its first start",
        summary.documents,
        summary.bytes,
        args.archive.display(),
        args.data_dir.display()
    );
    Ok(())
}

/// `quire check`: a report on stdout; non-zero when anything is wrong.
async fn check(args: CheckArgs) -> anyhow::Result<()> {
    init_logs(LogFormat::Pretty);
    // Both read whole files and decode every document: off the runtime.
    match (args.archive, args.data_dir) {
        (Some(path), _) => {
            let checked = path.clone();
            let verified = tokio::task::spawn_blocking(move || archive::verify(&checked)).await??;
            println!(
                "archive OK: {} document(s), {} bytes of snapshots, taken {} from node {} (quire {})",
                verified.manifest.documents.len(),
                verified.bytes,
                verified.manifest.created_at,
                verified.manifest.node_id,
                verified.manifest.quire_version
            );
            Ok(())
        }
        (None, Some(path)) => {
            let checked = path.clone();
            let report = tokio::task::spawn_blocking(move || check::data_dir(&checked)).await??;
            if report.problems.is_empty() {
                println!("data directory {} OK: {report}", path.display());
                Ok(())
            } else {
                println!("data directory {} has problems: {report}", path.display());
                bail!("{} problem(s) in {}", report.problems.len(), path.display())
            }
        }
        // clap requires one of the two.
        (None, None) => bail!("quire check needs --archive or --data-dir"),
    }
}

/// A write past the process's file-size limit (RLIMIT_FSIZE) raises
/// SIGXFSZ, whose default action ends the process. Caught, the write fails
/// with EFBIG instead, and storage treats it as any failed write: an outage
/// it recovers from once the limit is raised (PostgreSQL ignores SIGXFSZ for
/// the same reason).
fn survive_file_size_limit() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut signals = signal(SignalKind::from_raw(libc::SIGXFSZ))?;
        tokio::spawn(async move { while signals.recv().await.is_some() {} });
    }
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
