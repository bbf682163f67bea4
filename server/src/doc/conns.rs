//! A document's connections and what is relayed to each.
//!
//! Most of the cost of a fan-out is the kernel's: one `sendto` per client
//! per write. Applied updates are therefore relayed in batches: each
//! connection gets every frame of a batch in one push (one wake-up, one
//! write). A batch ends when the actor has nothing else queued
//! (`--broadcast-window-ms 0`, the default: no added latency), or when the
//! window has passed since its first update, or at [`MAX_BATCH`] frames.
//!
//! Rules kept here, so that no caller can break them:
//! - anything else sent to a connection (awareness, replies) first flushes
//!   the batch, so frames reach each client in the order they were produced;
//! - no connection gets back an update it sent;
//! - a connection whose queue is full is closed (1008, it resyncs when it
//!   reconnects), never silently skipped.
//!
//! A connection that leaves, for whatever reason, is returned to the caller
//! as a [`Departure`]: its awareness clients must then be removed, which the
//! actor does (and which may relay more frames).

use super::close::CloseReason;
use super::command::{ConnId, Dialect};
use super::outbound::{Outbound, QueueError};
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Frames in one batch at most, whatever the window.
const MAX_BATCH: usize = 64;

/// A connection that left: the awareness clients it introduced.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Departure {
    pub(super) awareness_clients: Vec<u64>,
    pub(super) dialect: Dialect,
}

/// Connections that left while frames were sent.
pub(super) type Departures = Vec<Departure>;

struct Link {
    outbound: Outbound,
    dialect: Dialect,
    /// Awareness client ids this connection introduced; removed when it
    /// leaves. Usually one: a sorted `Vec` is the smallest set for that.
    awareness_clients: Vec<u64>,
    /// Who it is, when its token says.
    who: Option<Arc<str>>,
}

/// Update frames applied but not yet relayed, each with the connection it
/// came from.
#[derive(Default)]
struct Batch {
    frames: Vec<(Bytes, Option<ConnId>)>,
    since: Option<Instant>,
}

pub(super) struct Connections {
    links: HashMap<ConnId, Link>,
    batch: Batch,
    max_outbound_bytes: usize,
    window: Duration,
}

