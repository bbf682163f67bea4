//! Command line and environment configuration: one struct, passed whole.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./quire-data";
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 10;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;
pub const DEFAULT_IDLE_UNLOAD_SECS: u64 = 30;
pub const DEFAULT_SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_COMPACT_LOG_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_HISTORY_QUIET_SECS: u64 = 30;
pub const DEFAULT_HISTORY_MAX_VERSIONS: u32 = 100;
pub const DEFAULT_OUTBOUND_QUEUE: usize = 1024;
pub const DEFAULT_MAX_OUTBOUND_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_MAX_DOC_BYTES: u64 = 256 * 1024 * 1024;
pub const DEFAULT_RATE_MESSAGES_PER_SEC: u64 = 200;
pub const DEFAULT_RATE_BYTES_PER_SEC: u64 = 4 * 1024 * 1024;
pub const DEFAULT_RATE_BURST_SECS: u64 = 10;
pub const DEFAULT_PING_INTERVAL_SECS: u64 = 30;
pub const DEFAULT_DRAIN_GRACE_SECS: u64 = 0;
pub const DEFAULT_CLUSTER_RESYNC_SECS: u64 = 5;
pub const DEFAULT_POSTGRES_LAG_SECS: u64 = 10;
pub const DEFAULT_CLUSTER_HEARTBEAT_MS: u64 = 1000;
pub const DEFAULT_HOCUSPOCUS_MAX_SESSIONS: usize = 100;
pub const DEFAULT_HOCUSPOCUS_PING_SECS: u64 = 15;
pub const DEFAULT_HOCUSPOCUS_AUTH_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_WEBHOOK_DEBOUNCE_MS: u64 = 2000;
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_WEBHOOK_MAX_ATTEMPTS: u32 = 12;
pub const DEFAULT_WEBHOOK_RETRY_MS: u64 = 1000;

/// An event webhooks can deliver (`--webhook-events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum WebhookEvent {
    /// A document was stored for the first time (or again after a delete).
    #[value(name = "document.created")]
    DocumentCreated,
    /// A document changed: debounced, with its new state vector.
    #[value(name = "document.updated")]
    DocumentUpdated,
    #[value(name = "document.deleted")]
    DocumentDeleted,
    /// A client joined a document (a y-websocket connection, or a
    /// Hocuspocus session that authenticated).
    #[value(name = "connection.opened")]
    ConnectionOpened,
    /// A client left a document.
    #[value(name = "connection.closed")]
    ConnectionClosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, with span fields.
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "quire", version, about = "Collaborative Yjs document server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `quire` with no sub-command serves, with these flags.
    #[command(flatten)]
    pub serve: Config,
}

/// Parsed once at start and taken apart at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve documents over WebSocket and REST (the default).
    Serve(Config),
    /// Restore a backup archive (`GET /api/backup`) into an empty data
    /// directory, offline. Nothing is written unless the whole archive
    /// verifies.
    Restore(RestoreArgs),
    /// Verify a stopped server's data directory, or a backup archive,
    /// offline; exits non-zero on any problem, naming it.
    Check(CheckArgs),
}

impl Cli {
    /// What to do: `quire` with no sub-command serves.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The archive, as `GET /api/backup` wrote it.
    #[arg(long)]
    pub archive: PathBuf,
    /// The data directory to create; it must be empty or not exist.
    #[arg(long)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct CheckArgs {
    /// A backup archive: manifest present, every SHA-256, every snapshot
    /// decodes to the manifest's state vector.
    #[arg(long)]
    pub archive: Option<PathBuf>,
    /// A data directory (its server stopped): the commit journal against
    /// sled, and every stored document loads.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// HTTP and WebSocket address; port 0 picks a free port.
    #[arg(long, env = "QUIRE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Directory of the sled database.
    #[arg(long, env = "QUIRE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Cluster mode through this Redis (`redis://host:port`), or through a
    /// Redis Cluster given as a comma-separated list of seed nodes (a
    /// cluster is detected either way); unset: single node.
    #[arg(long, env = "QUIRE_REDIS_URL")]
    pub redis_url: Option<String>,

    /// The shared record of every document (`postgres://user@host:port/db`):
    /// documents load from it, and each node's updates are uploaded to it
    /// from the node's sled spool, so no document depends on one node's
    /// disk. Unset: sled is the record (single node).
    #[arg(long, env = "QUIRE_POSTGRES_URL")]
    pub postgres_url: Option<String>,

