//! Cluster suite: several real `quire` processes, each with its own sled
//! directory, share one private `redis-server`
//! ([`RedisServer`](quire_client::testing::RedisServer)) or a private Redis
//! Cluster of 3 primaries and 3 replicas
//! ([`RedisCluster`](quire_client::testing::RedisCluster)), and are driven
//! only over WebSocket and HTTP, as clients behind a load balancer would.
//!
//! Every node runs with the periodic resync out of reach
//! ([`support::NO_PERIODIC_RESYNC`]): each test passes only through the
//! mechanism it names (relay over pub/sub, healing when a document loads,
//! healing after a Redis reconnect). Timeouts are failure guards, never
//! speed assertions. `redis-server` must be installed (or named by
//! `REDIS_SERVER`), and `redis-cli` for the Redis Cluster (or `REDIS_CLI`);
//! without them every test fails and says so.
//!
//! | module | what it specifies |
//! |---|---|
//! | [`relay`] | edits and presence cross nodes: concurrent words, the B4 trace, awareness |
//! | [`hocuspocus`] | a Hocuspocus session and a y-websocket client on two nodes converge; stateless messages cross nodes |
//! | [`rest`] | REST on one node reaches clients of another; reads of unseen documents ask peers; DELETE everywhere; metrics |
//! | [`failover`] | `kill -9` of a node: its clients move to survivors and lose nothing |
//! | [`outage`] | Redis down: nodes keep serving, are not ready, and heal after it returns |
//! | [`restart`] | a node restarted on a stale sled copy catches up from its peers |
//! | [`record`] | PostgreSQL as the shared record: fresh disks, a PostgreSQL crash, a delete against an old spool |
//! | [`backup`] | with the shared record, one node's backup holds every node's documents |
//! | [`redis_cluster`] | on a Redis Cluster: sharded relay, a slot migration and a primary's failover without periodic healing |
//! | [`heartbeat`] | the presence a killed node relayed disappears within seconds (single Redis and Redis Cluster) |
//! | [`history`] | versions in PostgreSQL: recorded on one node, restored on another, seen by clients of both |
//! | [`webhooks`] | the outbox in PostgreSQL: each event written and delivered once by the cluster; a node killed mid-delivery leaves it to the others; dead letters listed and replayed through any node; connection events of every node delivered once |

mod backup;
mod failover;
mod heartbeat;
mod history;
mod hocuspocus;
mod outage;
mod record;
mod redis_cluster;
mod relay;
mod rest;
mod restart;
mod support;
mod trace;
mod webhooks;
