//! State shared between a [`Client`](crate::Client) handle and the tasks of
//! its current connection.
//!
//! The `Doc` synchronises itself; everything else sits behind one std
//! `Mutex` that is only held for short, non-async sections. Every change that
//! a waiter might care about bumps the `changed` counter, which is how
//! `wait_for` and friends sleep without polling.

use crate::awareness::ClientAwareness;
use crate::client::{CloseInfo, Status};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::{watch, Notify};
use yrs::Doc;

pub(crate) struct Shared {
    pub doc: Doc,
    state: Mutex<State>,
    /// Bumped on every document, awareness or connection change.
    changed: watch::Sender<u64>,
    pub outbox: Outbox,
}

/// Everything about the connection that is not the document.
pub(crate) struct State {
    pub status: Status,
    pub close: Option<CloseInfo>,
    pub awareness: ClientAwareness,
    /// Reasons of every auth permission-denied message received.
    pub denied: Vec<String>,
    /// Why the last connection ended, when it was not a close frame.
    pub error: Option<String>,
}

impl Shared {
    pub(crate) fn new(doc: Doc) -> Self {
        let client = doc.client_id().get();
        Shared {
            doc,
            state: Mutex::new(State {
                status: Status::Disconnected,
                close: None,
                awareness: ClientAwareness::new(client),
                denied: Vec::new(),
                error: None,
            }),
            changed: watch::channel(0).0,
            outbox: Outbox::default(),
        }
    }

    /// Locks the state. A panic elsewhere cannot leave it half-updated in a
    /// way that matters to tests, so poisoning is ignored.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state and wakes every waiter.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let result = f(&mut self.state());
        self.notify();
        result
    }

    pub(crate) fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Local updates waiting for the writer task. The update observer runs
/// synchronously inside the user's transaction commit, where it can neither
/// await a full channel nor drop an update, so it appends here and the
/// writer merges whatever accumulated into one frame. `None` while
/// disconnected: the sync handshake of the next connection delivers
/// everything the server lacks, so nothing needs to pile up meanwhile.
#[derive(Default)]
pub(crate) struct Outbox {
    pending: Mutex<Option<Vec<Vec<u8>>>>,
    ready: Notify,
}

impl Outbox {
    fn pending(&self) -> MutexGuard<'_, Option<Vec<Vec<u8>>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts collecting (on connect), discarding anything left over.
    pub(crate) fn open(&self) {
        *self.pending() = Some(Vec::new());
    }

    /// Stops collecting (on disconnect).
    pub(crate) fn close(&self) {
        *self.pending() = None;
    }

    pub(crate) fn push(&self, update: Vec<u8>) {
        if let Some(pending) = self.pending().as_mut() {
            pending.push(update);
            self.ready.notify_one();
        }
    }

    /// Takes every pending update.
    pub(crate) fn take(&self) -> Vec<Vec<u8>> {
        self.pending()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }
}
