//! Socket-level decisions of the Hocuspocus dialect (reference §4, rules 4,
//! 13 and 15), as pure functions: when the whole socket closes, and when a
//! document's session ends with a CLOSE frame while the socket lives on.

use crate::doc::CloseReason;
use crdt_core::hocuspocus::session::QueueLimits;

/// Addresses awaiting authentication on one socket, at most (Hocuspocus's
/// bound, GHSA-xwhh-v746-pj9m).
pub(super) const MAX_PENDING_ADDRESSES: usize = 100;

/// Close code of a socket on which nothing authenticated in time
/// (`--hocuspocus-auth-timeout-secs`), as Hocuspocus sends it.
pub(super) const AUTH_TIMEOUT: u16 = 4408;

/// What frames queued before authentication, across a socket's sessions,
/// add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct PreAuth {
    /// Addresses with no session open yet (no Auth, or Auth being decided).
    pub(super) pending_addresses: usize,
    pub(super) frames: usize,
    pub(super) bytes: usize,
}

/// The socket closes once frames waiting for authentication pass
/// Hocuspocus's per-socket bounds: the client is not a provider (a provider
/// sends three frames per document before its Auth is answered).
pub(super) fn check_pre_auth(queued: PreAuth) -> Result<(), CloseReason> {
    let limits = QueueLimits::default();
    if queued.pending_addresses > MAX_PENDING_ADDRESSES {
        return Err(CloseReason::new(
            CloseReason::POLICY,
            format!("more than {MAX_PENDING_ADDRESSES} documents awaiting authentication"),
        ));
    }
    if queued.frames > limits.max_frames {
        return Err(CloseReason::new(
            CloseReason::POLICY,
            format!(
                "more than {} frames before authentication",
                limits.max_frames
            ),
        ));
    }
    if queued.bytes > limits.max_bytes {
        return Err(CloseReason::new(
            CloseReason::TOO_BIG,
            format!("more than {} bytes before authentication", limits.max_bytes),
        ));
    }
    Ok(())
}

/// What a document actor closing one session means for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ActorClosed {
    /// That document's session ends with CLOSE(reason); the others go on.
    Document(String),
    /// The whole socket closes: a provider reconnects, re-authenticates
    /// and resyncs every document, which is what these call for.
    Socket(CloseReason),
}

/// Rule 13: per-document endings (deleted, an update that does not apply,
/// a document grown too large, one that does not load, one that closed)
/// are CLOSE frames; a socket too slow to take its frames closes (1008),
/// and so does one whose update storage cannot take (1013): the provider
/// reconnects and hands its update back by sync, so nothing typed is lost.
pub(super) fn actor_closed(reason: &CloseReason) -> ActorClosed {
    match reason.code {
        CloseReason::POLICY | CloseReason::TRY_AGAIN_LATER => ActorClosed::Socket(reason.clone()),
        _ => ActorClosed::Document(reason.reason.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_before_authentication_are_bounded_per_socket() {
        let mib = 1024 * 1024;
        // (pending addresses, frames, bytes, close code or None: fine)
        let cases: &[(usize, usize, usize, Option<u16>)] = &[
            (1, 3, 100, None),
            (100, 1000, 5 * mib, None),
            (101, 101, 1000, Some(CloseReason::POLICY)),
            (1, 1001, 1000, Some(CloseReason::POLICY)),
            (1, 1, 5 * mib + 1, Some(CloseReason::TOO_BIG)),
        ];
        for (pending_addresses, frames, bytes, expected) in cases {
            let queued = PreAuth {
                pending_addresses: *pending_addresses,
                frames: *frames,
                bytes: *bytes,
            };
            assert_eq!(
                check_pre_auth(queued).err().map(|r| r.code),
                *expected,
                "{queued:?}"
            );
        }
    }

    #[test]
    fn which_actor_closes_end_one_document_and_which_the_socket() {
        let cases: &[(u16, &str, bool)] = &[
            // (code, reason, closes the socket)
            (CloseReason::DELETED, "document deleted", false),
            (
                CloseReason::INVALID_PAYLOAD,
                "update does not decode",
                false,
            ),
            (CloseReason::TOO_BIG, "document too large", false),
            (
                CloseReason::INTERNAL,
                "stored document does not load",
                false,
            ),
            (CloseReason::GOING_AWAY, "document closed", false),
            (
                CloseReason::POLICY,
                "client too slow; reconnect to resync",
                true,
            ),
            (
                CloseReason::TRY_AGAIN_LATER,
                "storage unavailable, retry",
                true,
            ),
        ];
        for (code, text, socket) in cases {
            let reason = CloseReason::new(*code, *text);
            let expected = if *socket {
                ActorClosed::Socket(reason.clone())
            } else {
                ActorClosed::Document((*text).to_owned())
            };
            assert_eq!(actor_closed(&reason), expected, "{code} {text}");
        }
    }
}
