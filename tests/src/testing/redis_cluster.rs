//! A private Redis Cluster for cluster tests: 3 primaries and 3 replicas.
//!
//! Six `redis-server --cluster-enabled yes` processes on free ports of
//! `127.0.0.1` (client and cluster-bus ports both picked by the OS), each in
//! its own temporary directory, joined by `redis-cli --cluster create
//! --cluster-replicas 1`. [`RedisCluster::start`] returns once every node
//! reports `cluster_state:ok` and every replica `master_link_status:up`;
//! every process is killed when the fixture is dropped.
//!
//! The settings that make faults deterministic on one small machine:
//! `--cluster-node-timeout 2000` (a dead primary is failed over in a few
//! seconds), `--cluster-replica-validity-factor 0` (a replica always tries
//! to fail over, however long it was disconnected) and
//! `--repl-diskless-sync-delay 0` (a replica that just joined is in sync at
//! once, instead of waiting 5 s and then refusing to fail over). No
//! persistence (`--save "" --appendonly no`).
//!
//! Which binaries: `REDIS_SERVER` / `REDIS_CLI` if set, otherwise
//! `redis-server` / `redis-cli` on `PATH`; a missing one is an error, so the
//! tests fail loudly rather than skip.

use super::log::ServerLog;
use super::redis::{free_port, redis_binary, spawn, RedisError};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Nodes: 3 primaries, each with one replica.
const NODES: usize = 6;
/// Node timeout: how long a primary may be silent before its replica takes over.
pub const NODE_TIMEOUT_MS: u64 = 2000;
/// How long the cluster may take to form, or to recover from a fault.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two probes of the cluster's state.
const POLL: Duration = Duration::from_millis(50);
/// Attempts with fresh ports when one was taken before Redis bound it.
const PORT_ATTEMPTS: u32 = 5;
/// Hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;

struct Node {
    port: u16,
    /// Kept for the node's lifetime: its `nodes.conf` lives there.
    _dir: TempDir,
    child: Option<Child>,
    log: ServerLog,
}

/// A running Redis Cluster; killed when dropped.
pub struct RedisCluster {
    cli: PathBuf,
    nodes: Vec<Node>,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone)]