impl Connections {
    pub(super) fn new(max_outbound_bytes: usize, window: Duration) -> Self {
        Connections {
            links: HashMap::new(),
            batch: Batch::default(),
            max_outbound_bytes,
            window,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.links.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Adds a connection and sends it its opening frames, in order.
    pub(super) fn join(
        &mut self,
        id: ConnId,
        outbound: Outbound,
        dialect: Dialect,
        who: Option<Arc<str>>,
        first: Vec<Bytes>,
    ) -> Departures {
        self.links.insert(
            id,
            Link {
                outbound,
                dialect,
                awareness_clients: Vec::new(),
                who,
            },
        );
        let mut departed = Vec::new();
        for frame in first {
            departed.extend(self.send_to(id, frame));
        }
        departed
    }

    /// Who is connected, as far as tokens say: each name once, in order,
    /// at most `limit` of them.
    pub(super) fn who(&self, limit: usize) -> Vec<String> {
        let names: BTreeSet<&str> = self
            .links
            .values()
            .filter_map(|l| l.who.as_deref())
            .collect();
        names.into_iter().take(limit).map(str::to_owned).collect()
    }

    /// The dialect of a connection, if it is still here.
    pub(super) fn dialect(&self, id: ConnId) -> Option<Dialect> {
        self.links.get(&id).map(|link| link.dialect)
    }

    /// Removes a connection that closed on its own.
    pub(super) fn leave(&mut self, id: ConnId) -> Option<Departure> {
        self.links.remove(&id).map(|link| Departure {
            awareness_clients: link.awareness_clients,
            dialect: link.dialect,
        })
    }

    /// Closes a connection from the server side.
    pub(super) fn kick(&mut self, id: ConnId, reason: CloseReason) -> Option<Departure> {
        if let Some(link) = self.links.get(&id) {
            tracing::info!(conn = id, code = reason.code, reason = %reason.reason, "closing connection");
            link.outbound.close(reason);
        }
        self.leave(id)
    }

    /// Closes every connection from the server side.
    pub(super) fn close_all(&mut self, reason: CloseReason) -> Departures {
        let ids: Vec<ConnId> = self.links.keys().copied().collect();
        ids.into_iter()
            .filter_map(|id| self.kick(id, reason.clone()))
            .collect()
    }

    /// Records which awareness clients a connection introduced or removed.
    pub(super) fn note_awareness(&mut self, id: ConnId, introduced: &[u64], removed: &[u64]) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        // Sorted, so that an update naming many clients costs O(n log n),
        // never O(n²).
        let clients = &mut link.awareness_clients;
        clients.extend_from_slice(introduced);
        clients.sort_unstable();
        clients.dedup();
        if !removed.is_empty() {
            let mut removed = removed.to_vec();
            removed.sort_unstable();
            clients.retain(|client| removed.binary_search(client).is_err());
        }
    }

    /// Awareness clients introduced by this node's connections.
    pub(super) fn local_awareness_clients(&self) -> Vec<u64> {
        self.links
            .values()
            .flat_map(|link| link.awareness_clients.iter().copied())
            .collect()
    }

    /// When the batch must go out, if there is one and a window is set.
    /// Without a window the actor flushes as soon as its mailbox is empty,
    /// so no timer is needed.
    pub(super) fn flush_deadline(&self) -> Option<Instant> {
        if self.window.is_zero() {
            return None;
        }
        self.batch.since.map(|since| since + self.window)
    }

    /// Whether a batch goes out when the mailbox is empty, without a timer.
    pub(super) fn flushes_when_idle(&self) -> bool {
        self.window.is_zero()
    }

    /// Queues an applied update's frame for every connection but `origin`.
    pub(super) fn relay_update(&mut self, frame: Bytes, origin: Option<ConnId>) -> Departures {
        self.batch.since.get_or_insert_with(Instant::now);
        self.batch.frames.push((frame, origin));
        if self.batch.frames.len() >= MAX_BATCH {
            self.flush()
        } else {
            Vec::new()
        }
    }

    /// Sends the pending batch: each connection gets all of its frames at once.
    pub(super) fn flush(&mut self) -> Departures {
        self.batch.since = None;
        if self.batch.frames.is_empty() {
            return Vec::new();
        }
        let frames = std::mem::take(&mut self.batch.frames);
        // Only failures are collected: a batch that reaches everyone
        // allocates nothing.
        let mut failed = Vec::new();
        for (id, link) in &self.links {
            let theirs = frames
                .iter()
                .filter(|(_, origin)| *origin != Some(*id))
                .map(|(frame, _)| frame);
            if let Err(e) = link.outbound.try_send_all(theirs, self.max_outbound_bytes) {
                failed.push((*id, e));
            }
        }
        // Keep the allocation for the next batch.
        self.batch.frames = frames;
        self.batch.frames.clear();
        self.settle(failed)
    }

    /// Sends one frame to every connection, after the pending batch.
    pub(super) fn broadcast(&mut self, frame: Bytes) -> Departures {
        let mut departed = self.flush();
        let failed: Vec<_> = self
            .links
            .iter()
            .filter_map(|(id, link)| {
                let sent = link
                    .outbound
                    .try_send(frame.clone(), self.max_outbound_bytes);
                sent.err().map(|e| (*id, e))
            })
            .collect();
        departed.extend(self.settle(failed));
        departed
    }

    /// Sends one frame to every connection of `dialect` but `except`,
    /// after the pending batch.
    pub(super) fn broadcast_to(
        &mut self,
        dialect: Dialect,
        except: Option<ConnId>,
        frame: Bytes,
    ) -> Departures {
        let mut departed = self.flush();
        let failed: Vec<_> = self
            .links
            .iter()
            .filter(|(id, link)| link.dialect == dialect && except != Some(**id))
            .filter_map(|(id, link)| {
                let sent = link
                    .outbound
                    .try_send(frame.clone(), self.max_outbound_bytes);
                sent.err().map(|e| (*id, e))
            })
            .collect();
        departed.extend(self.settle(failed));
        departed
    }

    /// Sends one frame to one connection, after the pending batch.
    pub(super) fn send_to(&mut self, id: ConnId, frame: Bytes) -> Departures {
        let mut departed = self.flush();
        if let Some(link) = self.links.get(&id) {
            if let Err(e) = link.outbound.try_send(frame, self.max_outbound_bytes) {
                departed.extend(self.settle(vec![(id, e)]));
            }
        }
        departed
    }

    /// Closes the connections that cannot keep up (they resync when they
    /// reconnect) and forgets those already gone.
    fn settle(&mut self, failed: Vec<(ConnId, QueueError)>) -> Departures {
        failed
            .into_iter()
            .filter_map(|(id, error)| match error {
                QueueError::Full => self.kick(
                    id,
                    CloseReason::new(CloseReason::POLICY, "client too slow; reconnect to resync"),
                ),
                QueueError::Closed => self.leave(id),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::outbound::{OutboundReceiver, Received};
    use super::*;
    use std::task::{Context, Poll, Waker};

    /// What a connection received so far: frames by name, then a close code.
    fn received(rx: &mut OutboundReceiver) -> Vec<String> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut seen = Vec::new();
        loop {
            match rx.poll_recv(&mut cx, true) {
                Poll::Ready(Received::Frame(frame)) => {
                    seen.push(String::from_utf8_lossy(&frame).into_owned())
                }
                Poll::Ready(Received::Closed(reason)) => {
                    seen.push(format!("close {}", reason.code));
                    return seen;
                }
                Poll::Pending => return seen,
            }
        }
    }

    fn frame(name: &str) -> Bytes {
        Bytes::from(name.to_owned())
    }

    /// One step a document takes towards its connections.
    #[derive(Clone, Copy)]
    enum Step {
        Update(&'static str, Option<ConnId>),
        Broadcast(&'static str),
        SendTo(ConnId, &'static str),
        Flush,
    }

    /// A case: its name, the steps, what connections 1, 2 and 3 received.
    type RelayCase = (&'static str, &'static [Step], [&'static [&'static str]; 3]);

    /// A case: its name, the changes (introduced, removed), the clients left.
    type PresenceCase = (
        &'static str,
        &'static [(&'static [u64], &'static [u64])],
        &'static [u64],
    );

    fn run(conns: &mut Connections, steps: &[Step]) -> Departures {
        let mut departed = Vec::new();
        for step in steps {
            departed.extend(match *step {
                Step::Update(name, origin) => conns.relay_update(frame(name), origin),
                Step::Broadcast(name) => conns.broadcast(frame(name)),
                Step::SendTo(id, name) => conns.send_to(id, frame(name)),
                Step::Flush => conns.flush(),
            });
        }
        departed
    }

    #[test]
    fn what_each_connection_receives_and_in_which_order() {
        use Step::*;
        // Connections 1, 2 and 3; each case lists what each one received.
        let cases: &[RelayCase] = &[
            (
                "an update goes to everyone but its origin",
                &[Update("u1", Some(1)), Flush],
                [&[], &["u1"], &["u1"]],
            ),
            (
                "an update from REST or a peer goes to everyone",
                &[Update("u1", None), Flush],
                [&["u1"], &["u1"], &["u1"]],
            ),
            (
                "a batch waits for the flush",
                &[Update("u1", Some(1)), Update("u2", Some(2))],
                [&[], &[], &[]],
            ),
            (
                "a batch keeps its order and leaves out each one's own",
                &[
                    Update("u1", Some(1)),
                    Update("u2", Some(2)),
                    Update("u3", None),
                    Flush,
                ],
                [&["u2", "u3"], &["u1", "u3"], &["u1", "u2", "u3"]],
            ),
            (
                "awareness flushes the batch first and reaches its sender too",
                &[Update("u1", Some(1)), Broadcast("a1")],
                [&["a1"], &["u1", "a1"], &["u1", "a1"]],
            ),
            (
                "a reply flushes the batch first",
                &[Update("u1", Some(2)), SendTo(1, "r1")],
                [&["u1", "r1"], &[], &["u1"]],
            ),
            (
                "a reply to an unknown connection goes nowhere",
                &[SendTo(9, "r")],
                [&[], &[], &[]],
            ),
        ];
        for (case, steps, expected) in cases {
            let mut conns = Connections::new(1 << 20, Duration::ZERO);
            let mut receivers: Vec<OutboundReceiver> = (1..=3)
                .map(|id| {
                    let (tx, rx) = Outbound::channel(16);
                    assert!(conns
                        .join(id, tx, Dialect::YWebsocket, None, Vec::new())
                        .is_empty());
                    rx
                })
                .collect();
            let departed = run(&mut conns, steps);
            assert!(departed.is_empty(), "{case}: {departed:?}");
            for (i, rx) in receivers.iter_mut().enumerate() {
                assert_eq!(received(rx), expected[i], "{case}: connection {}", i + 1);
            }
        }
    }

    #[test]
    fn stateless_messages_reach_the_other_hocuspocus_sessions_after_the_batch() {
        let mut conns = Connections::new(1 << 20, Duration::ZERO);
        let dialects = [
            Dialect::YWebsocket,
            Dialect::Hocuspocus,
            Dialect::Hocuspocus,
        ];
        let mut receivers: Vec<OutboundReceiver> = (1..=3)
            .zip(dialects)
            .map(|(id, dialect)| {
                let (tx, rx) = Outbound::channel(16);
                assert!(conns.join(id, tx, dialect, None, Vec::new()).is_empty());
                rx
            })
            .collect();
        assert!(conns.relay_update(frame("u1"), None).is_empty());
        assert!(conns
            .broadcast_to(Dialect::Hocuspocus, Some(2), frame("s1"))
            .is_empty());
        let expected: [&[&str]; 3] = [&["u1"], &["u1"], &["u1", "s1"]];
        for (i, rx) in receivers.iter_mut().enumerate() {
            assert_eq!(received(rx), expected[i], "connection {}", i + 1);
        }
        assert_eq!(conns.dialect(2), Some(Dialect::Hocuspocus));
        assert_eq!(conns.dialect(9), None);
    }

    #[test]
    fn a_connection_that_cannot_keep_up_is_closed_and_departs_with_its_presence() {
        let mut conns = Connections::new(1 << 20, Duration::ZERO);
        let (slow_tx, mut slow) = Outbound::channel(2);
        let (fast_tx, mut fast) = Outbound::channel(16);
        conns.join(1, slow_tx, Dialect::YWebsocket, None, Vec::new());
        conns.join(2, fast_tx, Dialect::YWebsocket, None, Vec::new());
        conns.note_awareness(1, &[70, 71], &[]);
        let mut departed = Vec::new();
        for name in ["a", "b", "c"] {
            departed.extend(conns.broadcast(frame(name)));
        }
        assert_eq!(
            departed,
            vec![Departure {
                awareness_clients: vec![70, 71],
                dialect: Dialect::YWebsocket,
            }]
        );
        assert_eq!(received(&mut slow), vec!["close 1008"]);
        assert_eq!(received(&mut fast), vec!["a", "b", "c"]);
        assert_eq!(conns.len(), 1);
    }

    #[test]
    fn a_connection_whose_task_is_gone_departs_without_a_close() {
        let mut conns = Connections::new(1 << 20, Duration::ZERO);
        let (tx, rx) = Outbound::channel(16);
        conns.join(1, tx, Dialect::YWebsocket, None, Vec::new());
        conns.note_awareness(1, &[5], &[]);
        drop(rx);
        assert_eq!(
            conns.send_to(1, frame("x")),
            vec![Departure {
                awareness_clients: vec![5],
                dialect: Dialect::YWebsocket,
            }]
        );
        assert!(conns.is_empty());
    }

    #[test]
    fn awareness_clients_are_tracked_per_connection() {
        let cases: &[PresenceCase] = &[
            ("introduced", &[(&[3, 1], &[])], &[1, 3]),
            ("introduced twice", &[(&[1], &[]), (&[1], &[])], &[1]),
            ("removed again", &[(&[1, 2], &[]), (&[], &[1])], &[2]),
            ("removal of a stranger", &[(&[1], &[9])], &[1]),
        ];
        for (case, changes, expected) in cases {
            let mut conns = Connections::new(1 << 20, Duration::ZERO);
            let (tx, _rx) = Outbound::channel(16);
            conns.join(1, tx, Dialect::YWebsocket, None, Vec::new());
            for (introduced, removed) in *changes {
                conns.note_awareness(1, introduced, removed);
            }
            assert_eq!(conns.local_awareness_clients(), *expected, "{case}");
        }
    }

    #[test]
    fn a_full_batch_goes_out_without_waiting_for_the_flush() {
        let mut conns = Connections::new(1 << 20, Duration::from_secs(60));
        let (tx, mut rx) = Outbound::channel(1024);
        conns.join(1, tx, Dialect::YWebsocket, None, Vec::new());
        for _ in 0..MAX_BATCH - 1 {
            conns.relay_update(frame("u"), None);
        }
        assert!(received(&mut rx).is_empty());
        assert!(conns.flush_deadline().is_some());
        conns.relay_update(frame("u"), None);
        assert_eq!(received(&mut rx).len(), MAX_BATCH);
        assert_eq!(conns.flush_deadline(), None);
    }
}
