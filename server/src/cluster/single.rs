//! One Redis server: classic pub/sub, one publishing and one subscribing
//! connection, each reconnecting with backoff.

use super::inbox::Inbox;
use super::{
    doc_channel, note_subscription, refuse_subscriptions, Cluster, Outgoing, Owners, SubCommand,
    CONTROL_CHANNEL, HEARTBEAT_CHANNEL, MAX_BACKOFF, MIN_BACKOFF,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Publishes queued messages in order. A message is not given up when a
/// publish fails: the publisher reconnects (with backoff) and sends it again,
/// so the sync request a node sends right after an outage is not lost to a
/// connection that only turned out dead when used. While Redis stays down the
/// queue fills and further messages are refused at the source; peers heal
/// those by state vector.
pub(super) async fn publisher(
    client: redis::Client,
    mut rx: mpsc::Receiver<Outgoing>,
    cluster: Cluster,
    shutdown: CancellationToken,
) {
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        let (channel, payload) = tokio::select! {
            next = rx.recv() => match next {
                Some(next) => next,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        loop {
            if connection.is_none() {
                match client.get_multiplexed_async_connection().await {
                    Ok(c) => connection = Some(c),
                    Err(e) => tracing::debug!(error = %e, "cannot publish: redis unreachable"),
                }
            }
            if let Some(conn) = connection.as_mut() {
                let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(channel.name())
                    .arg(payload.as_ref())
                    .query_async(conn)
                    .await;
                match published {
                    Ok(_) => {
                        crate::metrics::redis_published();
                        backoff = MIN_BACKOFF;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "publish failed; reconnecting");
                        cluster.set_error(&e);
                        connection = None;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

pub(super) async fn subscriber(
    client: redis::Client,
    mut commands: mpsc::Receiver<SubCommand>,
    mut owners: Owners,
    mut inbox: Inbox,
    shutdown: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    let mut checks = tokio::time::interval(inbox.check_interval());
    loop {
        match client.get_async_pubsub().await {
            Ok(pubsub) => {
                backoff = MIN_BACKOFF;
                let (mut sink, mut stream) = pubsub.split();
                let mut channels = vec![CONTROL_CHANNEL.to_owned(), HEARTBEAT_CHANNEL.to_owned()];
                channels.extend(
                    inbox
                        .registry()
                        .loaded_names()
                        .iter()
                        .map(|n| doc_channel(n.as_str())),
                );
                if let Err(e) = sink.subscribe(&channels).await {
                    tracing::warn!(error = %e, "subscribing failed");
                    inbox.disconnected(&e);
                } else {
                    inbox.connected();
                    tracing::info!(channels = channels.len(), "connected to redis");
                    // Whatever was published while we were away is lost to
                    // us, and ours to them: heal every loaded document.
                    inbox.resync_all();
                    loop {
                        tokio::select! {
                            command = commands.recv() => match command {
                                Some(command) => {
                                    let unsubscribe = note_subscription(&mut owners, &command);
                                    match command {
                                        SubCommand::Subscribe(channel, _, ack) => {
                                            let _ = ack.send(sink.subscribe(&channel).await.is_ok());
                                        }
                                        SubCommand::Unsubscribe(channel, _) if unsubscribe => {
                                            let _ = sink.unsubscribe(&channel).await;
                                        }
                                        SubCommand::Unsubscribe(..) => {}
                                    }
                                }
                                None => return,
                            },
                            message = stream.next() => match message {
                                Some(message) => {
                                    let channel = message.get_channel_name().as_bytes().to_vec();
                                    let _ = inbox.deliver(&channel, message.get_payload_bytes()).await;
                                }
                                None => break,
                            },
                            _ = checks.tick() => inbox.check(),
                            _ = shutdown.cancelled() => return,
                        }
                    }
                    inbox.disconnected("connection lost");
                    tracing::warn!("lost redis connection; reconnecting");
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "redis unreachable");
                inbox.disconnected(&e);
            }
        }
        // Wait before retrying; refuse subscriptions meanwhile (they are
        // made again for every loaded document on reconnect).
        if refuse_subscriptions(&mut commands, &mut owners, backoff, &shutdown)
            .await
            .is_err()
        {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
