//! Runs the real `quire` binary for end-to-end tests.
//!
//! Each [`TestServer`] gets its own temporary data directory and an
//! OS-assigned port, so tests run in parallel. It learns the port from the
//! server's log line `quire listening on http://ADDR`, then keeps draining
//! the log so the pipe never fills. The log is printed to stderr when a
//! `TestServer` is dropped during a panic, or always with `QUIRE_TEST_LOGS=1`
//! (for tests that fail by returning `Err`); `QUIRE_TEST_LOG` sets the
//! server's `RUST_LOG` (default `info`).
//!
//! Which binary: `QUIRE_BIN` if set, otherwise `<target>/debug/quire`,
//! built once per test process with `cargo build -p quire-server --bin quire`
//! so that the suite never runs a stale server.
//!
//! [`RedisServer`] runs a private `redis-server` for the cluster suite, and
//! [`Postgres`] a private PostgreSQL.
//! [`RedisCluster`] a private 3-primary, 3-replica Redis Cluster.

pub mod archive;
mod binary;
mod log;
pub mod postgres;
pub mod redis;
pub mod redis_cluster;
pub mod trace;
pub mod webhook_receiver;

pub use binary::quire_binary;
pub use postgres::Postgres;
pub use redis::RedisServer;
pub use redis_cluster::RedisCluster;
pub use webhook_receiver::WebhookReceiver;

use crate::{Client, ClientConfig, ClientError};
use log::ServerLog;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tempfile::TempDir;
use thiserror::Error;
use tokio::process::{Child, Command};

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after a signal.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts to rebind the same port on restart (it may linger briefly).
const RESTART_ATTEMPTS: u32 = 50;

/// Errors of starting, signalling and stopping the server.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot find the quire binary: {0}")]
    Binary(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("quire exited before listening ({status}); log:\n{log}")]
    ExitedEarly { status: String, log: String },
    #[error("quire printed no listening address within {timeout:?}; log:\n{log}")]
    StartTimeout { timeout: Duration, log: String },
    #[error("quire is not running")]
    NotRunning,
    #[error("quire is still running; stop it first")]
    StillRunning,
    #[error("sending a signal: {0}")]
    Signal(#[from] nix::errno::Errno),
    #[error("quire did not exit within {timeout:?} of SIGTERM; log:\n{log}")]
    StopTimeout { timeout: Duration, log: String },
}

/// A running (or stopped, restartable) `quire serve` process.
pub struct TestServer {
    binary: PathBuf,
    /// Survives restarts; removed when the server is dropped.
    data_dir: TempDir,
    /// Flags after `--listen` and `--data-dir`, repeated on restart.
    extra_args: Vec<String>,
    /// Fixed after the first start, so restarts keep client URLs valid.
    addr: SocketAddr,
    child: Option<Child>,
    /// Everything the server printed, across restarts.
    log: ServerLog,
}

impl TestServer {
    /// Starts `quire serve` on `127.0.0.1:0` with a fresh data directory.
    pub async fn start() -> Result<TestServer, ServerError> {
        Self::start_with::<[&str; 0], &str>([]).await
    }

