//! Presence as one y-protocols `Awareness` instance sees it.
//!
//! Remote clients live in a [`crdt_core::AwarenessTable`], which applies the
//! y-protocols clock rules. The local client's entry is kept here, because two
//! rules only apply to it:
//!
//! - changing the local state bumps the local clock, and
//! - a remote peer may not remove the local state: when someone announces
//!   "you are gone" (a `null` state at a clock not older than ours) while we
//!   still have a state, we jump past that clock and re-announce ourselves,
//!   exactly as `applyAwarenessUpdate` does in y-protocols.

use crdt_core::awareness::AwarenessEntry;
use crdt_core::{AwarenessTable, AwarenessUpdate};
use std::collections::BTreeMap;

/// The awareness view of one client: its own state and everyone else's.
#[derive(Debug)]
pub struct ClientAwareness {
    client: u64,
    clock: u32,
    /// JSON text of the local state; kept while disconnected so that a
    /// reconnect can announce it again.
    local: Option<String>,
    remote: AwarenessTable,
}

/// What applying a remote update did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RemoteOutcome {
    /// Whether any state (remote or local clock) changed.
    pub changed: bool,
    /// The local entry to broadcast again because a peer tried to remove it.
    pub reannounce: Option<AwarenessUpdate>,
}

impl ClientAwareness {
    /// A fresh view for the client whose id is `client` (the doc's client id).
    pub fn new(client: u64) -> Self {
        ClientAwareness {
            client,
            clock: 0,
            local: None,
            remote: AwarenessTable::default(),
        }
    }

    /// This client's awareness id.
    pub fn client_id(&self) -> u64 {
        self.client
    }

    /// This client's current clock.
    pub fn clock(&self) -> u32 {
        self.clock
    }

    /// The local state as JSON text, if any.
    pub fn local_state(&self) -> Option<&str> {
        self.local.as_deref()
    }

    /// Sets (or with `None`, clears) the local state; returns the update to send.
    pub fn set_local(&mut self, state: Option<String>) -> AwarenessUpdate {
        self.clock = self.clock.wrapping_add(1);
        self.local = state;
        self.local_entry()
    }

    /// The update announcing the local state after (re)connecting, with a new
    /// clock so peers that saw our removal accept it. `None` without a state.
    pub fn announce(&mut self) -> Option<AwarenessUpdate> {
        self.local.as_ref()?;
        self.clock = self.clock.wrapping_add(1);
        Some(self.local_entry())
    }

    /// The removal to send on a clean disconnect (clock + 1, `null` state).
    /// The local state is remembered for [`announce`](Self::announce).
    pub fn departure(&mut self) -> Option<AwarenessUpdate> {
        self.local.as_ref()?;
        self.clock = self.clock.wrapping_add(1);
        Some(AwarenessUpdate {
            entries: vec![AwarenessEntry {
                client: self.client,
                clock: self.clock,
                state: None,
            }],
        })
    }

    /// Applies an update received from the server.
    pub fn apply_remote(&mut self, update: AwarenessUpdate) -> RemoteOutcome {
        let mut outcome = RemoteOutcome::default();
        let mut others = Vec::with_capacity(update.entries.len());
        for entry in update.entries {
            if entry.client != self.client {
                others.push(entry);
                continue;
            }
            let newer = entry.clock > self.clock;
            let removes_present =
                entry.clock == self.clock && entry.state.is_none() && self.local.is_some();
            if !(newer || removes_present) {
                continue;
            }
            outcome.changed = true;
            match entry.state {
                None if self.local.is_some() => {
                    // Never let a peer remove us: outbid its clock.
                    self.clock = entry.clock.wrapping_add(1);
                    outcome.reannounce = Some(self.local_entry());
                }
                state => {
                    self.clock = entry.clock;
                    self.local = state;
                }
            }
        }
        let change = self.remote.apply(AwarenessUpdate { entries: others });
        outcome.changed |= !change.is_empty();
        outcome
    }

    /// Forgets every remote state, as y-websocket does when its socket closes
    /// (peers re-announce themselves after a reconnect). Returns whether any
    /// state was removed.
    pub fn clear_remote(&mut self) -> bool {
        let present: Vec<u64> = self
            .remote
            .snapshot()
            .entries
            .iter()
            .map(|e| e.client)
            .collect();
        !self.remote.remove(present).is_empty()
    }

