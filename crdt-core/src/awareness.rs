//! Awareness (presence) as y-protocols defines it, kept by the server.
//!
//! ```text
//! update = varUint(n) { varUint(clientID) varUint(clock) varString(JSON state | "null") }^n
//! ```
//!
//! The table follows y-protocols' `applyAwarenessUpdate`: an entry takes effect
//! when its clock is newer, or equal with a `null` state removing a present
//! one. Clocks of removed clients are remembered so stale updates stay stale.

use crate::state_vector::MAX_CLIENT_ID;
use crate::wire::{Reader, WireError, Writer};
use std::collections::HashMap;
use thiserror::Error;

/// Why bytes are not an awareness update the server will relay.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AwarenessError {
    /// The lib0 encoding is malformed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// More entries than the remaining bytes could hold (three bytes at
    /// least each); refused before allocating for them.
    #[error("declares {declared} entries but only {remaining} bytes remain")]
    TooManyEntries {
        /// Entries the update declares.
        declared: u64,
        /// Bytes left after the count.
        remaining: usize,
    },
    /// A client id beyond the 53 bits of a JavaScript safe integer.
    #[error("client id {0} exceeds 53 bits")]
    ClientIdTooLarge(u64),
    /// A state that is not JSON, or nests past serde_json's recursion limit.
    #[error("state of client {client} is not valid JSON: {message}")]
    InvalidJson {
        /// The client whose state it is.
        client: u64,
        /// serde_json's error.
        message: String,
    },
}

impl AwarenessError {
    /// Short, stable label for metrics and tests.
    pub fn reason(&self) -> &'static str {
        match self {
            AwarenessError::Wire(e) => e.reason(),
            AwarenessError::TooManyEntries { .. } => "count_too_large",
            AwarenessError::ClientIdTooLarge(_) => "client_id_too_large",
            AwarenessError::InvalidJson { .. } => "invalid_json",
        }
    }
}

/// One client's entry in an awareness update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwarenessEntry {
    /// Yjs client id, at most 53 bits.
    pub client: u64,
    /// Bumped by the client on every change: the newest entry wins.
    pub clock: u32,
    /// The JSON text of the state; `None` when the client left (`null`).
    pub state: Option<String>,
}

/// An awareness update as y-protocols encodes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwarenessUpdate {
    /// In wire order; a client may appear more than once.
    pub entries: Vec<AwarenessEntry>,
}

impl AwarenessUpdate {
    /// Decodes and validates: every state must be JSON, because browsers
    /// `JSON.parse` what we relay and one bad state would break them all.
    pub fn decode(bytes: &[u8]) -> Result<Self, AwarenessError> {
        let mut r = Reader::new(bytes);
        let declared = r.read_var_u64("awareness length")?;
        // client id, clock and string length take at least one byte each.
        if declared > (r.remaining() / 3) as u64 {
            return Err(AwarenessError::TooManyEntries {
                declared,
                remaining: r.remaining(),
            });
        }
        let mut entries = Vec::with_capacity(declared as usize);
        for _ in 0..declared {
            let client = r.read_var_u64("awareness client")?;
            if client > MAX_CLIENT_ID {
                return Err(AwarenessError::ClientIdTooLarge(client));
            }
            let clock = r.read_var_u32("awareness clock")?;
            let json = r.read_var_string("awareness state")?;
            let value: serde_json::Value =
                serde_json::from_str(json).map_err(|e| AwarenessError::InvalidJson {
                    client,
                    message: e.to_string(),
                })?;
            let state = (!value.is_null()).then(|| json.to_owned());
            entries.push(AwarenessEntry {
                client,
                clock,
                state,
            });
        }
        r.finish()?;
        Ok(AwarenessUpdate { entries })
    }

