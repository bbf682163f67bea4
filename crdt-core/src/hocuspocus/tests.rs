//! The codec against the frames captured from the real `@hocuspocus/server`
//! 4.7.0 and providers 4.8.0 / 3.4.4 (reference appendix), malformed input,
//! and encode-decode round trips.

use super::*;
use proptest::prelude::*;

/// Bytes from space-separated hex, then literal strings, in order.
fn frame(hex: &str, tail: &[&[u8]]) -> Vec<u8> {
    let mut out: Vec<u8> = hex
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect();
    for part in tail {
        out.extend_from_slice(part);
    }
    out
}

/// The sessionAwareness address of the capture: "b\0" + "1lf4wtu9hf3".
const SESSION_ADDRESS: &str = "b\u{0}1lf4wtu9hf3";

fn addr(raw: &str) -> Address<'_> {
    Address::new(raw).expect("valid address")
}

/// Test-only client encoder: what a provider sends.
fn encode_client(address: &Address<'_>, message: &ClientMessage<'_>) -> Vec<u8> {
    let mut w = Writer::default();
    w.write_var_string(address.raw());
    [w.into_inner(), message.encode_body()].concat()
}

/// Test-only server decoder: what a provider reads.
fn decode_server(bytes: &[u8]) -> Result<(Address<'_>, ServerMessage<'_>), String> {
    let mut r = Reader::new(bytes);
    let address = Address::new(r.read_var_string("address").map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let e = |e: WireError| e.to_string();
    let message = match r.read_var_u64("type").map_err(e)? {
        MSG_SYNC => {
            let sub = r.read_var_u64("sync type").map_err(e)?;
            let payload = r.read_var_bytes("payload").map_err(e)?;
            match sub {
                protocol::SYNC_STEP_1 => ServerMessage::SyncStep1(payload),
                protocol::SYNC_STEP_2 => ServerMessage::SyncStep2(payload),
                protocol::SYNC_UPDATE => ServerMessage::Update(payload),
                other => return Err(format!("sync type {other}")),
            }
        }
        MSG_AWARENESS => ServerMessage::Awareness(r.read_var_bytes("awareness").map_err(e)?),
        MSG_AUTH => match r.read_var_u64("auth type").map_err(e)? {
            AUTH_TOKEN => ServerMessage::TokenSyncRequest,
            AUTH_PERMISSION_DENIED => {
                ServerMessage::PermissionDenied(r.read_var_string("reason").map_err(e)?)
            }
            AUTH_AUTHENTICATED => match r.read_var_string("scope").map_err(e)? {
                "read-write" => ServerMessage::Authenticated(Scope::ReadWrite),
                "readonly" => ServerMessage::Authenticated(Scope::ReadOnly),
                other => return Err(format!("scope {other}")),
            },
            other => return Err(format!("auth type {other}")),
        },
        MSG_SYNC_STATUS => ServerMessage::SyncStatus(r.read_var_u64("status").map_err(e)? == 1),
        MSG_STATELESS => ServerMessage::Stateless(r.read_var_string("payload").map_err(e)?),
        MSG_CLOSE => ServerMessage::Close(r.read_var_string("reason").map_err(e)?),
        other => return Err(format!("type {other}")),
    };
    r.finish().map_err(e)?;
    Ok((address, message))
}

fn decode_client(bytes: &[u8]) -> (Address<'_>, ClientMessage<'_>) {
    match ClientFrame::decode(bytes).expect("address") {
        ClientFrame::Addressed { address, body } => {
            (address, ClientMessage::decode(body).expect("body"))
        }
        ClientFrame::Pong => panic!("not a pong"),
    }
}

/// Client-to-server frames of the capture, decoded and re-encoded.
#[test]
fn captured_client_frames_decode_byte_for_byte() {
    let awareness = frame("01 cf dd a8 e5 0f 00 02", &[b"{}"]);
    let awareness_removal = frame("01 cf dd a8 e5 0f 01 04", &[b"null"]);
    let update16: Vec<u8> = (0u8..16).collect();
    let cases: Vec<(&str, Vec<u8>, &str, ClientMessage)> = vec![
        (
            "v4 Auth: token and version",
            frame("01 61 02 00 03 74 6f 6b 05 34 2e 38 2e 30", &[]),
            "a",
            ClientMessage::Auth {
                token: "tok",
                provider_version: Some("4.8.0"),
            },
        ),
        (
            "v3 Auth: no version",
            frame("01 61 02 00 03 74 6f 6b", &[]),
            "a",
            ClientMessage::Auth {
                token: "tok",
                provider_version: None,
            },
        ),
        (
            "SyncStep1, empty state vector",
            frame("01 61 00 00 01 00", &[]),
            "a",
            ClientMessage::Sync(SyncMessage::Step1(StateVector::default())),
        ),
        (
            "Awareness, clock 0, {}",
            frame("01 61 01 0a", &[&awareness]),
            "a",
            ClientMessage::Awareness(&awareness),
        ),
        (
            "SyncStep2 reply",
            frame("01 61 00 01 02 00 00", &[]),
            "a",
            ClientMessage::Sync(SyncMessage::Step2(&[0, 0])),
        ),
        (
            "Update of 16 bytes (bytes elided in the capture)",
            frame("01 61 00 02 10", &[&update16]),
            "a",
            ClientMessage::Sync(SyncMessage::Update(&update16)),
        ),
        (
            "Stateless",
            frame("01 61 05 05", &[b"ping!"]),
            "a",
            ClientMessage::Stateless("ping!"),
        ),
        (
            "sessionAwareness Auth",
            frame(
                "0d",
                &[
                    SESSION_ADDRESS.as_bytes(),
                    &[2, 0, 2],
                    b"ro",
                    &[5],
                    b"4.8.0",
                ],
            ),
            SESSION_ADDRESS,
            ClientMessage::Auth {
                token: "ro",
                provider_version: Some("4.8.0"),
            },
        ),
        (
            "read-only SyncStep2 00 00",
            frame("0d", &[SESSION_ADDRESS.as_bytes(), &[0, 1, 2, 0, 0]]),
            SESSION_ADDRESS,
            ClientMessage::Sync(SyncMessage::Step2(&[0, 0])),
        ),
        (
            "denied document's Auth",
            frame("01 63 02 00 03", &[b"bad", &[5], b"4.8.0"]),
            "c",
            ClientMessage::Auth {
                token: "bad",
                provider_version: Some("4.8.0"),
            },
        ),
        (
            "destroy(): awareness removal",
            frame("01 61 01 0c", &[&awareness_removal]),
            "a",
            ClientMessage::Awareness(&awareness_removal),
        ),
        ("CLOSE", frame("01 61 07", &[]), "a", ClientMessage::Close),
    ];
    for (name, bytes, raw_address, expected) in cases {
        let (address, message) = decode_client(&bytes);
        assert_eq!(address.raw(), raw_address, "{name}");
        assert_eq!(message, expected, "{name}");
        assert_eq!(
            encode_client(&address, &expected),
            bytes,
            "{name}: re-encoded"
        );
    }
}

#[test]
fn pong_is_the_single_byte_0a() {
    assert_eq!(ClientFrame::decode(&[0x0a]), Ok(ClientFrame::Pong));
    assert_eq!(PONG_FRAME, [0x0a]);
    // 0a followed by more bytes is a 10-byte address, not a Pong.
    let ten = frame("0a", &[b"0123456789", &[7]]);
    assert_eq!(decode_client(&ten).0.raw(), "0123456789");
}

/// Server-to-client frames of the capture, encoded and decoded.
#[test]
fn captured_server_frames_encode_byte_for_byte() {
    let update16: Vec<u8> = (0u8..16).collect();
    let cases: Vec<(&str, Vec<u8>, &str, ServerMessage)> = vec![
        (
            "Authenticated read-write",
            frame("01 61 02 02 0a", &[b"read-write"]),
            "a",
            ServerMessage::Authenticated(Scope::ReadWrite),
        ),
        (
            "server SyncStep1",
            frame("01 61 00 00 01 00", &[]),
            "a",
            ServerMessage::SyncStep1(&[0]),
        ),
        (
            "server SyncStep2",
            frame("01 61 00 01 02 00 00", &[]),
            "a",
            ServerMessage::SyncStep2(&[0, 0]),
        ),
        (
            "SyncStatus(1)",
            frame("01 61 08 01", &[]),
            "a",
            ServerMessage::SyncStatus(true),
        ),
        (
            "update echoed to its sender",
            frame("01 61 00 02 10", &[&update16]),
            "a",
            ServerMessage::Update(&update16),
        ),
        (
            "Stateless",
            frame("01 61 05 0a", &[b"echo:ping!"]),
            "a",
            ServerMessage::Stateless("echo:ping!"),
        ),
        (
            "Authenticated readonly, same raw address",
            frame("0d", &[SESSION_ADDRESS.as_bytes(), &[2, 2, 8], b"readonly"]),
            SESSION_ADDRESS,
            ServerMessage::Authenticated(Scope::ReadOnly),
        ),
        (
            "read-only SyncStep2 00 00 acked 08 01",
            frame("0d", &[SESSION_ADDRESS.as_bytes(), &[8, 1]]),
            SESSION_ADDRESS,
            ServerMessage::SyncStatus(true),
        ),
        (
            "read-only Update acked 08 00",
            frame("0d", &[SESSION_ADDRESS.as_bytes(), &[8, 0]]),
            SESSION_ADDRESS,
            ServerMessage::SyncStatus(false),
        ),
        (
            "PermissionDenied",
            frame("01 63 02 01 11", &[b"permission-denied"]),
            "c",
            ServerMessage::PermissionDenied("permission-denied"),
        ),
        (
            "CLOSE reply",
            frame("01 61 07 12", &[b"provider_initiated"]),
            "a",
            ServerMessage::Close("provider_initiated"),
        ),
        (
            "token sync request",
            frame("01 61 02 00", &[]),
            "a",
            ServerMessage::TokenSyncRequest,
        ),
    ];
    for (name, bytes, raw_address, message) in cases {
        let address = addr(raw_address);
        assert_eq!(message.encode(&address), bytes, "{name}");
        assert_eq!(decode_server(&bytes), Ok((address, message)), "{name}");
    }
    assert_eq!(PING_FRAME, [0x09]);
    assert_eq!(
        encode_sync_step1(&addr("a"), &StateVector::default()),
        frame("01 61 00 00 01 00", &[])
    );
    assert_eq!(
        prefix_y_websocket_frame(&addr("a"), &protocol::encode_sync_step2(&[0, 0])),
        frame("01 61 00 01 02 00 00", &[])
    );
}

#[test]
fn the_address_splits_at_the_first_nul() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("a", "a", None),
        (SESSION_ADDRESS, "b", Some("1lf4wtu9hf3")),
        ("doc\u{0}s\u{0}x", "doc", Some("s\u{0}x")),
        ("\u{0}s", "", Some("s")),
        ("doc\u{0}", "doc", Some("")),
        ("org:123 notes", "org:123 notes", None),
    ];
    for (raw, document, session) in cases {
        let address = addr(raw);
        assert_eq!(address.raw(), *raw);
        assert_eq!(address.document(), *document, "{raw:?}");
        assert_eq!(address.session_id(), *session, "{raw:?}");
    }
}

