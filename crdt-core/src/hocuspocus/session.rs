//! One document session of a Hocuspocus socket, as a sans-IO state machine.
//!
//! A socket holds one [`Session`] per raw address. The server feeds it
//! [`Event`]s (the body of each frame for that address, and its verdict on
//! each token) and performs the [`Effect`]s it returns, in order. The rules
//! are those of the reference's §4 "Authentication and queueing" (rules 4
//! to 6), "Sync and acknowledgements" (7 to 9) and 12 to 13:
//!
//! ```text
//!                 Auth                       verdict Ok(scope)
//!   Pending ───────────────► Verifying ─────────────────────────► Open(scope)
//!   (queues frames)          (queues frames)   Authenticated,      │  Auth: token refresh,
//!      ▲                          │            awareness states,   │  a failed one ends it
//!      └──────────────────────────┘            queue replayed      │
//!        verdict Err: PermissionDenied,                            │ Close, BroadcastStateless,
//!        queue dropped, a new Auth may follow                      ▼ malformed message
//!   Close or a full queue ─────────────────────────────────────► Ended
//! ```
//!
//! Acknowledgements: every SyncStep2 and Update of an open session gets
//! exactly one `SyncStatus`, nothing else gets one.
//!
//! | scope      | SyncStep2                          | Update                 |
//! |------------|------------------------------------|------------------------|
//! | read-write | [`Effect::Apply`], then `08 01`    | [`Effect::Apply`], then `08 01` |
//! | readonly   | [`Effect::AckIfContained`]: `08 01` if the document already holds it, else `08 00` | `08 00`, not applied |
//!
//! The queue before authentication is bounded by [`QueueLimits`]; the
//! socket-wide bounds (pending addresses, bytes across sessions, the
//! pre-auth deadline) belong to the server, which sees every session.

use super::{ClientMessage, MessageError, Scope, ServerMessage, ServerOnlyType, SyncMessage};
use std::collections::VecDeque;
use yrs::StateVector;

/// Close reason of a session whose client sent a BroadcastStateless (type 6).
pub const CLOSE_BROADCAST_STATELESS: &str = "broadcast-stateless-from-client";
/// Close reason of a session whose pre-auth queue overflowed.
pub const CLOSE_QUEUE_FULL: &str = "too-many-frames-before-auth";
/// Prefix of the close reason of a session that sent an undecodable message;
/// the [`MessageError::reason`] label follows.
pub const CLOSE_INVALID_MESSAGE: &str = "invalid-message: ";

/// Bounds on the frames a session queues before its Auth is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most frames queued.
    pub max_frames: usize,
    /// Most body bytes queued.
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    /// 1,000 frames and 5 MiB: Hocuspocus's per-socket bounds
    /// (GHSA-xwhh-v746-pj9m), so one session never refuses what Hocuspocus
    /// would accept. A provider sends three frames before its Auth is
    /// answered, plus any offline edits it flushes meanwhile.
    fn default() -> Self {
        QueueLimits {
            max_frames: 1_000,
            max_bytes: 5 * 1024 * 1024,
        }
    }
}

/// What the server tells a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// The body of a frame for this session's address (the `body` of
    /// [`super::ClientFrame::Addressed`]).
    Frame(&'a [u8]),
    /// The server's verdict on the token of the last [`Effect::VerifyToken`]:
    /// a scope, or the reason for refusing it.
    Verdict(Result<Scope, String>),
}

/// A frame the session itself decides to send; [`Reply::message`] gives it
/// for [`ServerMessage::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `Authenticated(scope)`.
    Authenticated(Scope),
    /// `PermissionDenied(reason)`.
    PermissionDenied(String),
    /// `SyncStatus`, the acknowledgement of one SyncStep2 or Update.
    SyncStatus(bool),
}

impl Reply {
    /// The server message to encode with the session's address.
    pub fn message(&self) -> ServerMessage<'_> {
        match self {
            Reply::Authenticated(scope) => ServerMessage::Authenticated(*scope),
            Reply::PermissionDenied(reason) => ServerMessage::PermissionDenied(reason),
            Reply::SyncStatus(applied) => ServerMessage::SyncStatus(*applied),
        }
    }
}