    /// y-protocols' `encodeAwarenessUpdate` layout; a removed state is
    /// written as `null`.
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .entries
            .iter()
            .map(|e| 16 + e.state.as_ref().map_or(4, String::len))
            .sum();
        let mut w = Writer::with_capacity(size + 4);
        w.write_var_u64(self.entries.len() as u64);
        for e in &self.entries {
            w.write_var_u64(e.client);
            w.write_var_u64(u64::from(e.clock));
            w.write_var_string(e.state.as_deref().unwrap_or("null"));
        }
        w.into_inner()
    }

    /// Whether it has no entries, and so is not worth sending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[derive(Debug, Clone)]
struct ClientMeta {
    clock: u32,
    state: Option<String>,
}

/// What applying an update changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AwarenessChange {
    /// Clients that had no state and now have one.
    pub added: Vec<u64>,
    /// Clients whose state was replaced.
    pub updated: Vec<u64>,
    /// Clients whose state became `null`.
    pub removed: Vec<u64>,
    /// The entries that took effect, re-encoded for relaying; stale ones are left out.
    pub effective: AwarenessUpdate,
}

impl AwarenessChange {
    /// Whether nothing took effect, so there is nothing to relay.
    pub fn is_empty(&self) -> bool {
        self.effective.is_empty()
    }
}

/// The awareness states of one document's clients, and the clocks of
/// those that left.
#[derive(Debug, Default)]
pub struct AwarenessTable {
    clients: HashMap<u64, ClientMeta>,
}

impl AwarenessTable {
    /// Applies the entries that take effect under y-protocols' clock rules
    /// (see the module doc); stale ones are skipped.
    pub fn apply(&mut self, update: AwarenessUpdate) -> AwarenessChange {
        let mut change = AwarenessChange::default();
        for entry in update.entries {
            let previous = self.clients.get(&entry.client);
            let current_clock = previous.map_or(0, |m| m.clock);
            let had_state = previous.is_some_and(|m| m.state.is_some());
            let newer = current_clock < entry.clock;
            let removes_present =
                current_clock == entry.clock && entry.state.is_none() && had_state;
            if !(newer || removes_present) {
                continue;
            }
            match (&entry.state, had_state) {
                (None, true) => change.removed.push(entry.client),
                (None, false) => {}
                (Some(_), false) => change.added.push(entry.client),
                (Some(_), true) => change.updated.push(entry.client),
            }
            self.clients.insert(
                entry.client,
                ClientMeta {
                    clock: entry.clock,
                    state: entry.state.clone(),
                },
            );
            change.effective.entries.push(entry);
        }
        change
    }

    /// Marks `clients` as gone (clock + 1, state `null`), as y-protocols'
    /// `removeAwarenessStates` does; the result is what to broadcast.
    pub fn remove(&mut self, clients: impl IntoIterator<Item = u64>) -> AwarenessUpdate {
        let mut update = AwarenessUpdate::default();
        for client in clients {
            if let Some(meta) = self.clients.get_mut(&client) {
                if meta.state.take().is_some() {
                    meta.clock = meta.clock.wrapping_add(1);
                    update.entries.push(AwarenessEntry {
                        client,
                        clock: meta.clock,
                        state: None,
                    });
                }
            }
        }
        update
    }

    /// Every present state, for a newly connected or querying client.
    pub fn snapshot(&self) -> AwarenessUpdate {
        let mut entries: Vec<AwarenessEntry> = self
            .clients
            .iter()
            .filter_map(|(client, meta)| {
                meta.state.as_ref().map(|state| AwarenessEntry {
                    client: *client,
                    clock: meta.clock,
                    state: Some(state.clone()),
                })
            })
            .collect();
        entries.sort_unstable_by_key(|e| e.client);
        AwarenessUpdate { entries }
    }