struct NodeLine {
    port: u16,
    primary: bool,
    failed: bool,
    slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster and waits until it is healthy.
    pub async fn start() -> Result<RedisCluster, RedisError> {
        let binary = redis_binary()?;
        let cli = redis_cli_binary()?;
        let mut nodes = Vec::with_capacity(NODES);
        for _ in 0..NODES {
            nodes.push(start_node(&binary).await?);
        }
        let cluster = RedisCluster { cli, nodes };
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port)),
        );
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let port = cluster.nodes[0].port;
        tokio::time::timeout(SETTLE_TIMEOUT, cluster.cli_at(port, &create))
            .await
            .map_err(|_| RedisError::Cluster("redis-cli --cluster create timed out".into()))??;
        cluster.wait_healthy().await?;
        Ok(cluster)
    }

    /// Every node as a `redis://` seed, comma-separated, for `--redis-url`.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Everything the nodes printed.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("---- redis node {} ----\n{}", n.port, n.log.contents()))
            .collect()
    }

    /// `redis-cli -p PORT args…`, its stdout; an error if it fails or
    /// answers with an error.
    async fn cli_at(&self, port: u16, args: &[String]) -> Result<String, RedisError> {
        let output = Command::new(&self.cli)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() || stdout.starts_with("ERR") || stdout.contains("[ERR]") {
            return Err(RedisError::Cluster(format!(
                "redis-cli -p {port} {args:?}: {}\n{stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(stdout)
    }

    /// Runs a command on any running node.
    async fn cli(&self, args: &[&str]) -> Result<String, RedisError> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let mut last = RedisError::NotRunning;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            match self.cli_at(node.port, &args).await {
                Ok(out) => return Ok(out),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The hash slot of a key or channel name (`CLUSTER KEYSLOT`).
    pub async fn keyslot(&self, name: &str) -> Result<u16, RedisError> {
        let out = self.cli(&["CLUSTER", "KEYSLOT", name]).await?;
        out.trim()
            .parse()
            .map_err(|_| RedisError::Cluster(format!("CLUSTER KEYSLOT answered {out:?}")))
    }

    /// Subscribers of shard channel `channel` on the primary owning its
    /// slot (`PUBSUB SHARDNUMSUB`); classic subscribers are not counted.
    pub async fn shard_subscribers(&self, channel: &str) -> Result<u64, RedisError> {
        let owner = self.owner_of(self.keyslot(channel).await?).await?;
        let args = ["PUBSUB", "SHARDNUMSUB", channel].map(String::from);
        let out = self.cli_at(self.nodes[owner].port, &args).await?;
        out.lines()
            .nth(1)
            .and_then(|count| count.trim().parse().ok())
            .ok_or_else(|| RedisError::Cluster(format!("PUBSUB SHARDNUMSUB answered {out:?}")))
    }

    /// `CLUSTER NODES` as seen by the running node at `port`.
    async fn nodes_seen_by(&self, port: u16) -> Result<Vec<NodeLine>, RedisError> {
        let out = self
            .cli_at(port, &["CLUSTER".into(), "NODES".into()])
            .await?;
        Ok(out.lines().filter_map(parse_node_line).collect())
    }

    /// The index (in start order) of the primary owning `slot`, as the
    /// first running node sees it.
    pub async fn owner_of(&self, slot: u16) -> Result<usize, RedisError> {
        let port = self.running_port()?;
        let lines = self.nodes_seen_by(port).await?;
        let owner = lines
            .iter()
            .find(|l| {
                l.primary && !l.failed && l.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .ok_or_else(|| RedisError::Cluster(format!("no primary owns slot {slot}")))?;
        self.index_of(owner.port)
    }

    /// The indexes of the healthy primaries, as the first running node sees them.
    pub async fn primaries(&self) -> Result<Vec<usize>, RedisError> {
        let port = self.running_port()?;
        let mut primaries = Vec::new();
        for line in self.nodes_seen_by(port).await? {
            if line.primary && !line.failed && !line.slots.is_empty() {
                primaries.push(self.index_of(line.port)?);
            }
        }
        primaries.sort_unstable();
        Ok(primaries)
    }

    fn running_port(&self) -> Result<u16, RedisError> {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .map(|n| n.port)
            .ok_or(RedisError::NotRunning)
    }

    fn index_of(&self, port: u16) -> Result<usize, RedisError> {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .ok_or_else(|| RedisError::Cluster(format!("no node on port {port}")))
    }

    async fn id_of(&self, index: usize) -> Result<String, RedisError> {
        let out = self
            .cli_at(self.nodes[index].port, &["CLUSTER".into(), "MYID".into()])
            .await?;
        Ok(out.trim().to_owned())
    }

    /// Moves `slot` from its owner to primary `to` in place (no keys live
    /// in it): `IMPORTING` on the target, `MIGRATING` on the source, then
    /// `NODE` on the target, the source and the other primaries, the order
    /// `redis-cli --cluster reshard` uses. Returns when the source let go of
    /// the slot (its subscribers of the slot's shard channels were just
    /// unsubscribed).
    pub async fn migrate_slot(&self, slot: u16, to: usize) -> Result<Instant, RedisError> {
        let from = self.owner_of(slot).await?;
        if from == to {
            return Err(RedisError::Cluster(format!(
                "slot {slot} is on node {to} already"
            )));
        }
        let (from_id, to_id) = (self.id_of(from).await?, self.id_of(to).await?);
        let slot_arg = slot.to_string();
        let setslot = |state: &str, id: &str| -> Vec<String> {
            ["CLUSTER", "SETSLOT", &slot_arg, state, id]
                .map(String::from)
                .to_vec()
        };
        let (from_port, to_port) = (self.nodes[from].port, self.nodes[to].port);
        self.cli_at(to_port, &setslot("IMPORTING", &from_id))
            .await?;
        self.cli_at(from_port, &setslot("MIGRATING", &to_id))
            .await?;
        self.cli_at(to_port, &setslot("NODE", &to_id)).await?;
        self.cli_at(from_port, &setslot("NODE", &to_id)).await?;
        let moved = Instant::now();
        for other in self.primaries().await? {
            if other != from && other != to {
                self.cli_at(self.nodes[other].port, &setslot("NODE", &to_id))
                    .await?;
            }
        }
        Ok(moved)
    }

    /// `kill -9` of node `index`.
    pub async fn kill(&mut self, index: usize) -> Result<(), RedisError> {
        let mut child = self.nodes[index]
            .child
            .take()
            .ok_or(RedisError::NotRunning)?;
        child.start_kill()?;
        child.wait().await?;
        Ok(())
    }

    /// Waits until a running primary other than a killed one owns `slot`
    /// and every running node says `cluster_state:ok`; returns that primary.
    pub async fn wait_failed_over(&self, slot: u16) -> Result<usize, RedisError> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            if let Ok(owner) = self.owner_of(slot).await {
                if self.nodes[owner].child.is_some() && self.all_ok().await {
                    return Ok(owner);
                }
            }
            if Instant::now() > deadline {
                return Err(RedisError::Cluster(format!(
                    "slot {slot} was not failed over within {SETTLE_TIMEOUT:?}\n{}",
                    self.logs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether every running node says `cluster_state:ok`.
    async fn all_ok(&self) -> bool {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let info = self
                .cli_at(node.port, &["CLUSTER".into(), "INFO".into()])
                .await;
            if !matches!(info, Ok(info) if info.contains("cluster_state:ok")) {
                return false;
            }
        }
        true
    }

    /// Every node `cluster_state:ok`, all 16384 slots served by 3
    /// primaries, and every replica's link to its primary up.
    async fn wait_healthy(&self) -> Result<(), RedisError> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            if self.all_ok().await && self.replicas_linked().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(RedisError::Cluster(format!(
                    "the cluster did not become healthy within {SETTLE_TIMEOUT:?}\n{}",
                    self.logs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn replicas_linked(&self) -> bool {
        let mut replicas = 0;
        for node in &self.nodes {
            let info = self
                .cli_at(node.port, &["INFO".into(), "replication".into()])
                .await;
            let Ok(info) = info else { return false };
            if info.contains("role:slave") {
                if !info.contains("master_link_status:up") {
                    return false;
                }
                replicas += 1;
            }
        }
        let Ok(port) = self.running_port() else {
            return false;
        };
        let served: u32 = match self.nodes_seen_by(port).await {
            Ok(lines) => lines
                .iter()
                .filter(|l| l.primary)
                .flat_map(|l| l.slots.iter())
                .map(|(a, b)| u32::from(b - a) + 1)
                .sum(),
            Err(_) => return false,
        };
        replicas == NODES / 2 && served == u32::from(SLOTS)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        if std::thread::panicking() || std::env::var_os("QUIRE_TEST_LOGS").is_some() {
            eprintln!("{}---- end of redis cluster logs ----", self.logs());
        }
    }
}

async fn start_node(binary: &std::path::Path) -> Result<Node, RedisError> {
    let dir = tempfile::Builder::new()
        .prefix("quire-redis-cluster-")
        .tempdir()?;
    let log = ServerLog::default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (port, bus) = (free_port()?, free_port()?);
        let extra: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &bus.to_string(),
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &NODE_TIMEOUT_MS.to_string(),
            "--cluster-replica-validity-factor",
            "0",
            "--repl-diskless-sync-delay",
            "0",
        ]
        .map(String::from)
        .to_vec();
        match spawn(binary, dir.path(), port, &log, &extra).await {
            Ok(child) => {
                return Ok(Node {
                    port,
                    _dir: dir,
                    child: Some(child),
                    log,
                })
            }
            Err(RedisError::ExitedEarly { .. }) if attempt < PORT_ATTEMPTS || port == bus => {}
            Err(err) => return Err(err),
        }
    }
}

/// `REDIS_CLI` if set, otherwise the first `redis-cli` on `PATH`.
pub fn redis_cli_binary() -> Result<PathBuf, RedisError> {
    if let Some(bin) = std::env::var_os("REDIS_CLI") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(RedisError::Binary(format!(
                "REDIS_CLI={} is not a file",
                bin.display()
            )))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-cli"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            RedisError::Binary(
                "redis-cli is not on PATH (Debian: apt-get install -y redis-tools)".to_owned(),
            )
        })
}

/// `<id> <ip:port@bus[,host]> <flags> <primary> <ping> <pong> <epoch> <link> <slots…>`
fn parse_node_line(line: &str) -> Option<NodeLine> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let address = fields[1].split(['@', ',']).next()?;
    let port = address.rsplit(':').next()?.parse().ok()?;
    let flags: Vec<&str> = fields[2].split(',').collect();
    let slots = fields[8..]
        .iter()
        // `[slot->-id]` / `[slot-<-id]`: a migration in progress, not owned.
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => {
                let slot = s.parse().ok()?;
                Some((slot, slot))
            }
        })
        .collect();
    Some(NodeLine {
        port,
        primary: flags.contains(&"master"),
        failed: flags.iter().any(|f| f.starts_with("fail")),
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_parse() {
        let line =
            "07c3 127.0.0.1:30004@31004 myself,master - 0 0 1 connected 0-5460 7000 [93->-e7d1]";
        let node = parse_node_line(line).expect("parses");
        assert_eq!(node.port, 30004);
        assert!(node.primary && !node.failed);
        assert_eq!(node.slots, vec![(0, 5460), (7000, 7000)]);
        let failed = parse_node_line("e7d1 127.0.0.1:30005@31005 master,fail - 1 1 2 disconnected")
            .expect("parses");
        assert!(failed.failed && failed.slots.is_empty());
        let replica =
            parse_node_line("a1 127.0.0.1:30006@31006 slave 07c3 0 1 3 connected").expect("parses");
        assert!(!replica.primary);
    }
}
