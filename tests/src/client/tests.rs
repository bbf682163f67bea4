//! The client against a scripted fake server: what goes over the wire.

use super::*;
use crdt_core::awareness::AwarenessEntry;
use crdt_core::protocol::{encode_sync_step1, encode_sync_step2, encode_update};
use crdt_core::{AwarenessUpdate, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{StateVector, Text, Update};

const WAIT: Duration = Duration::from_secs(5);

/// The server side of one connection, driven by the test.
struct Peer {
    socket: WebSocketStream<TcpStream>,
}

impl Peer {
    /// Next binary frame, decoded; `None` on a close frame or end.
    async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next())
                .await
                .ok()??
            {
                Ok(WsMessage::Binary(bytes)) => return Some(bytes.to_vec()),
                Ok(WsMessage::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Frames received within `window`, for checking that nothing was sent.
    async fn quiet_for(&mut self, window: Duration) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while let Ok(Some(Ok(message))) = tokio::time::timeout(window, self.socket.next()).await {
            if let WsMessage::Binary(bytes) = message {
                frames.push(bytes.to_vec());
            }
        }
        frames
    }

    async fn send(&mut self, frame: Vec<u8>) {
        self.socket
            .send(WsMessage::binary(frame))
            .await
            .expect("send to client");
    }
}

/// Listens on a free port; returns the address and the first connection.
async fn fake_server() -> (String, tokio::task::JoinHandle<Peer>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("ws://{}", listener.local_addr().expect("addr"));
    let accept = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let socket = tokio_tungstenite::accept_async(stream)
            .await
            .expect("handshake");
        Peer { socket }
    });
    (address, accept)
}

