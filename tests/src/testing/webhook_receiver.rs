//! A real HTTP receiver of webhooks for the tests: it listens on an
//! ephemeral port, answers each delivery as scripted (a status, or no answer
//! for a while: a timeout for Quire), keeps every request it got, and
//! verifies signatures the way the Standard Webhooks specification says,
//! with its own HMAC, independent of Quire's code.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How the receiver answers one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// This HTTP status at once.
    Status(u16),
    /// Nothing for this long, then 200 (Quire gave up by then if its
    /// `--webhook-timeout-ms` is shorter).
    Hang(Duration),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    /// The body, parsed (Null if it is not JSON).
    pub event: serde_json::Value,
    pub answer: Answer,
}

impl Received {
    pub fn kind(&self) -> &str {
        self.event["type"].as_str().unwrap_or_default()
    }

    pub fn document(&self) -> &str {
        self.event["document"].as_str().unwrap_or_default()
    }

    /// Whether the receiver processed it: answered 2xx, or took it and
    /// answered too late (the sender then sends it again: a duplicate that
    /// the receiver drops by its `webhook-id`).
    pub fn accepted(&self) -> bool {
        matches!(self.answer, Answer::Status(200..=299) | Answer::Hang(_))
    }
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Answer>,
    received: Vec<Received>,
}

pub struct WebhookReceiver {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts listening; every delivery is answered 200 unless scripted.
    pub async fn start() -> std::io::Result<WebhookReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(listener)
    }

    /// Listens on `addr` again (a receiver that was down comes back).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<WebhookReceiver> {
        let listener = TcpListener::bind(addr).await?;
        Self::serve(listener)
    }

    fn serve(listener: TcpListener) -> std::io::Result<WebhookReceiver> {
        let addr = listener.local_addr()?;
        let inner = Arc::new(Mutex::new(Inner::default()));
        let changed = Arc::new(Notify::new());
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(deliver))
            .with_state(Shared {
                inner: inner.clone(),
                changed: changed.clone(),
            });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(WebhookReceiver {
            addr,
            inner,
            changed,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next deliveries get these answers, in order; then 200 again.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.script.extend(answers);
        }
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.inner
            .lock()
            .map(|inner| inner.received.clone())
            .unwrap_or_default()
    }

    /// Each event the receiver accepted, once: what a receiver that drops
    /// duplicates by `webhook-id` keeps.
    pub fn events(&self) -> Vec<Received> {
        let mut seen = std::collections::HashSet::new();
        self.received()
            .into_iter()
            .filter(|r| r.accepted() && seen.insert(r.id.clone()))
            .collect()
    }

    /// Waits until `done` holds for the requests received, or `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Received]) -> bool,
    ) -> Result<Vec<Received>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let received = self.received();
            if done(&received) {
                return Ok(received);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(format!(
                    "waited {timeout:?}; received {} requests: {:#?}",
                    received.len(),
                    received
                        .iter()
                        .map(|r| (r.kind().to_owned(), r.document().to_owned(), r.answer))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }

    /// Stops listening: later deliveries find the port closed.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks a request's signature with `key`, as a Standard Webhooks
/// receiver does: HMAC-SHA256 of `{id}.{timestamp}.{body}`, base64, in
/// one of the space-separated `v1,` signatures; and a timestamp within five
/// minutes of now, which defeats replays.
pub fn verify(key: &[u8], received: &Received) -> Result<(), String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
    mac.update(format!("{}.{}.{}", received.id, received.timestamp, received.body).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let signed = received
        .signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected);
    if !signed {
        return Err(format!(
            "signature {:?} does not match v1,{expected}",
            received.signature
        ));
    }
    let sent: i64 = received
        .timestamp
        .parse()
        .map_err(|_| format!("timestamp {:?} is not a number", received.timestamp))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    if (now - sent).abs() > 300 {
        return Err(format!(
            "timestamp {sent} is more than 5 minutes from {now}"
        ));
    }
    Ok(())
}

/// One delivery: recorded as it arrives, then answered as scripted.
async fn deliver(
    axum::extract::State(receiver): axum::extract::State<Shared>,
    headers: axum::http::HeaderMap,
    body: String,
) -> axum::http::StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let answer = receiver
        .inner
        .lock()
        .ok()
        .and_then(|mut i| i.script.pop_front())
        .unwrap_or(Answer::Status(200));
    let received = Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        event: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        body,
        answer,
    };
    if let Ok(mut inner) = receiver.inner.lock() {
        inner.received.push(received);
    }
    receiver.changed.notify_waiters();
    let status = match answer {
        Answer::Status(status) => status,
        Answer::Hang(wait) => {
            tokio::time::sleep(wait).await;
            200
        }
    };
    axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK)
}