#[test]
fn unreadable_addresses_are_frame_errors() {
    let long = [frame("81 08", &[]), vec![b'x'; 1025], vec![7]].concat();
    let at_bound = [frame("80 08", &[]), vec![b'x'; 1024], vec![7]].concat();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty frame", vec![], "truncated"),
        ("address length cut", frame("80", &[]), "truncated"),
        (
            "address past the end",
            frame("05 61 62", &[]),
            "length_too_large",
        ),
        (
            "huge declared length",
            frame("ff ff ff ff 0f 61", &[]),
            "length_too_large",
        ),
        ("not UTF-8", frame("02 ff fe 07", &[]), "invalid_utf8"),
        (
            "y-websocket SyncStep1",
            frame("00 00 01 00", &[]),
            "empty_address",
        ),
        ("address over 1 KiB", long, "address_too_long"),
        (
            "a lone 09 (a Ping is never sent by a client)",
            frame("09", &[]),
            "length_too_large",
        ),
    ];
    for (name, bytes, reason) in cases {
        let err = ClientFrame::decode(&bytes).expect_err(name);
        assert_eq!(err.reason(), reason, "{name}: {err}");
    }
    assert!(ClientFrame::decode(&at_bound).is_ok());
}

#[test]
fn malformed_bodies_are_message_errors() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("no type", vec![], "truncated"),
        ("unknown type", frame("0b", &[]), "unknown_type"),
        ("addressed Pong", frame("0a", &[]), "unknown_type"),
        ("huge type", frame("ff ff ff ff 0f", &[]), "unknown_type"),
        (
            "SyncReply",
            frame("04 00 00 01 00", &[]),
            "client_sync_reply",
        ),
        (
            "BroadcastStateless",
            frame("06 02 68 69", &[]),
            "client_broadcast_stateless",
        ),
        ("SyncStatus", frame("08 01", &[]), "client_sync_status"),
        ("addressed Ping", frame("09", &[]), "client_ping"),
        (
            "sync update past the end",
            frame("00 02 05 01", &[]),
            "length_too_large",
        ),
        (
            "unknown sync type",
            frame("00 03 00", &[]),
            "unknown_sync_type",
        ),
        (
            "bad state vector",
            frame("00 00 02 05 01", &[]),
            "bad_state_vector",
        ),
        (
            "sync trailing bytes",
            frame("00 01 02 00 00 09", &[]),
            "trailing_bytes",
        ),
        ("awareness truncated", frame("01", &[]), "truncated"),
        (
            "query awareness trailing",
            frame("03 00", &[]),
            "trailing_bytes",
        ),
        ("auth without subtype", frame("02", &[]), "truncated"),
        (
            "auth token cut",
            frame("02 00 05 61", &[]),
            "length_too_large",
        ),
        (
            "auth subtype from a server",
            frame("02 02 02 72 77", &[]),
            "unknown_auth_type",
        ),
        (
            "auth version cut",
            frame("02 00 00 05 34", &[]),
            "length_too_large",
        ),
        (
            "auth after version",
            frame("02 00 00 01 34 00", &[]),
            "trailing_bytes",
        ),
        ("token not UTF-8", frame("02 00 01 ff", &[]), "invalid_utf8"),
        ("stateless missing", frame("05", &[]), "truncated"),
        (
            "stateless trailing",
            frame("05 00 00", &[]),
            "trailing_bytes",
        ),
        ("close with a reason", frame("07 00", &[]), "trailing_bytes"),
    ];
    for (name, body, reason) in cases {
        let err = ClientMessage::decode(&body).expect_err(name);
        assert_eq!(err.reason(), reason, "{name}: {err}");
    }
}