    /// Starts the server with extra flags, e.g. `["--idle-unload-secs", "1"]`.
    pub async fn start_with<I, S>(extra_args: I) -> Result<TestServer, ServerError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let data_dir = tempfile::Builder::new().prefix("quire-test-").tempdir()?;
        Self::start_with_data_dir(data_dir, extra_args).await
    }

    /// Like [`start_with`](Self::start_with), with the data directory
    /// created inside `parent` (a small filesystem, say).
    pub async fn start_in<I, S>(parent: &Path, extra_args: I) -> Result<TestServer, ServerError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let data_dir = tempfile::Builder::new()
            .prefix("quire-test-")
            .tempdir_in(parent)?;
        Self::start_with_data_dir(data_dir, extra_args).await
    }

    /// Starts the server on a data directory prepared beforehand (a
    /// restored backup, say), which it owns and removes from then on.
    pub async fn start_on<I, S>(data_dir: TempDir, extra_args: I) -> Result<TestServer, ServerError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::start_with_data_dir(data_dir, extra_args).await
    }

    async fn start_with_data_dir<I, S>(
        data_dir: TempDir,
        extra_args: I,
    ) -> Result<TestServer, ServerError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let binary = quire_binary().await?;
        let extra_args: Vec<String> = extra_args.into_iter().map(Into::into).collect();
        let log = ServerLog::default();
        let (child, addr) =
            spawn(&binary, "127.0.0.1:0", data_dir.path(), &extra_args, &log).await?;
        Ok(TestServer {
            binary,
            data_dir,
            extra_args,
            addr,
            child: Some(child),
            log,
        })
    }

    /// The address the server listens on (kept across restarts).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR{path}`, e.g. `server.http_url("/api/docs")`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://ADDR`, the base address for [`ClientConfig`].
    pub fn ws_address(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// `ws://ADDR/ws/{doc}` with `doc` exactly as given.
    pub fn ws_url(&self, doc: &str) -> String {
        format!("ws://{}/ws/{doc}", self.addr)
    }

    /// A client configuration for document `doc` on this server.
    pub fn client_config(&self, doc: &str) -> ClientConfig {
        ClientConfig::new(self.ws_address(), doc)
    }

    /// Connects a client to `doc` and waits until it is synced.
    pub async fn client(&self, doc: &str) -> Result<Client, ClientError> {
        let client = Client::connect(self.client_config(doc)).await?;
        client.wait_synced(Duration::from_secs(10)).await?;
        Ok(client)
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.log.contents()
    }

    /// `kill -9`: no flush, no goodbye.
    pub async fn kill(&mut self) -> Result<ExitStatus, ServerError> {
        let mut child = self.child.take().ok_or(ServerError::NotRunning)?;
        child.start_kill()?;
        Ok(child.wait().await?)
    }

    /// SIGTERM, then waits for the exit; the status is returned for the
    /// caller to check (a graceful shutdown exits 0).
    pub async fn terminate(&mut self) -> Result<ExitStatus, ServerError> {
        let mut child = self.child.take().ok_or(ServerError::NotRunning)?;
        let pid = child.id().ok_or(ServerError::NotRunning)?;
        let pid =
            nix::unistd::Pid::from_raw(i32::try_from(pid).map_err(|_| ServerError::NotRunning)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                let _ = child.start_kill();
                Err(ServerError::StopTimeout {
                    timeout: STOP_TIMEOUT,
                    log: self.logs(),
                })
            }
        }
    }

    /// Replaces the flags after `--listen` and `--data-dir` that the next
    /// [`restart`](Self::restart) passes, e.g. a flag one restart needs.
    pub fn set_extra_args<I, S>(&mut self, extra_args: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args = extra_args.into_iter().map(Into::into).collect();
    }

    /// Starts the server again on the same data directory and port, after
    /// [`kill`](Self::kill) or [`terminate`](Self::terminate).
    pub async fn restart(&mut self) -> Result<(), ServerError> {
        if self.child.is_some() {
            return Err(ServerError::StillRunning);
        }
        let listen = self.addr.to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match spawn(
                &self.binary,
                &listen,
                self.data_dir.path(),
                &self.extra_args,
                &self.log,
            )
            .await
            {
                Ok((child, _)) => {
                    self.child = Some(child);
                    return Ok(());
                }
                // The old socket or the sled lock may not be released yet.
                Err(ServerError::ExitedEarly { .. }) if attempt < RESTART_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() || std::env::var_os("QUIRE_TEST_LOGS").is_some() {
            // Test support: the server's log is the first thing to read
            // when an end-to-end test fails.
            eprintln!(
                "---- quire log ({}) ----\n{}---- end of quire log ----",
                self.addr,
                self.log.contents()
            );
        }
    }
}

/// Spawns `quire serve` and waits for its listening address.
async fn spawn(
    binary: &Path,
    listen: &str,
    data_dir: &Path,
    extra_args: &[String],
    log: &ServerLog,
) -> Result<(Child, SocketAddr), ServerError> {
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra_args)
        .env("NO_COLOR", "1")
        .env(
            "RUST_LOG",
            std::env::var("QUIRE_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let listening = log.attach(&mut child);
    match tokio::time::timeout(START_TIMEOUT, listening).await {
        Ok(Ok(addr)) => Ok((child, addr)),
        Ok(Err(_)) => {
            // The output ended before the line: the process is exiting.
            let status = match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
                Ok(Ok(status)) => status.to_string(),
                _ => "still running".to_owned(),
            };
            let _ = child.start_kill();
            Err(ServerError::ExitedEarly {
                status,
                log: log.contents(),
            })
        }
        Err(_) => {
            let _ = child.start_kill();
            Err(ServerError::StartTimeout {
                timeout: START_TIMEOUT,
                log: log.contents(),
            })
        }
    }
}