    /// Every known state, own included, as an awareness update: the answer
    /// to a query-awareness message.
    pub fn full_update(&self) -> AwarenessUpdate {
        let mut update = self.remote.snapshot();
        if self.local.is_some() {
            update.entries.extend(self.local_entry().entries);
        }
        update
    }

    /// Every present state by client id, own included (y-protocols `getStates`).
    pub fn states(&self) -> BTreeMap<u64, serde_json::Value> {
        self.full_update()
            .entries
            .into_iter()
            .filter_map(|e| {
                let value = serde_json::from_str(e.state.as_deref()?).ok()?;
                Some((e.client, value))
            })
            .collect()
    }

    fn local_entry(&self) -> AwarenessUpdate {
        AwarenessUpdate {
            entries: vec![AwarenessEntry {
                client: self.client,
                clock: self.clock,
                state: self.local.clone(),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn update(entries: &[(u64, u32, Option<&str>)]) -> AwarenessUpdate {
        AwarenessUpdate {
            entries: entries
                .iter()
                .map(|(client, clock, state)| AwarenessEntry {
                    client: *client,
                    clock: *clock,
                    state: state.map(str::to_owned),
                })
                .collect(),
        }
    }

    #[test]
    fn local_changes_bump_the_clock() {
        let mut a = ClientAwareness::new(1);
        assert_eq!(
            a.set_local(Some("{}".into())),
            update(&[(1, 1, Some("{}"))])
        );
        assert_eq!(
            a.set_local(Some("[]".into())),
            update(&[(1, 2, Some("[]"))])
        );
        assert_eq!(a.departure(), Some(update(&[(1, 3, None)])));
        assert_eq!(a.announce(), Some(update(&[(1, 4, Some("[]"))])));
        assert_eq!(a.set_local(None), update(&[(1, 5, None)]));
        assert_eq!(a.departure(), None);
        assert_eq!(a.announce(), None);
    }

    #[test]
    fn remote_states_follow_y_protocols_rules() {
        let mut a = ClientAwareness::new(1);
        let steps: Vec<(AwarenessUpdate, bool, &[u64])> = vec![
            (update(&[(2, 1, Some(r#"{"n":"b"}"#))]), true, &[2]),
            (update(&[(2, 1, Some(r#"{"n":"stale"}"#))]), false, &[2]),
            (update(&[(3, 5, Some("{}"))]), true, &[2, 3]),
            (update(&[(2, 1, None)]), true, &[3]),
            (update(&[(3, 4, None)]), false, &[3]),
        ];
        for (i, (input, changed, present)) in steps.into_iter().enumerate() {
            let outcome = a.apply_remote(input);
            assert_eq!(outcome.changed, changed, "step {i}");
            assert_eq!(outcome.reannounce, None, "step {i}");
            let clients: Vec<u64> = a.states().into_keys().collect();
            assert_eq!(clients, present, "step {i}");
        }
        assert!(a.clear_remote());
        assert!(a.states().is_empty());
    }

    #[test]
    fn a_peer_cannot_remove_the_local_state() {
        let mut a = ClientAwareness::new(1);
        a.set_local(Some(r#"{"me":true}"#.into()));
        let outcome = a.apply_remote(update(&[(1, 1, None)]));
        assert_eq!(
            outcome.reannounce,
            Some(update(&[(1, 2, Some(r#"{"me":true}"#))]))
        );
        assert_eq!(a.states()[&1], json!({"me": true}));
        // An older removal is ignored.
        assert_eq!(
            a.apply_remote(update(&[(1, 1, None)])),
            RemoteOutcome::default()
        );
    }

    #[test]
    fn query_answer_lists_every_state() {
        let mut a = ClientAwareness::new(9);
        a.set_local(Some("{}".into()));
        a.apply_remote(update(&[(2, 3, Some("[1]"))]));
        assert_eq!(
            a.full_update(),
            update(&[(2, 3, Some("[1]")), (9, 1, Some("{}"))])
        );
    }
}
