//! A private PostgreSQL for cluster tests.
//!
//! Each [`Postgres`] is its own cluster (`initdb` in a temporary directory,
//! trust authentication, fsync on) served by its own postmaster on a free
//! port of `127.0.0.1`, with its socket in that directory, so tests never
//! share state. It can be crashed (`pg_ctl stop -m immediate`: no shutdown
//! checkpoint, WAL recovery at the next start) and started again on the same
//! port; it is stopped when dropped.
//!
//! Run as root (as CI does), `initdb` and the postmaster run as the
//! `postgres` user through `runuser`, since PostgreSQL refuses root. Which
//! binaries: `PG_BIN` if set, otherwise the newest `/usr/lib/postgresql/*/bin`,
//! otherwise `pg_config --bindir`. A missing PostgreSQL is an error that
//! says how to get one: the tests fail loudly rather than skip.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Output;
use tempfile::TempDir;
use thiserror::Error;
use tokio::process::Command;

#[derive(Debug, Error)]
pub enum PostgresError {
    #[error(
        "cannot run the PostgreSQL tests: {0}. Install PostgreSQL \
         (`apt-get install -y postgresql`) or set PG_BIN to its bin directory"
    )]
    Binary(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{command} failed: {output}")]
    Command { command: String, output: String },
}

/// A private PostgreSQL cluster and its postmaster.
pub struct Postgres {
    bin: PathBuf,
    /// Owned by the `postgres` user when run as root: `data/`, the log and
    /// the socket live here.
    dir: TempDir,
    port: u16,
}

impl Postgres {
    /// `initdb`, then starts the postmaster and waits until it accepts
    /// connections.
    pub async fn start() -> Result<Postgres, PostgresError> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("quire-pg-").tempdir()?;
        if is_root() {
            run(
                "chown",
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(dir.path()),
            )
            .await?;
        }
        let data = dir.path().join("data");
        run(
            "initdb",
            as_postgres(&bin.join("initdb")).arg("-D").arg(&data).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
        )
        .await?;
        let port = free_port()?;
        let postgres = Postgres { bin, dir, port };
        postgres.start_again().await?;
        Ok(postgres)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the postmaster again (after [`Postgres::crash`]) on the same
    /// port, and waits until it accepts connections.
    pub async fn start_again(&self) -> Result<(), PostgresError> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port,
            self.dir.path().display()
        );
        run(
            "pg_ctl start",
            as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.path().join("log"))
                .args(["-w", "-t", "30", "-o", &options, "start"]),
        )
        .await?;
        Ok(())
    }

    /// Stops the postmaster without a shutdown checkpoint, as a crash does:
    /// the next start replays the WAL.
    pub async fn crash(&self) -> Result<(), PostgresError> {
        run(
            "pg_ctl stop",
            as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .args(["-w", "-m", "immediate", "stop"]),
        )
        .await?;
        Ok(())
    }

    /// One value of a query (`psql -At`), as text.
    pub async fn query(&self, sql: &str) -> Result<String, PostgresError> {
        let output = run(
            "psql",
            Command::new(self.bin.join("psql"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-At",
                    "-c",
                    sql,
                ])
                .arg("-p")
                .arg(self.port.to_string()),
        )
        .await?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .uid_if_root()
            .output();
    }
}

/// Runs a command as `postgres` when the tests run as root.
trait AsPostgres {
    fn uid_if_root(&mut self) -> &mut Self;
}

impl AsPostgres for std::process::Command {
    fn uid_if_root(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        if let (true, Some((uid, gid))) = (is_root(), postgres_ids()) {
            self.uid(uid).gid(gid);
        }
        self
    }
}

fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new(program);
    if let (true, Some((uid, gid))) = (is_root(), postgres_ids()) {
        command.uid(uid).gid(gid);
    }
    command
}

fn postgres_ids() -> Option<(u32, u32)> {
    let user = nix::unistd::User::from_name("postgres").ok().flatten()?;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

async fn run(name: &str, command: &mut Command) -> Result<Output, PostgresError> {
    let output = command.output().await?;
    if !output.status.success() {
        return Err(PostgresError::Command {
            command: name.to_owned(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    Ok(output)
}

fn bin_dir() -> Result<PathBuf, PostgresError> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let output = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .map_err(|e| {
            PostgresError::Binary(format!(
                "no /usr/lib/postgresql/*/bin and no pg_config ({e})"
            ))
        })?;
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if dir.join("initdb").exists() {
        Ok(dir)
    } else {
        Err(PostgresError::Binary(format!(
            "no initdb in {}",
            dir.display()
        )))
    }
}

fn free_port() -> Result<u16, PostgresError> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
