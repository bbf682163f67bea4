//! The cluster under test, and helpers shared by the cluster tests.

use anyhow::{bail, ensure, Context, Result};
use quire_client::testing::{Postgres, RedisCluster, RedisServer, TestServer};
use quire_client::{Client, ClientConfig};
use std::future::Future;
use std::time::Duration;
use yrs::{Doc, GetString, ReadTxn, Text, Transact};

/// Generous guard for anything that should happen "soon"; never a speed target.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// Pause between two probes of a condition only observable over HTTP.
const POLL: Duration = Duration::from_millis(20);

/// `--cluster-resync-secs` of every node: out of reach of any test, so a
/// test passes only through the mechanism it names (relay, heal on load,
/// heal after a Redis reconnect), never by the periodic resync's rescue.
pub(crate) const NO_PERIODIC_RESYNC: &str = "3600";

/// The root text every test edits.
pub(crate) const ROOT: &str = "content";

/// One `redis-server` and `quire` nodes sharing it, each with its own sled
/// directory, and with [`Cluster::start_recorded`] one PostgreSQL, the
/// shared record of every document. Node `i` has node id `node-{a,b,c,…}`.
pub(crate) struct Cluster {
    pub redis: RedisServer,
    pub nodes: Vec<TestServer>,
    pub postgres: Option<Postgres>,
}

impl Cluster {
    /// Starts Redis, then `count` nodes, and waits until every node reports
    /// ready (connected to Redis).
    pub(crate) async fn start(count: usize) -> Result<Cluster> {
        Self::start_with(count, None, &[]).await
    }

    /// Like [`Cluster::start`], with documents recorded in a private
    /// PostgreSQL (`--postgres-url`) and `extra` flags on every node.
    pub(crate) async fn start_recorded(count: usize, extra: &[&str]) -> Result<Cluster> {
        let postgres = Postgres::start().await?;
        Self::start_with(count, Some(postgres), extra).await
    }

    async fn start_with(
        count: usize,
        postgres: Option<Postgres>,
        extra: &[&str],
    ) -> Result<Cluster> {
        let redis = RedisServer::start().await?;
        let nodes = start_nodes(&redis.url(), count, postgres.as_ref(), extra).await?;
        Ok(Cluster {
            redis,
            nodes,
            postgres,
        })
    }

    pub(crate) fn node(&self, index: usize) -> &TestServer {
        &self.nodes[index]
    }
}

/// Empties a stopped node's data directory, as a lost disk would.
pub(crate) fn wipe_data_dir(node: &TestServer) -> Result<()> {
    ensure!(!node.is_running(), "wiping the data dir of a running node");
    let dir = node.data_dir();
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    std::fs::create_dir(dir)?;
    Ok(())
}

/// A private Redis Cluster (3 primaries, 3 replicas) and `quire` nodes
/// given all six as `--redis-url` seeds.
pub(crate) struct ShardedCluster {
    pub redis: RedisCluster,
    pub nodes: Vec<TestServer>,
}

impl ShardedCluster {
    /// Starts the Redis Cluster, then `count` nodes, and waits until every
    /// node reports ready.
    pub(crate) async fn start(count: usize) -> Result<ShardedCluster> {
        let redis = RedisCluster::start().await?;
        let nodes = start_nodes(&redis.seeds(), count, None, &[]).await?;
        Ok(ShardedCluster { redis, nodes })
    }

    pub(crate) fn node(&self, index: usize) -> &TestServer {
        &self.nodes[index]
    }
}

