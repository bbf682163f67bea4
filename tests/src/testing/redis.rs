//! A private `redis-server` for cluster tests.
//!
//! Each [`RedisServer`] is its own process on a free port of `127.0.0.1`,
//! with persistence off (`--save "" --appendonly no`) and a temporary
//! working directory, so tests never share state and nothing lingers. It can
//! be stopped and started again on the same port, which is how tests cut
//! the cluster's Redis and bring it back; it is killed when dropped.
//!
//! Which binary: `REDIS_SERVER` if set, otherwise `redis-server` on `PATH`.
//! A missing binary is an error that says how to get one: cluster tests
//! fail loudly rather than skip.

use super::log::ServerLog;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tempfile::TempDir;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long `redis-server` may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long it may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between PING attempts while it starts.
const POLL: Duration = Duration::from_millis(20);
/// Fresh ports tried when the first one is taken before Redis binds it.
const PORT_ATTEMPTS: u32 = 5;
/// Attempts to bind the same port again on restart.
const RESTART_ATTEMPTS: u32 = 50;

/// Errors of starting and stopping `redis-server`.
#[derive(Debug, Error)]
pub enum RedisError {
    #[error(
        "cannot run the cluster tests: {0}. Install Redis (`apt-get install -y redis-server`) \
         or set REDIS_SERVER to a redis-server binary"
    )]
    Binary(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("redis-server exited before accepting connections ({status}); log:\n{log}")]
    ExitedEarly { status: String, log: String },
    #[error("redis-server did not answer PING within {timeout:?}; log:\n{log}")]
    StartTimeout { timeout: Duration, log: String },
    #[error("redis-server is not running")]
    NotRunning,
    #[error("redis-server is still running; stop it first")]
    StillRunning,
    #[error("sending a signal: {0}")]
    Signal(#[from] nix::errno::Errno),
    #[error("redis cluster: {0}")]
    Cluster(String),
}

/// A running (or stopped, restartable) `redis-server` process.
pub struct RedisServer {
    binary: PathBuf,
    /// Working directory; nothing is written there with persistence off,
    /// but Redis must not touch the test's current directory either.
    dir: TempDir,
    /// Fixed at the first start, so restarts keep `--redis-url` valid.
    port: u16,
    child: Option<Child>,
    /// Everything Redis printed, across restarts.
    log: ServerLog,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    pub async fn start() -> Result<RedisServer, RedisError> {
        let binary = redis_binary()?;
        let dir = tempfile::Builder::new().prefix("quire-redis-").tempdir()?;
        let log = ServerLog::default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            match spawn(&binary, dir.path(), port, &log, &[]).await {
                Ok(child) => {
                    return Ok(RedisServer {
                        binary,
                        dir,
                        port,
                        child: Some(child),
                        log,
                    })
                }
                // Another process took the port between our probe and Redis's bind.
                Err(RedisError::ExitedEarly { .. }) if attempt < PORT_ATTEMPTS => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// The port Redis listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, for `quire serve --redis-url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Everything Redis wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.log.contents()
    }

    /// SIGTERM, then waits for the exit (SIGKILL if it takes too long).
    /// Every client connection is closed, as in a Redis outage.
    pub async fn stop(&mut self) -> Result<ExitStatus, RedisError> {
        let mut child = self.child.take().ok_or(RedisError::NotRunning)?;
        if let Some(pid) = child.id() {
            let pid =
                nix::unistd::Pid::from_raw(i32::try_from(pid).map_err(|_| RedisError::NotRunning)?);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                child.start_kill()?;
                Ok(child.wait().await?)
            }
        }
    }

    /// `kill -9`: the process vanishes without closing anything politely.
    pub async fn kill(&mut self) -> Result<ExitStatus, RedisError> {
        let mut child = self.child.take().ok_or(RedisError::NotRunning)?;
        child.start_kill()?;
        Ok(child.wait().await?)
    }

    /// Starts Redis again on the same port after [`stop`](Self::stop) or
    /// [`kill`](Self::kill); it comes back empty (no persistence).
    pub async fn restart(&mut self) -> Result<(), RedisError> {
        if self.child.is_some() {
            return Err(RedisError::StillRunning);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match spawn(&self.binary, self.dir.path(), self.port, &self.log, &[]).await {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                // The old listening socket may linger for a moment.
                Err(RedisError::ExitedEarly { .. }) if attempt < RESTART_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() || std::env::var_os("QUIRE_TEST_LOGS").is_some() {
            // Test support: printed next to the quire logs of a failed test.
            eprintln!(
                "---- redis-server log (port {}) ----\n{}---- end of redis-server log ----",
                self.port,
                self.log.contents()
            );
        }
    }
}

/// `REDIS_SERVER` if set, otherwise the first `redis-server` on `PATH`.
pub fn redis_binary() -> Result<PathBuf, RedisError> {
    if let Some(bin) = std::env::var_os("REDIS_SERVER") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(RedisError::Binary(format!(
                "REDIS_SERVER={} is not a file",
                bin.display()
            )))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| RedisError::Binary("redis-server is not on PATH".to_owned()))
}

/// A port that was free a moment ago (the OS picks it; we release it).
pub(super) fn free_port() -> Result<u16, RedisError> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

/// Spawns `redis-server` (with `extra` arguments) and waits until it
/// answers PING.
pub(super) async fn spawn(
    binary: &Path,
    dir: &Path,
    port: u16,
    log: &ServerLog,
    extra: &[String],
) -> Result<Child, RedisError> {
    let mut command = Command::new(binary);
    command
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    // Drains the output; Redis prints no `listening on http://` line, so
    // the address receiver is not needed.
    drop(log.attach(&mut child));
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(RedisError::ExitedEarly {
                status: status.to_string(),
                log: log.contents(),
            });
        }
        if ping(port).await {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.start_kill();
            return Err(RedisError::StartTimeout {
                timeout: START_TIMEOUT,
                log: log.contents(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether something on `port` answers a RESP `PING` with `+PONG`.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<bool, std::io::Error>(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}