/// What the server must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Verify the token for this address's document, then send the result
    /// as [`Event::Verdict`]. Frames keep being queued meanwhile.
    VerifyToken {
        /// The token, `""` when the provider has none.
        token: String,
        /// The provider's version (v4), absent for v3.
        provider_version: Option<String>,
    },
    /// Send this frame to the session.
    Send(Reply),
    /// Send every current awareness state of the document, if there are any.
    SendAwarenessStates,
    /// Send the server's SyncStep1, then a SyncStep2 with what this state
    /// vector lacks (once per client SyncStep1).
    AnswerSyncStep1(StateVector),
    /// Apply a SyncStep2 or Update (read-write), relay it to the document's
    /// other sessions and connections, then send `SyncStatus(true)`. An
    /// update that does not apply gets no ack: the server ends the session
    /// with a CLOSE instead.
    Apply(Vec<u8>),
    /// A read-only SyncStep2: send `SyncStatus(true)` if the document already
    /// holds everything in it (structs and delete set), else
    /// `SyncStatus(false)`; never apply it (`Document::contains_update_v1`).
    /// One that does not decode ends the session with a CLOSE, as for
    /// [`Effect::Apply`].
    AckIfContained(Vec<u8>),
    /// Apply an awareness update with y-protocols' clock rules, remember the
    /// client ids as this session's, broadcast the change to every session
    /// of the document including this one.
    ApplyAwareness(Vec<u8>),
    /// Relay a stateless payload to the document's other sessions.
    RelayStateless(String),
    /// Nothing to do; the label is for metrics and logs.
    Ignore(&'static str),
    /// The session is over: remove it, remove and broadcast the awareness
    /// states it added, and send `CLOSE(reason)` if there is one. A later
    /// frame for the address starts a new session.
    End {
        /// The CLOSE frame's reason; `None` when the client closed.
        close: Option<String>,
    },
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No Auth yet; frames are queued.
    Pending,
    /// An Auth awaits its verdict; frames are queued.
    Verifying,
    /// Authenticated with this scope.
    Open(Scope),
    /// Over; the server drops it.
    Ended,
}

#[derive(Debug)]
enum State {
    Pending {
        queue: VecDeque<Vec<u8>>,
        queued_bytes: usize,
        verifying: bool,
    },
    Open {
        scope: Scope,
        /// Token refreshes awaiting their verdict.
        refreshing: usize,
    },
    Ended,
}

impl State {
    fn pending() -> Self {
        State::Pending {
            queue: VecDeque::new(),
            queued_bytes: 0,
            verifying: false,
        }
    }
}

/// One document session: one raw address on one socket.
#[derive(Debug)]
pub struct Session {
    state: State,
    limits: QueueLimits,
    provider_version: Option<String>,
}

impl Default for Session {
    fn default() -> Self {
        Session::new(QueueLimits::default())
    }
}

impl Session {
    /// A session that has seen nothing yet.
    pub fn new(limits: QueueLimits) -> Self {
        Session {
            state: State::pending(),
            limits,
            provider_version: None,
        }
    }

    /// Where the session is.
    pub fn phase(&self) -> Phase {
        match &self.state {
            State::Pending {
                verifying: false, ..
            } => Phase::Pending,
            State::Pending {
                verifying: true, ..
            } => Phase::Verifying,
            State::Open { scope, .. } => Phase::Open(*scope),
            State::Ended => Phase::Ended,
        }
    }

    /// The version string of the latest Auth that carried one: present means
    /// a v4 provider, which alone may receive Ping.
    pub fn provider_version(&self) -> Option<&str> {
        self.provider_version.as_deref()
    }

    /// Frames and bytes queued before authentication.
    pub fn queued(&self) -> (usize, usize) {
        match &self.state {
            State::Pending {
                queue,
                queued_bytes,
                ..
            } => (queue.len(), *queued_bytes),
            _ => (0, 0),
        }
    }

    /// Takes one event and returns what the server must do, in order.
    pub fn handle(&mut self, event: Event<'_>) -> Vec<Effect> {
        let mut effects = Vec::new();
        match event {
            Event::Frame(body) => self.on_frame(body, &mut effects),
            Event::Verdict(verdict) => self.on_verdict(verdict, &mut effects),
        }
        effects
    }

    fn on_frame(&mut self, body: &[u8], effects: &mut Vec<Effect>) {
        match &mut self.state {
            State::Ended => effects.push(Effect::Ignore("session_ended")),
            State::Pending {
                queue,
                queued_bytes,
                verifying,
            } => match ClientMessage::decode(body) {
                Ok(ClientMessage::Auth {
                    token,
                    provider_version,
                }) if !*verifying => {
                    *verifying = true;
                    self.provider_version = provider_version.map(str::to_owned);
                    effects.push(Effect::VerifyToken {
                        token: token.to_owned(),
                        provider_version: provider_version.map(str::to_owned),
                    });
                }
                Ok(ClientMessage::Close) => {
                    self.state = State::Ended;
                    effects.push(Effect::End { close: None });
                }
                // Everything else, undecodable bodies included, is decided
                // once the session is open, in the order it came.
                _ => {
                    if queue.len() >= self.limits.max_frames
                        || *queued_bytes + body.len() > self.limits.max_bytes
                    {
                        self.state = State::Ended;
                        effects.push(Effect::End {
                            close: Some(CLOSE_QUEUE_FULL.to_owned()),
                        });
                    } else {
                        *queued_bytes += body.len();
                        queue.push_back(body.to_vec());
                    }
                }
            },
            State::Open { scope, refreshing } => {
                let scope = *scope;
                match ClientMessage::decode(body) {
                    Ok(message) => {
                        if let ClientMessage::Auth {
                            provider_version, ..
                        } = &message
                        {
                            *refreshing += 1;
                            if provider_version.is_some() {
                                self.provider_version = provider_version.map(str::to_owned);
                            }
                        }
                        if matches!(message, ClientMessage::Close) {
                            self.state = State::Ended;
                        }
                        effects.push(open_message(scope, message));
                    }
                    Err(error) => {
                        let effect = open_error(&error);
                        if matches!(effect, Effect::End { .. }) {
                            self.state = State::Ended;
                        }
                        effects.push(effect);
                    }
                }
            }
        }
    }

