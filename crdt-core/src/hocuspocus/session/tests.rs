//! The session rules as specifications: each case is a script of events and
//! the effects each one must produce.

use super::*;

fn body(message: ClientMessage<'_>) -> Vec<u8> {
    message.encode_body()
}
fn auth_v4(token: &str) -> Vec<u8> {
    body(ClientMessage::Auth {
        token,
        provider_version: Some("4.8.0"),
    })
}
fn auth_v3(token: &str) -> Vec<u8> {
    body(ClientMessage::Auth {
        token,
        provider_version: None,
    })
}
fn step1() -> Vec<u8> {
    body(ClientMessage::Sync(SyncMessage::Step1(
        StateVector::default(),
    )))
}
fn step2(update: &[u8]) -> Vec<u8> {
    body(ClientMessage::Sync(SyncMessage::Step2(update)))
}
fn update(update: &[u8]) -> Vec<u8> {
    body(ClientMessage::Sync(SyncMessage::Update(update)))
}
fn awareness(update: &[u8]) -> Vec<u8> {
    body(ClientMessage::Awareness(update))
}
fn stateless(payload: &str) -> Vec<u8> {
    body(ClientMessage::Stateless(payload))
}
fn close() -> Vec<u8> {
    body(ClientMessage::Close)
}

/// One step of a script: an event and the effects it must produce.
enum Step {
    Frame(Vec<u8>, Vec<Effect>),
    Verdict(Result<Scope, &'static str>, Vec<Effect>),
}
use Step::{Frame, Verdict};

fn verify(token: &str, version: Option<&str>) -> Effect {
    Effect::VerifyToken {
        token: token.to_owned(),
        provider_version: version.map(str::to_owned),
    }
}
fn authenticated(scope: Scope) -> Vec<Effect> {
    vec![
        Effect::Send(Reply::Authenticated(scope)),
        Effect::SendAwarenessStates,
    ]
}
fn ack(applied: bool) -> Effect {
    Effect::Send(Reply::SyncStatus(applied))
}
fn end(close: Option<&str>) -> Effect {
    Effect::End {
        close: close.map(str::to_owned),
    }
}
fn then(mut first: Vec<Effect>, rest: impl IntoIterator<Item = Effect>) -> Vec<Effect> {
    first.extend(rest);
    first
}

const AWARENESS: &[u8] = &[1, 0xcf, 0xdd, 0xa8, 0xe5, 0x0f, 0, 2, b'{', b'}'];
const UPDATE: &[u8] = &[1, 2, 3];

fn run(name: &str, script: Vec<Step>, final_phase: Phase) -> Session {
    let mut session = Session::default();
    for (i, step) in script.into_iter().enumerate() {
        let (effects, expected) = match step {
            Frame(bytes, expected) => (session.handle(Event::Frame(&bytes)), expected),
            Verdict(verdict, expected) => (
                session.handle(Event::Verdict(verdict.map_err(str::to_owned))),
                expected,
            ),
        };
        assert_eq!(effects, expected, "{name}, step {i}");
    }
    assert_eq!(session.phase(), final_phase, "{name}: final phase");
    session
}

#[test]
fn authentication_and_queueing() {
    let cases: Vec<(&str, Vec<Step>, Phase)> = vec![
        (
            "a new session is pending and queues nothing it was not sent",
            vec![],
            Phase::Pending,
        ),
        (
            "the provider's handshake: Auth, SyncStep1 and Awareness before any answer; \
             Authenticated first, then awareness states, then the queue in order",
            vec![
                Frame(auth_v4("tok"), vec![verify("tok", Some("4.8.0"))]),
                Frame(step1(), vec![]),
                Frame(awareness(AWARENESS), vec![]),
                Verdict(
                    Ok(Scope::ReadWrite),
                    then(
                        authenticated(Scope::ReadWrite),
                        [
                            Effect::AnswerSyncStep1(StateVector::default()),
                            Effect::ApplyAwareness(AWARENESS.to_vec()),
                        ],
                    ),
                ),
            ],
            Phase::Open(Scope::ReadWrite),
        ),
        (
            "frames sent before the Auth frame are queued too",
            vec![
                Frame(step1(), vec![]),
                Frame(update(UPDATE), vec![]),
                Frame(auth_v3(""), vec![verify("", None)]),
                Verdict(
                    Ok(Scope::ReadWrite),
                    then(
                        authenticated(Scope::ReadWrite),
                        [
                            Effect::AnswerSyncStep1(StateVector::default()),
                            Effect::Apply(UPDATE.to_vec()),
                        ],
                    ),
                ),
            ],
            Phase::Open(Scope::ReadWrite),
        ),
        (
            "denial: PermissionDenied, the queue is dropped, and a new Auth works (#944)",
            vec![
                Frame(auth_v4("bad"), vec![verify("bad", Some("4.8.0"))]),
                Frame(step1(), vec![]),
                Frame(awareness(AWARENESS), vec![]),
                Verdict(
                    Err("permission-denied"),
                    vec![Effect::Send(Reply::PermissionDenied(
                        "permission-denied".into(),
                    ))],
                ),
                Frame(auth_v4("good"), vec![verify("good", Some("4.8.0"))]),
                Verdict(Ok(Scope::ReadOnly), authenticated(Scope::ReadOnly)),
            ],
            Phase::Open(Scope::ReadOnly),
        ),
        (
            "a second Auth while the first is verified waits in the queue, \
             and is a token refresh once open",
            vec![
                Frame(auth_v4("one"), vec![verify("one", Some("4.8.0"))]),
                Frame(auth_v4("two"), vec![]),
                Verdict(
                    Ok(Scope::ReadWrite),
                    then(
                        authenticated(Scope::ReadWrite),
                        [verify("two", Some("4.8.0"))],
                    ),
                ),
                Verdict(Ok(Scope::ReadOnly), vec![]),
            ],
            Phase::Open(Scope::ReadOnly),
        ),
        (
            "Close before authentication ends the session without a reply",
            vec![
                Frame(step1(), vec![]),
                Frame(close(), vec![end(None)]),
                Frame(step1(), vec![Effect::Ignore("session_ended")]),
            ],
            Phase::Ended,
        ),
        (
            "a verdict nobody asked for is ignored",
            vec![Verdict(
                Ok(Scope::ReadWrite),
                vec![Effect::Ignore("unexpected_verdict")],
            )],
            Phase::Pending,
        ),
        (
            "a verdict after Close is ignored",
            vec![
                Frame(auth_v4("tok"), vec![verify("tok", Some("4.8.0"))]),
                Frame(close(), vec![end(None)]),
                Verdict(
                    Ok(Scope::ReadWrite),
                    vec![Effect::Ignore("unexpected_verdict")],
                ),
            ],
            Phase::Ended,
        ),
        (
            "token refresh that fails closes the document with the reason",
            vec![
                Frame(auth_v4("tok"), vec![verify("tok", Some("4.8.0"))]),
                Verdict(Ok(Scope::ReadWrite), authenticated(Scope::ReadWrite)),
                Frame(auth_v4("old"), vec![verify("old", Some("4.8.0"))]),
                Verdict(Err("token expired"), vec![end(Some("token expired"))]),
            ],
            Phase::Ended,
        ),
        (
            "two refreshes in flight: the later failure still closes",
            vec![
                Frame(auth_v4("tok"), vec![verify("tok", Some("4.8.0"))]),
                Verdict(Ok(Scope::ReadWrite), authenticated(Scope::ReadWrite)),
                Frame(auth_v4("a"), vec![verify("a", Some("4.8.0"))]),
                Frame(auth_v4("b"), vec![verify("b", Some("4.8.0"))]),
                Verdict(Ok(Scope::ReadWrite), vec![]),
                Verdict(Err("token expired"), vec![end(Some("token expired"))]),
            ],
            Phase::Ended,
        ),
        (
            "an undecodable frame queued before auth is judged on replay, in order",
            vec![
                Frame(vec![0, 2, 9], vec![]),
                Frame(step1(), vec![]),
                Frame(auth_v4("tok"), vec![verify("tok", Some("4.8.0"))]),
                Verdict(
                    Ok(Scope::ReadWrite),
                    then(
                        authenticated(Scope::ReadWrite),
                        [end(Some("invalid-message: length_too_large"))],
                    ),
                ),
            ],
            Phase::Ended,
        ),
    ];
    for (name, script, phase) in cases {
        run(name, script, phase);
    }
}

#[test]
fn the_queue_is_bounded_in_frames_and_bytes() {
    let limits = QueueLimits {
        max_frames: 2,
        max_bytes: 100,
    };
    let cases: Vec<(&str, Vec<Vec<u8>>, Phase)> = vec![
        ("two frames fit", vec![step1(), step1()], Phase::Pending),
        (
            "the third frame overflows",
            vec![step1(), step1(), step1()],
            Phase::Ended,
        ),
        (
            "exactly max_bytes fits",
            vec![update(&[0; 97])], // 0, 2, 97, then 97 bytes: 100
            Phase::Pending,
        ),
        (
            "one byte more overflows",
            vec![update(&[0; 98])],
            Phase::Ended,
        ),
    ];
    for (name, frames, phase) in cases {
        let mut session = Session::new(limits);
        let mut effects = Vec::new();
        for frame in &frames {
            effects.extend(session.handle(Event::Frame(frame)));
        }
        assert_eq!(session.phase(), phase, "{name}");
        let expected = match phase {
            Phase::Ended => vec![end(Some(CLOSE_QUEUE_FULL))],
            _ => vec![],
        };
        assert_eq!(effects, expected, "{name}");
    }
    let mut session = Session::new(limits);
    session.handle(Event::Frame(&step1()));
    assert_eq!(session.queued(), (1, step1().len()));
    assert_eq!(QueueLimits::default().max_frames, 1_000);
    assert_eq!(QueueLimits::default().max_bytes, 5 * 1024 * 1024);
}

fn open(scope: Scope) -> Session {
    let mut session = Session::default();
    session.handle(Event::Frame(&auth_v4("tok")));
    session.handle(Event::Verdict(Ok(scope)));
    session
}

/// What each message of an open session asks for, by scope: one ack per
/// SyncStep2 or Update and none for anything else (reference §4 rules 7 to 9,
/// 11 to 13, and the appendix: read-only `00 00` step 2 gets `08 01` because
/// the document holds it, a read-only Update `08 00`).
#[test]
fn messages_of_an_open_session() {
    use Scope::{ReadOnly, ReadWrite};
    let cases: Vec<(&str, Scope, Vec<u8>, Effect, Phase)> = vec![
        (
            "SyncStep1 is answered (step 1 then step 2), never acked",
            ReadWrite,
            step1(),
            Effect::AnswerSyncStep1(StateVector::default()),
            Phase::Open(ReadWrite),
        ),
        (
            "read-only SyncStep1 is answered too",
            ReadOnly,
            step1(),
            Effect::AnswerSyncStep1(StateVector::default()),
            Phase::Open(ReadOnly),
        ),
        (
            "read-write SyncStep2 is applied, then acked true",
            ReadWrite,
            step2(&[0, 0]),
            Effect::Apply(vec![0, 0]),
            Phase::Open(ReadWrite),
        ),
        (
            "read-write Update is applied, then acked true",
            ReadWrite,
            update(UPDATE),
            Effect::Apply(UPDATE.to_vec()),
            Phase::Open(ReadWrite),
        ),
        (
            "read-only SyncStep2 is acked by whether the document holds it",
            ReadOnly,
            step2(&[0, 0]),
            Effect::AckIfContained(vec![0, 0]),
            Phase::Open(ReadOnly),
        ),
        (
            "read-only SyncStep2 with a delete set is checked, not refused",
            ReadOnly,
            step2(&[0, 1, 0xe3, 0xc4, 0x9c, 0xac, 0x08, 1, 0, 2]),
            Effect::AckIfContained(vec![0, 1, 0xe3, 0xc4, 0x9c, 0xac, 0x08, 1, 0, 2]),
            Phase::Open(ReadOnly),
        ),
        (
            "read-only Update is acked false and not applied",
            ReadOnly,
            update(UPDATE),
            ack(false),
            Phase::Open(ReadOnly),
        ),
        (
            "awareness is applied and broadcast, read-only too",
            ReadOnly,
            awareness(AWARENESS),
            Effect::ApplyAwareness(AWARENESS.to_vec()),
            Phase::Open(ReadOnly),
        ),
        (
            "QueryAwareness is answered with every state",
            ReadWrite,
            body(ClientMessage::QueryAwareness),
            Effect::SendAwarenessStates,
            Phase::Open(ReadWrite),
        ),
        (
            "Stateless is relayed to the other sessions",
            ReadWrite,
            stateless("ping!"),
            Effect::RelayStateless("ping!".into()),
            Phase::Open(ReadWrite),
        ),
        (
            "Close ends the session without a CLOSE reply",
            ReadWrite,
            close(),
            end(None),
            Phase::Ended,
        ),
        (
            "BroadcastStateless from a client closes the document",
            ReadWrite,
            vec![6, 2, b'h', b'i'],
            end(Some(CLOSE_BROADCAST_STATELESS)),
            Phase::Ended,
        ),
        (
            "an unknown type is ignored, as Hocuspocus does",
            ReadWrite,
            vec![42],
            Effect::Ignore("unknown_type"),
            Phase::Open(ReadWrite),
        ),
        (
            "SyncStatus from a client is ignored",
            ReadWrite,
            vec![8, 1],
            Effect::Ignore("client_sync_status"),
            Phase::Open(ReadWrite),
        ),
        (
            "SyncReply from a client is ignored, never applied",
            ReadWrite,
            vec![4, 0, 2, 1, 7],
            Effect::Ignore("client_sync_reply"),
            Phase::Open(ReadWrite),
        ),
        (
            "an addressed Ping from a client is ignored",
            ReadWrite,
            vec![9],
            Effect::Ignore("client_ping"),
            Phase::Open(ReadWrite),
        ),
        (
            "a malformed update closes the document, never the socket",
            ReadWrite,
            vec![0, 2, 5, 1],
            end(Some("invalid-message: length_too_large")),
            Phase::Ended,
        ),
        (
            "an empty body closes the document",
            ReadOnly,
            vec![],
            end(Some("invalid-message: truncated")),
            Phase::Ended,
        ),
        (
            "a token on a live session is a refresh",
            ReadOnly,
            auth_v3("new"),
            verify("new", None),
            Phase::Open(ReadOnly),
        ),
    ];
    for (name, scope, frame, effect, phase) in cases {
        let mut session = open(scope);
        assert_eq!(session.handle(Event::Frame(&frame)), vec![effect], "{name}");
        assert_eq!(session.phase(), phase, "{name}");
    }
}

#[test]
fn exactly_one_ack_per_step2_or_update() {
    for scope in [Scope::ReadWrite, Scope::ReadOnly] {
        let mut session = open(scope);
        let frames = [
            step1(),
            step2(&[0, 0]),
            awareness(AWARENESS),
            update(UPDATE),
            stateless("x"),
            update(UPDATE),
            body(ClientMessage::QueryAwareness),
        ];
        let acks = frames
            .iter()
            .flat_map(|frame| session.handle(Event::Frame(frame)))
            .filter(|effect| {
                matches!(
                    effect,
                    Effect::Apply(_)
                        | Effect::AckIfContained(_)
                        | Effect::Send(Reply::SyncStatus(_))
                )
            })
            .count();
        assert_eq!(acks, 3, "{scope:?}: one per SyncStep2 or Update");
    }
}

#[test]
fn the_provider_version_decides_pings() {
    type Frames = Vec<Vec<u8>>;
    let cases: Vec<(&str, Frames, Option<&str>)> = vec![
        ("v4 sends its version", vec![auth_v4("t")], Some("4.8.0")),
        ("v3 sends none", vec![auth_v3("t")], None),
        ("nothing yet", vec![], None),
    ];
    for (name, frames, version) in cases {
        let mut session = Session::default();
        for frame in &frames {
            session.handle(Event::Frame(frame));
        }
        assert_eq!(session.provider_version(), version, "{name}");
    }
}

#[test]
fn replies_encode_as_the_captured_frames() {
    let address = super::super::Address::new("a").unwrap();
    let cases: Vec<(Reply, &[u8])> = vec![
        (Reply::SyncStatus(true), &[1, b'a', 8, 1]),
        (Reply::SyncStatus(false), &[1, b'a', 8, 0]),
        (
            Reply::Authenticated(Scope::ReadOnly),
            b"\x01a\x02\x02\x08readonly",
        ),
        (
            Reply::PermissionDenied("permission-denied".into()),
            b"\x01a\x02\x01\x11permission-denied",
        ),
    ];
    for (reply, frame) in cases {
        assert_eq!(reply.message().encode(&address), frame, "{reply:?}");
    }
}
