//! What a queue with many senders and one receiving task keeps for its
//! receiver: how many senders are left, and the task to wake. Kept under the
//! queue's own lock; wakers are returned to be woken after unlocking.

use std::task::{Context, Waker};

pub(super) struct Wakeup {
    senders: usize,
    waker: Option<Waker>,
}

impl Wakeup {
    /// For a queue created with one sender.
    pub(super) fn one_sender() -> Self {
        Wakeup {
            senders: 1,
            waker: None,
        }
    }

    pub(super) fn add_sender(&mut self) {
        self.senders += 1;
    }

    /// The receiver to wake if that was the last sender.
    #[must_use]
    pub(super) fn remove_sender(&mut self) -> Option<Waker> {
        self.senders -= 1;
        if self.senders > 0 {
            return None;
        }
        self.waker.take()
    }

    pub(super) fn no_senders(&self) -> bool {
        self.senders == 0
    }

    /// Remembers the receiving task, to be woken by the next change.
    pub(super) fn register(&mut self, cx: &Context<'_>) {
        match &self.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
    }

    /// The receiver to wake after a change.
    #[must_use]
    pub(super) fn take(&mut self) -> Option<Waker> {
        self.waker.take()
    }
}

/// Wakes what [`Wakeup`] returned; call it after unlocking.
pub(super) fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}
