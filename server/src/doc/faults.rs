//! What a write gets while storage fails, and what becomes of an update
//! whose append failed. Pure decisions; the actor performs them.
//!
//! The rule: a write Quire cannot persist is never acknowledged as if it
//! were. While storage is failing (an atomic flag the storage thread keeps,
//! read once per update), updates are refused before they apply. An update
//! that applied but whose append then failed stays in memory (a yrs update
//! cannot be taken back) and is written by the whole-state compaction every
//! loaded document makes when storage recovers.

use super::close::CloseReason;
use super::settings::Durability;

/// The close reason of a connection whose update storage cannot take.
pub(super) const STORAGE_UNAVAILABLE: &str = "storage unavailable, retry";

/// Who sent an update, as far as refusing it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Writer {
    Conn,
    Rest,
    Peer,
}

/// How a refused update is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Close the connection: y-websocket providers reconnect on 1013 and
    /// resend, by sync, everything the server lacks, so nothing typed is lost.
    Close(CloseReason),
    /// 503 with `Retry-After`.
    Unavailable,
    /// Another node's update: nodes heal by state vector once storage works.
    Ignore,
}

/// What a writer gets when storage cannot take its update.
pub(super) fn refusal(writer: Writer) -> Refusal {
    match writer {
        Writer::Conn => Refusal::Close(CloseReason::new(
            CloseReason::TRY_AGAIN_LATER,
            STORAGE_UNAVAILABLE,
        )),
        Writer::Rest => Refusal::Unavailable,
        Writer::Peer => Refusal::Ignore,
    }
}

/// What happens to an applied update once its append returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterAppend {
    /// Relay and acknowledge it.
    Relay,
    /// Relay nothing, publish nothing, refuse the writer. It stays in
    /// memory and is written by the recovery compaction.
    Withhold,
}

/// `appended`: with `BeforeRelay`, on disk; with `GroupCommit`, queued for
/// the next group commit (if that write fails, the update is relayed
/// already; it is in memory and the recovery compaction writes it).
pub(super) fn after_append(durability: Durability, appended: bool) -> AfterAppend {
    match (durability, appended) {
        (_, true) => AfterAppend::Relay,
        (Durability::BeforeRelay | Durability::GroupCommit, false) => AfterAppend::Withhold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn while_storage_fails_no_update_is_applied_and_each_writer_hears_why() {
        let cases: &[(bool, Writer, Option<Refusal>)] = &[
            // (storage healthy, writer, what the writer gets; None: applied)
            (true, Writer::Conn, None),
            (true, Writer::Rest, None),
            (true, Writer::Peer, None),
            (
                false,
                Writer::Conn,
                Some(Refusal::Close(CloseReason {
                    code: 1013,
                    reason: "storage unavailable, retry".into(),
                })),
            ),
            (false, Writer::Rest, Some(Refusal::Unavailable)),
            (false, Writer::Peer, Some(Refusal::Ignore)),
        ];
        for (healthy, writer, expected) in cases {
            let got = (!*healthy).then(|| refusal(*writer));
            assert_eq!(&got, expected, "healthy {healthy}, {writer:?}");
        }
    }

    #[test]
    fn an_update_is_relayed_only_once_its_append_went_through() {
        let cases: &[(Durability, bool, AfterAppend)] = &[
            // (durability, appended, then)
            (Durability::BeforeRelay, true, AfterAppend::Relay),
            (Durability::BeforeRelay, false, AfterAppend::Withhold),
            (Durability::GroupCommit, true, AfterAppend::Relay),
            (Durability::GroupCommit, false, AfterAppend::Withhold),
        ];
        for (durability, appended, expected) in cases {
            assert_eq!(
                after_append(*durability, *appended),
                *expected,
                "{durability:?}, appended {appended}"
            );
        }
    }
}
