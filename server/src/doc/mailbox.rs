//! A document actor's command queue: bounded, many senders, one receiver.
//!
//! tokio's mpsc would do, but it allocates its first 32-slot block and a
//! cache-padded channel up front: 2 KiB for every loaded document, most of
//! which receive a command a minute. Here an empty queue costs one small
//! allocation, and a drained one gives its slots back. Room is counted by a
//! fair semaphore, so senders waiting for room are served in order.

use super::command::{DocCommand, Gone};
use super::wakeup::{wake, Wakeup};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::sync::Semaphore;

pub(super) fn mailbox(capacity: usize) -> (MailboxSender, MailboxReceiver) {
    let shared = Arc::new(Shared {
        room: Semaphore::new(capacity.max(1)),
        state: Mutex::new(State {
            queue: VecDeque::new(),
            wakeup: Wakeup::one_sender(),
        }),
    });
    (
        MailboxSender {
            shared: shared.clone(),
        },
        MailboxReceiver { shared },
    )
}

pub(super) struct MailboxSender {
    shared: Arc<Shared>,
}

pub(super) struct MailboxReceiver {
    shared: Arc<Shared>,
}

/// Room for one command, reserved ahead of it.
pub struct Permit {
    shared: Arc<Shared>,
    used: bool,
}

/// Why [`MailboxSender::offer`] did not send.
pub enum Offer {
    Full(DocCommand),
    Gone,
}

struct Shared {
    /// Free slots. Closed when the receiver closes: senders get [`Gone`].
    room: Semaphore,
    state: Mutex<State>,
}

struct State {
    queue: VecDeque<DocCommand>,
    wakeup: Wakeup,
}

impl Shared {
    /// Every change under the lock is a single push, pop or count, so a
    /// poisoned lock still guards a consistent state.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a command whose slot is already taken from `room`.
    fn push(&self, command: DocCommand) -> Result<(), Gone> {
        if self.room.is_closed() {
            return Err(Gone);
        }
        let waker = {
            let mut state = self.lock();
            state.queue.push_back(command);
            state.wakeup.take()
        };
        wake(waker);
        Ok(())
    }
}

impl MailboxSender {
    /// Waits for room, then queues; fails once the actor has stopped.
    pub(super) async fn send(&self, command: DocCommand) -> Result<(), Gone> {
        let slot = self.shared.room.acquire().await.map_err(|_| Gone)?;
        slot.forget();
        self.shared.push(command)
    }

    /// Queues if there is room now; a full queue hands the command back.
    pub(super) fn offer(&self, command: DocCommand) -> Result<(), Offer> {
        match self.shared.room.try_acquire() {
            Ok(slot) => {
                slot.forget();
                self.shared.push(command).map_err(|Gone| Offer::Gone)
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => Err(Offer::Full(command)),
            Err(tokio::sync::TryAcquireError::Closed) => Err(Offer::Gone),
        }
    }

    /// Resolves with room for one command; owns what it needs, so it can be
    /// stored and polled by the caller.
    pub(super) fn reserve(&self) -> impl Future<Output = Result<Permit, Gone>> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            shared.room.acquire().await.map_err(|_| Gone)?.forget();
            Ok(Permit {
                shared,
                used: false,
            })
        }
    }
}

impl Permit {
    pub fn send(mut self, command: DocCommand) {
        self.used = true;
        // A stopped actor drops its queue: the command's replies close.
        let _ = self.shared.push(command);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.used {
            self.shared.room.add_permits(1);
        }
    }
}

impl Clone for MailboxSender {
    fn clone(&self) -> Self {
        self.shared.lock().wakeup.add_sender();
        MailboxSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for MailboxSender {
    fn drop(&mut self) {
        let waker = self.shared.lock().wakeup.remove_sender();
        wake(waker);
    }
}

impl MailboxReceiver {
    /// The next command; `None` once every sender is gone.
    pub(super) async fn recv(&mut self) -> Option<DocCommand> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<DocCommand>> {
        let mut state = self.shared.lock();
        if let Some(command) = self.pop(&mut state) {
            return Poll::Ready(Some(command));
        }
        if state.wakeup.no_senders() {
            return Poll::Ready(None);
        }
        state.wakeup.register(cx);
        Poll::Pending
    }

    pub(super) fn try_recv(&mut self) -> Option<DocCommand> {
        let mut state = self.shared.lock();
        self.pop(&mut state)
    }

    fn pop(&self, state: &mut State) -> Option<DocCommand> {
        let command = state.queue.pop_front()?;
        if state.queue.is_empty() {
            state.queue.shrink_to_fit();
        }
        self.shared.room.add_permits(1);
        Some(command)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.shared.lock().queue.is_empty()
    }

    /// Refuses every later command; those already queued stay receivable.
    pub(super) fn close(&mut self) {
        self.shared.room.close();
    }
}

impl Drop for MailboxReceiver {
    fn drop(&mut self) {
        self.close();
        let queued = std::mem::take(&mut self.shared.lock().queue);
        // Dropped outside the lock: a command's drop may run other code.
        drop(queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(id: u64) -> DocCommand {
        DocCommand::Disconnect { id }
    }

    fn id_of(command: Option<DocCommand>) -> Option<u64> {
        match command {
            Some(DocCommand::Disconnect { id }) => Some(id),
            _ => None,
        }
    }

    #[tokio::test]
    async fn commands_arrive_in_order_and_room_is_bounded() {
        let (tx, mut rx) = mailbox(2);
        tx.send(command(1)).await.expect("room");
        assert!(tx.offer(command(2)).is_ok());
        assert!(matches!(tx.offer(command(3)), Err(Offer::Full(_))));
        assert_eq!(id_of(rx.recv().await), Some(1));
        assert!(tx.offer(command(3)).is_ok(), "receiving made room");
        assert_eq!(id_of(rx.try_recv()), Some(2));
        assert_eq!(id_of(rx.try_recv()), Some(3));
        assert!(rx.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_the_room_a_receive_frees() {
        let (tx, mut rx) = mailbox(1);
        tx.send(command(1)).await.expect("room");
        let permit = tx.reserve();
        let waiting = tokio::spawn(async move { permit.await.map(|p| p.send(command(2))).is_ok() });
        tokio::task::yield_now().await;
        assert_eq!(id_of(rx.recv().await), Some(1));
        assert!(waiting.await.expect("no panic"));
        assert_eq!(id_of(rx.recv().await), Some(2));
    }

    #[tokio::test]
    async fn closing_refuses_new_commands_and_the_last_sender_ends_the_queue() {
        let (tx, mut rx) = mailbox(4);
        tx.send(command(1)).await.expect("room");
        rx.close();
        assert!(tx.send(command(2)).await.is_err());
        assert!(matches!(tx.offer(command(3)), Err(Offer::Gone)));
        assert_eq!(id_of(rx.recv().await), Some(1), "queued before the close");
        drop(tx);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn an_unused_permit_gives_its_room_back() {
        let (tx, _rx) = mailbox(1);
        drop(tx.reserve().await.expect("room"));
        assert!(tx.offer(command(1)).is_ok());
    }
}
