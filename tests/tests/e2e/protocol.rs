//! The opening of a connection, byte for byte as y-websocket expects it.

use crate::support::{doc_from_update, insert, text_of, Rest, WAIT};
use anyhow::{bail, Result};
use crdt_core::protocol::encode_sync_step1;
use crdt_core::Message;
use quire_client::testing::TestServer;
use quire_client::{RawFrame, RawSocket};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::StateVector;
use yrs::{Transact, Update};

/// Reads binary frames until one matches `want`, for at most [`WAIT`].
async fn next_matching<T>(
    raw: &mut RawSocket,
    mut want: impl FnMut(Message<'_>) -> Option<T>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match raw.recv(left).await? {
            RawFrame::Binary(bytes) => {
                if let Some(found) = want(Message::decode(&bytes)?) {
                    return Ok(found);
                }
            }
            other => bail!("unexpected frame {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_server_opens_with_sync_step_1_and_answers_step_1_with_step_2() -> Result<()> {
    let server = TestServer::start().await?;
    let writer = server.client("wire").await?;
    insert(&writer, "content", 0, "over the wire");
    Rest::new(&server)
        .wait_text("wire", "content", "over the wire")
        .await?;

    let mut raw = RawSocket::connect(&server.ws_url("wire")).await?;
    // First message: the server's state vector, which already covers the text.
    let first = raw.recv(WAIT).await?;
    let RawFrame::Binary(bytes) = first else {
        bail!("expected sync step 1 first, got {first:?}")
    };
    let Message::SyncStep1(server_sv) = Message::decode(&bytes)? else {
        bail!(
            "expected sync step 1 first, got {:?}",
            Message::decode(&bytes)
        )
    };
    assert_eq!(server_sv, crate::support::state_vector(writer.doc()));

    // Our empty step 1 is answered with the whole document.
    raw.send_binary(encode_sync_step1(&StateVector::default().encode_v1()))
        .await?;
    let update = next_matching(&mut raw, |m| match m {
        Message::SyncStep2(update) => Some(update.to_vec()),
        _ => None,
    })
    .await?;
    let copy = doc_from_update(&update)?;
    assert_eq!(text_of(&copy, "content"), "over the wire");

    // Then edits are relayed as sync updates.
    insert(&writer, "content", 0, "live ");
    let relayed = next_matching(&mut raw, |m| match m {
        Message::Update(update) => Some(update.to_vec()),
        _ => None,
    })
    .await?;
    copy.transact_mut()
        .apply_update(Update::decode_v1(&relayed)?)?;
    assert_eq!(text_of(&copy, "content"), "live over the wire");
    Ok(())
}