fn awareness(entries: &[(u64, u32, Option<&str>)]) -> AwarenessUpdate {
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

fn decode_awareness(frame: &[u8]) -> AwarenessUpdate {
    match Message::decode(frame).expect("decodes") {
        Message::Awareness(bytes) => AwarenessUpdate::decode(bytes).expect("awareness"),
        other => panic!("expected awareness, got {other:?}"),
    }
}

fn remote_update(chunk: &str) -> Vec<u8> {
    let doc = Doc::new();
    doc.get_or_insert_text("t")
        .insert(&mut doc.transact_mut(), 0, chunk);
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    update
}

#[tokio::test]
async fn syncs_both_ways_and_never_echoes_what_the_server_sent() {
    let (address, accept) = fake_server().await;
    let client = Client::connect(ClientConfig::new(address, "d"))
        .await
        .expect("connect");
    let mut server = accept.await.expect("accepted");

    // The client opens with its state vector.
    let first = server.next().await.expect("step 1");
    assert!(matches!(Message::decode(&first), Ok(Message::SyncStep1(_))));

    // Our step 1 is answered with step 2; our step 2 makes it synced.
    server
        .send(encode_sync_step1(&StateVector::default().encode_v1()))
        .await;
    let answer = server.next().await.expect("step 2");
    assert!(matches!(
        Message::decode(&answer),
        Ok(Message::SyncStep2(_))
    ));
    server
        .send(encode_sync_step2(&remote_update("remote")))
        .await;
    client.wait_synced(WAIT).await.expect("synced");
    assert_eq!(client.text("t"), "remote");

    // A relayed update is applied and not sent back.
    server.send(encode_update(&remote_update("more "))).await;
    client
        .wait_for(WAIT, |doc| {
            let txn = doc.transact();
            txn.get_text("t").map(|t| t.get_string(&txn).len()) == Some(11)
        })
        .await
        .expect("applied");
    assert_eq!(
        server.quiet_for(Duration::from_millis(200)).await,
        Vec::<Vec<u8>>::new()
    );

    // A local edit is sent as a sync update holding just that edit.
    let text = client.doc().get_or_insert_text("t");
    text.insert(&mut client.doc().transact_mut(), 0, "local ");
    let frame = server.next().await.expect("update");
    let Ok(Message::Update(update)) = Message::decode(&frame) else {
        panic!("expected a sync update, got {frame:?}")
    };
    let update = Update::decode_v1(update).expect("v1 update");
    let sv = update.state_vector();
    assert_eq!(sv.get(&client.doc().client_id()), 6);
    assert_eq!(sv.len(), 1, "only the local client's edits: {sv:?}");
}

#[tokio::test]
async fn a_clean_disconnect_removes_our_awareness_then_closes_with_1000() {
    let (address, accept) = fake_server().await;
    let mut client = Client::new(ClientConfig::new(address, "d")).expect("client");
    client
        .set_awareness(json!({"name": "ada"}))
        .await
        .expect("offline set");
    client.open().await.expect("connect");
    let mut server = accept.await.expect("accepted");
    let id = client.client_id();

    let _step1 = server.next().await.expect("step 1");
    let announced = decode_awareness(&server.next().await.expect("awareness"));
    assert_eq!(announced, awareness(&[(id, 2, Some(r#"{"name":"ada"}"#))]));

    let goodbye = tokio::spawn(async move {
        let removal = decode_awareness(&server.next().await.expect("removal"));
        let rest = server.next().await;
        // Answered by tungstenite; then the server ends the connection.
        drop(server);
        (removal, rest)
    });
    client.disconnect().await.expect("disconnect");
    let (removal, rest) = goodbye.await.expect("server task");
    assert_eq!(removal, awareness(&[(id, 3, None)]));
    assert_eq!(rest, None, "then the close frame");
    assert_eq!(client.status(), Status::Disconnected);
}

#[tokio::test]
async fn a_peer_cannot_remove_our_awareness_and_queries_are_answered() {
    let (address, accept) = fake_server().await;
    let client = Client::connect(ClientConfig::new(address, "d"))
        .await
        .expect("connect");
    let mut server = accept.await.expect("accepted");
    let id = client.client_id();
    let _step1 = server.next().await.expect("step 1");
    client
        .set_awareness(json!({"here": true}))
        .await
        .expect("set");
    let _set = server.next().await.expect("awareness");

    // Someone claims we left: we re-announce with a newer clock.
    server
        .send(encode_awareness(&awareness(&[(id, 1, None)]).encode()))
        .await;
    let reannounced = decode_awareness(&server.next().await.expect("re-announce"));
    assert_eq!(reannounced, awareness(&[(id, 2, Some(r#"{"here":true}"#))]));

    // Another client appears, then the server queries everything.
    server
        .send(encode_awareness(
            &awareness(&[(7, 1, Some(r#"{"peer":1}"#))]).encode(),
        ))
        .await;
    client
        .wait_for_awareness(WAIT, |states| states.contains_key(&7))
        .await
        .expect("peer seen");
    assert_eq!(
        client.peer_states(),
        BTreeMap::from([(7, json!({"peer": 1}))])
    );
    server.send(vec![MSG_QUERY_AWARENESS as u8]).await;
    let all = decode_awareness(&server.next().await.expect("query answer"));
    assert_eq!(
        all,
        awareness(&[
            (7, 1, Some(r#"{"peer":1}"#)),
            (id, 2, Some(r#"{"here":true}"#))
        ])
    );
}

#[tokio::test]
async fn the_servers_close_code_and_reason_are_exposed() {
    let (address, accept) = fake_server().await;
    let client = Client::connect(ClientConfig::new(address, "d"))
        .await
        .expect("connect");
    let mut server = accept.await.expect("accepted");
    server
        .socket
        .close(Some(CloseFrame {
            code: CloseCode::from(4404),
            reason: "document deleted".into(),
        }))
        .await
        .expect("close");
    let close = client.wait_closed(WAIT).await.expect("closed");
    assert_eq!(
        close,
        Some(CloseInfo {
            code: 4404,
            reason: "document deleted".into()
        })
    );
    assert!(client.peer_states().is_empty());
}

#[tokio::test]
async fn a_malformed_server_message_closes_with_1007() {
    let (address, accept) = fake_server().await;
    let client = Client::connect(ClientConfig::new(address, "d"))
        .await
        .expect("connect");
    let mut server = accept.await.expect("accepted");
    let _step1 = server.next().await.expect("step 1");
    server.send(encode_update(&[0xff, 0xff, 0xff])).await;
    let close = tokio::time::timeout(WAIT, server.socket.next())
        .await
        .expect("in time");
    match close {
        Some(Ok(WsMessage::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1007),
        other => panic!("expected a 1007 close, got {other:?}"),
    }
    drop(server);
    client.wait_closed(WAIT).await.expect("closed");
    assert!(client.last_error().is_some());
}
