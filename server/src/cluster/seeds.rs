//! `--redis-url`: one Redis, or the seeds of a Redis Cluster.
//!
//! Which one is asked, not configured: the first seed that answers
//! `INFO cluster` decides (`cluster_enabled:1` means a Redis Cluster). A list
//! of several seeds must be a cluster; several independent Redis servers
//! would split the nodes into groups that never hear each other.

use super::ClusterError;
use std::time::Duration;

/// How long a seed may take to answer before the next is asked.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub(super) enum Topology {
    Single(redis::Client),
    /// The seeds, for the cluster client (it discovers the other nodes).
    Cluster(Vec<String>),
}

/// The seeds of `--redis-url`, each a valid Redis URL.
pub(super) fn parse(list: &str) -> Result<Vec<String>, ClusterError> {
    let seeds: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|seed| !seed.is_empty())
        .map(str::to_owned)
        .collect();
    if seeds.is_empty() {
        return Err(ClusterError::Seeds("no Redis URL given".into()));
    }
    for seed in &seeds {
        redis::Client::open(seed.as_str())?;
    }
    Ok(seeds)
}

/// Asks the seeds in turn what they are.
pub(super) async fn detect(seeds: &[String]) -> Result<Topology, String> {
    let mut errors = Vec::new();
    for seed in seeds {
        let client = redis::Client::open(seed.as_str()).map_err(|e| e.to_string())?;
        let asked = tokio::time::timeout(ASK_TIMEOUT, info_cluster(&client)).await;
        let info = match asked {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => {
                errors.push(format!("{seed}: {e}"));
                continue;
            }
            Err(_) => {
                errors.push(format!("{seed}: no answer within {ASK_TIMEOUT:?}"));
                continue;
            }
        };
        return match (cluster_enabled(&info), seeds.len()) {
            (true, _) => Ok(Topology::Cluster(seeds.to_vec())),
            (false, 1) => Ok(Topology::Single(client)),
            (false, _) => Err(format!(
                "{seed} is not a Redis Cluster (cluster_enabled:0), but --redis-url lists {} seeds",
                seeds.len()
            )),
        };
    }
    Err(errors.join("; "))
}

async fn info_cluster(client: &redis::Client) -> redis::RedisResult<String> {
    let mut connection = client.get_multiplexed_async_connection().await?;
    redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut connection)
        .await
}

/// Whether an `INFO cluster` answer says cluster mode is on.
fn cluster_enabled(info: &str) -> bool {
    info.lines()
        .filter_map(|line| line.trim().strip_prefix("cluster_enabled:"))
        .any(|value| value.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_cluster_says_whether_cluster_mode_is_on() {
        let cases = [
            ("# Cluster\r\ncluster_enabled:1\r\n", true),
            ("# Cluster\r\ncluster_enabled:0\r\n", false),
            ("cluster_enabled:1", true),
            ("", false),
            ("# Cluster\r\nother:1\r\n", false),
        ];
        for (info, expected) in cases {
            assert_eq!(cluster_enabled(info), expected, "{info:?}");
        }
    }

    #[test]
    fn redis_url_is_one_url_or_a_comma_separated_list_of_seeds() {
        assert_eq!(
            parse("redis://127.0.0.1:6379").ok(),
            Some(vec!["redis://127.0.0.1:6379".to_owned()])
        );
        assert_eq!(
            parse("redis://a:7001, redis://b:7002,").ok(),
            Some(vec![
                "redis://a:7001".to_owned(),
                "redis://b:7002".to_owned()
            ])
        );
        assert!(matches!(parse(" , "), Err(ClusterError::Seeds(_))));
        assert!(matches!(
            parse("redis://a:7001,http://b"),
            Err(ClusterError::Url(_))
        ));
    }
}