    /// The present states of `clients` only.
    pub fn snapshot_of(&self, clients: impl IntoIterator<Item = u64>) -> AwarenessUpdate {
        let mut entries: Vec<AwarenessEntry> = clients
            .into_iter()
            .filter_map(|client| {
                let meta = self.clients.get(&client)?;
                let state = meta.state.as_ref()?;
                Some(AwarenessEntry {
                    client,
                    clock: meta.clock,
                    state: Some(state.clone()),
                })
            })
            .collect();
        entries.sort_unstable_by_key(|e| e.client);
        entries.dedup_by_key(|e| e.client);
        AwarenessUpdate { entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(client: u64, clock: u32, state: Option<&str>) -> AwarenessEntry {
        AwarenessEntry {
            client,
            clock,
            state: state.map(str::to_owned),
        }
    }

    fn update(entries: Vec<AwarenessEntry>) -> AwarenessUpdate {
        AwarenessUpdate { entries }
    }

    #[test]
    fn round_trips_y_protocols_bytes() {
        // encodeAwarenessUpdate of client 5, clock 1, {"a":1}
        let bytes = [1, 5, 1, 7, b'{', b'"', b'a', b'"', b':', b'1', b'}'];
        let decoded = AwarenessUpdate::decode(&bytes).expect("valid");
        assert_eq!(decoded, update(vec![entry(5, 1, Some(r#"{"a":1}"#))]));
        assert_eq!(decoded.encode(), bytes);
    }

    #[test]
    fn rejects_malformed_updates() {
        let cases: &[(&[u8], &str)] = &[
            (&[], "ends early"),
            (&[200, 1], "declares"),
            (&[1, 5, 1, 3, b'{', b'x', b'}'], "not valid JSON"),
            (&[1, 5, 1, 9, b'{'], "declares 9 bytes"),
            (&[1, 5, 1, 4, b'n', b'u', b'l', b'l', 0], "unexpected bytes"),
        ];
        for (input, needle) in cases {
            let err = AwarenessUpdate::decode(input).expect_err("malformed");
            assert!(err.to_string().contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn deeply_nested_json_is_rejected_not_overflowed() {
        let json = "[".repeat(100_000);
        let mut w = Writer::default();
        w.write_var_u64(1);
        w.write_var_u64(1);
        w.write_var_u64(1);
        w.write_var_string(&json);
        let err = AwarenessUpdate::decode(&w.into_inner()).expect_err("too deep");
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }

    #[test]
    fn applies_with_y_protocols_clock_rules() {
        let mut table = AwarenessTable::default();
        type Expected = (&'static [u64], &'static [u64], &'static [u64]);
        let steps: Vec<(AwarenessUpdate, Expected)> = vec![
            (update(vec![entry(1, 1, Some("{}"))]), (&[1], &[], &[])),
            // same clock, same state: stale
            (update(vec![entry(1, 1, Some("{}"))]), (&[], &[], &[])),
            (
                update(vec![entry(1, 2, Some("{\"x\":1}"))]),
                (&[], &[1], &[]),
            ),
            // older clock: stale
            (update(vec![entry(1, 1, Some("{}"))]), (&[], &[], &[])),
            // equal clock with null removes a present state
            (update(vec![entry(1, 2, None)]), (&[], &[], &[1])),
            (update(vec![entry(1, 2, None)]), (&[], &[], &[])),
        ];
        for (i, (input, (added, updated, removed))) in steps.into_iter().enumerate() {
            let change = table.apply(input);
            assert_eq!(change.added, added, "step {i}");
            assert_eq!(change.updated, updated, "step {i}");
            assert_eq!(change.removed, removed, "step {i}");
        }
        assert!(table.snapshot().is_empty());
    }

    #[test]
    fn removal_bumps_the_clock_and_snapshot_lists_present_states() {
        let mut table = AwarenessTable::default();
        table.apply(update(vec![
            entry(1, 4, Some("{}")),
            entry(2, 1, Some("[]")),
        ]));
        assert_eq!(table.remove([1, 99]), update(vec![entry(1, 5, None)]));
        assert_eq!(table.snapshot(), update(vec![entry(2, 1, Some("[]"))]));
        // A late update with the old clock cannot resurrect the client.
        assert!(table
            .apply(update(vec![entry(1, 4, Some("{}"))]))
            .is_empty());
    }
}
