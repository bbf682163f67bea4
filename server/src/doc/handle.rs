//! How the rest of the server reaches a loaded document: its handle (the
//! sending side of its mailbox) and the figures it publishes.

use super::command::{DocCommand, Gone};
use super::mailbox::{MailboxSender, Offer, Permit};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Figures of a loaded document readable without asking its actor.
#[derive(Debug, Default)]
pub struct DocStats {
    pub clients: AtomicUsize,
    pub bytes: AtomicU64,
    pub updated_at_ms: AtomicI64,
}

#[derive(Clone)]
pub struct DocHandle {
    tx: MailboxSender,
    pub stats: Arc<DocStats>,
    /// Which actor this is: a document unloaded and loaded again gets a new one.
    pub(super) actor_id: u64,
}

impl DocHandle {
    pub(super) fn new(tx: MailboxSender, stats: Arc<DocStats>, actor_id: u64) -> Self {
        DocHandle {
            tx,
            stats,
            actor_id,
        }
    }

    /// Sends a command whose reply tells the actor served it.
    pub async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> DocCommand,
    ) -> Result<T, Gone> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| Gone)?;
        rx.await.map_err(|_| Gone)
    }

    /// Sends a command that needs no reply; fails if the actor has stopped.
    pub async fn send(&self, command: DocCommand) -> Result<(), Gone> {
        self.tx.send(command).await.map_err(|_| Gone)
    }

    /// Sends without waiting; fails if the actor is gone or its queue is full.
    pub fn try_send(&self, command: DocCommand) -> Result<(), Gone> {
        self.tx.offer(command).map_err(|_| Gone)
    }

    /// Sends without waiting; a full queue hands the command back.
    pub fn offer(&self, command: DocCommand) -> Result<(), Offer> {
        self.tx.offer(command)
    }

    /// Resolves with room for one command in the actor's queue.
    pub fn reserve(
        &self,
    ) -> impl std::future::Future<Output = Result<Permit, Gone>> + Send + 'static {
        self.tx.reserve()
    }
}