    /// With `--postgres-url`: `/readyz` answers 503 "storage lagging" while
    /// an update waits longer than this to reach PostgreSQL.
    #[arg(long, env = "QUIRE_POSTGRES_LAG_SECS", default_value_t = DEFAULT_POSTGRES_LAG_SECS)]
    pub postgres_lag_secs: u64,

    /// This node's id in the cluster; by default a random UUID generated once
    /// and kept in the data directory.
    #[arg(long, env = "QUIRE_NODE_ID")]
    pub node_id: Option<String>,

    /// In cluster mode, each loaded document compares state with its peers
    /// this often, repairing whatever pub/sub lost.
    #[arg(long, env = "QUIRE_CLUSTER_RESYNC_SECS", default_value_t = DEFAULT_CLUSTER_RESYNC_SECS)]
    pub cluster_resync_secs: u64,

    /// In cluster mode, this node tells its peers it is alive this often;
    /// a peer silent for three beats is declared dead and the presence it
    /// relayed is removed.
    #[arg(long, env = "QUIRE_CLUSTER_HEARTBEAT_MS", default_value_t = DEFAULT_CLUSTER_HEARTBEAT_MS)]
    pub cluster_heartbeat_ms: u64,

    /// Group commit window: applied updates reach disk at most this long after
    /// they were applied; 0 flushes before an update is relayed.
    #[arg(long, env = "QUIRE_FLUSH_INTERVAL_MS", default_value_t = DEFAULT_FLUSH_INTERVAL_MS)]
    pub flush_interval_ms: u64,

    /// Larger WebSocket messages close the connection with 1009; also the
    /// largest REST update body.
    #[arg(long, env = "QUIRE_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// WebSocket upgrades past this many open connections get HTTP 503. Each
    /// is an open file: a warning at start tells if the limit is lower.
    #[arg(long, env = "QUIRE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// A document with no connections is compacted, flushed and dropped from
    /// memory after this many seconds.
    #[arg(long, env = "QUIRE_IDLE_UNLOAD_SECS", default_value_t = DEFAULT_IDLE_UNLOAD_SECS)]
    pub idle_unload_secs: u64,

    /// Comma-separated allowed `Origin` values; unset allows any. Others get
    /// 403 at upgrade.
    #[arg(long, env = "QUIRE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,

    /// sled page cache size (sled's own default is 1 GiB).
    #[arg(long, env = "QUIRE_SLED_CACHE_BYTES", default_value_t = DEFAULT_SLED_CACHE_BYTES)]
    pub sled_cache_bytes: u64,

    /// A document's update log is merged into its snapshot once it holds
    /// more than this many bytes.
    #[arg(long, env = "QUIRE_COMPACT_LOG_BYTES", default_value_t = DEFAULT_COMPACT_LOG_BYTES)]
    pub compact_log_bytes: u64,

    /// A version of a document is recorded once no update arrived for this
    /// many seconds after one that changed it (and when it unloads).
    #[arg(long, env = "QUIRE_HISTORY_QUIET_SECS", default_value_t = DEFAULT_HISTORY_QUIET_SECS,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub history_quiet_secs: u64,

    /// Versions kept per document; past it the oldest automatic ones
    /// (`auto`, `unload`) go first, then the oldest of the others.
    #[arg(long, env = "QUIRE_HISTORY_MAX_VERSIONS", default_value_t = DEFAULT_HISTORY_MAX_VERSIONS,
        value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub history_max_versions: u32,

    /// Updates applied within this many milliseconds are relayed together:
    /// each client gets them in one write. 0 relays as soon as the
    /// document has nothing else queued (updates that arrived together
    /// still share a write). A window trades latency for CPU on documents
    /// with many readers; see docs/benchmarks.md.
    #[arg(long, env = "QUIRE_BROADCAST_WINDOW_MS", default_value_t = 0)]
    pub broadcast_window_ms: u64,

    /// Frames queued for one client before it counts as too slow and is
    /// disconnected (it resyncs on reconnect).
    #[arg(long, env = "QUIRE_OUTBOUND_QUEUE", default_value_t = DEFAULT_OUTBOUND_QUEUE)]
    pub outbound_queue: usize,

