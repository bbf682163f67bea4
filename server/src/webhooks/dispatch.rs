//! The dispatcher: one task per node that seals due marks, claims due
//! outbox entries, POSTs them side by side and settles each as it ends.

use super::{now_ms, retry, sign, Claimed, Outbox, Settings, Settle, CLAIM_BATCH};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often the outbox is looked at when nothing wakes the dispatcher
/// sooner (a retry's time, a debounce window ending).
pub const POLL: Duration = Duration::from_millis(100);

pub struct Dispatcher {
    outbox: Outbox,
    settings: Arc<Settings>,
    client: reqwest::Client,
    /// Endpoints whose last attempt failed: a failure is logged when an
    /// endpoint starts failing and when it recovers, not per attempt.
    failing: HashSet<String>,
    /// When the outbox was last counted for the metrics.
    counted: Option<Instant>,
}

impl Dispatcher {
    pub fn new(outbox: Outbox, settings: Arc<Settings>) -> Result<Dispatcher, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // A redirect is an answer, not a delivery: the receiver's
            // configured URL is what Quire signs for.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("quire/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Dispatcher {
            outbox,
            settings,
            client,
            failing: HashSet::new(),
            counted: None,
        })
    }

    /// Runs until `stop`. Attempts run side by side, at most
    /// [`CLAIM_BATCH`] at once; each is settled as soon as it ends, so a
    /// receiver that does not answer delays the others only by the slots
    /// its attempts hold. An attempt cut short by the stop keeps its lease
    /// and is made again after it (at least once, never lost).
    pub async fn run(mut self, stop: CancellationToken) {
        let mut in_flight: JoinSet<(Claimed, Settle)> = JoinSet::new();
        let mut next_round = tokio::time::Instant::now();
        loop {
            tokio::select! {
                Some(ended) = in_flight.join_next(), if !in_flight.is_empty() => {
                    // A panicked attempt is made again after its lease.
                    if let Ok((claimed, outcome)) = ended {
                        self.settle(&claimed, outcome).await;
                    }
                }
                _ = tokio::time::sleep_until(next_round) => {
                    let more = tokio::select! {
                        more = self.round(&mut in_flight) => more,
                        _ = stop.cancelled() => return,
                    };
                    let wait = if more { Duration::ZERO } else { POLL };
                    next_round = tokio::time::Instant::now() + wait;
                }
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One round: gather, seal, claim what the free slots take and start
    /// those attempts, count. True if more entries may be due now.
    async fn round(&mut self, in_flight: &mut JoinSet<(Claimed, Settle)>) -> bool {
        let now = now_ms();
        if let Err(e) = self.outbox.gather(now).await {
            tracing::debug!(error = %e, "moving connection events to the shared outbox failed; retried later");
        }
        if let Err(e) = self.outbox.seal_due(&self.settings, now).await {
            tracing::debug!(error = %e, "sealing webhook events failed; retried next round");
        }
        let free = CLAIM_BATCH.saturating_sub(in_flight.len());
        let mut more = false;
        if free > 0 {
            let lease = now + self.settings.lease().as_millis() as i64;
            match self.outbox.claim(now, lease, free).await {
                Ok(claimed) => {
                    more = claimed.len() == free;
                    for claimed in claimed {
                        let client = self.client.clone();
                        let settings = self.settings.clone();
                        in_flight.spawn(async move {
                            let outcome = attempt(&client, &settings, &claimed).await;
                            (claimed, outcome)
                        });
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "claiming webhook deliveries failed; retried next round");
                }
            }
        }
        if self
            .counted
            .is_none_or(|at| at.elapsed() >= self.outbox.count_every())
        {
            self.counted = Some(Instant::now());
            match self.outbox.counts().await {
                Ok(counts) => crate::metrics::webhook_counts(counts),
                Err(e) => tracing::debug!(error = %e, "counting the webhook outbox failed"),
            }
        }
        more
    }

    async fn settle(&mut self, claimed: &Claimed, outcome: Settle) {
        self.observe(claimed, &outcome);
        if let Err(e) = self.outbox.settle(claimed, outcome).await {
            // The lease runs out and the entry is delivered again.
            tracing::debug!(error = %e, "settling a webhook delivery failed");
        }
    }

    /// Metrics, and a log line when an endpoint starts or stops failing and
    /// for every dead letter.
    fn observe(&mut self, claimed: &Claimed, outcome: &Settle) {
        let entry = &claimed.entry;
        crate::metrics::webhook_attempt(outcome);
        match outcome {
            Settle::Delivered => {
                if self.failing.remove(&entry.endpoint) {
                    tracing::info!(endpoint = %entry.endpoint, "webhook receiver accepts deliveries again");
                }
            }
            Settle::Retry { error, .. } => {
                if self.failing.insert(entry.endpoint.clone()) {
                    tracing::warn!(
                        endpoint = %entry.endpoint,
                        error,
                        "webhook delivery failed; retrying with backoff until it is accepted"
                    );
                }
            }
            Settle::Dead { error } => {
                self.failing.insert(entry.endpoint.clone());
                tracing::error!(
                    endpoint = %entry.endpoint,
                    event = %entry.event_id,
                    kind = %entry.kind,
                    document = %entry.document,
                    attempts = entry.attempts + 1,
                    error,
                    "webhook event parked as a dead letter after its last attempt; replay it with POST /api/webhooks/dead-letters/replay"
                );
            }
        }
    }
}

/// One POST of one entry.
async fn attempt(client: &reqwest::Client, settings: &Settings, claimed: &Claimed) -> Settle {
    let entry = &claimed.entry;
    let timestamp = chrono::Utc::now().timestamp();
    let signature = sign::signature(&settings.key, &entry.event_id, timestamp, &entry.body);
    let sent = client
        .post(&entry.endpoint)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &entry.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(entry.body.clone())
        .send()
        .await;
    let error = match sent {
        Ok(response) if response.status().is_success() => return Settle::Delivered,
        Ok(response) => format!("the receiver answered HTTP {}", response.status().as_u16()),
        Err(e) if e.is_timeout() => format!("no answer within {} ms", settings.timeout.as_millis()),
        Err(e) if e.is_connect() => "the receiver could not be reached".to_owned(),
        Err(e) => format!("the request failed: {e}"),
    };
    retry::after_failure(
        entry.attempts + 1,
        settings.max_attempts,
        settings.first_retry,
        now_ms(),
        retry::jitter(),
        error,
    )
}
