//! Which node relayed which awareness client of a document (pure).
//!
//! Presence of a node's clients reaches peers only through that node. When
//! the node crashes nobody sends their removal, so peers must do it
//! themselves once the node's heartbeat stops (`cluster/heartbeat.rs`):
//! for that they need to know whose clients those were.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The awareness clients each peer node relayed, by node id.
#[derive(Debug, Default)]
pub(super) struct RemotePresence {
    by_node: HashMap<Arc<str>, BTreeSet<u64>>,
}

impl RemotePresence {
    /// Notes the entries of an awareness update relayed by `node`: a client
    /// with a state is that node's (a client that moved from another node
    /// is reattributed), a client set to `null` is nobody's any more.
    /// Entries count whether or not they took effect here: a client that
    /// reconnects to another node re-sends the state it had, which is not
    /// news to us, but says where the client is now.
    pub(super) fn note(&mut self, node: &str, entries: impl IntoIterator<Item = (u64, bool)>) {
        for (client, present) in entries {
            if present && self.by_node.get(node).is_some_and(|c| c.contains(&client)) {
                continue;
            }
            self.by_node.retain(|_, clients| {
                clients.remove(&client);
                !clients.is_empty()
            });
            if present {
                self.by_node
                    .entry(Arc::from(node))
                    .or_default()
                    .insert(client);
            }
        }
    }

    /// The clients `node` relayed, forgotten; those in `local` (connected
    /// here now) are kept out of the answer.
    pub(super) fn forget_node(&mut self, node: &str, local: &[u64]) -> Vec<u64> {
        self.by_node
            .remove(node)
            .unwrap_or_default()
            .into_iter()
            .filter(|client| !local.contains(client))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_nodes_clients_are_those_it_last_relayed() {
        // (what was relayed, in order: node, client, present), node declared
        // dead, clients connected here, expected clients to drop
        type Case = (
            &'static str,
            &'static [(&'static str, u64, bool)],
            &'static str,
            &'static [u64],
            &'static [u64],
        );
        let cases: &[Case] = &[
            ("nothing relayed", &[], "a", &[], &[]),
            (
                "two clients of a",
                &[("a", 1, true), ("a", 2, true)],
                "a",
                &[],
                &[1, 2],
            ),
            (
                "only a's, not b's",
                &[("a", 1, true), ("b", 2, true)],
                "a",
                &[],
                &[1],
            ),
            (
                "a client that left is not dropped again",
                &[("a", 1, true), ("a", 1, false)],
                "a",
                &[],
                &[],
            ),
            (
                "a client that moved to b is b's",
                &[("a", 1, true), ("b", 1, true)],
                "a",
                &[],
                &[],
            ),
            (
                "a client that moved back to a is a's",
                &[("a", 1, true), ("b", 1, true), ("a", 1, true)],
                "a",
                &[],
                &[1],
            ),
            (
                "a null from another node removes it too",
                &[("a", 1, true), ("b", 1, false)],
                "a",
                &[],
                &[],
            ),
            (
                "a client now connected here is kept",
                &[("a", 1, true), ("a", 2, true)],
                "a",
                &[2],
                &[1],
            ),
            ("an unknown node has none", &[("a", 1, true)], "z", &[], &[]),
        ];
        for (case, relayed, dead, local, expected) in cases {
            let mut presence = RemotePresence::default();
            for (node, client, present) in *relayed {
                presence.note(node, [(*client, *present)]);
            }
            assert_eq!(presence.forget_node(dead, local), *expected, "{case}");
            assert!(
                presence.forget_node(dead, local).is_empty(),
                "{case}: forgotten once"
            );
        }
    }
}