    /// Bytes queued for one client before it counts as too slow.
    #[arg(long, env = "QUIRE_MAX_OUTBOUND_BYTES", default_value_t = DEFAULT_MAX_OUTBOUND_BYTES)]
    pub max_outbound_bytes: usize,

    /// HS256 secret for access tokens; unset means open mode (anyone reads
    /// and writes every document; a warning is logged).
    #[arg(long, env = "QUIRE_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// Bearer token for admin REST calls (DELETE, POST /api/tokens).
    #[arg(long, env = "QUIRE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// An update that would grow a document's stored size past this is
    /// refused and the document left unchanged.
    #[arg(long, env = "QUIRE_MAX_DOC_BYTES", default_value_t = DEFAULT_MAX_DOC_BYTES)]
    pub max_doc_bytes: u64,

    /// Sustained WebSocket messages per second one connection may send.
    #[arg(long, env = "QUIRE_RATE_MESSAGES_PER_SEC", default_value_t = DEFAULT_RATE_MESSAGES_PER_SEC)]
    pub rate_messages_per_sec: u64,

    /// Sustained bytes per second one connection may send.
    #[arg(long, env = "QUIRE_RATE_BYTES_PER_SEC", default_value_t = DEFAULT_RATE_BYTES_PER_SEC)]
    pub rate_bytes_per_sec: u64,

    /// Seconds of the sustained rates a connection may send in one burst;
    /// past that it is closed with 1008.
    #[arg(long, env = "QUIRE_RATE_BURST_SECS", default_value_t = DEFAULT_RATE_BURST_SECS)]
    pub rate_burst_secs: u64,

    /// The server pings every connection this often; one that sends nothing
    /// (not even a pong) for two intervals is dropped.
    #[arg(long, env = "QUIRE_PING_INTERVAL_SECS", default_value_t = DEFAULT_PING_INTERVAL_SECS)]
    pub ping_interval_secs: u64,

    /// Documents one Hocuspocus socket (`/hocuspocus`, `/ws`) may have open
    /// at once; an Auth for one more is answered PermissionDenied.
    #[arg(long, env = "QUIRE_HOCUSPOCUS_MAX_SESSIONS", default_value_t = DEFAULT_HOCUSPOCUS_MAX_SESSIONS)]
    pub hocuspocus_max_sessions: usize,

    /// Hocuspocus sockets of v4 providers (their Auth carried a version) get
    /// the application-level Ping frame this often; 0 sends none. v3
    /// providers never get it (they throw on it).
    #[arg(long, env = "QUIRE_HOCUSPOCUS_PING_SECS", default_value_t = DEFAULT_HOCUSPOCUS_PING_SECS)]
    pub hocuspocus_ping_secs: u64,

    /// A Hocuspocus socket on which no document authenticated within this
    /// many seconds of opening is closed with 4408.
    #[arg(long, env = "QUIRE_HOCUSPOCUS_AUTH_TIMEOUT_SECS", default_value_t = DEFAULT_HOCUSPOCUS_AUTH_TIMEOUT_SECS)]
    pub hocuspocus_auth_timeout_secs: u64,

    /// On SIGTERM, `/readyz` turns 503 and upgrades are refused at once;
    /// open sockets are closed with 1001 this many seconds later, so load
    /// balancers move clients elsewhere first.
    #[arg(long, env = "QUIRE_DRAIN_GRACE_SECS", default_value_t = DEFAULT_DRAIN_GRACE_SECS)]
    pub drain_grace_secs: u64,

    /// Start even if storage lost writes it had acknowledged (damaged
    /// media: sled drops everything after a bad record). Each affected
    /// document is logged, and what survived becomes the new baseline.
    /// Without it such a start is refused; see docs/operations.md.
    #[arg(long, env = "QUIRE_ACCEPT_DATA_LOSS")]
    pub accept_data_loss: bool,

    /// POST signed document events to this URL (repeat the flag, or give a
    /// comma-separated list, for several receivers). Needs
    /// `--webhook-secret`; see docs/webhooks.md.
    #[arg(long = "webhook-url", env = "QUIRE_WEBHOOK_URL", value_delimiter = ',')]
    pub webhook_urls: Vec<String>,

