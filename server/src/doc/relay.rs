//! Relaying frames to a document's connections.
//!
//! Most of the cost of a fan-out is the kernel's: one `sendto` per client
//! per write. Applied updates are therefore relayed in batches: each
//! connection gets every frame of a batch in one push (one wake-up, one
//! write). A batch ends when the actor has nothing else queued
//! (`--broadcast-window-ms 0`, the default: no added latency), or when the
//! window has passed since its first update, or at [`MAX_BATCH`] frames.
//!
//! Everything else (awareness, replies) first flushes the batch, so frames
//! reach each client in the order the actor produced them.

use super::actor::DocActor;
use super::command::{CloseReason, ConnId};
use super::outbound::QueueError;
use bytes::Bytes;
use std::time::Duration;
use tokio::time::Instant;

/// Frames in one batch at most, whatever the window.
const MAX_BATCH: usize = 64;

/// Update frames applied but not yet relayed, each with the connection it
/// came from (which does not get it back).
#[derive(Default)]
pub(super) struct PendingRelay {
    frames: Vec<(Bytes, Option<ConnId>)>,
    since: Option<Instant>,
}

impl PendingRelay {
    /// When the batch must go out, if there is one and a window is set.
    /// Without a window the actor flushes as soon as its mailbox is empty,
    /// so no timer is needed.
    pub(super) fn deadline(&self, window: Duration) -> Option<Instant> {
        if window.is_zero() {
            return None;
        }
        self.since.map(|since| since + window)
    }
}

impl DocActor {
    /// Queues an applied update's frame for every connection but `origin`.
    pub(super) fn relay_update(&mut self, frame: Bytes, origin: Option<ConnId>) {
        let batch = &mut self.relay;
        batch.since.get_or_insert_with(Instant::now);
        batch.frames.push((frame, origin));
        if batch.frames.len() >= MAX_BATCH {
            self.flush_relay();
        }
    }

    /// Sends the pending batch: each connection gets all of its frames at once.
    pub(super) fn flush_relay(&mut self) {
        self.relay.since = None;
        if self.relay.frames.is_empty() {
            return;
        }
        let frames = std::mem::take(&mut self.relay.frames);
        let max_bytes = self.settings.max_outbound_bytes;
        let mut slow = Vec::new();
        let mut closed = Vec::new();
        for (id, link) in &self.conns {
            let theirs = frames
                .iter()
                .filter(|(_, origin)| *origin != Some(*id))
                .map(|(frame, _)| frame);
            match link.outbound.try_send_all(theirs, max_bytes) {
                Ok(()) => {}
                Err(QueueError::Full) => slow.push(*id),
                Err(QueueError::Closed) => closed.push(*id),
            }
        }
        self.drop_unreachable(slow, closed);
        // Keep the allocation for the next batch.
        self.relay.frames = frames;
        self.relay.frames.clear();
    }

    /// Sends one encoded frame to every connection but `except`, after the
    /// pending batch.
    pub(super) fn broadcast(&mut self, frame: Bytes, except: Option<ConnId>) {
        self.flush_relay();
        let max_bytes = self.settings.max_outbound_bytes;
        let mut slow = Vec::new();
        let mut closed = Vec::new();
        for (id, link) in &self.conns {
            if Some(*id) == except {
                continue;
            }
            match link.outbound.try_send(frame.clone(), max_bytes) {
                Ok(()) => {}
                Err(QueueError::Full) => slow.push(*id),
                Err(QueueError::Closed) => closed.push(*id),
            }
        }
        self.drop_unreachable(slow, closed);
    }

    /// Sends one frame to one connection, after the pending batch.
    pub(super) fn send_to(&mut self, id: ConnId, frame: Bytes) {
        self.flush_relay();
        let Some(link) = self.conns.get(&id) else {
            return;
        };
        match link
            .outbound
            .try_send(frame, self.settings.max_outbound_bytes)
        {
            Ok(()) => {}
            Err(QueueError::Full) => self.drop_unreachable(vec![id], Vec::new()),
            Err(QueueError::Closed) => self.remove_conn(id),
        }
    }

    /// Closes the connections that cannot keep up (they resync when they
    /// reconnect) and forgets those already gone.
    fn drop_unreachable(&mut self, slow: Vec<ConnId>, closed: Vec<ConnId>) {
        for id in slow {
            self.kick(
                id,
                CloseReason::new(CloseReason::POLICY, "client too slow; reconnect to resync"),
            );
        }
        for id in closed {
            self.remove_conn(id);
        }
    }
}