#[test]
fn payload_bounds_are_checked() {
    let with_string = |prefix: &[u8], len: usize| {
        let mut w = Writer::default();
        w.write_var_string(&"x".repeat(len));
        [prefix, &w.into_inner()].concat()
    };
    let token = [&[2u8, 0][..]];
    let cases: Vec<(Vec<u8>, bool)> = vec![
        (with_string(token[0], MAX_TOKEN_BYTES), true),
        (with_string(token[0], MAX_TOKEN_BYTES + 1), false),
        (with_string(&[2, 0, 0], MAX_VERSION_BYTES), true),
        (with_string(&[2, 0, 0], MAX_VERSION_BYTES + 1), false),
        (with_string(&[5], MAX_STATELESS_BYTES), true),
        (with_string(&[5], MAX_STATELESS_BYTES + 1), false),
    ];
    for (body, ok) in cases {
        let result = ClientMessage::decode(&body);
        assert_eq!(result.is_ok(), ok, "{} bytes: {result:?}", body.len());
        if let Err(err) = result {
            assert_eq!(err.reason(), "too_large");
        }
    }
}

fn address_strategy() -> impl Strategy<Value = String> {
    ("\\PC{1,24}", proptest::option::of("[a-z0-9]{0,12}")).prop_map(|(name, session)| match session
    {
        Some(session) => format!("{name}\u{0}{session}"),
        None => name,
    })
}