/// Starts `count` nodes on `redis_url` (one URL or a list of seeds) with
/// node ids `node-a`, `node-b`, … and the periodic resync out of reach,
/// recording in `postgres` if given, with `extra` flags, and waits until
/// each is ready.
async fn start_nodes(
    redis_url: &str,
    count: usize,
    postgres: Option<&Postgres>,
    extra: &[&str],
) -> Result<Vec<TestServer>> {
    let mut nodes = Vec::with_capacity(count);
    for index in 0..count {
        let mut args = vec![
            "--redis-url".to_owned(),
            redis_url.to_owned(),
            "--node-id".to_owned(),
            node_id(index),
            "--cluster-resync-secs".to_owned(),
            NO_PERIODIC_RESYNC.to_owned(),
        ];
        if let Some(postgres) = postgres {
            args.extend(["--postgres-url".to_owned(), postgres.url()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        nodes.push(TestServer::start_with(args).await?);
    }
    for node in &nodes {
        wait_ready(node).await?;
    }
    Ok(nodes)
}

/// `node-a`, `node-b`, …
pub(crate) fn node_id(index: usize) -> String {
    let letter = char::from(b'a' + u8::try_from(index).expect("few nodes"));
    format!("node-{letter}")
}

/// Connects a client of `doc` to `node` and waits for its sync step 2.
pub(crate) async fn client(node: &TestServer, doc: &str) -> Result<Client> {
    connect(ClientConfig::new(node.ws_address(), doc)).await
}

/// Connects with `config` and waits for the server's sync step 2.
pub(crate) async fn connect(config: ClientConfig) -> Result<Client> {
    let url = format!("{}/ws/{}", config.address, config.doc);
    let client = Client::connect(config)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    client
        .wait_synced(WAIT)
        .await
        .with_context(|| format!("syncing with {url}"))?;
    Ok(client)
}

/// A v1 update that inserts `chunk` at the start of text `root`, made by a
/// fresh client id.
pub(crate) fn text_update(root: &str, chunk: &str) -> Vec<u8> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text(root);
    text.insert(&mut doc.transact_mut(), 0, chunk);
    let update = doc
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    update
}

/// Plain text of root `root` in `doc` (empty if absent).
pub(crate) fn text_of(doc: &Doc, root: &str) -> String {
    let txn = doc.transact();
    txn.get_text(root)
        .map(|t| t.get_string(&txn))
        .unwrap_or_default()
}

/// A tiny deterministic generator (xorshift64*), so a failing run can be
/// replayed exactly.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let value = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32;
        usize::try_from(value).expect("32 bits fit") % bound.max(1)
    }
}

/// Inserts `word` and a space at a random word boundary of root [`ROOT`],
/// in one transaction. Each word is one insertion at a boundary, so no
/// concurrent insertion can ever land inside it: words stay whole, and a
/// text's words say exactly which edits it holds.
pub(crate) fn insert_word(client: &Client, word: &str, rng: &mut Rng) {
    let text = client.doc().get_or_insert_text(ROOT);
    let mut txn = client.doc().transact_mut();
    let current = text.get_string(&txn);
    let boundaries: Vec<usize> = std::iter::once(0)
        .chain(current.match_indices(' ').map(|(at, _)| at + 1))
        .collect();
    let at = boundaries[rng.below(boundaries.len())];
    text.insert(
        &mut txn,
        u32::try_from(at).expect("short text"),
        &format!("{word} "),
    );
}

/// Removes `word` (and its space) from root [`ROOT`]; false if absent.
pub(crate) fn delete_word(client: &Client, word: &str) -> bool {
    let text = client.doc().get_or_insert_text(ROOT);
    let mut txn = client.doc().transact_mut();
    let current = text.get_string(&txn);
    let needle = format!("{word} ");
    let found = std::iter::once(0)
        .chain(current.match_indices(' ').map(|(at, _)| at + 1))
        .find(|&at| current[at..].starts_with(&needle));
    match found {
        Some(at) => {
            let at = u32::try_from(at).expect("short text");
            let len = u32::try_from(needle.len()).expect("short word");
            text.remove_range(&mut txn, at, len);
            true
        }
        None => false,
    }
}

/// The words of a text, sorted: the multiset of edits it holds.
pub(crate) fn words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    words.sort_unstable();
    words
}

/// Sorted copy of `words`, for comparing with [`words`].
pub(crate) fn sorted(words: &[String]) -> Vec<String> {
    let mut sorted = words.to_vec();
    sorted.sort_unstable();
    sorted
}

/// Types `count` words named `{prefix}{n}` at random boundaries, `pace`
/// apart, so that other clients' edits arrive in between (a pace is the
/// scenario's typing speed, not a wait for anything).
pub(crate) async fn type_words(
    client: &Client,
    prefix: &str,
    count: usize,
    pace: Duration,
    seed: u64,
) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut typed = Vec::with_capacity(count);
    for n in 0..count {
        let word = format!("{prefix}{n}");
        insert_word(client, &word, &mut rng);
        typed.push(word);
        tokio::time::sleep(pace).await;
    }
    typed
}

/// Waits until `client`'s text holds exactly `expected` words (any order),
/// each once.
pub(crate) async fn wait_words(client: &Client, expected: &[String]) -> Result<()> {
    let expected = sorted(expected);
    client
        .wait_for(WAIT, |doc| words(&text_of(doc, ROOT)) == expected)
        .await
        .with_context(|| {
            describe_difference(
                &format!("client at {}", client.url()),
                &expected,
                &client.text(ROOT),
            )
        })
}