    /// The key deliveries are signed with (Standard Webhooks: a `whsec_`
    /// base64 secret, or any text used as its bytes).
    #[arg(long, env = "QUIRE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Comma-separated events to deliver.
    #[arg(
        long,
        env = "QUIRE_WEBHOOK_EVENTS",
        value_enum,
        value_delimiter = ',',
        default_value = "document.created,document.updated,document.deleted"
    )]
    pub webhook_events: Vec<WebhookEvent>,

    /// `document.updated` also carries the update since the document's
    /// previous event (v1, base64), not only its state vector.
    #[arg(long, env = "QUIRE_WEBHOOK_INCLUDE_UPDATE")]
    pub webhook_include_update: bool,

    /// `document.updated` is sent once a document was quiet this long after
    /// a change (or at the latest five times this long after the first).
    #[arg(long, env = "QUIRE_WEBHOOK_DEBOUNCE_MS", default_value_t = DEFAULT_WEBHOOK_DEBOUNCE_MS)]
    pub webhook_debounce_ms: u64,

    /// A delivery not answered within this counts as failed.
    #[arg(long, env = "QUIRE_WEBHOOK_TIMEOUT_MS", default_value_t = DEFAULT_WEBHOOK_TIMEOUT_MS)]
    pub webhook_timeout_ms: u64,

    /// Attempts per event and receiver before it becomes a dead letter.
    #[arg(long, env = "QUIRE_WEBHOOK_MAX_ATTEMPTS", default_value_t = DEFAULT_WEBHOOK_MAX_ATTEMPTS)]
    pub webhook_max_attempts: u32,

    /// The wait before the first retry; it doubles with each failure (up to
    /// 5 minutes), with jitter.
    #[arg(long, env = "QUIRE_WEBHOOK_RETRY_MS", default_value_t = DEFAULT_WEBHOOK_RETRY_MS)]
    pub webhook_retry_ms: u64,

    /// Log line format (stderr).
    #[arg(long, env = "QUIRE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

impl Config {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    pub fn broadcast_window(&self) -> Duration {
        Duration::from_millis(self.broadcast_window_ms)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs.max(1))
    }

    pub fn cluster_heartbeat(&self) -> Duration {
        Duration::from_millis(self.cluster_heartbeat_ms.max(10))
    }

    /// None: no Hocuspocus Ping.
    pub fn hocuspocus_ping(&self) -> Option<Duration> {
        (self.hocuspocus_ping_secs > 0).then(|| Duration::from_secs(self.hocuspocus_ping_secs))
    }

    pub fn hocuspocus_auth_timeout(&self) -> Duration {
        Duration::from_secs(self.hocuspocus_auth_timeout_secs.max(1))
    }

    pub fn idle_unload(&self) -> Duration {
        Duration::from_secs(self.idle_unload_secs)
    }

    /// Defaults with a given data directory, for tests.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Cli::parse_from(["quire"]).serve;
        config.data_dir = data_dir.into();
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_is_the_default_sub_command() {
        let serve = |args: &[&str]| match Cli::parse_from(args).into_command() {
            Command::Serve(config) => config,
            other => panic!("{args:?} parsed as {other:?}"),
        };
        let bare = serve(&["quire", "--listen", "127.0.0.1:0"]);
        let explicit = serve(&["quire", "serve", "--listen", "127.0.0.1:0"]);
        assert_eq!(bare.listen, explicit.listen);
        assert_eq!(bare.flush_interval_ms, DEFAULT_FLUSH_INTERVAL_MS);
    }

    #[test]
    fn check_takes_an_archive_or_a_data_dir_not_both_nor_neither() {
        let cases: &[(&[&str], bool)] = &[
            (&["quire", "check", "--archive", "a.tar"], true),
            (&["quire", "check", "--data-dir", "d"], true),
            (&["quire", "check"], false),
            (
                &["quire", "check", "--archive", "a", "--data-dir", "d"],
                false,
            ),
            (
                &["quire", "restore", "--archive", "a", "--data-dir", "d"],
                true,
            ),
            (&["quire", "restore", "--archive", "a"], false),
        ];
        for (args, ok) in cases {
            assert_eq!(Cli::try_parse_from(*args).is_ok(), *ok, "{args:?}");
        }
    }

    #[test]
    fn allowed_origins_is_a_comma_list() {
        let c = Cli::parse_from(["quire", "--allowed-origins", "http://a,http://b"]).serve;
        assert_eq!(
            c.allowed_origins,
            Some(vec!["http://a".to_owned(), "http://b".to_owned()])
        );
    }
}
