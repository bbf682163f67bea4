//! A connection's outbound queue: bounded in frames and in bytes.

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The client is not reading fast enough.
    Full,
    /// The connection is gone.
    Closed,
}

/// The sending side, held by the document actor (and the connection itself
/// for direct replies).
#[derive(Clone)]
pub struct Outbound {
    tx: mpsc::Sender<Bytes>,
    queued_bytes: Arc<AtomicUsize>,
}

/// The receiving side, drained by the connection's writer task.
pub struct OutboundReceiver {
    rx: mpsc::Receiver<Bytes>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Outbound {
    pub fn channel(frames: usize) -> (Outbound, OutboundReceiver) {
        let (tx, rx) = mpsc::channel(frames.max(1));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        (
            Outbound {
                tx,
                queued_bytes: queued_bytes.clone(),
            },
            OutboundReceiver { rx, queued_bytes },
        )
    }

    /// Queues a frame unless the queue holds `max_bytes` already. One frame
    /// larger than the budget still goes through when the queue is empty,
    /// or a large document could never be sent.
    pub fn try_send(&self, frame: Bytes, max_bytes: usize) -> Result<(), QueueError> {
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        if queued > 0 && queued + frame.len() > max_bytes {
            return Err(QueueError::Full);
        }
        self.push(frame)
    }

    /// Queues a frame regardless of the byte budget (small replies).
    pub fn try_send_direct(&self, frame: Bytes) -> Result<(), QueueError> {
        self.push(frame)
    }

    fn push(&self, frame: Bytes) -> Result<(), QueueError> {
        let len = frame.len();
        match self.tx.try_send(frame) {
            Ok(()) => {
                self.queued_bytes.fetch_add(len, Ordering::Relaxed);
                crate::metrics::outbound_queued(1);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(QueueError::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(QueueError::Closed),
        }
    }
}

impl OutboundReceiver {
    pub async fn recv(&mut self) -> Option<Bytes> {
        let frame = self.rx.recv().await?;
        self.taken(&frame);
        Some(frame)
    }

    pub fn try_recv(&mut self) -> Option<Bytes> {
        let frame = self.rx.try_recv().ok()?;
        self.taken(&frame);
        Some(frame)
    }

    fn taken(&self, frame: &Bytes) {
        self.queued_bytes.fetch_sub(frame.len(), Ordering::Relaxed);
        crate::metrics::outbound_queued(-1);
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        self.rx.close();
        let mut left = 0;
        while self.rx.try_recv().is_ok() {
            left += 1;
        }
        crate::metrics::outbound_queued(-left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_in_frames_and_bytes() {
        let (tx, mut rx) = Outbound::channel(2);
        assert_eq!(
            tx.try_send(Bytes::from(vec![0; 100]), 10),
            Ok(()),
            "first frame always fits"
        );
        assert_eq!(
            tx.try_send(Bytes::from(vec![0; 1]), 10),
            Err(QueueError::Full)
        );
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(100));
        assert_eq!(tx.try_send(Bytes::from(vec![0; 5]), 10), Ok(()));
        assert_eq!(tx.try_send(Bytes::from(vec![0; 5]), 10), Ok(()));
        assert_eq!(
            tx.try_send_direct(Bytes::from(vec![0; 1])),
            Err(QueueError::Full)
        );
        drop(rx);
        assert_eq!(tx.try_send_direct(Bytes::new()), Err(QueueError::Closed));
    }
}