/// Which expected words a text lacks and which it has in excess.
pub(crate) fn describe_difference(who: &str, expected: &[String], text: &str) -> String {
    let have = words(text);
    let missing: Vec<&String> = expected.iter().filter(|w| !have.contains(w)).collect();
    let mut extra = have.clone();
    for word in expected {
        if let Some(at) = extra.iter().position(|w| w == word) {
            extra.remove(at);
        }
    }
    format!(
        "{who}: {} of {} words; missing {missing:?}; extra or duplicated {extra:?}",
        have.len(),
        expected.len()
    )
}

/// Thin REST client for one node.
pub(crate) struct Rest {
    http: reqwest::Client,
    base: String,
}

impl Rest {
    pub(crate) fn new(node: &TestServer) -> Rest {
        Rest {
            http: reqwest::Client::new(),
            base: node.http_url(""),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Result<reqwest::Response> {
        Ok(self.http.get(format!("{}{path}", self.base)).send().await?)
    }

    pub(crate) async fn post(&self, path: &str, body: Vec<u8>) -> Result<reqwest::Response> {
        Ok(self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await?)
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<reqwest::Response> {
        Ok(self
            .http
            .delete(format!("{}{path}", self.base))
            .send()
            .await?)
    }

    /// `GET /api/docs/{doc}/snapshot?{query}`: status and body.
    pub(crate) async fn snapshot(&self, doc: &str, query: &str) -> Result<(u16, Vec<u8>)> {
        let path = format!("/api/docs/{}/snapshot?{query}", segment(doc));
        let response = self.get(&path).await?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await?.to_vec()))
    }

    /// The node's plain text of root [`ROOT`], which must be served (200).
    pub(crate) async fn text(&self, doc: &str) -> Result<String> {
        let (status, body) = self
            .snapshot(doc, &format!("format=text&root={ROOT}"))
            .await?;
        let body = String::from_utf8(body)?;
        if status != 200 {
            bail!("text snapshot of {doc} on {}: {status} {body}", self.base);
        }
        Ok(body)
    }

    /// Polls until the node's text of [`ROOT`] equals `expected`.
    pub(crate) async fn wait_text(&self, doc: &str, expected: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.text(doc).await;
            if matches!(&text, Ok(t) if t == expected) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "text of {doc} on {} never became {expected:?} within {WAIT:?}; last: {text:?}",
                    self.base
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `GET /readyz`: status and body.
    pub(crate) async fn readyz(&self) -> Result<(u16, String)> {
        let response = self.get("/readyz").await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// The value of counter `name` in `/metrics` (summed over labels).
    pub(crate) async fn counter(&self, name: &str) -> Result<f64> {
        self.counter_where(name, "").await
    }

    /// The value of counter `name` summed over the series whose labels
    /// contain `label` (such as `reason="slot_moved"`).
    pub(crate) async fn counter_where(&self, name: &str, label: &str) -> Result<f64> {
        let body = self.get("/metrics").await?.text().await?;
        let mut total = 0.0;
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if !(rest.starts_with(' ') || rest.starts_with('{')) || !rest.contains(label) {
                continue;
            }
            let value = rest.rsplit(' ').next().unwrap_or_default();
            total += value
                .parse::<f64>()
                .with_context(|| format!("metrics line {line:?}"))?;
        }
        Ok(total)
    }
}

/// Percent-encodes a document name for a REST path segment (`/` → `%2F`).
pub(crate) fn segment(name: &str) -> String {
    quire_client::endpoint::percent_encode(name)
}

/// Waits until `node`'s `/readyz` answers 200.
pub(crate) async fn wait_ready(node: &TestServer) -> Result<()> {
    let rest = Rest::new(node);
    eventually(|| async { Ok((rest.readyz().await?.0 == 200).then_some(())) })
        .await
        .with_context(|| format!("{} never became ready", node.addr()))
}

/// Re-runs `probe` every 20 ms until it yields `Some`, for at most [`WAIT`].
/// For conditions only observable by asking (HTTP); clients have `wait_for`.
pub(crate) async fn eventually<T, F, Fut>(mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("condition not met within {WAIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `observer` sees `state` for `subject` (a client elsewhere).
pub(crate) async fn wait_presence(
    observer: &Client,
    subject: u64,
    state: &serde_json::Value,
) -> Result<()> {
    observer
        .wait_for_awareness(WAIT, |states| states.get(&subject) == Some(state))
        .await
        .with_context(|| {
            format!(
                "{} never saw client {subject}'s presence {state}; it sees {:?}",
                observer.url(),
                observer.peer_states()
            )
        })
}
