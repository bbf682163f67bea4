//! Malformed and oversized frames close only the connection that sent them.
//!
//! Every case follows one script (`check`): two well-behaved clients share a
//! document; an offender connects and sends one bad frame; the offender is
//! closed with the expected code while the document keeps its content and
//! the two clients keep editing through the same connections.

use crate::support::{insert, text_update, wait_text, Rest, WAIT};
use anyhow::{ensure, Context, Result};
use crdt_core::awareness::AwarenessEntry;
use crdt_core::protocol::{encode_awareness, encode_update};
use crdt_core::AwarenessUpdate;
use quire_client::testing::TestServer;
use quire_client::{RawSocket, Status};

/// What the offender sends.
enum Frame {
    Binary(Vec<u8>),
    Text(&'static str),
}

/// Runs the script for one bad frame; `codes` are the acceptable close codes.
async fn check(frame: Frame, codes: &[u16], server_args: &[&str]) -> Result<()> {
    let server = TestServer::start_with(server_args.iter().copied()).await?;
    let alice = server.client("doc").await?;
    let bob = server.client("doc").await?;
    insert(&alice, "content", 0, "stable");
    wait_text(&bob, "content", "stable").await?;
    let rest = Rest::new(&server);
    rest.wait_text("doc", "content", "stable").await?;
    let before = rest.doc("doc").await?;

    let mut offender = RawSocket::connect(&server.ws_url("doc")).await?;
    // A send may fail if the server closes first; only the close matters.
    let _ = match frame {
        Frame::Binary(bytes) => offender.send_binary(bytes).await,
        Frame::Text(text) => offender.send_text(text).await,
    };
    let close = offender
        .wait_close(WAIT)
        .await?
        .context("the offender's connection ended without a close frame")?;
    ensure!(
        codes.contains(&close.code),
        "closed with {} {:?}, expected one of {codes:?}",
        close.code,
        close.reason
    );

    // The document did not change...
    let after = rest.doc("doc").await?;
    ensure!(
        crate::support::state_vector(&after) == crate::support::state_vector(&before),
        "the bad frame changed the document"
    );
    assert_eq!(crate::support::text_of(&after, "content"), "stable");
    // ...and the other connections were untouched: still open, still editing.
    assert_eq!(alice.status(), Status::Synced);
    assert_eq!(bob.status(), Status::Synced);
    insert(&alice, "content", 0, "still ");
    wait_text(&bob, "content", "still stable").await?;
    insert(&bob, "content", 12, "!");
    wait_text(&alice, "content", "still stable!").await?;
    rest.wait_text("doc", "content", "still stable!").await?;
    Ok(())
}

const DOES_NOT_DECODE: &[u16] = &[1007];

#[tokio::test]
async fn garbage_closes_the_offender_with_1007() -> Result<()> {
    // A sync step 2 that declares 10 bytes and carries 2.
    check(Frame::Binary(vec![0, 1, 10, 1, 2]), DOES_NOT_DECODE, &[]).await
}

#[tokio::test]
async fn a_truncated_varint_closes_the_offender_with_1007() -> Result<()> {
    check(Frame::Binary(vec![0, 2, 0x80]), DOES_NOT_DECODE, &[]).await
}

#[tokio::test]
async fn an_empty_frame_closes_the_offender_with_1007() -> Result<()> {
    check(Frame::Binary(Vec::new()), DOES_NOT_DECODE, &[]).await
}

#[tokio::test]
async fn bytes_after_the_message_close_the_offender_with_1007() -> Result<()> {
    check(Frame::Binary(vec![3, 0]), DOES_NOT_DECODE, &[]).await
}

#[tokio::test]
async fn bad_update_bytes_in_a_well_formed_message_close_the_offender_with_1007() -> Result<()> {
    check(
        Frame::Binary(encode_update(&[0xff, 0xff, 0xff, 0xff, 0x0f])),
        DOES_NOT_DECODE,
        &[],
    )
    .await
}

#[tokio::test]
async fn an_update_cut_short_closes_the_offender_with_1007() -> Result<()> {
    let mut update = text_update("content", "this never arrives whole");
    update.truncate(update.len() / 2);
    check(Frame::Binary(encode_update(&update)), DOES_NOT_DECODE, &[]).await
}

#[tokio::test]
async fn awareness_that_is_not_json_closes_the_offender_with_1007() -> Result<()> {
    let mut bytes = AwarenessUpdate {
        entries: vec![AwarenessEntry {
            client: 42,
            clock: 1,
            state: Some("{}".into()),
        }],
    }
    .encode();
    // Turn the state `{}` into `{x`.
    let last = bytes.len() - 1;
    bytes[last] = b'x';
    check(
        Frame::Binary(encode_awareness(&bytes)),
        DOES_NOT_DECODE,
        &[],
    )
    .await
}

#[tokio::test]
async fn an_unknown_message_type_closes_the_offender_with_1003() -> Result<()> {
    check(Frame::Binary(vec![7]), &[1003], &[]).await
}

#[tokio::test]
async fn a_text_frame_closes_the_offender() -> Result<()> {
    // The protocol is binary; SPEC names no code for text, so either
    // "unsupported data" or "does not decode" is acceptable.
    check(Frame::Text("hello"), &[1003, 1007], &[]).await
}

#[tokio::test]
async fn an_oversized_message_closes_the_offender_with_1009() -> Result<()> {
    // A perfectly valid update, just larger than the limit: it must not be applied.
    let big = "x".repeat(8 * 1024);
    let frame = encode_update(&text_update("content", &big));
    check(
        Frame::Binary(frame),
        &[1009],
        &["--max-message-bytes", "4096"],
    )
    .await
}