    fn on_verdict(&mut self, verdict: Result<Scope, String>, effects: &mut Vec<Effect>) {
        match (&mut self.state, verdict) {
            (State::Pending { verifying, .. }, verdict) if *verifying => match verdict {
                Ok(scope) => {
                    let State::Pending { queue, .. } = std::mem::replace(
                        &mut self.state,
                        State::Open {
                            scope,
                            refreshing: 0,
                        },
                    ) else {
                        unreachable!("matched Pending above")
                    };
                    effects.push(Effect::Send(Reply::Authenticated(scope)));
                    effects.push(Effect::SendAwarenessStates);
                    for body in queue {
                        if self.phase() == Phase::Ended {
                            break;
                        }
                        self.on_frame(&body, effects);
                    }
                }
                Err(reason) => {
                    self.state = State::pending();
                    effects.push(Effect::Send(Reply::PermissionDenied(reason)));
                }
            },
            (State::Open { scope, refreshing }, verdict) if *refreshing > 0 => match verdict {
                Ok(new_scope) => {
                    *scope = new_scope;
                    *refreshing -= 1;
                }
                Err(reason) => {
                    self.state = State::Ended;
                    effects.push(Effect::End {
                        close: Some(reason),
                    });
                }
            },
            _ => effects.push(Effect::Ignore("unexpected_verdict")),
        }
    }
}

/// What a decoded message of an open session asks for.
fn open_message(scope: Scope, message: ClientMessage<'_>) -> Effect {
    match (message, scope) {
        (ClientMessage::Sync(SyncMessage::Step1(sv)), _) => Effect::AnswerSyncStep1(sv),
        (ClientMessage::Sync(SyncMessage::Step2(update)), Scope::ReadWrite)
        | (ClientMessage::Sync(SyncMessage::Update(update)), Scope::ReadWrite) => {
            Effect::Apply(update.to_vec())
        }
        (ClientMessage::Sync(SyncMessage::Step2(update)), Scope::ReadOnly) => {
            Effect::AckIfContained(update.to_vec())
        }
        (ClientMessage::Sync(SyncMessage::Update(_)), Scope::ReadOnly) => {
            Effect::Send(Reply::SyncStatus(false))
        }
        (ClientMessage::Awareness(update), _) => Effect::ApplyAwareness(update.to_vec()),
        (ClientMessage::QueryAwareness, _) => Effect::SendAwarenessStates,
        (ClientMessage::Stateless(payload), _) => Effect::RelayStateless(payload.to_owned()),
        (
            ClientMessage::Auth {
                token,
                provider_version,
            },
            _,
        ) => Effect::VerifyToken {
            token: token.to_owned(),
            provider_version: provider_version.map(str::to_owned),
        },
        // No CLOSE reply: a detached provider ignores it, and a provider
        // re-attached under the same name would take it for its own.
        (ClientMessage::Close, _) => Effect::End { close: None },
    }
}

/// What an undecodable message of an open session asks for: types a client
/// never sends but that carry no data are ignored, as Hocuspocus ignores
/// unknown types; a BroadcastStateless or a malformed message ends the
/// session with a CLOSE.
fn open_error(error: &MessageError) -> Effect {
    match error {
        MessageError::UnknownType(_)
        | MessageError::ServerOnly(
            ServerOnlyType::SyncReply | ServerOnlyType::SyncStatus | ServerOnlyType::Ping,
        ) => Effect::Ignore(error.reason()),
        MessageError::ServerOnly(ServerOnlyType::BroadcastStateless) => Effect::End {
            close: Some(CLOSE_BROADCAST_STATELESS.to_owned()),
        },
        _ => Effect::End {
            close: Some(format!("{CLOSE_INVALID_MESSAGE}{}", error.reason())),
        },
    }
}

#[cfg(test)]
mod tests;
