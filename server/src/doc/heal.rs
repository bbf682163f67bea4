//! What a document says to a peer node, decided from the two nodes' states
//! alone: healing by state vector, and what a tombstone wins against.
//!
//! Nodes converge by comparing [`PeerState`]s (state vector, a digest of the
//! delete set, when the copy last changed), never by trusting that pub/sub
//! delivered everything. These functions hold no state and do no I/O.

use crdt_core::cluster::{state_vector_le, PeerState};

/// What `ours` has that `theirs` lacks, and the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Gap {
    /// They lack inserts or deletes we have: send them our diff.
    pub(super) they_lack: bool,
    /// We lack inserts they have: ask for theirs.
    pub(super) we_lack: bool,
}

/// Compares two copies. Deletes carry no clock, so differing delete sets
/// count as "they lack" on both sides: each sends its diff, which carries
/// its whole delete set.
pub(super) fn gap(ours: &PeerState, theirs: &PeerState) -> Gap {
    Gap {
        they_lack: !state_vector_le(&ours.state_vector, &theirs.state_vector)
            || ours.delete_set_digest != theirs.delete_set_digest,
        we_lack: !state_vector_le(&theirs.state_vector, &ours.state_vector),
    }
}

/// The answer to a peer's sync request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestAnswer {
    /// The same content: say nothing.
    Silence,
    /// A reply with our state, so that the peer sends what we lack, and our
    /// diff if it lacks anything.
    Reply { with_diff: bool },
}

pub(super) fn answer_request(ours: &PeerState, theirs: &PeerState) -> RequestAnswer {
    let gap = gap(ours, theirs);
    if gap.they_lack || gap.we_lack {
        RequestAnswer::Reply {
            with_diff: gap.they_lack,
        }
    } else {
        RequestAnswer::Silence
    }
}

/// After a peer's reply told us its state: send our diff (once, with no
/// state, so the exchange ends) only if it still lacks something.
pub(super) fn send_diff_after_reply(ours: &PeerState, theirs: &PeerState) -> bool {
    gap(ours, theirs).they_lack
}

/// A copy last changed at `updated_at_ms` predates our tombstone: it must
/// not bring the deleted document back.
pub(super) fn is_stale(tombstone_ms: Option<i64>, updated_at_ms: u64) -> bool {
    tombstone_ms.is_some_and(|t| i64::try_from(updated_at_ms).unwrap_or(i64::MAX) <= t)
}

/// What a node does with another node's delete of a document it has loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RemoteDelete {
    /// Our copy is no newer than the delete: delete it here too.
    Delete,
    /// Changed here after the delete: keep it, and remember the tombstone.
    KeepNewer,
}

pub(super) fn remote_delete(updated_at_ms: i64, deleted_at_ms: u64) -> RemoteDelete {
    if updated_at_ms <= i64::try_from(deleted_at_ms).unwrap_or(i64::MAX) {
        RemoteDelete::Delete
    } else {
        RemoteDelete::KeepNewer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crdt_core::yrs::block::ClientID;
    use crdt_core::yrs::StateVector;

    fn state(clocks: &[(u64, u32)], digest: u64) -> PeerState {
        let mut state_vector = StateVector::default();
        for &(client, clock) in clocks {
            state_vector.set_max(ClientID::new(client), clock);
        }
        PeerState {
            state_vector,
            delete_set_digest: digest,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn what_a_node_answers_to_a_sync_request() {
        use RequestAnswer::*;
        let cases: &[(&str, PeerState, PeerState, RequestAnswer)] = &[
            (
                "same content",
                state(&[(1, 5)], 7),
                state(&[(1, 5)], 7),
                Silence,
            ),
            ("both empty", state(&[], 0), state(&[], 0), Silence),
            (
                "we are ahead",
                state(&[(1, 9)], 7),
                state(&[(1, 5)], 7),
                Reply { with_diff: true },
            ),
            (
                "they are ahead",
                state(&[(1, 5)], 7),
                state(&[(1, 9)], 7),
                Reply { with_diff: false },
            ),
            (
                "we know a client they do not",
                state(&[(1, 5), (2, 1)], 7),
                state(&[(1, 5)], 7),
                Reply { with_diff: true },
            ),
            (
                "each has what the other lacks",
                state(&[(1, 9), (2, 1)], 7),
                state(&[(1, 5), (3, 4)], 7),
                Reply { with_diff: true },
            ),
            (
                "same inserts, different deletes",
                state(&[(1, 5)], 7),
                state(&[(1, 5)], 8),
                Reply { with_diff: true },
            ),
            (
                "they are ahead and deleted differently",
                state(&[(1, 5)], 7),
                state(&[(1, 9)], 8),
                Reply { with_diff: true },
            ),
        ];
        for (case, ours, theirs, expected) in cases {
            assert_eq!(answer_request(ours, theirs), *expected, "{case}");
        }
    }

    #[test]
    fn a_reply_is_answered_with_a_diff_only_while_the_peer_lacks_something() {
        let cases: &[(&str, PeerState, PeerState, bool)] = &[
            (
                "it caught up",
                state(&[(1, 5)], 7),
                state(&[(1, 5)], 7),
                false,
            ),
            (
                "it is ahead",
                state(&[(1, 5)], 7),
                state(&[(1, 9)], 7),
                false,
            ),
            (
                "it lacks inserts",
                state(&[(1, 9)], 7),
                state(&[(1, 5)], 7),
                true,
            ),
            (
                "it lacks deletes",
                state(&[(1, 5)], 7),
                state(&[(1, 5)], 3),
                true,
            ),
        ];
        for (case, ours, theirs, expected) in cases {
            assert_eq!(send_diff_after_reply(ours, theirs), *expected, "{case}");
        }
    }

    #[test]
    fn what_a_tombstone_wins_against() {
        let cases: &[(&str, Option<i64>, u64, bool)] = &[
            ("no tombstone", None, 10, false),
            ("a copy older than the delete", Some(100), 50, true),
            ("a copy last changed at the delete", Some(100), 100, true),
            ("a copy changed after the delete", Some(100), 101, false),
            ("a clock past i64", Some(100), u64::MAX, false),
        ];
        for (case, tombstone, updated_at, stale) in cases {
            assert_eq!(is_stale(*tombstone, *updated_at), *stale, "{case}");
        }
    }

    #[test]
    fn what_a_remote_delete_does_to_a_loaded_copy() {
        use RemoteDelete::*;
        let cases: &[(&str, i64, u64, RemoteDelete)] = &[
            ("changed before the delete", 50, 100, Delete),
            ("changed at the delete", 100, 100, Delete),
            ("changed here after the delete", 101, 100, KeepNewer),
            ("a delete dated past i64", 101, u64::MAX, Delete),
        ];
        for (case, updated_at, deleted_at, expected) in cases {
            assert_eq!(remote_delete(*updated_at, *deleted_at), *expected, "{case}");
        }
    }
}
