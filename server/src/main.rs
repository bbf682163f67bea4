use clap::Parser;
use quire_server::config::{Cli, LogFormat};
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
    let config = Cli::parse().into_config();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Pretty => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }

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
