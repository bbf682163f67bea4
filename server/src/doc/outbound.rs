//! A connection's outbound queue: bounded in frames and in bytes, and the
//! way the document actor closes the connection.
//!
//! A `Mutex<VecDeque>` rather than a tokio mpsc: an mpsc allocates a
//! 32-slot block per channel whatever its bound, 1.5 KiB for every idle
//! connection, while an empty `VecDeque` costs nothing and one that has
//! drained gives its memory back.

use super::close::CloseReason;
use super::wakeup::{wake, Wakeup};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The client is not reading fast enough.
    Full,
    /// The connection is gone.
    Closed,
}

/// The sending side, held by the document actor. When the last one is
/// dropped without [`Outbound::close`], the connection closes as "document
/// closed".
pub struct Outbound {
    shared: Arc<Shared>,
}

/// The receiving side, polled by the connection's task.
pub struct OutboundReceiver {
    shared: Arc<Shared>,
}

/// What the connection takes from its queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Frame(Bytes),
    /// The actor closed the connection, with this close frame.
    Closed(CloseReason),
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    max_frames: usize,
    /// Set once, by the actor: the connection closes with it.
    close: Option<CloseReason>,
    receiver_gone: bool,
    wakeup: Wakeup,
}

impl Shared {
    /// The state stays consistent whatever panicked while holding it (every
    /// change is a single field update), so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Outbound {
    pub fn channel(frames: usize) -> (Outbound, OutboundReceiver) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                max_frames: frames.max(1),
                close: None,
                receiver_gone: false,
                wakeup: Wakeup::one_sender(),
            }),
        });
        (
            Outbound {
                shared: shared.clone(),
            },
            OutboundReceiver { shared },
        )
    }

    /// Queues a frame unless the queue holds `max_bytes` already. One frame
    /// larger than the budget still goes through when the queue is empty,
    /// or a large document could never be sent.
    pub fn try_send(&self, frame: Bytes, max_bytes: usize) -> Result<(), QueueError> {
        let waker = {
            let mut state = self.shared.lock();
            if state.receiver_gone || state.close.is_some() {
                return Err(QueueError::Closed);
            }
            let full = state.frames.len() >= state.max_frames
                || (state.bytes > 0 && state.bytes + frame.len() > max_bytes);
            if full {
                return Err(QueueError::Full);
            }
            state.bytes += frame.len();
            state.frames.push_back(frame);
            state.wakeup.take()
        };
        crate::metrics::outbound_queued(1);
        wake(waker);
        Ok(())
    }

    /// Queues every frame or none, under the same bounds as
    /// [`Outbound::try_send`], with one wake-up of the connection.
    pub fn try_send_all<'a>(
        &self,
        frames: impl Iterator<Item = &'a Bytes> + Clone,
        max_bytes: usize,
    ) -> Result<(), QueueError> {
        let (count, bytes) = frames
            .clone()
            .fold((0, 0), |(n, b), frame| (n + 1, b + frame.len()));
        if count == 0 {
            return Ok(());
        }
        let waker = {
            let mut state = self.shared.lock();
            if state.receiver_gone || state.close.is_some() {
                return Err(QueueError::Closed);
            }
            let full = state.frames.len() + count > state.max_frames
                || (state.bytes > 0 && state.bytes + bytes > max_bytes);
            if full {
                return Err(QueueError::Full);
            }
            state.bytes += bytes;
            state.frames.extend(frames.cloned());
            state.wakeup.take()
        };
        crate::metrics::outbound_queued(count as i64);
        wake(waker);
        Ok(())
    }

    /// Closes the connection with `reason`; frames still queued are dropped
    /// (a client being closed has no use for them).
    pub fn close(&self, reason: CloseReason) {
        let waker = {
            let mut state = self.shared.lock();
            if state.close.is_some() {
                return;
            }
            state.close = Some(reason);
            state.wakeup.take()
        };
        wake(waker);
    }
}

impl Clone for Outbound {
    fn clone(&self) -> Self {
        self.shared.lock().wakeup.add_sender();
        Outbound {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let waker = self.shared.lock().wakeup.remove_sender();
        wake(waker);
    }
}

impl OutboundReceiver {
    /// The actor's close, if any, before any frame; else the next frame when
    /// `want_frame` (the socket can take one). Pending registers the task.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>, want_frame: bool) -> Poll<Received> {
        let mut state = self.shared.lock();
        if let Some(reason) = &state.close {
            return Poll::Ready(Received::Closed(reason.clone()));
        }
        if state.wakeup.no_senders() {
            // The actor stopped without a reason.
            return Poll::Ready(Received::Closed(CloseReason::new(
                CloseReason::GOING_AWAY,
                "document closed",
            )));
        }
        if want_frame {
            if let Some(frame) = state.frames.pop_front() {
                state.bytes -= frame.len();
                if state.frames.is_empty() {
                    // Most connections sit idle between bursts.
                    state.frames.shrink_to_fit();
                }
                drop(state);
                crate::metrics::outbound_queued(-1);
                return Poll::Ready(Received::Frame(frame));
            }
        }
        state.wakeup.register(cx);
        Poll::Pending
    }