proptest! {
    #[test]
    fn server_frames_round_trip(
        raw in address_strategy(),
        kind in 0u8..10,
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        text in "\\PC{0,32}",
        flag in any::<bool>(),
    ) {
        let address = addr(&raw);
        let scope = if flag { Scope::ReadWrite } else { Scope::ReadOnly };
        let message = match kind {
            0 => ServerMessage::SyncStep1(&bytes),
            1 => ServerMessage::SyncStep2(&bytes),
            2 => ServerMessage::Update(&bytes),
            3 => ServerMessage::Awareness(&bytes),
            4 => ServerMessage::Authenticated(scope),
            5 => ServerMessage::PermissionDenied(&text),
            6 => ServerMessage::TokenSyncRequest,
            7 => ServerMessage::SyncStatus(flag),
            8 => ServerMessage::Stateless(&text),
            _ => ServerMessage::Close(&text),
        };
        let encoded = message.encode(&address);
        prop_assert_eq!(&prefix_body(&address, &message.encode_body()), &encoded);
        prop_assert_eq!(decode_server(&encoded), Ok((address, message)));
    }

    #[test]
    fn client_frames_round_trip(
        raw in address_strategy(),
        kind in 0u8..8,
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        text in "\\PC{0,32}",
        version in proptest::option::of("[0-9.]{1,8}"),
        clients in proptest::collection::vec((0u64..(1 << 53), 1u32..1000), 0..4),
    ) {
        let address = addr(&raw);
        let mut sv = StateVector::default();
        for (client, clock) in clients {
            sv.set_max(yrs::block::ClientID::new(client), clock);
        }
        let message = match kind {
            0 => ClientMessage::Sync(SyncMessage::Step1(sv)),
            1 => ClientMessage::Sync(SyncMessage::Step2(&bytes)),
            2 => ClientMessage::Sync(SyncMessage::Update(&bytes)),
            3 => ClientMessage::Awareness(&bytes),
            4 => ClientMessage::Auth { token: &text, provider_version: version.as_deref() },
            5 => ClientMessage::QueryAwareness,
            6 => ClientMessage::Stateless(&text),
            _ => ClientMessage::Close,
        };
        let encoded = encode_client(&address, &message);
        prop_assert_eq!(decode_client(&encoded), (address, message));
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn arbitrary_frames_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(ClientFrame::Addressed { body, .. }) = ClientFrame::decode(&bytes) {
            let _ = ClientMessage::decode(body);
        }
    }
}