    /// Queues a reply from the connection itself (not counted against the
    /// byte budget); false if the queue is full of frames.
    pub fn push_reply(&self, frame: Bytes) -> bool {
        let mut state = self.shared.lock();
        if state.frames.len() >= state.max_frames {
            return false;
        }
        state.bytes += frame.len();
        state.frames.push_back(frame);
        drop(state);
        crate::metrics::outbound_queued(1);
        true
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        let left = {
            let mut state = self.shared.lock();
            state.receiver_gone = true;
            state.bytes = 0;
            drop(state.wakeup.take());
            std::mem::take(&mut state.frames).len()
        };
        crate::metrics::outbound_queued(-(left as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker_ref;

    fn poll(rx: &mut OutboundReceiver) -> Poll<Received> {
        rx.poll_recv(&mut Context::from_waker(noop_waker_ref()), true)
    }

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![0; len])
    }

    #[test]
    fn bounded_in_frames_and_bytes() {
        let (tx, mut rx) = Outbound::channel(2);
        assert_eq!(
            tx.try_send(frame(100), 10),
            Ok(()),
            "first frame always fits"
        );
        assert_eq!(tx.try_send(frame(1), 10), Err(QueueError::Full));
        assert_eq!(poll(&mut rx), Poll::Ready(Received::Frame(frame(100))));
        assert_eq!(tx.try_send(frame(5), 10), Ok(()));
        assert_eq!(tx.try_send(frame(5), 10), Ok(()));
        assert_eq!(
            tx.try_send(frame(0), 10),
            Err(QueueError::Full),
            "two frames at most"
        );
        assert!(!rx.push_reply(frame(1)), "replies respect the frame bound");
        drop(rx);
        assert_eq!(tx.try_send(Bytes::new(), 10), Err(QueueError::Closed));
    }

    #[test]
    fn a_batch_is_queued_whole_or_not_at_all() {
        let (tx, mut rx) = Outbound::channel(3);
        let batch = [frame(1), frame(2)];
        assert_eq!(tx.try_send_all(batch.iter(), 100), Ok(()));
        assert_eq!(
            tx.try_send_all(batch.iter(), 100),
            Err(QueueError::Full),
            "two more would make four frames"
        );
        assert_eq!(poll(&mut rx), Poll::Ready(Received::Frame(frame(1))));
        assert_eq!(poll(&mut rx), Poll::Ready(Received::Frame(frame(2))));
        assert_eq!(poll(&mut rx), Poll::Pending, "nothing of the refused batch");
        assert_eq!(tx.try_send_all([].iter(), 100), Ok(()));
    }

    #[test]
    fn a_close_comes_before_queued_frames_and_stays() {
        let (tx, mut rx) = Outbound::channel(8);
        tx.try_send(frame(1), 100).expect("queued");
        tx.close(CloseReason::new(CloseReason::POLICY, "too slow"));
        tx.close(CloseReason::new(
            CloseReason::DELETED,
            "ignored: the first close wins",
        ));
        let closed = Poll::Ready(Received::Closed(CloseReason::new(
            CloseReason::POLICY,
            "too slow",
        )));
        assert_eq!(poll(&mut rx), closed);
        assert_eq!(poll(&mut rx), closed);
        assert_eq!(tx.try_send(frame(1), 100), Err(QueueError::Closed));
    }

    #[test]
    fn the_last_sender_dropped_closes_the_connection() {
        let (tx, mut rx) = Outbound::channel(8);
        let copy = tx.clone();
        drop(tx);
        assert_eq!(poll(&mut rx), Poll::Pending, "a sender is left");
        drop(copy);
        assert_eq!(
            poll(&mut rx),
            Poll::Ready(Received::Closed(CloseReason::new(
                CloseReason::GOING_AWAY,
                "document closed"
            )))
        );
    }

    #[tokio::test]
    async fn a_frame_wakes_the_waiting_connection() {
        let (tx, mut rx) = Outbound::channel(8);
        let waiter =
            tokio::spawn(async move { std::future::poll_fn(|cx| rx.poll_recv(cx, true)).await });
        tokio::task::yield_now().await;
        tx.try_send(frame(3), 100).expect("queued");
        assert_eq!(waiter.await.expect("no panic"), Received::Frame(frame(3)));
    }

    #[test]
    fn a_drained_queue_gives_its_memory_back() {
        let (tx, mut rx) = Outbound::channel(1000);
        for _ in 0..100 {
            tx.try_send(frame(1), usize::MAX).expect("queued");
        }
        while let Poll::Ready(Received::Frame(_)) = poll(&mut rx) {}
        assert_eq!(rx.shared.lock().frames.capacity(), 0);
    }
}
